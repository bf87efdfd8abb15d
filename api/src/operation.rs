//! Volume operations as resources: LocalVolumeMigrate, LocalVolumeConvert and
//! LocalVolumeExpand.
//!
//! A user (or the plugin, the evictor, CSI ControllerExpandVolume) creates one; the controller
//! runs it step by step, records where it stands in its status, and keeps it after it ended
//! as history until its time-to-live passes or the user deletes it. While an operation runs it
//! holds its volume (`LocalVolume.spec.operation`), so two operations never change one volume
//! at once. Setting `spec.abort` stops it at the next safe point: the volume stays usable with
//! its data where it was.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type on an operation: it is running (True), or it ended (False, with the reason
/// it ended: Succeeded, Failed, Aborted).
pub const CONDITION_RUNNING: &str = "Running";
/// Condition type on an operation: it waits for something outside it (the volume to be
/// unpublished, a free slot, room on a node); the message says what.
pub const CONDITION_WAITING: &str = "Waiting";

/// Label on an operation made for a volume of a group by the group-wide operation of
/// another of its volumes: that operation's name.
pub const LABEL_GROUP_OPERATION: &str = "hwameistor.io/group-operation";

/// The kinds of operation, as recorded in the volume they hold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum OperationKind {
    Migrate,
    Convert,
    Expand,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Migrate => "Migrate",
            OperationKind::Convert => "Convert",
            OperationKind::Expand => "Expand",
        }
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operation that holds a volume: only it changes the volume's placement until it ends.
/// Named by kind, name and uid, so a re-created operation of the same name is not mistaken for
/// the old one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationRef {
    pub kind: Option<OperationKind>,
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// A migration's cap on the block copy's rate, carried to the copying replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub bandwidth_limit_bytes_per_second: Option<i64>,
}

/// Where an operation stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Accepted; waiting to start (a free slot, the volume to be free of other operations or
    /// unpublished). The `Waiting` condition says what for.
    Pending,
    /// Changing the volume; `step` says where it is.
    Running,
    /// Aborting: undoing what it did, back to the volume as it was.
    Aborting,
    /// Done: the volume is as the operation asked.
    Succeeded,
    /// Ended without doing what it asked, for a reason retries cannot fix; the volume is
    /// usable as it was. The message says why.
    Failed,
    /// Stopped by `spec.abort`; the volume is usable as it was.
    Aborted,
}

impl OperationPhase {
    /// Whether the operation ended (it will never change the volume again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OperationPhase::Succeeded | OperationPhase::Failed | OperationPhase::Aborted
        )
    }
}

/// How far a long step got.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationProgress {
    #[schemars(range(min = 0))]
    pub bytes_done: i64,
    #[schemars(range(min = 0))]
    pub bytes_total: i64,
    /// Whole percent done, for printing.
    #[schemars(range(min = 0, max = 100))]
    pub percent: i64,
    /// Recent rate, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub bytes_per_second: Option<i64>,
    /// Estimated seconds left at the recent rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub eta_seconds: Option<i64>,
}

/// The status every operation kind reports. Fields that do not apply to a kind stay absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<OperationPhase>,
    /// The step of the operation's state machine it is at (e.g. `AddReplica`, `Sync`,
    /// `Prune`); kept after it ended: the step it ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<OperationProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Migrate: the nodes that held the replicas before (kept for history and abort).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_nodes: Vec<String>,
    /// Migrate and convert: the node chosen for the new replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// Migrate and convert of a volume in a LocalVolumeGroup: the group's other volumes
    /// that go with it to the same target node, fixed when it starts. Each is changed by an
    /// operation of the same kind made for it (labelled `hwameistor.io/group-operation`
    /// with this one's name); this one ends once they all ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_volumes: Vec<String>,
    /// Expand: the capacity the volume had before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub original_capacity_bytes: Option<i64>,
    /// Expand: the smallest capacity its replicas report now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub allocated_capacity_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Move a volume's replica off a node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolumeMigrate",
    derive = "PartialEq",
    plural = "localvolumemigrates",
    shortname = "lvmigrate",
    category = "hwameistor",
    status = "OperationStatus",
    printcolumn = r#"{"name":"Volume","type":"string","jsonPath":".spec.volumeName"}"#,
    printcolumn = r#"{"name":"From","type":"string","jsonPath":".spec.sourceNode"}"#,
    printcolumn = r#"{"name":"To","type":"string","jsonPath":".status.targetNode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Progress","type":"integer","jsonPath":".status.progress.percent"}"#,
    printcolumn = r#"{"name":"Abort","type":"boolean","priority":1,"jsonPath":".spec.abort"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeMigrateSpec {
    #[schemars(length(min = 1, max = 253))]
    pub volume_name: String,
    /// The node whose replica moves.
    #[schemars(length(min = 1, max = 253))]
    pub source_node: String,
    /// Nodes the replica may move to, in order of preference; empty: any node with room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub target_nodes: Vec<String>,
    /// Move every volume of the volume's group with it (volumes one pod uses stay together).
    #[serde(default = "default_true")]
    pub migrate_all_volumes: bool,
    /// Cap on the copy's rate, bytes per second (a volume without replication, copied by the
    /// block mover); absent: as fast as the link allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub bandwidth_limit_bytes_per_second: Option<i64>,
    /// Stop at the next safe point and leave the volume as it was.
    #[serde(default)]
    pub abort: bool,
    /// Seconds the ended operation is kept as history before the controller removes it;
    /// absent: the controller's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Turn a single-replica volume into a replicated (HA) one.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolumeConvert",
    derive = "PartialEq",
    plural = "localvolumeconverts",
    shortname = "lvconvert",
    category = "hwameistor",
    status = "OperationStatus",
    printcolumn = r#"{"name":"Volume","type":"string","jsonPath":".spec.volumeName"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicaNumber"}"#,
    printcolumn = r#"{"name":"To","type":"string","jsonPath":".status.targetNode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Progress","type":"integer","jsonPath":".status.progress.percent"}"#,
    printcolumn = r#"{"name":"Abort","type":"boolean","priority":1,"jsonPath":".spec.abort"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeConvertSpec {
    #[schemars(length(min = 1, max = 253))]
    pub volume_name: String,
    /// Replicas after the conversion: 2 (DRBD 8.4 replicates to one peer).
    #[schemars(range(min = 2, max = 2))]
    pub replica_number: i64,
    /// Node for the new replica; absent: any node with room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// Convert every volume of the volume's group with it, their new replicas on the same
    /// node (volumes one pod uses stay together).
    #[serde(default = "default_true")]
    pub convert_all_volumes: bool,
    #[serde(default)]
    pub abort: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Grow a volume.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolumeExpand",
    derive = "PartialEq",
    plural = "localvolumeexpands",
    shortname = "lvexpand",
    category = "hwameistor",
    status = "OperationStatus",
    printcolumn = r#"{"name":"Volume","type":"string","jsonPath":".spec.volumeName"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".spec.requiredCapacityBytes"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocatedCapacityBytes"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Abort","type":"boolean","priority":1,"jsonPath":".spec.abort"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeExpandSpec {
    #[schemars(length(min = 1, max = 253))]
    pub volume_name: String,
    /// The capacity the volume grows to (never shrinks).
    #[schemars(range(min = 4194304))]
    pub required_capacity_bytes: i64,
    /// Stop before the volume's size is changed. Once the new size was written to the
    /// volume, logical volumes cannot shrink back safely: abort then only stops waiting.
    #[serde(default)]
    pub abort: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

fn default_true() -> bool {
    true
}
