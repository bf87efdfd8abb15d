//! Block device discovery: what physical disks this node has and what they carry.
//!
//! The agent publishes one LocalDisk per physical disk, so this module answers two
//! questions for every whole disk on the host:
//!
//! * what it is (size, rotational, NVMe, serial, WWN, model, stable /dev links), read from
//!   sysfs with the udev database as a supplement, and
//! * whether it is in use (a signature on the disk or its partitions, a partition table,
//!   holders such as device-mapper or md, mounts), from our own magic-number probe of the
//!   device, the holders directories and mountinfo.
//!
//! udev is optional: containers often run without `/run/udev`, so everything works from
//! sysfs, the device nodes and the `/dev/disk/by-*` symlinks alone.
//!
//! All host paths come from [`HostRoots`] so tests can point the scanner at a fake tree.
//! Device paths and links in the results are reported under `HostRoots::dev` (so
//! `/dev/vdb` on a real host).

mod links;
mod mounts;
mod probe;
mod sysfs;
mod udevdb;
mod uevent;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use probe::{probe, Probe};
pub use uevent::{watch_block_uevents, UEvent, OVERFLOW_ACTION};

use links::DevLinkIndex;
use mounts::MountTable;
use sysfs::DeviceKind;

/// Where to read the host from, so tests can point it at a fake tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    /// sysfs, normally `/sys`.
    pub sys: PathBuf,
    /// Device nodes, normally `/dev`.
    pub dev: PathBuf,
    /// The udev database, normally `/run/udev/data`. May be absent.
    pub udev_data: PathBuf,
    /// Mount table, normally `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// Treat loop devices as disks (tests); `false` in production.
    pub include_loop: bool,
}

impl Default for HostRoots {
    fn default() -> Self {
        HostRoots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            udev_data: PathBuf::from("/run/udev/data"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            include_loop: false,
        }
    }
}

/// One whole disk as seen on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedDisk {
    /// Kernel name, e.g. "vdb".
    pub kernel_name: String,
    /// Device node under `HostRoots::dev`, e.g. "/dev/vdb".
    pub device_path: String,
    pub major: u32,
    pub minor: u32,
    /// sysfs `size` (512-byte sectors) * 512.
    pub size_bytes: i64,
    /// `queue/rotational`.
    pub rotational: bool,
    /// NVMe device (kernel name nvme*, or sysfs path under an nvme controller).
    pub nvme: bool,
    pub removable: bool,
    pub read_only: bool,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
    pub vendor: Option<String>,
    /// Sorted `/dev/disk/by-id/*` and `/dev/disk/by-path/*` links to this disk.
    pub dev_links: Vec<String>,
    /// What the whole disk carries (e.g. "xfs", "LVM2_member"), from our probe, else udev.
    pub signature: Option<String>,
    /// "gpt" / "dos" from our probe, else udev.
    pub partition_table: Option<String>,
    /// Partitions in partition-number order.
    pub partitions: Vec<ObservedPartition>,
    /// Sorted `holders/*` of the whole disk (device-mapper, md, bcache).
    pub holders: Vec<String>,
    /// Sorted mount points of the whole disk.
    pub mount_points: Vec<String>,
}

impl ObservedDisk {
    /// True when nothing on the host claims the disk: no signature, no partition table,
    /// no partitions, no holders and no mounts.
    pub fn is_blank(&self) -> bool {
        self.signature.is_none()
            && self.partition_table.is_none()
            && self.partitions.is_empty()
            && self.holders.is_empty()
            && self.mount_points.is_empty()
    }
}

/// One partition of an [`ObservedDisk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedPartition {
    /// Kernel name, e.g. "vdb1" or "nvme0n1p1".
    pub name: String,
    pub size_bytes: i64,
    pub signature: Option<String>,
    pub mount_points: Vec<String>,
    pub holders: Vec<String>,
}

/// Why a scan, probe or uevent listener failed. Always names what failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Reading a host file, directory or device failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A host file had content we could not make sense of.
    #[error("parsing {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// The kernel uevent netlink socket could not be set up.
    #[error("uevent netlink socket: {op}: {source}")]
    Netlink {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl DiscoveryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        DiscoveryError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error means the device went away (hot-unplug, loop detach) while we
    /// looked at it: such a device is skipped, not reported as a failure.
    fn is_vanished(&self) -> bool {
        match self {
            DiscoveryError::Io { source, .. } => io_is_vanished(source),
            DiscoveryError::Parse { .. } | DiscoveryError::Netlink { .. } => false,
        }
    }

    /// True when the error is about our privileges. One such disk is skipped (a device
    /// cgroup may deny just that one); when no disk at all could be read and some were
    /// denied, the scan fails (agent not privileged).
    fn is_permission(&self) -> bool {
        match self {
            DiscoveryError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            DiscoveryError::Parse { .. } | DiscoveryError::Netlink { .. } => false,
        }
    }

    /// The path does not exist (as opposed to ENXIO/ENODEV from a device going away).
    fn is_not_found(&self) -> bool {
        matches!(self, DiscoveryError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Errors that mean "the device is gone" (or has no medium) rather than "we failed".
fn io_is_vanished(err: &io::Error) -> bool {
    if err.kind() == io::ErrorKind::NotFound {
        return true;
    }
    matches!(
        err.raw_os_error(),
        Some(code) if code == nix::libc::ENXIO
            || code == nix::libc::ENODEV
            || code == nix::libc::ENOMEDIUM
    )
}

/// Scans every disk. Keeps whole disks only: skips partitions, device-mapper (dm-*), md,
/// zram, ram, loop (unless `include_loop`), sr (cdrom), floppies, hidden devices (NVMe
/// multipath paths), zero-sized devices (empty card readers, unattached loops), and devices
/// under /sys/devices/virtual/ (except loop when `include_loop`, and NVMe multipath heads).
///
/// A disk that vanishes mid-scan is skipped, not an error. A disk that fails in another
/// way (EIO while probing, EPERM from a device cgroup) is skipped with a warning rather
/// than published without a probe, because a disk we could not read must never look
/// blank. The scan itself fails when it cannot see the host at all: `/sys/block` or
/// mountinfo unreadable, or permission denied on every disk (agent not privileged). Then
/// the caller keeps its previous view instead of seeing every disk disappear.
pub fn scan(roots: &HostRoots) -> Result<Vec<ObservedDisk>, DiscoveryError> {
    let sys_real =
        std::fs::canonicalize(&roots.sys).map_err(|e| DiscoveryError::io(&roots.sys, e))?;
    let names = sysfs::list_block_devices(&roots.sys)?;
    let mounts = MountTable::read(&roots.mountinfo)?;
    let links = DevLinkIndex::build(&roots.dev);

    let mut disks = Vec::new();
    let mut denied: Option<DiscoveryError> = None;
    for name in names {
        let observed =
            sysfs::classify(&roots.sys, &sys_real, &name, roots.include_loop).and_then(|kind| {
                match kind {
                    DeviceKind::Disk { nvme } => observe_disk(roots, &name, nvme, &mounts, &links),
                    DeviceKind::Excluded(reason) => {
                        tracing::trace!(device = %name, reason, "not a disk");
                        Ok(None)
                    }
                }
            });
        match observed {
            Ok(Some(disk)) => disks.push(disk),
            Ok(None) => {}
            Err(err) if err.is_vanished() => {
                tracing::debug!(disk = %name, error = %err, "disk vanished during scan");
            }
            Err(err) => {
                tracing::warn!(disk = %name, error = %err, "skipping disk that could not be read");
                if err.is_permission() && denied.is_none() {
                    denied = Some(err);
                }
            }
        }
    }
    if disks.is_empty() {
        if let Some(err) = denied {
            return Err(err);
        }
    }
    disks.sort_by(|a, b| a.kernel_name.cmp(&b.kernel_name));
    Ok(disks)
}

/// Reads everything about one whole disk. `Ok(None)` for devices that are not worth
/// publishing (zero size).
fn observe_disk(
    roots: &HostRoots,
    name: &str,
    nvme: bool,
    mounts: &MountTable,
    links: &DevLinkIndex,
) -> Result<Option<ObservedDisk>, DiscoveryError> {
    let dir = roots.sys.join("block").join(name);
    // `dev` and `size` are the attributes every block device has; without them the
    // device is gone (or going), and the caller treats NotFound as "vanished".
    let (major, minor) = sysfs::read_dev_numbers(&dir)?;
    let size_bytes = sysfs::read_size_bytes(&dir)?;
    if size_bytes == 0 {
        tracing::debug!(disk = %name, "skipping zero-sized block device");
        return Ok(None);
    }

    let udev = udevdb::read(&roots.udev_data, major, minor);
    let udev_prop = |key: &str| udev.as_ref().and_then(|u| u.property(key));

    let rotational = sysfs::read_flag(&dir.join("queue/rotational"));
    let removable = sysfs::read_flag(&dir.join("removable"));
    let read_only = sysfs::read_flag(&dir.join("ro"));

    let serial = sysfs::read_serial(&dir)
        .or_else(|| udev_prop("ID_SCSI_SERIAL"))
        .or_else(|| udev_prop("ID_SERIAL_SHORT"));
    let wwn = sysfs::read_opt(&dir.join("wwid"))
        .or_else(|| sysfs::read_opt(&dir.join("device/wwid")))
        .or_else(|| udev_prop("ID_WWN_WITH_EXTENSION"))
        .or_else(|| udev_prop("ID_WWN"));
    let model = sysfs::read_opt(&dir.join("device/model")).or_else(|| udev_prop("ID_MODEL"));
    let vendor = sysfs::read_vendor(&dir).or_else(|| udev_prop("ID_VENDOR"));

    let dev_node_rel = sysfs::dev_node_name(&dir, name);
    let device_path = roots.dev.join(&dev_node_rel);

    let mut dev_links: BTreeSet<String> = links
        .links_for(&device_path, major, minor)
        .into_iter()
        .collect();
    if let Some(record) = &udev {
        dev_links.extend(
            record
                .stable_links()
                .map(|rel| path_string(&roots.dev.join(rel))),
        );
    }

    // The probe is what decides whether a disk looks blank, so its failure is the
    // disk's failure (except for the udev fallback below, which only fills gaps).
    let probed = match probe::probe(&device_path) {
        Ok(probed) => probed,
        Err(err) if err.is_not_found() && dir.join("dev").exists() => {
            // sysfs still has the disk but its node is missing: not a hot-unplug but a
            // /dev without the host's nodes (container without devtmpfs). Say so loudly.
            tracing::warn!(disk = %name, error = %err, "device node missing; disk not published");
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let signature = probed.signature.or_else(|| udev_prop("ID_FS_TYPE"));
    let partition_table = probed
        .partition_table
        .or_else(|| udev_prop("ID_PART_TABLE_TYPE"));

    let holders = sysfs::read_holders(&dir)?;
    let partitions = observe_partitions(roots, &dir, mounts)?;

    Ok(Some(ObservedDisk {
        kernel_name: name.to_string(),
        device_path: path_string(&device_path),
        major,
        minor,
        size_bytes,
        rotational,
        nvme,
        removable,
        read_only,
        serial,
        wwn,
        model,
        vendor,
        dev_links: dev_links.into_iter().collect(),
        signature,
        partition_table,
        partitions,
        holders,
        mount_points: mounts.mount_points(major, minor),
    }))
}

/// Partitions of the disk at `disk_dir`, each probed through its own device node.
fn observe_partitions(
    roots: &HostRoots,
    disk_dir: &Path,
    mounts: &MountTable,
) -> Result<Vec<ObservedPartition>, DiscoveryError> {
    let mut found = Vec::new();
    for (number, name) in sysfs::list_partitions(disk_dir)? {
        let dir = disk_dir.join(&name);
        let read = || -> Result<ObservedPartition, DiscoveryError> {
            let (major, minor) = sysfs::read_dev_numbers(&dir)?;
            let size_bytes = sysfs::read_size_bytes(&dir)?;
            let udev = udevdb::read(&roots.udev_data, major, minor);
            let node = roots.dev.join(sysfs::dev_node_name(&dir, &name));
            // The disk already counts as used through its partition table, so a partition
            // whose node is missing (container without devtmpfs, partition just removed)
            // or unreadable only loses its signature, with udev as the fallback.
            let probed = match probe::probe(&node) {
                Ok(p) => p.signature,
                Err(err) => {
                    tracing::debug!(partition = %name, error = %err, "partition probe failed");
                    None
                }
            };
            let signature = probed.or_else(|| udev.as_ref().and_then(|u| u.property("ID_FS_TYPE")));
            Ok(ObservedPartition {
                name: name.clone(),
                size_bytes,
                signature,
                mount_points: mounts.mount_points(major, minor),
                holders: sysfs::read_holders(&dir)?,
            })
        };
        match read() {
            Ok(part) => found.push((number, part)),
            Err(err) if err.is_vanished() => {
                tracing::debug!(partition = %name, error = %err, "partition vanished during scan");
            }
            Err(err) => return Err(err),
        }
    }
    found.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    Ok(found.into_iter().map(|(_, part)| part).collect())
}

/// Paths we report are strings; non-UTF-8 bytes (never seen in /dev names) are replaced.
fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Where the scanner gets the node's disks from: the host ([`HostDisks`]), or a test's
/// description of a node.
#[async_trait::async_trait]
pub trait DiskSource: Send + Sync + 'static {
    async fn scan(&self) -> Result<Vec<ObservedDisk>, DiscoveryError>;
}

/// The host's disks, read from sysfs, the udev database and the devices themselves.
pub struct HostDisks {
    pub roots: HostRoots,
}

#[async_trait::async_trait]
impl DiskSource for HostDisks {
    async fn scan(&self) -> Result<Vec<ObservedDisk>, DiscoveryError> {
        let roots = self.roots.clone();
        // Probing reads devices: keep it off the async workers.
        tokio::task::spawn_blocking(move || scan(&roots))
            .await
            .map_err(|e| DiscoveryError::Io {
                path: PathBuf::from("/sys/block"),
                source: io::Error::other(format!("disk scan task failed: {e}")),
            })?
    }
}
