//! Reading block devices out of sysfs (`/sys/block/<name>`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::DiscoveryError;

/// What a `/sys/block` entry is, as far as publishing disks goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// A whole disk we publish.
    Disk { nvme: bool },
    /// Not a disk (partition, dm, md, loop, virtual, ...); the reason is for logs.
    Excluded(&'static str),
}

/// Names under `<sys>/block`, sorted. That directory only lists whole devices; the caller
/// still classifies each one.
pub(crate) fn list_block_devices(sys: &Path) -> Result<Vec<String>, DiscoveryError> {
    let dir = sys.join("block");
    let entries = fs::read_dir(&dir).map_err(|e| DiscoveryError::io(&dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DiscoveryError::io(&dir, e))?;
        // Kernel names are ASCII; anything else is not a block device name we know.
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// `name` with `prefix` followed by at least one digit ("sr0", "loop12").
fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_digit())
}

/// Kinds of device we never publish, recognised by kernel name alone.
fn excluded_by_name(name: &str, include_loop: bool) -> Option<&'static str> {
    if name.starts_with("dm-") {
        Some("device-mapper")
    } else if numbered(name, "drbd") {
        // Our own replicated volumes: a disk of a pool must never be one.
        Some("drbd")
    } else if numbered(name, "md") || name.starts_with("md_") {
        Some("md")
    } else if numbered(name, "zram") {
        Some("zram")
    } else if numbered(name, "ram") {
        Some("ramdisk")
    } else if numbered(name, "loop") && !include_loop {
        Some("loop")
    } else if numbered(name, "sr") {
        Some("cdrom")
    } else if numbered(name, "fd") {
        Some("floppy")
    } else {
        None
    }
}

/// Decides whether `<sys>/block/<name>` is a whole disk we publish.
///
/// `sys_real` is `sys` canonicalised, so we can tell where the device's real sysfs
/// directory lives (`/sys/block/*` are symlinks into `/sys/devices/...`).
pub(crate) fn classify(
    sys: &Path,
    sys_real: &Path,
    name: &str,
    include_loop: bool,
) -> Result<DeviceKind, DiscoveryError> {
    if let Some(reason) = excluded_by_name(name, include_loop) {
        return Ok(DeviceKind::Excluded(reason));
    }
    let link = sys.join("block").join(name);
    // A dangling link means the device was removed between readdir and now; NotFound
    // from here is treated as "vanished" by the caller.
    let real = fs::canonicalize(&link).map_err(|e| DiscoveryError::io(&link, e))?;
    let rel = real.strip_prefix(sys_real).unwrap_or(&real);
    let is_loop = numbered(name, "loop");
    let is_nvme = name.starts_with("nvme") || rel.components().any(|c| c.as_os_str() == "nvme");

    if rel.starts_with("devices/virtual") {
        // Virtual devices (loop, nbd, zram, dm, md) are backed by something else. Two
        // exceptions: loop when asked for (tests), and NVMe native-multipath heads, which
        // live under /sys/devices/virtual/nvme-subsystem and are the real disk.
        let nvme_head = is_nvme && rel.components().any(|c| c.as_os_str() == "nvme-subsystem");
        let allowed = nvme_head || (is_loop && include_loop);
        if !allowed {
            return Ok(DeviceKind::Excluded("virtual"));
        }
    }
    if link.join("partition").exists() {
        return Ok(DeviceKind::Excluded("partition"));
    }
    // NVMe multipath path devices (nvme0c0n1) are hidden; the head device is the disk.
    if read_flag(&link.join("hidden")) {
        return Ok(DeviceKind::Excluded("hidden"));
    }
    Ok(DeviceKind::Disk { nvme: is_nvme })
}

/// Reads a sysfs attribute that must exist. NotFound is left for the caller to treat as
/// "device vanished".
fn read_required(path: &Path) -> Result<String, DiscoveryError> {
    let raw = fs::read(path).map_err(|e| DiscoveryError::io(path, e))?;
    Ok(clean(&raw))
}

/// `dev`: "major:minor".
pub(crate) fn read_dev_numbers(dir: &Path) -> Result<(u32, u32), DiscoveryError> {
    let path = dir.join("dev");
    let text = read_required(&path)?;
    parse_dev_numbers(&text).ok_or_else(|| DiscoveryError::Parse {
        path,
        reason: format!("expected MAJOR:MINOR, got {text:?}"),
    })
}

pub(crate) fn parse_dev_numbers(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `size` is always in 512-byte sectors, whatever the logical block size.
pub(crate) fn read_size_bytes(dir: &Path) -> Result<i64, DiscoveryError> {
    let path = dir.join("size");
    let text = read_required(&path)?;
    text.parse::<i64>()
        .ok()
        .and_then(|sectors| sectors.checked_mul(512))
        .filter(|bytes| *bytes >= 0)
        .ok_or_else(|| DiscoveryError::Parse {
            path,
            reason: format!("expected a sector count, got {text:?}"),
        })
}

/// Reads an optional attribute: trimmed, `None` when missing, empty or unreadable.
/// Identity attributes are best effort (some drivers return EIO for a VPD page they do
/// not support), so an error here only loses the attribute.
pub(crate) fn read_opt(path: &Path) -> Option<String> {
    match fs::read(path) {
        Ok(raw) => Some(clean(&raw)).filter(|s| !s.is_empty()),
        Err(err) => {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %err, "optional sysfs attribute unreadable");
            }
            None
        }
    }
}

/// "1" means set; anything else (including missing) means not set.
pub(crate) fn read_flag(path: &Path) -> bool {
    read_opt(path).as_deref() == Some("1")
}

/// Sysfs text with surrounding whitespace and NUL padding removed.
fn clean(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
}

/// Serial number from sysfs: virtio puts it on the block device, NVMe on the controller
/// (`device/serial`), SCSI/SATA in VPD page 0x80.
pub(crate) fn read_serial(dir: &Path) -> Option<String> {
    read_opt(&dir.join("serial"))
        .or_else(|| read_opt(&dir.join("device/serial")))
        .or_else(|| {
            let raw = fs::read(dir.join("device/vpd_pg80")).ok()?;
            parse_vpd_pg80(&raw)
        })
}

/// VPD page 0x80 (Unit Serial Number): 4-byte header, byte 1 = page code 0x80, bytes 2-3 =
/// big-endian length of the serial that follows (ASCII, often space padded).
pub(crate) fn parse_vpd_pg80(raw: &[u8]) -> Option<String> {
    if raw.len() < 4 || raw[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
    let body = raw.get(4..4 + len).unwrap_or(&raw[4..]);
    let text: String = body
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|b| char::from(*b))
        .collect();
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

/// `device/vendor`, except virtio/PCI numeric ids like "0x1af4", which name no vendor.
pub(crate) fn read_vendor(dir: &Path) -> Option<String> {
    read_opt(&dir.join("device/vendor")).filter(|v| {
        let numeric = v
            .strip_prefix("0x")
            .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()));
        !numeric
    })
}

/// The device node name relative to /dev: `DEVNAME` from the sysfs `uevent` file, else
/// the kernel name with sysfs's '!' turned back into '/' (e.g. "cciss!c0d0").
pub(crate) fn dev_node_name(dir: &Path, name: &str) -> PathBuf {
    let from_uevent = fs::read_to_string(dir.join("uevent"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("DEVNAME="))
                .map(str::trim)
                .filter(|v| !v.is_empty() && !v.starts_with('/') && !v.contains(".."))
                .map(str::to_string)
        });
    PathBuf::from(from_uevent.unwrap_or_else(|| name.replace('!', "/")))
}

/// Names in `holders/` (dm-0, md127, bcache0), sorted. A missing directory means none.
pub(crate) fn read_holders(dir: &Path) -> Result<Vec<String>, DiscoveryError> {
    let holders = dir.join("holders");
    let entries = match fs::read_dir(&holders) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // Real sysfs always has holders/; if it is gone while the device's own
            // directory is gone too, the device vanished.
            if !dir.exists() {
                return Err(DiscoveryError::io(&holders, err));
            }
            return Ok(Vec::new());
        }
        Err(err) => return Err(DiscoveryError::io(&holders, err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DiscoveryError::io(&holders, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Partition subdirectories of a disk's sysfs dir, with their partition number (from
/// the `partition` attribute) for ordering.
pub(crate) fn list_partitions(disk_dir: &Path) -> Result<Vec<(u32, String)>, DiscoveryError> {
    let entries = fs::read_dir(disk_dir).map_err(|e| DiscoveryError::io(disk_dir, e))?;
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DiscoveryError::io(disk_dir, e))?;
        // Partitions are real subdirectories; `device`, `bdi`, `subsystem` are symlinks
        // and never followed here.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(number) = read_opt(&entry.path().join("partition")) else {
            continue;
        };
        parts.push((number.parse().unwrap_or(u32::MAX), name));
    }
    parts.sort();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_excluded() {
        for name in [
            "dm-0", "md0", "md127", "md_d0", "zram0", "ram15", "loop3", "sr0", "fd0", "drbd0",
            "drbd1000",
        ] {
            assert!(excluded_by_name(name, false).is_some(), "{name}");
        }
        for name in [
            "sda", "vdb", "nvme0n1", "mmcblk0", "xvda", "mdx", "srv", "ramp", "drbdx",
        ] {
            assert!(excluded_by_name(name, false).is_none(), "{name}");
        }
        assert!(excluded_by_name("loop0", true).is_none());
    }

    #[test]
    fn vpd_pg80() {
        let mut page = vec![0x00, 0x80, 0x00, 0x0c];
        page.extend_from_slice(b"  ZA1B2C3D  ");
        assert_eq!(parse_vpd_pg80(&page).as_deref(), Some("ZA1B2C3D"));
        // Length beyond the buffer: take what is there.
        let page = [0x00, 0x80, 0x00, 0x40, b'A', b'B'];
        assert_eq!(parse_vpd_pg80(&page).as_deref(), Some("AB"));
        assert_eq!(parse_vpd_pg80(&[0x00, 0x83, 0x00, 0x01, b'A']), None);
        assert_eq!(parse_vpd_pg80(&[0x00, 0x80, 0x00, 0x02, b' ', 0]), None);
        assert_eq!(parse_vpd_pg80(&[0x00]), None);
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(parse_dev_numbers("252:16\n"), Some((252, 16)));
        assert_eq!(parse_dev_numbers("252"), None);
        assert_eq!(parse_dev_numbers("a:b"), None);
    }
}
