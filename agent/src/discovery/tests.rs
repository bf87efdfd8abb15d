//! Scans of fake host trees: a sysfs, dev tree, udev database and mountinfo built in a
//! tempdir, with regular files standing in for device nodes so the probe reads them.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;

const MIB: i64 = 1024 * 1024;

struct FakeHost {
    _dir: TempDir,
    roots: HostRoots,
}

/// One disk to add to a fake host.
struct FakeDisk<'a> {
    name: &'a str,
    /// Parent of `block/<name>` under sys/devices, e.g. "pci0000:00/0000:00:05.0/virtio3".
    parent: &'a str,
    major: u32,
    minor: u32,
    size_bytes: i64,
    rotational: bool,
}

impl FakeHost {
    fn new() -> FakeHost {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let roots = HostRoots {
            sys: base.join("sys"),
            dev: base.join("dev"),
            udev_data: base.join("run/udev/data"),
            mountinfo: base.join("proc/self/mountinfo"),
            include_loop: false,
        };
        for d in [
            roots.sys.join("block"),
            roots.sys.join("devices/virtual/block"),
            roots.dev.join("disk/by-id"),
            roots.dev.join("disk/by-path"),
            roots.udev_data.clone(),
        ] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let host = FakeHost { _dir: dir, roots };
        host.write(
            &host.roots.mountinfo,
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n",
        );
        host
    }

    fn write(&self, path: &Path, content: impl AsRef<[u8]>) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir parent");
        }
        fs::write(path, content).expect("write");
    }

    /// Creates sys/devices/<parent>/block/<name> with the usual attributes, the
    /// sys/block/<name> symlink and an empty dev/<name> "device". Returns the sysfs dir.
    fn add_disk(&self, disk: &FakeDisk<'_>) -> PathBuf {
        let dir = self
            .roots
            .sys
            .join("devices")
            .join(disk.parent)
            .join("block")
            .join(disk.name);
        self.write(&dir.join("dev"), format!("{}:{}\n", disk.major, disk.minor));
        self.write(&dir.join("size"), format!("{}\n", disk.size_bytes / 512));
        self.write(
            &dir.join("queue/rotational"),
            if disk.rotational { "1\n" } else { "0\n" },
        );
        self.write(&dir.join("removable"), "0\n");
        self.write(&dir.join("ro"), "0\n");
        self.write(
            &dir.join("uevent"),
            format!(
                "MAJOR={}\nMINOR={}\nDEVNAME={}\nDEVTYPE=disk\n",
                disk.major, disk.minor, disk.name
            ),
        );
        fs::create_dir_all(dir.join("holders")).expect("holders");
        let depth = 1; // sys/block/<name> -> ../devices/...
        let target = PathBuf::from("../".repeat(depth))
            .join("devices")
            .join(disk.parent)
            .join("block")
            .join(disk.name);
        symlink(target, self.roots.sys.join("block").join(disk.name)).expect("symlink sys/block");
        self.device_file(disk.name, &[]);
        dir
    }

    /// A regular file standing in for /dev/<name>, with signatures written at offsets.
    fn device_file(&self, name: &str, writes: &[(u64, &[u8])]) {
        let path = self.roots.dev.join(name);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("dev file");
        file.set_len(1024 * 1024).expect("dev size");
        for (offset, bytes) in writes {
            file.write_all_at(bytes, *offset).expect("write signature");
        }
    }

    fn add_partition(
        &self,
        disk_dir: &Path,
        name: &str,
        number: u32,
        major: u32,
        minor: u32,
        size: i64,
    ) -> PathBuf {
        let dir = disk_dir.join(name);
        self.write(&dir.join("dev"), format!("{major}:{minor}\n"));
        self.write(&dir.join("size"), format!("{}\n", size / 512));
        self.write(&dir.join("partition"), format!("{number}\n"));
        self.write(
            &dir.join("uevent"),
            format!("DEVNAME={name}\nDEVTYPE=partition\n"),
        );
        fs::create_dir_all(dir.join("holders")).expect("holders");
        self.device_file(name, &[]);
        dir
    }

    /// dev/disk/<kind>/<link> -> ../../<target>, as udev makes them.
    fn link(&self, kind: &str, link: &str, target: &str) {
        symlink(
            format!("../../{target}"),
            self.roots.dev.join("disk").join(kind).join(link),
        )
        .expect("dev link");
    }

    fn udev(&self, major: u32, minor: u32, content: &str) {
        self.write(
            &self.roots.udev_data.join(format!("b{major}:{minor}")),
            content,
        );
    }

    fn add_mount(&self, line: &str) {
        let mut text = fs::read_to_string(&self.roots.mountinfo).expect("mountinfo");
        text.push_str(line);
        text.push('\n');
        self.write(&self.roots.mountinfo, text);
    }

    fn scan(&self) -> Vec<ObservedDisk> {
        scan(&self.roots).expect("scan")
    }

    fn dev(&self, rel: &str) -> String {
        self.roots.dev.join(rel).to_string_lossy().into_owned()
    }
}

fn find<'a>(disks: &'a [ObservedDisk], name: &str) -> &'a ObservedDisk {
    disks
        .iter()
        .find(|d| d.kernel_name == name)
        .unwrap_or_else(|| {
            panic!(
                "disk {name} not found in {:?}",
                disks.iter().map(|d| &d.kernel_name).collect::<Vec<_>>()
            )
        })
}

fn names(disks: &[ObservedDisk]) -> Vec<&str> {
    disks.iter().map(|d| d.kernel_name.as_str()).collect()
}

const VIRTIO: &str = "pci0000:00/0000:00:05.0/virtio3";

#[test]
fn virtio_disk_with_serial() {
    let host = FakeHost::new();
    let dir = host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 10 * 1024 * MIB,
        rotational: true,
    });
    host.write(&dir.join("serial"), "vdb-serial-01\n");
    host.write(
        &host.roots.sys.join("devices").join(VIRTIO).join("vendor"),
        "0x1af4\n",
    );
    // Symlinks the other way round (dir named `device` pointing at the virtio parent).
    symlink("../../../virtio3", dir.join("device")).expect("device link");
    host.link("by-id", "virtio-vdb-serial-01", "vdb");
    host.link("by-path", "pci-0000:00:05.0", "vdb");
    host.link("by-path", "pci-0000:00:05.0-part1", "vdb1");

    let disks = host.scan();
    let vdb = find(&disks, "vdb");
    assert_eq!(vdb.device_path, host.dev("vdb"));
    assert_eq!((vdb.major, vdb.minor), (252, 16));
    assert_eq!(vdb.size_bytes, 10 * 1024 * MIB);
    assert!(vdb.rotational);
    assert!(!vdb.nvme && !vdb.removable && !vdb.read_only);
    assert_eq!(vdb.serial.as_deref(), Some("vdb-serial-01"));
    // The virtio PCI vendor id is a number, not a vendor name.
    assert_eq!(vdb.vendor, None);
    assert_eq!(
        vdb.dev_links,
        vec![
            host.dev("disk/by-id/virtio-vdb-serial-01"),
            host.dev("disk/by-path/pci-0000:00:05.0")
        ]
    );
    assert!(vdb.is_blank(), "{vdb:?}");
}

#[test]
fn nvme_disk() {
    let host = FakeHost::new();
    let ctrl = "pci0000:00/0000:00:06.0/nvme/nvme0";
    let dir = host.add_disk(&FakeDisk {
        name: "nvme0n1",
        parent: ctrl,
        major: 259,
        minor: 0,
        size_bytes: 512 * 1024 * MIB,
        rotational: false,
    });
    let ctrl_dir = host.roots.sys.join("devices").join(ctrl);
    host.write(&ctrl_dir.join("serial"), "S4EWNX0N123456  \n");
    host.write(
        &ctrl_dir.join("model"),
        "Samsung SSD 970 EVO Plus 500GB          \n",
    );
    symlink("../../../nvme0", dir.join("device")).expect("device link");
    host.write(&dir.join("wwid"), "eui.0025385b91b12345\n");
    host.udev(259, 0, "S:disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EWNX0N123456\nS:disk/by-uuid/ignored\nE:ID_SERIAL_SHORT=from-udev\n");

    let disks = host.scan();
    let nvme = find(&disks, "nvme0n1");
    assert!(nvme.nvme);
    assert!(!nvme.rotational);
    // sysfs wins over udev.
    assert_eq!(nvme.serial.as_deref(), Some("S4EWNX0N123456"));
    assert_eq!(
        nvme.model.as_deref(),
        Some("Samsung SSD 970 EVO Plus 500GB")
    );
    assert_eq!(nvme.wwn.as_deref(), Some("eui.0025385b91b12345"));
    // udev "S:" links are reported even without the symlink on disk; by-uuid is not.
    assert_eq!(
        nvme.dev_links,
        vec![host.dev("disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EWNX0N123456")]
    );
}

#[test]
fn scsi_ssd_with_vpd_serial() {
    let host = FakeHost::new();
    let dir = host.add_disk(&FakeDisk {
        name: "sda",
        parent: "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
        major: 8,
        minor: 0,
        size_bytes: 256 * 1024 * MIB,
        rotational: false,
    });
    let mut vpd = vec![0x00, 0x80, 0x00, 0x14];
    vpd.extend_from_slice(b"    S3Z9NB0K123456  ");
    fs::create_dir_all(dir.join("device")).expect("device dir");
    host.write(&dir.join("device/vpd_pg80"), vpd);
    host.write(&dir.join("device/model"), "Samsung SSD 860 \n");
    host.write(&dir.join("device/vendor"), "ATA     \n");
    host.write(&dir.join("device/wwid"), "naa.5002538e40a12345\n");

    let disks = host.scan();
    let sda = find(&disks, "sda");
    assert!(!sda.rotational && !sda.nvme);
    assert_eq!(sda.serial.as_deref(), Some("S3Z9NB0K123456"));
    assert_eq!(sda.model.as_deref(), Some("Samsung SSD 860"));
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
    assert_eq!(sda.wwn.as_deref(), Some("naa.5002538e40a12345"));
}

#[test]
fn hdd_identity_from_udev_only() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "sdb",
        parent: "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0",
        major: 8,
        minor: 16,
        size_bytes: 4 * 1024 * 1024 * MIB,
        rotational: true,
    });
    host.udev(
        8,
        16,
        "S:disk/by-id/wwn-0x5000c500a1b2c3d4\nS:disk/by-path/pci-0000:00:1f.2-ata-2\nE:ID_SCSI_SERIAL=ZA1B2C3D\nE:ID_SERIAL_SHORT=other\n\
         E:ID_WWN=0x5000c500a1b2c3d4\nE:ID_WWN_WITH_EXTENSION=0x5000c500a1b2c3d4ext\nE:ID_MODEL=ST4000NM0035\nE:ID_VENDOR=SEAGATE\n",
    );
    // The same link also exists on disk: reported once.
    host.link("by-path", "pci-0000:00:1f.2-ata-2", "sdb");

    let disks = host.scan();
    let sdb = find(&disks, "sdb");
    assert!(sdb.rotational);
    assert_eq!(sdb.size_bytes, 4 * 1024 * 1024 * MIB);
    assert_eq!(sdb.serial.as_deref(), Some("ZA1B2C3D"));
    assert_eq!(sdb.wwn.as_deref(), Some("0x5000c500a1b2c3d4ext"));
    assert_eq!(sdb.model.as_deref(), Some("ST4000NM0035"));
    assert_eq!(sdb.vendor.as_deref(), Some("SEAGATE"));
    assert_eq!(
        sdb.dev_links,
        vec![
            host.dev("disk/by-id/wwn-0x5000c500a1b2c3d4"),
            host.dev("disk/by-path/pci-0000:00:1f.2-ata-2")
        ]
    );
}

#[test]
fn disk_with_partitions_one_mounted() {
    let host = FakeHost::new();
    let dir = host.add_disk(&FakeDisk {
        name: "vdc",
        parent: VIRTIO,
        major: 252,
        minor: 32,
        size_bytes: 20 * 1024 * MIB,
        rotational: true,
    });
    host.device_file("vdc", &[(512, b"EFI PART")]);
    // Listed out of order on purpose: results follow partition numbers.
    let p2 = host.add_partition(&dir, "vdc2", 2, 252, 34, 2 * 1024 * MIB);
    let p1 = host.add_partition(&dir, "vdc1", 1, 252, 33, 18 * 1024 * MIB);
    host.device_file("vdc1", &[(0, b"XFSB")]);
    host.device_file("vdc2", &[(4086, b"SWAPSPACE2")]);
    host.add_mount("36 35 252:33 / /var/lib/my\\040data rw,noatime shared:1 - xfs /dev/vdc1 rw");
    assert!(p1.exists() && p2.exists());

    let disks = host.scan();
    let vdc = find(&disks, "vdc");
    assert_eq!(vdc.partition_table.as_deref(), Some("gpt"));
    assert_eq!(vdc.signature, None);
    assert!(vdc.mount_points.is_empty());
    assert_eq!(
        vdc.partitions,
        vec![
            ObservedPartition {
                name: "vdc1".into(),
                size_bytes: 18 * 1024 * MIB,
                signature: Some("xfs".into()),
                mount_points: vec!["/var/lib/my data".into()],
                holders: vec![],
            },
            ObservedPartition {
                name: "vdc2".into(),
                size_bytes: 2 * 1024 * MIB,
                signature: Some("swap".into()),
                mount_points: vec![],
                holders: vec![],
            },
        ]
    );
    assert!(!vdc.is_blank());
    // Partitions are never reported as disks.
    assert_eq!(names(&disks), vec!["vdc"]);
}

#[test]
fn disk_with_holder_and_lvm_signature() {
    let host = FakeHost::new();
    let dir = host.add_disk(&FakeDisk {
        name: "sdc",
        parent: "platform/host2/target2:0:0/2:0:0:0",
        major: 8,
        minor: 32,
        size_bytes: 100 * MIB,
        rotational: true,
    });
    fs::create_dir_all(dir.join("holders/dm-0")).expect("holder");
    host.device_file("sdc", &[(512, b"LABELONE"), (536, b"LVM2 001")]);

    let disks = host.scan();
    let sdc = find(&disks, "sdc");
    assert_eq!(sdc.holders, vec!["dm-0"]);
    assert_eq!(sdc.signature.as_deref(), Some("LVM2_member"));
}

#[test]
fn partition_holders_and_udev_fs_fallback() {
    let host = FakeHost::new();
    let dir = host.add_disk(&FakeDisk {
        name: "sdd",
        parent: "platform/host3/target3:0:0/3:0:0:0",
        major: 8,
        minor: 48,
        size_bytes: 100 * MIB,
        rotational: true,
    });
    let part = host.add_partition(&dir, "sdd1", 1, 8, 49, 99 * MIB);
    fs::create_dir_all(part.join("holders/md127")).expect("holder");
    // The partition's node is missing (e.g. no devtmpfs in a container): udev fills in.
    fs::remove_file(host.roots.dev.join("sdd1")).expect("rm node");
    host.udev(8, 49, "E:ID_FS_TYPE=linux_raid_member\n");
    host.udev(8, 48, "E:ID_PART_TABLE_TYPE=dos\nE:ID_FS_TYPE=\n");

    let disks = host.scan();
    let sdd = find(&disks, "sdd");
    assert_eq!(sdd.partition_table.as_deref(), Some("dos"));
    assert_eq!(sdd.signature, None);
    assert_eq!(sdd.partitions.len(), 1);
    assert_eq!(sdd.partitions[0].holders, vec!["md127"]);
    assert_eq!(
        sdd.partitions[0].signature.as_deref(),
        Some("linux_raid_member")
    );
}

#[test]
fn whole_disk_filesystem_mounted() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vde",
        parent: VIRTIO,
        major: 252,
        minor: 64,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    host.device_file(
        "vde",
        &[(1080, &[0x53, 0xEF]), (1024 + 0x60, &[0x40, 0, 0, 0])],
    );
    host.add_mount("40 35 252:64 / /mnt/data rw - ext4 /dev/vde rw");
    host.add_mount("41 35 252:64 /sub /srv/bind rw - ext4 /dev/vde rw");

    let disks = host.scan();
    let vde = find(&disks, "vde");
    assert_eq!(vde.signature.as_deref(), Some("ext4"));
    assert_eq!(vde.mount_points, vec!["/mnt/data", "/srv/bind"]);
}

#[test]
fn virtual_and_special_devices_skipped() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    for (name, minor) in [
        ("dm-0", 0u32),
        ("loop0", 1),
        ("zram0", 2),
        ("md127", 3),
        ("ram0", 4),
        ("nbd0", 5),
    ] {
        host.add_disk(&FakeDisk {
            name,
            parent: "virtual",
            major: 7,
            minor,
            size_bytes: 64 * MIB,
            rotational: false,
        });
    }
    host.add_disk(&FakeDisk {
        name: "sr0",
        parent: "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0",
        major: 11,
        minor: 0,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    // Not in the virtual tree, yet device-mapper by name.
    host.add_disk(&FakeDisk {
        name: "dm-1",
        parent: "pci0000:00/fake",
        major: 253,
        minor: 1,
        size_bytes: 64 * MIB,
        rotational: false,
    });
    // An NVMe multipath path device is hidden.
    let hidden = host.add_disk(&FakeDisk {
        name: "nvme0c0n1",
        parent: "pci0000:00/0000:00:06.0/nvme/nvme0",
        major: 259,
        minor: 9,
        size_bytes: 64 * MIB,
        rotational: false,
    });
    host.write(&hidden.join("hidden"), "1\n");

    assert_eq!(names(&host.scan()), vec!["vdb"]);

    let mut roots = host.roots.clone();
    roots.include_loop = true;
    let disks = scan(&roots).expect("scan");
    assert_eq!(names(&disks), vec!["loop0", "vdb"]);
}

#[test]
fn nvme_multipath_head_under_virtual_is_a_disk() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "nvme0n1",
        parent: "virtual/nvme-subsystem/nvme-subsys0",
        major: 259,
        minor: 0,
        size_bytes: 64 * MIB,
        rotational: false,
    });
    let disks = host.scan();
    assert!(find(&disks, "nvme0n1").nvme);
}

#[test]
fn disk_without_serial_has_by_path_only() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "sde",
        parent: "pci0000:00/0000:00:10.0/host4/target4:0:0/4:0:0:0",
        major: 8,
        minor: 64,
        size_bytes: 8 * 1024 * MIB,
        rotational: true,
    });
    host.link("by-path", "pci-0000:00:10.0-scsi-0:0:0:0", "sde");
    host.link("by-id", "scsi-other-disk", "sdf");

    let disks = host.scan();
    let sde = find(&disks, "sde");
    assert_eq!(sde.serial, None);
    assert_eq!(sde.wwn, None);
    assert_eq!(sde.model, None);
    assert_eq!(
        sde.dev_links,
        vec![host.dev("disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0")]
    );
}

#[test]
fn vanished_disks_are_skipped() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    // Directory left without `size`: the device is being torn down.
    let gone = host.add_disk(&FakeDisk {
        name: "vdx",
        parent: VIRTIO,
        major: 252,
        minor: 80,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    fs::remove_file(gone.join("size")).expect("rm size");
    // Dangling sys/block link: removed between readdir and open.
    symlink(
        "../devices/pci0000:00/gone/block/vdy",
        host.roots.sys.join("block/vdy"),
    )
    .expect("dangling");
    // sysfs entry still there, device node already gone.
    host.add_disk(&FakeDisk {
        name: "vdz",
        parent: VIRTIO,
        major: 252,
        minor: 96,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    fs::remove_file(host.roots.dev.join("vdz")).expect("rm node");
    // Zero-sized (no medium) is not a disk to publish.
    host.add_disk(&FakeDisk {
        name: "sdg",
        parent: "pci0000:00/usb/host5/target5:0:0/5:0:0:0",
        major: 8,
        minor: 96,
        size_bytes: 0,
        rotational: true,
    });

    assert_eq!(names(&host.scan()), vec!["vdb"]);
}

#[test]
fn works_without_udev_and_dev_links() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    fs::remove_dir_all(host.roots.udev_data.parent().expect("run/udev")).expect("rm udev");
    fs::remove_dir_all(host.roots.dev.join("disk")).expect("rm disk links");
    let disks = host.scan();
    let vdb = find(&disks, "vdb");
    assert!(vdb.dev_links.is_empty());
    assert!(vdb.is_blank());
}

#[test]
fn probe_result_wins_over_stale_udev() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    host.device_file("vdb", &[(0, b"XFSB")]);
    host.udev(252, 16, "E:ID_FS_TYPE=ext4\n");
    assert_eq!(find(&host.scan(), "vdb").signature.as_deref(), Some("xfs"));
}

#[test]
fn missing_sysfs_is_an_error_naming_the_path() {
    let host = FakeHost::new();
    fs::remove_dir_all(host.roots.sys.join("block")).expect("rm sys/block");
    let err = scan(&host.roots).expect_err("must fail");
    assert!(
        matches!(err, DiscoveryError::Io { ref path, .. } if path.ends_with("sys/block")),
        "{err}"
    );
}

#[test]
fn missing_mountinfo_is_an_error() {
    let host = FakeHost::new();
    fs::remove_file(&host.roots.mountinfo).expect("rm mountinfo");
    let err = scan(&host.roots).expect_err("must fail");
    assert!(err.to_string().contains("mountinfo"), "{err}");
}

#[test]
fn malformed_dev_attribute_skips_only_that_disk() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    let bad = host.add_disk(&FakeDisk {
        name: "vdc",
        parent: VIRTIO,
        major: 252,
        minor: 32,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    host.write(&bad.join("dev"), "garbage\n");
    assert_eq!(names(&host.scan()), vec!["vdb"]);
}

#[test]
fn serializes_to_json() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    let json = serde_json::to_value(host.scan()).expect("json");
    assert_eq!(json[0]["kernel_name"], "vdb");
    assert_eq!(json[0]["size_bytes"], 64 * MIB);
}

#[test]
fn unreadable_device_is_skipped_not_published_blank() {
    let host = FakeHost::new();
    host.add_disk(&FakeDisk {
        name: "vdb",
        parent: VIRTIO,
        major: 252,
        minor: 16,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    host.add_disk(&FakeDisk {
        name: "vdc",
        parent: VIRTIO,
        major: 252,
        minor: 32,
        size_bytes: 64 * MIB,
        rotational: true,
    });
    // Reading the "device" fails with EISDIR: stands in for EIO on a dying disk.
    fs::remove_file(host.roots.dev.join("vdc")).expect("rm node");
    fs::create_dir(host.roots.dev.join("vdc")).expect("dir node");
    assert_eq!(names(&host.scan()), vec!["vdb"]);
}
