//! HA replicas on this node: their DRBD resources driven one idempotent step at a time (see
//! [`hwameistor_core::ha_replica`]), and the answers to DRBD's fence-peer and split-brain
//! calls.
//!
//! Fencing: a primary that loses its peer has its I/O frozen by DRBD (`fencing
//! resource-and-stonith`), which then calls the usermode helper; the helper asks this agent
//! ([`on_helper`]), which records the peer outdated on the LocalVolume with a
//! compare-and-swap ([`hwameistor_core::ha::fence_peer`]). Only if that record is made does
//! DRBD resume I/O. If the helper cannot reach the agent, or the agent cannot reach the API,
//! I/O stays frozen, and the replica reconciler retries the same decision ([`HaStep::Fence`])
//! until it can: every path that resumes I/O goes through the record.

use crate::context::Context;
use crate::crash::CrashPoint;
use crate::replica_controller::{write_status, ReplicaError};
use hwameistor_api::{LocalVolume, LocalVolumeReplica, ReplicaState, FINALIZER_REPLICA};
use hwameistor_core::drbd::{self, Host, ResourceConfig, ResourceStatus};
use hwameistor_core::ha::{self, FenceVerdict};
use hwameistor_core::ha_replica::{self, DrbdView, HaStep};
use hwameistor_hostexec::drbd::{Drbd, DrbdError, KernelDrbd};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::Api;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;

/// Exit codes of the fence-peer helper DRBD 8.4 acts on.
pub mod exit {
    /// The peer's disk is recorded outdated: DRBD resumes I/O.
    pub const PEER_OUTDATED: i32 = 4;
    /// Anything DRBD does not know leaves I/O frozen (it logs the helper as broken).
    pub const KEEP_FROZEN: i32 = 1;
    pub const OK: i32 = 0;
}

/// The replication side of the agent: DRBD, what is staged here, what DRBD reported.
pub struct Replication {
    pub drbd: Arc<dyn Drbd>,
    /// The program DRBD calls for fence-peer and split-brain, written into resource files;
    /// `None` leaves handlers out (DRBD's kernel helper setting may point at it instead).
    pub handler: Option<String>,
    staged: Mutex<HashSet<String>>,
    split_brain: Mutex<HashSet<String>>,
    kernel: Mutex<Option<KernelDrbd>>,
    last: Mutex<Vec<ResourceStatus>>,
    changed: broadcast::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Replication {
    pub fn new(drbd: Arc<dyn Drbd>, handler: Option<String>) -> Arc<Self> {
        let (changed, _) = broadcast::channel(16);
        Arc::new(Replication {
            drbd,
            handler,
            staged: Mutex::default(),
            split_brain: Mutex::default(),
            kernel: Mutex::default(),
            last: Mutex::default(),
            changed,
        })
    }

    /// Marks volume `volume` staged (in use through CSI) on this node, or not.
    pub fn set_staged(&self, volume: &str, staged: bool) {
        let mut s = lock(&self.staged);
        if staged {
            s.insert(volume.to_string());
        } else {
            s.remove(volume);
        }
        let _ = self.changed.send(());
    }

    pub fn staged(&self, volume: &str) -> bool {
        lock(&self.staged).contains(volume)
    }

    /// Records that DRBD reported a split brain on `resource` (kept until it is connected
    /// again).
    pub fn record_split_brain(&self, resource: &str) {
        lock(&self.split_brain).insert(resource.to_string());
        let _ = self.changed.send(());
    }

    pub fn split_brain(&self, resource: &str) -> bool {
        lock(&self.split_brain).contains(resource)
    }

    /// Fires when DRBD's state or what is staged changed.
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    /// DRBD's kernel side, checked once it answered (a missing module is asked again).
    async fn kernel(&self) -> Result<KernelDrbd, DrbdError> {
        if let Some(k) = lock(&self.kernel).clone() {
            return Ok(k);
        }
        let k = self.drbd.kernel().await?;
        *lock(&self.kernel) = Some(k.clone());
        Ok(k)
    }

    /// Reads DRBD's state; when it changed, wakes the replicas. Connected resources lose
    /// their split-brain mark.
    pub async fn poll(&self) -> Result<Vec<ResourceStatus>, DrbdError> {
        let now = self.drbd.status().await?;
        {
            let mut sb = lock(&self.split_brain);
            for s in &now {
                if s.connection.connected() {
                    sb.remove(&s.name);
                }
            }
        }
        let mut last = lock(&self.last);
        if *last != now {
            *last = now.clone();
            let _ = self.changed.send(());
        }
        Ok(now)
    }

    /// Polls DRBD every `every` for as long as the agent runs.
    pub async fn run_monitor(self: Arc<Self>, every: Duration) {
        loop {
            if let Err(e) = self.poll().await {
                tracing::debug!(error = %e, "reading DRBD state failed");
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The resource file for replica `r` on `node`.
pub fn resource_config(
    node: &str,
    r: &LocalVolumeReplica,
    handler: Option<&str>,
) -> Option<ResourceConfig> {
    let rep = r.spec.replication.as_ref()?;
    // A leaving replica keeps its last file (with the peer it had) to go down with; a
    // replica without peer runs on this node alone (its file names only this node).
    if rep.leaving {
        return None;
    }
    let data = format!("/dev/{}/{}", r.spec.pool_name, r.spec.volume_name);
    let meta = format!(
        "/dev/{}/{}",
        r.spec.pool_name,
        drbd::meta_lv_name(&r.spec.volume_name)
    );
    let host = |hostname: &str, address: &str| Host {
        hostname: hostname.to_string(),
        address: address.to_string(),
        // Both replicas live in the same-named pool under the volume's name.
        disk: data.clone(),
        meta_disk: meta.clone(),
    };
    Some(ResourceConfig {
        name: rep.resource.clone(),
        minor: u32::try_from(rep.minor).ok()?,
        port: u16::try_from(rep.port).ok()?,
        hosts: std::iter::once(host(node, &rep.address))
            .chain(rep.peer.as_ref().map(|p| host(&p.node, &p.address)))
            .collect(),
        handler: handler.map(str::to_string),
    })
}

async fn view(ctx: &Context, rep: &Replication, r: &LocalVolumeReplica) -> DrbdView {
    let Some(spec) = r.spec.replication.as_ref() else {
        return DrbdView::default();
    };
    let mut v = DrbdView {
        staged: rep.staged(&r.spec.volume_name),
        split_brain: rep.split_brain(&spec.resource),
        ..Default::default()
    };
    if let Err(e) = rep.kernel().await {
        v.unavailable = Some(e.to_string());
        return v;
    }
    match rep.poll().await {
        Ok(all) => v.status = all.into_iter().find(|s| s.name == spec.resource),
        Err(e) => {
            v.unavailable = Some(format!("reading DRBD state failed: {e}"));
            return v;
        }
    }
    if v.status.is_none() {
        let lvm = ctx.lvm.snapshot().await.ok();
        let meta_exists = lvm.as_ref().is_some_and(|l| {
            l.lv(&r.spec.pool_name, &drbd::meta_lv_name(&r.spec.volume_name))
                .is_some()
        });
        if meta_exists {
            match rep.drbd.has_metadata(&spec.resource).await {
                Ok(b) => v.has_metadata = Some(b),
                // While the replica is being removed, its resource file goes only after its
                // metadata was wiped (or before any was made): without the file there is none
                // left to wipe, and the metadata volume may go. (Otherwise a teardown whose
                // metadata volume removal failed once would wait for ever.)
                Err(DrbdError::NoSuchResource(_)) if r.metadata.deletion_timestamp.is_some() => {
                    v.has_metadata = Some(false)
                }
                Err(e) => {
                    tracing::warn!(resource = %spec.resource, error = %e, "cannot tell whether DRBD metadata exists")
                }
            }
        } else {
            v.has_metadata = Some(false);
        }
    }
    v
}

/// What a fence attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Fenced {
    /// The peer is recorded outdated (now or before): I/O may resume.
    PeerOutdated,
    /// This side may not go on; the reason says why.
    Refused(String),
}

/// Records the peer of this node's replica of `volume` outdated on the LocalVolume, by
/// compare-and-swap, if the volume's config allows this replica to go on.
pub async fn fence(ctx: &Context, volume: &str) -> Result<Fenced, kube::Error> {
    let api: Api<LocalVolume> = Api::all(ctx.client.clone());
    for _ in 0..8 {
        let v = api.get(volume).await?;
        let Some(config) = v.spec.config.as_ref() else {
            return Ok(Fenced::Refused(format!("volume {volume} is not placed")));
        };
        match ha::fence_peer(config, &ctx.node) {
            FenceVerdict::AlreadyFenced => return Ok(Fenced::PeerOutdated),
            FenceVerdict::Refuse(why) => return Ok(Fenced::Refused(why)),
            FenceVerdict::Fence(next) => {
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": v.metadata.resource_version },
                    "spec": { "config": next },
                });
                match api
                    .patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(volume, node = %ctx.node, "lost the peer while primary; peer recorded outdated, I/O goes on here");
                        ctx.event(
                            &v,
                            true,
                            "PeerFenced",
                            "Fence",
                            format!(
                                "the replica on {} lost its peer while primary; the peer is recorded outdated and must resync before it serves",
                                ctx.node
                            ),
                        )
                        .await;
                        return Ok(Fenced::PeerOutdated);
                    }
                    // Someone else changed the record (a failover?): decide again on it.
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(Fenced::Refused(
        "the volume's config kept changing; fencing is retried".into(),
    ))
}

/// This node's replica whose DRBD resource is `resource`.
async fn replica_of_resource(
    ctx: &Context,
    resource: &str,
) -> Result<Option<LocalVolumeReplica>, kube::Error> {
    let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let list = api
        .list(&ListParams::default().fields(&ctx.node_selector()))
        .await?;
    Ok(list.items.into_iter().find(|r| {
        r.spec
            .replication
            .as_ref()
            .is_some_and(|s| s.resource == resource)
    }))
}

/// Answers a call of DRBD's usermode helper (`fence-peer`, `split-brain`, ...) for
/// `resource`; the exit code goes back to DRBD.
pub async fn on_helper(ctx: &Context, rep: &Replication, command: &str, resource: &str) -> i32 {
    match command {
        "fence-peer" => {
            let replica = match replica_of_resource(ctx, resource).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    tracing::error!(
                        resource,
                        "fence-peer for a resource this node does not hold; I/O stays frozen"
                    );
                    return exit::KEEP_FROZEN;
                }
                Err(e) => {
                    tracing::error!(resource, error = %e, "fence-peer: API unreachable; I/O stays frozen until the peer can be recorded outdated");
                    return exit::KEEP_FROZEN;
                }
            };
            match fence(ctx, &replica.spec.volume_name).await {
                Ok(Fenced::PeerOutdated) => exit::PEER_OUTDATED,
                Ok(Fenced::Refused(why)) => {
                    tracing::error!(resource, reason = %why, "fence-peer refused; I/O stays frozen");
                    exit::KEEP_FROZEN
                }
                Err(e) => {
                    tracing::error!(resource, error = %e, "fence-peer: API write failed; I/O stays frozen");
                    exit::KEEP_FROZEN
                }
            }
        }
        "split-brain" => {
            tracing::error!(
                resource,
                "DRBD detected a split brain; nothing is discarded until the operator chooses"
            );
            rep.record_split_brain(resource);
            exit::OK
        }
        other => {
            tracing::debug!(resource, command = other, "DRBD helper call ignored");
            exit::OK
        }
    }
}

async fn record_error(
    ctx: &Context,
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
    state: ReplicaState,
    action: &str,
    message: String,
) -> Result<(), kube::Error> {
    let mut st = r.status.clone().unwrap_or_default();
    if st.state != Some(state) || st.message.as_deref() != Some(message.as_str()) {
        st.state = Some(state);
        st.message = Some(message.clone());
        st.observed_generation = r.metadata.generation;
        let r = write_status(api, r, st).await?;
        ctx.event(&r, true, "ReplicationFailed", action, message)
            .await;
    }
    Ok(())
}

/// Writes the replica's resource file and applies a change to a running resource.
/// `Some(action)` when that failed (recorded on the replica).
async fn configure(
    ctx: &Context,
    rep: &Replication,
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
) -> Result<Option<Action>, kube::Error> {
    if r.metadata.deletion_timestamp.is_some() || rep.kernel().await.is_err() {
        return Ok(None);
    }
    let Some(cfg) = resource_config(&ctx.node, r, rep.handler.as_deref()) else {
        return Ok(None);
    };
    let failed = match rep.drbd.write_config(&cfg).await {
        Ok(false) => None,
        Ok(true) => {
            let up = rep
                .poll()
                .await
                .is_ok_and(|all| all.iter().any(|s| s.name == cfg.name));
            // A resource that is not up yet is brought up by its own step, after its metadata.
            if up {
                rep.drbd
                    .adjust(&cfg.name)
                    .await
                    .err()
                    .map(|e| format!("applying the changed DRBD configuration failed: {e}"))
            } else {
                None
            }
        }
        Err(e) => Some(format!("writing the DRBD configuration failed: {e}")),
    };
    match failed {
        None => Ok(None),
        Some(m) => {
            record_error(ctx, api, r, ReplicaState::NotReady, "Configure", m).await?;
            Ok(Some(Action::requeue(ctx.tuning.retry)))
        }
    }
}

/// Brings one HA replica of this node to its goal.
pub async fn reconcile(
    ctx: &Context,
    rep: &Replication,
    mut current: LocalVolumeReplica,
) -> Result<Action, ReplicaError> {
    let name = current.metadata.name.clone().unwrap_or_default();
    let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    // The resource file follows the spec, which changes only with a new reconcile (our own
    // writes in the loop below touch finalizers and status): written once here.
    if let Some(action) = configure(ctx, rep, &api, &current).await? {
        return Ok(action);
    }
    for _ in 0..24 {
        let lvm = ctx.lvm.snapshot().await?;
        let deleting = current.metadata.deletion_timestamp.is_some();
        let v = view(ctx, rep, &current).await;
        let step = ha_replica::next_step(&ctx.node, &current, &lvm, &v);
        tracing::debug!(replica = %name, ?step, "HA replica step");
        let resource = current
            .spec
            .replication
            .as_ref()
            .map(|s| s.resource.clone())
            .unwrap_or_default();
        let result: Result<(), DrbdError> = match step {
            HaStep::Nothing => {
                // Waiting on DRBD (a resync, a connection) is woken by the monitor.
                return Ok(Action::await_change());
            }
            HaStep::AddFinalizer => {
                current =
                    crate::replica_controller::add_finalizer(&api, &current, FINALIZER_REPLICA)
                        .await?;
                ctx.crash.point(CrashPoint::ReplicaAfterFinalizer).await;
                continue;
            }
            HaStep::RemoveFinalizer => {
                crate::replica_controller::remove_finalizer(&api, &current, FINALIZER_REPLICA)
                    .await?;
                tracing::info!(replica = %name, "HA replica deleted");
                return Ok(Action::await_change());
            }
            HaStep::EnsureVolume { vg, lv, bytes } => {
                match ctx.lvm.ensure_lv(&vg, &lv, bytes).await {
                    Ok((outcome, lv)) => {
                        tracing::info!(replica = %name, volume = %lv.path, size = lv.size, ?outcome, "logical volume ready");
                        ctx.rescan.notify_one();
                        Ok(())
                    }
                    Err(e) => {
                        record_error(
                            ctx,
                            &api,
                            &current,
                            ReplicaState::NotReady,
                            "Create",
                            e.to_string(),
                        )
                        .await?;
                        return Ok(Action::requeue(ctx.tuning.retry));
                    }
                }
            }
            HaStep::RemoveVolume { vg, lv } => {
                if let Err(e) = ctx.lvm.remove_lv(&vg, &lv).await {
                    record_error(
                        ctx,
                        &api,
                        &current,
                        ReplicaState::Deleting,
                        "Delete",
                        e.to_string(),
                    )
                    .await?;
                    return Ok(Action::requeue(ctx.tuning.retry));
                }
                ctx.rescan.notify_one();
                Ok(())
            }
            HaStep::RemoveMetaVolume { vg, lv } => {
                let r = rep.drbd.remove_config(&resource).await;
                if r.is_ok() {
                    if let Err(e) = ctx.lvm.remove_lv(&vg, &lv).await {
                        record_error(
                            ctx,
                            &api,
                            &current,
                            ReplicaState::Deleting,
                            "Delete",
                            e.to_string(),
                        )
                        .await?;
                        return Ok(Action::requeue(ctx.tuning.retry));
                    }
                    ctx.rescan.notify_one();
                }
                r
            }
            HaStep::CreateMetadata => {
                let r = rep.drbd.create_metadata(&resource).await;
                ctx.crash.point(CrashPoint::HaAfterMetadata).await;
                r
            }
            HaStep::Up => {
                let r = rep.drbd.up(&resource).await;
                if r.is_ok() {
                    tracing::info!(replica = %name, resource = %resource, "DRBD resource up");
                }
                ctx.crash.point(CrashPoint::HaAfterUp).await;
                r
            }
            HaStep::Connect { discard_my_data } => {
                if discard_my_data {
                    tracing::warn!(replica = %name, resource = %resource, "reconnecting and discarding this side's changes since the split brain, as the operator chose");
                }
                rep.drbd.connect(&resource, discard_my_data).await
            }
            HaStep::ForcePrimary => {
                tracing::info!(replica = %name, resource = %resource, "first primary of a new volume: its data becomes the source of the initial sync");
                let r = rep.drbd.primary(&resource, true).await;
                ctx.crash.point(CrashPoint::HaAfterForcedPrimary).await;
                r
            }
            HaStep::Demote => match rep.drbd.secondary(&resource).await {
                // Open here: something uses it (a staging this agent does not remember, e.g.
                // after a restart). It stays primary and counts as staged.
                Err(DrbdError::InUse(_)) => {
                    tracing::info!(replica = %name, resource = %resource, "device in use here: kept primary, counted as staged");
                    rep.set_staged(&current.spec.volume_name, true);
                    Ok(())
                }
                r => r,
            },
            HaStep::Adjust => {
                tracing::info!(replica = %name, resource = %resource, "applying the resource file (its peer was removed)");
                rep.drbd.adjust(&resource).await
            }
            HaStep::Resize { promote, alone } => {
                let r = async {
                    if promote {
                        rep.drbd.primary(&resource, false).await?;
                    }
                    let grown = rep.drbd.resize(&resource, alone).await;
                    if promote && grown.is_ok() {
                        ctx.crash.point(CrashPoint::HaAfterResize).await;
                    }
                    if promote {
                        // Demoted whatever the resize did: nobody uses the volume here.
                        rep.drbd.secondary(&resource).await?;
                    }
                    grown
                }
                .await;
                if r.is_ok() {
                    let size = rep
                        .poll()
                        .await
                        .ok()
                        .and_then(|all| all.into_iter().find(|s| s.name == resource))
                        .map(|s| s.size_bytes)
                        .unwrap_or(0);
                    let want = u64::try_from(current.spec.required_capacity_bytes).unwrap_or(0);
                    tracing::info!(replica = %name, resource = %resource, size, want, "DRBD device resized");
                    if size < want {
                        // The peer's volume has not grown yet: DRBD grows to the smaller.
                        return Ok(Action::requeue(ctx.tuning.retry));
                    }
                }
                r
            }
            HaStep::Outdate => rep.drbd.outdate(&resource).await,
            HaStep::Down => {
                let r = rep.drbd.down(&resource).await;
                if r.is_ok() {
                    ctx.crash.point(CrashPoint::HaAfterDown).await;
                }
                r
            }
            HaStep::WipeMetadata => {
                let r = rep.drbd.wipe_metadata(&resource).await;
                if r.is_ok() {
                    ctx.crash.point(CrashPoint::HaAfterWipe).await;
                }
                r
            }
            HaStep::Fence => match fence(ctx, &current.spec.volume_name).await? {
                Fenced::PeerOutdated => {
                    ctx.crash.point(CrashPoint::HaAfterFence).await;
                    let r = rep.drbd.resume_io(&resource).await;
                    if r.is_ok() {
                        tracing::warn!(replica = %name, "I/O resumed after the peer was recorded outdated");
                    }
                    r
                }
                Fenced::Refused(why) => {
                    let m = format!("I/O stays frozen: {why}");
                    record_error(ctx, &api, &current, ReplicaState::NotReady, "Fence", m).await?;
                    return Ok(Action::requeue(ctx.tuning.retry));
                }
            },
            HaStep::Status(st) => {
                let before = current.status.clone().unwrap_or_default();
                current = match write_status(&api, &current, *st).await {
                    Ok(r) => r,
                    // A reconcile woken by the DRBD monitor may start from a cached object
                    // older than our own last report (a resync reports every second): decide
                    // again on the object as it is, instead of failing the reconcile.
                    Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&name).await? {
                        Some(r) => {
                            current = r;
                            continue;
                        }
                        None => return Ok(Action::await_change()),
                    },
                    Err(e) => return Err(e.into()),
                };
                let after = current.status.clone().unwrap_or_default();
                if before.synced != Some(true) && after.synced == Some(true) {
                    ctx.event(
                        &current,
                        false,
                        "Synced",
                        "Replicate",
                        "the replica holds up-to-date data".into(),
                    )
                    .await;
                }
                let sb = |s: &hwameistor_api::LocalVolumeReplicaStatus| {
                    s.replication.as_ref().is_some_and(|x| x.split_brain)
                };
                if !sb(&before) && sb(&after) {
                    ctx.event(
                        &current,
                        true,
                        "SplitBrain",
                        "Replicate",
                        after.message.clone().unwrap_or_default(),
                    )
                    .await;
                }
                // The report is the last step: what changes next (a resync's progress, a
                // connection) wakes the replica through the DRBD monitor.
                return Ok(Action::await_change());
            }
        };
        if let Err(e) = result {
            let (state, action) = if deleting {
                (ReplicaState::Deleting, "Delete")
            } else {
                (ReplicaState::NotReady, "Replicate")
            };
            record_error(ctx, &api, &current, state, action, e.to_string()).await?;
            return Ok(Action::requeue(ctx.tuning.retry));
        }
        current = match api.get_opt(&name).await? {
            Some(r) => r,
            None => return Ok(Action::await_change()),
        };
    }
    Err(ReplicaError::Stuck(24))
}

/// Why a volume cannot be staged on this node (yet).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("volume {0} has no replica on this node")]
    NoReplica(String),
    /// Retry later: the controller has not allowed this replica to be primary, or DRBD is
    /// not ready.
    #[error("{0}")]
    NotYet(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The replication part of this node's replica of `volume`; `None` when there is no replica
/// here or the volume is not replicated.
async fn replication_here(
    ctx: &Context,
    volume: &str,
) -> Result<Option<hwameistor_api::ReplicationSpec>, kube::Error> {
    let api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let name = hwameistor_api::replica::replica_name(volume, &ctx.node);
    Ok(api.get_opt(&name).await?.and_then(|r| r.spec.replication))
}

/// Makes this node's replica of HA volume `volume` primary, for staging it here, and
/// returns its device. Only a replica the volume's config allows to be primary is promoted
/// (the controller agrees); DRBD refuses on its own when the peer is primary or this side
/// holds no up-to-date data. The volume counts as staged from the first attempt, so the
/// reconciler does not demote it in between.
pub async fn stage(ctx: &Context, rep: &Replication, volume: &str) -> Result<String, StageError> {
    let Some(spec) = replication_here(ctx, volume).await? else {
        return Err(StageError::NoReplica(volume.to_string()));
    };
    if spec.outdated {
        return Err(StageError::NotYet(format!(
            "the replica of {volume} on {} is outdated (fenced); it serves again after resyncing",
            ctx.node
        )));
    }
    if !spec.primary {
        return Err(StageError::NotYet(format!(
            "the controller has not allowed the replica of {volume} on {} to be primary (it is published or primary elsewhere)",
            ctx.node
        )));
    }
    rep.set_staged(volume, true);
    let status = rep
        .poll()
        .await
        .map_err(|e| StageError::NotYet(format!("reading DRBD state failed: {e}")))?;
    let Some(st) = status.iter().find(|s| s.name == spec.resource) else {
        return Err(StageError::NotYet(format!(
            "DRBD resource {} is not up on {} yet",
            spec.resource, ctx.node
        )));
    };
    if st.role != drbd::Role::Primary {
        rep.drbd
            .primary(&spec.resource, false)
            .await
            .map_err(|e| StageError::NotYet(format!("promoting {}: {e}", spec.resource)))?;
        tracing::info!(volume, resource = %spec.resource, "promoted for staging");
        let _ = rep.poll().await;
    }
    Ok(drbd::device_path(st.minor))
}

/// Ends staging of HA volume `volume` on this node: demotes its replica (refused while the
/// device is still open).
pub async fn unstage(ctx: &Context, rep: &Replication, volume: &str) -> Result<(), StageError> {
    let Some(spec) = replication_here(ctx, volume).await? else {
        rep.set_staged(volume, false);
        return Ok(());
    };
    let up = rep
        .poll()
        .await
        .map_err(|e| StageError::NotYet(format!("reading DRBD state failed: {e}")))?
        .into_iter()
        .find(|s| s.name == spec.resource);
    if let Some(st) = up {
        if st.role == drbd::Role::Primary {
            rep.drbd
                .secondary(&spec.resource)
                .await
                .map_err(|e| StageError::NotYet(format!("demoting {}: {e}", spec.resource)))?;
            tracing::info!(volume, resource = %spec.resource, "demoted after unstaging");
        }
    }
    rep.set_staged(volume, false);
    let _ = rep.poll().await;
    Ok(())
}

/// HA staging for the CSI node service: NodeStage promotes, NodeUnstage demotes.
pub struct CsiReplication {
    pub ctx: Arc<Context>,
    pub replication: Arc<Replication>,
}

#[tonic::async_trait]
impl hwameistor_csi::node::Replicated for CsiReplication {
    async fn promote(&self, volume_id: &str) -> Result<Option<std::path::PathBuf>, tonic::Status> {
        match stage(&self.ctx, &self.replication, volume_id).await {
            Ok(dev) => Ok(Some(dev.into())),
            // Not an HA volume, or not one with a replica here: the plain path decides.
            Err(StageError::NoReplica(_)) => Ok(None),
            // Retried by the kubelet: the controller has not switched the primary yet, or
            // DRBD is still coming up.
            Err(StageError::NotYet(why)) => Err(tonic::Status::unavailable(why)),
            Err(StageError::Kube(e)) => Err(tonic::Status::unavailable(format!(
                "reading the volume's replica: {e}"
            ))),
        }
    }

    async fn demote(&self, volume_id: &str) -> Result<(), tonic::Status> {
        match unstage(&self.ctx, &self.replication, volume_id).await {
            Ok(()) | Err(StageError::NoReplica(_)) => Ok(()),
            Err(StageError::NotYet(why)) => Err(tonic::Status::unavailable(why)),
            Err(StageError::Kube(e)) => Err(tonic::Status::unavailable(format!(
                "reading the volume's replica: {e}"
            ))),
        }
    }
}
