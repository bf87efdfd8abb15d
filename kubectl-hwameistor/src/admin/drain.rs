//! `node drain NODE`: move every volume replica off a node.
//!
//! The plan lists each volume with a replica on the node (its placement, `spec.config`),
//! how it would move and where to (predicted by the controller's own state machine, counting
//! the room the plan's earlier moves take), the pods on the node that must stop for it, and
//! what cannot move and why. Then, in this order: one LocalVolumeMigrate per volume is
//! created (label `hwameistor.io/drain=NODE`), so the controller takes each volume as soon as
//! its pod stopped and refuses to publish a volume being copied; the node is cordoned (so no
//! new pod lands there); the pods are evicted (policy/v1 Eviction, so PodDisruptionBudgets
//! are respected: a refusal is retried); and every migration is followed to its end.
//!
//! The migrations exist before the cordon because the controller's evictor moves the
//! volumes of a cordoned node by itself, and counts a migration of the same volume off the
//! same node, whoever made it, as its own: created first, they are never duplicated. For the
//! same reason the migrations are listed again right before creating any.
//!
//! Running it again resumes: a migration of the same volume off the same node that has not
//! ended is followed, not created twice; a cordoned node stays cordoned; pods gone are gone.

use super::migrate::{placed_on, predict, Facts};
use super::operations::{
    create_operation, follow_operations, list_kind, OperationResource, OperationRow, LABEL_DRAIN,
};
use super::workloads::{read_pods_using, PodUse};
use crate::client::Cluster;
use crate::errors::{is_not_found, AdminError};
use crate::output::{or_dash, Render, TableView};
use crate::progress::Progress;
use futures::future::BoxFuture;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    HaState, LocalVolume, LocalVolumeMigrate, LocalVolumeMigrateSpec, OperationKind,
    OperationPhase, LABEL_VOLUME_GROUP,
};
use hwameistor_core::ha;
use hwameistor_core::operation::evict::LABEL_EVICTION;
use hwameistor_core::operation::migrate::Migrate;
use hwameistor_core::operation::Start;
use hwameistor_core::placement::Placed;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, EvictParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What happens to one volume of the drained node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum DrainAction {
    /// A migration is created for it.
    Migrate,
    /// A migration of it off this node exists and has not ended: it is followed.
    Reuse { operation: String, phase: String },
    /// It goes with the migration of `lead`, another volume of its group (the controller
    /// makes its migration once that one starts; both go to the same node).
    WithGroup { lead: String, group: String },
    /// It cannot move now; the reason says why and what to do.
    Skip { reason: String },
}

/// One volume with a replica on the drained node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainItem {
    pub volume: String,
    pub pvc: Option<String>,
    pub ha: bool,
    pub capacity_bytes: i64,
    pub predicted_target: Option<String>,
    /// How its data moves, in a few words.
    pub data: String,
    /// Pods on the node using it: they are evicted (and restart elsewhere, or once it moved).
    pub pods: Vec<String>,
    #[serde(flatten)]
    pub action: DrainAction,
    /// What the migration would wait for besides its pods (another operation on the volume).
    pub waits: Option<String>,
}

/// What `node drain` is about to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainPlan {
    pub node: String,
    /// A Kubernetes Node of this name exists (there is something to cordon).
    pub node_exists: bool,
    pub already_cordoned: bool,
    pub items: Vec<DrainItem>,
    /// The pods to evict: on the node, using a volume that moves, not being deleted already.
    pub pods: Vec<PodUse>,
    pub notes: Vec<String>,
}

impl DrainPlan {
    pub fn moving(&self) -> impl Iterator<Item = &DrainItem> {
        self.items
            .iter()
            .filter(|i| !matches!(i.action, DrainAction::Skip { .. }))
    }

    pub fn confirmation_action(&self) -> String {
        let mut parts = Vec::new();
        if self.node_exists && !self.already_cordoned {
            parts.push("cordon it".to_string());
        }
        if !self.pods.is_empty() {
            parts.push(format!("evict {} pod(s)", self.pods.len()));
        }
        parts.push(format!("move {} volume(s) off it", self.moving().count()));
        format!("drain node {}: {}", self.node, parts.join(", "))
    }
}

fn kind_cell(ha: bool) -> &'static str {
    if ha {
        "HA"
    } else {
        "plain"
    }
}

impl Render for DrainPlan {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["VOLUME", "KIND", "SIZE", "TO", "DATA", "PODS", "ACTION"])
            .titled(format!(
                "Plan: drain node {} ({} volume(s) with a replica there)",
                self.node,
                self.items.len()
            ));
        for i in &self.items {
            let action = match &i.action {
                DrainAction::Migrate => match &i.waits {
                    Some(w) => format!("migrate ({w})"),
                    None => "migrate".to_string(),
                },
                DrainAction::Reuse { operation, phase } => {
                    format!("follow {operation} ({phase}), created earlier")
                }
                DrainAction::WithGroup { lead, group } => {
                    format!("with {lead}'s migration (group {group})")
                }
                DrainAction::Skip { reason } => format!("cannot move: {reason}"),
            };
            t.push(vec![
                i.volume.clone(),
                kind_cell(i.ha).into(),
                format_size(i.capacity_bytes),
                i.predicted_target
                    .as_deref()
                    .map(|n| format!("{n}?"))
                    .unwrap_or_else(|| "-".into()),
                i.data.clone(),
                if i.pods.is_empty() {
                    "-".into()
                } else {
                    i.pods.join(",")
                },
                action,
            ]);
        }
        let mut p = TableView::new(&["POD", "VOLUME", "OWNER"]).titled("Pods to evict:");
        for u in &self.pods {
            p.push(vec![
                u.pod(),
                u.volume.clone(),
                u.owner
                    .clone()
                    .unwrap_or_else(|| "none: a bare pod, nothing re-creates it".into()),
            ]);
        }
        let mut n = TableView::new(&["NOTE"]).titled("Notes:");
        for x in &self.notes {
            n.push(vec![x.clone()]);
        }
        vec![t, p, n]
    }
}

/// The plan for draining `node`, from what the cluster holds (`pods`: pods bound to the
/// node using HwameiStor volumes; `k8s_node`: its Node, when there is one). Pure.
pub fn plan_drain(
    facts: &Facts,
    node: &str,
    pods: &[PodUse],
    k8s_node: Option<&Node>,
) -> Result<DrainPlan, AdminError> {
    let mut on_node: Vec<&LocalVolume> = facts
        .volumes
        .iter()
        .filter(|v| {
            v.spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == node))
        })
        .collect();
    if on_node.is_empty() && !facts.storage_nodes().iter().any(|n| n == node) {
        return Err(AdminError::UnknownNode {
            name: node.to_string(),
            known: facts.storage_nodes(),
        });
    }
    on_node.sort_by_key(|v| v.name_any());
    let mut extra: Vec<Placed> = Vec::new();
    let mut items = Vec::new();
    let mut notes = Vec::new();
    // Volume → the volume whose (group-wide) migration takes it along, with its target.
    let mut goes_with: BTreeMap<String, (String, String)> = BTreeMap::new();
    for v in on_node {
        let name = v.name_any();
        let config = v.spec.config.clone().unwrap_or_default();
        let replicated = ha::is_ha(&config);
        let st = v.status.clone().unwrap_or_default();
        let others: Vec<String> = ha::active(&config)
            .map(|a| a.hostname.clone())
            .filter(|n| n != node)
            .collect();
        let my_pods: Vec<String> = pods
            .iter()
            .filter(|p| p.volume == name && !p.terminating)
            .map(PodUse::pod)
            .collect();
        let mut item = DrainItem {
            volume: name.clone(),
            pvc: v
                .spec
                .pvc_name
                .as_ref()
                .map(|n| match &v.spec.pvc_namespace {
                    Some(ns) => format!("{ns}/{n}"),
                    None => n.clone(),
                }),
            ha: replicated,
            capacity_bytes: v.spec.required_capacity_bytes,
            predicted_target: None,
            data: "-".into(),
            pods: my_pods,
            action: DrainAction::Migrate,
            waits: None,
        };
        let active: Vec<&OperationRow> = facts
            .operations
            .iter()
            .filter(|r| r.volume == name && !r.is_final())
            .collect();
        let mine = active
            .iter()
            .find(|r| r.kind == OperationKind::Migrate && r.source_node.as_deref() == Some(node));
        if let Some(r) = mine {
            item.predicted_target = r.target_node.clone();
            item.data = data_cell(replicated, &others);
            item.action = DrainAction::Reuse {
                operation: r.name.clone(),
                phase: r.phase_cell(),
            };
            items.push(item);
            continue;
        }
        if let Some((lead, target)) = goes_with.get(&name) {
            item.predicted_target = Some(target.clone());
            item.data = data_cell(replicated, &others);
            item.action = DrainAction::WithGroup {
                lead: lead.clone(),
                group: v
                    .labels()
                    .get(LABEL_VOLUME_GROUP)
                    .cloned()
                    .unwrap_or_default(),
            };
            items.push(item);
            continue;
        }
        if v.metadata.deletion_timestamp.is_some() {
            item.action = DrainAction::Skip {
                reason: "the volume is being deleted".into(),
            };
            items.push(item);
            continue;
        }
        if replicated && st.ha_state != Some(HaState::Healthy) {
            let state = st
                .ha_state
                .map_or_else(|| "not reported".to_string(), |h| format!("{h:?}"));
            item.action = DrainAction::Skip {
                reason: format!(
                    "its other replica ({}) is not healthy (HA {state}): the copy on {node} may be the only complete one; repair the volume first (`kubectl hwameistor volume get {name}`)",
                    others.join(", ")
                ),
            };
            items.push(item);
            continue;
        }
        // The pods on this node are evicted before the migration can start: predict as if
        // the volume were not in use here.
        let mut after = v.clone();
        if let Some(s) = after.status.as_mut() {
            if s.published_node.as_deref() == Some(node) {
                s.published_node = None;
            }
        }
        let spec = LocalVolumeMigrateSpec {
            volume_name: name.clone(),
            source_node: node.to_string(),
            target_nodes: vec![],
            migrate_all_volumes: true,
            bandwidth_limit_bytes_per_second: None,
            abort: false,
            ttl_seconds_after_finished: None,
        };
        let p = predict(
            facts,
            &after,
            OperationKind::Migrate,
            &Migrate { spec: &spec },
            &[],
            &extra,
        );
        match (&p.start, &p.target) {
            (_, Err(why)) => {
                item.action = DrainAction::Skip {
                    reason: format!("no node can take it: {why}"),
                }
            }
            (Start::Fail(why) | Start::Wait(why) | Start::Done(why), _) => {
                item.action = DrainAction::Skip {
                    reason: why.clone(),
                }
            }
            (Start::Go(_), Ok(target)) => {
                item.predicted_target = Some(target.clone());
                item.data = data_cell(replicated, &others);
                extra.extend(placed_on(v, target, replicated));
                for m in &p.group_volumes {
                    if let Some(mv) = facts.volumes.iter().find(|x| &x.name_any() == m) {
                        let r = mv.spec.config.as_ref().is_some_and(ha::is_ha);
                        extra.extend(placed_on(mv, target, r));
                    }
                    goes_with.insert(m.clone(), (name.clone(), target.clone()));
                }
                if let Some(r) = active.first() {
                    item.waits = Some(format!(
                        "waits until {} {} ({}) ended",
                        r.kind,
                        r.name,
                        r.phase_cell()
                    ));
                } else if let Some(h) = &v.spec.operation {
                    item.waits = Some(format!(
                        "waits until {} {} ended",
                        h.kind.map_or_else(|| "operation".into(), |k| k.to_string()),
                        h.name
                    ));
                }
                if replicated && !ha::alone(&config) {
                    notes.push(format!(
                        "{name} (HA): single copy during its move: DRBD 8.4 replicates to one peer, so until the new replica on {target} is UpToDate the volume has ONE complete copy (on {}); the replica on {node} is kept intact until then, and a failure mid-move falls back to it",
                        others.join(", ")
                    ));
                }
            }
        }
        items.push(item);
    }
    let moving: BTreeSet<&str> = items
        .iter()
        .filter(|i| !matches!(i.action, DrainAction::Skip { .. }))
        .map(|i| i.volume.as_str())
        .collect();
    let stuck: BTreeSet<&str> = items
        .iter()
        .filter(|i| matches!(i.action, DrainAction::Skip { .. }))
        .map(|i| i.volume.as_str())
        .collect();
    // A pod being deleted already needs no eviction; its volume moves once it is gone.
    let evict: Vec<PodUse> = pods
        .iter()
        .filter(|p| moving.contains(p.volume.as_str()) && !p.terminating)
        .cloned()
        .collect();
    let evicted: BTreeSet<String> = evict.iter().map(PodUse::pod).collect();
    for p in pods
        .iter()
        .filter(|p| stuck.contains(p.volume.as_str()) && evicted.contains(&p.pod()))
    {
        notes.push(format!(
            "pod {} also uses volume {}, which cannot move: it cannot start on another node until that volume moves",
            p.pod(),
            p.volume
        ));
    }
    for p in &evict {
        let Some(item) = items.iter().find(|i| i.volume == p.volume) else {
            continue;
        };
        if p.owner.is_none() {
            notes.push(format!(
                "pod {} is a bare pod (no controller): evicted, it is gone for good",
                p.pod()
            ));
            continue;
        }
        let others: Vec<String> = facts
            .volumes
            .iter()
            .find(|v| v.name_any() == p.volume)
            .and_then(|v| v.spec.config.as_ref())
            .map(|c| {
                ha::active(c)
                    .map(|a| a.hostname.clone())
                    .filter(|n| n != node)
                    .collect()
            })
            .unwrap_or_default();
        let target = item.predicted_target.as_deref().unwrap_or("its new node");
        notes.push(if item.ha && !others.is_empty() {
            format!(
                "pod {} can restart on {} (where {}'s other replica is) while the volume moves; at the end its PersistentVolume is re-created with the new nodes only while nothing uses the volume, so the migration then waits (step Accessibility) until that pod stops once",
                p.pod(),
                others.join(", "),
                p.volume
            )
        } else {
            format!(
                "pod {} restarts once {} moved, on {target}: a volume without replication is copied while nothing uses it",
                p.pod(),
                p.volume
            )
        });
    }
    let already_cordoned = k8s_node
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    match k8s_node {
        None => notes.push(format!(
            "there is no Kubernetes Node {node}: nothing to cordon"
        )),
        Some(_) if already_cordoned => notes.push(format!("node {node} is cordoned already")),
        Some(_) => notes.push(format!(
            "node {node} is cordoned (spec.unschedulable=true) once the migrations exist, so no new pod lands there; `kubectl uncordon {node}` undoes it"
        )),
    }
    if !stuck.is_empty() && k8s_node.is_some() {
        notes.push(format!(
            "the controller's evictor also acts on a cordoned node (unless it is labelled {LABEL_EVICTION}=disable): it makes a migration of its own for each volume that cannot move now ({}); each waits or fails with its reason, in `kubectl hwameistor operation list --volume VOLUME`",
            stuck.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    if !moving.is_empty() {
        notes.push(format!(
            "migrations are created before the pods are evicted, so the controller takes each volume as soon as its pod stopped; the controller runs few data moves at once (by default one per node): the migrations off {node} run one after the other"
        ));
        notes.push(
            "TO is predicted: the controller chooses each target when its migration starts".into(),
        );
    }
    Ok(DrainPlan {
        node: node.to_string(),
        node_exists: k8s_node.is_some(),
        already_cordoned,
        items,
        pods: evict,
        notes,
    })
}

fn data_cell(replicated: bool, others: &[String]) -> String {
    if replicated {
        format!("DRBD resync from {}", others.join(","))
    } else {
        "block copy (offline)".into()
    }
}

/// Reads the cluster and makes the plan (see [`plan_drain`]).
pub async fn plan(cluster: &Cluster, node: &str) -> Result<DrainPlan, AdminError> {
    let facts = Facts::read(cluster).await?;
    let on_node: Vec<LocalVolume> = facts
        .volumes
        .iter()
        .filter(|v| {
            v.spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == node))
        })
        .cloned()
        .collect();
    let pods = read_pods_using(cluster, Some(node), &on_node).await?;
    let k8s_node = Api::<Node>::all(cluster.client.clone())
        .get_opt(node)
        .await
        .map_err(|e| AdminError::api(format!("reading Node {node}"), e))?;
    plan_drain(&facts, node, &pods, k8s_node.as_ref())
}

/// How one eviction went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// The pod is being evicted (or deleted).
    Evicted,
    /// It was gone already.
    Gone,
    /// Refused for now (a PodDisruptionBudget: HTTP 429); the server's message. Retried.
    Blocked(String),
}

/// Evicts pods. The API server's Eviction subresource in the CLI; tests substitute their
/// own where the server they run on does not serve it.
pub trait Evictor: Send + Sync {
    fn evict<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Eviction, AdminError>>;
}

/// Evicts through the API server: the policy/v1 Eviction subresource (PodDisruptionBudgets
/// respected), or, with `delete_instead`, a plain delete (they are not).
pub struct ApiEvictor {
    pub client: kube::Client,
    pub delete_instead: bool,
}

impl Evictor for ApiEvictor {
    fn evict<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Eviction, AdminError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let pod = format!("{namespace}/{name}");
            if self.delete_instead {
                return match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => Ok(Eviction::Evicted),
                    Err(e) if is_not_found(&e) => Ok(Eviction::Gone),
                    Err(e) => Err(AdminError::api(format!("deleting pod {pod}"), e)),
                };
            }
            match api.evict(name, &EvictParams::default()).await {
                Ok(_) => Ok(Eviction::Evicted),
                Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked(s.message)),
                Err(e) if is_not_found(&e) => {
                    // A 404 for a pod that is still there means the server does not serve
                    // evictions at all.
                    match api.get_opt(name).await {
                        Ok(None) => Ok(Eviction::Gone),
                        Ok(Some(_)) => Err(AdminError::EvictionUnsupported { pod }),
                        Err(e) => Err(AdminError::api(format!("reading pod {pod}"), e)),
                    }
                }
                Err(e) => Err(AdminError::api(format!("evicting pod {pod}"), e)),
            }
        })
    }
}

/// How `node drain` runs.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    pub dry_run: bool,
    /// Bounds the evictions and the following together.
    pub timeout: Duration,
    /// Follow the migrations to their end (`--no-wait`: false).
    pub follow: bool,
    /// Pause between attempts of an eviction a PodDisruptionBudget refused.
    pub evict_retry: Duration,
}

/// Where one volume of the drained node ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Its replica is off the node.
    Moved,
    /// Its migration failed, was aborted or deleted.
    Failed,
    /// Its migration has not ended (not followed, or the deadline passed): it goes on.
    Running,
    /// It could not move; see the message.
    NotAttempted,
    /// Dry run: it would move.
    Planned,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainResult {
    pub volume: String,
    pub operation: Option<String>,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub message: Option<String>,
}

/// What `node drain` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub node: String,
    pub dry_run: bool,
    /// This run cordoned the node.
    pub cordoned: bool,
    pub volumes: Vec<DrainResult>,
    pub evicted: Vec<String>,
    /// Pods not evicted, with the reason.
    pub not_evicted: Vec<(String, String)>,
    /// The migrations were followed (not `--no-wait`).
    pub followed: bool,
    pub timed_out: bool,
    pub notes: Vec<String>,
}

impl DrainReport {
    /// 0 when every volume moved (not followed: when every migration exists and every pod
    /// was evicted); a dry run: when the plan was made. Non-zero when a volume could not
    /// move, a migration failed, a pod was not evicted, or the deadline passed.
    pub fn exit_code(&self) -> i32 {
        if self.dry_run {
            return 0;
        }
        let ok = self.volumes.iter().all(|r| match r.outcome {
            Outcome::Moved | Outcome::Planned => true,
            Outcome::Running => !self.followed,
            Outcome::Failed | Outcome::NotAttempted => false,
        }) && self.not_evicted.is_empty();
        if ok {
            0
        } else {
            1
        }
    }

    fn count(&self, o: Outcome) -> usize {
        self.volumes.iter().filter(|r| r.outcome == o).count()
    }

    /// One line: how many moved, failed, still run, could not move.
    pub fn summary(&self) -> String {
        if self.dry_run {
            return format!(
                "dry run: {} volume(s) would move off {}, {} cannot; nothing was changed",
                self.count(Outcome::Planned),
                self.node,
                self.count(Outcome::NotAttempted)
            );
        }
        format!(
            "node {}: {} moved, {} failed, {} still running, {} not attempted",
            self.node,
            self.count(Outcome::Moved),
            self.count(Outcome::Failed),
            self.count(Outcome::Running),
            self.count(Outcome::NotAttempted)
        )
    }
}

impl Render for DrainReport {
    fn tables(&self, _wide: bool) -> Vec<TableView> {
        let mut t = TableView::new(&["VOLUME", "OPERATION", "TO", "RESULT", "MESSAGE"])
            .titled(self.summary());
        for r in &self.volumes {
            t.push(vec![
                r.volume.clone(),
                or_dash(r.operation.as_deref()),
                or_dash(r.target.as_deref()),
                match r.outcome {
                    Outcome::NotAttempted => "NotAttempted".into(),
                    o => format!("{o:?}"),
                },
                or_dash(r.message.as_deref()),
            ]);
        }
        let mut p = TableView::new(&["POD", "RESULT"]).titled("Pods:");
        for e in &self.evicted {
            p.push(vec![e.clone(), "evicted".into()]);
        }
        for (pod, why) in &self.not_evicted {
            p.push(vec![pod.clone(), format!("not evicted: {why}")]);
        }
        let mut n = TableView::new(&["NOTE"]).titled("Notes:");
        for x in &self.notes {
            n.push(vec![x.clone()]);
        }
        vec![t, p, n]
    }
}

/// Evicts one pod, retrying while a PodDisruptionBudget refuses, until `deadline`.
async fn evict_one(
    evictor: &dyn Evictor,
    pod: &PodUse,
    retry: Duration,
    deadline: Instant,
    progress: &Progress,
) -> Result<(), String> {
    let mut last: Option<String> = None;
    loop {
        match evictor.evict(&pod.namespace, &pod.name).await {
            Ok(Eviction::Evicted | Eviction::Gone) => {
                progress.note(&format!("evicted pod {}", pod.pod()));
                return Ok(());
            }
            Ok(Eviction::Blocked(msg)) => {
                if last.as_deref() != Some(msg.as_str()) {
                    progress.note(&format!(
                        "pod {}: eviction refused for now ({msg}); a PodDisruptionBudget protects it; retrying every {}",
                        pod.pod(),
                        crate::errors::humanize(retry)
                    ));
                }
                if Instant::now() + retry > deadline {
                    return Err(format!(
                        "refused until the deadline by a PodDisruptionBudget: {msg}"
                    ));
                }
                last = Some(msg);
                tokio::time::sleep(retry).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Carries out `plan`: create (or reuse) the migrations, cordon, evict the pods, follow the
/// migrations; a dry run has the server check the creations and changes nothing. Failures
/// of single volumes or pods go into the report; an error ends the drain only when nothing
/// can go on (the cordon failed, the server does not serve evictions).
pub async fn drain(
    cluster: &Cluster,
    plan: &DrainPlan,
    opts: &DrainOptions,
    evictor: &dyn Evictor,
    progress: &Progress,
) -> Result<DrainReport, AdminError> {
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let node = &plan.node;
    let mut report = DrainReport {
        node: node.clone(),
        dry_run: opts.dry_run,
        cordoned: false,
        volumes: Vec::new(),
        evicted: Vec::new(),
        not_evicted: Vec::new(),
        followed: opts.follow && !opts.dry_run,
        timed_out: false,
        notes: Vec::new(),
    };
    // The migrations first: each volume is taken as soon as its pod stopped, and the
    // controller's evictor, woken by the cordon, finds them. One made since the plan (by the
    // evictor of a node cordoned already, or another drain) is followed, not duplicated.
    let existing: Vec<OperationRow> = list_kind::<LocalVolumeMigrate>(cluster, None)
        .await?
        .iter()
        .map(|m| m.row())
        .filter(|r| !r.is_final() && r.source_node.as_deref() == Some(node.as_str()))
        .collect();
    let mut followed: BTreeMap<String, String> = BTreeMap::new(); // operation -> volume
    let mut with_group: Vec<(&DrainItem, &str)> = Vec::new();
    for item in &plan.items {
        let action = match (
            &item.action,
            existing.iter().find(|r| r.volume == item.volume),
        ) {
            (DrainAction::Migrate, Some(r)) => DrainAction::Reuse {
                operation: r.name.clone(),
                phase: r.phase_cell(),
            },
            (a, _) => a.clone(),
        };
        match action {
            DrainAction::Skip { reason } => report.volumes.push(DrainResult {
                volume: item.volume.clone(),
                operation: None,
                target: None,
                outcome: Outcome::NotAttempted,
                message: Some(reason),
            }),
            DrainAction::Reuse { operation, phase } if opts.dry_run => {
                report.volumes.push(DrainResult {
                    volume: item.volume.clone(),
                    operation: Some(operation),
                    target: item.predicted_target.clone(),
                    outcome: Outcome::Planned,
                    message: Some(format!("its migration exists already ({phase})")),
                })
            }
            DrainAction::Reuse { operation, .. } => {
                followed.insert(operation, item.volume.clone());
            }
            DrainAction::WithGroup { .. } if opts.dry_run => report.volumes.push(DrainResult {
                volume: item.volume.clone(),
                operation: None,
                target: item.predicted_target.clone(),
                outcome: Outcome::Planned,
                message: Some("goes with its group's migration".into()),
            }),
            DrainAction::WithGroup { ref lead, .. } => {
                if let Some(l) = plan.items.iter().find(|i| &i.volume == lead) {
                    with_group.push((item, l.volume.as_str()));
                }
            }
            DrainAction::Migrate => {
                let created =
                    create_operation(cluster, &item.volume, "migrate", opts.dry_run, |name| {
                        drain_migration(name, &item.volume, node)
                    })
                    .await;
                match created {
                    Ok(m) if opts.dry_run => report.volumes.push(DrainResult {
                        volume: item.volume.clone(),
                        operation: Some(m.name_any()),
                        target: item.predicted_target.clone(),
                        outcome: Outcome::Planned,
                        message: Some("dry run: the server accepted the migration".into()),
                    }),
                    Ok(m) => {
                        progress.note(&format!(
                            "created LocalVolumeMigrate {} (volume {})",
                            m.name_any(),
                            item.volume
                        ));
                        followed.insert(m.name_any(), item.volume.clone());
                    }
                    Err(e) => report.volumes.push(DrainResult {
                        volume: item.volume.clone(),
                        operation: None,
                        target: None,
                        outcome: Outcome::Failed,
                        message: Some(format!("cannot create its migration: {e}")),
                    }),
                }
            }
        }
    }
    if opts.dry_run {
        report
            .notes
            .push("dry run: nothing was cordoned, created or evicted".into());
        sort_results(&mut report.volumes);
        return Ok(report);
    }
    if plan.node_exists && !plan.already_cordoned {
        let patch = serde_json::json!({"spec": {"unschedulable": true}});
        Api::<Node>::all(cluster.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| AdminError::api(format!("cordoning node {node}"), e))?;
        report.cordoned = true;
        progress.note(&format!(
            "cordoned node {node} (spec.unschedulable=true); `kubectl uncordon {node}` undoes it"
        ));
    }
    // Pods of volumes whose migration could not be created need not stop.
    let failed: BTreeSet<&str> = report
        .volumes
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .map(|r| r.volume.as_str())
        .collect();
    let pods: Vec<&PodUse> = plan
        .pods
        .iter()
        .filter(|p| !failed.contains(p.volume.as_str()))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let pods: Vec<&PodUse> = pods.into_iter().filter(|p| seen.insert(p.pod())).collect();
    let results = futures::future::join_all(
        pods.iter()
            .map(|p| evict_one(evictor, p, opts.evict_retry, deadline, progress)),
    )
    .await;
    for (p, r) in pods.iter().zip(results) {
        match r {
            Ok(()) => report.evicted.push(p.pod()),
            Err(why) => {
                // A server without evictions stops the drain: nothing else would evict.
                if why.contains("does not serve the eviction subresource") {
                    return Err(AdminError::EvictionUnsupported { pod: p.pod() });
                }
                report.not_evicted.push((p.pod(), why))
            }
        }
    }
    let names: BTreeSet<String> = followed.keys().cloned().collect();
    let outcome = if opts.follow {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let o =
            follow_operations::<LocalVolumeMigrate>(cluster, &names, remaining, progress).await?;
        progress.finish();
        Some(o)
    } else {
        None
    };
    for (op, volume) in &followed {
        let last: Option<OperationRow> = outcome
            .as_ref()
            .and_then(|o| o.rows.get(op).cloned().flatten());
        let item_target = plan
            .items
            .iter()
            .find(|i| &i.volume == volume)
            .and_then(|i| i.predicted_target.clone());
        let (outcome_kind, message, target) = match (&outcome, &last) {
            (None, _) => (
                Outcome::Running,
                Some("not followed (--no-wait)".to_string()),
                item_target,
            ),
            (Some(_), None) if outcome.as_ref().is_some_and(|o| o.rows.contains_key(op)) => (
                Outcome::Failed,
                Some("its migration was deleted before it ended".to_string()),
                item_target,
            ),
            (Some(_), None) => (
                Outcome::Running,
                Some("not seen yet".to_string()),
                item_target,
            ),
            (Some(_), Some(r)) => {
                let outcome = match r.phase {
                    Some(OperationPhase::Succeeded) => Outcome::Moved,
                    Some(OperationPhase::Failed | OperationPhase::Aborted) => Outcome::Failed,
                    _ => Outcome::Running,
                };
                (
                    outcome,
                    Some(r.status_line()),
                    r.target_node.clone().or(item_target),
                )
            }
        };
        report.volumes.push(DrainResult {
            volume: volume.clone(),
            operation: Some(op.clone()),
            target,
            outcome: outcome_kind,
            message,
        });
    }
    // A volume that goes with its group's migration ends as that migration does (it ends
    // only once its group's other volumes' migrations ended).
    for (item, lead) in with_group {
        let Some(l) = report.volumes.iter().find(|r| r.volume == lead).cloned() else {
            continue;
        };
        report.volumes.push(DrainResult {
            volume: item.volume.clone(),
            message: Some(format!(
                "with {lead}'s migration (its group's): {}",
                l.message.clone().unwrap_or_default()
            )),
            ..l
        });
    }
    report.timed_out = outcome.as_ref().is_some_and(|o| o.timed_out);
    if report.volumes.iter().any(|r| r.outcome == Outcome::Running) {
        report.notes.push(format!(
            "the migrations go on without this command: `kubectl hwameistor operation list -l {LABEL_DRAIN}={node}` shows them; run the drain again to follow them"
        ));
    }
    if report
        .volumes
        .iter()
        .any(|r| r.outcome == Outcome::NotAttempted)
    {
        report.notes.push(format!(
            "node {node} still holds replicas that could not move; fix what their message says and run the drain again"
        ));
    }
    if report.cordoned || plan.already_cordoned {
        report.notes.push(format!(
            "node {node} stays cordoned; `kubectl uncordon {node}` once it may take pods again"
        ));
    }
    sort_results(&mut report.volumes);
    Ok(report)
}

fn sort_results(r: &mut [DrainResult]) {
    r.sort_by(|a, b| a.volume.cmp(&b.volume));
}

/// The migration a drain of `node` creates for `volume`, labelled with the node.
pub fn drain_migration(name: &str, volume: &str, node: &str) -> LocalVolumeMigrate {
    let mut m = LocalVolumeMigrate::new(
        name,
        LocalVolumeMigrateSpec {
            volume_name: volume.to_string(),
            source_node: node.to_string(),
            target_nodes: vec![],
            migrate_all_volumes: true,
            bandwidth_limit_bytes_per_second: None,
            abort: false,
            ttl_seconds_after_finished: None,
        },
    );
    m.metadata.labels = Some(BTreeMap::from([(
        LABEL_DRAIN.to_string(),
        node.to_string(),
    )]));
    m
}

#[cfg(test)]
mod tests {
    use super::super::migrate::fixtures::*;
    use super::*;

    fn pod(ns: &str, name: &str, node: &str, volume: &str, owner: Option<&str>) -> PodUse {
        PodUse {
            namespace: ns.into(),
            name: name.into(),
            node: Some(node.into()),
            pvc: format!("data-{volume}"),
            volume: volume.into(),
            owner: owner.map(str::to_string),
            terminating: false,
        }
    }

    #[test]
    fn every_replica_on_the_node_is_planned_and_later_moves_count_the_room_of_earlier_ones() {
        let mut degraded = volume("h2", GI, &["a", "c"], None);
        degraded.status.as_mut().unwrap().ha_state = Some(HaState::Degraded);
        let f = facts(
            vec![node("a", 50 * GI), node("b", 15 * GI), node("c", 12 * GI)],
            vec![
                volume("p1", 10 * GI, &["a"], Some("a")),
                volume("p2", 10 * GI, &["a"], None),
                volume("h1", 2 * GI, &["a", "b"], Some("a")),
                degraded,
                volume("elsewhere", GI, &["b"], None),
                volume("huge", 40 * GI, &["a"], None),
            ],
        );
        let pods = [
            pod("web", "web-0", "a", "p1", Some("StatefulSet/web")),
            pod("web", "bare", "a", "h1", None),
        ];
        let plan = plan_drain(&f, "a", &pods, None).unwrap();
        let vols: Vec<&str> = plan.items.iter().map(|i| i.volume.as_str()).collect();
        assert_eq!(vols, ["h1", "h2", "huge", "p1", "p2"]);
        let by = |v: &str| plan.items.iter().find(|i| i.volume == v).unwrap();
        // h1 (HA) goes to c, the only node without its replica.
        assert_eq!(by("h1").predicted_target.as_deref(), Some("c"));
        assert!(by("h1").data.contains("DRBD resync from b"));
        assert!(
            matches!(&by("h2").action, DrainAction::Skip { reason } if reason.contains("not healthy (HA Degraded)"))
        );
        assert!(
            matches!(&by("huge").action, DrainAction::Skip { reason } if reason.starts_with("no node can take it"))
        );
        // p1 takes b (most room); p2 then finds b too full, c takes... less than 10Gi after
        // h1's 2Gi: it cannot move.
        assert_eq!(by("p1").predicted_target.as_deref(), Some("b"));
        assert_eq!(by("p1").pods, ["web/web-0"]);
        assert!(
            matches!(&by("p2").action, DrainAction::Skip { reason } if reason.contains("no node can take it")),
            "{:?}",
            by("p2")
        );
        assert_eq!(plan.pods.len(), 2);
        let notes = plan.notes.join("\n");
        assert!(
            notes.contains("h1 (HA): single copy during its move"),
            "{notes}"
        );
        assert!(notes.contains("pod web/bare is a bare pod"), "{notes}");
        assert!(
            notes.contains("pod web/web-0 restarts once p1 moved, on b: a volume without replication is copied while nothing uses it"),
            "{notes}"
        );
        assert!(notes.contains("there is no Kubernetes Node a"), "{notes}");
        assert_eq!(
            plan.confirmation_action(),
            "drain node a: evict 2 pod(s), move 2 volume(s) off it"
        );
        let e = plan_drain(&f, "zz", &[], None).unwrap_err();
        assert!(e.to_string().starts_with("node \"zz\" not found"), "{e}");
    }

    #[test]
    fn a_group_gets_one_migration_and_its_other_volumes_go_with_it() {
        let grouped = |name: &str, bytes: i64| {
            let mut v = volume(name, bytes, &["a"], None);
            v.metadata.labels = Some(BTreeMap::from([(
                LABEL_VOLUME_GROUP.to_string(),
                "lvg-g1".to_string(),
            )]));
            v
        };
        // b has the most room but not for the whole group: c takes it.
        let f = facts(
            vec![node("a", 50 * GI), node("b", 14 * GI), node("c", 12 * GI)],
            vec![
                grouped("g1", 5 * GI),
                grouped("g2", 6 * GI),
                volume("solo", 3 * GI, &["a"], None),
            ],
        );
        let plan = plan_drain(&f, "a", &[], None).unwrap();
        let by = |v: &str| plan.items.iter().find(|i| i.volume == v).unwrap();
        assert_eq!(by("g1").action, DrainAction::Migrate);
        assert_eq!(by("g1").predicted_target.as_deref(), Some("b"));
        assert_eq!(
            by("g2").action,
            DrainAction::WithGroup {
                lead: "g1".into(),
                group: "lvg-g1".into()
            }
        );
        assert_eq!(by("g2").predicted_target.as_deref(), Some("b"));
        // The group's 11Gi count on b: solo (3Gi) finds c roomier now.
        assert_eq!(by("solo").predicted_target.as_deref(), Some("c"));
        assert_eq!(plan.moving().count(), 3);
        let text = crate::output::render_tables(&plan.tables(false), false);
        assert!(
            text.contains("with g1's migration (group lvg-g1)"),
            "{text}"
        );
    }

    #[test]
    fn a_migration_off_the_node_that_runs_already_is_followed_not_created_again() {
        let mut f = facts(
            vec![node("a", 50 * GI), node("b", 50 * GI)],
            vec![volume("p1", GI, &["a"], None)],
        );
        let m = drain_migration("p1-migrate-abcde", "p1", "a");
        f.operations = vec![m.row()];
        let plan = plan_drain(&f, "a", &[], None).unwrap();
        assert_eq!(
            plan.items[0].action,
            DrainAction::Reuse {
                operation: "p1-migrate-abcde".into(),
                phase: "-".into()
            }
        );
        assert_eq!(plan.items[0].pods, Vec::<String>::new());
        assert_eq!(m.row().drain_node.as_deref(), Some("a"));
    }
}
