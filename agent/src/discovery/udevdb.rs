//! The udev database (`/run/udev/data/b<major>:<minor>`), used only to fill gaps that
//! sysfs and our own probe leave (udev may not run at all inside a container).
//!
//! Format, one record per line: `E:KEY=VALUE` properties, `S:path` symlinks relative to
//! /dev; other line types (`I:`, `L:`, `G:`, `Q:`, `V:`) are ignored.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UdevRecord {
    properties: HashMap<String, String>,
    links: Vec<String>,
}

impl UdevRecord {
    pub(crate) fn parse(text: &str) -> UdevRecord {
        let mut record = UdevRecord::default();
        for line in text.lines() {
            if let Some(prop) = line.strip_prefix("E:") {
                if let Some((key, value)) = prop.split_once('=') {
                    record.properties.insert(key.to_string(), value.to_string());
                }
            } else if let Some(link) = line.strip_prefix("S:") {
                let link = link.trim();
                if !link.is_empty() {
                    record.links.push(link.to_string());
                }
            }
        }
        record
    }

    /// A property value, trimmed; `None` when absent or empty (udev writes e.g.
    /// `ID_FS_TYPE=` when blkid found nothing).
    pub(crate) fn property(&self, key: &str) -> Option<String> {
        self.properties
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// Symlinks (relative to /dev) under disk/by-id and disk/by-path: the names that do
    /// not change when the disk is reformatted (by-uuid/by-label do).
    pub(crate) fn stable_links(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(String::as_str).filter(|l| {
            (l.starts_with("disk/by-id/") || l.starts_with("disk/by-path/")) && !l.contains("..")
        })
    }
}

/// The record for block device `major:minor`, or `None` when udev has none. Read errors
/// also give `None`: udev data only supplements what we read ourselves.
pub(crate) fn read(udev_data: &Path, major: u32, minor: u32) -> Option<UdevRecord> {
    let path = udev_data.join(format!("b{major}:{minor}"));
    match fs::read(&path) {
        Ok(raw) => Some(UdevRecord::parse(&String::from_utf8_lossy(&raw))),
        Err(err) => {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %err, "udev data unreadable");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_properties_and_links() {
        let text = "S:disk/by-id/virtio-abc\nS:disk/by-path/pci-0000:00:05.0\nS:disk/by-uuid/1234\n\
                    W:3\nI:1234\nE:ID_SERIAL=abc\nE:ID_FS_TYPE=\nE:ID_MODEL=QEMU_HARDDISK\nE:EMPTY\nG:systemd\n";
        let record = UdevRecord::parse(text);
        assert_eq!(record.property("ID_SERIAL").as_deref(), Some("abc"));
        assert_eq!(
            record.property("ID_MODEL").as_deref(),
            Some("QEMU_HARDDISK")
        );
        assert_eq!(record.property("ID_FS_TYPE"), None);
        assert_eq!(record.property("EMPTY"), None);
        let links: Vec<&str> = record.stable_links().collect();
        assert_eq!(
            links,
            vec!["disk/by-id/virtio-abc", "disk/by-path/pci-0000:00:05.0"]
        );
    }

    #[test]
    fn missing_file_is_none() {
        let dir = std::env::temp_dir().join("hwameistor-udevdb-test-does-not-exist");
        assert_eq!(read(&dir, 8, 0), None);
    }
}
