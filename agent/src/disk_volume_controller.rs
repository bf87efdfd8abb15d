//! This node's raw-disk volumes (LocalDiskVolume): confirms a bound disk and reports its
//! stable path; wipes the disk of a deleted volume once nothing holds it (see
//! [`hwameistor_core::disk_volume`]). The controller binds and gives back disks.

use crate::context::Context;
use futures::StreamExt;
use hwameistor_api::{DiskVolumeState, LocalDisk, LocalDiskVolume, WipePolicy};
use hwameistor_core::disk_volume::{node_step, NodeStep};
use hwameistor_hostexec::disk::Wipe;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DiskVolumeError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// What the reconciler needs besides the agent's context.
pub struct DiskVolumes {
    pub ctx: Arc<Context>,
    pub wipe: Arc<dyn Wipe>,
}

async fn write_status(
    api: &Api<LocalDiskVolume>,
    v: &LocalDiskVolume,
    f: impl FnOnce(&mut hwameistor_api::LocalDiskVolumeStatus),
) -> Result<LocalDiskVolume, kube::Error> {
    let mut v = v.clone();
    let st = v.status.get_or_insert_with(Default::default);
    f(st);
    api.replace_status(&v.name_any(), &PostParams::default(), &v)
        .await
}

/// One step for one volume.
pub async fn reconcile(
    v: Arc<LocalDiskVolume>,
    dv: Arc<DiskVolumes>,
) -> Result<Action, DiskVolumeError> {
    let ctx = &dv.ctx;
    let api: Api<LocalDiskVolume> = Api::all(ctx.client.clone());
    let disks = Api::<LocalDisk>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&ctx.node_selector()))
        .await?
        .items;
    let name = v.name_any();
    match node_step(&ctx.node, &v, &disks) {
        NodeStep::Nothing => Ok(Action::await_change()),
        NodeStep::Ready {
            device_path,
            capacity,
        } => {
            let v = write_status(&api, &v, |st| {
                st.state = Some(DiskVolumeState::Ready);
                st.device_path = Some(device_path.clone());
                st.capacity_bytes = Some(capacity);
                st.message = None;
            })
            .await?;
            tracing::info!(volume = %name, device = %device_path, "disk volume ready");
            // The disk's phase follows its new binding in the next scan.
            ctx.rescan.notify_one();
            ctx.event(
                &v,
                false,
                "DiskReady",
                "Confirm",
                format!("serves from {device_path}"),
            )
            .await;
            Ok(Action::await_change())
        }
        NodeStep::Failed(why) => {
            let v = write_status(&api, &v, |st| {
                st.state = Some(DiskVolumeState::Failed);
                st.message = Some(why.clone());
            })
            .await?;
            tracing::warn!(volume = %name, reason = %why, "disk volume failed");
            ctx.event(&v, true, "DiskMissing", "Confirm", why).await;
            Ok(Action::await_change())
        }
        NodeStep::Wait(why) => {
            if v.status.as_ref().and_then(|s| s.message.as_deref()) != Some(why.as_str()) {
                write_status(&api, &v, |st| st.message = Some(why.clone())).await?;
            }
            Ok(Action::requeue(ctx.tuning.retry))
        }
        NodeStep::Wipe { device, policy } => {
            // The watch cache may not show yet the wipe this agent just recorded (a
            // reconcile queued meanwhile runs on it): ask the API server before erasing.
            let fresh = api.get_opt(&name).await?;
            if fresh.is_none_or(|f| f.status.is_some_and(|s| s.wiped)) {
                return Ok(Action::await_change());
            }
            let full = policy == WipePolicy::Full;
            tracing::info!(volume = %name, %device, full, "wiping the released disk");
            ctx.event(
                &*v,
                false,
                "Wiping",
                "Wipe",
                format!(
                    "wiping {device} ({})",
                    if full {
                        "zeroing all of it"
                    } else {
                        "its signatures"
                    }
                ),
            )
            .await;
            match dv.wipe.wipe(&device, full).await {
                Ok(()) => {
                    // A merge patch, not a replace: the controller writes this status too
                    // (Releasing) and a conflict here would wipe the disk again, which for a
                    // full wipe of a large disk is hours. Only the agent sets `wiped`.
                    let patch = serde_json::json!({ "status": {
                        "wiped": true,
                        "message": format!("{device} wiped; the disk is given back"),
                    }});
                    let v = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                    ctx.event(&v, false, "Wiped", "Wipe", format!("{device} wiped"))
                        .await;
                    // Its scan shows it blank again.
                    ctx.rescan.notify_one();
                    Ok(Action::await_change())
                }
                Err(e) => {
                    let msg = format!("wiping {device} failed (retrying): {e}");
                    tracing::warn!(volume = %name, error = %e, "wipe failed");
                    write_status(&api, &v, |st| st.message = Some(msg.clone())).await?;
                    ctx.event(&*v, true, "WipeFailed", "Wipe", msg).await;
                    Ok(Action::requeue(ctx.tuning.retry))
                }
            }
        }
    }
}

fn error_policy(_v: Arc<LocalDiskVolume>, err: &DiskVolumeError, _dv: Arc<DiskVolumes>) -> Action {
    tracing::warn!(error = %err, "disk volume reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs until the future is dropped: this node's disk volumes, looked at again whenever a
/// scan changed the node's disks.
pub async fn run(dv: Arc<DiskVolumes>) {
    let ctx = dv.ctx.clone();
    let api: Api<LocalDiskVolume> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&ctx.node_selector());
    let disks_changed = crate::claim_controller::broadcast_stream(ctx.disks_changed.subscribe());
    Controller::new(api, cfg)
        .reconcile_all_on(disks_changed)
        .run(reconcile, error_policy, dv)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "disk volume controller event");
            }
        })
        .await;
}
