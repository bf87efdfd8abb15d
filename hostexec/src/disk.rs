//! Whole disks: erasing the disk of a deleted raw-disk volume before it is given back.

use crate::{ExecError, Executor, HostCommand};
use futures::future::BoxFuture;
use std::sync::Arc;

/// Erases whole disks.
pub trait Wipe: Send + Sync + 'static {
    /// Removes every signature (filesystem, RAID, partition table, LVM) from `device` so the
    /// next user finds it blank; with `full`, overwrites all of it with zeros first. Refused
    /// by the kernel while something holds the device (mounted, opened exclusively): a
    /// disk in use is never wiped.
    fn wipe<'a>(&'a self, device: &'a str, full: bool) -> BoxFuture<'a, Result<(), ExecError>>;
}

/// [`Wipe`] over util-linux: `blkdiscard --zeroout` (full) and `wipefs --all`.
pub struct WipeCli {
    exec: Arc<dyn Executor>,
}

impl WipeCli {
    /// `exec` runs the commands; a full wipe takes as long as writing the whole disk, so its
    /// timeout must allow for that.
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        WipeCli { exec }
    }

    /// The commands a wipe of `device` runs, in order.
    pub fn commands(device: &str, full: bool) -> Vec<HostCommand> {
        let mut cmds = Vec::new();
        if full {
            cmds.push(HostCommand::new("blkdiscard").args(["--zeroout", device]));
        }
        // No --force: wipefs then opens the device exclusively, so the kernel refuses it
        // while it is mounted or held.
        cmds.push(HostCommand::new("wipefs").args(["--all", device]));
        cmds
    }
}

impl Wipe for WipeCli {
    fn wipe<'a>(&'a self, device: &'a str, full: bool) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            for c in Self::commands(device, full) {
                self.exec.run(&c).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wipe_never_forces_and_a_full_one_zeroes_first() {
        let sig: Vec<String> = WipeCli::commands("/dev/sdb", false)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(sig, ["wipefs --all /dev/sdb"]);
        let full: Vec<String> = WipeCli::commands("/dev/sdb", true)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            full,
            ["blkdiscard --zeroout /dev/sdb", "wipefs --all /dev/sdb"]
        );
    }
}
