//! `volume migrate` and `volume convert`: plan, refuse what cannot be done, create the
//! operation, follow it.
//!
//! The plan asks the controller's own state machines (`hwameistor_core::operation`) what
//! they would do with the cluster as it is read now: whether the operation could start,
//! what it would wait for, and which node it would choose (`choose_target`). The controller
//! decides for real when the operation starts, so the plan says "predicted". Whatever the
//! controller would fail at once is refused here, before anything is created.

use super::lookup::list_all;
use super::operations::{
    busy_error, create_operation, finish_report, OperationReport, OperationResource, OperationRow,
};
use super::volumes::{find_volume, require_volume};
use super::workloads::{read_pods_using, PodUse};
use crate::client::Cluster;
use crate::errors::{short_list, AdminError};
use crate::output::{Render, TableView};
use crate::progress::Progress;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalStorageNode, LocalVolume, LocalVolumeConvert, LocalVolumeConvertSpec, LocalVolumeMigrate,
    LocalVolumeMigrateSpec, LocalVolumeReplica, OperationKind, OperationStatus, PoolClass,
    VolumeConfig, LABEL_VOLUME_GROUP,
};
use hwameistor_core::operation::convert::Convert;
use hwameistor_core::operation::group::{self, Group};
use hwameistor_core::operation::migrate::{choose_target, Migrate};
use hwameistor_core::operation::{Machine, Op, Start, World, DEFAULT_TTL_SECONDS};
use hwameistor_core::placement::{self, Placed, Policy};
use hwameistor_core::{drbd, ha};
use kube::ResourceExt;
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Smallest bandwidth cap the API accepts (bytes per second).
pub const MIN_BANDWIDTH: i64 = 1 << 20;

/// What the cluster holds that a plan is made from, read once.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub volumes: Vec<LocalVolume>,
    pub replicas: Vec<LocalVolumeReplica>,
    pub nodes: Vec<LocalStorageNode>,
    /// Every operation of the three kinds (non-final ones hold or wait for a volume).
    pub operations: Vec<OperationRow>,
    /// Every snapshot (a volume's stay beside its replica on their node).
    pub snapshots: Vec<hwameistor_api::LocalVolumeSnapshot>,
}

impl Facts {
    pub async fn read(cluster: &Cluster) -> Result<Facts, AdminError> {
        Ok(Facts {
            volumes: list_all(cluster).await?,
            replicas: list_all(cluster).await?,
            nodes: list_all(cluster).await?,
            operations: super::operations::list_rows(cluster, None).await?,
            snapshots: match list_all(cluster).await {
                Ok(s) => s,
                // A cluster installed before snapshots existed has no such CRD yet.
                Err(AdminError::NotInstalled) => Vec::new(),
                Err(e) => return Err(e),
            },
        })
    }

    /// Nodes whose agent publishes a block mover (a volume without replication moves only
    /// between two of them).
    pub fn movers(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.mover.is_some()))
            .map(|n| n.name_any())
            .collect()
    }

    pub fn replicas_of(&self, volume: &str) -> Vec<LocalVolumeReplica> {
        self.replicas
            .iter()
            .filter(|r| r.spec.volume_name == volume)
            .cloned()
            .collect()
    }

    pub fn storage_nodes(&self) -> Vec<String> {
        let mut n: Vec<String> = self.nodes.iter().map(|n| n.name_any()).collect();
        n.sort();
        n
    }

    /// The other volumes of `v`'s LocalVolumeGroup (by its group label) and the group's
    /// name; none when it is in no group.
    pub fn group_of(&self, v: &LocalVolume) -> (Option<String>, Vec<LocalVolume>) {
        let Some(g) = v.labels().get(LABEL_VOLUME_GROUP) else {
            return (None, Vec::new());
        };
        let members = self
            .volumes
            .iter()
            .filter(|m| {
                m.labels().get(LABEL_VOLUME_GROUP) == Some(g) && m.name_any() != v.name_any()
            })
            .cloned()
            .collect();
        (Some(g.clone()), members)
    }

    /// A volume by name or `NAMESPACE/PVC`, or the error naming those that exist.
    pub fn volume(&self, key: &str) -> Result<&LocalVolume, AdminError> {
        find_volume(&self.volumes, key).ok_or_else(|| {
            let mut known: Vec<String> = self.volumes.iter().map(|v| v.name_any()).collect();
            known.sort();
            AdminError::UnknownVolume {
                name: key.to_string(),
                known,
            }
        })
    }
}

/// What the controller's state machine would do with an operation created now.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Whether it would start, wait (why), fail at once (why), or find nothing to do.
    pub start: Start,
    /// The node it would choose for the new replica, or why none fits.
    pub target: Result<String, String>,
    /// The volumes of its group that would go with it (to the same node).
    pub group_volumes: Vec<String>,
}

/// Asks `machine` (the controller's state machine of `kind`) about volume `v` as `facts`
/// hold it, with `extra` placements counted as well (replicas other moves of the same plan
/// will put on nodes). `suggested` are the nodes asked for. Pure.
pub fn predict(
    facts: &Facts,
    v: &LocalVolume,
    kind: OperationKind,
    machine: &dyn Machine,
    suggested: &[String],
    extra: &[Placed],
) -> Prediction {
    let views = placement::node_views(&facts.nodes);
    let mut placed = placement::placed_replicas(&facts.volumes, &facts.replicas);
    placed.extend_from_slice(extra);
    let movers = facts.movers();
    let replicas = facts.replicas_of(&v.name_any());
    let (_, members) = facts.group_of(v);
    let snapshots: Vec<hwameistor_api::LocalVolumeSnapshot> = facts
        .snapshots
        .iter()
        .filter(|s| s.spec.source_volume == v.name_any())
        .cloned()
        .collect();
    let status = OperationStatus::default();
    let op = Op {
        kind,
        name: "plan",
        uid: "",
        generation: None,
        abort: false,
        deleting: false,
        has_finalizer: true,
        ttl_seconds: DEFAULT_TTL_SECONDS,
        status: &status,
    };
    let w = World {
        now: jiff::Timestamp::now(),
        volume: Some(v),
        replicas: &replicas,
        nodes: &views,
        placed: &placed,
        // The controller's placement policy is its own setting: the default here.
        policy: Policy::default(),
        movers: &movers,
        pv: None,
        // Slots are taken and freed as operations run: waiting for one is not refused.
        slot: Ok(()),
        free_resource_id: ha::allocate_resource_id(&facts.volumes),
        group: Group {
            members: &members,
            children: &[],
        },
        snapshots: &snapshots,
    };
    let start = machine.start(&op, &w, v);
    let also = group::joining(machine, &w).unwrap_or_default();
    let target = match &start {
        Start::Go(f) if f.target_node.is_some() => Ok(f.target_node.clone().unwrap_or_default()),
        _ => match v.spec.config.as_ref() {
            // A conversion's new replica is replicated; a migration's is as its volume.
            Some(c) => choose_target(
                suggested,
                &w,
                v,
                c,
                kind == OperationKind::Convert || ha::is_ha(c),
                &also,
            )
            .map_err(|e| e.message),
            None => Err("the volume is not placed yet".into()),
        },
    };
    let group_volumes = also
        .iter()
        .filter_map(|(m, _)| m.metadata.name.clone())
        .collect();
    Prediction {
        start,
        target,
        group_volumes,
    }
}

/// The placement a predicted move adds on `target`, so the next prediction of the same plan
/// counts the room it takes.
pub fn placed_on(v: &LocalVolume, target: &str, replicated: bool) -> Option<Placed> {
    let class = PoolClass::from_pool_name(&v.spec.pool_name)?;
    let bytes = v.spec.required_capacity_bytes;
    Some(Placed {
        volume: v.name_any(),
        node: target.to_string(),
        class,
        required: bytes,
        allocated: None,
        meta: if replicated {
            drbd::meta_bytes(bytes)
        } else {
            0
        },
        thin: false,
    })
}

/// The nodes holding the volume's replicas (those not being replaced).
fn replica_nodes(config: &VolumeConfig) -> Vec<String> {
    ha::active(config).map(|a| a.hostname.clone()).collect()
}

/// `--to` nodes must be storage nodes without a replica of the volume.
fn check_targets(
    facts: &Facts,
    volume: &str,
    config: &VolumeConfig,
    to: &[String],
) -> Result<(), AdminError> {
    let nodes = facts.storage_nodes();
    for t in to {
        if !nodes.contains(t) {
            return Err(AdminError::InvalidTarget {
                volume: volume.to_string(),
                node: t.clone(),
                reason: format!(
                    "it is not a storage node (no LocalStorageNode); storage nodes: {}",
                    short_list(&nodes, 20)
                ),
            });
        }
        if config.replicas.iter().any(|a| &a.hostname == t) {
            return Err(AdminError::InvalidTarget {
                volume: volume.to_string(),
                node: t.clone(),
                reason: "it holds a replica of the volume already".into(),
            });
        }
    }
    Ok(())
}

/// `kind` of a volume for a plan: `HA (DRBD, replicas on a, b)` or `plain (one replica)`.
fn kind_text(config: &VolumeConfig) -> String {
    if ha::is_ha(config) {
        format!(
            "HA (DRBD, replicas on {})",
            replica_nodes(config).join(", ")
        )
    } else {
        "plain (one replica, no replication)".into()
    }
}

/// `ns/name (on node)` of the pods using the volume, for a plan.
fn pods_text(pods: &[PodUse]) -> String {
    pods.iter()
        .map(|p| match &p.node {
            Some(n) => format!("pod {} on {n}", p.pod()),
            None => format!("pod {}", p.pod()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `volume migrate` asks for.
#[derive(Clone, Debug, Default)]
pub struct MigrateRequest {
    pub volume: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub bandwidth: Option<i64>,
    /// Move this volume only, not its group (`--volume-only`).
    pub volume_only: bool,
}

/// What `volume migrate` is about to do, shown before it asks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigratePlan {
    pub volume: String,
    pub pvc: Option<String>,
    pub ha: bool,
    pub kind: String,
    pub capacity_bytes: i64,
    pub from: String,
    /// The nodes asked for (`--to`), in order of preference.
    pub to: Vec<String>,
    /// The node the controller would choose now.
    pub predicted_target: String,
    /// HA: the replica that stays (and feeds the new one).
    pub staying: Vec<String>,
    pub published_node: Option<String>,
    /// How the data moves.
    pub data: String,
    /// What the migration would wait for, as the controller would say it.
    pub waits: Vec<String>,
    /// Pods using the volume (they must stop where the plan says so).
    pub pods: Vec<PodUse>,
    pub bandwidth_limit_bytes_per_second: Option<i64>,
    /// The volume's LocalVolumeGroup, when it is in one.
    pub group: Option<String>,
    /// The group's volumes that go with it (each by an operation the controller makes).
    pub group_volumes: Vec<String>,
    /// Whether the operation takes the group along (false: `--volume-only`).
    pub all_volumes: bool,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

impl MigratePlan {
    pub fn confirmation_action(&self) -> String {
        let with = if self.group_volumes.is_empty() {
            String::new()
        } else {
            format!(" with its group's {}", self.group_volumes.join(", "))
        };
        format!(
            "move the replica of volume {}{with} from {} to {} (predicted)",
            self.volume, self.from, self.predicted_target
        )
    }

    /// The operation this plan creates, named `name`.
    pub fn operation(&self, name: &str) -> LocalVolumeMigrate {
        LocalVolumeMigrate::new(
            name,
            LocalVolumeMigrateSpec {
                volume_name: self.volume.clone(),
                source_node: self.from.clone(),
                target_nodes: self.to.clone(),
                migrate_all_volumes: self.all_volumes,
                bandwidth_limit_bytes_per_second: self.bandwidth_limit_bytes_per_second,
                abort: false,
                ttl_seconds_after_finished: None,
            },
        )
    }
}

/// What a plan says of the operations made for the group's other volumes.
const GROUP_NOTE: &str = "the group's other volumes go by operations of their own (named after this one and the volume, labelled hwameistor.io/group-operation), each moving as its volume's kind does (the same waits apply to them); this one ends once they all ended, and aborting it aborts them while it can still be undone";

/// With `--volume-only`: the warning naming the members of `group` the group-wide
/// `machine` would have taken along (`say(group, members)`), when there are any.
fn apart_warning(
    group: &Option<String>,
    members: &[LocalVolume],
    machine: &dyn Machine,
    say: impl FnOnce(&str, String) -> String,
) -> Option<String> {
    let g = group.as_deref()?;
    let left: Vec<String> = members
        .iter()
        .filter(|m| machine.member_goes(m).is_some())
        .map(|m| m.name_any())
        .collect();
    (!left.is_empty()).then(|| say(g, left.join(", ")))
}

/// The plan's `group` row: which of the group's volumes go along.
fn group_row(group: &Option<String>, going: &[String], all: bool) -> Option<String> {
    let g = group.as_deref()?;
    Some(if !all {
        format!("{g}: this volume only (--volume-only); the group's other volumes stay")
    } else if going.is_empty() {
        format!("{g}: none of its other volumes needs to go")
    } else {
        format!(
            "{g}: {} go with it to the same node (one operation each, made by the controller once this one starts)",
            going.join(", ")
        )
    })
}

fn notes_table(title: &str, header: &str, lines: &[String]) -> TableView {
    let mut t = TableView::new(&[header]).titled(title);
    for l in lines {
        t.push(vec![l.clone()]);
    }
    t
}

impl Render for MigratePlan {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let pvc = self
            .pvc
            .as_deref()
            .map(|p| format!(" (PVC {p})"))
            .unwrap_or_default();
        let mut t = TableView::new(&["FIELD", "VALUE"]).titled(format!(
            "Plan: migrate the replica of volume {}{pvc} off {}",
            self.volume, self.from
        ));
        t.push(vec!["volume".into(), self.volume.clone()]);
        t.push(vec!["kind".into(), self.kind.clone()]);
        t.push(vec!["size".into(), format_size(self.capacity_bytes)]);
        t.push(vec!["from".into(), self.from.clone()]);
        let asked = if self.to.is_empty() {
            "any node with room".to_string()
        } else {
            format!("asked: {}", self.to.join(", "))
        };
        t.push(vec![
            "to".into(),
            format!(
                "{} (predicted; {asked}; the controller chooses when it starts)",
                self.predicted_target
            ),
        ]);
        t.push(vec!["data".into(), self.data.clone()]);
        if let Some(row) = group_row(&self.group, &self.group_volumes, self.all_volumes) {
            t.push(vec!["group".into(), row]);
        }
        if let Some(b) = self.bandwidth_limit_bytes_per_second {
            t.push(vec!["bandwidth".into(), format!("{}/s", format_size(b))]);
        }
        if !self.pods.is_empty() {
            t.push(vec!["used by".into(), pods_text(&self.pods)]);
        }
        vec![
            t,
            notes_table("Waits for:", "WAIT", &self.waits),
            notes_table("Warnings:", "WARNING", &self.warnings),
            notes_table("Notes:", "NOTE", &self.notes),
        ]
    }
}

/// The plan for `req`, or why it is refused: unknown or unplaced volume, a source without a
/// replica (or none given for a volume with several), a target that is not a storage node or
/// holds a replica, no node with room, another operation holding or waiting for the volume,
/// or anything the controller would fail at once. `pods`: those using the volume. Pure.
pub fn plan_migrate(
    facts: &Facts,
    req: &MigrateRequest,
    pods: &[PodUse],
) -> Result<MigratePlan, AdminError> {
    let v = facts.volume(&req.volume)?;
    let volume = v.name_any();
    let Some(config) = v.spec.config.as_ref() else {
        return Err(AdminError::NotPlaced {
            volume,
            action: "migrate".into(),
        });
    };
    let nodes = replica_nodes(config);
    let replicated = ha::is_ha(config);
    let from = match (&req.from, nodes.as_slice()) {
        (Some(f), _) => f.clone(),
        (None, [only]) => only.clone(),
        (None, _) => return Err(AdminError::FromRequired { volume, nodes }),
    };
    if !nodes.contains(&from) {
        return Err(AdminError::NotAReplicaNode {
            volume,
            node: from,
            nodes,
        });
    }
    check_targets(facts, &volume, config, &req.to)?;
    if let Some(b) = req.bandwidth.filter(|b| *b < MIN_BANDWIDTH) {
        return Err(AdminError::InvalidArgument(format!(
            "--bandwidth {} is below the smallest cap, 1Mi (per second)",
            format_size(b)
        )));
    }
    if let Some(e) = busy_error(v, &facts.operations) {
        return Err(e);
    }
    let spec = LocalVolumeMigrateSpec {
        volume_name: volume.clone(),
        source_node: from.clone(),
        target_nodes: req.to.clone(),
        migrate_all_volumes: !req.volume_only,
        bandwidth_limit_bytes_per_second: req.bandwidth,
        abort: false,
        ttl_seconds_after_finished: None,
    };
    let p = predict(
        facts,
        v,
        OperationKind::Migrate,
        &Migrate { spec: &spec },
        &req.to,
        &[],
    );
    let target = p.target.map_err(|reason| AdminError::NoTarget {
        volume: volume.clone(),
        reason,
    })?;
    let mut waits = Vec::new();
    match p.start {
        Start::Fail(reason) => {
            return Err(AdminError::OperationRefused {
                volume,
                action: "migrate".into(),
                reason,
            })
        }
        Start::Wait(why) => waits.push(why),
        Start::Go(_) | Start::Done(_) => {}
    }
    let published = v.status.as_ref().and_then(|s| s.published_node.clone());
    let staying: Vec<String> = nodes.iter().filter(|n| **n != from).cloned().collect();
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let (group, members) = facts.group_of(v);
    if req.volume_only {
        let wide = LocalVolumeMigrateSpec {
            migrate_all_volumes: true,
            ..spec.clone()
        };
        warnings.extend(apart_warning(&group, &members, &Migrate { spec: &wide }, |g, left| {
            format!("--volume-only: the group {g} will be apart: {left} stay on {from}, so a pod using them all can run on no node until they follow (drop --volume-only to move them together)")
        }));
    }
    if !p.group_volumes.is_empty() {
        notes.push(GROUP_NOTE.into());
    }
    let data = if replicated && ha::alone(config) {
        if req.bandwidth.is_some() {
            warnings.push("--bandwidth caps a block copy (a volume without replication); this volume syncs over DRBD at DRBD's own rate".into());
        }
        if published.as_deref() == Some(from.as_str()) {
            notes.push(format!(
                "its pod must stop on {from} for the move to start (the replica there serves it)"
            ));
        }
        format!(
            "over DRBD (the volume runs DRBD on {from} alone): a new replica on {target} joins {from} as its peer and syncs from it, two copies throughout; {from} is removed once {target} is UpToDate"
        )
    } else if replicated {
        let stay = staying.join(", ");
        warnings.push(format!(
            "single copy during the move: DRBD 8.4 replicates to one peer, so from the start of the move until {target} is UpToDate the volume has ONE complete copy (on {stay}); the replica on {from} is disconnected but kept intact (data and metadata) until then, and a failure mid-move falls back to it"
        ));
        if req.bandwidth.is_some() {
            warnings.push("--bandwidth caps a block copy (a volume without replication); an HA volume resyncs over DRBD at DRBD's own rate".into());
        }
        if published.as_deref() == Some(from.as_str()) {
            notes.push(format!(
                "once its pod stopped on {from}, it can run on {stay} while the replica moves"
            ));
        }
        if v.spec.pvc_name.is_some() {
            notes.push(format!(
                "once the data moved, the volume's PersistentVolume is re-created naming {stay} and {target} (Kubernetes keeps a PV's node affinity immutable), which is done only while nothing uses the volume: if its pod runs then, the migration waits at step Accessibility until it stops once (the old replica is removed before that wait)"
            ));
        }
        format!(
            "over DRBD: a new replica on {target} joins {stay} and resyncs from it; the replica on {from} is then removed"
        )
    } else {
        if published.is_some() {
            notes.push(format!(
                "publishing the volume is refused during the copy: its pod starts again once the move is done, on {target}"
            ));
        }
        let cap = req
            .bandwidth
            .map(|b| format!(", at most {}/s", format_size(b)))
            .unwrap_or_default();
        format!(
            "block copy by the nodes' movers from {from} to {target} (checkpointed, digest-verified{cap}); the replica on {from} is removed only once the copy is verified"
        )
    };
    notes.push(format!(
        "abort is possible until {from} left the placement: `kubectl hwameistor operation abort NAME`; the volume stays usable with its data where it was"
    ));
    notes.push("the controller runs few data moves at once (by default one per node): the migration may wait Pending for a free slot".into());
    Ok(MigratePlan {
        pvc: v
            .spec
            .pvc_name
            .as_ref()
            .map(|n| match &v.spec.pvc_namespace {
                Some(ns) => format!("{ns}/{n}"),
                None => n.clone(),
            }),
        volume,
        ha: replicated,
        kind: kind_text(config),
        capacity_bytes: v.spec.required_capacity_bytes,
        from,
        to: req.to.clone(),
        predicted_target: target,
        staying,
        published_node: published,
        data,
        waits,
        pods: pods.to_vec(),
        bandwidth_limit_bytes_per_second: req.bandwidth,
        group,
        group_volumes: p.group_volumes,
        all_volumes: !req.volume_only,
        warnings,
        notes,
    })
}

/// Pods using `v` on the node it is published on (nothing uses an unpublished volume);
/// best effort: a plan does not fail for want of reading pods.
async fn users(cluster: &Cluster, v: &LocalVolume) -> (Vec<PodUse>, Option<String>) {
    let Some(node) = v.status.as_ref().and_then(|s| s.published_node.clone()) else {
        return (Vec::new(), None);
    };
    match read_pods_using(cluster, Some(&node), std::slice::from_ref(v)).await {
        Ok(p) => (p, None),
        Err(e) => (
            Vec::new(),
            Some(format!("cannot tell which pods use the volume: {e}")),
        ),
    }
}

/// Reads the cluster and makes the plan (see [`plan_migrate`]).
pub async fn plan(cluster: &Cluster, req: &MigrateRequest) -> Result<MigratePlan, AdminError> {
    // One read for a clear "not found" before reading everything else.
    let v = require_volume(cluster, &req.volume).await?;
    let facts = Facts::read(cluster).await?;
    let (pods, note) = users(cluster, &v).await;
    let req = MigrateRequest {
        volume: v.name_any(),
        ..req.clone()
    };
    let mut plan = plan_migrate(&facts, &req, &pods)?;
    plan.notes.extend(note);
    Ok(plan)
}

/// Creates the plan's migration (a dry run has the server validate it and keeps nothing)
/// and, unless a dry run, follows it (`follow`: its deadline; None: `--no-wait`).
pub async fn migrate(
    cluster: &Cluster,
    plan: &MigratePlan,
    dry_run: bool,
    follow: Option<Duration>,
    progress: &Progress,
) -> Result<OperationReport, AdminError> {
    let created = create_operation(cluster, &plan.volume, "migrate", dry_run, |name| {
        plan.operation(name)
    })
    .await?;
    let report = OperationReport {
        operation: created.row(),
        dry_run,
        created: !dry_run,
        followed: false,
        notes: if dry_run {
            vec![format!(
                "dry run: the server accepted LocalVolumeMigrate {}; nothing was created",
                created.name_any()
            )]
        } else {
            Vec::new()
        },
    };
    if dry_run {
        return Ok(report);
    }
    finish_report(cluster, &created, report, follow, progress).await
}

/// What `volume convert` asks for.
#[derive(Clone, Debug, Default)]
pub struct ConvertRequest {
    pub volume: String,
    pub to: Option<String>,
    /// Convert this volume only, not its group (`--volume-only`).
    pub volume_only: bool,
}

/// What `volume convert` is about to do.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvertPlan {
    pub volume: String,
    pub pvc: Option<String>,
    pub capacity_bytes: i64,
    /// The node of the existing replica (it keeps the data).
    pub source: String,
    pub to: Option<String>,
    pub predicted_target: String,
    pub published_node: Option<String>,
    pub data: String,
    pub waits: Vec<String>,
    pub pods: Vec<PodUse>,
    /// The volume's LocalVolumeGroup, when it is in one.
    pub group: Option<String>,
    /// The group's volumes converted with it (their new replicas on the same node).
    pub group_volumes: Vec<String>,
    /// Whether the operation takes the group along (false: `--volume-only`).
    pub all_volumes: bool,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

impl ConvertPlan {
    pub fn confirmation_action(&self) -> String {
        let with = if self.group_volumes.is_empty() {
            String::new()
        } else {
            format!(" with its group's {}", self.group_volumes.join(", "))
        };
        format!(
            "convert volume {}{with} to HA with a second replica on {} (predicted)",
            self.volume, self.predicted_target
        )
    }

    pub fn operation(&self, name: &str) -> LocalVolumeConvert {
        LocalVolumeConvert::new(
            name,
            LocalVolumeConvertSpec {
                volume_name: self.volume.clone(),
                replica_number: 2,
                convert_all_volumes: self.all_volumes,
                target_node: self.to.clone(),
                abort: false,
                ttl_seconds_after_finished: None,
            },
        )
    }
}

impl Render for ConvertPlan {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let pvc = self
            .pvc
            .as_deref()
            .map(|p| format!(" (PVC {p})"))
            .unwrap_or_default();
        let mut t = TableView::new(&["FIELD", "VALUE"]).titled(format!(
            "Plan: convert volume {}{pvc} to HA (2 replicas over DRBD)",
            self.volume
        ));
        t.push(vec!["volume".into(), self.volume.clone()]);
        t.push(vec!["size".into(), format_size(self.capacity_bytes)]);
        t.push(vec!["replica kept".into(), self.source.clone()]);
        let asked = match &self.to {
            Some(n) => format!("asked: {n}"),
            None => "any node with room".into(),
        };
        t.push(vec![
            "new replica".into(),
            format!(
                "{} (predicted; {asked}; the controller chooses when it starts)",
                self.predicted_target
            ),
        ]);
        t.push(vec!["data".into(), self.data.clone()]);
        if let Some(row) = group_row(&self.group, &self.group_volumes, self.all_volumes) {
            t.push(vec!["group".into(), row]);
        }
        if !self.pods.is_empty() {
            t.push(vec!["used by".into(), pods_text(&self.pods)]);
        }
        vec![
            t,
            notes_table("Waits for:", "WAIT", &self.waits),
            notes_table("Warnings:", "WARNING", &self.warnings),
            notes_table("Notes:", "NOTE", &self.notes),
        ]
    }
}

/// The plan for converting `req.volume`, or why it is refused (like [`plan_migrate`];
/// also a volume replicated already). Pure.
pub fn plan_convert(
    facts: &Facts,
    req: &ConvertRequest,
    pods: &[PodUse],
) -> Result<ConvertPlan, AdminError> {
    let v = facts.volume(&req.volume)?;
    let volume = v.name_any();
    let Some(config) = v.spec.config.as_ref() else {
        return Err(AdminError::NotPlaced {
            volume,
            action: "convert".into(),
        });
    };
    let to: Vec<String> = req.to.iter().cloned().collect();
    check_targets(facts, &volume, config, &to)?;
    if let Some(e) = busy_error(v, &facts.operations) {
        return Err(e);
    }
    let spec = LocalVolumeConvertSpec {
        volume_name: volume.clone(),
        replica_number: 2,
        convert_all_volumes: !req.volume_only,
        target_node: req.to.clone(),
        abort: false,
        ttl_seconds_after_finished: None,
    };
    let p = predict(
        facts,
        v,
        OperationKind::Convert,
        &Convert { spec: &spec },
        &to,
        &[],
    );
    let mut waits = Vec::new();
    match p.start {
        Start::Fail(reason) | Start::Done(reason) => {
            return Err(AdminError::OperationRefused {
                volume,
                action: "convert".into(),
                reason,
            })
        }
        Start::Wait(why) => waits.push(why),
        Start::Go(_) => {}
    }
    let target = p.target.map_err(|reason| AdminError::NoTarget {
        volume: volume.clone(),
        reason,
    })?;
    let source = replica_nodes(config).join(", ");
    let published = v.status.as_ref().and_then(|s| s.published_node.clone());
    let online = ha::alone(config);
    let mut notes = Vec::new();
    if online {
        notes.push("abort is possible until the new replica is in sync: it is removed again and the volume goes on alone".into());
    } else {
        notes.push(format!("abort is possible until the new replica is in sync: it is removed again; once DRBD was set up under the volume it stays there (the volume then runs DRBD on {source} alone, its data untouched, and converts online later)"));
    }
    if online && published.is_some() && v.spec.pvc_name.is_some() {
        notes.push("the volume converts while in use; its PersistentVolume is re-created naming both nodes once its pod stops once (Kubernetes keeps a PV's node affinity immutable): until then the conversion waits at step Accessibility, replicated".into());
    }
    notes.push("the controller runs few data moves at once (by default one per node): the conversion may wait Pending for a free slot".into());
    let (group, members) = facts.group_of(v);
    let mut warnings = vec![format!(
        "until the initial sync completed, the replica on {source} is the only complete copy (as it is now)"
    )];
    if !p.group_volumes.is_empty() {
        notes.push(GROUP_NOTE.into());
    }
    if req.volume_only {
        let wide = LocalVolumeConvertSpec {
            convert_all_volumes: true,
            ..spec.clone()
        };
        warnings.extend(apart_warning(&group, &members, &Convert { spec: &wide }, |g, left| {
            format!("--volume-only: the group {g} will be apart: {left} keep one replica, so after a failure of {source} a pod using them all can run on no node (drop --volume-only to convert them together)")
        }));
    }
    let data = if online {
        format!(
            "the volume runs DRBD on {source} already (created convertible): a new replica on {target} joins it as its peer and receives a full sync from it, online"
        )
    } else {
        format!(
            "the replica on {source} gains DRBD with its metadata on a small volume of its own (the data is not touched) and stays the volume's data; a new replica on {target} receives a full initial sync from it"
        )
    };
    Ok(ConvertPlan {
        pvc: v
            .spec
            .pvc_name
            .as_ref()
            .map(|n| match &v.spec.pvc_namespace {
                Some(ns) => format!("{ns}/{n}"),
                None => n.clone(),
            }),
        volume,
        capacity_bytes: v.spec.required_capacity_bytes,
        data,
        warnings,
        source,
        to: req.to.clone(),
        predicted_target: target,
        published_node: published,
        waits,
        pods: pods.to_vec(),
        group,
        group_volumes: p.group_volumes,
        all_volumes: !req.volume_only,
        notes,
    })
}

pub async fn plan_conversion(
    cluster: &Cluster,
    req: &ConvertRequest,
) -> Result<ConvertPlan, AdminError> {
    let v = require_volume(cluster, &req.volume).await?;
    let facts = Facts::read(cluster).await?;
    let (pods, note) = users(cluster, &v).await;
    let req = ConvertRequest {
        volume: v.name_any(),
        ..req.clone()
    };
    let mut plan = plan_convert(&facts, &req, &pods)?;
    plan.notes.extend(note);
    Ok(plan)
}

/// Creates the plan's conversion and follows it (like [`migrate`]).
pub async fn convert(
    cluster: &Cluster,
    plan: &ConvertPlan,
    dry_run: bool,
    follow: Option<Duration>,
    progress: &Progress,
) -> Result<OperationReport, AdminError> {
    let created = create_operation(cluster, &plan.volume, "convert", dry_run, |name| {
        plan.operation(name)
    })
    .await?;
    let report = OperationReport {
        operation: created.row(),
        dry_run,
        created: !dry_run,
        followed: false,
        notes: if dry_run {
            vec![format!(
                "dry run: the server accepted LocalVolumeConvert {}; nothing was created",
                created.name_any()
            )]
        } else {
            Vec::new()
        },
    };
    if dry_run {
        return Ok(report);
    }
    finish_report(cluster, &created, report, follow, progress).await
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use hwameistor_api::{
        HaState, LocalStorageNodeSpec, LocalStorageNodeStatus, LocalVolumeReplicaSpec,
        LocalVolumeReplicaStatus, LocalVolumeSpec, LocalVolumeStatus, MoverEndpoint, NodeState,
        PoolStatus, ReplicaAssignment, ReplicaState, VolumeState,
    };

    pub const GI: i64 = 1 << 30;

    /// A Ready storage node with an HDD pool of `free` bytes (of 100 GiB), a replication
    /// address and a block mover.
    pub fn node(name: &str, free: i64) -> LocalStorageNode {
        let mut n = LocalStorageNode::new(
            name,
            LocalStorageNodeSpec {
                hostname: name.into(),
                storage_ip: Some("10.0.0.9".into()),
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
                    total_capacity_bytes: 100 * GI,
                    used_capacity_bytes: 100 * GI - free,
                    free_capacity_bytes: free,
                    extent_size_bytes: 4 << 20,
                    volume_count: 0,
                    disks: vec![],
                    thin: None,
                    thin_overprovision_percent: None,
                },
            )]
            .into(),
            mover: Some(MoverEndpoint {
                endpoint: "10.0.0.9:7000".into(),
                public_key: "k".into(),
            }),
            ..Default::default()
        });
        n
    }

    /// A Ready volume of `bytes` on `nodes` (HA when more than one), published on
    /// `published`.
    pub fn volume(name: &str, bytes: i64, nodes: &[&str], published: Option<&str>) -> LocalVolume {
        let ha = nodes.len() > 1;
        let mut v = LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: PoolClass::Hdd.pool_name().into(),
                volume_kind: Default::default(),
                required_capacity_bytes: bytes,
                replica_number: nodes.len() as i64,
                convertible: false,
                accessibility: Default::default(),
                pvc_namespace: Some("default".into()),
                pvc_name: Some(format!("data-{name}")),
                fs_type: Some("xfs".into()),
                config: Some(VolumeConfig {
                    version: 1,
                    required_capacity_bytes: bytes,
                    resource_id: if ha { 3 } else { -1 },
                    replicas: nodes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| ReplicaAssignment {
                            id: i as i64 + 1,
                            hostname: n.to_string(),
                            primary: ha && i == 0,
                            ..Default::default()
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
        v.status = Some(LocalVolumeStatus {
            state: Some(VolumeState::Ready),
            allocated_capacity_bytes: Some(bytes),
            published_node: published.map(str::to_string),
            ha_state: ha.then_some(HaState::Healthy),
            ..Default::default()
        });
        v
    }

    pub fn replicas(v: &LocalVolume) -> Vec<LocalVolumeReplica> {
        let name = v.name_any();
        v.spec
            .config
            .iter()
            .flat_map(|c| c.replicas.iter())
            .map(|a| {
                let mut r = LocalVolumeReplica::new(
                    &format!("{name}-{}", a.hostname),
                    LocalVolumeReplicaSpec {
                        volume_name: name.clone(),
                        pool_name: v.spec.pool_name.clone(),
                        node_name: a.hostname.clone(),
                        volume_kind: Default::default(),
                        required_capacity_bytes: v.spec.required_capacity_bytes,
                        replication: None,
                        copy_from: None,
                        thin: false,
                    },
                );
                r.status = Some(LocalVolumeReplicaStatus {
                    state: Some(ReplicaState::Ready),
                    allocated_capacity_bytes: Some(v.spec.required_capacity_bytes),
                    ..Default::default()
                });
                r
            })
            .collect()
    }

    pub fn facts(nodes: Vec<LocalStorageNode>, volumes: Vec<LocalVolume>) -> Facts {
        Facts {
            replicas: volumes.iter().flat_map(replicas).collect(),
            volumes,
            nodes,
            operations: vec![],
            snapshots: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn req(volume: &str, from: Option<&str>, to: &[&str]) -> MigrateRequest {
        MigrateRequest {
            volume: volume.into(),
            from: from.map(str::to_string),
            to: to.iter().map(|s| s.to_string()).collect(),
            bandwidth: None,
            volume_only: false,
        }
    }

    fn grouped(mut v: LocalVolume, group: &str) -> LocalVolume {
        v.metadata.labels = Some(std::collections::BTreeMap::from([(
            LABEL_VOLUME_GROUP.to_string(),
            group.to_string(),
        )]));
        v
    }

    #[test]
    fn a_grouped_volume_plans_its_group_along_to_a_node_with_room_for_all() {
        // b has the most room, but holds the other replica of g2 (HA, leaving a too).
        let f = facts(
            vec![node("a", 50 * GI), node("b", 30 * GI), node("c", 20 * GI)],
            vec![
                grouped(volume("g1", 5 * GI, &["a"], None), "lvg-g1"),
                grouped(volume("g2", 9 * GI, &["a", "b"], None), "lvg-g1"),
                grouped(volume("g3", GI, &["b"], None), "lvg-g1"),
            ],
        );
        let plan = plan_migrate(&f, &req("g1", None, &[]), &[]).unwrap();
        // g3 is not on a: it stays; g2 goes, and cannot go to b: the group goes to c.
        assert_eq!(plan.group_volumes, vec!["g2".to_string()]);
        assert_eq!(plan.predicted_target, "c");
        assert!(plan.operation("m").spec.migrate_all_volumes);
        assert!(plan.confirmation_action().contains("with its group's g2"));
        let text = crate::output::render_tables(&plan.tables(false), false);
        assert!(
            text.contains("lvg-g1: g2 go with it to the same node"),
            "{text}"
        );
        // Only this one: b, with a warning that the group is apart.
        let only = MigrateRequest {
            volume_only: true,
            ..req("g1", None, &[])
        };
        let plan = plan_migrate(&f, &only, &[]).unwrap();
        assert_eq!(plan.predicted_target, "b");
        assert!(plan.group_volumes.is_empty());
        assert!(!plan.operation("m").spec.migrate_all_volumes);
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.contains("the group lvg-g1 will be apart: g2 stay on a")),
            "{:?}",
            plan.warnings
        );
        // No node for the whole group: refused before anything is created.
        let f = facts(
            vec![node("a", 50 * GI), node("b", 10 * GI)],
            vec![
                grouped(volume("g1", 5 * GI, &["a"], None), "lvg-g1"),
                grouped(volume("g2", 9 * GI, &["a"], None), "lvg-g1"),
            ],
        );
        let e = plan_migrate(&f, &req("g1", None, &[]), &[]).unwrap_err();
        assert!(
            e.to_string().contains(
                "no node can take the volume and the group's volumes going with it (g2) together"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_grouped_conversion_plans_every_plain_volume_of_the_group() {
        let f = facts(
            vec![node("a", 50 * GI), node("b", 50 * GI)],
            vec![
                grouped(volume("g1", GI, &["a"], None), "lvg-g1"),
                grouped(volume("g2", GI, &["a"], None), "lvg-g1"),
            ],
        );
        let plan = plan_convert(
            &f,
            &ConvertRequest {
                volume: "g1".into(),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(plan.group_volumes, vec!["g2".to_string()]);
        assert!(plan.operation("c").spec.convert_all_volumes);
        let only = plan_convert(
            &f,
            &ConvertRequest {
                volume: "g1".into(),
                volume_only: true,
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert!(!only.operation("c").spec.convert_all_volumes);
        assert!(only
            .warnings
            .iter()
            .any(|w| w.contains("g2 keep one replica")));
    }

    #[test]
    fn a_plain_volume_moves_from_its_only_replica_to_the_roomiest_node() {
        let f = facts(
            vec![node("a", 50 * GI), node("b", 20 * GI), node("c", 40 * GI)],
            vec![volume("v", 10 * GI, &["a"], Some("a"))],
        );
        let p = plan_migrate(&f, &req("v", None, &[]), &[]).unwrap();
        assert_eq!((p.from.as_str(), p.predicted_target.as_str()), ("a", "c"));
        assert!(!p.ha);
        assert!(
            p.data
                .starts_with("block copy by the nodes' movers from a to c"),
            "{}",
            p.data
        );
        // In use: the controller would wait, and says why.
        assert!(
            p.waits[0].contains("the volume is in use on a"),
            "{:?}",
            p.waits
        );
        assert!(
            p.notes[0].starts_with("publishing the volume is refused during the copy: its pod starts again once the move is done, on c"),
            "{:?}",
            p.notes
        );
        assert!(p.warnings.is_empty());
        // --to wins when it fits.
        let p = plan_migrate(&f, &req("v", None, &["b"]), &[]).unwrap();
        assert_eq!(p.predicted_target, "b");
        assert_eq!(p.operation("x").spec.target_nodes, ["b"]);
    }

    #[test]
    fn an_ha_volume_needs_from_and_warns_of_the_single_copy() {
        let f = facts(
            vec![node("a", 50 * GI), node("b", 50 * GI), node("c", 40 * GI)],
            vec![volume("v", 10 * GI, &["a", "b"], Some("b"))],
        );
        let e = plan_migrate(&f, &req("v", None, &[]), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "volume \"v\" is replicated (HA) with replicas on a, b: say which one moves with --from NODE"
        );
        let p = plan_migrate(&f, &req("v", Some("a"), &[]), &[]).unwrap();
        assert!(p.ha);
        assert_eq!(p.predicted_target, "c");
        assert_eq!(p.staying, ["b"]);
        assert!(
            p.waits.is_empty(),
            "published on the staying node: nothing waits"
        );
        assert!(
            p.warnings[0].contains("ONE complete copy (on b)"),
            "{:?}",
            p.warnings
        );
        assert!(p.data.contains("resyncs from it"), "{}", p.data);
        let text = crate::output::render_tables(&p.tables(false), false);
        assert!(
            text.starts_with("Plan: migrate the replica of volume v (PVC default/data-v) off a\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "c (predicted; any node with room; the controller chooses when it starts)"
            ),
            "{text}"
        );
    }

    #[test]
    fn refusals_come_before_anything_is_created() {
        let mut busy = volume("busy", GI, &["a"], None);
        busy.spec.operation = Some(hwameistor_api::OperationRef {
            kind: Some(OperationKind::Expand),
            name: "busy-expand-x".into(),
            uid: "u".into(),
            bandwidth_limit_bytes_per_second: None,
        });
        let mut unplaced = volume("new", GI, &["a"], None);
        unplaced.spec.config = None;
        let f = facts(
            vec![node("a", 50 * GI), node("b", GI / 2)],
            vec![volume("v", 10 * GI, &["a"], None), busy, unplaced],
        );
        let err = |r: MigrateRequest| plan_migrate(&f, &r, &[]).unwrap_err().to_string();
        assert!(err(req("nope", None, &[]))
            .starts_with("volume \"nope\" not found; known volumes: busy, new, v"));
        assert_eq!(
            err(req("new", None, &[])),
            "volume \"new\" is not placed yet (no node holds a replica of it): nothing to migrate"
        );
        assert_eq!(
            err(req("v", Some("b"), &[])),
            "node \"b\" holds no replica of volume \"v\"; its replicas are on: a"
        );
        assert!(err(req("v", None, &["a"])).contains("it holds a replica of the volume already"));
        assert!(err(req("v", None, &["zz"]))
            .contains("it is not a storage node (no LocalStorageNode); storage nodes: a, b"));
        let e = err(req("v", None, &[]));
        assert!(
            e.starts_with("no node can take the replica of volume \"v\""),
            "{e}"
        );
        assert!(e.contains("b has 512Mi free"), "{e}");
        let e = err(req("busy", None, &[]));
        assert_eq!(e, "volume \"busy\" is held by Expand busy-expand-x (holding the volume): only one operation changes a volume at a time; wait until it ended, or abort it; see `kubectl hwameistor operation get busy-expand-x`");
        let e = plan_migrate(
            &f,
            &MigrateRequest {
                bandwidth: Some(1000),
                ..req("v", None, &[])
            },
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("below the smallest cap"), "{e}");
    }

    #[test]
    fn a_plain_volume_needs_movers() {
        let mut a = node("a", 50 * GI);
        a.status.as_mut().unwrap().mover = None;
        let f = facts(
            vec![a, node("b", 50 * GI)],
            vec![volume("v", GI, &["a"], None)],
        );
        let p = plan_migrate(&f, &req("v", None, &[]), &[]).unwrap();
        assert!(
            p.waits[0].contains("a runs no block mover"),
            "{:?}",
            p.waits
        );
        let mut b = node("b", 50 * GI);
        b.status.as_mut().unwrap().mover = None;
        let f = facts(
            vec![node("a", 50 * GI), b],
            vec![volume("v", GI, &["a"], None)],
        );
        let e = plan_migrate(&f, &req("v", None, &[]), &[]).unwrap_err();
        assert!(e.to_string().contains("b runs no block mover"), "{e}");
    }

    #[test]
    fn convert_plans_a_second_replica_and_refuses_an_ha_volume() {
        let f = facts(
            vec![node("a", 50 * GI), node("b", 30 * GI), node("c", 40 * GI)],
            vec![
                volume("v", 10 * GI, &["a"], Some("a")),
                volume("h", GI, &["a", "b"], None),
            ],
        );
        let p = plan_convert(
            &f,
            &ConvertRequest {
                volume: "v".into(),
                to: None,
                volume_only: false,
            },
            &[],
        )
        .unwrap();
        assert_eq!((p.source.as_str(), p.predicted_target.as_str()), ("a", "c"));
        assert!(
            p.waits[0].contains("the volume is in use on a"),
            "{:?}",
            p.waits
        );
        assert_eq!(p.operation("x").spec.replica_number, 2);
        let e = plan_convert(
            &f,
            &ConvertRequest {
                volume: "h".into(),
                to: None,
                volume_only: false,
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing to convert volume \"h\": the volume is replicated already (on a, b)"
        );
    }

    #[test]
    fn a_convertible_volume_converts_and_moves_online_over_drbd() {
        let mut cv = volume("cv", 10 * GI, &["a", "b"], Some("a"));
        cv.spec.convertible = true;
        cv.spec.replica_number = 1;
        if let Some(c) = cv.spec.config.as_mut() {
            c.replicas.retain(|r| r.hostname == "a");
        }
        let f = facts(
            vec![node("a", 50 * GI), node("b", 30 * GI), node("c", 40 * GI)],
            vec![cv],
        );
        let p = plan_convert(
            &f,
            &ConvertRequest {
                volume: "cv".into(),
                to: None,
                volume_only: false,
            },
            &[],
        )
        .unwrap();
        assert!(p.waits.is_empty(), "in use, converts online: {:?}", p.waits);
        assert!(p.data.contains("online"), "{}", p.data);
        assert!(p.notes[0].contains("until the new replica is in sync"));
        let p = plan_migrate(&f, &req("cv", None, &[]), &[]).unwrap();
        assert!(p.ha);
        assert!(
            p.warnings.is_empty(),
            "no single-copy window: {:?}",
            p.warnings
        );
        assert!(p.data.contains("two copies throughout"), "{}", p.data);
    }
}
