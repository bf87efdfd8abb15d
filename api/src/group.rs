//! LocalVolumeGroup: the volumes one or more pods use together, kept on the same node(s).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on a LocalVolume naming the LocalVolumeGroup it belongs to.
pub const LABEL_VOLUME_GROUP: &str = "hwameistor.io/volume-group";

/// One volume of a group, with the claim it serves.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    #[schemars(length(min = 1))]
    pub local_volume: String,
    /// `namespace/name` of the PersistentVolumeClaim.
    pub pvc: String,
}

/// Whether a group's volumes live on the same nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GroupState {
    /// Every volume is placed on the same nodes.
    Together,
    /// The volumes are placed on different nodes: a pod using them can run on none, or
    /// only on some; migrate the odd ones to the group's nodes.
    Apart,
    /// Some volume is not placed yet.
    Pending,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalVolumeGroup",
    plural = "localvolumegroups",
    shortname = "lvg",
    category = "hwameistor",
    status = "LocalVolumeGroupStatus",
    printcolumn = r#"{"name":"Volumes","type":"string","jsonPath":".spec.volumes[*].localVolume"}"#,
    printcolumn = r#"{"name":"Pods","type":"string","jsonPath":".spec.pods"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeGroupSpec {
    /// The volumes used together, in name order. Maintained by the controller from the pods
    /// and their claims.
    pub volumes: Vec<GroupMember>,
    /// The pods using them together (`namespace/name`).
    #[serde(default)]
    pub pods: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<GroupState>,
    /// The nodes the volumes are placed on (all of them, when Together).
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
