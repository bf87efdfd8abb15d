//! `disk claim`: plan which disks of a node a claim binds, create the LocalDiskClaim for
//! exactly those disks, and follow it until the node agent has grown the pools.

use super::disks::size_cell;
use super::follow::{follow, Step};
use super::lookup::{get_opt, require_node, NodeFacts};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    ClaimPhase, DiskSelector, DiskType, LocalDisk, LocalDiskClaim, LocalDiskClaimSpec,
    LocalStorageNode,
};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct ClaimRequest {
    pub node: String,
    pub disk_type: Option<DiskType>,
    pub min_size_bytes: Option<i64>,
    /// Only these disks (all or none, as the agent binds named disks).
    pub disks: Vec<String>,
    /// Claim name; default `<node>-<UTC timestamp>`.
    pub name: Option<String>,
}

/// One disk of the node and the plan's decision about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDisk {
    pub name: String,
    pub device: Option<String>,
    pub disk_type: Option<String>,
    pub capacity_bytes: Option<i64>,
    /// The pool the disk grows.
    pub pool: Option<String>,
    pub selected: bool,
    /// Why it is not selected.
    pub reason: Option<String>,
}

/// How much a pool grows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolGrowth {
    pub pool: String,
    pub before_bytes: i64,
    /// Planned, from the disks' capacities (LVM metadata takes a little of it).
    pub added_bytes: i64,
    /// Observed after the claim is Bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_bytes: Option<i64>,
}

/// The plan shown before anything is changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimPlan {
    pub claim_name: String,
    pub node: String,
    /// The spec the claim is created with: it names exactly the selected disks, so the
    /// agent binds what was shown and confirmed, nothing else.
    pub spec: LocalDiskClaimSpec,
    pub disks: Vec<PlannedDisk>,
    pub total_bytes: i64,
    pub pools: Vec<PoolGrowth>,
}

impl ClaimPlan {
    pub fn selected(&self) -> impl Iterator<Item = &PlannedDisk> {
        self.disks.iter().filter(|d| d.selected)
    }

    /// The question asked before creating the claim.
    pub fn confirmation_action(&self) -> String {
        format!(
            "claim {} disk(s) of node {} (+{}); anything on them is lost",
            self.selected().count(),
            self.node,
            format_size(self.total_bytes)
        )
    }
}

fn pools_table(pools: &[PoolGrowth]) -> TableView {
    let mut t = TableView::new(&["POOL", "BEFORE", "ADDED", "AFTER"]).titled("Pools:");
    for p in pools {
        t.push(vec![
            p.pool.clone(),
            format_size(p.before_bytes),
            format!("+{}", format_size(p.added_bytes)),
            match p.after_bytes {
                Some(a) => format_size(a),
                None => format!("~{}", format_size(p.before_bytes + p.added_bytes)),
            },
        ]);
    }
    t
}

impl Render for ClaimPlan {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["DISK", "DEVICE", "TYPE", "CAPACITY", "POOL", "DECISION"])
            .titled(format!(
                "Plan for claim {} on node {}: {} disk(s), +{}",
                self.claim_name,
                self.node,
                self.selected().count(),
                format_size(self.total_bytes)
            ));
        for d in &self.disks {
            t.push(vec![
                d.name.clone(),
                or_dash(d.device.as_deref()),
                or_dash(d.disk_type.as_deref()),
                size_cell(d.capacity_bytes),
                if d.selected {
                    or_dash(d.pool.as_deref())
                } else {
                    "-".into()
                },
                match &d.reason {
                    None => "claim".into(),
                    Some(r) => format!("skip: {r}"),
                },
            ]);
        }
        vec![t, pools_table(&self.pools)]
    }
}

/// Why a disk does not fit the request: the agent's rule (see `DiskSelector::rejection`).
pub fn rejection(d: &LocalDisk, req: &ClaimRequest) -> Option<String> {
    let selector = hwameistor_api::DiskSelector {
        disk_type: req.disk_type,
        min_capacity_bytes: req.min_size_bytes,
        local_disk_names: Vec::new(),
    };
    selector.rejection(d)
}

/// A claim name that is a valid object name: `<node>-<yyyymmddhhmmss>` in UTC.
pub fn default_claim_name(node: &str, now: jiff::Timestamp) -> String {
    let stamp = now.strftime("%Y%m%d%H%M%S").to_string();
    let mut base: String = node
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(253 - stamp.len() - 1);
    format!("{}-{stamp}", base.trim_end_matches(['-', '.']))
}

/// Works out the plan from the node's disks and pools. Pure.
pub fn plan_claim(
    req: &ClaimRequest,
    facts: &NodeFacts,
    claim_name: String,
) -> Result<ClaimPlan, AdminError> {
    let mut disks: Vec<&LocalDisk> = facts.disks.iter().collect();
    disks.sort_by_key(|d| d.name_any());
    if !req.disks.is_empty() {
        for n in &req.disks {
            if !disks.iter().any(|d| d.name_any() == *n) {
                return Err(AdminError::UnknownDisk {
                    name: n.clone(),
                    node: Some(facts.name.clone()),
                    known: disks.iter().map(|d| d.name_any()).collect(),
                });
            }
        }
        disks.retain(|d| req.disks.contains(&d.name_any()));
    }
    let planned: Vec<PlannedDisk> = disks
        .iter()
        .map(|d| {
            let st = d.status.clone().unwrap_or_default();
            let reason = rejection(d, req);
            PlannedDisk {
                name: d.name_any(),
                device: st.device_path,
                disk_type: st.disk_type.map(|t| t.as_str().to_string()),
                capacity_bytes: st.capacity_bytes,
                pool: st.disk_type.map(|t| t.pool_class().pool_name().to_string()),
                selected: reason.is_none(),
                reason,
            }
        })
        .collect();
    let rejected: Vec<(String, String)> = planned
        .iter()
        .filter_map(|d| d.reason.clone().map(|r| (d.name.clone(), r)))
        .collect();
    if planned.iter().all(|d| !d.selected) {
        let reasons = if planned.is_empty() {
            vec![(
                facts.name.clone(),
                "the node has no LocalDisks (is the node agent running there?)".to_string(),
            )]
        } else {
            rejected
        };
        return Err(AdminError::NothingToClaim {
            node: facts.name.clone(),
            reasons,
        });
    }
    if !req.disks.is_empty() && !rejected.is_empty() {
        // The agent binds a named list whole or not at all: a claim naming one unusable disk
        // would stay Pending forever.
        return Err(AdminError::InvalidArgument(format!(
            "not every disk given with --disk can be claimed on node {:?} (a claim binds all of them or none):\n{}",
            facts.name,
            rejected.iter().map(|(d, r)| format!("  - {d}: {r}")).collect::<Vec<_>>().join("\n")
        )));
    }
    let mut added: BTreeMap<String, i64> = BTreeMap::new();
    for d in planned.iter().filter(|d| d.selected) {
        if let Some(p) = &d.pool {
            *added.entry(p.clone()).or_default() += d.capacity_bytes.unwrap_or(0);
        }
    }
    let pools = added
        .into_iter()
        .map(|(pool, added_bytes)| PoolGrowth {
            before_bytes: pool_total(facts.node.as_ref(), &pool).unwrap_or(0),
            pool,
            added_bytes,
            after_bytes: None,
        })
        .collect();
    let selected_names: Vec<String> = planned
        .iter()
        .filter(|d| d.selected)
        .map(|d| d.name.clone())
        .collect();
    Ok(ClaimPlan {
        claim_name,
        node: facts.name.clone(),
        spec: LocalDiskClaimSpec {
            node_name: facts.name.clone(),
            description: DiskSelector {
                disk_type: req.disk_type,
                min_capacity_bytes: req.min_size_bytes,
                local_disk_names: selected_names,
            },
        },
        total_bytes: planned
            .iter()
            .filter(|d| d.selected)
            .filter_map(|d| d.capacity_bytes)
            .sum(),
        disks: planned,
        pools,
    })
}

fn pool_total(node: Option<&LocalStorageNode>, pool: &str) -> Option<i64> {
    node?
        .status
        .as_ref()?
        .pools
        .get(pool)
        .map(|p| p.total_capacity_bytes)
}

/// Checks the node and computes the plan from the cluster's LocalDisks.
pub async fn plan(cluster: &Cluster, req: &ClaimRequest) -> Result<ClaimPlan, AdminError> {
    let facts = require_node(cluster, &req.node).await?;
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| default_claim_name(&req.node, jiff::Timestamp::now()));
    plan_claim(req, &facts, name)
}

/// Creates the claim of the plan (server-side dry run when `dry_run`).
pub async fn create(
    cluster: &Cluster,
    plan: &ClaimPlan,
    dry_run: bool,
) -> Result<LocalDiskClaim, AdminError> {
    let claim = LocalDiskClaim {
        metadata: ObjectMeta {
            name: Some(plan.claim_name.clone()),
            labels: Some(BTreeMap::from([(
                hwameistor_api::LABEL_NODE.to_string(),
                plan.node.clone(),
            )])),
            ..Default::default()
        },
        spec: plan.spec.clone(),
        status: None,
    };
    let api: Api<LocalDiskClaim> = Api::all(cluster.client.clone());
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    api.create(&params, &claim)
        .await
        .map_err(|e| AdminError::api(format!("creating LocalDiskClaim {}", plan.claim_name), e))
}

/// What `disk claim` reports at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResult {
    pub claim_name: String,
    pub node: String,
    pub dry_run: bool,
    pub phase: Option<ClaimPhase>,
    pub bound_disks: Vec<String>,
    pub capacity_bytes: Option<i64>,
    pub message: Option<String>,
    pub pools: Vec<PoolGrowth>,
}

impl Render for ClaimResult {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let phase = match (self.dry_run, self.phase) {
            (true, _) => "dry run: not created".to_string(),
            (false, Some(p)) => format!("{p:?}"),
            (false, None) => "-".into(),
        };
        let mut t = TableView::new(&["CLAIM", "NODE", "PHASE", "DISKS", "CAPACITY", "MESSAGE"]);
        t.push(vec![
            self.claim_name.clone(),
            self.node.clone(),
            phase,
            if self.bound_disks.is_empty() {
                "-".into()
            } else {
                self.bound_disks.join(",")
            },
            size_cell(self.capacity_bytes),
            or_dash(self.message.as_deref()),
        ]);
        vec![t, pools_table(&self.pools)]
    }
}

fn phase_text(c: &LocalDiskClaim) -> String {
    let st = c.status.clone().unwrap_or_default();
    let phase = st
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "waiting for the node agent".into());
    match st.message {
        Some(m) if !m.is_empty() => format!("claim {}: {phase}: {m}", c.name_any()),
        _ => format!("claim {}: {phase}", c.name_any()),
    }
}

/// Follows the claim until Bound (then reads the pools' new size) or Failed or timeout.
pub async fn follow_claim(
    cluster: &Cluster,
    plan: &ClaimPlan,
    timeout: Duration,
    progress: &Progress,
) -> Result<ClaimResult, AdminError> {
    let api: Api<LocalDiskClaim> = Api::all(cluster.client.clone());
    let name = plan.claim_name.clone();
    let what = format!("claim {name} to be Bound");
    let claim = follow(cluster, api, &name, &what, timeout, progress, |c| match c {
        None => Step::Fail(AdminError::ClaimFailed {
            name: name.clone(),
            message: "the claim was deleted".into(),
        }),
        Some(c) => match c.status.as_ref().and_then(|s| s.phase) {
            Some(ClaimPhase::Bound) => Step::Done(c.clone()),
            Some(ClaimPhase::Failed) => Step::Fail(AdminError::ClaimFailed {
                name: name.clone(),
                message: c
                    .status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "no message".into()),
            }),
            _ => Step::Wait(phase_text(c)),
        },
    })
    .await?;
    // The agent publishes the pools' new size before it marks the claim Bound.
    let node: Option<LocalStorageNode> = get_opt(cluster, &plan.node).await?;
    let pools = plan
        .pools
        .iter()
        .map(|p| PoolGrowth {
            after_bytes: pool_total(node.as_ref(), &p.pool),
            ..p.clone()
        })
        .collect();
    let st = claim.status.clone().unwrap_or_default();
    Ok(ClaimResult {
        claim_name: name,
        node: plan.node.clone(),
        dry_run: false,
        phase: st.phase,
        bound_disks: st.bound_disks,
        capacity_bytes: st.capacity_bytes,
        message: st.message,
        pools,
    })
}

/// The result of a dry run: the plan, nothing created.
pub fn dry_run_result(plan: &ClaimPlan) -> ClaimResult {
    ClaimResult {
        claim_name: plan.claim_name.clone(),
        node: plan.node.clone(),
        dry_run: true,
        phase: None,
        bound_disks: plan.selected().map(|d| d.name.clone()).collect(),
        capacity_bytes: Some(plan.total_bytes),
        message: None,
        pools: plan.pools.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_object_names() {
        let t: jiff::Timestamp = "2025-03-04T05:06:07Z".parse().unwrap();
        assert_eq!(default_claim_name("Node_A", t), "node-a-20250304050607");
        assert!(default_claim_name(&"n".repeat(300), t).len() <= 253);
    }
}
