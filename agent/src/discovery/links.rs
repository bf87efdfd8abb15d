//! Stable names for disks: the `disk/by-id` and `disk/by-path` symlinks in the dev tree.
//!
//! udev creates these; on a host without udev they may be absent, which is fine. We do
//! not depend on the udev database to find them: the directories are scanned directly.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Directories under the dev root whose links are reported.
const LINK_DIRS: [&str; 2] = ["disk/by-id", "disk/by-path"];

/// Every link in [`LINK_DIRS`], indexed by where it points, built once per scan.
#[derive(Debug, Default)]
pub(crate) struct DevLinkIndex {
    /// Lexically resolved target path -> links (as strings under the dev root).
    by_target: HashMap<PathBuf, Vec<String>>,
    /// Device number of the block device the link resolves to -> links. Catches links
    /// whose text does not name the node directly (absolute targets, nested links).
    by_rdev: HashMap<u64, Vec<String>>,
}

impl DevLinkIndex {
    /// Missing directories mean no links; unreadable ones are logged and skipped, since
    /// links are names, not evidence of use.
    pub(crate) fn build(dev: &Path) -> DevLinkIndex {
        let mut index = DevLinkIndex::default();
        for sub in LINK_DIRS {
            let dir = dev.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) => {
                    if err.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), error = %err, "cannot list device links");
                    }
                    continue;
                }
            };
            for entry in entries.flatten() {
                let link = entry.path();
                let Ok(target) = fs::read_link(&link) else {
                    continue; // not a symlink (or removed meanwhile)
                };
                let name = link.to_string_lossy().into_owned();
                let absolute = if target.is_absolute() {
                    target
                } else {
                    dir.join(target)
                };
                index
                    .by_target
                    .entry(normalize(&absolute))
                    .or_default()
                    .push(name.clone());
                // Following the link on a real host gives the block device itself.
                if let Ok(meta) = fs::metadata(&link) {
                    if meta.file_type().is_block_device() {
                        index.by_rdev.entry(meta.rdev()).or_default().push(name);
                    }
                }
            }
        }
        index
    }

    /// Links that resolve to `node` (the device node path) or to block device
    /// `major:minor`; unsorted, may repeat.
    pub(crate) fn links_for(&self, node: &Path, major: u32, minor: u32) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(links) = self.by_target.get(&normalize(node)) {
            out.extend(links.iter().cloned());
        }
        if let Some(links) = self.by_rdev.get(&makedev(major, minor)) {
            out.extend(links.iter().cloned());
        }
        out
    }
}

/// Resolves `.` and `..` without touching the filesystem (the target may be a fake
/// tree's regular file or already gone).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// glibc's `makedev` encoding of a device number, as found in `st_rdev`.
fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_targets() {
        assert_eq!(
            normalize(Path::new("/dev/disk/by-id/../../vdb")),
            PathBuf::from("/dev/vdb")
        );
        assert_eq!(
            normalize(Path::new("/dev/./disk/../sda")),
            PathBuf::from("/dev/sda")
        );
    }

    #[test]
    fn makedev_matches_rdev_of_real_node() {
        // /dev/null is 1:3 everywhere.
        if let Ok(meta) = fs::metadata("/dev/null") {
            assert_eq!(meta.rdev(), makedev(1, 3));
        }
        assert_eq!(makedev(259, 0), (259 << 8) & 0xfff00);
        assert_eq!(makedev(8, 300), (8 << 8) | 44 | (256 << 12));
    }
}
