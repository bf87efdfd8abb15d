//! Our own magic-number probe: what a block device (or any file) carries.
//!
//! This is what tells a blank disk from a used one, so it errs on the side of "used":
//! it checks more signatures than the agent needs to name (anything common) and never
//! depends on udev/blkid having run. Names follow blkid's `TYPE` values so they match
//! what `lsblk`/udev show (`ID_FS_TYPE`, `ID_PART_TABLE_TYPE`).
//!
//! The device is read once at the start (`HEAD_LEN`) and once at the end (`TAIL_LEN`,
//! for RAID superblocks stored there); a device shorter than that is fine.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use super::DiscoveryError;

/// Bytes read from the start: covers btrfs (64 KiB + 64), swap with 64 KiB pages and the
/// ZFS label-0 uberblock ring (128-256 KiB).
const HEAD_LEN: usize = 256 * 1024;
/// Bytes read from the end: md 0.90 (last 64-128 KiB) and md 1.0 (last 8-12 KiB).
const TAIL_LEN: usize = 128 * 1024;

/// What a probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Filesystem or other content signature: "xfs", "ext4", "LVM2_member", "swap", ...
    pub signature: Option<String>,
    /// Partition table type: "gpt" or "dos".
    pub partition_table: Option<String>,
}

impl Probe {
    /// Nothing recognisable on the device.
    pub fn is_blank(&self) -> bool {
        self.signature.is_none() && self.partition_table.is_none()
    }
}

/// Probes a block device (or any file) for a signature and a partition table.
///
/// Opens read-only (no O_EXCL, so it works on devices in use) and reads at most
/// `HEAD_LEN + TAIL_LEN` bytes.
pub fn probe(path: &Path) -> Result<Probe, DiscoveryError> {
    let mut file = File::open(path).map_err(|e| DiscoveryError::io(path, e))?;
    let head = read_at_most(&file, 0, HEAD_LEN).map_err(|e| DiscoveryError::io(path, e))?;
    // Block devices report length 0 in metadata; seeking to the end gives their size.
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| DiscoveryError::io(path, e))?;
    let tail_start = size.saturating_sub(TAIL_LEN as u64);
    let tail = if tail_start == 0 {
        // The head already holds the whole device (or as much of it as the tail would).
        head.clone()
    } else {
        read_at_most(&file, tail_start, TAIL_LEN).map_err(|e| DiscoveryError::io(path, e))?
    };
    Ok(probe_bytes(&head, &tail, size))
}

/// Reads up to `len` bytes at `offset`, fewer if the device ends first.
fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Classifies a device from its first bytes (`head`), its last bytes (`tail`, ending at
/// `size`) and its size.
pub(crate) fn probe_bytes(head: &[u8], tail: &[u8], size: u64) -> Probe {
    let signature = detect_signature(head, tail, size).map(str::to_string);
    let gpt = is_gpt(head);
    // A boot sector of a FAT/NTFS filesystem also ends in 0x55AA: with a filesystem found,
    // the MBR check is skipped and the filesystem is reported (blkid does the same).
    let partition_table = if gpt {
        Some("gpt")
    } else if signature.is_none() && is_dos_mbr(head) {
        Some("dos")
    } else {
        None
    };
    Probe {
        signature,
        partition_table: partition_table.map(str::to_string),
    }
}

/// `len` bytes at `offset`, or `None` past the end of the buffer.
fn at(buf: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    buf.get(offset..offset.checked_add(len)?)
}

fn has(buf: &[u8], offset: usize, magic: &[u8]) -> bool {
    at(buf, offset, magic.len()) == Some(magic)
}

fn le_u16(buf: &[u8], offset: usize) -> Option<u16> {
    at(buf, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(buf: &[u8], offset: usize) -> Option<u32> {
    at(buf, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u32_either(buf: &[u8], offset: usize, value: u32) -> bool {
    at(buf, offset, 4).is_some_and(|b| {
        let b = [b[0], b[1], b[2], b[3]];
        u32::from_le_bytes(b) == value || u32::from_be_bytes(b) == value
    })
}

fn u64_either(buf: &[u8], offset: usize, value: u64) -> bool {
    at(buf, offset, 8).is_some_and(|b| {
        let mut arr = [0u8; 8];
        arr.copy_from_slice(b);
        u64::from_le_bytes(arr) == value || u64::from_be_bytes(arr) == value
    })
}

/// Signatures in priority order: containers and RAID members first (a RAID1 member with
/// metadata 1.0 also shows the filesystem at offset 0; the member is what matters), then
/// filesystems.
fn detect_signature(head: &[u8], tail: &[u8], size: u64) -> Option<&'static str> {
    if is_luks(head) {
        return Some("crypto_LUKS");
    }
    if is_lvm2(head) {
        return Some("LVM2_member");
    }
    if is_md(head, tail, size) {
        return Some("linux_raid_member");
    }
    if has(head, 4096 + 24, &BCACHE_MAGIC) {
        return Some("bcache");
    }
    if head.starts_with(b"bluestore block device") {
        return Some("ceph_bluestore");
    }
    if head.starts_with(b"XFSB") {
        return Some("xfs");
    }
    if let Some(ext) = ext_flavour(head) {
        return Some(ext);
    }
    if has(head, 65536 + 64, b"_BHRfS_M") {
        return Some("btrfs");
    }
    if le_u32(head, 1024) == Some(0xF2F5_2010) {
        return Some("f2fs");
    }
    if head.starts_with(b"hsqs") {
        return Some("squashfs");
    }
    if has(head, 3, b"NTFS    ") {
        return Some("ntfs");
    }
    if has(head, 3, b"EXFAT   ") {
        return Some("exfat");
    }
    if is_vfat(head) {
        return Some("vfat");
    }
    if has(head, 32769, b"CD001") {
        return Some("iso9660");
    }
    if let Some(swap) = swap_kind(head) {
        return Some(swap);
    }
    if is_zfs(head) {
        return Some("zfs_member");
    }
    None
}

/// LUKS1/LUKS2 primary header at 0, or a LUKS2 secondary header (kept when the primary
/// was wiped) at one of the offsets cryptsetup uses.
fn is_luks(head: &[u8]) -> bool {
    const PRIMARY: &[u8] = b"LUKS\xba\xbe";
    const SECONDARY: &[u8] = b"SKUL\xba\xbe";
    head.starts_with(PRIMARY)
        || [0x4000usize, 0x8000, 0x10000, 0x20000]
            .iter()
            .any(|off| has(head, *off, SECONDARY))
}

/// LVM2 physical volume: "LABELONE" at the start of any of the first four sectors, with
/// the label type "LVM2 001" 24 bytes later (as LVM itself scans).
fn is_lvm2(head: &[u8]) -> bool {
    (0..4).any(|sector| {
        let off = sector * 512;
        has(head, off, b"LABELONE") && has(head, off + 24, b"LVM2 001")
    })
}

const MD_MAGIC: u32 = 0xa92b_4efc;

/// Linux md superblock. v1.1 sits at 0, v1.2 at 4 KiB; v0.90 in the last 64 KiB-aligned
/// 64 KiB block, v1.0 8 KiB before the end (4 KiB aligned). v0.90 is host-endian, so
/// both byte orders are accepted.
fn is_md(head: &[u8], tail: &[u8], size: u64) -> bool {
    if u32_either(head, 0, MD_MAGIC) || u32_either(head, 4096, MD_MAGIC) {
        return true;
    }
    let tail_start = size.saturating_sub(tail.len() as u64);
    let in_tail = |abs: u64| -> bool {
        abs.checked_sub(tail_start)
            .and_then(|rel| usize::try_from(rel).ok())
            .is_some_and(|rel| u32_either(tail, rel, MD_MAGIC))
    };
    if size >= 128 * 1024 {
        let v090 = (size & !(65536 - 1)) - 65536;
        let v10 = ((size / 512 - 16) & !7) * 512;
        return in_tail(v090) || in_tail(v10);
    }
    false
}

/// bcache superblock magic, 24 bytes into the superblock at 4 KiB.
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

/// ext2/3/4: superblock at 1024, magic 0xEF53 at 1024 + 0x38. The flavour follows blkid:
/// a journal device is "jbd"; features ext3 lacks make it "ext4"; a journal makes "ext3".
fn ext_flavour(head: &[u8]) -> Option<&'static str> {
    const SB: usize = 1024;
    if le_u16(head, SB + 0x38) != Some(0xEF53) {
        return None;
    }
    // A device that ends before the feature words has none: plain ext2.
    let compat = le_u32(head, SB + 0x5C).unwrap_or(0);
    let incompat = le_u32(head, SB + 0x60).unwrap_or(0);
    let ro_compat = le_u32(head, SB + 0x64).unwrap_or(0);
    const COMPAT_HAS_JOURNAL: u32 = 0x0004;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
    // What ext3 understands: FILETYPE | RECOVER | META_BG, and SPARSE_SUPER | LARGE_FILE |
    // BTREE_DIR.
    const EXT3_INCOMPAT: u32 = 0x0002 | 0x0004 | 0x0010;
    const EXT3_RO_COMPAT: u32 = 0x0001 | 0x0002 | 0x0004;
    Some(if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        "jbd"
    } else if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    })
}

/// FAT12/16 ("FAT" at 54) or FAT32 ("FAT" at 82) boot sector with a plausible
/// bytes-per-sector, so stray text is not taken for a filesystem.
fn is_vfat(head: &[u8]) -> bool {
    let sector_ok =
        le_u16(head, 11).is_some_and(|b| b.is_power_of_two() && (512..=4096).contains(&b));
    sector_ok && (has(head, 54, b"FAT") || has(head, 82, b"FAT32   ") || has(head, 3, b"MSWIN"))
}

/// Swap header or hibernation image signature in the last 10 bytes of the first page,
/// for any of the page sizes Linux uses.
fn swap_kind(head: &[u8]) -> Option<&'static str> {
    for page in [4096usize, 8192, 16384, 65536] {
        let off = page - 10;
        if has(head, off, b"SWAPSPACE2") || has(head, off, b"SWAP-SPACE") {
            return Some("swap");
        }
        if [&b"S1SUSPEND"[..], b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001"]
            .iter()
            .any(|magic| has(head, off, magic))
        {
            return Some("swsuspend");
        }
    }
    None
}

/// ZFS: an uberblock (magic 0x00bab10c, either byte order) in the ring of label 0, which
/// starts at 128 KiB; uberblocks are at least 1 KiB apart.
fn is_zfs(head: &[u8]) -> bool {
    const UB_MAGIC: u64 = 0x00ba_b10c;
    (128 * 1024..256 * 1024)
        .step_by(1024)
        .any(|off| u64_either(head, off, UB_MAGIC))
}

/// GPT header ("EFI PART") at LBA 1 for 512- or 4096-byte logical sectors.
fn is_gpt(head: &[u8]) -> bool {
    has(head, 512, b"EFI PART") || has(head, 4096, b"EFI PART")
}

/// DOS MBR: boot signature 0x55AA, every partition entry's boot flag 0x00 or 0x80, and at
/// least one entry in use (non-zero type).
fn is_dos_mbr(head: &[u8]) -> bool {
    if !has(head, 510, &[0x55, 0xAA]) {
        return false;
    }
    let entries: Vec<&[u8]> = (0..4).filter_map(|i| at(head, 446 + 16 * i, 16)).collect();
    entries.len() == 4
        && entries.iter().all(|e| e[0] == 0x00 || e[0] == 0x80)
        && entries.iter().any(|e| e[4] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::path::PathBuf;

    /// A sparse file of `size` bytes with `writes` (offset, bytes) applied.
    fn image(dir: &Path, name: &str, size: u64, writes: &[(u64, &[u8])]) -> PathBuf {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .expect("create image");
        file.set_len(size).expect("size image");
        for (offset, bytes) in writes {
            file.write_all_at(bytes, *offset).expect("write signature");
        }
        path
    }

    fn probe_image(size: u64, writes: &[(u64, &[u8])]) -> Probe {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = image(dir.path(), "img", size, writes);
        probe(&path).expect("probe")
    }

    fn sig(size: u64, writes: &[(u64, &[u8])]) -> Option<String> {
        probe_image(size, writes).signature
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn zeroed_file_is_blank() {
        let p = probe_image(4 * MIB, &[]);
        assert!(p.is_blank(), "{p:?}");
    }

    #[test]
    fn tiny_and_empty_files_are_blank() {
        assert!(probe_image(0, &[]).is_blank());
        assert!(probe_image(100, &[(0, b"hello")]).is_blank());
        // Magic that is cut off by the end of the device is not a match.
        assert!(probe_image(1081, &[(1080, &[0x53])]).is_blank());
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = probe(Path::new("/nonexistent/hwameistor-probe")).expect_err("must fail");
        assert!(
            err.to_string().contains("/nonexistent/hwameistor-probe"),
            "{err}"
        );
    }

    #[test]
    fn xfs() {
        assert_eq!(sig(MIB, &[(0, b"XFSB")]).as_deref(), Some("xfs"));
    }

    #[test]
    fn ext_flavours() {
        let magic: &[u8] = &[0x53, 0xEF];
        assert_eq!(sig(MIB, &[(1080, magic)]).as_deref(), Some("ext2"));
        // has_journal
        assert_eq!(
            sig(MIB, &[(1080, magic), (1024 + 0x5C, &[0x04, 0, 0, 0])]).as_deref(),
            Some("ext3")
        );
        // has_journal + extents (incompat 0x40)
        assert_eq!(
            sig(
                MIB,
                &[
                    (1080, magic),
                    (1024 + 0x5C, &[0x04, 0, 0, 0]),
                    (1024 + 0x60, &[0x42, 0, 0, 0])
                ]
            )
            .as_deref(),
            Some("ext4")
        );
        // huge_file (ro_compat 0x08)
        assert_eq!(
            sig(MIB, &[(1080, magic), (1024 + 0x64, &[0x08, 0, 0, 0])]).as_deref(),
            Some("ext4")
        );
        // external journal device
        assert_eq!(
            sig(MIB, &[(1080, magic), (1024 + 0x60, &[0x08, 0, 0, 0])]).as_deref(),
            Some("jbd")
        );
    }

    #[test]
    fn lvm2_in_any_of_first_four_sectors() {
        for sector in 0..4u64 {
            let off = sector * 512;
            assert_eq!(
                sig(MIB, &[(off, b"LABELONE"), (off + 24, b"LVM2 001")]).as_deref(),
                Some("LVM2_member"),
                "sector {sector}"
            );
        }
        // LABELONE without the LVM2 type is not LVM.
        assert_eq!(sig(MIB, &[(512, b"LABELONE")]), None);
        assert_eq!(
            sig(MIB, &[(4 * 512, b"LABELONE"), (4 * 512 + 24, b"LVM2 001")]),
            None
        );
    }

    #[test]
    fn swap_for_each_page_size() {
        for page in [4096u64, 65536] {
            assert_eq!(
                sig(MIB, &[(page - 10, b"SWAPSPACE2")]).as_deref(),
                Some("swap")
            );
        }
        assert_eq!(sig(MIB, &[(4086, b"SWAP-SPACE")]).as_deref(), Some("swap"));
        assert_eq!(
            sig(MIB, &[(4086, b"S1SUSPEND")]).as_deref(),
            Some("swsuspend")
        );
    }

    #[test]
    fn btrfs() {
        assert_eq!(
            sig(MIB, &[(65536 + 64, b"_BHRfS_M")]).as_deref(),
            Some("btrfs")
        );
        // Device ends in the middle of the magic.
        assert_eq!(sig(65536 + 68, &[(65536 + 64, b"_BHR")]), None);
    }

    #[test]
    fn gpt_with_protective_mbr() {
        let mut mbr_entry = [0u8; 16];
        mbr_entry[4] = 0xEE;
        let p = probe_image(
            MIB,
            &[(446, &mbr_entry), (510, &[0x55, 0xAA]), (512, b"EFI PART")],
        );
        assert_eq!(p.partition_table.as_deref(), Some("gpt"));
        assert_eq!(p.signature, None);
        // 4 KiB logical sectors.
        let p = probe_image(MIB, &[(4096, b"EFI PART")]);
        assert_eq!(p.partition_table.as_deref(), Some("gpt"));
    }

    #[test]
    fn dos_mbr() {
        let mut entry = [0u8; 16];
        entry[0] = 0x80;
        entry[4] = 0x83;
        let p = probe_image(MIB, &[(446, &entry), (510, &[0x55, 0xAA])]);
        assert_eq!(p.partition_table.as_deref(), Some("dos"));
        assert_eq!(p.signature, None);
        // Boot signature but no partition in use.
        assert!(probe_image(MIB, &[(510, &[0x55, 0xAA])]).is_blank());
        // Invalid boot flag: not an MBR.
        let mut bad = entry;
        bad[0] = 0x12;
        assert!(probe_image(MIB, &[(446, &bad), (510, &[0x55, 0xAA])]).is_blank());
    }

    #[test]
    fn fat_boot_sector_is_a_filesystem_not_an_mbr() {
        // mkfs.vfat -F 32 style: bytes/sector 512, "FAT32   " at 82, 0x55AA, and bytes in
        // the partition-table area that look like an entry.
        let mut entry = [0u8; 16];
        entry[4] = 0x0c;
        let p = probe_image(
            MIB,
            &[
                (11, &[0x00, 0x02]),
                (82, b"FAT32   "),
                (446, &entry),
                (510, &[0x55, 0xAA]),
            ],
        );
        assert_eq!(p.signature.as_deref(), Some("vfat"));
        assert_eq!(p.partition_table, None);
        assert_eq!(
            sig(MIB, &[(11, &[0x00, 0x02]), (54, b"FAT16   ")]).as_deref(),
            Some("vfat")
        );
        // "FAT" without a sane sector size is not FAT.
        assert_eq!(sig(MIB, &[(54, b"FAT16   ")]), None);
    }

    #[test]
    fn iso9660() {
        assert_eq!(sig(MIB, &[(32769, b"CD001")]).as_deref(), Some("iso9660"));
    }

    #[test]
    fn luks() {
        assert_eq!(
            sig(MIB, &[(0, b"LUKS\xba\xbe")]).as_deref(),
            Some("crypto_LUKS")
        );
        assert_eq!(
            sig(MIB, &[(0x4000, b"SKUL\xba\xbe")]).as_deref(),
            Some("crypto_LUKS")
        );
    }

    #[test]
    fn bcache() {
        assert_eq!(
            sig(MIB, &[(4096 + 24, &BCACHE_MAGIC)]).as_deref(),
            Some("bcache")
        );
    }

    #[test]
    fn md_superblocks() {
        let magic = MD_MAGIC.to_le_bytes();
        assert_eq!(
            sig(MIB, &[(4096, &magic)]).as_deref(),
            Some("linux_raid_member")
        );
        assert_eq!(
            sig(MIB, &[(0, &magic)]).as_deref(),
            Some("linux_raid_member")
        );
        // v1.0: 8 KiB before the end (size a multiple of 4 KiB).
        let size = 10 * MIB;
        assert_eq!(
            sig(size, &[(size - 8192, &magic)]).as_deref(),
            Some("linux_raid_member")
        );
        // v0.90: last 64 KiB-aligned block minus 64 KiB, big-endian host.
        let size = 10 * MIB + 12345;
        let off = (size & !65535) - 65536;
        assert_eq!(
            sig(size, &[(off, &MD_MAGIC.to_be_bytes())]).as_deref(),
            Some("linux_raid_member")
        );
    }

    #[test]
    fn zfs_member() {
        let magic = 0x00ba_b10cu64.to_le_bytes();
        assert_eq!(
            sig(MIB, &[(128 * 1024 + 5 * 1024, &magic)]).as_deref(),
            Some("zfs_member")
        );
    }

    #[test]
    fn other_filesystems() {
        assert_eq!(sig(MIB, &[(3, b"NTFS    ")]).as_deref(), Some("ntfs"));
        assert_eq!(sig(MIB, &[(3, b"EXFAT   ")]).as_deref(), Some("exfat"));
        assert_eq!(
            sig(MIB, &[(1024, &0xF2F5_2010u32.to_le_bytes())]).as_deref(),
            Some("f2fs")
        );
        assert_eq!(sig(MIB, &[(0, b"hsqs")]).as_deref(), Some("squashfs"));
        assert_eq!(
            sig(MIB, &[(0, b"bluestore block device\n")]).as_deref(),
            Some("ceph_bluestore")
        );
    }

    #[test]
    fn filesystem_and_gpt_both_reported() {
        // An iso9660 hybrid image carries both.
        let p = probe_image(MIB, &[(512, b"EFI PART"), (32769, b"CD001")]);
        assert_eq!(p.signature.as_deref(), Some("iso9660"));
        assert_eq!(p.partition_table.as_deref(), Some("gpt"));
    }
}
