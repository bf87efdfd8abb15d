//! LocalDiskClaim: a request to bind disks of a node into its pools.

use crate::disk::DiskType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which disks a claim wants. Every given criterion must hold; a claim with no criterion
/// matches every Available disk of the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskSelector {
    /// Only disks of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<DiskType>,
    /// Only disks at least this large, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_capacity_bytes: Option<i64>,
    /// Only these LocalDisks, by object name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_disk_names: Vec<String>,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hwameistor.io",
    version = "v1alpha1",
    kind = "LocalDiskClaim",
    plural = "localdiskclaims",
    shortname = "ldc",
    category = "hwameistor",
    status = "LocalDiskClaimStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.description.diskType"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Disks","type":"string","jsonPath":".status.boundDisks"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskClaimSpec {
    /// The node whose disks are claimed.
    #[schemars(length(min = 1))]
    pub node_name: String,
    #[serde(default)]
    pub description: DiskSelector,
}

/// Where a claim is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClaimPhase {
    /// Waiting for matching disks; the Matched condition says why none fit.
    Pending,
    /// Disks chosen and bound; the pool is being grown.
    Extending,
    /// Every chosen disk is in its pool.
    Bound,
    /// Cannot proceed without a change by a user; the message says what.
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalDiskClaimStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClaimPhase>,
    /// The disks chosen for this claim. Written before any disk is touched, so an agent
    /// restarted half-way resumes with the same disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_disks: Vec<String>,
    /// Bytes added to pools by this claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub capacity_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
