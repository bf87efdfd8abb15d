//! The operation reconcilers (LocalVolumeMigrate, LocalVolumeConvert, LocalVolumeExpand):
//! carry out [`hwameistor_core::operation`] decisions, one reconciler per kind.
//!
//! Each reconcile reads the operation's world fresh from the API server (its volume, the
//! volume's replicas, the nodes, what is placed, the PersistentVolume, the running
//! operations), asks the kind's state machine for one step, does it, and asks again, a few
//! times. Every write to a volume is a compare-and-swap on its resourceVersion; a lost race
//! is read again. Operations that may start or change a placement are decided under the
//! placement lock the volume reconciler uses, so a target chosen here and a volume placed
//! there never promise the same room twice, and the concurrency caps are decided under a
//! lock of their own.

use crate::pv_affinity;
use crate::volume_reconciler::Context;
use futures::StreamExt;
use hwameistor_api::{
    LocalStorageNode, LocalVolume, LocalVolumeConvert, LocalVolumeConvertSpec, LocalVolumeExpand,
    LocalVolumeMigrate, LocalVolumeMigrateSpec, LocalVolumeReplica, OperationKind, OperationPhase,
    OperationStatus, FINALIZER_OPERATION, LABEL_GROUP_OPERATION, LABEL_VOLUME, LABEL_VOLUME_GROUP,
};
use hwameistor_core::operation::evict::LABEL_DRAIN;
use hwameistor_core::operation::{
    self, convert::Convert, expand::Expand, group, migrate::Migrate, slots, Machine, Op, OpStep,
    World,
};
use hwameistor_core::placement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the operation reconcilers.
#[derive(Clone, Copy, Debug)]
pub struct OperationSettings {
    /// How long an ended operation is kept when it does not say.
    pub ttl: Duration,
    pub limits: slots::Limits,
}

impl Default for OperationSettings {
    fn default() -> Self {
        OperationSettings {
            ttl: Duration::from_secs(operation::DEFAULT_TTL_SECONDS as u64),
            limits: slots::Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Pv(#[from] pv_affinity::PvError),
}

/// What the reconcilers need of each operation kind.
pub trait OperationResource:
    Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: OperationKind;
    fn volume_name(&self) -> &str;
    fn abort(&self) -> bool;
    fn ttl_seconds(&self) -> Option<i64>;
    fn op_status(&self) -> Option<&OperationStatus>;
    fn set_op_status(&mut self, st: OperationStatus);
    /// The nodes it loads while it moves data (for the per-node cap).
    fn load_nodes(&self) -> Vec<String>;
    /// Runs `f` with this operation's state machine.
    fn with_machine<R>(&self, f: impl FnOnce(&dyn Machine) -> R) -> R;
    /// The operation of this kind for `volume`, a volume of this one's group going with it
    /// to `target` (see [`hwameistor_core::operation::group`]); `None` for a kind that is
    /// never group-wide.
    fn member_operation(&self, name: &str, volume: &str, target: &str) -> Option<Self>;
    /// Sets `spec.abort`.
    fn set_abort(&mut self);
}

/// What every operation kind has alike: its volume, abort flag, time-to-live and status.
macro_rules! operation_fields {
    ($kind:expr) => {
        const KIND: OperationKind = $kind;
        fn volume_name(&self) -> &str {
            &self.spec.volume_name
        }
        fn abort(&self) -> bool {
            self.spec.abort
        }
        fn ttl_seconds(&self) -> Option<i64> {
            self.spec.ttl_seconds_after_finished
        }
        fn op_status(&self) -> Option<&OperationStatus> {
            self.status.as_ref()
        }
        fn set_op_status(&mut self, st: OperationStatus) {
            self.status = Some(st);
        }
        fn set_abort(&mut self) {
            self.spec.abort = true;
        }
    };
}

impl OperationResource for LocalVolumeMigrate {
    operation_fields!(OperationKind::Migrate);
    fn load_nodes(&self) -> Vec<String> {
        let mut n = vec![self.spec.source_node.clone()];
        n.extend(self.status.as_ref().and_then(|s| s.target_node.clone()));
        n
    }
    fn with_machine<R>(&self, f: impl FnOnce(&dyn Machine) -> R) -> R {
        f(&Migrate { spec: &self.spec })
    }
    fn member_operation(&self, name: &str, volume: &str, target: &str) -> Option<Self> {
        Some(LocalVolumeMigrate::new(
            name,
            LocalVolumeMigrateSpec {
                volume_name: volume.to_string(),
                source_node: self.spec.source_node.clone(),
                target_nodes: vec![target.to_string()],
                migrate_all_volumes: false,
                bandwidth_limit_bytes_per_second: self.spec.bandwidth_limit_bytes_per_second,
                abort: false,
                ttl_seconds_after_finished: self.spec.ttl_seconds_after_finished,
            },
        ))
    }
}

impl OperationResource for LocalVolumeConvert {
    operation_fields!(OperationKind::Convert);
    fn load_nodes(&self) -> Vec<String> {
        let st = self.status.clone().unwrap_or_default();
        st.source_nodes
            .into_iter()
            .chain(st.target_node)
            .chain(self.spec.target_node.clone())
            .collect()
    }
    fn with_machine<R>(&self, f: impl FnOnce(&dyn Machine) -> R) -> R {
        f(&Convert { spec: &self.spec })
    }
    fn member_operation(&self, name: &str, volume: &str, target: &str) -> Option<Self> {
        Some(LocalVolumeConvert::new(
            name,
            LocalVolumeConvertSpec {
                volume_name: volume.to_string(),
                replica_number: self.spec.replica_number,
                target_node: Some(target.to_string()),
                convert_all_volumes: false,
                abort: false,
                ttl_seconds_after_finished: self.spec.ttl_seconds_after_finished,
            },
        ))
    }
}

impl OperationResource for LocalVolumeExpand {
    operation_fields!(OperationKind::Expand);
    fn load_nodes(&self) -> Vec<String> {
        Vec::new()
    }
    fn with_machine<R>(&self, f: impl FnOnce(&dyn Machine) -> R) -> R {
        f(&Expand {
            required_capacity_bytes: self.spec.required_capacity_bytes,
        })
    }
    fn member_operation(&self, _name: &str, _volume: &str, _target: &str) -> Option<Self> {
        None
    }
}

/// How an operation is named among the running ones (`migrate/NAME`).
fn slot_name<K: OperationResource>(name: &str) -> String {
    format!("{}/{name}", K::KIND.as_str().to_lowercase())
}

/// The operations of kind `K` that move data now (Running or Aborting).
async fn busy_of<K: OperationResource>(ctx: &Context) -> Result<Vec<slots::Busy>, kube::Error> {
    Ok(Api::<K>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|o| {
            matches!(
                o.op_status().and_then(|s| s.phase),
                Some(OperationPhase::Running | OperationPhase::Aborting)
            )
        })
        // A group's lead whose own volume is done waits for its members' operations:
        // it moves no data, and must not keep them from their slots.
        .filter(|o| o.op_status().and_then(|s| s.step.as_deref()) != Some(group::STEP_MEMBERS))
        .map(|o| slots::Busy {
            name: slot_name::<K>(&o.name_any()),
            nodes: o.load_nodes(),
        })
        .collect())
}

/// The operations that move data now (migrations and conversions).
async fn busy(ctx: &Context) -> Result<Vec<slots::Busy>, kube::Error> {
    let mut out = busy_of::<LocalVolumeMigrate>(ctx).await?;
    out.extend(busy_of::<LocalVolumeConvert>(ctx).await?);
    Ok(out)
}

fn moves_data(kind: OperationKind) -> bool {
    matches!(kind, OperationKind::Migrate | OperationKind::Convert)
}

/// Whether this reconcile may change who holds room: it may start the operation or add a
/// replica to the placement.
fn places(op: &impl OperationResource, v: Option<&LocalVolume>) -> bool {
    let phase = op.op_status().and_then(|s| s.phase);
    let pending = matches!(phase, None | Some(OperationPhase::Pending));
    let adding = phase == Some(OperationPhase::Running)
        && op
            .op_status()
            .and_then(|s| s.target_node.as_deref())
            .is_some_and(|t| {
                v.and_then(|v| v.spec.config.as_ref())
                    .is_some_and(|c| !c.replicas.iter().any(|a| a.hostname == t))
            });
    pending || adding
}

/// An Event on operation `op` (its kind is the action).
async fn event<K: OperationResource>(
    ctx: &Context,
    op: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    ctx.event(op, warning, reason, K::KIND.as_str(), note).await;
}

/// Events for a phase change, on the operation and its volume.
async fn announce<K: OperationResource>(
    ctx: &Context,
    op: &K,
    v: Option<&LocalVolume>,
    before: Option<OperationPhase>,
    st: &OperationStatus,
) {
    if before == st.phase {
        return;
    }
    let kind = K::KIND.as_str();
    let name = op.name_any();
    let msg = st.message.clone().unwrap_or_default();
    let (warning, reason) = match st.phase {
        Some(OperationPhase::Running) => (false, format!("{kind}Started")),
        Some(OperationPhase::Succeeded) => (false, format!("{kind}Succeeded")),
        Some(OperationPhase::Failed) => (true, format!("{kind}Failed")),
        Some(OperationPhase::Aborting) => (true, format!("{kind}Aborting")),
        Some(OperationPhase::Aborted) => (true, format!("{kind}Aborted")),
        Some(OperationPhase::Pending) | None => (false, format!("{kind}Pending")),
    };
    tracing::info!(operation = %name, kind, phase = ?st.phase, step = ?st.step, message = %msg, "operation phase");
    event(ctx, op, warning, &reason, msg.clone()).await;
    if let Some(v) = v {
        let note = format!(
            "{kind} {name}: {:?}{}",
            st.phase.unwrap_or(OperationPhase::Pending),
            if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            }
        );
        ctx.event(v, warning, &reason, kind, note).await;
    }
}

async fn reconcile_steps<K: OperationResource>(
    op: Arc<K>,
    ctx: Arc<Context>,
    settings: OperationSettings,
) -> Result<Action, OperationError> {
    let name = op.name_any();
    let ops: Api<K> = Api::all(ctx.client.clone());
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let replicas_api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let mut current = (*op).clone();
    for _ in 0..12 {
        let vname = current.volume_name().to_string();
        let volume = volumes.get_opt(&vname).await?;
        // Starting, and adding a replica, decide room: under the placement lock, like
        // every placement. Starting a data-moving operation also decides a slot.
        let _placing = if places(&current, volume.as_ref()) {
            Some(ctx.placement_lock().await)
        } else {
            None
        };
        let _starting = if moves_data(K::KIND)
            && matches!(
                current.op_status().and_then(|s| s.phase),
                None | Some(OperationPhase::Pending)
            ) {
            Some(ctx.operation_start_lock().await)
        } else {
            None
        };
        // Re-read under the locks: what triggered us may be behind.
        let Some(fresh) = ops.get_opt(&name).await? else {
            return Ok(Action::await_change());
        };
        current = fresh;
        let volume = volumes.get_opt(&vname).await?;
        // A scoped controller acts only on operations of its own volumes; one whose volume
        // is missing is left to the unscoped controller.
        match &volume {
            Some(v) if !ctx.in_scope(v).await? => return Ok(Action::await_change()),
            None if ctx.scope.is_some() => return Ok(Action::await_change()),
            _ => {}
        }
        let by_volume = ListParams::default().labels(&format!("{LABEL_VOLUME}={vname}"));
        let replicas = replicas_api.list(&by_volume).await?.items;
        let node_params = ctx
            .scope
            .as_ref()
            .map(crate::volume_reconciler::Scope::list_params)
            .unwrap_or_default();
        let lsns = Api::<LocalStorageNode>::all(ctx.client.clone())
            .list(&node_params)
            .await?
            .items;
        let nodes = placement::node_views(&lsns);
        let movers: BTreeSet<String> = lsns
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.mover.is_some()))
            .map(|n| n.name_any())
            .collect();
        let phase = current.op_status().and_then(|s| s.phase);
        let deciding_room = _placing.is_some();
        let (placed, free_id) = if deciding_room {
            let all_volumes = volumes.list(&ListParams::default()).await?.items;
            let all_replicas = replicas_api.list(&ListParams::default()).await?.items;
            (
                placement::placed_replicas(&all_volumes, &all_replicas),
                hwameistor_core::ha::allocate_resource_id(&all_volumes),
            )
        } else {
            (Vec::new(), None)
        };
        let pv = match &volume {
            Some(v) => pv_affinity::find(&ctx.client, v).await?,
            None => None,
        };
        let pv_view = volume
            .as_ref()
            .and_then(|v| pv_affinity::view(v, pv.as_ref()));
        let slot = if moves_data(K::KIND) && matches!(phase, None | Some(OperationPhase::Pending)) {
            let mut load = current.load_nodes();
            load.sort();
            load.dedup();
            slots::may_start(
                &slot_name::<K>(&name),
                &load,
                &busy(&ctx).await?,
                settings.limits,
            )
        } else {
            Ok(())
        };
        let (members, children) = read_group(&ctx, &current, volume.as_ref()).await?;
        let snapshots = volume_snapshots(&ctx, volume.as_ref()).await?;
        let status = current.op_status().cloned().unwrap_or_default();
        let uid = current.uid().unwrap_or_default();
        let ttl = current
            .ttl_seconds()
            .unwrap_or(settings.ttl.as_secs() as i64);
        let step = {
            let o = Op {
                kind: K::KIND,
                name: &name,
                uid: &uid,
                generation: current.meta().generation,
                abort: current.abort(),
                deleting: current.meta().deletion_timestamp.is_some(),
                has_finalizer: current
                    .finalizers()
                    .iter()
                    .any(|f| f == FINALIZER_OPERATION),
                ttl_seconds: ttl,
                status: &status,
            };
            let w = World {
                now: jiff::Timestamp::now(),
                volume: volume.as_ref(),
                replicas: &replicas,
                nodes: &nodes,
                placed: &placed,
                policy: ctx.policy.clone(),
                movers: &movers,
                pv: pv_view.as_ref(),
                slot,
                free_resource_id: free_id,
                group: group::Group {
                    members: &members,
                    children: &children,
                },
                snapshots: &snapshots,
            };
            current.with_machine(|m| operation::next_step(&o, &w, m))
        };
        tracing::debug!(operation = %name, kind = K::KIND.as_str(), ?step, "operation step");
        match step.clone() {
            OpStep::Wait { seconds } => return Ok(Action::requeue(Duration::from_secs(seconds))),
            OpStep::Status(st) => {
                let before = current.op_status().and_then(|s| s.phase);
                let mut next = current.clone();
                next.set_op_status((*st).clone());
                match ops
                    .replace_status(&name, &PostParams::default(), &next)
                    .await
                {
                    Ok(_) => announce(&ctx, &current, volume.as_ref(), before, &st).await,
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            OpStep::AddFinalizer | OpStep::RemoveFinalizer => {
                let mut finalizers: Vec<String> = current
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER_OPERATION)
                    .cloned()
                    .collect();
                if step == OpStep::AddFinalizer {
                    finalizers.push(FINALIZER_OPERATION.to_string());
                }
                let patch = serde_json::json!({ "metadata": { "finalizers": finalizers, "resourceVersion": current.meta().resource_version } });
                match ops
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                if step == OpStep::RemoveFinalizer {
                    return Ok(Action::await_change());
                }
            }
            OpStep::Acquire(r) => {
                let Some(v) = &volume else { continue };
                let patch = serde_json::json!({ "metadata": { "resourceVersion": v.metadata.resource_version }, "spec": { "operation": r } });
                match volumes
                    .patch(&vname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(operation = %name, volume = %vname, "operation holds the volume")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            OpStep::UpdateVolume(change) => {
                let Some(v) = &volume else { continue };
                let mut spec = serde_json::Map::new();
                if let Some(c) = &change.config {
                    spec.insert(
                        "config".into(),
                        serde_json::to_value(c).map_err(kube::Error::SerdeError)?,
                    );
                }
                if let Some(b) = change.required_capacity_bytes {
                    spec.insert("requiredCapacityBytes".into(), b.into());
                }
                if let Some(n) = change.replica_number {
                    spec.insert("replicaNumber".into(), n.into());
                }
                if let Some(a) = &change.accessibility {
                    spec.insert("accessibility".into(), serde_json::json!({ "nodes": a }));
                }
                if let Some(c) = change.convertible {
                    spec.insert("convertible".into(), c.into());
                }
                let patch = serde_json::json!({ "metadata": { "resourceVersion": v.metadata.resource_version }, "spec": spec });
                match volumes
                    .patch(&vname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(operation = %name, volume = %vname, change = ?change, "volume changed by operation")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            OpStep::DeleteReplica(r) => {
                match replicas_api.delete(&r, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(operation = %name, replica = %r, "replica deleted by operation");
                        if let Some(v) = &volume {
                            ctx.event(
                                v,
                                false,
                                "ReplicaRemoved",
                                K::KIND.as_str(),
                                format!("{} {name} removed replica {r}", K::KIND),
                            )
                            .await;
                        }
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            OpStep::RewritePvAffinity { nodes, .. } => {
                let Some(v) = &volume else { continue };
                pv_affinity::rewrite(&ctx.client, v, &nodes).await?;
            }
            OpStep::StartMembers(vols) => {
                start_members(&ctx, &current, &vols).await?;
            }
            OpStep::AbortMembers(names) => {
                for n in &names {
                    let patch = serde_json::json!({ "spec": { "abort": true } });
                    match ops
                        .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(operation = %name, member = %n, "group member's operation aborted")
                        }
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                event(
                    &ctx,
                    &current,
                    true,
                    "GroupMembersAborted",
                    format!("aborted the group's operations {}", names.join(", ")),
                )
                .await;
            }
            OpStep::Release => {
                let Some(v) = &volume else { continue };
                let patch = serde_json::json!({ "metadata": { "resourceVersion": v.metadata.resource_version }, "spec": { "operation": null } });
                match volumes
                    .patch(&vname, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(operation = %name, volume = %vname, "operation let the volume go")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            OpStep::Delete => {
                match ops.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(operation = %name, "ended operation removed after its time-to-live")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Action::await_change());
            }
        }
    }
    // Still moving: look again soon (a long run of steps is normal while it starts).
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// The snapshots of `volume` (a migration refuses to take a replica away from its
/// snapshots). A cluster without the snapshot CRD has none.
async fn volume_snapshots(
    ctx: &Context,
    volume: Option<&LocalVolume>,
) -> Result<Vec<hwameistor_api::LocalVolumeSnapshot>, kube::Error> {
    let Some(v) = volume else {
        return Ok(Vec::new());
    };
    let name = v.name_any();
    match Api::<hwameistor_api::LocalVolumeSnapshot>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => Ok(l
            .items
            .into_iter()
            .filter(|s| s.spec.source_volume == name)
            .collect()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The other volumes of `volume`'s group (by its group label) and the operations `op` made
/// for them (by theirs); both empty when the volume is in no group and `op` made none.
async fn read_group<K: OperationResource>(
    ctx: &Context,
    op: &K,
    volume: Option<&LocalVolume>,
) -> Result<(Vec<LocalVolume>, Vec<group::Child>), kube::Error> {
    let name = op.name_any();
    let members = match volume.and_then(|v| v.labels().get(LABEL_VOLUME_GROUP)) {
        Some(g) => Api::<LocalVolume>::all(ctx.client.clone())
            .list(&ListParams::default().labels(&format!("{LABEL_VOLUME_GROUP}={g}")))
            .await?
            .items
            .into_iter()
            .filter(|m| Some(m.name_any()) != volume.map(|v| v.name_any()))
            .collect(),
        None => Vec::new(),
    };
    let children = Api::<K>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&format!("{LABEL_GROUP_OPERATION}={name}")))
        .await?
        .items
        .into_iter()
        .map(|c| group::Child {
            name: c.name_any(),
            volume: c.volume_name().to_string(),
            abort: c.abort(),
            status: c.op_status().cloned().unwrap_or_default(),
        })
        .collect();
    Ok((members, children))
}

/// Creates lead `op`'s operations for its group's volumes `vols`: labelled with its name
/// (and the node a drain empties), owned by it (they go when it goes).
async fn start_members<K: OperationResource>(
    ctx: &Context,
    op: &K,
    vols: &[String],
) -> Result<(), OperationError> {
    let lead = op.name_any();
    let Some(target) = op.op_status().and_then(|s| s.target_node.clone()) else {
        return Ok(());
    };
    let api: Api<K> = Api::all(ctx.client.clone());
    let mut made = Vec::new();
    for v in vols {
        let name = group::member_operation_name(&lead, v);
        let Some(mut child) = op.member_operation(&name, v, &target) else {
            return Ok(());
        };
        let mut labels =
            std::collections::BTreeMap::from([(LABEL_GROUP_OPERATION.to_string(), lead.clone())]);
        if let Some(node) = op.labels().get(LABEL_DRAIN) {
            labels.insert(LABEL_DRAIN.to_string(), node.clone());
        }
        child.meta_mut().labels = Some(labels);
        child.meta_mut().owner_references = Some(vec![OwnerReference {
            api_version: K::api_version(&()).to_string(),
            kind: K::kind(&()).to_string(),
            name: lead.clone(),
            uid: op.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        match api.create(&PostParams::default(), &child).await {
            Ok(_) => made.push(name),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !made.is_empty() {
        tracing::info!(operation = %lead, members = ?made, %target, "group members' operations made");
        event(
            ctx,
            op,
            false,
            "GroupMembersStarted",
            format!(
                "the group's other volumes go to {target} too: operations {}",
                made.join(", ")
            ),
        )
        .await;
    }
    Ok(())
}

async fn reconcile<K: OperationResource>(
    op: Arc<K>,
    ctx: Arc<(Arc<Context>, OperationSettings)>,
) -> Result<Action, OperationError> {
    let started = Instant::now();
    let (c, settings) = (&ctx.0, ctx.1);
    let result = reconcile_steps(op, c.clone(), settings).await;
    c.metrics.observe(
        &format!("localvolume{}", K::KIND.as_str().to_lowercase()),
        result.is_ok(),
        started.elapsed(),
    );
    result
}

fn error_policy<K: OperationResource>(
    op: Arc<K>,
    err: &OperationError,
    _ctx: Arc<(Arc<Context>, OperationSettings)>,
) -> Action {
    tracing::warn!(operation = %op.name_any(), kind = K::KIND.as_str(), error = %err, "operation reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn run_kind<K: OperationResource>(ctx: Arc<Context>, settings: OperationSettings) {
    let ops: Api<K> = Api::all(ctx.client.clone());
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let controller = Controller::new(ops, watcher::Config::default());
    let store = controller.store();
    // A change of the volume (or one of its replicas) wakes the operations on it.
    let on_volume = move |volume: String| {
        store
            .state()
            .into_iter()
            .filter(|o| o.volume_name() == volume)
            .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
            .collect::<Vec<_>>()
    };
    let on_volume2 = on_volume.clone();
    controller
        .watches(
            volumes,
            watcher::Config::default(),
            move |v: LocalVolume| on_volume(v.name_any()),
        )
        .watches(
            replicas,
            watcher::Config::default(),
            move |r: LocalVolumeReplica| on_volume2(r.spec.volume_name.clone()),
        )
        .run(reconcile::<K>, error_policy::<K>, Arc::new((ctx, settings)))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "operation controller event");
            }
        })
        .await;
    tracing::error!(
        kind = K::KIND.as_str(),
        "an operation controller stream ended"
    );
}

/// Runs the three operation reconcilers until the future is dropped.
pub async fn run(ctx: Arc<Context>, settings: OperationSettings) {
    tokio::join!(
        run_kind::<LocalVolumeMigrate>(ctx.clone(), settings),
        run_kind::<LocalVolumeConvert>(ctx.clone(), settings),
        run_kind::<LocalVolumeExpand>(ctx, settings),
    );
}
