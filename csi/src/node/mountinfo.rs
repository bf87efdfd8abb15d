//! The mount table, from `/proc/self/mountinfo` (proc(5)).
//!
//! Line format: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
//! id, parent, `major:minor`, root within the filesystem, mount point, options, optional
//! fields ended by `-`, filesystem type, source, super options. Paths escape space, tab,
//! newline and backslash as `\040`, `\011`, `\012`, `\134`.

use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u32,
    pub minor: u32,
    /// Path inside the mounted filesystem (`/` unless a bind mount of a sub-tree or file).
    pub root: String,
    pub mount_point: String,
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut f = before.split(' ');
    let (_id, _parent, dev, root, mount_point, options) = (
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
    );
    let (major, minor) = dev.split_once(':')?;
    let mut a = after.split(' ');
    let fs_type = a.next()?;
    let source = a.next().unwrap_or("");
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(root),
        mount_point: unescape(mount_point),
        options: options.split(',').map(str::to_string).collect(),
        fs_type: fs_type.to_string(),
        source: unescape(source),
    })
}

/// Every mount, in table order (later entries are mounted on top of earlier ones).
/// Malformed lines are skipped: one odd line must not hide every other mount.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// Reads the table of the calling process's mount namespace.
pub fn read(path: &Path) -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

/// The topmost mount at exactly `mount_point`, if any.
pub fn find<'a>(table: &'a [MountEntry], mount_point: &str) -> Option<&'a MountEntry> {
    let want = mount_point.trim_end_matches('/');
    let want = if want.is_empty() { "/" } else { want };
    table.iter().rev().find(|m| m.mount_point == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
100 22 7:3 / /var/lib/kubelet/staging/pv\\0401 rw,relatime shared:50 - xfs /dev/loop3 rw,attr2,inode64
101 22 7:3 / /var/lib/kubelet/pods/p/volumes/v/mount ro,relatime shared:50 - xfs /dev/loop3 rw,attr2
102 22 0:5 /loop3 /var/lib/kubelet/pods/p/block/v rw,nosuid shared:2 - devtmpfs udev rw,size=100k
garbage line
103 22 7:4 / /mnt/x rw - ext4 /dev/loop4 rw
104 22 7:5 / /mnt/x rw - ext4 /dev/loop5 rw
";

    #[test]
    fn parses_fields_and_unescapes_paths() {
        let t = parse(TABLE);
        assert_eq!(t.len(), 6);
        let staged = find(&t, "/var/lib/kubelet/staging/pv 1").expect("staged");
        assert_eq!((staged.major, staged.minor), (7, 3));
        assert_eq!(staged.fs_type, "xfs");
        assert_eq!(staged.source, "/dev/loop3");
        assert!(!staged.read_only());
        let published =
            find(&t, "/var/lib/kubelet/pods/p/volumes/v/mount/").expect("trailing slash ignored");
        assert!(published.read_only());
        let block = find(&t, "/var/lib/kubelet/pods/p/block/v").expect("block");
        assert_eq!(
            (block.root.as_str(), block.fs_type.as_str()),
            ("/loop3", "devtmpfs")
        );
        assert_eq!(find(&t, "/").map(|m| m.source.as_str()), Some("/dev/sda1"));
        assert!(find(&t, "/var/lib/kubelet").is_none());
    }

    #[test]
    fn the_topmost_mount_wins() {
        let t = parse(TABLE);
        assert_eq!(
            find(&t, "/mnt/x").map(|m| m.source.as_str()),
            Some("/dev/loop5")
        );
    }

    #[test]
    fn unescape_handles_odd_input() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("tail\\"), "tail\\");
        assert_eq!(unescape("x\\01"), "x\\01");
        assert_eq!(unescape("\\011"), "\t");
    }
}
