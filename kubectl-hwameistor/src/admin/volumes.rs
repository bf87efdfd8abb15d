//! `volume list|get|expand`: LocalVolumes with their replicas, and growing a volume.

use super::disks::size_cell;
use super::follow::{follow, Step};
use super::lookup::{get_opt, list_all};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalStorageNode, LocalVolume, LocalVolumeReplica, PoolClass, ReplicaState, VolumeState,
};
use hwameistor_core::placement;
use hwameistor_core::sizing::{self, FsType, VolumeAccess};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

fn volume_state(s: Option<VolumeState>) -> Option<String> {
    s.map(|s| format!("{s:?}"))
}

fn replica_state(s: Option<ReplicaState>) -> Option<String> {
    s.map(|s| format!("{s:?}"))
}

/// A replica as listed with its volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRow {
    pub name: String,
    pub node: String,
    pub state: Option<String>,
    /// Absent for a volume without replication (nothing to be in sync with).
    pub synced: Option<bool>,
    pub allocated_bytes: Option<i64>,
    pub device: Option<String>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRow {
    pub name: String,
    pub pool: String,
    pub required_bytes: i64,
    pub allocated_bytes: Option<i64>,
    pub used_bytes: Option<i64>,
    pub replica_number: i64,
    pub replicas: Vec<ReplicaRow>,
    pub state: Option<String>,
    pub published_node: Option<String>,
    pub pvc_namespace: Option<String>,
    pub pvc_name: Option<String>,
    pub message: Option<String>,
}

impl VolumeRow {
    pub fn ready_replicas(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.state.as_deref() == Some("Ready"))
            .count()
    }

    fn pvc(&self) -> String {
        match (&self.pvc_namespace, &self.pvc_name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => "-".into(),
        }
    }
}

fn replica_row(r: &LocalVolumeReplica) -> ReplicaRow {
    let st = r.status.clone().unwrap_or_default();
    ReplicaRow {
        name: r.name_any(),
        node: r.spec.node_name.clone(),
        state: replica_state(st.state),
        synced: st.synced,
        allocated_bytes: st.allocated_capacity_bytes,
        device: st.device_path,
        message: st.message,
    }
}

fn volume_row(v: &LocalVolume, replicas: &[&LocalVolumeReplica]) -> VolumeRow {
    let st = v.status.clone().unwrap_or_default();
    let mut rows: Vec<ReplicaRow> = replicas.iter().map(|r| replica_row(r)).collect();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    VolumeRow {
        name: v.name_any(),
        pool: v.spec.pool_name.clone(),
        required_bytes: v.spec.required_capacity_bytes,
        allocated_bytes: st.allocated_capacity_bytes,
        used_bytes: st.used_capacity_bytes,
        replica_number: v.spec.replica_number,
        replicas: rows,
        state: volume_state(st.state),
        published_node: st.published_node,
        pvc_namespace: v.spec.pvc_namespace.clone(),
        pvc_name: v.spec.pvc_name.clone(),
        message: st.message,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VolumeList {
    pub items: Vec<VolumeRow>,
}

/// Joins volumes with their replicas (by spec.volumeName), sorted by name. Pure.
pub fn volume_list(volumes: &[LocalVolume], replicas: &[LocalVolumeReplica]) -> VolumeList {
    let mut by_volume: HashMap<&str, Vec<&LocalVolumeReplica>> = HashMap::new();
    for r in replicas {
        by_volume
            .entry(r.spec.volume_name.as_str())
            .or_default()
            .push(r);
    }
    let mut items: Vec<VolumeRow> = volumes
        .iter()
        .map(|v| {
            let name = v.name_any();
            volume_row(
                v,
                by_volume
                    .get(name.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            )
        })
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    VolumeList { items }
}

fn volume_table(rows: &[VolumeRow], wide: bool) -> TableView {
    let mut headers = vec![
        "NAME",
        "POOL",
        "CAPACITY",
        "REPLICAS",
        "NODES",
        "STATE",
        "PUBLISHED",
        "PVC",
    ];
    if wide {
        headers.extend(["ALLOCATED", "USED", "MESSAGE"]);
    }
    let mut t = TableView::new(&headers);
    for v in rows {
        let nodes = if v.replicas.is_empty() {
            "-".to_string()
        } else {
            v.replicas
                .iter()
                .map(|r| format!("{}:{}", r.node, r.state.as_deref().unwrap_or("Unknown")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut row = vec![
            v.name.clone(),
            v.pool.clone(),
            format_size(v.required_bytes),
            format!("{}/{}", v.ready_replicas(), v.replica_number),
            nodes,
            or_dash(v.state.as_deref()),
            or_dash(v.published_node.as_deref()),
            v.pvc(),
        ];
        if wide {
            row.extend([
                size_cell(v.allocated_bytes),
                size_cell(v.used_bytes),
                or_dash(v.message.as_deref()),
            ]);
        }
        t.push(row);
    }
    t
}

impl Render for VolumeList {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        vec![volume_table(&self.items, wide)]
    }

    fn empty_note(&self) -> Option<String> {
        self.items
            .is_empty()
            .then(|| "No volumes found.".to_string())
    }
}

pub async fn list_volumes(cluster: &Cluster) -> Result<VolumeList, AdminError> {
    let volumes: Vec<LocalVolume> = list_all(cluster).await?;
    let replicas: Vec<LocalVolumeReplica> = list_all(cluster).await?;
    Ok(volume_list(&volumes, &replicas))
}

/// `volume get VOL`: the volume and a table of its replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeDetail {
    pub volume: VolumeRow,
}

impl Render for VolumeDetail {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let mut r = TableView::new(&[
            "REPLICA",
            "NODE",
            "STATE",
            "SYNCED",
            "ALLOCATED",
            "DEVICE",
            "MESSAGE",
        ])
        .titled("Replicas:");
        for x in &self.volume.replicas {
            r.push(vec![
                x.name.clone(),
                x.node.clone(),
                or_dash(x.state.as_deref()),
                x.synced.map_or_else(|| "-".to_string(), |s| s.to_string()),
                size_cell(x.allocated_bytes),
                or_dash(x.device.as_deref()),
                or_dash(x.message.as_deref()),
            ]);
        }
        vec![volume_table(std::slice::from_ref(&self.volume), wide), r]
    }
}

/// Finds a volume by name, or by `pvc-namespace/pvc-name`, which is what users have at hand.
fn find_volume<'a>(volumes: &'a [LocalVolume], key: &str) -> Option<&'a LocalVolume> {
    volumes.iter().find(|v| v.name_any() == key).or_else(|| {
        let (ns, name) = key.split_once('/')?;
        volumes.iter().find(|v| {
            v.spec.pvc_namespace.as_deref() == Some(ns) && v.spec.pvc_name.as_deref() == Some(name)
        })
    })
}

async fn require_volume(cluster: &Cluster, key: &str) -> Result<LocalVolume, AdminError> {
    if !key.contains('/') {
        if let Some(v) = get_opt::<LocalVolume>(cluster, key).await? {
            return Ok(v);
        }
    }
    let volumes: Vec<LocalVolume> = list_all(cluster).await?;
    find_volume(&volumes, key).cloned().ok_or_else(|| {
        let mut known: Vec<String> = volumes.iter().map(|v| v.name_any()).collect();
        known.sort();
        AdminError::UnknownVolume {
            name: key.to_string(),
            known,
        }
    })
}

pub async fn get_volume(cluster: &Cluster, key: &str) -> Result<VolumeDetail, AdminError> {
    let v = require_volume(cluster, key).await?;
    let replicas: Vec<LocalVolumeReplica> = list_all(cluster).await?;
    let mine: Vec<&LocalVolumeReplica> = replicas
        .iter()
        .filter(|r| r.spec.volume_name == v.name_any())
        .collect();
    Ok(VolumeDetail {
        volume: volume_row(&v, &mine),
    })
}

/// What `volume expand` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpandReport {
    pub volume: String,
    pub from_bytes: i64,
    pub to_bytes: i64,
    pub dry_run: bool,
    /// Allocated capacity when the command ended (None when not followed).
    pub allocated_bytes: Option<i64>,
    /// The volume already has (at least) the requested size.
    pub complete: bool,
    pub notes: Vec<String>,
}

impl Render for ExpandReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let result = if self.dry_run {
            "dry run: not changed"
        } else if self.complete {
            "expanded"
        } else {
            "requested"
        };
        let mut t = TableView::new(&["VOLUME", "FROM", "TO", "ALLOCATED", "RESULT"]);
        t.push(vec![
            self.volume.clone(),
            format_size(self.from_bytes),
            format_size(self.to_bytes),
            size_cell(self.allocated_bytes),
            result.into(),
        ]);
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![t, notes]
    }
}

/// The size an expansion to `requested` bytes really asks for (the one size rule of
/// `hwameistor-core`: the filesystem's floor, whole extents) and its notes, or why it is
/// refused: shrinking, or a node of the volume without room for the growth, counted as the
/// controller counts it (volumes placed but not reported yet included). Pure.
pub fn check_expand(
    v: &LocalVolume,
    requested: i64,
    nodes: &[LocalStorageNode],
    volumes: &[LocalVolume],
    replicas: &[LocalVolumeReplica],
) -> Result<(i64, Vec<String>), AdminError> {
    let from = v.spec.required_capacity_bytes;
    let access = match v.spec.fs_type.as_deref().and_then(FsType::parse) {
        Some(fs) => VolumeAccess::Filesystem(fs),
        None => VolumeAccess::Block,
    };
    let to_bytes = sizing::volume_size(requested, 0, access)
        .map_err(|e| AdminError::InvalidArgument(e.to_string()))?;
    if to_bytes < from {
        return Err(AdminError::Shrink {
            volume: v.name_any(),
            current: format_size(from),
            requested: format_size(requested),
        });
    }
    let mut notes = Vec::new();
    if to_bytes != requested {
        notes.push(format!(
            "{} rounded up to {} (whole 4 MiB extents, and the filesystem's minimum)",
            format_size(requested),
            format_size(to_bytes)
        ));
    }
    if let (Some(config), Some(class)) =
        (&v.spec.config, PoolClass::from_pool_name(&v.spec.pool_name))
    {
        let views = placement::node_views(nodes);
        let placed = placement::placed_replicas(volumes, replicas);
        for r in &config.replicas {
            placement::check_growth(&views, &r.hostname, class, &placed, &v.name_any(), to_bytes)
                .map_err(|e| AdminError::NoRoom {
                volume: v.name_any(),
                reason: e.to_string(),
            })?;
        }
    } else {
        notes.push("the volume is not placed yet: it will be created at the new size".into());
    }
    if v.spec.pvc_name.is_some() {
        notes.push(
            "the PVC keeps its requested size; resizing through the PVC (kubectl patch pvc) also grows the filesystem"
                .into(),
        );
    }
    Ok((to_bytes, notes))
}

/// `volume expand VOL SIZE`: patch spec.requiredCapacityBytes, then (when `follow`) wait
/// until the allocated capacity reaches it.
pub async fn expand_volume(
    cluster: &Cluster,
    key: &str,
    to_bytes: i64,
    dry_run: bool,
    follow_timeout: Option<Duration>,
    progress: &Progress,
) -> Result<ExpandReport, AdminError> {
    let v = require_volume(cluster, key).await?;
    let name = v.name_any();
    let nodes: Vec<LocalStorageNode> = list_all(cluster).await?;
    let volumes: Vec<LocalVolume> = list_all(cluster).await?;
    let replicas: Vec<LocalVolumeReplica> = list_all(cluster).await?;
    let (to_bytes, notes) = check_expand(&v, to_bytes, &nodes, &volumes, &replicas)?;
    let from = v.spec.required_capacity_bytes;
    let allocated = v.status.as_ref().and_then(|s| s.allocated_capacity_bytes);
    let mut report = ExpandReport {
        volume: name.clone(),
        from_bytes: from,
        to_bytes,
        dry_run,
        allocated_bytes: allocated,
        complete: false,
        notes,
    };
    if to_bytes == from {
        report.complete = allocated.is_some_and(|a| a >= to_bytes);
        report.notes.insert(
            0,
            format!(
                "volume {name} already requires {}; nothing to change",
                format_size(from)
            ),
        );
        return Ok(report);
    }
    let api: Api<LocalVolume> = Api::all(cluster.client.clone());
    let params = PatchParams {
        dry_run,
        ..Default::default()
    };
    let patch = serde_json::json!({"spec": {"requiredCapacityBytes": to_bytes}});
    api.patch(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| AdminError::api(format!("updating LocalVolume {name}"), e))?;
    if dry_run {
        return Ok(report);
    }
    let Some(timeout) = follow_timeout else {
        return Ok(report);
    };
    let what = format!("volume {name} to reach {}", format_size(to_bytes));
    let reached = follow(cluster, api, &name, &what, timeout, progress, |v| match v {
        None => Step::Fail(AdminError::UnknownVolume {
            name: name.clone(),
            known: vec![],
        }),
        Some(v) => {
            let st = v.status.clone().unwrap_or_default();
            match st.allocated_capacity_bytes {
                Some(a) if a >= to_bytes => Step::Done(a),
                a => Step::Wait(format!(
                    "volume {name}: {} allocated of {} ({})",
                    size_cell(a),
                    format_size(to_bytes),
                    st.state
                        .map(|s| format!("{s:?}"))
                        .unwrap_or_else(|| "no state".into())
                )),
            }
        }
    })
    .await?;
    report.allocated_bytes = Some(reached);
    report.complete = true;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{
        LocalStorageNodeSpec, LocalStorageNodeStatus, LocalVolumeSpec, NodeState, PoolStatus,
        ReplicaAssignment, VolumeConfig,
    };
    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;

    fn node(name: &str, total: i64, free: i64) -> LocalStorageNode {
        let mut n = LocalStorageNode::new(
            name,
            LocalStorageNodeSpec {
                hostname: name.into(),
                storage_ip: None,
            },
        );
        let class = PoolClass::Hdd;
        n.status = Some(LocalStorageNodeStatus {
            state: Some(NodeState::Ready),
            pools: [(
                class.pool_name().to_string(),
                PoolStatus {
                    name: class.pool_name().into(),
                    class,
                    total_capacity_bytes: total,
                    used_capacity_bytes: total - free,
                    free_capacity_bytes: free,
                    extent_size_bytes: 4 * MI,
                    volume_count: 0,
                    disks: vec![],
                },
            )]
            .into(),
            ..Default::default()
        });
        n
    }

    fn volume(name: &str, bytes: i64, on: Option<&str>) -> LocalVolume {
        let mut v = LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: PoolClass::Hdd.pool_name().into(),
                volume_kind: Default::default(),
                required_capacity_bytes: bytes,
                replica_number: 1,
                convertible: false,
                accessibility: Default::default(),
                pvc_namespace: None,
                pvc_name: None,
                fs_type: Some("xfs".into()),
                config: None,
                split_brain_resolution: None,
            },
        );
        v.spec.config = on.map(|n| VolumeConfig {
            version: 1,
            required_capacity_bytes: bytes,
            resource_id: -1,
            replicas: vec![ReplicaAssignment {
                id: 1,
                hostname: n.into(),
                ip: None,
                ..Default::default()
            }],
            initial: false,
        });
        v
    }

    #[test]
    fn sizes_follow_the_core_rule_and_shrinking_is_refused() {
        let v = volume("v", GI, Some("n1"));
        let nodes = [node("n1", 10 * GI, 5 * GI)];
        let (to, notes) =
            check_expand(&v, GI + 1, &nodes, std::slice::from_ref(&v), &[]).expect("fits");
        assert_eq!(to, GI + 4 * MI, "whole extents");
        assert!(notes[0].contains("rounded up"), "{notes:?}");
        let e =
            check_expand(&v, GI / 2, &nodes, std::slice::from_ref(&v), &[]).expect_err("shrink");
        assert!(matches!(e, AdminError::Shrink { .. }), "{e}");
    }

    #[test]
    fn room_counts_volumes_placed_but_not_reported() {
        let v = volume("v", GI, Some("n1"));
        // v's 1 GiB exists (its replica reports it). The node reports 3 GiB free, but another
        // volume of 2 GiB was placed there and its logical volume does not exist yet: only
        // 1 GiB of growth fits.
        let mut r = LocalVolumeReplica::new(
            "v-n1",
            hwameistor_api::LocalVolumeReplicaSpec {
                volume_name: "v".into(),
                pool_name: PoolClass::Hdd.pool_name().into(),
                node_name: "n1".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: GI,
                replication: None,
            },
        );
        r.status = Some(hwameistor_api::LocalVolumeReplicaStatus {
            allocated_capacity_bytes: Some(GI),
            ..Default::default()
        });
        let pending = volume("other", 2 * GI, Some("n1"));
        let nodes = [node("n1", 10 * GI, 3 * GI)];
        let all = [v.clone(), pending];
        let replicas = [r];
        check_expand(&v, 2 * GI, &nodes, &all, &replicas).expect("1 GiB more fits");
        let e = check_expand(&v, 3 * GI, &nodes, &all, &replicas).expect_err("2 GiB more does not");
        assert!(matches!(e, AdminError::NoRoom { .. }), "{e}");
        assert!(e.to_string().contains("n1"), "{e}");
    }

    #[test]
    fn an_unplaced_volume_just_grows() {
        let v = volume("v", GI, None);
        let (to, notes) = check_expand(&v, 2 * GI, &[], std::slice::from_ref(&v), &[]).expect("ok");
        assert_eq!(to, 2 * GI);
        assert!(
            notes.iter().any(|n| n.contains("not placed yet")),
            "{notes:?}"
        );
    }
}
