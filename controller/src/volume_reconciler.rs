//! The LocalVolume reconciler: carries out [`hwameistor_core::volume`] decisions.
//!
//! Event-driven: it runs when a LocalVolume or one of the LocalVolumeReplicas it owns
//! changes. Placements are serialized under one lock and read the cluster fresh from the
//! API server, so two volumes placed at the same moment always see each other.

use crate::metrics::Metrics;
use futures::StreamExt;
use hwameistor_api::volume::{CONDITION_SCHEDULED, REASON_NO_CAPACITY, REASON_PLACED};
use hwameistor_api::{
    LocalStorageNode, LocalVolume, LocalVolumeReplica, PoolClass, ReplicaAssignment, VolumeConfig,
    VolumeState, FINALIZER_VOLUME, LABEL_VOLUME,
};
use hwameistor_core::placement::{self, PlacementError, Policy};
use hwameistor_core::volume::{self as volume_state, StatusUpdate, Step};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a volume no node has room for is tried again.
pub const UNPLACED_RETRY: Duration = Duration::from_secs(30);

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
    /// Held while a placement is decided and written.
    placement: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn new(client: Client, instance: &str, metrics: Arc<Metrics>, policy: Policy) -> Arc<Self> {
        let reporter = Reporter {
            controller: "hwameistor-controller".into(),
            instance: Some(instance.to_string()),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            policy,
            placement: Default::default(),
        })
    }

    /// Publishes an Event; failing to is logged only, the resources carry the truth.
    async fn event(
        &self,
        v: &LocalVolume,
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
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &v.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish event");
        }
    }
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

/// Decides and writes a placement. `Ok(None)` when it was placed, `Ok(Some(why))` when no
/// node has room.
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
    let nodes = Api::<LocalStorageNode>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let all = volumes.list(&ListParams::default()).await?.items;
    let replicas = Api::<LocalVolumeReplica>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let request =
        PoolClass::from_pool_name(&fresh.spec.pool_name).map(|class| placement::Request {
            volume: name.clone(),
            class,
            bytes: fresh.spec.required_capacity_bytes,
            replicas: fresh.spec.replica_number.max(1) as usize,
            accessibility: fresh.spec.accessibility.nodes.clone(),
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
    match decision {
        Ok(chosen) => {
            let config = VolumeConfig {
                version: 1,
                required_capacity_bytes: fresh.spec.required_capacity_bytes,
                resource_id: -1,
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
                    })
                    .collect(),
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

fn status_json(s: &StatusUpdate, generation: Option<i64>) -> serde_json::Value {
    serde_json::json!({
        "state": s.state,
        "replicas": s.replicas,
        "allocatedCapacityBytes": s.allocated,
        "message": s.message,
        "observedGeneration": generation,
    })
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
                let patch = serde_json::json!({ "metadata": { "resourceVersion": current.metadata.resource_version }, "spec": { "config": config } });
                volumes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                tracing::info!(volume = %name, bytes = config.required_capacity_bytes, "growing volume");
                let note = format!("growing to {} bytes", config.required_capacity_bytes);
                ctx.event(&current, false, "VolumeExpanding", "Expand", note)
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
            Step::RemoveFinalizer => {
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
                patch_status(
                    &volumes,
                    &current,
                    status_json(&s, current.metadata.generation),
                )
                .await?;
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
    let result = reconcile_steps(v, ctx.clone()).await;
    ctx.metrics
        .observe("localvolume", result.is_ok(), started.elapsed());
    result
}

fn error_policy(v: Arc<LocalVolume>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(volume = %v.name_any(), error = %err, "volume reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the reconciler until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    Controller::new(volumes, watcher::Config::default())
        .owns(replicas, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "volume controller event");
            }
        })
        .await;
}
