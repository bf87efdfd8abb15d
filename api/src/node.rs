//! LocalStorageNode: a node's pools as its agent sees them.

use crate::common::PoolClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalStorageNode",
    plural = "localstoragenodes",
    shortname = "lsn",
    category = "hwameistor",
    status = "LocalStorageNodeStatus",
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".spec.storageIP"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"HDD-Free","type":"integer","jsonPath":".status.pools.LocalStorage_PoolHDD.freeCapacityBytes"}"#,
    printcolumn = r#"{"name":"SSD-Free","type":"integer","jsonPath":".status.pools.LocalStorage_PoolSSD.freeCapacityBytes"}"#,
    printcolumn = r#"{"name":"NVMe-Free","type":"integer","jsonPath":".status.pools.LocalStorage_PoolNVMe.freeCapacityBytes"}"#,
    printcolumn = r#"{"name":"Volumes","type":"integer","priority":1,"jsonPath":".status.volumeCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorageNodeSpec {
    /// The node's hostname as Kubernetes knows it (also the object name).
    pub hostname: String,
    /// Address used for replication traffic between nodes.
    #[serde(default, rename = "storageIP", skip_serializing_if = "Option::is_none")]
    pub storage_ip: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NodeState {
    /// The agent runs and its last scan succeeded.
    Ready,
    /// The agent runs but cannot manage storage (LVM missing or failing); conditions say why.
    NotReady,
}

/// A disk that is a physical volume of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolDisk {
    /// The LocalDisk object, when the physical volume is a known disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_disk: Option<String>,
    pub device_path: String,
    #[schemars(range(min = 0))]
    pub capacity_bytes: i64,
    #[schemars(range(min = 0))]
    pub free_bytes: i64,
}

/// One pool (volume group) of the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub name: String,
    pub class: PoolClass,
    #[schemars(range(min = 0))]
    pub total_capacity_bytes: i64,
    #[schemars(range(min = 0))]
    pub used_capacity_bytes: i64,
    #[schemars(range(min = 0))]
    pub free_capacity_bytes: i64,
    /// LVM extent size: every volume is rounded up to a multiple of it.
    #[schemars(range(min = 0))]
    pub extent_size_bytes: i64,
    #[schemars(range(min = 0))]
    pub volume_count: i64,
    #[serde(default)]
    pub disks: Vec<PoolDisk>,
    /// The group's thin pool, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin: Option<ThinPoolStatus>,
    /// How far the agent lets thin volumes over-provision the group's thin pool, in percent
    /// of its data size (200: the thin volumes' sizes sum to at most twice the data). The
    /// agent's setting, reported so placement counts a thin volume as the share of the pool
    /// it may take; absent from agents that do not make thin volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100))]
    pub thin_overprovision_percent: Option<i64>,
}

/// A volume group's thin pool as its agent reads it. A full pool stops every thin volume
/// in it, so its use is what to watch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThinPoolStatus {
    #[schemars(range(min = 0))]
    pub data_bytes: i64,
    #[schemars(range(min = 0))]
    pub metadata_bytes: i64,
    /// Percent of the data in use (rounded down).
    #[schemars(range(min = 0, max = 100))]
    pub data_used_percent: i64,
    /// Percent of the metadata in use (rounded down).
    #[schemars(range(min = 0, max = 100))]
    pub metadata_used_percent: i64,
    /// The sum of its thin volumes' sizes.
    #[schemars(range(min = 0))]
    pub provisioned_bytes: i64,
    #[schemars(range(min = 0))]
    pub volume_count: i64,
}

/// A node's block mover, as its agent publishes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoverEndpoint {
    /// `address:port` on the node's storage network.
    #[schemars(length(min = 1))]
    pub endpoint: String,
    #[schemars(length(min = 1))]
    pub public_key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalStorageNodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeState>,
    /// Pools keyed by volume group name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolStatus>,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub volume_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Where the node's block mover listens and its public key (base64 X25519): two agents
    /// derive a copy's key from their keys and the operation, so no secret is handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover: Option<MoverEndpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
