//! LocalVolume: the volume a PersistentVolume maps to.

use crate::operation::OperationRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Smallest volume: one default LVM extent.
pub const MIN_VOLUME_BYTES: i64 = 4 << 20;
/// Most replicas a volume may have (HA volumes use 2 or 3; one more during a migration).
pub const MAX_REPLICAS: i64 = 4;

/// Condition type on a LocalVolume saying whether the controller could place it.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Reason of a `Scheduled=False` condition: no node's pool has room. The CSI driver turns
/// it into ResourceExhausted and removes the volume it created.
pub const REASON_NO_CAPACITY: &str = "NoCapacity";
/// Reason of a `Scheduled=True` condition.
pub const REASON_PLACED: &str = "Placed";
/// Annotation on a LocalVolume made by CSI CreateVolume holding the CSI volume name it was
/// created for, when that name could not be the object's name as it is.
pub const ANNOTATION_CSI_NAME: &str = "hwameistor.io/csi-volume-name";
/// Condition type on a LocalVolume and its replicas: both replicas were primary while
/// disconnected (DRBD split brain). Status True until the operator resolved it.
pub const CONDITION_SPLIT_BRAIN: &str = "SplitBrain";

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeKind {
    /// A logical volume in a pool.
    #[default]
    #[serde(rename = "LVM")]
    Lvm,
}

/// Nodes the volume can be used from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accessibility {
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// A volume restored from a LocalVolumeSnapshot: its one replica is filled from the
/// snapshot before it is Ready (on the snapshot's node by LVM alone when both are thin in
/// one pool, otherwise by the block mover, checksummed end to end).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDataSource {
    /// The LocalVolumeSnapshot restored, by name and uid (a snapshot re-created under the
    /// same name is another one: the restore refuses it).
    #[schemars(length(min = 1, max = 253))]
    pub snapshot: String,
    #[schemars(length(min = 1))]
    pub snapshot_uid: String,
    /// The node holding the snapshot.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// The snapshot's pool on that node.
    #[schemars(regex(pattern = r"^LocalStorage_Pool(HDD|SSD|NVMe)$"))]
    pub pool_name: String,
    /// Bytes restored (the snapshot's source size; the volume may be larger).
    #[schemars(range(min = 1))]
    pub bytes: i64,
    /// The snapshot is thin (shares its pool's blocks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thin: bool,
    /// The volume this one clones, when the snapshot was taken only to clone it: the
    /// controller removes that snapshot once the clone is filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<String>,
}

/// One replica placement decided by the controller.
///
/// Its flags are always serialized, `false` included: the controller and the agents change
/// them with merge patches, where an absent field means "unchanged" and a flag could
/// otherwise never be cleared.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaAssignment {
    #[schemars(range(min = 1))]
    pub id: i64,
    pub hostname: String,
    /// The node's replication address (its LocalStorageNode's `storageIP`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The replica the controller allows to be primary (serve the volume's I/O). At most one
    /// replica of a volume has it; it moves only by a compare-and-swap on this object
    /// (switchover when the volume is published elsewhere, failover after fencing).
    #[serde(default)]
    pub primary: bool,
    /// Fenced: this replica may lack writes its peer acknowledged. It must never be
    /// promoted, and serves again only after it resynced from its peer (the controller
    /// clears the mark once it reports UpToDate). Set with a compare-and-swap by whichever
    /// side fences first: the primary's node when it loses its peer, or the controller when
    /// the primary's node is lost.
    #[serde(default)]
    pub outdated: bool,
    /// Being replaced by an operation (a migration off this node): kept intact, with its data,
    /// but out of the volume's replication until the operation either removes it (its
    /// replacement is complete and verified) or makes it active again (abort). Never
    /// primary.
    #[serde(default)]
    pub leaving: bool,
    /// A new replica the block mover fills from the replica on this node (a volume without
    /// replication moving nodes). It is not used before the copy is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_from: Option<String>,
}

/// The placement the controller decided: the desired state node agents act on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeConfig {
    /// Bumped on every change so agents can tell a new decision from an old one.
    #[schemars(range(min = 0))]
    pub version: i64,
    #[schemars(range(min = 0))]
    pub required_capacity_bytes: i64,
    /// Replication resource number (a DRBD minor and port offset); the sentinel -1 means
    /// the volume has no replication resource (one replica, plain LVM).
    #[schemars(range(min = -1))]
    pub resource_id: i64,
    #[serde(default)]
    pub replicas: Vec<ReplicaAssignment>,
    /// No replica has held data yet: the primary may turn its never-written (Inconsistent)
    /// disk UpToDate, from which the initial full sync runs. Cleared by the controller as
    /// soon as a replica reports UpToDate, so a later promotion is never forced.
    #[serde(default)]
    pub initial: bool,
}

/// The operator's choice after a split brain: the data of the replica on `keep` survives;
/// the other replica's changes since the split are discarded and it resyncs from `keep`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SplitBrainResolution {
    /// The node whose replica's data is kept.
    #[schemars(length(min = 1))]
    pub keep: String,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolume",
    derive = "PartialEq",
    plural = "localvolumes",
    shortname = "lv",
    category = "hwameistor",
    status = "LocalVolumeStatus",
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".spec.poolName"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.volumeKind"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicaNumber"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".spec.requiredCapacityBytes"}"#,
    printcolumn = r#"{"name":"Accessibility","type":"string","jsonPath":".spec.accessibility.nodes"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Resource","type":"integer","jsonPath":".spec.config.resourceId"}"#,
    printcolumn = r#"{"name":"Published","type":"string","jsonPath":".status.publishedNode"}"#,
    printcolumn = r#"{"name":"HA","type":"string","priority":1,"jsonPath":".status.haState"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeSpec {
    /// Pool (volume group) the replicas are carved from.
    #[schemars(regex(pattern = r"^LocalStorage_Pool(HDD|SSD|NVMe)$"))]
    pub pool_name: String,
    #[serde(default)]
    pub volume_kind: VolumeKind,
    #[schemars(range(min = 4194304))]
    pub required_capacity_bytes: i64,
    #[schemars(range(min = 1, max = 4))]
    pub replica_number: i64,
    /// May later be converted to a replicated volume.
    #[serde(default)]
    pub convertible: bool,
    /// Carved from its pool's thin pool: blocks are allocated as they are written, and the
    /// pool may be over-provisioned up to its node's ratio. One replica only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thin: bool,
    /// Nodes the volume must be (or is) placed on.
    #[serde(default)]
    pub accessibility: Accessibility,
    /// Where the volume's first data comes from (a PVC's dataSource: a snapshot, or a
    /// volume cloned through a snapshot taken for it). Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source: Option<VolumeDataSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_name: Option<String>,
    /// Filesystem the volume carries (`xfs`, `ext4`); absent for a raw block volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(xfs|ext4)$"))]
    pub fs_type: Option<String>,
    /// Placement decided by the controller; absent until the volume is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<VolumeConfig>,
    /// Set by `kubectl hwameistor volume resolve-split-brain`; removed by the controller
    /// once the replicas are connected again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_brain_resolution: Option<SplitBrainResolution>,
    /// The operation (migrate, convert, expand) holding the volume: only it changes the
    /// placement until it ends. Set and cleared by the controller with a compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRef>,
}

impl LocalVolumeSpec {
    /// One thick replica of `bytes` in pool `pool_name`, on any node, no filesystem, not
    /// placed: what the other fields are set over (`LocalVolumeSpec { thin: true,
    /// ..LocalVolumeSpec::single(..) }`).
    pub fn single(pool_name: &str, bytes: i64) -> Self {
        LocalVolumeSpec {
            pool_name: pool_name.to_string(),
            volume_kind: VolumeKind::Lvm,
            required_capacity_bytes: bytes,
            replica_number: 1,
            convertible: false,
            thin: false,
            accessibility: Accessibility::default(),
            data_source: None,
            pvc_namespace: None,
            pvc_name: None,
            fs_type: None,
            config: None,
            split_brain_resolution: None,
            operation: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VolumeState {
    /// Being placed and its replicas created.
    Creating,
    /// Every replica is Ready.
    Ready,
    /// A replica is missing or not Ready.
    NotReady,
    /// Growing to a new size.
    Expanding,
    /// Being deleted; waits for its replicas to go.
    Deleting,
}

/// How an HA volume's copies stand, as the controller sums up its replicas' reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HaState {
    /// Both replicas connected and UpToDate.
    Healthy,
    /// A resync is running: one replica is not UpToDate yet.
    Syncing,
    /// One copy only: a replica is down, disconnected, outdated or not created yet.
    Degraded,
    /// Both replicas were primary while disconnected; they stay apart until the operator
    /// chooses which data to keep (`kubectl hwameistor volume resolve-split-brain`).
    SplitBrain,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VolumeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub allocated_capacity_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub used_capacity_bytes: Option<i64>,
    /// Names of the LocalVolumeReplicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    /// For an HA volume: how its copies stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_state: Option<HaState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
