//! LocalDiskClaim: a request to bind disks of a node into its pools.

use crate::disk::{DiskPhase, DiskPresence, DiskType, LocalDisk};
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
    selectable = ".spec.nodeName",
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

/// Why a disk cannot be bound by any claim right now, in the words users see in
/// `disk list` and claim conditions; `None` when it is Available and free.
///
/// This is the one definition of eligibility: the node agent binds by it and
/// `kubectl hwameistor disk claim` plans by it, so the plan shown is what happens.
pub fn disk_unavailability(d: &LocalDisk) -> Option<String> {
    let Some(st) = &d.status else {
        return Some("not scanned by the node agent yet".into());
    };
    if st.state != Some(DiskPresence::Active) {
        if let Some(v) = &d.spec.volume_ref {
            return Some(format!(
                "serves disk volume {} but is missing: not seen in the agent's latest scan",
                v.name
            ));
        }
        return Some(
            if d.spec.claim_ref.is_some() || st.phase == Some(DiskPhase::Bound) {
                "Bound but missing: not seen in the agent's latest scan; its pool is degraded"
                    .into()
            } else {
                "not present on the node (Inactive)".into()
            },
        );
    }
    if let Some(v) = &d.spec.volume_ref {
        return Some(format!("used by disk volume {} (whole disk)", v.name));
    }
    if let Some(c) = &d.spec.claim_ref {
        return Some(match &st.pool {
            Some(p) => format!("in pool {p} (claim {})", c.name),
            None => format!("bound to claim {}", c.name),
        });
    }
    if d.spec.reserved {
        return Some("reserved (kubectl hwameistor disk release to free it)".into());
    }
    match st.phase {
        Some(DiskPhase::Available) => None,
        Some(DiskPhase::Bound) => Some(match &st.pool {
            Some(p) => format!("in pool {p}"),
            None => "Bound".into(),
        }),
        phase => Some(
            st.reason
                .clone()
                .or_else(|| st.reasons.first().cloned())
                .unwrap_or_else(|| format!("{phase:?} (the agent gave no reason)")),
        ),
    }
}

impl DiskSelector {
    /// Why `d` does not fit this selector (eligibility first, then type and size); `None`
    /// when a claim with this selector may bind it. Names are matched by the caller, which
    /// knows whether the list is exhaustive.
    pub fn rejection(&self, d: &LocalDisk) -> Option<String> {
        if let Some(r) = disk_unavailability(d) {
            return Some(r);
        }
        let st = d.status.clone().unwrap_or_default();
        if let (Some(want), Some(have)) = (self.disk_type, st.disk_type) {
            if want != have {
                return Some(format!("type {have}, claim wants {want}"));
            }
        }
        if let Some(min) = self.min_capacity_bytes {
            let cap = st.capacity_bytes.unwrap_or(0);
            if cap < min {
                return Some(format!(
                    "capacity {} is below the minimum {}",
                    crate::quantity::format_size(cap),
                    crate::quantity::format_size(min)
                ));
            }
        }
        None
    }
}
