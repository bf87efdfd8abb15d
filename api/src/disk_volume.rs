//! LocalDiskVolume: one PersistentVolumeClaim served by one whole LocalDisk of one node,
//! with no LVM layer (the `disk.hwameistor.io` driver).
//!
//! The controller binds a disk to the volume (`LocalDisk.spec.volumeRef`, by a
//! compare-and-swap on the disk, so two volumes never get one disk), the node agent checks
//! the disk is there and reports the volume Ready with the disk's stable device path. When
//! the volume is deleted, the agent wipes the disk (its signatures; all of it with
//! `wipe: Full`) once nothing holds it, and the controller then gives the disk back.

use crate::disk::DiskType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How much of a released disk is erased before it is given back.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WipePolicy {
    /// Every filesystem, RAID and partition-table signature (`wipefs --all`): the next user
    /// finds a blank disk; the old data stays on the platters until overwritten.
    #[default]
    Signatures,
    /// The whole disk is overwritten with zeros (long: the disk's size at its write rate).
    Full,
}

/// Where a disk volume stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DiskVolumeState {
    /// No disk fits yet; the message says why.
    Pending,
    /// A disk is bound; the node agent has not confirmed it yet.
    Bound,
    /// The disk is there and serves the volume.
    Ready,
    /// Being deleted: the disk is wiped, then given back.
    Releasing,
    /// The bound disk is gone or taken by something else; the message says what. Nothing is
    /// done to the disk until a user decides.
    Failed,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalDiskVolume",
    derive = "PartialEq",
    selectable = ".spec.nodeName",
    plural = "localdiskvolumes",
    shortname = "ldv",
    category = "hwameistor",
    status = "LocalDiskVolumeStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.diskType"}"#,
    printcolumn = r#"{"name":"Required","type":"integer","jsonPath":".spec.requiredCapacityBytes"}"#,
    printcolumn = r#"{"name":"Disk","type":"string","jsonPath":".status.localDiskName"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".status.capacityBytes"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Published","type":"string","jsonPath":".status.publishedNode"}"#,
    printcolumn = r#"{"name":"Device","type":"string","priority":1,"jsonPath":".status.devicePath"}"#,
    printcolumn = r#"{"name":"PVC","type":"string","priority":1,"jsonPath":".spec.pvcName"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskVolumeSpec {
    /// The node whose disk serves the volume (where the pod was scheduled).
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    pub disk_type: DiskType,
    /// The smallest disk that may serve it; the smallest free disk of the type at least this
    /// large is chosen.
    #[schemars(range(min = 1))]
    pub required_capacity_bytes: i64,
    /// The largest disk acceptable (a CSI capacity limit); absent: any size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_capacity_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_name: Option<String>,
    /// What is erased when the volume is deleted.
    #[serde(default)]
    pub wipe: WipePolicy,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskVolumeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DiskVolumeState>,
    /// The LocalDisk bound to the volume (its `spec.volumeRef` names the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_disk_name: Option<String>,
    /// The disk's stable device path on its node (`/dev/disk/by-id/...` when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// The whole disk's size: what the volume offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub capacity_bytes: Option<i64>,
    /// The node agent wiped the disk of the deleted volume (it may be given back).
    #[serde(default)]
    pub wiped: bool,
    /// The node the volume is published on (bound into a pod), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_node: Option<String>,
    /// Where it is published (CSI target paths): each recorded before it is made and
    /// removed once it is gone, so a disk in use is never wiped, whether it carries a
    /// filesystem or is bound as a raw block device (which no mount table shows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
