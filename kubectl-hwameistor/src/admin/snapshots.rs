//! `snapshot list|get|delete`: the LocalVolumeSnapshots (one per VolumeSnapshot taken of a
//! HwameiStor volume), what each holds and how full a copy-on-write one is.

use super::lookup::{get_opt, list_all};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use hwameistor_api::quantity::format_size;
use hwameistor_api::volume::ANNOTATION_CSI_NAME;
use hwameistor_api::LocalVolumeSnapshot;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

/// A copy-on-write snapshot's use from which it is near overflow (LVM invalidates a full
/// one and its data is lost). One threshold for `snapshot list` and `diagnose`.
pub const NEAR_OVERFLOW_PERCENT: i64 = 80;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRow {
    pub name: String,
    /// The name the CSI sidecar gave it (`snapshot-<uid>` of its VolumeSnapshotContent).
    pub csi_name: Option<String>,
    pub volume: String,
    pub node: String,
    pub pool: String,
    /// `Thin` (shares the thin pool) or `COW` (space of its own).
    pub kind: String,
    pub size_bytes: i64,
    pub cow_bytes: Option<i64>,
    pub used_percent: Option<i64>,
    pub state: Option<String>,
    pub ready_to_use: bool,
    pub creation_time: Option<String>,
    pub message: Option<String>,
    pub deleting: bool,
}

impl SnapshotRow {
    /// A copy-on-write snapshot at or past [`NEAR_OVERFLOW_PERCENT`].
    pub fn near_overflow(&self) -> bool {
        self.cow_bytes.is_some()
            && self.ready_to_use
            && self
                .used_percent
                .is_some_and(|p| p >= NEAR_OVERFLOW_PERCENT)
    }
}

/// The row of snapshot `s`. Pure.
pub fn snapshot_row(s: &LocalVolumeSnapshot) -> SnapshotRow {
    let st = s.status.clone().unwrap_or_default();
    SnapshotRow {
        name: s.name_any(),
        csi_name: s.annotations().get(ANNOTATION_CSI_NAME).cloned(),
        volume: s.spec.source_volume.clone(),
        node: s.spec.node_name.clone(),
        pool: s.spec.pool_name.clone(),
        kind: if s.spec.cow_capacity_bytes.is_some() {
            "COW"
        } else {
            "Thin"
        }
        .into(),
        size_bytes: s.spec.source_capacity_bytes,
        cow_bytes: s.spec.cow_capacity_bytes,
        used_percent: st.used_percent,
        state: st.state.map(|x| format!("{x:?}")),
        ready_to_use: st.ready_to_use,
        creation_time: st.creation_time,
        message: st.message,
        deleting: s.metadata.deletion_timestamp.is_some(),
    }
}

fn state_cell(r: &SnapshotRow) -> String {
    match (&r.state, r.deleting) {
        (_, true) => "Deleting".into(),
        (Some(s), false) => s.clone(),
        (None, false) => "-".into(),
    }
}

fn use_cell(r: &SnapshotRow) -> String {
    match (r.cow_bytes, r.used_percent) {
        (None, _) => "-".into(),
        (Some(_), None) => "?".into(),
        (Some(_), Some(p)) if r.near_overflow() => format!("{p}% (near overflow)"),
        (Some(_), Some(p)) => format!("{p}%"),
    }
}

/// The snapshot table, `wide` adding node, pool and message.
pub fn snapshot_table(rows: &[SnapshotRow], wide: bool) -> TableView {
    let mut headers = vec![
        "NAME", "VOLUME", "KIND", "SIZE", "COW", "USED", "READY", "STATE", "CREATED",
    ];
    if wide {
        headers.extend(["NODE", "POOL", "CSI-NAME", "MESSAGE"]);
    }
    let mut t = TableView::new(&headers);
    for r in rows {
        let mut row = vec![
            r.name.clone(),
            r.volume.clone(),
            r.kind.clone(),
            format_size(r.size_bytes),
            r.cow_bytes.map_or_else(|| "-".into(), format_size),
            use_cell(r),
            r.ready_to_use.to_string(),
            state_cell(r),
            or_dash(r.creation_time.as_deref()),
        ];
        if wide {
            row.extend([
                r.node.clone(),
                r.pool.clone(),
                or_dash(r.csi_name.as_deref()),
                or_dash(r.message.as_deref()),
            ]);
        }
        t.push(row);
    }
    t
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotList {
    pub items: Vec<SnapshotRow>,
}

impl Render for SnapshotList {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        vec![snapshot_table(&self.items, wide)]
    }

    fn empty_note(&self) -> Option<String> {
        self.items.is_empty().then(|| {
            "No snapshots found: take one with a VolumeSnapshot of a HwameiStor PVC (VolumeSnapshotClass hwameistor-lvm-snapshot).".to_string()
        })
    }
}

/// The rows of `snapshots` (of `volume` only, when given), by volume then name. Pure.
pub fn snapshot_rows(snapshots: &[LocalVolumeSnapshot], volume: Option<&str>) -> Vec<SnapshotRow> {
    let mut rows: Vec<SnapshotRow> = snapshots
        .iter()
        .filter(|s| volume.is_none_or(|v| s.spec.source_volume == v))
        .map(snapshot_row)
        .collect();
    rows.sort_by(|a, b| (&a.volume, &a.name).cmp(&(&b.volume, &b.name)));
    rows
}

/// `snapshot list [--volume V]`.
pub async fn list_snapshots(
    cluster: &Cluster,
    volume: Option<&str>,
) -> Result<SnapshotList, AdminError> {
    let all: Vec<LocalVolumeSnapshot> = list_all(cluster).await?;
    Ok(SnapshotList {
        items: snapshot_rows(&all, volume),
    })
}

/// A volume's snapshots, for `volume get` (none when the snapshot CRD is not installed).
pub async fn of_volume(cluster: &Cluster, volume: &str) -> Result<Vec<SnapshotRow>, AdminError> {
    match list_all::<LocalVolumeSnapshot>(cluster).await {
        Ok(all) => Ok(snapshot_rows(&all, Some(volume))),
        Err(AdminError::NotInstalled) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotDetail {
    pub snapshot: SnapshotRow,
}

impl Render for SnapshotDetail {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = snapshot_table(std::slice::from_ref(&self.snapshot), true);
        t = t.titled("Snapshot:");
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in snapshot_notes(&self.snapshot) {
            notes.push(vec![n]);
        }
        vec![t, notes]
    }
}

/// What a user should know about snapshot `r`. Pure.
pub fn snapshot_notes(r: &SnapshotRow) -> Vec<String> {
    let mut out = Vec::new();
    if r.near_overflow() {
        out.push(format!(
            "{}% of its copy-on-write space holds blocks of {} changed since it was taken; when it is full LVM invalidates the snapshot and its data is lost: copy what you need from it now, or take a new one with more space (VolumeSnapshotClass parameter cowSize)",
            r.used_percent.unwrap_or(0),
            r.volume
        ));
    }
    if r.state.as_deref() == Some("Failed") {
        out.push(format!(
            "it holds no usable data: {}; delete it (its VolumeSnapshot)",
            r.message.as_deref().unwrap_or("failed")
        ));
    }
    if r.kind == "Thin" {
        out.push(
            "thin: it shares the volume's thin pool, taking room only as the volume changes".into(),
        );
    }
    out
}

async fn require(cluster: &Cluster, name: &str) -> Result<LocalVolumeSnapshot, AdminError> {
    if let Some(s) = get_opt::<LocalVolumeSnapshot>(cluster, name).await? {
        return Ok(s);
    }
    // By the CSI name too (what the VolumeSnapshotContent shows).
    let all: Vec<LocalVolumeSnapshot> = list_all(cluster).await?;
    if let Some(s) = all
        .iter()
        .find(|s| s.annotations().get(ANNOTATION_CSI_NAME).map(String::as_str) == Some(name))
    {
        return Ok(s.clone());
    }
    let mut known: Vec<String> = all.iter().map(|s| s.name_any()).collect();
    known.sort();
    Err(AdminError::UnknownSnapshot {
        name: name.to_string(),
        known,
    })
}

/// `snapshot get NAME` (its name, or the CSI name its VolumeSnapshotContent shows).
pub async fn get_snapshot(cluster: &Cluster, name: &str) -> Result<SnapshotDetail, AdminError> {
    Ok(SnapshotDetail {
        snapshot: snapshot_row(&require(cluster, name).await?),
    })
}

/// What `snapshot delete` is about to do, for the confirmation.
pub async fn delete_plan(cluster: &Cluster, name: &str) -> Result<SnapshotRow, AdminError> {
    Ok(snapshot_row(&require(cluster, name).await?))
}

/// The confirmation text of deleting `r`. Pure.
pub fn delete_warning(r: &SnapshotRow) -> String {
    let mut s = format!(
        "snapshot {} of volume {} ({}, taken {}) and its data on {} are removed",
        r.name,
        r.volume,
        format_size(r.size_bytes),
        r.creation_time.as_deref().unwrap_or("-"),
        r.node
    );
    if r.csi_name.is_some() {
        s.push_str("; it belongs to a VolumeSnapshot: prefer deleting that (kubectl delete volumesnapshot), which removes this too; deleted here, its VolumeSnapshotContent is left pointing at nothing");
    }
    s
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDeleteReport {
    pub name: String,
    pub volume: String,
    pub dry_run: bool,
}

impl Render for SnapshotDeleteReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["NAME", "VOLUME", "RESULT"]);
        t.push(vec![
            self.name.clone(),
            self.volume.clone(),
            if self.dry_run {
                "dry run: not deleted".into()
            } else {
                "deleted (its node's agent removes it)".into()
            },
        ]);
        vec![t]
    }
}

/// `snapshot delete NAME`: deletes the object; its node's agent removes the LVM snapshot,
/// then the object goes.
pub async fn delete_snapshot(
    cluster: &Cluster,
    row: &SnapshotRow,
    dry_run: bool,
) -> Result<SnapshotDeleteReport, AdminError> {
    let dp = DeleteParams {
        dry_run,
        ..Default::default()
    };
    match Api::<LocalVolumeSnapshot>::all(cluster.client.clone())
        .delete(&row.name, &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            return Err(AdminError::api(
                format!("deleting snapshot {}", row.name),
                e,
            ))
        }
    }
    Ok(SnapshotDeleteReport {
        name: row.name.clone(),
        volume: row.volume.clone(),
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{LocalVolumeSnapshotSpec, LocalVolumeSnapshotStatus, SnapshotState};

    fn snap(name: &str, volume: &str, cow: Option<i64>, used: Option<i64>) -> LocalVolumeSnapshot {
        let mut s = LocalVolumeSnapshot::new(
            name,
            LocalVolumeSnapshotSpec {
                source_volume: volume.into(),
                node_name: "n1".into(),
                pool_name: "LocalStorage_PoolHDD".into(),
                source_capacity_bytes: 1 << 30,
                cow_capacity_bytes: cow,
            },
        );
        s.status = Some(LocalVolumeSnapshotStatus {
            state: Some(SnapshotState::Ready),
            ready_to_use: true,
            used_percent: used,
            creation_time: Some("2026-11-26T17:00:00Z".into()),
            ..Default::default()
        });
        s
    }

    #[test]
    fn rows_sort_by_volume_and_say_how_full_a_cow_snapshot_is() {
        let all = [
            snap("b", "v2", Some(64 << 20), Some(85)),
            snap("a", "v2", None, None),
            snap("c", "v1", Some(64 << 20), Some(10)),
        ];
        let rows = snapshot_rows(&all, None);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert_eq!(snapshot_rows(&all, Some("v1")).len(), 1);
        assert!(rows[2].near_overflow() && !rows[0].near_overflow() && !rows[1].near_overflow());
        assert_eq!(use_cell(&rows[2]), "85% (near overflow)");
        assert_eq!(use_cell(&rows[1]), "-");
        assert_eq!(
            (rows[1].kind.as_str(), rows[2].kind.as_str()),
            ("Thin", "COW")
        );
        let notes = snapshot_notes(&rows[2]);
        assert!(notes[0].contains("cowSize"), "{notes:?}");
    }

    #[test]
    fn deleting_a_csi_snapshot_here_says_to_prefer_its_volumesnapshot() {
        let mut s = snap("v-snapshot-x", "v1", None, None);
        s.metadata.annotations =
            Some([(ANNOTATION_CSI_NAME.to_string(), "snapshot-x".to_string())].into());
        let w = delete_warning(&snapshot_row(&s));
        assert!(w.contains("prefer deleting that"), "{w}");
        let plain = delete_warning(&snapshot_row(&snap("s", "v1", None, None)));
        assert!(!plain.contains("prefer"), "{plain}");
    }
}
