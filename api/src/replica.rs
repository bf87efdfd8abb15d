//! LocalVolumeReplica: the piece of a volume on one node, executed by that node's agent.

use crate::volume::VolumeKind;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolumeReplica",
    selectable = ".spec.nodeName",
    plural = "localvolumereplicas",
    shortname = "lvr",
    category = "hwameistor",
    status = "LocalVolumeReplicaStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.volumeKind"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".status.allocatedCapacityBytes"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Synced","type":"boolean","jsonPath":".status.synced"}"#,
    printcolumn = r#"{"name":"Device","type":"string","jsonPath":".status.devicePath"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".status.replication.role"}"#,
    printcolumn = r#"{"name":"Disk","type":"string","jsonPath":".status.replication.diskState"}"#,
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".status.replication.connectionState"}"#,
    printcolumn = r#"{"name":"Sync","type":"string","priority":1,"jsonPath":".status.replication.syncProgress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeReplicaSpec {
    pub volume_name: String,
    #[schemars(regex(pattern = r"^LocalStorage_Pool(HDD|SSD|NVMe)$"))]
    pub pool_name: String,
    pub node_name: String,
    #[serde(default)]
    pub volume_kind: VolumeKind,
    #[schemars(range(min = 4194304))]
    pub required_capacity_bytes: i64,
    /// A thin logical volume in its group's thin pool (the volume's `thin`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thin: bool,
    /// What this replica's node needs to run the volume's replication (DRBD) resource;
    /// absent for a volume without replication. Written by the controller from the
    /// volume's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationSpec>,
    /// Fill this new replica with the block mover from another node's replica (a volume
    /// without replication moving nodes). Written by the controller from the volume's config
    /// and the operation holding it; removed once the copy is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_from: Option<CopySource>,
}

/// Where a replica's data is copied from, and by which operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopySource {
    /// The node holding the replica copied from.
    #[schemars(length(min = 1))]
    pub node: String,
    /// The operation copying, by name and uid: the two agents derive the copy's key from
    /// it, so a copy for another operation (or an old one of the same name) is refused.
    #[schemars(length(min = 1))]
    pub operation: String,
    #[schemars(length(min = 1))]
    pub operation_uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub bandwidth_limit_bytes_per_second: Option<i64>,
    /// A restore: the copy reads this LocalVolumeSnapshot on `node` (and `operation` /
    /// `operationUid` are the snapshot's name and uid) rather than the volume's replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// How a block copy into a replica stands, as the target node's agent reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyStatus {
    /// The operation uid the copy belongs to.
    pub operation_uid: String,
    #[schemars(range(min = 0))]
    pub bytes_done: i64,
    #[schemars(range(min = 0))]
    pub bytes_total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub bytes_per_second: Option<i64>,
    /// Times the copy resumed from its checkpoint after a failure.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub resumes: i64,
    /// Chunks re-sent because they arrived damaged.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub resends: i64,
    /// The whole copy was read back and its digest equals the source's.
    #[serde(default)]
    pub verified: bool,
    /// Filled by LVM as a thin snapshot of the source on the same node: blocks shared,
    /// nothing copied (so no digest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lvm_clone: bool,
    /// The end-to-end digest (hex) both sides computed, once verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The last error, while retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The other replica of an HA volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPeer {
    pub node: String,
    /// Its replication address.
    #[schemars(length(min = 1))]
    pub address: String,
}

/// A replica's part of its volume's replication resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// DRBD resource name.
    #[schemars(length(min = 1, max = 63))]
    pub resource: String,
    /// DRBD minor: the device is /dev/drbd<minor>.
    #[schemars(range(min = 0, max = 1048575))]
    pub minor: i64,
    /// TCP port of the replication link (the same on both nodes).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
    /// This node's replication address.
    #[schemars(length(min = 1))]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<ReplicationPeer>,
    /// The controller allows this replica to be primary (see the volume's config).
    #[serde(default)]
    pub primary: bool,
    /// Fenced: may lack acknowledged writes; never promoted until resynced.
    #[serde(default)]
    pub outdated: bool,
    /// No replica of the volume held data yet: a primary may make its never-written disk
    /// UpToDate (the initial sync runs from it).
    #[serde(default)]
    pub initial: bool,
    /// The operator resolved a split brain against this replica: its changes since the
    /// split are discarded when it reconnects.
    #[serde(default)]
    pub discard_my_data: bool,
    /// The operator resolved a split brain in favour of this replica: it reconnects and its
    /// peer resyncs from it.
    #[serde(default)]
    pub keep_my_data: bool,
    /// Being replaced (a migration off this node): the resource is taken down and kept,
    /// data and metadata intact, out of the replication until the operation removes this
    /// replica or makes it active again. Never primary. `peer` is absent meanwhile.
    #[serde(default)]
    pub leaving: bool,
    /// The version of the volume's config this was written from. Every config change (a
    /// fence included) reaches both replicas, so a report made after a replica saw this
    /// version describes the node after that change.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub config_version: i64,
}

/// What the node's replication layer reports for a replica (DRBD's own words).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    /// `Primary`, `Secondary` or `Unknown` (the resource is not up).
    pub role: String,
    /// Local disk state: `UpToDate`, `Inconsistent`, `Outdated`, `Diskless`, ...
    pub disk_state: String,
    /// `Connected`, `SyncSource`, `SyncTarget`, `WFConnection`, `StandAlone`, ...
    pub connection_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_disk_state: Option<String>,
    /// Bytes known to differ from the peer.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub out_of_sync_bytes: i64,
    /// Resync progress while one runs, e.g. `42.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_progress: Option<String>,
    /// I/O is frozen, waiting for the peer to be fenced.
    #[serde(default)]
    pub suspended: bool,
    /// DRBD met a split brain on this resource (set when DRBD reports it, cleared once
    /// connected again).
    #[serde(default)]
    pub split_brain: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReplicaState {
    /// The logical volume exists at the required size and is active.
    Ready,
    /// The logical volume is missing, inactive or smaller than required and the agent could
    /// not fix it yet (no room in the pool, an LVM error); `message` says why. The agent
    /// retries.
    NotReady,
    /// The replica is being deleted and its logical volume could not be removed yet (it is
    /// open, or LVM failed); `message` says why.
    Deleting,
    /// An operation failed in a way retries will not fix; conditions say why.
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeReplicaStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ReplicaState>,
    /// Whether this replica holds an up-to-date copy of the volume's data, as replication
    /// last reported it. Absent for a volume without replication: its one replica is the
    /// data, there is nothing to be in sync with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<bool>,
    /// Block device applications use, e.g. /dev/LocalStorage_PoolHDD/pvc-....
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub allocated_capacity_bytes: Option<i64>,
    /// Physical volumes the logical volume lives on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
    /// For a replicated volume: what its replication layer reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStatus>,
    /// For a replica filled by the block mover: how the copy stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The name of `volume`'s replica on `node`: deterministic, so a controller that crashed
/// after creating it finds it again instead of creating a second one.
///
/// `<volume>-<node>` when that is a valid object name (at most 253 characters); otherwise
/// the volume name shortened, followed by a hash of both names that keeps it unique.
pub fn replica_name(volume: &str, node: &str) -> String {
    let plain = format!("{volume}-{node}");
    if plain.len() <= 253 {
        return plain;
    }
    // FNV-1a: stable across releases and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in volume.bytes().chain([0u8]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let keep: String = volume.chars().take(200).collect();
    format!("{}-{h:016x}", keep.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::replica_name;

    #[test]
    fn replica_names_are_deterministic_and_bounded() {
        assert_eq!(replica_name("pvc-1", "node-a"), "pvc-1-node-a");
        let long_node = "n".repeat(240);
        let a = replica_name("pvc-1234", &long_node);
        assert!(a.len() <= 253, "{}", a.len());
        assert_eq!(a, replica_name("pvc-1234", &long_node));
        assert_ne!(a, replica_name("pvc-1234", &"m".repeat(240)));
        assert!(a.starts_with("pvc-1234-"));
    }
}
