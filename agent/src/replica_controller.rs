//! Executes this node's LocalVolumeReplicas: creates, grows and removes their logical
//! volumes, one idempotent step at a time (see [`hwameistor_core::replica`]).

use crate::context::Context;
use futures::StreamExt;
use hwameistor_api::{
    LocalVolumeReplica, LocalVolumeReplicaStatus, ReplicaState, FINALIZER_REPLICA, LABEL_NODE,
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

async fn set_finalizers(
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
    finalizers: Vec<String>,
) -> Result<LocalVolumeReplica, kube::Error> {
    // The resourceVersion makes this a compare-and-swap: a concurrent change makes it fail
    // with 409 and the reconcile runs again on fresh state.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": r.metadata.resource_version }
    });
    api.patch(
        &r.metadata.name.clone().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

async fn write_status(
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

/// Brings one replica to its goal. The host lock is held throughout and LVM is read once:
/// every later step updates that snapshot from the result of its own command, so a create
/// costs one state read, the `lvcreate`, and one `lvs` of the new volume.
pub async fn reconcile(
    obj: Arc<LocalVolumeReplica>,
    ctx: Arc<Context>,
) -> Result<Action, ReplicaError> {
    if obj.spec.node_name != ctx.node {
        return Ok(Action::await_change());
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let mut current = (*obj).clone();
    let _host = ctx.host.lock().await;
    let mut lvm = ctx.lvm.state().await?;
    for _ in 0..16 {
        let step = replicas::next_step(&ctx.node, &current, &lvm);
        tracing::debug!(replica = %name, ?step, "replica step");
        match step {
            ReplicaStep::Nothing => return Ok(Action::await_change()),
            ReplicaStep::AddFinalizer => {
                let mut f = current.metadata.finalizers.clone().unwrap_or_default();
                f.push(FINALIZER_REPLICA.to_string());
                current = set_finalizers(&api, &current, f).await?;
                crate::crash::point("replica-after-finalizer");
            }
            ReplicaStep::RemoveFinalizer => {
                let f = current
                    .metadata
                    .finalizers
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|x| x != FINALIZER_REPLICA)
                    .collect();
                set_finalizers(&api, &current, f).await?;
                tracing::info!(replica = %name, "replica deleted");
                return Ok(Action::await_change());
            }
            ReplicaStep::EnsureVolume { vg, lv, bytes } => {
                match ctx.lvm.ensure_lv_in(&lvm, &vg, &lv, bytes).await {
                    Ok((outcome, lv)) => {
                        tracing::info!(replica = %name, volume = %lv.path, size = lv.size, ?outcome, "logical volume ready");
                        lvm.lvs
                            .retain(|l| !(l.vg_name == lv.vg_name && l.name == lv.name));
                        lvm.lvs.push(lv.clone());
                        // Publish Ready right away: this is on the provisioning path.
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
                        let mut st = current.status.clone().unwrap_or_default();
                        let retryable = !matches!(e, crate::lvm::LvmError::InvalidName(_));
                        st.state = Some(if retryable {
                            ReplicaState::NotReady
                        } else {
                            ReplicaState::Failed
                        });
                        st.message = Some(e.to_string());
                        write_status(&api, &current, st).await?;
                        ctx.event(&current, true, "VolumeFailed", "Create", e.to_string())
                            .await;
                        return Ok(if retryable {
                            Action::requeue(Duration::from_secs(15))
                        } else {
                            Action::await_change()
                        });
                    }
                }
            }
            ReplicaStep::RemoveVolume { vg, lv } => {
                if let Err(e) = ctx.lvm.remove_lv_in(&lvm, &vg, &lv).await {
                    let mut st = current.status.clone().unwrap_or_default();
                    st.state = Some(ReplicaState::Deleting);
                    st.message = Some(e.to_string());
                    write_status(&api, &current, st).await?;
                    ctx.event(&current, true, "DeleteFailed", "Delete", e.to_string())
                        .await;
                    return Ok(Action::requeue(Duration::from_secs(10)));
                }
                lvm.lvs.retain(|l| !(l.vg_name == vg && l.name == lv));
                tracing::info!(replica = %name, "logical volume {vg}/{lv} removed");
                ctx.rescan.notify_one();
            }
            ReplicaStep::Status(st) => {
                current = write_status(&api, &current, *st).await?;
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
    let cfg = watcher::Config::default().labels(&format!("{LABEL_NODE}={}", ctx.node));
    Controller::new(api, cfg)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "replica controller event");
            }
        })
        .await;
}
