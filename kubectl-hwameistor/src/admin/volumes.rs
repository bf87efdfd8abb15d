//! `volume list|get|expand`: LocalVolumes with their replicas, and growing a volume (a
//! LocalVolumeExpand the controller carries out).

use super::disks::size_cell;
use super::lookup::{get_opt, list_all};
use super::operations;
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use hwameistor_api::quantity::format_size;
use hwameistor_api::replica::replica_name;
use hwameistor_api::{
    HaState, LocalDiskVolume, LocalStorageNode, LocalVolume, LocalVolumeExpand,
    LocalVolumeExpandSpec, LocalVolumeReplica, OperationPhase, PoolClass, ReplicaAssignment,
    ReplicaState, VolumeConfig, VolumeDataSource, VolumeState,
};
use hwameistor_core::sizing::{self, FsType, VolumeAccess};
use hwameistor_core::{ha, placement};
use kube::ResourceExt;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

fn volume_state(s: Option<VolumeState>) -> Option<String> {
    s.map(|s| format!("{s:?}"))
}

fn replica_state(s: Option<ReplicaState>) -> Option<String> {
    s.map(|s| format!("{s:?}"))
}

/// A replica as listed with its volume. An HA volume also gets a row, marked `missing`, for
/// each node its config places a replica on that has no LocalVolumeReplica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// The volume's config places a replica on this node but no LocalVolumeReplica exists
    /// (not created yet, or deleted); the name is the one it gets.
    pub missing: bool,
    /// HA volumes (absent otherwise): the volume's config allows this replica to be primary.
    pub allowed_primary: Option<bool>,
    /// HA volumes: the volume's config records this replica outdated (fenced: it may lack
    /// writes its peer acknowledged, and is never promoted until it has resynced).
    pub outdated: Option<bool>,
    /// What the replication layer (DRBD) reports, in its own words; absent when it reports
    /// nothing (no replication, or the resource is not up).
    pub role: Option<String>,
    pub disk_state: Option<String>,
    pub connection_state: Option<String>,
    pub peer_role: Option<String>,
    pub peer_disk_state: Option<String>,
    /// Resync progress while one runs, e.g. `42.5%`.
    pub sync_progress: Option<String>,
    pub out_of_sync_bytes: Option<i64>,
    /// I/O is frozen, waiting for the peer to be fenced.
    pub suspended: Option<bool>,
    pub split_brain: Option<bool>,
}

impl ReplicaRow {
    /// The replica's state as a cell: `Missing` for a replica the config wants but that
    /// does not exist.
    pub fn state_cell(&self) -> String {
        if self.missing {
            "Missing".into()
        } else {
            or_dash(self.state.as_deref())
        }
    }

    /// What the volume's config assigns this replica: `primary` (allowed to serve),
    /// `secondary`, or `outdated` (fenced); `-` for a volume without replication.
    pub fn assigned_cell(&self) -> String {
        match (self.allowed_primary, self.outdated) {
            (Some(true), Some(true)) => "primary,outdated".into(),
            (Some(true), _) => "primary".into(),
            (_, Some(true)) => "outdated".into(),
            (Some(false), _) => "secondary".into(),
            _ => "-".into(),
        }
    }

    /// Resync progress and bytes out of sync, e.g. `42.5%, 1Gi out of sync`; None when in
    /// sync or unknown.
    pub fn sync_text(&self) -> Option<String> {
        let behind = self
            .out_of_sync_bytes
            .filter(|b| *b > 0)
            .map(|b| format!("{} out of sync", format_size(b)));
        match (self.sync_progress.clone(), behind) {
            (Some(p), Some(b)) => Some(format!("{p}, {b}")),
            (p, b) => p.or(b),
        }
    }

    /// Conditions worth flagging: split brain, frozen I/O, missing.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.missing {
            f.push("missing (no LocalVolumeReplica)");
        }
        if self.split_brain == Some(true) {
            f.push("split brain");
        }
        if self.suspended == Some(true) {
            f.push("I/O suspended");
        }
        f
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRow {
    pub name: String,
    /// `LVM` (a LocalVolume: logical volumes, maybe replicated) or `Disk` (a
    /// LocalDiskVolume: one whole disk).
    pub kind: String,
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
    /// HA volumes: how the copies stand (`Healthy`, `Syncing`, `Degraded`, `SplitBrain`), as
    /// the controller reports it (computed by the same rule while it has not yet); absent
    /// for a volume without replication.
    pub ha_state: Option<HaState>,
    /// A split-brain resolution waiting to be carried out: the node whose data is kept.
    pub split_brain_keep: Option<String>,
    /// Created convertible and running DRBD on its one node: one copy, convertible to HA
    /// online (`volume convert`).
    pub convertible: bool,
    /// The LocalVolumeGroup it belongs to (volumes pods use together).
    pub group: Option<String>,
}

impl VolumeRow {
    pub fn ready_replicas(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.state.as_deref() == Some("Ready"))
            .count()
    }

    /// `namespace/name` of the PVC, or `-`.
    pub fn pvc(&self) -> String {
        match (&self.pvc_namespace, &self.pvc_name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => "-".into(),
        }
    }

    /// Whether the volume is replicated (HA).
    pub fn is_ha(&self) -> bool {
        self.ha_state.is_some()
    }

    /// In split brain: the HA state says so, or a replica reports one (before the
    /// controller summed it up).
    pub fn in_split_brain(&self) -> bool {
        self.ha_state == Some(HaState::SplitBrain)
            || self.replicas.iter().any(|r| r.split_brain == Some(true))
    }

    /// The HA state as a cell, `-` for a volume without replication.
    pub fn ha_cell(&self) -> String {
        match self.ha_state {
            Some(h) => format!("{h:?}"),
            None if self.convertible => "Convertible".into(),
            None => "-".into(),
        }
    }

    /// The node whose replica the config allows to be primary.
    pub fn allowed_primary(&self) -> Option<&str> {
        self.replicas
            .iter()
            .find(|r| r.allowed_primary == Some(true))
            .map(|r| r.node.as_str())
    }

    /// Where a resync stands, per replica being synced: `node-b from node-a: 42.5%, 1Gi out
    /// of sync`; replicas reporting progress otherwise when no side says it is the target.
    pub fn resync_progress(&self) -> Vec<String> {
        use hwameistor_core::drbd::ConnState::{PausedSyncT, StartingSyncT, SyncTarget, WFBitMapT};
        let target = |r: &&ReplicaRow| {
            r.connection_state
                .as_deref()
                .and_then(hwameistor_core::drbd::ConnState::parse)
                .is_some_and(|c| matches!(c, StartingSyncT | WFBitMapT | SyncTarget | PausedSyncT))
        };
        let targets: Vec<String> = self
            .replicas
            .iter()
            .filter(target)
            .map(|r| {
                let from: Vec<&str> = self
                    .replicas
                    .iter()
                    .map(|p| p.node.as_str())
                    .filter(|p| *p != r.node)
                    .collect();
                let what = r
                    .sync_text()
                    .unwrap_or_else(|| r.connection_state.clone().unwrap_or_default());
                format!("{} from {}: {what}", r.node, from.join(", "))
            })
            .collect();
        if !targets.is_empty() {
            return targets;
        }
        self.replicas
            .iter()
            .filter_map(|r| r.sync_text().map(|t| format!("{}: {t}", r.node)))
            .collect()
    }

    /// The command that resolves this volume's split brain, with the nodes to choose from.
    pub fn resolve_command(&self) -> String {
        let nodes: Vec<&str> = self.replicas.iter().map(|r| r.node.as_str()).collect();
        format!(
            "kubectl hwameistor volume resolve-split-brain {} --keep <{}>",
            self.name,
            nodes.join("|")
        )
    }
}

fn replica_row(r: &LocalVolumeReplica, config: Option<&VolumeConfig>) -> ReplicaRow {
    let st = r.status.clone().unwrap_or_default();
    let assigned = config.and_then(|c| c.replicas.iter().find(|a| a.hostname == r.spec.node_name));
    let rep = st.replication;
    ReplicaRow {
        name: r.name_any(),
        node: r.spec.node_name.clone(),
        state: replica_state(st.state),
        synced: st.synced,
        allocated_bytes: st.allocated_capacity_bytes,
        device: st.device_path,
        message: st.message,
        missing: false,
        allowed_primary: config.map(|_| assigned.is_some_and(|a| a.primary)),
        outdated: config.map(|_| assigned.is_some_and(|a| a.outdated)),
        role: rep.as_ref().map(|x| x.role.clone()),
        disk_state: rep.as_ref().map(|x| x.disk_state.clone()),
        connection_state: rep.as_ref().map(|x| x.connection_state.clone()),
        peer_role: rep.as_ref().and_then(|x| x.peer_role.clone()),
        peer_disk_state: rep.as_ref().and_then(|x| x.peer_disk_state.clone()),
        sync_progress: rep.as_ref().and_then(|x| x.sync_progress.clone()),
        out_of_sync_bytes: rep.as_ref().map(|x| x.out_of_sync_bytes),
        suspended: rep.as_ref().map(|x| x.suspended),
        split_brain: rep.as_ref().map(|x| x.split_brain),
    }
}

/// The row of a replica an HA volume's config places on a node that has none.
fn missing_row(volume: &str, a: &ReplicaAssignment) -> ReplicaRow {
    ReplicaRow {
        name: replica_name(volume, &a.hostname),
        node: a.hostname.clone(),
        missing: true,
        allowed_primary: Some(a.primary),
        outdated: Some(a.outdated),
        ..Default::default()
    }
}

/// One volume and its replicas as a row. Pure.
pub fn volume_row(v: &LocalVolume, replicas: &[&LocalVolumeReplica]) -> VolumeRow {
    let st = v.status.clone().unwrap_or_default();
    let name = v.name_any();
    let ha_config = v.spec.config.as_ref().filter(|c| ha::is_ha(c));
    let live: Vec<&LocalVolumeReplica> = replicas
        .iter()
        .copied()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    let mut rows: Vec<ReplicaRow> = replicas.iter().map(|r| replica_row(r, ha_config)).collect();
    if let Some(c) = ha_config {
        for a in &c.replicas {
            if !live.iter().any(|r| r.spec.node_name == a.hostname) {
                rows.push(missing_row(&name, a));
            }
        }
    }
    rows.sort_by(|a, b| a.node.cmp(&b.node).then(a.missing.cmp(&b.missing)));
    let ha_state = st.ha_state.or_else(|| {
        ha_config.and_then(|c| {
            let owned: Vec<LocalVolumeReplica> = live.iter().map(|r| (*r).clone()).collect();
            ha::ha_state(c, &owned)
        })
    });
    VolumeRow {
        name,
        kind: if v.spec.thin { KIND_LVM_THIN } else { KIND_LVM }.into(),
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
        ha_state,
        split_brain_keep: v
            .spec
            .split_brain_resolution
            .as_ref()
            .map(|r| r.keep.clone()),
        convertible: v.spec.convertible && ha_config.is_some_and(ha::alone),
        group: v
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(hwameistor_api::LABEL_VOLUME_GROUP))
            .cloned(),
    }
}

/// The KIND of a LocalVolume's row.
pub const KIND_LVM: &str = "LVM";
/// The KIND of a thin LocalVolume's row (in its pool's thin pool).
pub const KIND_LVM_THIN: &str = "LVM-thin";
/// The KIND of a LocalDiskVolume's row.
pub const KIND_DISK: &str = "Disk";

/// A raw-disk volume (LocalDiskVolume) as a row: one whole disk of one node, shown as the
/// disk's single "replica". Its pool is named as the original names raw-disk pools
/// (`LocalDisk_Pool<type>`). Pure.
pub fn disk_volume_row(v: &LocalDiskVolume) -> VolumeRow {
    let st = v.status.clone().unwrap_or_default();
    let state = st.state.map(|s| format!("{s:?}"));
    let replica = ReplicaRow {
        name: st.local_disk_name.clone().unwrap_or_default(),
        node: v.spec.node_name.clone(),
        state: state.clone(),
        allocated_bytes: st.capacity_bytes,
        device: st.device_path.clone(),
        message: st.message.clone(),
        ..Default::default()
    };
    VolumeRow {
        name: v.name_any(),
        kind: KIND_DISK.into(),
        pool: format!("LocalDisk_Pool{}", v.spec.disk_type),
        required_bytes: v.spec.required_capacity_bytes,
        allocated_bytes: st.capacity_bytes,
        used_bytes: None,
        replica_number: 1,
        replicas: if st.local_disk_name.is_some() {
            vec![replica]
        } else {
            Vec::new()
        },
        state,
        published_node: st.published_node.clone(),
        pvc_namespace: v.spec.pvc_namespace.clone(),
        pvc_name: v.spec.pvc_name.clone(),
        message: st.message,
        ha_state: None,
        split_brain_keep: None,
        convertible: false,
        group: None,
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
        "KIND",
        "POOL",
        "CAPACITY",
        "REPLICAS",
        "NODES",
        "STATE",
        "HA",
        "PUBLISHED",
        "PVC",
        "GROUP",
    ];
    if wide {
        headers.extend(["ALLOCATED", "USED", "PRIMARY", "MESSAGE"]);
    }
    let mut t = TableView::new(&headers);
    for v in rows {
        let nodes = if v.replicas.is_empty() {
            "-".to_string()
        } else {
            v.replicas
                .iter()
                .map(|r| {
                    let state = if r.missing {
                        "Missing"
                    } else {
                        r.state.as_deref().unwrap_or("Unknown")
                    };
                    format!("{}:{state}", r.node)
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut row = vec![
            v.name.clone(),
            v.kind.clone(),
            v.pool.clone(),
            format_size(v.required_bytes),
            format!("{}/{}", v.ready_replicas(), v.replica_number),
            nodes,
            or_dash(v.state.as_deref()),
            v.ha_cell(),
            or_dash(v.published_node.as_deref()),
            v.pvc(),
            or_dash(v.group.as_deref()),
        ];
        if wide {
            row.extend([
                size_cell(v.allocated_bytes),
                size_cell(v.used_bytes),
                or_dash(v.allowed_primary()),
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
    let mut list = volume_list(&volumes, &replicas);
    // An installation from before raw-disk volumes has no LocalDiskVolume CRD: none then.
    let disk_volumes: Vec<LocalDiskVolume> = match list_all(cluster).await {
        Ok(v) => v,
        Err(AdminError::NotInstalled) => Vec::new(),
        Err(e) => return Err(e),
    };
    list.items.extend(disk_volumes.iter().map(disk_volume_row));
    list.items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// `volume get VOL`: the volume and a table of its replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeDetail {
    pub volume: VolumeRow,
    /// Where a restored or cloned volume's data came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source: Option<DataSourceRow>,
    /// Its snapshots (LVM volumes only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<super::snapshots::SnapshotRow>,
}

impl Render for VolumeDetail {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let v = &self.volume;
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
        for x in &v.replicas {
            r.push(vec![
                x.name.clone(),
                x.node.clone(),
                x.state_cell(),
                x.synced.map_or_else(|| "-".to_string(), |s| s.to_string()),
                size_cell(x.allocated_bytes),
                or_dash(x.device.as_deref()),
                or_dash(x.message.as_deref()),
            ]);
        }
        let mut tables = vec![volume_table(std::slice::from_ref(v), wide), r];
        if let Some(d) = &self.data_source {
            let mut t = TableView::new(&["SNAPSHOT", "NODE", "CLONE-OF", "FILLED"])
                .titled("Restored from:");
            t.push(vec![
                d.snapshot.clone(),
                d.node.clone(),
                or_dash(d.clone_of.as_deref()),
                d.filled.clone(),
            ]);
            tables.push(t);
        }
        if !self.snapshots.is_empty() {
            tables
                .push(super::snapshots::snapshot_table(&self.snapshots, wide).titled("Snapshots:"));
        }
        if v.is_ha() {
            tables.push(replication_table(v));
            let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
            for n in ha_notes(v) {
                notes.push(vec![n]);
            }
            tables.push(notes);
        }
        tables
    }
}

/// A restored or cloned volume's source and how filling it stands.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceRow {
    pub snapshot: String,
    pub node: String,
    pub clone_of: Option<String>,
    pub filled: String,
}

/// How filling a volume restored from `ds` stands, from its replicas' copy reports. Pure.
pub fn data_source_row(ds: &VolumeDataSource, replicas: &[&LocalVolumeReplica]) -> DataSourceRow {
    let copy = replicas
        .iter()
        .filter_map(|r| r.status.as_ref().and_then(|s| s.copy.as_ref()))
        .find(|c| c.operation_uid == ds.snapshot_uid);
    let filled = match copy {
        None => "not started".to_string(),
        Some(c) if c.verified && c.lvm_clone => "done (an LVM thin clone, nothing copied)".into(),
        Some(c) if c.verified => format!(
            "done, {} copied and verified{}",
            format_size(c.bytes_done),
            c.digest
                .as_deref()
                .map(|d| format!(" (digest {})", &d[..d.len().min(16)]))
                .unwrap_or_default()
        ),
        Some(c) => {
            let pct = if c.bytes_total > 0 {
                c.bytes_done * 100 / c.bytes_total
            } else {
                0
            };
            format!(
                "copying: {} of {} ({pct}%){}",
                format_size(c.bytes_done),
                format_size(c.bytes_total),
                c.error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )
        }
    };
    DataSourceRow {
        snapshot: ds.snapshot.clone(),
        node: ds.node.clone(),
        clone_of: ds.clone_of.clone(),
        filled,
    }
}

/// An HA volume's replicas as the replication layer sees them, with what the volume's
/// config assigns each.
fn replication_table(v: &VolumeRow) -> TableView {
    let title = format!("Replication (HA {}):", v.ha_cell());
    let mut t = TableView::new(&[
        "NODE",
        "ASSIGNED",
        "ROLE",
        "DISK",
        "CONNECTION",
        "PEER-ROLE",
        "PEER-DISK",
        "SYNC",
        "FLAGS",
    ])
    .titled(title);
    for x in &v.replicas {
        let mut flags: Vec<String> = x.flags().into_iter().map(str::to_string).collect();
        match v.split_brain_keep.as_deref() {
            Some(k) if k == x.node => flags.push("data kept (resolution)".into()),
            Some(_) => flags.push("changes discarded (resolution)".into()),
            None => {}
        }
        t.push(vec![
            x.node.clone(),
            x.assigned_cell(),
            or_dash(x.role.as_deref()),
            or_dash(x.disk_state.as_deref()),
            or_dash(x.connection_state.as_deref()),
            or_dash(x.peer_role.as_deref()),
            or_dash(x.peer_disk_state.as_deref()),
            or_dash(x.sync_text().as_deref()),
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join(", ")
            },
        ]);
    }
    t
}

/// What an operator should know about an HA volume's state, and what to do. Pure.
pub fn ha_notes(v: &VolumeRow) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(keep) = &v.split_brain_keep {
        let others: Vec<&str> = v
            .replicas
            .iter()
            .map(|r| r.node.as_str())
            .filter(|n| n != keep)
            .collect();
        notes.push(format!(
            "split-brain resolution pending: the data of {keep} is kept; the changes of {} since the split are discarded and it resyncs from {keep}; the controller clears the resolution once they are connected again",
            others.join(", ")
        ));
    } else if v.in_split_brain() {
        notes.push(format!(
            "split brain: both replicas were primary while disconnected and hold different data; nothing was discarded. Choose the node whose data to keep: {}",
            v.resolve_command()
        ));
    }
    for r in &v.replicas {
        if r.suspended == Some(true) {
            notes.push(format!(
                "I/O on {} is suspended: frozen until its peer is recorded outdated (fenced)",
                r.node
            ));
        }
    }
    notes
}

/// Finds a volume by name, or by `pvc-namespace/pvc-name`, which is what users have at hand.
pub fn find_volume<'a>(volumes: &'a [LocalVolume], key: &str) -> Option<&'a LocalVolume> {
    volumes.iter().find(|v| v.name_any() == key).or_else(|| {
        let (ns, name) = key.split_once('/')?;
        volumes.iter().find(|v| {
            v.spec.pvc_namespace.as_deref() == Some(ns) && v.spec.pvc_name.as_deref() == Some(name)
        })
    })
}

/// Reads a volume by name, or by `NAMESPACE/PVC`; an unknown one fails naming those that
/// exist.
pub async fn require_volume(cluster: &Cluster, key: &str) -> Result<LocalVolume, AdminError> {
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
    let v = match require_volume(cluster, key).await {
        Ok(v) => v,
        // Not an LVM volume: maybe a raw-disk one (by name or NAMESPACE/PVC).
        Err(AdminError::UnknownVolume { name, mut known }) => {
            let disks: Vec<LocalDiskVolume> = match list_all(cluster).await {
                Ok(d) => d,
                Err(AdminError::NotInstalled) => Vec::new(),
                Err(e) => return Err(e),
            };
            let pvc = |d: &LocalDiskVolume| {
                format!(
                    "{}/{}",
                    d.spec.pvc_namespace.as_deref().unwrap_or_default(),
                    d.spec.pvc_name.as_deref().unwrap_or_default()
                )
            };
            if let Some(d) = disks.iter().find(|d| d.name_any() == key || pvc(d) == key) {
                return Ok(VolumeDetail {
                    volume: disk_volume_row(d),
                    data_source: None,
                    snapshots: Vec::new(),
                });
            }
            known.extend(disks.iter().map(|d| d.name_any()));
            known.sort();
            return Err(AdminError::UnknownVolume { name, known });
        }
        Err(e) => return Err(e),
    };
    let replicas: Vec<LocalVolumeReplica> = list_all(cluster).await?;
    let mine: Vec<&LocalVolumeReplica> = replicas
        .iter()
        .filter(|r| r.spec.volume_name == v.name_any())
        .collect();
    Ok(VolumeDetail {
        volume: volume_row(&v, &mine),
        data_source: v
            .spec
            .data_source
            .as_ref()
            .map(|d| data_source_row(d, &mine)),
        snapshots: super::snapshots::of_volume(cluster, &v.name_any()).await?,
    })
}

/// What `volume expand` did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpandReport {
    pub volume: String,
    pub from_bytes: i64,
    pub to_bytes: i64,
    pub dry_run: bool,
    /// Allocated capacity when the command ended (None when not followed).
    pub allocated_bytes: Option<i64>,
    /// The volume has (at least) the requested size.
    pub complete: bool,
    /// The LocalVolumeExpand created (a dry run: the name the server accepted).
    pub operation: Option<String>,
    /// Its phase when the command ended (None when not followed).
    pub phase: Option<OperationPhase>,
    /// Its last message.
    pub message: Option<String>,
    pub notes: Vec<String>,
}

impl ExpandReport {
    /// 0 unless the expansion was followed and ended without succeeding.
    pub fn exit_code(&self) -> i32 {
        match self.phase {
            Some(OperationPhase::Failed | OperationPhase::Aborted) => 1,
            _ => 0,
        }
    }
}

impl Render for ExpandReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let result = match self.phase {
            _ if self.dry_run => "dry run: not changed".to_string(),
            _ if self.complete => "expanded".to_string(),
            Some(p) => format!("{p:?}"),
            None => "requested".to_string(),
        };
        let mut t = TableView::new(&["VOLUME", "FROM", "TO", "ALLOCATED", "OPERATION", "RESULT"]);
        t.push(vec![
            self.volume.clone(),
            format_size(self.from_bytes),
            format_size(self.to_bytes),
            size_cell(self.allocated_bytes),
            or_dash(self.operation.as_deref()),
            result,
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

/// `volume expand VOL SIZE`: checks the growth (never a shrink, room on every node of the
/// volume, no other operation on it), creates a LocalVolumeExpand the controller carries
/// out online, and (when `follow`) follows it to its end.
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
        operation: None,
        phase: None,
        message: None,
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
    let operations = operations::list_rows(cluster, None).await?;
    if let Some(e) = operations::busy_error(&v, &operations) {
        return Err(e);
    }
    let created = operations::create_operation(cluster, &name, "expand", dry_run, |op| {
        LocalVolumeExpand::new(
            op,
            LocalVolumeExpandSpec {
                volume_name: name.clone(),
                required_capacity_bytes: to_bytes,
                abort: false,
                ttl_seconds_after_finished: None,
            },
        )
    })
    .await?;
    let op = created.name_any();
    report.operation = Some(op.clone());
    if dry_run {
        report.notes.push(format!(
            "dry run: the server accepted LocalVolumeExpand {op}; nothing was created"
        ));
        return Ok(report);
    }
    let Some(timeout) = follow_timeout else {
        report.notes.push(format!(
            "not followed (--no-wait): `kubectl hwameistor operation get expand/{op}` shows how far it is"
        ));
        return Ok(report);
    };
    let row = operations::follow_one(cluster, &created, timeout, progress).await?;
    report.phase = row.phase;
    report.message = row.message.clone();
    report.allocated_bytes = row.allocated_capacity_bytes.or(report.allocated_bytes);
    report.complete = row.phase == Some(OperationPhase::Succeeded);
    if report.complete {
        // The operation's own record may predate the last report; the volume has the word.
        if let Some(now) = get_opt::<LocalVolume>(cluster, &name)
            .await?
            .and_then(|v| v.status.and_then(|s| s.allocated_capacity_bytes))
        {
            report.allocated_bytes = Some(now);
        }
    } else {
        report.notes.push(format!(
            "LocalVolumeExpand {op} ended {}: {}",
            row.phase_cell(),
            row.message.as_deref().unwrap_or("no message")
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::ha_fixtures::*;
    use super::*;
    use crate::output::{render_tables, Render};
    use hwameistor_api::{
        LocalStorageNodeSpec, LocalStorageNodeStatus, LocalVolumeSpec, NodeState, PoolStatus,
    };
    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;

    #[test]
    fn a_restored_volume_says_where_its_data_came_from_and_how_filling_it_stands() {
        use hwameistor_api::{CopyStatus, LocalVolumeReplicaSpec, LocalVolumeReplicaStatus};
        let ds = VolumeDataSource {
            snapshot: "s1".into(),
            snapshot_uid: "u1".into(),
            node: "n1".into(),
            pool_name: PoolClass::Hdd.pool_name().into(),
            bytes: GI,
            thin: false,
            clone_of: Some("v0".into()),
        };
        let replica = |copy: Option<CopyStatus>| {
            let mut r = LocalVolumeReplica::new(
                "v-n2",
                LocalVolumeReplicaSpec {
                    volume_name: "v".into(),
                    pool_name: PoolClass::Hdd.pool_name().into(),
                    node_name: "n2".into(),
                    volume_kind: Default::default(),
                    required_capacity_bytes: GI,
                    thin: false,
                    replication: None,
                    copy_from: None,
                },
            );
            r.status = Some(LocalVolumeReplicaStatus {
                copy,
                ..Default::default()
            });
            r
        };
        let filled = |copy: Option<CopyStatus>| data_source_row(&ds, &[&replica(copy)]).filled;
        assert_eq!(filled(None), "not started");
        let copying = CopyStatus {
            operation_uid: "u1".into(),
            bytes_done: GI / 4,
            bytes_total: GI,
            error: Some("source not ready".into()),
            ..Default::default()
        };
        assert_eq!(
            filled(Some(copying.clone())),
            "copying: 256Mi of 1Gi (25%); last error: source not ready"
        );
        // Another operation's copy (a later migration) is not this restore's.
        let other = CopyStatus {
            operation_uid: "u2".into(),
            ..copying.clone()
        };
        assert_eq!(filled(Some(other)), "not started");
        let done = CopyStatus {
            verified: true,
            bytes_done: GI,
            digest: Some("0123456789abcdef0123".into()),
            error: None,
            ..copying
        };
        assert_eq!(
            filled(Some(done.clone())),
            "done, 1Gi copied and verified (digest 0123456789abcdef)"
        );
        let cloned = CopyStatus {
            lvm_clone: true,
            digest: None,
            ..done
        };
        let row = data_source_row(&ds, &[&replica(Some(cloned))]);
        assert_eq!(row.filled, "done (an LVM thin clone, nothing copied)");
        assert_eq!(row.clone_of.as_deref(), Some("v0"));
    }

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
                    thin: None,
                    thin_overprovision_percent: None,
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
                operation: None,
                thin: false,
                data_source: None,
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
    fn a_convertible_volume_on_one_node_shows_as_convertible_until_converted() {
        let mut v = ha_volume("cv", &["a"], "a", None);
        v.spec.convertible = true;
        let row = volume_row(&v, &[]);
        assert!(row.convertible);
        assert_eq!(row.ha_cell(), "Convertible");
        let mut both = ha_volume("cv", &["a", "b"], "a", Some(HaState::Healthy));
        both.spec.convertible = true;
        let row = volume_row(&both, &[]);
        assert!(!row.convertible);
        assert_eq!(row.ha_cell(), "Healthy");
    }

    #[test]
    fn a_thin_volume_shows_as_thin() {
        let mut v = volume("t", GI, Some("n1"));
        assert_eq!(volume_row(&v, &[]).kind, "LVM");
        v.spec.thin = true;
        assert_eq!(volume_row(&v, &[]).kind, "LVM-thin");
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
                copy_from: None,
                thin: false,
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

    #[test]
    fn ha_rows_carry_replication_and_what_the_config_assigns() {
        let mut v = ha_volume("v", &["a", "b"], "a", Some(HaState::Syncing));
        v.spec.config.as_mut().unwrap().replicas[1].outdated = true;
        let a = ha_replica("v", "a", "Primary", "UpToDate", "SyncSource");
        let mut b = ha_replica("v", "b", "Secondary", "Inconsistent", "SyncTarget");
        let rep = b.status.as_mut().unwrap().replication.as_mut().unwrap();
        rep.sync_progress = Some("42.5%".into());
        rep.out_of_sync_bytes = GI;
        let row = volume_row(&v, &[&b, &a]);
        assert_eq!(row.ha_state, Some(HaState::Syncing));
        let (ra, rb) = (&row.replicas[0], &row.replicas[1]);
        assert_eq!((ra.node.as_str(), rb.node.as_str()), ("a", "b"), "by node");
        assert_eq!(
            (ra.assigned_cell(), rb.assigned_cell()),
            ("primary".to_string(), "outdated".to_string())
        );
        assert_eq!(rb.role.as_deref(), Some("Secondary"));
        assert_eq!(rb.disk_state.as_deref(), Some("Inconsistent"));
        assert_eq!(rb.connection_state.as_deref(), Some("SyncTarget"));
        assert_eq!(rb.peer_disk_state.as_deref(), Some("UpToDate"));
        assert_eq!(rb.sync_text().as_deref(), Some("42.5%, 1Gi out of sync"));
        assert_eq!(ra.sync_text(), None);
        assert_eq!(row.allowed_primary(), Some("a"));
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["haState"], "Syncing");
        assert_eq!(json["replicas"][1]["outdated"], true);
        assert_eq!(json["replicas"][1]["syncProgress"], "42.5%");
        assert_eq!(json["replicas"][1]["outOfSyncBytes"], GI);
        assert_eq!(json["replicas"][0]["allowedPrimary"], true);
    }

    #[test]
    fn a_replica_the_config_wants_but_that_does_not_exist_shows_as_missing() {
        // No haState reported yet: the core's rule stands in for the controller's report.
        let v = ha_volume("v", &["a", "b"], "a", None);
        let a = ha_replica("v", "a", "Primary", "UpToDate", "WFConnection");
        let row = volume_row(&v, &[&a]);
        assert_eq!(row.ha_state, Some(HaState::Degraded));
        let b = &row.replicas[1];
        assert!(b.missing);
        assert_eq!(b.name, "v-b");
        assert_eq!(b.state_cell(), "Missing");
        let t = volume_table(std::slice::from_ref(&row), false);
        assert_eq!(t.rows[0][1], "LVM");
        assert_eq!(t.rows[0][5], "a:Ready,b:Missing");
        assert_eq!(t.rows[0][7], "Degraded");
    }

    #[test]
    fn plain_volumes_have_no_ha_fields() {
        let v = volume("v", GI, Some("n1"));
        let r = ha_replica("v", "n1", "Primary", "UpToDate", "Connected");
        let row = volume_row(&v, &[&r]);
        assert_eq!(row.ha_state, None);
        assert_eq!(row.replicas[0].allowed_primary, None);
        assert_eq!(row.replicas[0].assigned_cell(), "-");
        let list = VolumeList { items: vec![row] };
        let t = &list.tables(true)[0];
        assert_eq!(
            t.headers,
            [
                "NAME",
                "KIND",
                "POOL",
                "CAPACITY",
                "REPLICAS",
                "NODES",
                "STATE",
                "HA",
                "PUBLISHED",
                "PVC",
                "GROUP",
                "ALLOCATED",
                "USED",
                "PRIMARY",
                "MESSAGE"
            ]
        );
        assert_eq!(t.rows[0][7], "-");
        assert_eq!(t.rows[0][13], "-");
    }

    #[test]
    fn a_split_brain_volume_shows_the_command_and_then_the_pending_resolution() {
        let mut v = ha_volume("v", &["a", "b"], "a", Some(HaState::SplitBrain));
        let mut a = ha_replica("v", "a", "Primary", "UpToDate", "StandAlone");
        let mut b = ha_replica("v", "b", "Primary", "UpToDate", "StandAlone");
        for r in [&mut a, &mut b] {
            r.status
                .as_mut()
                .unwrap()
                .replication
                .as_mut()
                .unwrap()
                .split_brain = true;
        }
        let detail = VolumeDetail {
            volume: volume_row(&v, &[&a, &b]),
            snapshots: Vec::new(),
            data_source: None,
        };
        let text = render_tables(&detail.tables(false), false);
        assert!(text.contains("Replication (HA SplitBrain):"), "{text}");
        assert!(
            text.contains("kubectl hwameistor volume resolve-split-brain v --keep <a|b>"),
            "{text}"
        );
        assert!(text.contains("split brain"), "{text}");
        v.spec.split_brain_resolution =
            Some(hwameistor_api::SplitBrainResolution { keep: "a".into() });
        let row = volume_row(&v, &[&a, &b]);
        assert_eq!(row.split_brain_keep.as_deref(), Some("a"));
        let notes = ha_notes(&row);
        assert!(
            notes[0].starts_with(
                "split-brain resolution pending: the data of a is kept; the changes of b"
            ),
            "{notes:?}"
        );
        let t = replication_table(&row);
        assert!(t.rows[0][8].contains("data kept"), "{:?}", t.rows[0]);
        assert!(
            t.rows[1][8].contains("changes discarded"),
            "{:?}",
            t.rows[1]
        );
    }
}

/// HA volumes and replicas as the controller and the agents report them, for the tests of
/// the modules that read them.
#[cfg(test)]
pub(crate) mod ha_fixtures {
    use hwameistor_api::{
        HaState, LocalVolume, LocalVolumeReplica, LocalVolumeReplicaSpec, LocalVolumeReplicaStatus,
        LocalVolumeSpec, LocalVolumeStatus, PoolClass, ReplicaAssignment, ReplicaState,
        ReplicationStatus, VolumeConfig, VolumeState,
    };

    pub const GIB: i64 = 1 << 30;

    /// A placed HA volume on `nodes` whose config lets `primary` serve it.
    pub fn ha_volume(
        name: &str,
        nodes: &[&str],
        primary: &str,
        ha: Option<HaState>,
    ) -> LocalVolume {
        let mut v = LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: PoolClass::Hdd.pool_name().into(),
                volume_kind: Default::default(),
                required_capacity_bytes: GIB,
                replica_number: nodes.len() as i64,
                convertible: false,
                accessibility: Default::default(),
                pvc_namespace: Some("default".into()),
                pvc_name: Some(format!("data-{name}")),
                fs_type: Some("xfs".into()),
                config: Some(VolumeConfig {
                    version: 3,
                    required_capacity_bytes: GIB,
                    resource_id: 7,
                    replicas: nodes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| ReplicaAssignment {
                            id: i as i64 + 1,
                            hostname: n.to_string(),
                            ip: Some(format!("10.0.0.{}", i + 1)),
                            primary: *n == primary,
                            outdated: false,
                            copy_from: None,
                            leaving: false,
                        })
                        .collect(),
                    initial: false,
                }),
                split_brain_resolution: None,
                operation: None,
                thin: false,
                data_source: None,
            },
        );
        v.metadata.resource_version = Some("41".into());
        v.status = Some(LocalVolumeStatus {
            state: Some(VolumeState::Ready),
            allocated_capacity_bytes: Some(GIB),
            published_node: Some(primary.to_string()),
            ha_state: ha,
            ..Default::default()
        });
        v
    }

    /// A Ready replica of `volume` on `node` whose DRBD reports the given role, disk and
    /// connection states (its peer Secondary and UpToDate).
    pub fn ha_replica(
        volume: &str,
        node: &str,
        role: &str,
        disk: &str,
        conn: &str,
    ) -> LocalVolumeReplica {
        let mut r = LocalVolumeReplica::new(
            &format!("{volume}-{node}"),
            LocalVolumeReplicaSpec {
                volume_name: volume.into(),
                pool_name: PoolClass::Hdd.pool_name().into(),
                node_name: node.into(),
                volume_kind: Default::default(),
                required_capacity_bytes: GIB,
                replication: None,
                copy_from: None,
                thin: false,
            },
        );
        r.status = Some(LocalVolumeReplicaStatus {
            state: Some(ReplicaState::Ready),
            synced: Some(disk == "UpToDate"),
            allocated_capacity_bytes: Some(GIB),
            device_path: Some("/dev/drbd7".into()),
            replication: Some(ReplicationStatus {
                role: role.into(),
                disk_state: disk.into(),
                connection_state: conn.into(),
                peer_role: Some("Secondary".into()),
                peer_disk_state: Some("UpToDate".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        r
    }
}
