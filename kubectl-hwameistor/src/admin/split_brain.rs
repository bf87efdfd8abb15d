//! `volume resolve-split-brain VOL --keep NODE`: after a split brain of an HA volume (both
//! replicas were primary while disconnected and wrote different data), record whose data
//! survives, then follow the volume until it is Healthy again.
//!
//! The plugin never reaches the nodes. It writes `spec.splitBrainResolution.keep` on the
//! LocalVolume, by a compare-and-swap (the resourceVersion it planned from), so a volume that
//! changed meanwhile is not resolved on stale facts. The controller hands the choice to the
//! replicas (`keepMyData` on the kept one, `discardMyData` on the other); the agent of the
//! discarding side waits until nothing uses the volume there, discards its changes since the
//! split and reconnects; it resyncs from the kept side; once the replicas are connected the
//! controller clears the resolution.

use super::follow::{follow_related, Step};
use super::lookup::list_all;
use super::volumes::{require_volume, volume_row, ReplicaRow, VolumeRow};
use crate::client::Cluster;
use crate::errors::{is_not_found, AdminError};
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use hwameistor_api::{HaState, LocalVolume, LocalVolumeReplica, LABEL_VOLUME};
use hwameistor_core::ha;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::Serialize;
use std::time::Duration;

/// What `resolve-split-brain` is about to do, shown before it asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitBrainPlan {
    pub volume: String,
    /// `namespace/name` of the volume's PVC, when it has one.
    pub pvc: Option<String>,
    /// The node whose replica's data is kept.
    pub keep: String,
    /// The nodes whose replica's changes since the split are discarded (it resyncs from
    /// `keep`).
    pub discard: Vec<String>,
    /// The volume's resourceVersion the plan was made from: the write is conditional on it.
    pub resource_version: String,
    pub published_node: Option<String>,
    /// The replicas as they were when planned.
    pub replicas: Vec<ReplicaRow>,
    pub notes: Vec<String>,
}

impl SplitBrainPlan {
    /// The question asked before writing.
    pub fn confirmation_action(&self) -> String {
        format!(
            "discard the changes made on {} to volume {} since the split brain",
            self.discard.join(", "),
            self.volume
        )
    }

    /// What the user types to confirm: the name of the node whose changes are discarded.
    pub fn confirmation_text(&self) -> String {
        self.discard.join(",")
    }
}

impl Render for SplitBrainPlan {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let pvc = self
            .pvc
            .as_deref()
            .map(|p| format!(" (PVC {p})"))
            .unwrap_or_default();
        let mut t = TableView::new(&[
            "NODE",
            "REPLICA",
            "ROLE",
            "DISK",
            "CONNECTION",
            "ASSIGNED",
            "DATA",
        ])
        .titled(format!(
            "Plan: resolve the split brain of volume {}{pvc}",
            self.volume
        ));
        for r in &self.replicas {
            let data = if r.node == self.keep {
                "KEPT".to_string()
            } else {
                format!("DISCARDED since the split; resyncs from {}", self.keep)
            };
            t.push(vec![
                r.node.clone(),
                if r.missing {
                    "-".into()
                } else {
                    r.name.clone()
                },
                or_dash(r.role.as_deref()),
                or_dash(r.disk_state.as_deref()),
                or_dash(r.connection_state.as_deref()),
                r.assigned_cell(),
                data,
            ]);
        }
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![t, notes]
    }
}

/// The plan for keeping `keep`'s data of volume `v`, or why there is nothing to resolve:
/// the volume is not HA, a resolution is pending already, it is not in split brain, or
/// `keep` holds no replica of it. Pure.
pub fn plan_for(
    v: &LocalVolume,
    replicas: &[&LocalVolumeReplica],
    keep: &str,
) -> Result<SplitBrainPlan, AdminError> {
    let row = volume_row(v, replicas);
    let volume = row.name.clone();
    let Some(config) = v.spec.config.as_ref().filter(|c| ha::is_ha(c)) else {
        return Err(AdminError::NotHa { volume });
    };
    if let Some(k) = &row.split_brain_keep {
        return Err(AdminError::ResolutionPending {
            volume,
            keep: k.clone(),
        });
    }
    if !row.in_split_brain() {
        return Err(AdminError::NotSplitBrain {
            volume,
            ha_state: row.ha_cell(),
        });
    }
    let holders: Vec<String> = row
        .replicas
        .iter()
        .filter(|r| !r.missing)
        .map(|r| r.node.clone())
        .collect();
    let assigned = config.replicas.iter().any(|a| a.hostname == keep);
    if !assigned || !holders.iter().any(|n| n == keep) {
        return Err(AdminError::NotAReplicaNode {
            volume,
            node: keep.to_string(),
            nodes: holders,
        });
    }
    // The controller marks every other replica of the config to discard.
    let discard: Vec<String> = config
        .replicas
        .iter()
        .map(|a| a.hostname.clone())
        .filter(|n| n != keep)
        .collect();
    let resource_version = v.resource_version().unwrap_or_default();
    let notes = plan_notes(&row, keep, &discard, &resource_version);
    Ok(SplitBrainPlan {
        pvc: (row.pvc() != "-").then(|| row.pvc()),
        volume,
        keep: keep.to_string(),
        discard,
        resource_version,
        published_node: row.published_node.clone(),
        replicas: row.replicas,
        notes,
    })
}

fn plan_notes(row: &VolumeRow, keep: &str, discard: &[String], rv: &str) -> Vec<String> {
    let d = discard.join(", ");
    let mut notes = vec![
        format!("The data of {keep} is KEPT: it is the volume's data from now on."),
        format!(
            "The changes made on {d} since the split are DISCARDED: {d} drops them and resyncs from {keep}. They cannot be recovered afterwards."
        ),
    ];
    let user = match &row.pvc_name {
        Some(_) => format!("the pod using PVC {}", row.pvc()),
        None => "the pod using the volume".to_string(),
    };
    match row.published_node.as_deref() {
        Some(p) if discard.iter().any(|n| n == p) => notes.push(format!(
            "The volume is published on {p}: {user} runs there. Stop it (scale its workload down) now: {p} must not be in use; its replica waits, NotReady, until nothing uses the volume there, and only then discards and resyncs."
        )),
        _ => notes.push(format!(
            "{d} must not be in use: if {user} still runs there, stop it; the replica there waits, NotReady, until nothing uses the volume on {d}."
        )),
    }
    if let Some(p) = row.allowed_primary() {
        notes.push(format!(
            "The controller last allowed {p} to be primary (to serve the volume)."
        ));
    }
    if row
        .replicas
        .iter()
        .any(|r| r.node == keep && r.outdated == Some(true))
    {
        notes.push(format!(
            "The replica on {keep} is recorded outdated (fenced): {d} went on acknowledging writes after that; keeping {keep} discards them."
        ));
    }
    notes.push(format!(
        "Written as spec.splitBrainResolution.keep={keep} on LocalVolume {}, only if it is unchanged since it was read (resourceVersion {rv}).",
        row.name
    ));
    notes
}

/// Reads the volume and its replicas and makes the plan (see [`plan_for`]).
pub async fn plan(cluster: &Cluster, key: &str, keep: &str) -> Result<SplitBrainPlan, AdminError> {
    let v = require_volume(cluster, key).await?;
    let replicas: Vec<LocalVolumeReplica> = list_all(cluster).await?;
    let name = v.name_any();
    let mine: Vec<&LocalVolumeReplica> = replicas
        .iter()
        .filter(|r| r.spec.volume_name == name)
        .collect();
    plan_for(&v, &mine, keep)
}

/// What `resolve-split-brain` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolveReport {
    pub volume: String,
    pub keep: String,
    pub discard: Vec<String>,
    pub dry_run: bool,
    /// The resolution was written (not a dry run).
    pub written: bool,
    /// The volume was followed until Healthy with the resolution cleared.
    pub resolved: bool,
    /// The HA state when the command ended (None when not followed).
    pub ha_state: Option<HaState>,
    pub notes: Vec<String>,
    /// What was planned (and shown before asking).
    pub plan: SplitBrainPlan,
}

impl Render for ResolveReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let result = if self.dry_run {
            "dry run: nothing changed"
        } else if self.resolved {
            "resolved"
        } else {
            "requested"
        };
        let mut t = TableView::new(&["VOLUME", "KEEP", "DISCARD", "HA", "RESULT"]);
        t.push(vec![
            self.volume.clone(),
            self.keep.clone(),
            self.discard.join(","),
            self.ha_state
                .map_or_else(|| "-".to_string(), |h| format!("{h:?}")),
            result.into(),
        ]);
        let mut notes = TableView::new(&["NOTE"]).titled("Notes:");
        for n in &self.notes {
            notes.push(vec![n.clone()]);
        }
        vec![t, notes]
    }
}

/// Writes the plan's resolution, conditional on the volume being unchanged since it was
/// planned (merge patch carrying the resourceVersion). A dry run has the server check the
/// same write, precondition included, and keeps nothing.
pub async fn write(
    cluster: &Cluster,
    plan: &SplitBrainPlan,
    dry_run: bool,
) -> Result<ResolveReport, AdminError> {
    let api: Api<LocalVolume> = Api::all(cluster.client.clone());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": plan.resource_version},
        "spec": {"splitBrainResolution": {"keep": plan.keep}},
    });
    let params = PatchParams {
        dry_run,
        ..Default::default()
    };
    match api
        .patch(&plan.volume, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(AdminError::Conflict {
                what: format!("volume {:?}", plan.volume),
            })
        }
        Err(e) if is_not_found(&e) => {
            return Err(AdminError::UnknownVolume {
                name: plan.volume.clone(),
                known: vec![],
            })
        }
        Err(e) => {
            return Err(AdminError::api(
                format!(
                    "writing the split-brain resolution of LocalVolume {}",
                    plan.volume
                ),
                e,
            ))
        }
    }
    let notes = if dry_run {
        vec![format!(
            "dry run: nothing was written; the server accepted spec.splitBrainResolution.keep={} on the volume as read (resourceVersion {})",
            plan.keep, plan.resource_version
        )]
    } else {
        vec![format!(
            "written: spec.splitBrainResolution.keep={}; {} discards its changes and resyncs once nothing uses the volume there",
            plan.keep,
            plan.discard.join(", ")
        )]
    };
    Ok(ResolveReport {
        volume: plan.volume.clone(),
        keep: plan.keep.clone(),
        discard: plan.discard.clone(),
        dry_run,
        written: !dry_run,
        resolved: false,
        ha_state: None,
        notes,
        plan: plan.clone(),
    })
}

/// Judges the followed volume (and its replicas) after a resolution was written: done once
/// the controller cleared it and the volume is Healthy; failed when the volume is deleted,
/// or the resolution is replaced by another choice.
#[derive(Clone, Debug)]
pub struct ResolutionFollow {
    plan: SplitBrainPlan,
    /// The resolution was seen on the volume: a version without it and still in split
    /// brain is then one after the clear, not one read before the write.
    seen_pending: bool,
}

impl ResolutionFollow {
    pub fn new(plan: &SplitBrainPlan) -> Self {
        ResolutionFollow {
            plan: plan.clone(),
            seen_pending: false,
        }
    }

    /// The next step for the volume as it is now. Pure.
    pub fn step(
        &mut self,
        v: Option<&LocalVolume>,
        replicas: &[LocalVolumeReplica],
    ) -> Step<HaState> {
        let name = &self.plan.volume;
        let Some(v) = v else {
            return Step::Fail(AdminError::ResolutionAbandoned(format!(
                "volume {name} was deleted while its split brain was being resolved"
            )));
        };
        let mine: Vec<&LocalVolumeReplica> = replicas
            .iter()
            .filter(|r| r.spec.volume_name == *name)
            .collect();
        let row = volume_row(v, &mine);
        match row.split_brain_keep.as_deref() {
            Some(k) if k != self.plan.keep => Step::Fail(AdminError::ResolutionAbandoned(
                format!("the split-brain resolution of volume {name} was changed meanwhile: it now keeps the data of {k}, not {}; not following it", self.plan.keep),
            )),
            Some(_) => {
                self.seen_pending = true;
                Step::Wait(self.status(&row, true))
            }
            // The controller clears the resolution before it reports the new state, and the
            // replicas' reports come on a watch of their own: a volume still looking split
            // right after the clear is normal. Only the timeout tells a removal by someone
            // else, and its message says so.
            None if row.in_split_brain() && self.seen_pending => Step::Wait(format!(
                "volume {name}: resolution cleared; waiting for the volume to report the replicas connected (if it stays so, someone else removed the resolution: run the command again)"
            )),
            None if row.ha_state == Some(HaState::Healthy) => Step::Done(HaState::Healthy),
            None => Step::Wait(self.status(&row, false)),
        }
    }

    /// The progress line for the volume as it is now.
    fn status(&self, row: &VolumeRow, pending: bool) -> String {
        let (keep, discard) = (&self.plan.keep, self.plan.discard.join(", "));
        let name = &row.name;
        let text = if row.in_split_brain() {
            let waiting = row.replicas.iter().find(|r| {
                r.node != *keep && r.state.as_deref() == Some("NotReady") && r.message.is_some()
            });
            match (waiting, pending) {
                (Some(r), _) => format!(
                    "split brain: {} waits: {}",
                    r.node,
                    r.message.as_deref().unwrap_or_default()
                ),
                (None, true) => format!(
                    "split brain: waiting for {discard} to discard its changes and reconnect to {keep}"
                ),
                (None, false) => "split brain: waiting for the resolution to show".to_string(),
            }
        } else {
            match row.ha_state {
                Some(HaState::Syncing) => {
                    let progress = row.resync_progress();
                    let in_sync = row
                        .replicas
                        .iter()
                        .all(|r| r.disk_state.as_deref() == Some("UpToDate"));
                    if !progress.is_empty() {
                        format!("resyncing {}", progress.join("; "))
                    } else if in_sync {
                        "replicas in sync; waiting for the volume to report Healthy".to_string()
                    } else {
                        format!("resyncing {discard} from {keep}")
                    }
                }
                Some(HaState::Degraded) => {
                    let conns: Vec<String> = row
                        .replicas
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {}",
                                r.node,
                                if r.missing {
                                    "missing"
                                } else {
                                    r.connection_state.as_deref().unwrap_or("not up")
                                }
                            )
                        })
                        .collect();
                    format!("reconnecting ({})", conns.join(", "))
                }
                Some(HaState::Healthy) if pending => {
                    "Healthy; waiting for the controller to clear the resolution".to_string()
                }
                _ => format!("HA {}", row.ha_cell()),
            }
        };
        format!("volume {name}: {text}")
    }
}

/// Follows the volume after the resolution was written until the controller cleared it and
/// the volume is Healthy, showing where it stands (who waits for what, the resync's
/// progress), and completes `report`. Its replicas are watched by the controller's
/// `hwameistor.io/volume` label.
pub async fn follow_resolution(
    cluster: &Cluster,
    report: &mut ResolveReport,
    timeout: Duration,
    progress: &Progress,
) -> Result<(), AdminError> {
    let plan = &report.plan;
    let api: Api<LocalVolume> = Api::all(cluster.client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(cluster.client.clone());
    let labels = format!("{LABEL_VOLUME}={}", plan.volume);
    let what = format!(
        "volume {} to resync from {} and be Healthy (the resolution is written and goes on without this command)",
        plan.volume, plan.keep
    );
    let mut judge = ResolutionFollow::new(plan);
    let state = follow_related(
        cluster,
        api,
        &plan.volume,
        replicas,
        &labels,
        &what,
        timeout,
        progress,
        |v, r| judge.step(v, r),
    )
    .await?;
    let note = format!(
        "resolved: the replicas are connected again and in sync; the data of {} is the volume's data, the changes of {} since the split were discarded",
        plan.keep,
        plan.discard.join(", ")
    );
    report.resolved = true;
    report.ha_state = Some(state);
    report.notes.push(note);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::volumes::ha_fixtures::*;
    use super::*;
    use hwameistor_api::SplitBrainResolution;

    /// pvc-1 on node-a and node-b, both Primary and StandAlone after a split brain.
    fn split_brain() -> (LocalVolume, Vec<LocalVolumeReplica>) {
        let v = ha_volume(
            "pvc-1",
            &["node-a", "node-b"],
            "node-a",
            Some(HaState::SplitBrain),
        );
        let replicas = ["node-a", "node-b"]
            .into_iter()
            .map(|n| {
                let mut r = ha_replica("pvc-1", n, "Primary", "UpToDate", "StandAlone");
                let rep = r.status.as_mut().unwrap().replication.as_mut().unwrap();
                rep.split_brain = true;
                rep.peer_disk_state = Some("DUnknown".into());
                rep.peer_role = Some("Unknown".into());
                r
            })
            .collect();
        (v, replicas)
    }

    fn refs(r: &[LocalVolumeReplica]) -> Vec<&LocalVolumeReplica> {
        r.iter().collect()
    }

    #[test]
    fn the_plan_keeps_one_node_and_discards_the_other() {
        let (v, r) = split_brain();
        let plan = plan_for(&v, &refs(&r), "node-a").unwrap();
        assert_eq!(plan.keep, "node-a");
        assert_eq!(plan.discard, ["node-b"]);
        assert_eq!(plan.resource_version, "41");
        assert_eq!(plan.pvc.as_deref(), Some("default/data-pvc-1"));
        assert_eq!(plan.confirmation_text(), "node-b");
        assert_eq!(
            plan.confirmation_action(),
            "discard the changes made on node-b to volume pvc-1 since the split brain"
        );
        let notes = plan.notes.join("\n");
        assert!(notes.contains("The data of node-a is KEPT"), "{notes}");
        assert!(
            notes.contains("The changes made on node-b since the split are DISCARDED"),
            "{notes}"
        );
        assert!(notes.contains("node-b must not be in use"), "{notes}");
        assert!(notes.contains("resourceVersion 41"), "{notes}");
        // Keeping the other side: the volume is published on node-a, which is then told to stop.
        let plan = plan_for(&v, &refs(&r), "node-b").unwrap();
        assert_eq!(plan.discard, ["node-a"]);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.starts_with("The volume is published on node-a: the pod using PVC default/data-pvc-1 runs there. Stop it")),
            "{:?}",
            plan.notes
        );
        let text = crate::output::render_tables(&plan.tables(false), false);
        assert!(
            text.starts_with(
                "Plan: resolve the split brain of volume pvc-1 (PVC default/data-pvc-1)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("DISCARDED since the split; resyncs from node-b"),
            "{text}"
        );
    }

    #[test]
    fn refusals_say_why() {
        let (v, r) = split_brain();
        // Not HA.
        let mut plain = v.clone();
        plain.spec.config.as_mut().unwrap().resource_id = -1;
        plain.status.as_mut().unwrap().ha_state = None;
        let e = plan_for(&plain, &refs(&r), "node-a").unwrap_err();
        assert!(matches!(e, AdminError::NotHa { .. }), "{e}");
        assert_eq!(e.to_string(), "volume \"pvc-1\" is not replicated (HA): it has a single copy, so there is no split brain to resolve");
        // Not in split brain.
        let healthy = ha_volume(
            "pvc-1",
            &["node-a", "node-b"],
            "node-a",
            Some(HaState::Healthy),
        );
        let ok: Vec<LocalVolumeReplica> = ["node-a", "node-b"]
            .into_iter()
            .map(|n| ha_replica("pvc-1", n, "Secondary", "UpToDate", "Connected"))
            .collect();
        let e = plan_for(&healthy, &refs(&ok), "node-a").unwrap_err();
        assert_eq!(e.to_string(), "volume \"pvc-1\" is not in split brain (HA state Healthy, and no replica reports one); nothing to resolve");
        // A replica that reports it is enough, whatever the volume says yet.
        plan_for(&healthy, &refs(&r), "node-a").expect("a replica reports the split brain");
        // A node without a replica.
        let e = plan_for(&v, &refs(&r), "node-c").unwrap_err();
        assert_eq!(e.to_string(), "node \"node-c\" holds no replica of volume \"pvc-1\"; its replicas are on: node-a, node-b");
        // A node the config names but whose replica is gone.
        let e = plan_for(&v, &refs(&r[..1]), "node-b").unwrap_err();
        assert!(matches!(e, AdminError::NotAReplicaNode { .. }), "{e}");
        // A resolution pending already.
        let mut pending = v.clone();
        pending.spec.split_brain_resolution = Some(SplitBrainResolution {
            keep: "node-b".into(),
        });
        let e = plan_for(&pending, &refs(&r), "node-a").unwrap_err();
        assert!(e.to_string().starts_with("a split-brain resolution of volume \"pvc-1\" is already pending (the data of node-b is kept)"), "{e}");
    }

    fn wait_text(s: Step<HaState>) -> String {
        match s {
            Step::Wait(t) => t,
            Step::Done(h) => panic!("done: {h:?}"),
            Step::Fail(e) => panic!("failed: {e}"),
        }
    }

    #[test]
    fn following_waits_for_the_discarding_side_then_the_resync_then_the_controller() {
        let (v, mut r) = split_brain();
        let plan = plan_for(&v, &refs(&r), "node-a").unwrap();
        let mut follow = ResolutionFollow::new(&plan);
        // A version read before the write: not a removal.
        assert_eq!(
            wait_text(follow.step(Some(&v), &r)),
            "volume pvc-1: split brain: waiting for the resolution to show"
        );
        let mut v = v;
        v.spec.split_brain_resolution = Some(SplitBrainResolution {
            keep: "node-a".into(),
        });
        assert_eq!(
            wait_text(follow.step(Some(&v), &r)),
            "volume pvc-1: split brain: waiting for node-b to discard its changes and reconnect to node-a"
        );
        // The discarding side is in use: its replica says so.
        let st = r[1].status.as_mut().unwrap();
        st.state = Some(hwameistor_api::ReplicaState::NotReady);
        st.message = Some("unstage the volume here (stop its pod) so it can resync".into());
        assert_eq!(
            wait_text(follow.step(Some(&v), &r)),
            "volume pvc-1: split brain: node-b waits: unstage the volume here (stop its pod) so it can resync"
        );
        // Reconnected, resyncing (the controller has not cleared the resolution yet).
        v.status.as_mut().unwrap().ha_state = Some(HaState::Syncing);
        for (i, (role, disk, conn)) in [
            ("Primary", "UpToDate", "SyncSource"),
            ("Secondary", "Inconsistent", "SyncTarget"),
        ]
        .into_iter()
        .enumerate()
        {
            let st = r[i].status.as_mut().unwrap();
            st.state = Some(hwameistor_api::ReplicaState::Ready);
            let rep = st.replication.as_mut().unwrap();
            (rep.role, rep.disk_state, rep.connection_state) =
                (role.into(), disk.into(), conn.into());
            rep.split_brain = false;
        }
        r[1].status
            .as_mut()
            .unwrap()
            .replication
            .as_mut()
            .unwrap()
            .sync_progress = Some("12.0%".into());
        assert_eq!(
            wait_text(follow.step(Some(&v), &r)),
            "volume pvc-1: resyncing node-b from node-a: 12.0%"
        );
        v.spec.split_brain_resolution = None;
        assert_eq!(
            wait_text(follow.step(Some(&v), &r)),
            "volume pvc-1: resyncing node-b from node-a: 12.0%"
        );
        v.status.as_mut().unwrap().ha_state = Some(HaState::Healthy);
        assert!(matches!(
            follow.step(Some(&v), &r),
            Step::Done(HaState::Healthy)
        ));
    }

    #[test]
    fn following_fails_when_the_resolution_is_replaced_or_the_volume_goes() {
        let (mut v, r) = split_brain();
        let plan = plan_for(&v, &refs(&r), "node-a").unwrap();
        let mut follow = ResolutionFollow::new(&plan);
        v.spec.split_brain_resolution = Some(SplitBrainResolution {
            keep: "node-a".into(),
        });
        wait_text(follow.step(Some(&v), &r));
        // Cleared while the volume still looks split (the controller reports the new state
        // after clearing): wait, saying what a removal by someone else would mean.
        v.spec.split_brain_resolution = None;
        assert!(wait_text(follow.step(Some(&v), &r)).contains(
            "resolution cleared; waiting for the volume to report the replicas connected"
        ));
        v.spec.split_brain_resolution = Some(SplitBrainResolution {
            keep: "node-b".into(),
        });
        let Step::Fail(e) = follow.step(Some(&v), &r) else {
            panic!("another choice fails")
        };
        assert!(
            e.to_string()
                .contains("it now keeps the data of node-b, not node-a"),
            "{e}"
        );
        let Step::Fail(e) = follow.step(None, &r) else {
            panic!("a deleted volume fails")
        };
        assert!(e.to_string().contains("was deleted"), "{e}");
    }
}
