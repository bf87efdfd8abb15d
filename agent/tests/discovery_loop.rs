//! Discovery against real block devices: loop devices on this host.
//!
//! Needs root and util-linux (`losetup`, `partx`, `mount`), fdisk (`sfdisk`), e2fsprogs (`mkfs.ext4`) and
//! xfsprogs (`mkfs.xfs`). A missing tool fails the test with a message saying which.
//! Every loop device is detached and every mount unmounted by guards, also on failure.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hwameistor_agent::discovery::{self, HostRoots, ObservedDisk};

const MIB: u64 = 1024 * 1024;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "discovery_loop tests attach loop devices and need root"
    );
}

/// Absolute path of a tool, looked up in PATH and the sbin directories (which a non-login
/// PATH may lack).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install it (losetup/partx/mount: util-linux, sfdisk: fdisk, mkfs.ext4: e2fsprogs, mkfs.xfs: xfsprogs)"))
}

/// Runs a tool and returns its stdout; panics with its stderr on failure.
fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(tool(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse backing file.
fn backing_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let file = File::create(&path).expect("create backing file");
    file.set_len(size).expect("size backing file");
    path
}

/// An attached loop device, detached on drop.
struct LoopDevice {
    path: String,
}

impl LoopDevice {
    fn attach(file: &Path, partscan: bool) -> LoopDevice {
        let file = file.to_str().expect("utf-8 path");
        let mut args = vec!["--find", "--show"];
        if partscan {
            args.push("--partscan");
        }
        args.push(file);
        let path = run("losetup", &args).trim().to_string();
        assert!(
            path.starts_with("/dev/loop"),
            "unexpected losetup output {path:?}"
        );
        LoopDevice { path }
    }

    fn name(&self) -> &str {
        self.path.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new(tool("losetup"))
            .args(["-d", &self.path])
            .status();
    }
}

/// A mount, unmounted on drop (lazily if it is busy, so the loop device can go too).
struct Mount {
    target: PathBuf,
}

impl Mount {
    fn new(device: &str, target: &Path) -> Mount {
        run("mount", &[device, target.to_str().expect("utf-8 path")]);
        Mount {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new(tool("umount"))
            .arg(&self.target)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new(tool("umount"))
                .arg("-l")
                .arg(&self.target)
                .status();
        }
    }
}

/// Scans the real host, loop devices included, and returns our loop disk.
fn observe(dev: &LoopDevice) -> ObservedDisk {
    let roots = HostRoots {
        include_loop: true,
        ..HostRoots::default()
    };
    let disks = discovery::scan(&roots).expect("scan host");
    disks
        .into_iter()
        .find(|d| d.kernel_name == dev.name())
        .unwrap_or_else(|| panic!("{} not found by scan", dev.path))
}

#[test]
fn blank_loop_disk_is_seen_with_its_size() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = backing_file(dir.path(), "blank.img", 64 * MIB);
    let dev = LoopDevice::attach(&file, false);

    let disk = observe(&dev);
    assert_eq!(disk.device_path, dev.path);
    assert_eq!(disk.size_bytes, (64 * MIB) as i64);
    assert_eq!(disk.major, 7);
    assert!(disk.is_blank(), "{disk:?}");
    assert!(discovery::probe(Path::new(&dev.path))
        .expect("probe")
        .is_blank());

    // Without include_loop the loop device is not a disk.
    let disks = discovery::scan(&HostRoots::default());
    if let Ok(disks) = disks {
        assert!(disks.iter().all(|d| d.kernel_name != dev.name()));
    }
}

#[test]
fn mkfs_ext4_then_xfs_is_probed() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    // mkfs.xfs refuses filesystems below 300 MiB.
    let file = backing_file(dir.path(), "fs.img", 300 * MIB);
    let dev = LoopDevice::attach(&file, false);

    run("mkfs.ext4", &["-q", "-F", &dev.path]);
    let probed = discovery::probe(Path::new(&dev.path)).expect("probe");
    assert_eq!(probed.signature.as_deref(), Some("ext4"));
    assert_eq!(probed.partition_table, None);
    assert_eq!(observe(&dev).signature.as_deref(), Some("ext4"));

    run("mkfs.xfs", &["-q", "-f", &dev.path]);
    let probed = discovery::probe(Path::new(&dev.path)).expect("probe");
    assert_eq!(probed.signature.as_deref(), Some("xfs"));
    let disk = observe(&dev);
    assert_eq!(disk.signature.as_deref(), Some("xfs"));
    assert_eq!(disk.size_bytes, (300 * MIB) as i64);
}

#[test]
fn gpt_with_one_partition() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = backing_file(dir.path(), "gpt.img", 64 * MIB);
    // Partition the backing file, then attach with partition scanning.
    let mut sfdisk = Command::new(tool("sfdisk"))
        .args(["--quiet", file.to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sfdisk");
    sfdisk
        .stdin
        .take()
        .expect("sfdisk stdin")
        .write_all(b"label: gpt\n,\n")
        .expect("write sfdisk script");
    assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");
    let dev = LoopDevice::attach(&file, true);
    // `losetup --partscan` asks the kernel to read the table; a kernel built without GPT
    // support (CONFIG_EFI_PARTITION unset, as on some CI VMs) creates no partition, so
    // then partx parses the table in userspace and adds it (BLKPG).
    let part_sysfs = PathBuf::from(format!("/sys/block/{0}/{0}p1", dev.name()));
    if !part_sysfs.exists() {
        run("partx", &["--add", &dev.path]);
    }
    assert!(
        part_sysfs.exists(),
        "partition {} did not appear",
        part_sysfs.display()
    );

    let disk = observe(&dev);
    assert_eq!(disk.partition_table.as_deref(), Some("gpt"));
    assert_eq!(disk.signature, None);
    assert_eq!(disk.partitions.len(), 1, "{:?}", disk.partitions);
    let part = &disk.partitions[0];
    assert_eq!(part.name, format!("{}p1", dev.name()));
    assert!(
        part.size_bytes > 60 * MIB as i64 && part.size_bytes < 64 * MIB as i64,
        "{part:?}"
    );
    assert_eq!(part.signature, None);

    // A filesystem on the partition shows up on the partition, not the disk.
    let part_path = format!("{}p1", dev.path);
    run("mkfs.ext4", &["-q", "-F", &part_path]);
    let disk = observe(&dev);
    assert_eq!(disk.partitions[0].signature.as_deref(), Some("ext4"));
    assert_eq!(disk.signature, None);
}

#[test]
fn mounted_ext4_has_mount_point() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = backing_file(dir.path(), "mnt.img", 64 * MIB);
    let target = dir.path().join("mnt");
    fs::create_dir(&target).expect("mkdir mount point");
    let dev = LoopDevice::attach(&file, false);
    run("mkfs.ext4", &["-q", "-F", &dev.path]);

    // Declared after `dev`, so it is dropped (unmounted) before the detach.
    let _mount = Mount::new(&dev.path, &target);
    let disk = observe(&dev);
    let expected = fs::canonicalize(&target).expect("canonical mount point");
    assert!(
        disk.mount_points
            .contains(&expected.to_string_lossy().into_owned()),
        "{:?} not in {:?}",
        expected,
        disk.mount_points
    );
    assert_eq!(disk.signature.as_deref(), Some("ext4"));
    assert!(!disk.is_blank());
}
