//! The node service's host operations: probe, format, mount, unmount, grow.
//!
//! Every command goes through the crate's one executor boundary
//! ([`crate::exec::Executor`]), so tests can script it and errors carry the full
//! command line and stderr. Only reads that need no tool (the mount table, sysfs) are
//! done directly.

use crate::exec::{ExecError, Executor, HostCommand};
use crate::node::mountinfo::{self, MountEntry};
use crate::params::FsType;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HostError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What `blkid -p` found on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// No signature at all: safe to format.
    Blank,
    /// A filesystem of this type.
    Filesystem(String),
    /// Something else that carries data: a partition table, an LVM or RAID member, swap.
    Other(String),
}

/// Interprets `blkid -p -o export` output.
pub fn parse_probe(out: &str) -> Contents {
    let mut ty = None;
    let mut usage = None;
    let mut pttype = None;
    for line in out.lines() {
        match line.split_once('=') {
            Some(("TYPE", v)) => ty = Some(v.to_string()),
            Some(("USAGE", v)) => usage = Some(v.to_string()),
            Some(("PTTYPE", v)) => pttype = Some(v.to_string()),
            _ => {}
        }
    }
    match (ty, usage, pttype) {
        (Some(t), Some(u), _) if u == "filesystem" => Contents::Filesystem(t),
        (Some(t), None, _) => Contents::Filesystem(t),
        (Some(t), Some(u), _) => Contents::Other(format!("{t} ({u})")),
        (None, _, Some(p)) => Contents::Other(format!("{p} partition table")),
        (None, _, None) => Contents::Blank,
    }
}

/// `(major, minor)` of a device number, as the kernel splits `dev_t`.
pub fn dev_numbers(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[derive(Clone)]
pub struct Host {
    exec: Arc<dyn Executor>,
    mountinfo: PathBuf,
    sys: PathBuf,
}

impl Host {
    pub fn new(exec: Arc<dyn Executor>) -> Self {
        Host {
            exec,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            sys: PathBuf::from("/sys"),
        }
    }

    /// Points sysfs elsewhere (tests).
    pub fn with_sys_root(mut self, sys: PathBuf) -> Self {
        self.sys = sys;
        self
    }

    async fn run(&self, cmd: HostCommand) -> Result<String, HostError> {
        Ok(self.exec.run(&cmd).await?.stdout)
    }

    pub fn mounts(&self) -> Result<Vec<MountEntry>, HostError> {
        mountinfo::read(&self.mountinfo).map_err(io(&self.mountinfo))
    }

    /// The topmost mount at `path`.
    pub fn mount_at(&self, path: &Path) -> Result<Option<MountEntry>, HostError> {
        let table = self.mounts()?;
        Ok(mountinfo::find(&table, &path.to_string_lossy()).cloned())
    }

    /// The device number of block device `dev`; `None` when it is missing or not a block device.
    pub fn block_device(&self, dev: &Path) -> Option<(u32, u32)> {
        let meta = std::fs::metadata(dev).ok()?;
        meta.file_type()
            .is_block_device()
            .then(|| dev_numbers(meta.rdev()))
    }

    /// Whether the kernel still has block device `major:minor`.
    pub fn device_present(&self, numbers: (u32, u32)) -> bool {
        self.sys
            .join(format!("dev/block/{}:{}", numbers.0, numbers.1))
            .exists()
    }

    /// Size of block device `major:minor` from sysfs (512-byte sectors).
    pub fn device_size(&self, numbers: (u32, u32)) -> Result<i64, HostError> {
        let path = self
            .sys
            .join(format!("dev/block/{}:{}/size", numbers.0, numbers.1));
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let sectors: i64 = text.trim().parse().map_err(|_| HostError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a sector count: {text:?}"),
            ),
        })?;
        Ok(sectors.saturating_mul(512))
    }

    /// What the device carries. `blkid -p` reads the device itself (no cache), and exits
    /// with 2 when it finds nothing.
    pub async fn probe(&self, dev: &Path) -> Result<Contents, HostError> {
        let cmd = HostCommand::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(dev.to_string_lossy());
        match self.exec.run(&cmd).await {
            Ok(out) => Ok(parse_probe(&out.stdout)),
            Err(ExecError::Failed { code: Some(2), .. }) => Ok(Contents::Blank),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a filesystem. Never forced: mkfs.xfs refuses a device with a signature on
    /// its own, a second guard behind the probe.
    pub async fn mkfs(&self, dev: &Path, fs: FsType) -> Result<(), HostError> {
        let dev = dev.to_string_lossy().into_owned();
        let cmd = match fs {
            FsType::Xfs => HostCommand::new("mkfs.xfs").arg(dev),
            // -q: quiet; no -F, so mke2fs keeps its own checks.
            FsType::Ext4 => HostCommand::new("mkfs.ext4").args(["-q", &dev]),
        };
        self.run(cmd).await.map(drop)
    }

    pub async fn mount(
        &self,
        dev: &Path,
        target: &Path,
        fs: &str,
        options: &[String],
    ) -> Result<(), HostError> {
        let mut cmd = HostCommand::new("mount").args(["-t", fs]);
        if !options.is_empty() {
            cmd = cmd.args(["-o".to_string(), options.join(",")]);
        }
        self.run(cmd.arg(dev.to_string_lossy()).arg(target.to_string_lossy()))
            .await
            .map(drop)
    }

    /// Bind-mounts `source` (a directory or a device node) onto `target`; read-only needs
    /// a second remount, which is how the kernel applies flags to a bind mount.
    pub async fn bind(
        &self,
        source: &Path,
        target: &Path,
        read_only: bool,
        options: &[String],
    ) -> Result<(), HostError> {
        self.run(
            HostCommand::new("mount")
                .arg("--bind")
                .arg(source.to_string_lossy())
                .arg(target.to_string_lossy()),
        )
        .await?;
        let mut flags: Vec<String> = options.to_vec();
        if read_only {
            flags.push("ro".into());
        }
        if !flags.is_empty() {
            let opts = format!("remount,bind,{}", flags.join(","));
            if let Err(e) = self
                .run(
                    HostCommand::new("mount")
                        .args(["-o", &opts])
                        .arg(target.to_string_lossy()),
                )
                .await
            {
                // Never leave a writable bind behind when read-only was asked for.
                let _ = self.umount(target).await;
                return Err(e);
            }
        }
        Ok(())
    }

    pub async fn umount(&self, target: &Path) -> Result<(), HostError> {
        self.run(HostCommand::new("umount").arg(target.to_string_lossy()))
            .await
            .map(drop)
    }

    /// Grows a mounted filesystem to fill its device.
    pub async fn grow(&self, fs: &str, dev: &str, mount_point: &Path) -> Result<(), HostError> {
        let cmd = match fs {
            "xfs" => HostCommand::new("xfs_growfs").arg(mount_point.to_string_lossy()),
            _ => HostCommand::new("resize2fs").arg(dev),
        };
        self.run(cmd).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_classified() {
        assert_eq!(parse_probe(""), Contents::Blank);
        assert_eq!(
            parse_probe("DEVNAME=/dev/loop0\nUUID=1\nBLOCK_SIZE=512\nTYPE=xfs\nUSAGE=filesystem\n"),
            Contents::Filesystem("xfs".into())
        );
        assert_eq!(
            parse_probe("TYPE=LVM2_member\nUSAGE=raid\n"),
            Contents::Other("LVM2_member (raid)".into())
        );
        assert_eq!(
            parse_probe("TYPE=swap\nUSAGE=other\n"),
            Contents::Other("swap (other)".into())
        );
        assert_eq!(
            parse_probe("PTUUID=ab\nPTTYPE=gpt\n"),
            Contents::Other("gpt partition table".into())
        );
    }

    #[test]
    fn device_numbers_split_like_the_kernel() {
        assert_eq!(dev_numbers(0x0703), (7, 3));
        // major 259 (NVMe), minor 1: new encoding.
        assert_eq!(dev_numbers((259 << 8) | 1), (259, 1));
        assert_eq!(
            dev_numbers((300u64 & 0xff) | (1 << 8) | ((300u64 & !0xff) << 12)),
            (1, 300)
        );
    }
}
