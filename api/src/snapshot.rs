//! LocalVolumeSnapshot (`lvs`): a point-in-time, read-only copy of a LocalVolume's data,
//! kept as an LVM snapshot beside the volume's replica on one node.
//!
//! The CSI controller creates one per VolumeSnapshot (CreateSnapshot) naming the volume, the
//! node and how the snapshot is kept; the node agent of that node makes the LVM snapshot and
//! reports it. A thin volume's snapshot is thin (it shares the thin pool and takes room only
//! as the two diverge); a thick volume's is copy-on-write with space of its own
//! (`cowCapacityBytes`) for the volume's blocks changed after it: when more changes than
//! that, LVM marks the snapshot invalid and its data is lost, so its use is reported and
//! warned about before.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The finalizer the node agent holds while the snapshot's logical volume exists.
pub const FINALIZER_SNAPSHOT: &str = "hwameistor.io/snapshot";

/// Where a snapshot stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SnapshotState {
    /// Being taken.
    Creating,
    /// Taken: its data is the volume's at `creationTime`.
    Ready,
    /// Could not be taken (the message says why), or a copy-on-write snapshot overflowed
    /// its space and LVM invalidated it: its data is gone.
    Failed,
    /// Being deleted.
    Deleting,
}

/// Annotation on a LocalVolumeSnapshot taken for a VolumeSnapshot: its `namespace/name`
/// (from the csi-snapshotter's `--extra-create-metadata` parameters). The scheduler
/// extender finds a restoring claim's data through it.
pub const ANNOTATION_VOLUME_SNAPSHOT: &str = "hwameistor.io/volume-snapshot";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolumeSnapshot",
    derive = "PartialEq",
    selectable = ".spec.nodeName",
    plural = "localvolumesnapshots",
    shortname = "lvs",
    category = "hwameistor",
    status = "LocalVolumeSnapshotStatus",
    printcolumn = r#"{"name":"Volume","type":"string","jsonPath":".spec.sourceVolume"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.sourceCapacityBytes"}"#,
    printcolumn = r#"{"name":"COW","type":"integer","jsonPath":".spec.cowCapacityBytes"}"#,
    printcolumn = r#"{"name":"Used%","type":"integer","jsonPath":".status.usedPercent"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.readyToUse"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeSnapshotSpec {
    /// The LocalVolume it is a snapshot of.
    #[schemars(length(min = 1, max = 253))]
    pub source_volume: String,
    /// The node whose replica is snapshotted (an HA volume's primary when it was taken).
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// The volume's pool (its volume group on the node).
    #[schemars(regex(pattern = r"^LocalStorage_Pool(HDD|SSD|NVMe)$"))]
    pub pool_name: String,
    /// The volume's size when the snapshot was asked for: what a restore gets at least.
    #[schemars(range(min = 1))]
    pub source_capacity_bytes: i64,
    /// A thick volume's snapshot: bytes of copy-on-write space for the volume's blocks
    /// changed after it. Absent for a thin volume's snapshot (it shares the thin pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4194304))]
    pub cow_capacity_bytes: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeSnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SnapshotState>,
    /// Its data may be read (restored, cloned).
    #[serde(default)]
    pub ready_to_use: bool,
    /// When it was taken (RFC 3339), as its node's agent saw it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// Its logical volume's device on its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Copy-on-write space in use, in percent (a thick volume's snapshot): at 100 it is
    /// invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub used_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
