//! Executes this node's LocalVolumeReplicas: creates, grows and removes their logical
//! volumes, one idempotent step at a time (see [`hwameistor_core::replica`]).
//!
//! Decisions are made on the agent's LVM view, so a create with a warm view costs one
//! `lvcreate` and the API writes around it. The view's lock for the volume's group is held
//! only while LVM runs, never across an API call.

use crate::context::Context;
use crate::crash::CrashPoint;
use crate::lvm::LvmOpError;
use futures::StreamExt;
use hwameistor_api::{
    CopyStatus, LocalVolumeReplica, LocalVolumeReplicaStatus, ReplicaState, FINALIZER_REPLICA,
};
use hwameistor_core::replica::{self as replicas, ReplicaStep};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Api;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("LVM failed: {0}")]
    Lvm(#[from] crate::lvm::LvmError),
    #[error("replica made no progress after {0} steps")]
    Stuck(usize),
}

/// Sets `r`'s finalizers (any of the agent's resources).
pub(crate) async fn set_finalizers<K>(
    api: &Api<K>,
    r: &K,
    finalizers: Vec<String>,
) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let r = r.meta();
    // The resourceVersion makes this a compare-and-swap: a concurrent change makes it fail
    // with 409 and the reconcile runs again on fresh state.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": r.resource_version }
    });
    api.patch(
        &r.name.clone().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// Adds finalizer `name` to `r` (a compare-and-swap, as [`set_finalizers`]).
pub(crate) async fn add_finalizer<K>(api: &Api<K>, r: &K, name: &str) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut f = r.meta().finalizers.clone().unwrap_or_default();
    f.push(name.to_string());
    set_finalizers(api, r, f).await
}

/// Removes finalizer `name` from `r` (a compare-and-swap, as [`set_finalizers`]).
pub(crate) async fn remove_finalizer<K>(api: &Api<K>, r: &K, name: &str) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let f = r
        .meta()
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x != name)
        .collect();
    set_finalizers(api, r, f).await
}

pub(crate) async fn write_status(
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
    status: LocalVolumeReplicaStatus,
) -> Result<LocalVolumeReplica, kube::Error> {
    let mut r = r.clone();
    r.status = Some(status);
    api.replace_status(
        &r.metadata.name.clone().unwrap_or_default(),
        &PostParams::default(),
        &r,
    )
    .await
}

/// Records why the replica is not where it should be; `state` is NotReady (create path) or
/// Deleting (delete path).
async fn record_failure(
    ctx: &Context,
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
    state: ReplicaState,
    reason: &str,
    action: &str,
    e: &LvmOpError,
) -> Result<(), kube::Error> {
    let mut st = r.status.clone().unwrap_or_default();
    let state = if e.retryable() {
        state
    } else {
        ReplicaState::Failed
    };
    let message = e.to_string();
    if st.state != Some(state) || st.message.as_deref() != Some(message.as_str()) {
        st.state = Some(state);
        st.message = Some(message.clone());
        st.observed_generation = r.metadata.generation;
        let r = write_status(api, r, st).await?;
        ctx.event(&r, true, reason, action, message).await;
    }
    Ok(())
}

/// Records `e` on a replica not made yet and says when to try again: soon when LVM may
/// succeed later, on the next change otherwise.
async fn retry_after(
    ctx: &Context,
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
    reason: &str,
    action: &str,
    e: &LvmOpError,
) -> Result<Action, kube::Error> {
    record_failure(ctx, api, r, ReplicaState::NotReady, reason, action, e).await?;
    Ok(if e.retryable() {
        Action::requeue(ctx.tuning.retry)
    } else {
        Action::await_change()
    })
}

/// Brings one replica to its goal.
pub async fn reconcile(
    obj: Arc<LocalVolumeReplica>,
    ctx: Arc<Context>,
) -> Result<Action, ReplicaError> {
    if obj.spec.node_name != ctx.node {
        return Ok(Action::await_change());
    }
    if obj.spec.replication.is_some() {
        let Some(rep) = ctx.replication.as_ref() else {
            // An HA replica on a node whose agent runs without replication: say so, once.
            let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
            let msg = "this node's agent runs without DRBD replication (--drbd off); it cannot hold a replica of an HA volume".to_string();
            if obj.status.as_ref().and_then(|s| s.message.as_deref()) != Some(msg.as_str()) {
                let mut st = obj.status.clone().unwrap_or_default();
                st.state = Some(ReplicaState::NotReady);
                st.message = Some(msg);
                write_status(&api, &obj, st).await?;
            }
            return Ok(Action::await_change());
        };
        return crate::ha::reconcile(&ctx, rep, (*obj).clone()).await;
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    // A copy no longer wanted (the replica is going, or its operation was aborted or
    // replaced) stops at once.
    if let Some(m) = ctx.mover.get() {
        let keep = obj
            .spec
            .copy_from
            .as_ref()
            .filter(|_| obj.metadata.deletion_timestamp.is_none())
            .map(|c| c.operation_uid.as_str());
        m.cancel_unless(&name, keep);
    }
    let mut current = (*obj).clone();
    for _ in 0..16 {
        let lvm = ctx.lvm.snapshot().await?;
        let step = replicas::next_step(&ctx.node, &current, &lvm);
        tracing::debug!(replica = %name, ?step, "replica step");
        match step {
            ReplicaStep::Nothing => return Ok(Action::await_change()),
            ReplicaStep::AddFinalizer => {
                current = add_finalizer(&api, &current, FINALIZER_REPLICA).await?;
                ctx.crash.point(CrashPoint::ReplicaAfterFinalizer).await;
            }
            ReplicaStep::RemoveFinalizer => {
                remove_finalizer(&api, &current, FINALIZER_REPLICA).await?;
                tracing::info!(replica = %name, "replica deleted");
                return Ok(Action::await_change());
            }
            ReplicaStep::EnsureVolume {
                vg,
                lv,
                bytes,
                thin,
            } => {
                let made = if thin {
                    ctx.lvm
                        .ensure_thin_lv(&vg, &lv, bytes, &ctx.tuning.thin)
                        .await
                } else {
                    ctx.lvm.ensure_lv(&vg, &lv, bytes).await
                };
                match made {
                    Ok((outcome, lv)) => {
                        tracing::info!(replica = %name, volume = %lv.path, size = lv.size, ?outcome, "logical volume ready");
                        // Publish the status right away: this is on the provisioning path
                        // (Ready, unless a block copy must fill the volume first).
                        current =
                            write_status(&api, &current, replicas::ready_status(&current, &lv))
                                .await?;
                        ctx.event(
                            &current,
                            false,
                            "VolumeReady",
                            "Create",
                            format!("{} is {} bytes", lv.path, lv.size),
                        )
                        .await;
                        ctx.rescan.notify_one();
                    }
                    Err(e) => {
                        return Ok(
                            retry_after(&ctx, &api, &current, "VolumeFailed", "Create", &e).await?,
                        );
                    }
                }
            }
            ReplicaStep::RemoveVolume { vg, lv } => {
                if let Err(e) = ctx.lvm.remove_lv(&vg, &lv).await {
                    record_failure(
                        &ctx,
                        &api,
                        &current,
                        ReplicaState::Deleting,
                        "DeleteFailed",
                        "Delete",
                        &e,
                    )
                    .await?;
                    return Ok(Action::requeue(ctx.tuning.retry));
                }
                tracing::info!(replica = %name, "logical volume {vg}/{lv} removed");
                ctx.rescan.notify_one();
            }
            ReplicaStep::Status(st) => {
                current = write_status(&api, &current, *st).await?;
            }
            ReplicaStep::CloneThin {
                vg,
                lv,
                snapshot_lv,
                bytes,
                src,
            } => {
                match ctx
                    .lvm
                    .ensure_thin_clone(&vg, &snapshot_lv, &lv, bytes, &ctx.tuning.thin)
                    .await
                {
                    Ok((outcome, made)) => {
                        // The snapshot's data is the volume's by construction (LVM shares
                        // its blocks): recorded as filled, with what it holds.
                        let restored = ctx
                            .lvm
                            .snapshot()
                            .await?
                            .lv(&vg, &snapshot_lv)
                            .map(|l| l.size)
                            .unwrap_or(made.size);
                        let mut filled = current.clone();
                        let mut st = filled.status.clone().unwrap_or_default();
                        st.copy = Some(CopyStatus {
                            operation_uid: src.operation_uid.clone(),
                            bytes_done: restored,
                            bytes_total: restored,
                            verified: true,
                            lvm_clone: true,
                            ..CopyStatus::default()
                        });
                        filled.status = Some(st);
                        current =
                            write_status(&api, &current, replicas::ready_status(&filled, &made))
                                .await?;
                        tracing::info!(replica = %name, volume = %made.path, size = made.size, snapshot = %snapshot_lv, ?outcome, "restored from a thin snapshot by LVM (blocks shared)");
                        ctx.event(
                            &current,
                            false,
                            "VolumeRestored",
                            "Restore",
                            format!(
                                "{} made from snapshot {} by LVM (a thin clone: nothing copied), {} bytes",
                                made.path,
                                src.snapshot.as_deref().unwrap_or(&snapshot_lv),
                                made.size
                            ),
                        )
                        .await;
                        ctx.rescan.notify_one();
                    }
                    Err(e) => {
                        return Ok(retry_after(
                            &ctx,
                            &api,
                            &current,
                            "RestoreFailed",
                            "Restore",
                            &e,
                        )
                        .await?);
                    }
                }
            }
            ReplicaStep::Copy(src) => {
                let Some(m) = ctx.mover.get() else {
                    let msg = "this node's agent runs without a block mover (--mover-port 0); it cannot receive a copy".to_string();
                    if current
                        .status
                        .as_ref()
                        .and_then(|s| s.copy.as_ref())
                        .and_then(|c| c.error.as_deref())
                        != Some(msg.as_str())
                    {
                        let mut st = current.status.clone().unwrap_or_default();
                        let mut copy = st.copy.clone().unwrap_or_default();
                        copy.operation_uid = src.operation_uid.clone();
                        copy.error = Some(msg);
                        st.copy = Some(copy);
                        write_status(&api, &current, st).await?;
                    }
                    return Ok(Action::await_change());
                };
                // The task reports in status.copy; its verdict wakes this reconciler.
                m.ensure_copy(ctx.clone(), &current, &src);
                return Ok(Action::await_change());
            }
        }
    }
    Err(ReplicaError::Stuck(16))
}

fn error_policy(_r: Arc<LocalVolumeReplica>, err: &ReplicaError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "replica reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

pub async fn run(ctx: Arc<Context>) {
    let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    // Only this node's replicas; all of them are looked at again when a re-read of LVM found
    // it changed (a volume removed by hand, the disks of a new volume now known).
    let cfg = watcher::Config::default().fields(&ctx.node_selector());
    let lvm_changed = crate::claim_controller::broadcast_stream(ctx.lvm.subscribe());
    let drbd_changed = match ctx.replication.as_ref() {
        Some(rep) => crate::claim_controller::broadcast_stream(rep.subscribe()).boxed(),
        None => futures::stream::pending().boxed(),
    };
    let changed = futures::stream::select(lvm_changed, drbd_changed);
    Controller::new(api, cfg)
        .reconcile_all_on(changed)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "replica controller event");
            }
        })
        .await;
}
