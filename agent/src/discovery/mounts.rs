//! Mount points by device number, from `/proc/self/mountinfo`.
//!
//! Line format (proc(5)): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`
//! field 3 is `major:minor`, field 5 the mount point with space, tab, newline and
//! backslash escaped as `\040`, `\011`, `\012`, `\134`.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use super::sysfs::parse_dev_numbers;
use super::DiscoveryError;

#[derive(Debug, Clone, Default)]
pub(crate) struct MountTable {
    by_dev: HashMap<(u32, u32), BTreeSet<String>>,
}

impl MountTable {
    /// Reads the mount table. Failing to read it fails the scan: without it a mounted
    /// disk could look unused.
    pub(crate) fn read(path: &Path) -> Result<MountTable, DiscoveryError> {
        let raw = fs::read(path).map_err(|e| DiscoveryError::io(path, e))?;
        Ok(MountTable::parse(&String::from_utf8_lossy(&raw)))
    }

    /// Malformed lines are skipped: one odd line must not hide every other mount.
    pub(crate) fn parse(text: &str) -> MountTable {
        let mut table = MountTable::default();
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(_id), Some(_parent), Some(dev), Some(_root), Some(mount_point)) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                continue;
            };
            let Some(numbers) = parse_dev_numbers(dev) else {
                continue;
            };
            table
                .by_dev
                .entry(numbers)
                .or_default()
                .insert(unescape(mount_point));
        }
        table
    }

    /// Sorted mount points of device `major:minor` (one device can be mounted in many
    /// places, e.g. bind mounts).
    pub(crate) fn mount_points(&self, major: u32, minor: u32) -> Vec<String> {
        self.by_dev
            .get(&(major, minor))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Undoes the kernel's octal escapes (`\040` -> ' '). A backslash not followed by three
/// octal digits is kept as is.
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(code) = bytes.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    let mut value: u32 = 0;
    for d in digits {
        if !(b'0'..=b'7').contains(d) {
            return None;
        }
        value = value * 8 + u32::from(d - b'0');
    }
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
36 35 253:16 / /var/lib/my\\040data rw,noatime shared:1 - xfs /dev/vdb rw
37 35 253:16 /sub /srv/bind rw,noatime - xfs /dev/vdb rw
38 35 253:17 / /mnt/tab\\011and\\134slash rw - ext4 /dev/vdb1 rw
garbage line
39 35 x:y / /nowhere rw - ext4 /dev/x rw
";
        let table = MountTable::parse(text);
        assert_eq!(
            table.mount_points(253, 16),
            vec!["/srv/bind", "/var/lib/my data"]
        );
        assert_eq!(table.mount_points(253, 17), vec!["/mnt/tab\tand\\slash"]);
        assert_eq!(table.mount_points(0, 21), vec!["/proc"]);
        assert!(table.mount_points(8, 0).is_empty());
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\04"), "/a\\04");
        assert_eq!(unescape("/a\\x"), "/a\\x");
        assert_eq!(unescape("/a\\777b"), "/a\\777b");
        assert_eq!(unescape("\\012"), "\n");
    }
}
