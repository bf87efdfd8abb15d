//! The LocalVolume reconciler: carries out [`hwameistor_core::volume`] decisions.
//!
//! Event-driven: it runs when a LocalVolume or one of the LocalVolumeReplicas it owns
//! changes, and a volume still waiting for room also runs when some LocalStorageNode's
//! pools change. Placements are serialized under one lock and read the cluster fresh from
//! the API server, so two volumes placed at the same moment always see each other.
//!
//! A [`Scope`] partitions the cluster between controllers: a scoped controller places only
//! on the LocalStorageNodes its label selector matches and acts only on the LocalVolumes
//! pinned to them. Without one (the default, as deployed) it acts on everything.

use crate::metrics::Metrics;
use futures::StreamExt;
use hwameistor_api::volume::{
    CONDITION_SCHEDULED, CONDITION_SPLIT_BRAIN, REASON_NO_CAPACITY, REASON_PLACED,
};
use hwameistor_api::{
    HaState, LocalStorageNode, LocalVolume, LocalVolumeReplica, LocalVolumeSnapshot, NodeState,
    PoolClass, PoolStatus, ReplicaAssignment, VolumeConfig, VolumeState, FINALIZER_VOLUME,
    LABEL_VOLUME,
};
use hwameistor_core::ha;
use hwameistor_core::placement::{self, PlacementError, Policy};
use hwameistor_core::restore;
use hwameistor_core::volume::{self as volume_state, StatusUpdate, Step};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a volume no node has room for is tried again when no node's pools change
/// meanwhile (room freed by a deleted volume shows in the controller's accounting before
/// any node reports it).
pub const UNPLACED_RETRY: Duration = Duration::from_secs(30);

/// The longest Event note the API server accepts (events.k8s.io/v1 `note`).
const EVENT_NOTE_LIMIT: usize = 1024;

/// A partition of the cluster for one controller: an equality-only label selector
/// (`key=value[,key=value...]`) on LocalStorageNodes.
///
/// A scoped controller places volumes only on matching nodes and acts only on LocalVolumes
/// pinned to them. The nodes a volume is pinned to are where it is placed, or before that
/// the nodes its accessibility allows. It is in scope when at least one of them is a
/// matching LocalStorageNode and none is a LocalStorageNode outside the scope (names with
/// no LocalStorageNode are tolerated: placement reports them as not storage nodes):
///
/// - pinned to no node (unplaced, any node allowed): no scoped controller acts on it;
/// - pinned to a node of another partition (even one): not this one's;
/// - pinned only to names without a LocalStorageNode: no scoped controller's either, until
///   such a node appears (its watch event wakes the volume); a CSI request for it waits.
///
/// Several scoped controllers with disjoint selectors (and no unscoped one) thus never act
/// on the same volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    labels: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("the scope selector is empty")]
    Empty,
    #[error("scope selector term {0:?} is not key=value (only equality is supported)")]
    NotEquality(String),
    #[error("scope selector term {0:?} has a key or value that is not a valid label")]
    InvalidLabel(String),
}

fn label_value_ok(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
    !name.is_empty()
        && label_value_ok(name)
        && prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut labels = BTreeMap::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = term
                .split_once('=')
                .ok_or_else(|| ScopeError::NotEquality(term.into()))?;
            // `k==v` is equality too; `k!=v` is not.
            let (k, v) = (k.trim(), v.strip_prefix('=').unwrap_or(v).trim());
            if k.ends_with('!') {
                return Err(ScopeError::NotEquality(term.into()));
            }
            if !label_key_ok(k) || !label_value_ok(v) {
                return Err(ScopeError::InvalidLabel(term.into()));
            }
            labels.insert(k.to_string(), v.to_string());
        }
        if labels.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Scope { labels })
    }
}

impl Scope {
    /// The selector in the API server's syntax.
    pub fn selector(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    pub(crate) fn list_params(&self) -> ListParams {
        ListParams::default().labels(&self.selector())
    }
}

/// The scope verdict for a volume from its pinned nodes, each `Some(matches)` or `None` when
/// it has no LocalStorageNode (see [`Scope`]).
fn judge_scope(pinned: &[Option<bool>]) -> bool {
    pinned.contains(&Some(true)) && !pinned.contains(&Some(false))
}

/// The nodes a volume is pinned to: where it is placed, or before that where it may go.
/// Once placed, only the placement counts: a node named in the accessibility that later
/// joins another partition must not orphan a volume living on this one's node.
fn pinned_nodes(v: &LocalVolume) -> BTreeSet<&str> {
    let placed: BTreeSet<&str> = v
        .spec
        .config
        .iter()
        .flat_map(|c| c.replicas.iter().map(|r| r.hostname.as_str()))
        .collect();
    if !placed.is_empty() {
        return placed;
    }
    v.spec
        .accessibility
        .nodes
        .iter()
        .map(String::as_str)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("volume made no progress after {0} steps")]
    Stuck(usize),
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
    /// What this controller acts on; everything when None.
    pub scope: Option<Scope>,
    /// Held while a placement is decided and written.
    placement: tokio::sync::Mutex<()>,
    /// Held while an operation decides whether it may start (the concurrency caps).
    operation_start: tokio::sync::Mutex<()>,
}

impl Context {
    /// The storage nodes this controller acts on; `None` when it acts on every node.
    pub async fn scoped_nodes(&self) -> Result<Option<BTreeSet<String>>, kube::Error> {
        let Some(scope) = &self.scope else {
            return Ok(None);
        };
        Ok(Some(
            Api::<LocalStorageNode>::all(self.client.clone())
                .list(&scope.list_params())
                .await?
                .items
                .iter()
                .map(|n| n.name_any())
                .collect(),
        ))
    }

    /// A context acting on the whole cluster.
    pub fn new(client: Client, instance: &str, metrics: Arc<Metrics>, policy: Policy) -> Arc<Self> {
        Self::new_scoped(client, instance, metrics, policy, None)
    }

    /// A context acting on `scope` only (everything when None).
    pub fn new_scoped(
        client: Client,
        instance: &str,
        metrics: Arc<Metrics>,
        policy: Policy,
        scope: Option<Scope>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "hwameistor-controller".into(),
            instance: Some(instance.to_string()),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            policy,
            scope,
            placement: Default::default(),
            operation_start: Default::default(),
        })
    }

    /// The lock every decision about room is taken under (placements, operation targets).
    pub(crate) async fn placement_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.placement.lock().await
    }

    /// The lock an operation decides its start under, so the caps count every start.
    pub(crate) async fn operation_start_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.operation_start.lock().await
    }

    /// Whether this controller acts on `v` (see [`Scope`]). Reads the pinned nodes fresh, so
    /// the answer never depends on a cache that has not caught up.
    pub(crate) async fn in_scope(&self, v: &LocalVolume) -> Result<bool, kube::Error> {
        let Some(scope) = &self.scope else {
            return Ok(true);
        };
        let nodes: Api<LocalStorageNode> = Api::all(self.client.clone());
        let mut seen = Vec::new();
        for name in pinned_nodes(v) {
            let node = nodes.get_opt(name).await?;
            seen.push(node.map(|n| scope.matches(n.labels())));
        }
        Ok(judge_scope(&seen))
    }

    /// Publishes an Event; failing to is logged only, the resources carry the truth.
    pub(crate) async fn event<K: Resource<DynamicType = ()>>(
        &self,
        v: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, EVENT_NOTE_LIMIT)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &v.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish event");
        }
    }
}

/// `s` cut to at most `limit` bytes at a character boundary, marked when cut: a placement
/// failure lists every node and would otherwise make the API server refuse the Event.
fn truncate(mut s: String, limit: usize) -> String {
    if s.len() <= limit {
        return s;
    }
    const MARK: &str = "...";
    let mut end = limit.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    s
}

/// Whether `v` already reports exactly this placement failure. Writing it again on every
/// retry or wake-up would move lastTransitionTime (which marks a change of status),
/// repeat the Warning event, and wake the volume once more with its own write.
fn reports_no_room(v: &LocalVolume, why: &str) -> bool {
    let Some(st) = v.status.as_ref() else {
        return false;
    };
    st.state == Some(VolumeState::Creating)
        && st.message.as_deref() == Some(why)
        && st.observed_generation == v.metadata.generation
        && st.conditions.iter().any(|c| {
            c.type_ == CONDITION_SCHEDULED
                && c.status == "False"
                && c.reason == REASON_NO_CAPACITY
                && c.message == why
                && c.observed_generation == v.metadata.generation
        })
}

fn condition(status: bool, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: CONDITION_SCHEDULED.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(jiff::Timestamp::now()),
        observed_generation: generation,
    }
}

async fn patch_status(
    api: &Api<LocalVolume>,
    v: &LocalVolume,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    // A merge patch of only the fields the controller owns: publishedNode belongs to the
    // CSI driver and must survive.
    api.patch_status(
        &v.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn set_finalizers(
    api: &Api<LocalVolume>,
    v: &LocalVolume,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "metadata": { "finalizers": finalizers, "resourceVersion": v.metadata.resource_version } });
    api.patch(
        &v.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The nodes of the second replicas of the volumes used together with `v` by its pods
/// (best effort: without its claim's name, or when pods cannot be read, none).
async fn partner_nodes(ctx: &Context, v: &LocalVolume, all: &[LocalVolume]) -> Vec<String> {
    let (Some(ns), Some(claim)) = (v.spec.pvc_namespace.as_deref(), v.spec.pvc_name.as_deref())
    else {
        return Vec::new();
    };
    let pods = match Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            tracing::debug!(namespace = ns, error = %e, "cannot read pods for co-location");
            return Vec::new();
        }
    };
    let siblings = hwameistor_core::pod::sibling_claims(&pods, claim);
    placement::partner_nodes(all, ns, &siblings, &v.spec.accessibility.nodes)
}

/// Decides and writes a placement. `Ok(None)` when it was placed, `Ok(Some(why))` when no
/// node has room.
/// Writes `config` as `v`'s placement with a compare-and-swap: the config is also changed
/// by fencing (the primary's node) and failover, so a decision made on a stale copy loses
/// (and is made again on the next reconcile).
async fn swap_config(
    volumes: &Api<LocalVolume>,
    v: &LocalVolume,
    config: &VolumeConfig,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "metadata": { "resourceVersion": v.metadata.resource_version }, "spec": { "config": config } });
    match volumes
        .patch(
            &v.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the snapshot taken only to clone a volume (gone already: done).
async fn delete_clone_snapshot(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<LocalVolumeSnapshot> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn place(ctx: &Context, v: &LocalVolume) -> Result<Option<String>, kube::Error> {
    let _placing = ctx.placement.lock().await;
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let name = v.name_any();
    // Re-read under the lock: the cache that triggered us may be behind our own writes.
    let Some(fresh) = volumes.get_opt(&name).await? else {
        return Ok(None);
    };
    if fresh.spec.config.is_some() {
        return Ok(None);
    }
    let node_params = ctx
        .scope
        .as_ref()
        .map(Scope::list_params)
        .unwrap_or_default();
    let nodes = Api::<LocalStorageNode>::all(ctx.client.clone())
        .list(&node_params)
        .await?
        .items;
    let all = volumes.list(&ListParams::default()).await?.items;
    let replicas = Api::<LocalVolumeReplica>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    // An HA volume's second replica goes where the second replicas of the other volumes of
    // its pod are (the extender held one second node for all of them), room permitting.
    let partners = if fresh.spec.replica_number > 1 {
        partner_nodes(ctx, &fresh, &all).await
    } else {
        Vec::new()
    };
    let request =
        PoolClass::from_pool_name(&fresh.spec.pool_name).map(|class| placement::Request {
            volume: name.clone(),
            class,
            bytes: fresh.spec.required_capacity_bytes,
            replicas: fresh.spec.replica_number.max(1) as usize,
            replicated: ha::wants_replication(&fresh.spec),
            accessibility: fresh.spec.accessibility.nodes.clone(),
            // A restore prefers the snapshot's node (no copy for a thin one, no network
            // for a thick one).
            prefer: if partners.is_empty() {
                restore::preferred_nodes(&fresh.spec)
            } else {
                partners.clone()
            },
            thin: fresh.spec.thin,
        });
    let decision = match request {
        Some(req) => placement::place(
            &req,
            &placement::node_views(&nodes),
            &placement::placed_replicas(&all, &replicas),
            &ctx.policy,
        ),
        None => Err(PlacementError::NoRoom {
            need: 1,
            found: 0,
            class: PoolClass::Hdd,
            bytes: String::new(),
            reasons: format!("pool {} is not a HwameiStor pool", fresh.spec.pool_name),
        }),
    };
    let replicated = ha::wants_replication(&fresh.spec);
    // Under the placement lock, from every volume there is: two volumes placed at once
    // never get the same resource (minor and port).
    let resource_id = if replicated {
        ha::allocate_resource_id(&all)
    } else {
        Some(-1)
    };
    let decision = match (decision, resource_id) {
        (Ok(_), None) => Err(PlacementError::NoRoom {
            need: 1,
            found: 0,
            class: PoolClass::from_pool_name(&fresh.spec.pool_name).unwrap_or(PoolClass::Hdd),
            bytes: String::new(),
            reasons: "every replication resource id (DRBD minor) is in use".into(),
        }),
        (d, _) => d,
    };
    match decision {
        Ok(chosen) => {
            let config = VolumeConfig {
                version: 1,
                required_capacity_bytes: fresh.spec.required_capacity_bytes,
                resource_id: resource_id.unwrap_or(-1),
                replicas: chosen
                    .iter()
                    .enumerate()
                    .map(|(i, n)| ReplicaAssignment {
                        id: i as i64 + 1,
                        hostname: n.clone(),
                        ip: nodes
                            .iter()
                            .find(|x| x.metadata.name.as_deref() == Some(n))
                            .and_then(|x| x.spec.storage_ip.clone()),
                        // The scheduler's node (first) serves first; the other follows.
                        primary: replicated && i == 0,
                        outdated: false,
                        leaving: false,
                        // A restored volume's replica is filled from the snapshot's node.
                        copy_from: fresh.spec.data_source.as_ref().map(|d| d.node.clone()),
                    })
                    .collect(),
                initial: replicated,
            };
            let patch = serde_json::json!({ "metadata": { "resourceVersion": fresh.metadata.resource_version }, "spec": { "config": config } });
            let placed = volumes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            let msg = format!("placed on {}", chosen.join(", "));
            patch_status(&volumes, &placed, serde_json::json!({ "conditions": [condition(true, REASON_PLACED, &msg, placed.metadata.generation)] })).await?;
            tracing::info!(volume = %name, nodes = ?chosen, "volume placed");
            ctx.event(&placed, false, "Scheduled", "Place", msg).await;
            Ok(None)
        }
        Err(e) => {
            let why = e.to_string();
            if reports_no_room(&fresh, &why) {
                tracing::debug!(volume = %name, reason = %why, "volume still cannot be placed");
                return Ok(Some(why));
            }
            let gen = fresh.metadata.generation;
            patch_status(
                &volumes,
                &fresh,
                serde_json::json!({
                    "state": VolumeState::Creating,
                    "message": why,
                    "observedGeneration": gen,
                    "conditions": [condition(false, REASON_NO_CAPACITY, &why, gen)],
                }),
            )
            .await?;
            tracing::warn!(volume = %name, reason = %why, "volume cannot be placed");
            ctx.event(&fresh, true, "ScheduleFailed", "Place", why.clone())
                .await;
            Ok(Some(why))
        }
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new` exactly: keys `new` lacks
/// are set to null (a merge patch otherwise leaves them as they were).
pub fn merge_patch_to(
    old: Option<&serde_json::Value>,
    new: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Some(Value::Object(o)), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                out.insert(k.clone(), merge_patch_to(o.get(k), v));
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

fn status_json(s: &StatusUpdate, generation: Option<i64>) -> serde_json::Value {
    serde_json::json!({
        "state": s.state,
        "replicas": s.replicas,
        "allocatedCapacityBytes": s.allocated,
        "haState": s.ha_state,
        "message": s.message,
        "observedGeneration": generation,
    })
}

/// The volume's conditions with the split-brain condition set to `on` (kept as it is when
/// unchanged, so its transition time means something).
fn with_split_brain(v: &LocalVolume, on: bool, message: &str) -> Option<Vec<Condition>> {
    let mut conds = v
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let want = if on { "True" } else { "False" };
    let existing = conds.iter().position(|c| c.type_ == CONDITION_SPLIT_BRAIN);
    match existing {
        Some(i) if conds[i].status == want => None,
        None if !on => None,
        _ => {
            let c = Condition {
                type_: CONDITION_SPLIT_BRAIN.into(),
                status: want.into(),
                reason: if on { "SplitBrainDetected" } else { "Resolved" }.into(),
                message: message.into(),
                last_transition_time: Time(jiff::Timestamp::now()),
                observed_generation: v.metadata.generation,
            };
            match existing {
                Some(i) => conds[i] = c,
                None => conds.push(c),
            }
            Some(conds)
        }
    }
}

fn event_for(state: VolumeState) -> (bool, &'static str) {
    match state {
        VolumeState::Ready => (false, "VolumeReady"),
        VolumeState::NotReady => (true, "VolumeNotReady"),
        VolumeState::Expanding => (false, "VolumeExpanding"),
        VolumeState::Deleting => (false, "VolumeDeleting"),
        VolumeState::Creating => (false, "VolumeCreating"),
    }
}

async fn reconcile_steps(v: Arc<LocalVolume>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = v.name_any();
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let replicas_api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let by_volume = ListParams::default().labels(&format!("{LABEL_VOLUME}={name}"));
    let mut current = (*v).clone();
    for _ in 0..16 {
        let replicas = replicas_api.list(&by_volume).await?.items;
        let step = volume_state::next_step(&current, &replicas);
        tracing::debug!(volume = %name, ?step, "volume step");
        match step {
            Step::Wait => return Ok(Action::await_change()),
            Step::AddFinalizer => {
                let mut f = current.metadata.finalizers.clone().unwrap_or_default();
                f.push(FINALIZER_VOLUME.into());
                set_finalizers(&volumes, &current, f).await?;
            }
            Step::Place => {
                if place(&ctx, &current).await?.is_some() {
                    return Ok(Action::requeue(UNPLACED_RETRY));
                }
            }
            Step::UpdateConfig(config) => {
                let before = current.spec.config.clone().unwrap_or_default();
                swap_config(&volumes, &current, &config).await?;
                if config.required_capacity_bytes > before.required_capacity_bytes {
                    tracing::info!(volume = %name, bytes = config.required_capacity_bytes, "growing volume");
                    let note = format!("growing to {} bytes", config.required_capacity_bytes);
                    ctx.event(&current, false, "VolumeExpanding", "Expand", note)
                        .await;
                }
                if before.initial && !config.initial {
                    tracing::info!(volume = %name, "a replica holds up-to-date data; initial sync under way or done");
                }
                for (a, b) in before.replicas.iter().zip(&config.replicas) {
                    if a.outdated && !b.outdated {
                        let note = format!(
                            "the replica on {} resynced and is up to date again",
                            b.hostname
                        );
                        tracing::info!(volume = %name, node = %b.hostname, "replica no longer outdated");
                        ctx.event(&current, false, "ReplicaResynced", "Resync", note)
                            .await;
                    }
                }
            }
            Step::UpdateReplication {
                name: rname,
                replication,
                copy_from,
            } => {
                // A merge patch leaves out what a value omits (an absent peer): the patch is
                // made from the replica's spec as it is, so every field ends as decided.
                let old = replicas
                    .iter()
                    .find(|r| r.metadata.name.as_deref() == Some(rname.as_str()))
                    .map(|r| &r.spec);
                let value =
                    |x: serde_json::Result<serde_json::Value>| x.map_err(kube::Error::SerdeError);
                let old_rep = old
                    .and_then(|o| o.replication.as_ref())
                    .map(|x| value(serde_json::to_value(x)))
                    .transpose()?;
                let old_copy = old
                    .and_then(|o| o.copy_from.as_ref())
                    .map(|x| value(serde_json::to_value(x)))
                    .transpose()?;
                let patch = serde_json::json!({ "spec": {
                    "replication": merge_patch_to(old_rep.as_ref(), &value(serde_json::to_value(&replication))?),
                    "copyFrom": merge_patch_to(old_copy.as_ref(), &value(serde_json::to_value(&copy_from))?),
                } });
                match replicas_api
                    .patch(&rname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Step::ClearSplitBrainResolution => {
                let patch = serde_json::json!({ "spec": { "splitBrainResolution": null } });
                volumes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(volume = %name, "split brain resolved; replicas connected again");
                ctx.event(
                    &current,
                    false,
                    "SplitBrainResolved",
                    "Resolve",
                    "the replicas are connected again".into(),
                )
                .await;
            }
            Step::CreateReplica(r) => {
                let rname = r.name_any();
                match replicas_api.create(&PostParams::default(), &r).await {
                    Ok(_) => {
                        ctx.event(
                            &current,
                            false,
                            "ReplicaCreated",
                            "Create",
                            format!("replica {rname} on {}", r.spec.node_name),
                        )
                        .await;
                    }
                    // Created by an earlier, interrupted reconcile: the list was stale.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Step::ResizeReplica { name: rname, bytes } => {
                let patch = serde_json::json!({ "spec": { "requiredCapacityBytes": bytes } });
                replicas_api
                    .patch(&rname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Step::DeleteReplicas(names) => {
                for rname in names {
                    match replicas_api.delete(&rname, &DeleteParams::default()).await {
                        Ok(_) => {
                            tracing::info!(volume = %name, replica = %rname, "replica deletion requested");
                            let note = format!("deleting replica {rname}");
                            ctx.event(&current, false, "ReplicaDeleting", "Delete", note)
                                .await;
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Step::FinishRestore {
                config,
                clone_snapshot,
            } => {
                // The clone's own snapshot goes first: the placement cleared first and a
                // crash before the removal would leave it behind, unowned.
                if let Some(snap) = &clone_snapshot {
                    delete_clone_snapshot(&ctx.client, snap).await?;
                }
                swap_config(&volumes, &current, &config).await?;
                let src = current.spec.data_source.as_ref();
                let note = format!(
                    "restored from snapshot {}{}",
                    src.map(|d| d.snapshot.as_str()).unwrap_or_default(),
                    src.and_then(|d| d.clone_of.as_deref())
                        .map(|v| format!(" (a clone of {v}; the snapshot taken for it is removed)"))
                        .unwrap_or_default()
                );
                tracing::info!(volume = %name, "{note}");
                ctx.event(&current, false, "VolumeRestored", "Restore", note)
                    .await;
            }
            Step::RemoveFinalizer => {
                // A clone deleted before it was filled leaves no snapshot behind.
                if let Some(snap) = current
                    .spec
                    .data_source
                    .as_ref()
                    .filter(|d| d.clone_of.is_some())
                {
                    delete_clone_snapshot(&ctx.client, &snap.snapshot).await?;
                }
                // Published before the object goes: every replica is gone by now.
                ctx.event(
                    &current,
                    false,
                    "VolumeDeleted",
                    "Delete",
                    "all replicas removed".into(),
                )
                .await;
                let f = current
                    .metadata
                    .finalizers
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|x| x != FINALIZER_VOLUME)
                    .collect();
                set_finalizers(&volumes, &current, f).await?;
                tracing::info!(volume = %name, "volume deleted");
                return Ok(Action::await_change());
            }
            Step::Status(s) => {
                let before = current.status.as_ref().and_then(|st| st.state);
                let before_ha = current.status.as_ref().and_then(|st| st.ha_state);
                let mut json = status_json(&s, current.metadata.generation);
                let split = s.ha_state == Some(HaState::SplitBrain);
                let msg = if split {
                    s.message.clone().unwrap_or_default()
                } else {
                    "the replicas are connected again".to_string()
                };
                if let Some(conds) = with_split_brain(&current, split, &msg) {
                    json["conditions"] = serde_json::to_value(conds).unwrap_or_default();
                }
                patch_status(&volumes, &current, json).await?;
                if split && before_ha != Some(HaState::SplitBrain) {
                    tracing::error!(volume = %name, "split brain detected");
                    ctx.event(&current, true, "SplitBrain", "Replicate", msg)
                        .await;
                } else if s.ha_state != before_ha {
                    if let Some(h) = s.ha_state {
                        tracing::info!(volume = %name, ha = ?h, "HA state changed");
                        let warning = h == HaState::Degraded;
                        ctx.event(
                            &current,
                            warning,
                            &format!("Ha{h:?}"),
                            "Replicate",
                            format!("HA state {h:?}"),
                        )
                        .await;
                    }
                }
                if before != Some(s.state) {
                    let (warning, reason) = event_for(s.state);
                    let note = s
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", s.state));
                    tracing::info!(volume = %name, state = ?s.state, "volume state changed");
                    ctx.event(&current, warning, reason, "Reconcile", note)
                        .await;
                }
            }
        }
        current = match volumes.get_opt(&name).await? {
            Some(v) => v,
            None => return Ok(Action::await_change()),
        };
    }
    Err(ReconcileError::Stuck(16))
}

pub async fn reconcile(v: Arc<LocalVolume>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = match ctx.in_scope(&v).await {
        // Another controller's volume: not counted, this controller did nothing.
        Ok(false) => return Ok(Action::await_change()),
        Ok(true) => reconcile_steps(v, ctx.clone()).await,
        Err(e) => Err(e.into()),
    };
    ctx.metrics
        .observe("localvolume", result.is_ok(), started.elapsed());
    result
}

fn error_policy(v: Arc<LocalVolume>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(volume = %v.name_any(), error = %err, "volume reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// What of a node decides whether a volume fits on it.
type Capacity = (Option<NodeState>, BTreeMap<String, PoolStatus>);

fn capacity_of(node: &LocalStorageNode) -> Capacity {
    node.status
        .as_ref()
        .map(|s| (s.state, s.pools.clone()))
        .unwrap_or_default()
}

/// Each node's capacity as last seen, so that only a change of it (a new node, a node
/// turning Ready, pools growing or shrinking) wakes the volumes waiting for room, and not
/// every other update of a node. Deleted nodes are not forgotten: a few entries per node
/// that ever existed.
#[derive(Default)]
struct CapacitySeen(Mutex<HashMap<String, Capacity>>);

impl CapacitySeen {
    fn changed(&self, node: &LocalStorageNode) -> bool {
        let now = capacity_of(node);
        // Plain values only: a panic while the lock was held cannot leave them half-written.
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.insert(node.name_any(), now.clone()).as_ref() != Some(&now)
    }
}

/// The volumes that wait for room and may go to `node`: not placed, not being deleted,
/// and allowed there.
fn waiting_for(node: &str, volumes: &[Arc<LocalVolume>]) -> Vec<ObjectRef<LocalVolume>> {
    volumes
        .iter()
        .filter(|v| v.spec.config.is_none() && v.metadata.deletion_timestamp.is_none())
        .filter(|v| {
            let allowed = &v.spec.accessibility.nodes;
            allowed.is_empty() || allowed.iter().any(|n| n == node)
        })
        .map(|v| ObjectRef::from_obj(v.as_ref()))
        .collect()
}

/// Runs the reconciler until the future is dropped. Returns only if kube's controller
/// stream ends, which its watches (retrying for ever) never make it do on their own.
pub async fn run(ctx: Arc<Context>) {
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let nodes: Api<LocalStorageNode> = Api::all(ctx.client.clone());
    let node_watch = match &ctx.scope {
        Some(scope) => watcher::Config::default().labels(&scope.selector()),
        None => watcher::Config::default(),
    };
    let controller = Controller::new(volumes, watcher::Config::default())
        .owns(replicas, watcher::Config::default());
    let store: Store<LocalVolume> = controller.store();
    let seen = CapacitySeen::default();
    controller
        .watches(nodes, node_watch, move |node: LocalStorageNode| {
            if seen.changed(&node) {
                waiting_for(&node.name_any(), &store.state())
            } else {
                Vec::new()
            }
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "volume controller event");
            }
        })
        .await;
    tracing::error!("the volume controller stream ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{Accessibility, LocalStorageNodeSpec, LocalVolumeSpec, LocalVolumeStatus};

    #[test]
    fn merge_patches_clear_what_the_new_value_omits() {
        let old = serde_json::json!({ "a": 1, "peer": { "node": "x", "address": "1" }, "n": { "k": 1, "gone": 2 } });
        let new = serde_json::json!({ "a": 2, "n": { "k": 1 } });
        assert_eq!(
            merge_patch_to(Some(&old), &new),
            serde_json::json!({ "a": 2, "peer": null, "n": { "k": 1, "gone": null } })
        );
        assert_eq!(merge_patch_to(None, &new), new);
        assert_eq!(
            merge_patch_to(Some(&old), &serde_json::Value::Null),
            serde_json::Value::Null
        );
    }

    #[test]
    fn scopes_parse_equality_selectors_only() {
        let s: Scope = "hwameistor.io/test-scope=abc, tier==gold"
            .parse()
            .expect("scope");
        assert_eq!(s.selector(), "hwameistor.io/test-scope=abc,tier=gold");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&labels(&[
            ("hwameistor.io/test-scope", "abc"),
            ("tier", "gold"),
            ("other", "x")
        ])));
        assert!(!s.matches(&labels(&[("hwameistor.io/test-scope", "abc")])));
        assert_eq!("".parse::<Scope>(), Err(ScopeError::Empty));
        assert_eq!(
            "a!=b".parse::<Scope>(),
            Err(ScopeError::NotEquality("a!=b".into()))
        );
        assert_eq!(
            "a in (b)".parse::<Scope>(),
            Err(ScopeError::NotEquality("a in (b)".into()))
        );
        assert_eq!(
            "a=b c".parse::<Scope>(),
            Err(ScopeError::InvalidLabel("a=b c".into()))
        );
        assert_eq!(
            "=b".parse::<Scope>(),
            Err(ScopeError::InvalidLabel("=b".into()))
        );
    }

    fn volume(name: &str, nodes: &[&str], placed_on: Option<&str>) -> LocalVolume {
        let mut v = LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: PoolClass::Hdd.pool_name().into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 1 << 30,
                replica_number: 1,
                convertible: false,
                accessibility: Accessibility {
                    nodes: nodes.iter().map(|n| n.to_string()).collect(),
                },
                pvc_namespace: None,
                pvc_name: None,
                fs_type: None,
                config: None,
                split_brain_resolution: None,
                operation: None,
                thin: false,
                data_source: None,
            },
        );
        v.spec.config = placed_on.map(|n| VolumeConfig {
            version: 1,
            required_capacity_bytes: 1 << 30,
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
    fn a_volume_is_in_scope_on_matching_nodes_only() {
        assert!(!judge_scope(&[]), "pinned nowhere");
        assert!(judge_scope(&[Some(true)]));
        assert!(
            judge_scope(&[Some(true), None]),
            "an unknown name is tolerated"
        );
        assert!(!judge_scope(&[None]), "unknown names only");
        assert!(
            !judge_scope(&[Some(true), Some(false)]),
            "one node elsewhere"
        );
        assert!(!judge_scope(&[Some(false)]));
    }

    #[test]
    fn a_volume_is_pinned_where_it_is_placed_or_else_where_it_may_go() {
        assert_eq!(
            pinned_nodes(&volume("v", &["a", "b"], None)),
            BTreeSet::from(["a", "b"])
        );
        assert_eq!(
            pinned_nodes(&volume("v", &["a", "b"], Some("a"))),
            BTreeSet::from(["a"])
        );
        assert!(pinned_nodes(&volume("v", &[], None)).is_empty());
    }

    #[test]
    fn a_node_wakes_only_the_unplaced_volumes_allowed_on_it() {
        let mut deleting = volume("deleting", &[], None);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let vols: Vec<Arc<LocalVolume>> = [
            volume("anywhere", &[], None),
            volume("here", &["n1"], None),
            volume("elsewhere", &["n2"], None),
            volume("placed", &["n1"], Some("n1")),
            deleting,
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let woken: Vec<String> = waiting_for("n1", &vols)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(woken, ["anywhere", "here"]);
    }

    #[test]
    fn only_a_capacity_change_counts() {
        let seen = CapacitySeen::default();
        let mut n = LocalStorageNode::new(
            "n1",
            LocalStorageNodeSpec {
                hostname: "n1".into(),
                storage_ip: None,
            },
        );
        assert!(seen.changed(&n), "a new node is a change");
        assert!(!seen.changed(&n));
        n.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        assert!(!seen.changed(&n), "an annotation is not");
        let pool = |free: i64| PoolStatus {
            name: PoolClass::Hdd.pool_name().into(),
            class: PoolClass::Hdd,
            total_capacity_bytes: 10,
            used_capacity_bytes: 10 - free,
            free_capacity_bytes: free,
            extent_size_bytes: 4 << 20,
            volume_count: 0,
            disks: vec![],
            thin: None,
            thin_overprovision_percent: None,
        };
        n.status = Some(hwameistor_api::LocalStorageNodeStatus {
            state: Some(NodeState::Ready),
            pools: BTreeMap::from([(PoolClass::Hdd.pool_name().to_string(), pool(5))]),
            ..Default::default()
        });
        assert!(seen.changed(&n), "pools appeared");
        if let Some(st) = n.status.as_mut() {
            st.agent_version = Some("x".into());
        }
        assert!(!seen.changed(&n), "other status fields are not");
        if let Some(st) = n.status.as_mut() {
            st.pools
                .insert(PoolClass::Hdd.pool_name().to_string(), pool(8));
        }
        assert!(seen.changed(&n), "free space grew");
    }

    #[test]
    fn a_repeated_placement_failure_is_not_written_again() {
        let mut v = volume("v", &["n1"], None);
        v.metadata.generation = Some(1);
        assert!(!reports_no_room(&v, "no room"));
        v.status = Some(LocalVolumeStatus {
            state: Some(VolumeState::Creating),
            message: Some("no room".into()),
            observed_generation: Some(1),
            conditions: vec![condition(false, REASON_NO_CAPACITY, "no room", Some(1))],
            ..Default::default()
        });
        assert!(reports_no_room(&v, "no room"));
        assert!(!reports_no_room(&v, "other reason"));
        v.metadata.generation = Some(2);
        assert!(
            !reports_no_room(&v, "no room"),
            "a new generation is written"
        );
    }

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("é".repeat(600), EVENT_NOTE_LIMIT);
        assert!(
            cut.len() <= EVENT_NOTE_LIMIT && cut.ends_with("..."),
            "{}",
            cut.len()
        );
    }
}
