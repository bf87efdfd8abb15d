//! Runs LocalDiskClaims of this node: binds disks and grows pools, one idempotent step at
//! a time (see [`hwameistor_core::claim`]).

use crate::context::Context;
use crate::crash::CrashPoint;
use crate::lvm::{LvmError, LvmOpError};
use crate::scanner;
use futures::StreamExt;
use hwameistor_api::{
    ClaimPhase, LocalDisk, LocalDiskClaim, LocalDiskClaimStatus, ObjectRef, LABEL_CLAIM,
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
    Lvm(#[from] LvmError),
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
    let mine = ListParams::default().fields(&ctx.node_selector());
    for _ in 0..32 {
        let claim = match claims.get_opt(&name).await? {
            Some(c) => c,
            None => return Ok(Action::await_change()),
        };
        let disks = disks_api.list(&mine).await?.items;
        let lvm = ctx.lvm.snapshot().await?;
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
                ctx.crash.point(CrashPoint::ClaimAfterChoose).await;
                ctx.event(&c, false, "DisksSelected", "Bind", message).await;
            }
            ClaimStep::BindDisk(disk) => {
                // A compare-and-swap on the disk as read: the controller binds disks to
                // raw-disk volumes the same way, so a disk never gets both (the loser reads
                // again and finds it taken).
                let rv = disks
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(disk.as_str()))
                    .and_then(|d| d.metadata.resource_version.clone());
                let patch = serde_json::json!({
                    "metadata": { "labels": { LABEL_CLAIM: name }, "resourceVersion": rv },
                    "spec": { "claimRef": ObjectRef { name: name.clone(), uid: claim.metadata.uid.clone().unwrap_or_default() } },
                });
                match disks_api
                    .patch(&disk, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
                ctx.crash.point(CrashPoint::ClaimAfterBindDisk).await;
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
                release(&disks_api, &disks, &name, &disk).await?;
            }
            ClaimStep::Fail {
                reason,
                release: give_back,
            } => {
                // Give the disks back first: a claim recorded Failed is never looked at
                // again until its spec changes, so nothing may stay bound to it by mistake.
                for disk in &give_back {
                    release(&disks_api, &disks, &name, disk).await?;
                }
                let message = format!("cannot complete: {reason}");
                status.phase = Some(ClaimPhase::Failed);
                status.message = Some(message.clone());
                status.observed_generation = claim.metadata.generation;
                status.conditions = vec![matched_condition(
                    false,
                    "DiskUnusable",
                    &reason,
                    &status.conditions,
                )];
                let c = write_status(&claims, &claim, status).await?;
                tracing::warn!(claim = %name, %reason, released = ?give_back, "claim failed");
                ctx.event(&c, true, "ClaimFailed", "Bind", message).await;
                return Ok(Action::await_change());
            }
            ClaimStep::Restart => {
                tracing::info!(claim = %name, "claim spec changed after it failed; starting again");
                let restarted = LocalDiskClaimStatus {
                    phase: Some(ClaimPhase::Pending),
                    message: Some("spec changed; choosing disks again".into()),
                    observed_generation: claim.metadata.generation,
                    ..Default::default()
                };
                write_status(&claims, &claim, restarted).await?;
            }
            ClaimStep::ExtendPools(pools) => {
                for (pool, devices) in &pools {
                    tracing::info!(claim = %name, pool = %pool, ?devices, "extending pool");
                    if let Err(e) = ctx.lvm.extend_pool(pool, devices).await {
                        let message =
                            format!("extending {pool} with {} failed: {e}", devices.join(" "));
                        status.message = Some(message.clone());
                        let c = write_status(&claims, &claim, status).await?;
                        ctx.event(&c, true, "ExtendFailed", "Extend", message).await;
                        // A refused disk (it gained a signature, joined another group) shows
                        // as Unavailable after a scan, and the next pass gives it up instead
                        // of retrying forever; anything else is retried.
                        let refused = matches!(
                            e,
                            LvmOpError::Foreign(_)
                                | LvmOpError::Lvm(LvmError::DeviceRefused { .. })
                        );
                        scanner::scan_once(&ctx).await?;
                        return Ok(if refused {
                            Action::requeue(Duration::from_millis(100))
                        } else {
                            Action::requeue(ctx.tuning.retry)
                        });
                    }
                }
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

/// Clears `disk`'s claimRef when `claim` holds it, so other claims may use it.
async fn release(
    api: &Api<LocalDisk>,
    disks: &[LocalDisk],
    claim: &str,
    disk: &str,
) -> Result<(), kube::Error> {
    let holds = disks.iter().any(|d| {
        d.metadata.name.as_deref() == Some(disk)
            && d.spec.claim_ref.as_ref().is_some_and(|r| r.name == claim)
    });
    if holds {
        let patch = serde_json::json!({ "metadata": { "labels": { LABEL_CLAIM: null } }, "spec": { "claimRef": null } });
        api.patch(disk, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(claim, disk, "disk released");
    }
    Ok(())
}

fn error_policy(_claim: Arc<LocalDiskClaim>, err: &ClaimError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "claim reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the claim controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<LocalDiskClaim> = Api::all(ctx.client.clone());
    // Only this node's claims: an agent's memory and watch traffic follow its node, not the
    // cluster. Pending claims are re-examined whenever the scanner saw disks change.
    let trigger = broadcast_stream(ctx.disks_changed.subscribe());
    Controller::new(api, watcher::Config::default().fields(&ctx.node_selector()))
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
