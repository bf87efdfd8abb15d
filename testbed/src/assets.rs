//! Boot assets: a Debian kernel, a cached base initramfs with the storage userland, and a small
//! per-build archive with the project's binaries appended to it.
//!
//! Building the base takes seconds and depends only on host packages, so it is cached under a
//! key of its inputs; project binaries change on every rebuild, so they live in a second cpio
//! archive that the kernel unpacks on top (it accepts concatenated archives).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, IoContext};
use crate::guest_files as gf;
use crate::initramfs::{is_elf, Tree};
use crate::kernel::{kernel, Kernel};
use crate::util::{file_meta, find_prog, hash_strings, run};

/// Bump when the base initramfs layout or its builder changes, to invalidate caches.
const BASE_FORMAT: &str = "hwameistor-testbed-base-v1";

/// A host binary to put into the guest (with the libraries it links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinarySpec {
    pub host_path: PathBuf,
    /// Absolute path in the guest, e.g. `/usr/local/bin/hwameistor-agent`.
    pub guest_path: String,
}

impl BinarySpec {
    pub fn new(host_path: impl Into<PathBuf>, guest_path: impl Into<String>) -> Self {
        BinarySpec {
            host_path: host_path.into(),
            guest_path: guest_path.into(),
        }
    }
}

/// Knobs for [`TestbedAssets::build_with`]; the defaults suit most callers.
#[derive(Debug, Clone, Default)]
pub struct AssetOptions {
    /// The `testbed-guest` executable. Default: `$HWAMEISTOR_TESTBED_GUEST`, else built with
    /// cargo into the cache (a one-time compile of this crate).
    pub guest_binary: Option<PathBuf>,
    /// Default: `$HWAMEISTOR_TESTBED_CACHE`, else `<workspace>/target/testbed-cache`.
    pub cache_dir: Option<PathBuf>,
}

/// Kernel and initramfs for testbed VMs (files in the cache directory). Cheap to clone.
#[derive(Clone)]
pub struct TestbedAssets {
    inner: Arc<AssetsInner>,
}

struct AssetsInner {
    kernel: PathBuf,
    kernel_version: String,
    initrd: PathBuf,
}

impl std::fmt::Debug for TestbedAssets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestbedAssets")
            .field("kernel", &self.inner.kernel)
            .field("kernel_version", &self.inner.kernel_version)
            .field("initrd", &self.inner.initrd)
            .finish()
    }
}

impl TestbedAssets {
    /// Builds (or reuses from the cache) everything needed to boot VMs with `project_binaries`
    /// inside. Blocking: from async code call it through `tokio::task::spawn_blocking`.
    pub fn build(project_binaries: &[BinarySpec]) -> Result<Self, Error> {
        Self::build_with(project_binaries, &AssetOptions::default())
    }

    pub fn build_with(project_binaries: &[BinarySpec], opts: &AssetOptions) -> Result<Self, Error> {
        let cache = cache_dir(opts);
        std::fs::create_dir_all(&cache).ctx(|| format!("create cache dir {}", cache.display()))?;
        // Threads of one test binary and concurrent test binaries both build here.
        static PROCESS_LOCK: Mutex<()> = Mutex::new(());
        let _p = PROCESS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let lock_path = cache.join(".lock");
        let lock = File::create(&lock_path).ctx(|| format!("create {}", lock_path.display()))?;
        lock.lock()
            .ctx(|| format!("lock {}", lock_path.display()))?;

        let t0 = Instant::now();
        let kernel = kernel(&cache)?;
        let base = base_initramfs(&cache, &kernel)?;
        let guest = match &opts.guest_binary {
            Some(p) => p.clone(),
            None => match std::env::var_os("HWAMEISTOR_TESTBED_GUEST") {
                Some(p) => PathBuf::from(p),
                None => match fresh_sibling_guest() {
                    Some(p) => p,
                    None => build_guest(&cache)?,
                },
            },
        };
        let extra = extra_archive(&cache, &guest, project_binaries)?;

        // The combined image lives in the cache, not a temp dir: callers keep assets in statics,
        // which are never dropped, so a temp dir would leak on every run.
        let initrd = combined_initrd(&cache, &base, &extra)?;
        tracing::info!(elapsed = ?t0.elapsed(), initrd = %initrd.display(), "testbed assets ready");
        Ok(TestbedAssets {
            inner: Arc::new(AssetsInner {
                kernel: kernel.image,
                kernel_version: kernel.version,
                initrd,
            }),
        })
    }

    pub fn kernel(&self) -> &Path {
        &self.inner.kernel
    }

    pub fn kernel_version(&self) -> &str {
        &self.inner.kernel_version
    }

    pub fn initrd(&self) -> &Path {
        &self.inner.initrd
    }
}

fn cache_dir(opts: &AssetOptions) -> PathBuf {
    if let Some(d) = &opts.cache_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("HWAMEISTOR_TESTBED_CACHE") {
        return PathBuf::from(d);
    }
    workspace_root().join("target").join("testbed-cache")
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Base initramfs

/// Host programs for the guest: (name, Debian package, required).
const PROGRAMS: &[(&str, &str, bool)] = &[
    ("lvm", "lvm2", true),
    ("dmsetup", "dmsetup", true),
    ("udevadm", "udev", true),
    ("drbdadm", "drbd-utils", true),
    ("drbdsetup", "drbd-utils", true),
    ("drbdmeta", "drbd-utils", true),
    ("mkfs.xfs", "xfsprogs", true),
    ("xfs_growfs", "xfsprogs", true),
    ("xfs_info", "xfsprogs", true),
    ("xfs_db", "xfsprogs", false),
    ("xfs_spaceman", "xfsprogs", false),
    ("xfs_repair", "xfsprogs", false),
    ("xfs_admin", "xfsprogs", false),
    ("mke2fs", "e2fsprogs", true),
    ("mkfs.ext4", "e2fsprogs", true),
    ("resize2fs", "e2fsprogs", true),
    ("e2fsck", "e2fsprogs", true),
    ("fsck.ext4", "e2fsprogs", false),
    ("tune2fs", "e2fsprogs", false),
    ("dumpe2fs", "e2fsprogs", false),
    ("blkid", "util-linux", true),
    ("wipefs", "util-linux", true),
    ("lsblk", "util-linux", true),
    ("findmnt", "util-linux", true),
    ("blockdev", "util-linux", false),
    ("mount", "mount", true),
    ("umount", "mount", true),
    ("losetup", "mount", false),
    ("sfdisk", "fdisk", false),
    ("sgdisk", "gdisk", false),
    ("thin_check", "thin-provisioning-tools", false),
    ("thin_repair", "thin-provisioning-tools", false),
    ("thin_dump", "thin-provisioning-tools", false),
    ("thin_restore", "thin-provisioning-tools", false),
    ("bash", "bash", false),
    // Benchmarks: raw link throughput (`dd | socat`). (fio is left out: its libraries add
    // ~70 MB to every VM and ~1 s to every boot; latency is timed with dd's O_DSYNC writes.)
    ("socat", "socat", false),
];

/// LVM commands, all dispatched by `lvm` on argv[0].
const LVM_COMMANDS: &[&str] = &[
    "pvcreate",
    "pvs",
    "pvdisplay",
    "pvscan",
    "pvremove",
    "pvresize",
    "pvchange",
    "pvmove",
    "vgcreate",
    "vgs",
    "vgdisplay",
    "vgscan",
    "vgextend",
    "vgreduce",
    "vgremove",
    "vgchange",
    "vgrename",
    "lvcreate",
    "lvs",
    "lvdisplay",
    "lvscan",
    "lvextend",
    "lvreduce",
    "lvresize",
    "lvremove",
    "lvchange",
    "lvrename",
    "lvconvert",
];

const UDEV_RULES: &[&str] = &[
    "50-udev-default.rules",
    "55-dm.rules",
    "56-lvm.rules",
    "60-block.rules",
    "60-persistent-storage.rules",
    "60-persistent-storage-dm.rules",
    "65-drbd.rules",
];

/// Returns the cached `base-<key>.cpio.gz`, building it when absent.
fn base_initramfs(cache: &Path, kernel: &Kernel) -> Result<PathBuf, Error> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| Error::missing("/bin/busybox", "busybox-static"))?;
    let mut programs = Vec::new();
    for (name, package, required) in PROGRAMS {
        match find_prog(name) {
            Some(p) => programs.push(p),
            None if *required => return Err(Error::missing(format!("program `{name}`"), *package)),
            None => {}
        }
    }
    if !Path::new("/lib/systemd/systemd-udevd").exists() {
        return Err(Error::missing("/lib/systemd/systemd-udevd", "udev"));
    }
    for f in ["drbdadm-84", "drbdsetup-84"] {
        if !Path::new("/lib/drbd").join(f).exists() {
            return Err(Error::missing(format!("/lib/drbd/{f}"), "drbd-utils"));
        }
    }
    let thin_tools = find_prog("thin_check").is_some();
    let lvm_conf = gf::lvm_conf(thin_tools);

    // Key: everything that decides the content. Host libraries are covered by dpkg's status
    // file, which changes whenever a package is installed or upgraded.
    let mut key_parts = vec![
        BASE_FORMAT.to_string(),
        gf::INIT.to_string(),
        lvm_conf.clone(),
        gf::DRBD_CONF.to_string(),
        gf::DRBD_GLOBAL_COMMON.to_string(),
        gf::GROUP.to_string(),
        kernel.package.clone(),
        kernel.version.clone(),
        kernel.load.join(","),
        file_meta(Path::new("/var/lib/dpkg/status")),
        file_meta(&busybox),
    ];
    key_parts.extend(programs.iter().map(|p| file_meta(p)));
    let key = hash_strings(key_parts.iter().map(String::as_str));
    let out = cache.join(format!("base-{key}.cpio.gz"));
    if out.exists() {
        touch(&out);
        return Ok(out);
    }

    let t0 = Instant::now();
    let mut t = Tree::with_skeleton();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "mnt",
        "etc/udev/rules.d",
        "etc/drbd.d",
        "etc/lvm",
        "var/lib/drbd",
        "var/log",
        "usr/local/bin",
        "usr/local/sbin",
    ] {
        t.dir(d);
    }
    t.symlink("var/run", "/run");
    t.symlink("var/lock", "/run/lock");
    t.symlink("etc/mtab", "/proc/self/mounts");
    // The kernel opens /dev/console for init before anything mounts devtmpfs.
    t.char_dev("dev/console", 5, 1, 0o600);

    t.bytes("init", gf::INIT, 0o755);
    t.bytes("etc/lvm/lvm.conf", lvm_conf, 0o644);
    t.bytes("etc/drbd.conf", gf::DRBD_CONF, 0o644);
    t.bytes(
        "etc/drbd.d/global_common.conf",
        gf::DRBD_GLOBAL_COMMON,
        0o644,
    );
    t.bytes("etc/passwd", gf::PASSWD, 0o644);
    t.bytes("etc/group", gf::GROUP, 0o644);
    t.bytes("etc/hosts", gf::HOSTS, 0o644);
    t.bytes("etc/fstab", "", 0o644);
    t.bytes("etc/testbed/modules", kernel.load.join("\n") + "\n", 0o644);
    if Path::new("/etc/mke2fs.conf").exists() {
        t.host_path(Path::new("/etc/mke2fs.conf"))?;
    }

    t.host_file_as(&busybox, "usr/bin/busybox")?;
    for p in &programs {
        t.host_path(p)?;
    }
    for c in LVM_COMMANDS {
        t.symlink(&format!("usr/sbin/{c}"), "lvm");
    }
    t.host_path(Path::new("/lib/systemd/systemd-udevd"))?;
    for r in UDEV_RULES {
        let p = Path::new("/lib/udev/rules.d").join(r);
        if p.exists() {
            t.host_path(&p)?;
        }
    }
    for h in ["ata_id", "scsi_id"] {
        let p = Path::new("/lib/udev").join(h);
        if p.exists() {
            t.host_path(&p)?;
        }
    }
    t.host_dir(Path::new("/lib/drbd"))?;
    t.host_dir_as(&kernel.root.join("lib/modules"), "lib/modules", false)?;

    // Busybox applets for everything not provided by a real program.
    let list = run(Command::new(&busybox).arg("--list-full"), "busybox-static")?;
    let real: std::collections::HashSet<String> = programs
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .chain(LVM_COMMANDS.iter().map(|s| s.to_string()))
        .collect();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        let Some(name) = applet.rsplit('/').next() else {
            continue;
        };
        if applet.is_empty() || name == "busybox" || real.contains(name) || t.contains(applet) {
            continue;
        }
        t.symlink(applet, "/usr/bin/busybox");
    }

    write_gz(&t, &out)?;
    tracing::info!(path = %out.display(), elapsed = ?t0.elapsed(), "base initramfs built");
    // Older bases are dead weight (each is tens of MB).
    prune(cache, "base-", ".cpio.gz", 2);
    Ok(out)
}

fn write_gz(t: &Tree, out: &Path) -> Result<(), Error> {
    let tmp = out.with_extension("tmp");
    let f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
    // Fast compression: the archive is written once, and the guest's decompression speed under
    // TCG hardly depends on the level.
    let mut gz = flate2::write::GzEncoder::new(BufWriter::new(f), flate2::Compression::fast());
    t.write_newc(&mut gz)?;
    let w = gz.finish().ctx(|| format!("compress {}", tmp.display()))?;
    w.into_inner()
        .map_err(|e| Error::io(format!("flush {}", tmp.display()), e.into_error()))?
        .sync_all()
        .ctx(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(&tmp, out).ctx(|| format!("rename to {}", out.display()))
}

/// Deletes files named `<prefix>*<suffix>` in `dir` except the `keep` newest and any used in the
/// last 15 minutes (a running testbed may still need its initramfs for a reboot; users touch them).
fn prune(dir: &Path, prefix: &str, suffix: &str, keep: usize) {
    let recent = std::time::SystemTime::now() - std::time::Duration::from_secs(900);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let n = files.len().saturating_sub(keep);
    for (t, p) in files.into_iter().take(n) {
        if t < recent {
            let _ = std::fs::remove_file(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guest daemon and project binaries

/// A `testbed-guest` that cargo already built next to the running test executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/testbed-guest`, e.g. under
/// `cargo test --workspace`), provided it is newer than every source file of this crate.
fn fresh_sibling_guest() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("testbed-guest"))
        .find(|p| p.is_file())?;
    let built = std::fs::metadata(&candidate).ok()?.modified().ok()?;
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest_source = newest_mtime(&crate_dir.join("src"))?.max(
        std::fs::metadata(crate_dir.join("Cargo.toml"))
            .ok()?
            .modified()
            .ok()?,
    );
    (built >= newest_source).then_some(candidate)
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = std::fs::metadata(dir).ok()?.modified().ok()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)?
        } else {
            e.metadata().ok()?.modified().ok()?
        };
        newest = newest.max(t);
    }
    Some(newest)
}

/// Builds `testbed-guest` with cargo into its own target directory inside the cache: the outer
/// cargo may hold the workspace target directory, and feature unification there differs.
fn build_guest(cache: &Path) -> Result<PathBuf, Error> {
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO")));
    let target = cache.join("guest-target");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let t0 = Instant::now();
    let out = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "testbed-guest",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| Error::io(format!("run {}", cargo.display()), e))?;
    if !out.status.success() {
        return Err(Error::HostCommand {
            cmd: format!(
                "cargo build --bin testbed-guest (target dir {})",
                target.display()
            ),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    tracing::debug!(elapsed = ?t0.elapsed(), "testbed-guest built");
    Ok(target.join("debug").join("testbed-guest"))
}

/// The uncompressed second archive: the guest daemon and the project binaries with their
/// libraries. Cached by the binaries' metadata so repeated runs skip stripping.
fn extra_archive(cache: &Path, guest: &Path, bins: &[BinarySpec]) -> Result<PathBuf, Error> {
    if !guest.exists() {
        return Err(Error::InvalidSpec(format!(
            "guest daemon binary {} does not exist",
            guest.display()
        )));
    }
    let mut all = vec![BinarySpec::new(guest, gf::GUEST_DAEMON_PATH)];
    for b in bins {
        if !b.guest_path.starts_with('/') {
            return Err(Error::InvalidSpec(format!(
                "guest path {} of {} must be absolute",
                b.guest_path,
                b.host_path.display()
            )));
        }
        if !b.host_path.exists() {
            return Err(Error::InvalidSpec(format!(
                "project binary {} does not exist (build it first)",
                b.host_path.display()
            )));
        }
        all.push(b.clone());
    }
    let mut parts = vec!["extra-v1".to_string()];
    for b in &all {
        parts.push(format!("{} -> {}", file_meta(&b.host_path), b.guest_path));
    }
    let key = hash_strings(parts.iter().map(String::as_str));
    let out = cache.join(format!("extra-{key}.cpio"));
    if out.exists() {
        touch(&out);
        return Ok(out);
    }
    let strip_dir = tempfile::Builder::new()
        .prefix("strip-")
        .tempdir_in(cache)
        .ctx(|| "create strip dir".into())?;
    let mut t = Tree::default();
    for (i, b) in all.iter().enumerate() {
        let src = strip_debug(&b.host_path, &strip_dir.path().join(i.to_string()));
        t.host_file_as(&src, &b.guest_path)?;
        if is_elf(&b.host_path) {
            for lib in crate::initramfs::ldd(&b.host_path)? {
                t.host_path_opts(&lib, false)?;
            }
        }
    }
    let tmp = out.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?);
    t.write_newc(&mut w)?;
    w.flush().ctx(|| format!("write {}", tmp.display()))?;
    drop(w);
    std::fs::rename(&tmp, &out).ctx(|| format!("rename to {}", out.display()))?;
    prune(cache, "extra-", ".cpio", 8);
    Ok(out)
}

/// Debug builds of Rust binaries are mostly debug info, which only bloats the initramfs (guest
/// RAM) and slows boot; symbols stay, so backtraces keep function names. Falls back to the
/// original file when objcopy (binutils) is missing or fails.
fn strip_debug(src: &Path, dst: &Path) -> PathBuf {
    if !is_elf(src) {
        return src.to_path_buf();
    }
    match Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(dst)
        .status()
    {
        Ok(s) if s.success() => dst.to_path_buf(),
        _ => src.to_path_buf(),
    }
}

/// Marks a cached file as used (for [`prune`]).
fn touch(p: &Path) {
    if let Ok(f) = File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// `initrd-<key>.img` = base (gzip) + zero padding to 4 bytes + extra (plain cpio). The kernel
/// only recognises an uncompressed archive that starts 4-byte aligned, and skips zero padding
/// between archives.
fn combined_initrd(cache: &Path, base: &Path, extra: &Path) -> Result<PathBuf, Error> {
    let key = hash_strings([base, extra].iter().filter_map(|p| p.file_name()?.to_str()));
    let out = cache.join(format!("initrd-{key}.img"));
    if out.exists() {
        touch(&out);
        return Ok(out);
    }
    let tmp = out.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?);
    let mut n = 0u64;
    for (i, p) in [base, extra].iter().enumerate() {
        let mut f = File::open(p).ctx(|| format!("open {}", p.display()))?;
        n += std::io::copy(&mut f, &mut w).ctx(|| format!("copy {}", p.display()))?;
        if i == 0 {
            let pad = (4 - n % 4) % 4;
            w.write_all(&vec![0u8; pad as usize])
                .ctx(|| "pad initrd".into())?;
            n += pad;
        }
    }
    w.flush().ctx(|| format!("write {}", tmp.display()))?;
    drop(w);
    std::fs::rename(&tmp, &out).ctx(|| format!("rename to {}", out.display()))?;
    prune(cache, "initrd-", ".img", 4);
    Ok(out)
}
