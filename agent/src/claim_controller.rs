//! Runs LocalDiskClaims of this node: binds disks and grows pools, one idempotent step at
//! a time (see [`hwameistor_core::claim`]).

use crate::context::Context;
use crate::scanner;
use futures::StreamExt;
use hwameistor_api::{
    ClaimPhase, LocalDisk, LocalDiskClaim, LocalDiskClaimStatus, ObjectRef, LABEL_CLAIM, LABEL_NODE,
};
use hwameistor_core::claim::{self as claims, ClaimStep};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Api;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("LVM failed: {0}")]
    Lvm(#[from] crate::lvm::LvmError),
    #[error("scan failed: {0}")]
    Scan(#[from] scanner::ScanError),
    #[error("claim made no progress after {0} steps")]
    Stuck(usize),
}

fn matched_condition(ok: bool, reason: &str, message: &str, old: &[Condition]) -> Condition {
    let status = if ok { "True" } else { "False" };
    Condition {
        type_: "Matched".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: old
            .iter()
            .find(|c| c.type_ == "Matched" && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(jiff::Timestamp::now())),
    }
}

async fn write_status(
    api: &Api<LocalDiskClaim>,
    claim: &LocalDiskClaim,
    status: LocalDiskClaimStatus,
) -> Result<LocalDiskClaim, kube::Error> {
    let mut c = claim.clone();
    c.status = Some(status);
    api.replace_status(
        &claim.metadata.name.clone().unwrap_or_default(),
        &PostParams::default(),
        &c,
    )
    .await
}

/// Reconciles one claim until it needs nothing more from this node right now.
pub async fn reconcile(
    claim: Arc<LocalDiskClaim>,
    ctx: Arc<Context>,
) -> Result<Action, ClaimError> {
    if claim.spec.node_name != ctx.node {
        return Ok(Action::await_change());
    }
    let name = claim.metadata.name.clone().unwrap_or_default();
    let claims: Api<LocalDiskClaim> = Api::all(ctx.client.clone());
    let disks_api: Api<LocalDisk> = Api::all(ctx.client.clone());
    let node_label = format!("{LABEL_NODE}={}", ctx.node);
    for _ in 0..32 {
        let claim = match claims.get_opt(&name).await? {
            Some(c) => c,
            None => return Ok(Action::await_change()),
        };
        let disks = disks_api
            .list(&ListParams::default().labels(&node_label))
            .await?
            .items;
        let lvm = ctx.lvm.state().await?;
        let step = claims::next_step(&ctx.node, &claim, &disks, &lvm);
        tracing::debug!(claim = %name, ?step, "claim step");
        let mut status = claim.status.clone().unwrap_or_default();
        match step {
            ClaimStep::Nothing => return Ok(Action::await_change()),
            ClaimStep::Wait(why) => {
                let message = format!("waiting for matching disks: {why}");
                if status.phase != Some(ClaimPhase::Pending)
                    || status.message.as_deref() != Some(&message)
                {
                    status.phase = Some(ClaimPhase::Pending);
                    status.conditions = vec![matched_condition(
                        false,
                        "NoMatchingDisks",
                        &why,
                        &status.conditions,
                    )];
                    status.message = Some(message.clone());
                    status.observed_generation = claim.metadata.generation;
                    let c = write_status(&claims, &claim, status).await?;
                    ctx.event(&c, true, "NoMatchingDisks", "Bind", message)
                        .await;
                }
                // Woken by disk changes (see run); the requeue is only a safety net.
                return Ok(Action::requeue(Duration::from_secs(300)));
            }
            ClaimStep::Choose(names) => {
                let message = format!("binding {}", names.join(", "));
                status.phase = Some(ClaimPhase::Extending);
                status.bound_disks = names;
                status.conditions = vec![matched_condition(
                    true,
                    "DisksSelected",
                    &message,
                    &status.conditions,
                )];
                status.message = Some(message.clone());
                status.observed_generation = claim.metadata.generation;
                let c = write_status(&claims, &claim, status).await?;
                crate::crash::point("claim-after-choose");
                ctx.event(&c, false, "DisksSelected", "Bind", message).await;
            }
            ClaimStep::BindDisk(disk) => {
                let patch = serde_json::json!({
                    "metadata": { "labels": { LABEL_CLAIM: name } },
                    "spec": { "claimRef": ObjectRef { name: name.clone(), uid: claim.metadata.uid.clone().unwrap_or_default() } },
                });
                disks_api
                    .patch(&disk, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                crate::crash::point("claim-after-bind-disk");
                tracing::info!(claim = %name, disk = %disk, "disk bound to claim");
            }
            ClaimStep::DropDisk { disk, reason } => {
                tracing::warn!(claim = %name, disk = %disk, reason = %reason, "dropping disk from claim");
                status.bound_disks.retain(|d| d != &disk);
                let message = format!("gave up disk {disk}: {reason}");
                status.message = Some(message.clone());
                if status.bound_disks.is_empty() {
                    status.phase = Some(ClaimPhase::Pending);
                }
                let c = write_status(&claims, &claim, status).await?;
                ctx.event(&c, true, "DiskDropped", "Bind", message).await;
                // Release the disk if this claim holds it, so others may use it.
                if let Some(ld) = disks
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(disk.as_str()))
                {
                    if ld.spec.claim_ref.as_ref().is_some_and(|r| r.name == name) {
                        let patch = serde_json::json!({ "metadata": { "labels": { LABEL_CLAIM: null } }, "spec": { "claimRef": null } });
                        disks_api
                            .patch(&disk, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                    }
                }
            }
            ClaimStep::ExtendPools(pools) => {
                let _host = ctx.host.lock().await;
                for (pool, devices) in &pools {
                    tracing::info!(claim = %name, pool = %pool, ?devices, "extending pool");
                    if let Err(e) = ctx.lvm.ensure_vg(pool, devices).await {
                        let message =
                            format!("extending {pool} with {} failed: {e}", devices.join(" "));
                        status.message = Some(message.clone());
                        let c = write_status(&claims, &claim, status).await?;
                        ctx.event(&c, true, "ExtendFailed", "Extend", message).await;
                        drop(_host);
                        // Let a scan re-read the disks: a disk that gained a signature is then
                        // Unavailable and the next pass drops it instead of retrying forever.
                        scanner::scan_once(&ctx).await?;
                        return Ok(Action::requeue(Duration::from_secs(10)));
                    }
                }
                drop(_host);
                // Publish the disks as Bound and the pools' new size before completing.
                scanner::scan_once(&ctx).await?;
            }
            ClaimStep::Complete { capacity_bytes } => {
                let message = format!(
                    "{} disk(s) added, {} of pool capacity",
                    status.bound_disks.len(),
                    hwameistor_api::quantity::format_size(capacity_bytes)
                );
                status.phase = Some(ClaimPhase::Bound);
                status.capacity_bytes = Some(capacity_bytes);
                status.message = Some(message.clone());
                status.observed_generation = claim.metadata.generation;
                let c = write_status(&claims, &claim, status).await?;
                tracing::info!(claim = %name, %message, "claim bound");
                ctx.event(&c, false, "Bound", "Extend", message).await;
                return Ok(Action::await_change());
            }
        }
    }
    Err(ClaimError::Stuck(32))
}

fn error_policy(_claim: Arc<LocalDiskClaim>, err: &ClaimError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "claim reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the claim controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<LocalDiskClaim> = Api::all(ctx.client.clone());
    // Pending claims are re-examined whenever the scanner saw disks change.
    let trigger = broadcast_stream(ctx.disks_changed.subscribe());
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(trigger)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "claim controller event");
            }
        })
        .await;
}

/// A stream that yields once per message of a broadcast channel (a lagging receiver still
/// yields: missing a trigger would leave a claim waiting).
pub fn broadcast_stream(
    rx: tokio::sync::broadcast::Receiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}
