//! CSI driver `lvm.hwameistor.io`: identity, controller and node services.
//!
//! - [`controller::ControllerService`] (run by `hwameistor-controller`) turns CSI volumes into
//!   LocalVolume objects and waits, by watching, for the controller and the node agent to
//!   make them real.
//! - [`node::NodeService`] (run inside `hwameistor-agent`) formats, mounts, bind-mounts,
//!   grows and measures volumes on the node, through one executor boundary ([`exec`]).
//! - [`identity::IdentityService`] and [`server`] serve them on a Unix socket; Probe answers
//!   from a [`readiness::ReadinessSource`] the binary supplies.
//!
//! # CSI bindings
//!
//! The driver implements **CSI spec v1.9.0** (package `csi.v1`) through the generated types,
//! clients and servers of the crates.io crate `bpfman-csi` 1.8.0 (its version number is its
//! own; its code carries the v1.9.0 messages, e.g. `ControllerModifyVolume`), re-exported
//! as [`csi`]. Why these bindings:
//!
//! - they are generated from the upstream `csi.proto` with tonic 0.11 / prost 0.12, current
//!   transport crates that tonic's Unix-socket serving works with unchanged, where the
//!   former `k8s-csi` 0.4 was CSI v1.3 on tonic 0.5 / prost 0.8 (unmaintained since 2021);
//! - they hold every service of the spec (identity, controller incl. snapshots,
//!   `ControllerGetVolume` and `ControllerModifyVolume`, group controller, node) and
//!   `VolumeCondition`, so snapshots or volume health can be added without new bindings;
//! - a crate maintained with a released project (bpfman ships a CSI driver on it) is
//!   preferred to vendoring the proto and generated code here.
//!
//! Of that surface the driver offers exactly what its capabilities advertise; every other
//! RPC answers Unimplemented (see [`controller`] and [`node`]).
//!
//! # StorageClass parameters
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `poolClass` | `HDD`, `SSD`, `NVMe` (any case) | `HDD` |
//! | `replicaNumber` | `"1"`, or `"2"` for an HA volume replicated over DRBD (3 and 4 are refused: DRBD 8.4 has two peers) | `"1"` |
//! | `csi.storage.k8s.io/fstype` | `xfs`, `ext4` | `xfs` |
//!
//! Any other key is refused with InvalidArgument naming it, except the
//! `csi.storage.k8s.io/` keys the sidecars add; of those, the PVC name and namespace are
//! recorded on the LocalVolume.
//!
//! # Volume sizes
//!
//! A capacity range becomes a size by one rule (see [`hwameistor_core::sizing`]):
//!
//! - the floor is **300 MiB for xfs** (current `mkfs.xfs` refuses smaller filesystems) and
//!   **4 MiB for ext4 and raw block** volumes (one LVM extent);
//! - requests below the floor are **rounded up to it** when `limit_bytes` allows; when the
//!   limit is below the floor the call fails with **OutOfRange** and a message naming the
//!   floor — a too-small volume never reaches `mkfs`;
//! - sizes are rounded up to whole 4 MiB extents, so the reported capacity is what the
//!   logical volume gets.
//!
//! # Data safety
//!
//! NodeStageVolume formats a device only when `blkid -p` finds no signature on it. A device
//! that carries another filesystem than the one requested, a partition table or any other
//! signature is refused with FailedPrecondition; nothing is ever reformatted.

// tonic's generated service traits return `Result<_, tonic::Status>`; the helpers that
// build those results share the type instead of boxing it at every call.
#![allow(clippy::result_large_err)]

pub mod capability;
pub mod controller;
pub mod disk_controller;
pub mod errors;
pub use hwameistor_hostexec as exec;
pub mod identity;
pub mod in_flight;
pub mod node;
pub mod params;
pub mod readiness;
pub mod server;
pub mod snapshots;
pub mod topology;

/// The generated CSI types, clients and servers (see "CSI bindings" above).
pub use bpfman_csi::v1 as csi;

/// Publish-context key carrying the volume's block device on the node.
pub const PUBLISH_DEVICE_PATH: &str = "devicePath";
/// Volume-context (and publish-context) key carrying the volume's filesystem.
pub const VOLUME_CONTEXT_FS_TYPE: &str = "fsType";
/// Volume-context key of a volume restored from a snapshot (the snapshot's name): its
/// filesystem may be smaller than the volume, and staging grows it.
pub const VOLUME_CONTEXT_RESTORED: &str = "restoredFrom";
