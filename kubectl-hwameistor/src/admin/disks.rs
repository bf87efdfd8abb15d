//! `disk list`, `disk reserve`, `disk release`: LocalDisks as rows, and why each disk that
//! is not Available is not.

use super::lookup::{list_all, node_facts};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{DiskPhase, DiskPresence, LocalDisk, LocalStorageNode};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::Serialize;

/// One disk as `disk list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskRow {
    pub node: String,
    pub name: String,
    pub device: Option<String>,
    pub disk_type: Option<String>,
    pub capacity_bytes: Option<i64>,
    pub state: Option<String>,
    pub phase: Option<String>,
    pub claim: Option<String>,
    /// The raw-disk volume (LocalDiskVolume) the whole disk serves.
    pub volume: Option<String>,
    pub reserved: bool,
    /// Why the disk is not Available; None when it is.
    pub reason: Option<String>,
    pub pool: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
    pub by_id: Option<String>,
}

/// Why a disk cannot be claimed right now: the node agent's own rule, shared through the
/// API crate, so the plan the CLI shows is what the agent will do.
pub fn unavailability(d: &LocalDisk) -> Option<String> {
    hwameistor_api::disk_unavailability(d)
}

fn phase_str(p: Option<DiskPhase>) -> &'static str {
    match p {
        Some(DiskPhase::Available) => "Available",
        Some(DiskPhase::Unavailable) => "Unavailable",
        Some(DiskPhase::Reserved) => "Reserved",
        Some(DiskPhase::Bound) => "Bound",
        None => "Unknown",
    }
}

pub fn disk_row(d: &LocalDisk) -> DiskRow {
    let st = d.status.clone().unwrap_or_default();
    DiskRow {
        node: d.spec.node_name.clone(),
        name: d.name_any(),
        device: st.device_path.clone(),
        disk_type: st.disk_type.map(|t| t.as_str().to_string()),
        capacity_bytes: st.capacity_bytes,
        state: st.state.map(|s| match s {
            DiskPresence::Active => "Active".to_string(),
            DiskPresence::Inactive => "Inactive".to_string(),
        }),
        phase: st.phase.map(|p| phase_str(Some(p)).to_string()),
        claim: d.spec.claim_ref.as_ref().map(|c| c.name.clone()),
        volume: d.spec.volume_ref.as_ref().map(|v| v.name.clone()),
        reserved: d.spec.reserved,
        reason: unavailability(d),
        pool: st.pool.clone(),
        serial: st.serial.clone(),
        wwn: st.wwn.clone(),
        model: st.model.clone(),
        by_id: st
            .dev_links
            .iter()
            .find(|l| l.starts_with("/dev/disk/by-id/"))
            .cloned(),
    }
}

impl DiskRow {
    /// Who uses the disk, as `ldc/CLAIM` (a pool's claim) or `ldv/VOLUME` (a raw-disk
    /// volume).
    pub fn owner(&self) -> Option<String> {
        self.claim
            .as_ref()
            .map(|c| format!("ldc/{c}"))
            .or_else(|| self.volume.as_ref().map(|v| format!("ldv/{v}")))
    }
}

/// The result of `disk list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiskList {
    pub items: Vec<DiskRow>,
}

/// Rows for the disks of one node (or all), sorted by node then name. Pure: the bench
/// renders from this without a cluster.
pub fn disk_list(disks: &[LocalDisk], node: Option<&str>) -> DiskList {
    let mut items: Vec<DiskRow> = disks
        .iter()
        .filter(|d| node.is_none_or(|n| d.spec.node_name == n))
        .map(disk_row)
        .collect();
    items.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
    DiskList { items }
}

pub fn size_cell(bytes: Option<i64>) -> String {
    bytes.map(format_size).unwrap_or_else(|| "-".into())
}

impl Render for DiskList {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let mut headers = vec![
            "NODE", "NAME", "DEVICE", "TYPE", "CAPACITY", "STATE", "PHASE", "OWNER", "REASON",
        ];
        if wide {
            headers.extend(["SERIAL", "WWN", "MODEL", "BY-ID"]);
        }
        let mut t = TableView::new(&headers);
        for d in &self.items {
            let mut row = vec![
                d.node.clone(),
                d.name.clone(),
                or_dash(d.device.as_deref()),
                or_dash(d.disk_type.as_deref()),
                size_cell(d.capacity_bytes),
                or_dash(d.state.as_deref()),
                or_dash(d.phase.as_deref()),
                or_dash(d.owner().as_deref()),
                or_dash(d.reason.as_deref()),
            ];
            if wide {
                row.extend([
                    or_dash(d.serial.as_deref()),
                    or_dash(d.wwn.as_deref()),
                    or_dash(d.model.as_deref()),
                    or_dash(d.by_id.as_deref()),
                ]);
            }
            t.push(row);
        }
        vec![t]
    }

    fn empty_note(&self) -> Option<String> {
        self.items.is_empty().then(|| "No disks found.".to_string())
    }
}

/// `disk list [--node N]`; an unknown node is an error naming the known ones.
pub async fn list_disks(cluster: &Cluster, node: Option<&str>) -> Result<DiskList, AdminError> {
    let disks: Vec<LocalDisk> = list_all(cluster).await?;
    if let Some(n) = node {
        let nodes: Vec<LocalStorageNode> = list_all(cluster).await?;
        node_facts(n, &nodes, &disks)?;
    }
    Ok(disk_list(&disks, node))
}

/// One line of `disk reserve|release` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveRow {
    pub name: String,
    pub node: String,
    pub reserved: bool,
    /// changed, unchanged
    pub result: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveReport {
    pub dry_run: bool,
    pub items: Vec<ReserveRow>,
}

impl Render for ReserveReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["NAME", "NODE", "RESERVED", "RESULT"]);
        for r in &self.items {
            let result = if self.dry_run && r.result == "changed" {
                "would change".to_string()
            } else {
                r.result.clone()
            };
            t.push(vec![
                r.name.clone(),
                r.node.clone(),
                r.reserved.to_string(),
                result,
            ]);
        }
        vec![t]
    }
}

/// Sets or clears `spec.reserved` on the named disks. Every name is checked before any
/// disk is changed, so a typo in the list changes nothing.
pub async fn set_reserved(
    cluster: &Cluster,
    names: &[String],
    reserved: bool,
    dry_run: bool,
) -> Result<ReserveReport, AdminError> {
    let all: Vec<LocalDisk> = list_all(cluster).await?;
    let mut targets = Vec::new();
    for n in names {
        let Some(d) = all.iter().find(|d| d.name_any() == *n) else {
            let mut known: Vec<String> = all.iter().map(|d| d.name_any()).collect();
            known.sort();
            return Err(AdminError::UnknownDisk {
                name: n.clone(),
                node: None,
                known,
            });
        };
        let bound = d.spec.claim_ref.is_some()
            || d.spec.volume_ref.is_some()
            || d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Bound);
        if reserved && bound {
            return Err(AdminError::DiskBound {
                disk: n.clone(),
                owner: d
                    .spec
                    .claim_ref
                    .as_ref()
                    .map(|c| format!("claim {:?}", c.name))
                    .or_else(|| {
                        d.spec
                            .volume_ref
                            .as_ref()
                            .map(|v| format!("disk volume {:?}", v.name))
                    }),
            });
        }
        targets.push(d);
    }
    let api: Api<LocalDisk> = Api::all(cluster.client.clone());
    let params = PatchParams {
        dry_run,
        ..Default::default()
    };
    let patch = serde_json::json!({"spec": {"reserved": reserved}});
    let mut report = ReserveReport {
        dry_run,
        items: Vec::new(),
    };
    for d in targets {
        let name = d.name_any();
        let changed = d.spec.reserved != reserved;
        if changed {
            api.patch(&name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| AdminError::api(format!("updating LocalDisk {name}"), e))?;
        }
        report.items.push(ReserveRow {
            name,
            node: d.spec.node_name.clone(),
            reserved,
            result: if changed { "changed" } else { "unchanged" }.into(),
        });
    }
    Ok(report)
}
