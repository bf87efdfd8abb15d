//! Names, labels and small types shared by all resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every HwameiStor resource.
pub const GROUP: &str = "hwameistor.io";
/// API version of every HwameiStor resource.
pub const VERSION: &str = "v1alpha1";
/// The namespace the in-cluster components run in.
pub const SYSTEM_NAMESPACE: &str = "hwameistor";
/// Name of the LVM CSI driver.
pub const CSI_DRIVER_NAME: &str = "lvm.hwameistor.io";
/// Name of the raw-disk CSI driver (one whole disk per volume).
pub const DISK_DRIVER_NAME: &str = "disk.hwameistor.io";
/// Topology key the CSI node service reports; its value is the node name.
pub const TOPOLOGY_NODE_KEY: &str = "topology.lvm.hwameistor.io/node";

/// Label carrying the node a per-node resource belongs to. Custom resources only support
/// field selectors on metadata, so per-node lists go through this label.
pub const LABEL_NODE: &str = "hwameistor.io/node";
/// Label on a LocalVolumeReplica naming its LocalVolume.
pub const LABEL_VOLUME: &str = "hwameistor.io/volume";
/// Label on a LocalDisk naming the claim that bound it.
pub const LABEL_CLAIM: &str = "hwameistor.io/claim";

/// Finalizer the controller holds on a LocalVolume until all its replicas are gone.
pub const FINALIZER_VOLUME: &str = "hwameistor.io/volume-protection";
/// Finalizer the node agent holds on a LocalVolumeReplica until its logical volume is removed.
pub const FINALIZER_REPLICA: &str = "hwameistor.io/replica-protection";
/// Finalizer the controller holds on a volume operation until it ended and let its volume
/// go: deleting a running operation aborts it (or, past its point of no return, lets it
/// finish) instead of leaving its volume held half-way.
pub const FINALIZER_OPERATION: &str = "hwameistor.io/operation-protection";
/// Finalizer the controller holds on a LocalDiskVolume until its disk was wiped and given
/// back.
pub const FINALIZER_DISK_VOLUME: &str = "hwameistor.io/disk-volume-protection";

/// Prefix of every volume group HwameiStor owns; anything else on a node is foreign.
pub const POOL_PREFIX: &str = "LocalStorage_Pool";

/// Storage class of a pool: one volume group per class on each node.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum PoolClass {
    #[serde(rename = "HDD")]
    Hdd,
    #[serde(rename = "SSD")]
    Ssd,
    #[serde(rename = "NVMe")]
    Nvme,
}

impl PoolClass {
    pub const ALL: [PoolClass; 3] = [PoolClass::Hdd, PoolClass::Ssd, PoolClass::Nvme];

    /// The volume group name of this class's pool, e.g. `LocalStorage_PoolHDD`.
    pub fn pool_name(self) -> &'static str {
        match self {
            PoolClass::Hdd => "LocalStorage_PoolHDD",
            PoolClass::Ssd => "LocalStorage_PoolSSD",
            PoolClass::Nvme => "LocalStorage_PoolNVMe",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PoolClass::Hdd => "HDD",
            PoolClass::Ssd => "SSD",
            PoolClass::Nvme => "NVMe",
        }
    }

    /// Parses a class name case-insensitively (users type `hdd` as often as `HDD`).
    pub fn parse(s: &str) -> Option<PoolClass> {
        match s.to_ascii_lowercase().as_str() {
            "hdd" => Some(PoolClass::Hdd),
            "ssd" => Some(PoolClass::Ssd),
            "nvme" => Some(PoolClass::Nvme),
            _ => None,
        }
    }

    /// The class whose pool has this volume group name, if it is one of ours.
    pub fn from_pool_name(name: &str) -> Option<PoolClass> {
        PoolClass::ALL.into_iter().find(|c| c.pool_name() == name)
    }
}

impl std::fmt::Display for PoolClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to the object that owns or claimed something, by name and uid so that a
/// re-created object of the same name is not mistaken for the old one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}
