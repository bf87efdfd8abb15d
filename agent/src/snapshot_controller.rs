//! Executes this node's LocalVolumeSnapshots: takes each one's LVM snapshot once, reports
//! it (a copy-on-write snapshot's use of its space too, re-read with LVM), and removes it
//! when the object is deleted (see [`hwameistor_core::snapshot`]).
//!
//! A copy-on-write snapshot that fills its space is invalidated by LVM and its data lost:
//! its use past [`FILLING_PERCENT`] is a Warning event, once per crossing, and the loss
//! itself another.

use crate::context::Context;
use crate::lvm::LvmOpError;
use crate::replica_controller::{add_finalizer, remove_finalizer};
use futures::StreamExt;
use hwameistor_api::{
    LocalVolume, LocalVolumeSnapshot, LocalVolumeSnapshotStatus, SnapshotState, FINALIZER_SNAPSHOT,
};
use hwameistor_core::restore;
use hwameistor_core::snapshot::{self as snapshots, SnapshotStep};
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// A copy-on-write snapshot's use from which it is warned about.
pub const FILLING_PERCENT: i64 = 80;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("LVM failed: {0}")]
    Lvm(#[from] crate::lvm::LvmError),
    #[error("snapshot made no progress after {0} steps")]
    Stuck(usize),
}

async fn write_status(
    api: &Api<LocalVolumeSnapshot>,
    s: &LocalVolumeSnapshot,
    status: LocalVolumeSnapshotStatus,
) -> Result<LocalVolumeSnapshot, kube::Error> {
    let mut s = s.clone();
    s.status = Some(status);
    api.replace_status(
        &s.metadata.name.clone().unwrap_or_default(),
        &PostParams::default(),
        &s,
    )
    .await
}

/// The events a status change is worth: the snapshot became usable, filled past the mark,
/// or was lost.
async fn tell(ctx: &Context, s: &LocalVolumeSnapshot, new: &LocalVolumeSnapshotStatus) {
    let old = s.status.clone().unwrap_or_default();
    let source = &s.spec.source_volume;
    if new.state == Some(SnapshotState::Ready) && old.state != Some(SnapshotState::Ready) {
        ctx.event(
            s,
            false,
            "SnapshotReady",
            "Snapshot",
            format!("snapshot of {source} taken on {}", s.spec.node_name),
        )
        .await;
    }
    let filling = |st: &LocalVolumeSnapshotStatus| {
        st.state == Some(SnapshotState::Ready)
            && st.used_percent.is_some_and(|p| p >= FILLING_PERCENT)
    };
    if filling(new) && !filling(&old) {
        ctx.event(
            s,
            true,
            "SnapshotFilling",
            "Snapshot",
            format!(
                "{}% of the snapshot's copy-on-write space holds blocks of {source} changed since; when it is full LVM invalidates the snapshot and its data is lost",
                new.used_percent.unwrap_or(0)
            ),
        )
        .await;
    }
    if new.state == Some(SnapshotState::Failed) && old.state != Some(SnapshotState::Failed) {
        ctx.event(
            s,
            true,
            "SnapshotFailed",
            "Snapshot",
            new.message.clone().unwrap_or_default(),
        )
        .await;
    }
}

async fn record_failure(
    ctx: &Context,
    api: &Api<LocalVolumeSnapshot>,
    s: &LocalVolumeSnapshot,
    e: &LvmOpError,
) -> Result<(), kube::Error> {
    let mut st = s.status.clone().unwrap_or_default();
    let message = e.to_string();
    if st.message.as_deref() != Some(message.as_str()) {
        st.message = Some(message.clone());
        st.observed_generation = s.metadata.generation;
        let s = write_status(api, s, st).await?;
        ctx.event(&s, true, "SnapshotRetrying", "Snapshot", message)
            .await;
    }
    Ok(())
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// Brings one snapshot to its goal.
pub async fn reconcile(
    obj: Arc<LocalVolumeSnapshot>,
    ctx: Arc<Context>,
) -> Result<Action, SnapshotError> {
    if obj.spec.node_name != ctx.node {
        return Ok(Action::await_change());
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<LocalVolumeSnapshot> = Api::all(ctx.client.clone());
    let mut current = (*obj).clone();
    for _ in 0..8 {
        let lvm = ctx.lvm.snapshot().await?;
        let step = snapshots::next_step(&ctx.node, &current, &lvm, &now());
        tracing::debug!(snapshot = %name, ?step, "snapshot step");
        match step {
            SnapshotStep::Nothing => return Ok(Action::await_change()),
            SnapshotStep::AddFinalizer => {
                current = add_finalizer(&api, &current, FINALIZER_SNAPSHOT).await?;
            }
            SnapshotStep::RemoveFinalizer => {
                remove_finalizer(&api, &current, FINALIZER_SNAPSHOT).await?;
                tracing::info!(snapshot = %name, "snapshot deleted");
                return Ok(Action::await_change());
            }
            SnapshotStep::Status(st) => {
                tell(&ctx, &current, &st).await;
                current = write_status(&api, &current, *st).await?;
            }
            SnapshotStep::Create {
                vg,
                origin,
                lv,
                cow,
            } => match ctx.lvm.ensure_snapshot(&vg, &origin, &lv, cow).await {
                Ok((outcome, lv)) => {
                    tracing::info!(snapshot = %name, device = %lv.path, ?outcome, "snapshot taken");
                    ctx.rescan.notify_one();
                }
                Err(e) => {
                    record_failure(&ctx, &api, &current, &e).await?;
                    return Ok(Action::requeue(ctx.tuning.retry));
                }
            },
            SnapshotStep::Remove { vg, lv } => {
                // A volume still being filled from it keeps it (its copy would fail midway).
                let restoring: Vec<String> = Api::<LocalVolume>::all(ctx.client.clone())
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .filter(|v| restore::restoring_from(v, &name))
                    .map(|v| v.name_any())
                    .collect();
                if !restoring.is_empty() {
                    let msg = format!(
                        "held: volume {} is being restored from it; it is removed once that volume holds its data",
                        restoring.join(", ")
                    );
                    if current.status.as_ref().and_then(|s| s.message.as_deref())
                        != Some(msg.as_str())
                    {
                        let mut st = current.status.clone().unwrap_or_default();
                        st.message = Some(msg.clone());
                        current = write_status(&api, &current, st).await?;
                        ctx.event(&current, false, "SnapshotHeld", "Delete", msg)
                            .await;
                    }
                    return Ok(Action::requeue(ctx.tuning.retry));
                }
                if let Err(e) = ctx.lvm.remove_lv(&vg, &lv).await {
                    record_failure(&ctx, &api, &current, &e).await?;
                    return Ok(Action::requeue(ctx.tuning.retry));
                }
                tracing::info!(snapshot = %name, "logical volume {vg}/{lv} removed");
                ctx.rescan.notify_one();
            }
        }
    }
    Err(SnapshotError::Stuck(8))
}

fn error_policy(_s: Arc<LocalVolumeSnapshot>, err: &SnapshotError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "snapshot reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the snapshot controller for this node's snapshots; all of them are looked at again
/// when a re-read of LVM found it changed (a copy-on-write snapshot's use, one removed by
/// hand).
pub async fn run(ctx: Arc<Context>) {
    let api: Api<LocalVolumeSnapshot> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&ctx.node_selector());
    let lvm_changed = crate::claim_controller::broadcast_stream(ctx.lvm.subscribe());
    Controller::new(api, cfg)
        .reconcile_all_on(lvm_changed)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "snapshot controller event");
            }
        })
        .await;
}
