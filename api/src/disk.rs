//! LocalDisk: one object per physical disk of a node.

use crate::common::{ObjectRef, PoolClass};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the agent found the disk to be, from sysfs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DiskType {
    #[serde(rename = "HDD")]
    Hdd,
    #[serde(rename = "SSD")]
    Ssd,
    #[serde(rename = "NVMe")]
    Nvme,
}

impl DiskType {
    /// The pool a disk of this type grows.
    pub fn pool_class(self) -> PoolClass {
        match self {
            DiskType::Hdd => PoolClass::Hdd,
            DiskType::Ssd => PoolClass::Ssd,
            DiskType::Nvme => PoolClass::Nvme,
        }
    }

    pub fn parse(s: &str) -> Option<DiskType> {
        PoolClass::parse(s).map(|c| match c {
            PoolClass::Hdd => DiskType::Hdd,
            PoolClass::Ssd => DiskType::Ssd,
            PoolClass::Nvme => DiskType::Nvme,
        })
    }

    pub fn as_str(self) -> &'static str {
        self.pool_class().as_str()
    }
}

impl std::fmt::Display for DiskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the disk is attached to its node right now.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DiskPresence {
    /// Seen in the agent's latest scan.
    Active,
    /// Not seen any more: removed, failed, or its node is gone. The object is kept so that
    /// a disk carrying data is never forgotten.
    Inactive,
}

/// Whether the disk can be used, and by whom.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DiskPhase {
    /// Blank and free: a claim may bind it.
    Available,
    /// Carries something (filesystem, partitions, a foreign LVM signature, mounts, holders)
    /// or is too small; `status.reason` says what. Never touched automatically.
    Unavailable,
    /// Kept out of automatic use by `spec.reserved`.
    Reserved,
    /// Bound to a claim and (being) added to a pool.
    Bound,
}

/// Where the stable identity of a disk (and so its object name) came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IdentitySource {
    /// The World Wide Name: unique by design.
    #[serde(rename = "WWN")]
    Wwn,
    /// Vendor, model and serial number.
    Serial,
    /// The disk reported no serial: the name follows its bus position and would change if
    /// the disk were moved to another port.
    Path,
}

/// What a user or a claim decided about the disk.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalDisk",
    selectable = ".spec.nodeName",
    plural = "localdisks",
    shortname = "ld",
    category = "hwameistor",
    status = "LocalDiskStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Device","type":"string","jsonPath":".status.devicePath"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".status.diskType"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".status.capacityBytes"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Claim","type":"string","jsonPath":".spec.claimRef.name"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Serial","type":"string","priority":1,"jsonPath":".status.serial"}"#,
    printcolumn = r#"{"name":"Reserved","type":"boolean","priority":1,"jsonPath":".spec.reserved"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskSpec {
    /// The node the disk is attached to.
    pub node_name: String,
    /// Keep the disk out of automatic use: no claim binds a reserved disk.
    #[serde(default)]
    pub reserved: bool,
    /// The claim that bound the disk. Set by the node agent when a claim selects the disk;
    /// a disk is only ever added to a pool when this names a claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ObjectRef>,
    /// The raw-disk volume (LocalDiskVolume) the whole disk serves. Set by the controller
    /// (compare-and-swap) when it binds the disk to a volume, cleared once the deleted
    /// volume's disk was wiped. A disk serving a volume never joins a pool, and a pool's
    /// disk never serves a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_ref: Option<ObjectRef>,
}

/// A partition found on the disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    pub name: String,
    #[schemars(range(min = 0))]
    pub size_bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<String>,
}

/// What the node agent observed about the disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DiskPresence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DiskPhase>,
    /// Why the disk is not Available, in one line (the first entry of `reasons`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every reason the disk is not Available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Current kernel name, e.g. /dev/sdb. It may change across reboots; the object name
    /// does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Stable links: /dev/disk/by-id/..., /dev/disk/by-path/...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dev_links: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<DiskType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub capacity_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_source: Option<IdentitySource>,
    /// "major:minor" of the block device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_num: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Partition table type (gpt, dos) if the disk carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionInfo>,
    /// Signature found on the whole disk (xfs, ext4, LVM2_member, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    /// Devices stacked on this disk (device-mapper, md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<String>,
    /// The HwameiStor pool (volume group) the disk belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}
