//! The disk scanner: keeps the node's LocalDisks and LocalStorageNode in step with the host.
//!
//! A scan runs at start, on every block-device uevent (debounced), when another reconciler
//! asks for one, when a re-read found LVM changed, when what was decided about one of the
//! node's disks changed (reserved, bound to a claim or a raw-disk volume, given back: the
//! phase follows at once), and every `resync` as a safety net. It
//! takes no lock: it reads the LVM view and checks that no disk joined or left a pool while
//! it looked (see [`crate::lvm::LvmCache::membership_epoch`]), so a slow volume operation
//! never delays disk discovery.

use crate::context::Context;
use crate::discovery;
use crate::discovery::ObservedDisk;
use crate::disks::{self, DiskAction};
use crate::lvm::LvmState;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalDisk, LocalStorageNode, LocalStorageNodeSpec, LocalStorageNodeStatus, NodeState,
    LABEL_NODE,
};
use hwameistor_core::{pools, thin};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("disk discovery failed: {0}")]
    Discovery(#[from] discovery::DiscoveryError),
    #[error("reading LVM state failed: {0}")]
    Lvm(#[from] crate::lvm::LvmError),
    #[error("a disk kept joining or leaving a pool during {0} scans; scan postponed")]
    Busy(usize),
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// Result of one scan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    pub disks: usize,
    pub changes: usize,
}

/// Tries before a scan gives up on a pool operation that keeps running.
const CONSISTENT_TRIES: usize = 300;

/// The node's disks and an LVM view that agree: no physical volume joined or left a group
/// between the two reads.
async fn consistent_scan(ctx: &Context) -> Result<(Vec<ObservedDisk>, LvmState), ScanError> {
    for _ in 0..CONSISTENT_TRIES {
        let Some(before) = ctx.lvm.membership_epoch() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let observed = ctx.disks.scan().await?;
        let lvm = ctx.lvm.snapshot().await?;
        if ctx.lvm.membership_epoch() == Some(before) {
            return Ok((observed, lvm));
        }
    }
    Err(ScanError::Busy(CONSISTENT_TRIES))
}

/// Grows this node's thin pools that are filling up (as far as their groups allow), with
/// an event on the node for each growth, and a warning event when a pool's use passes the
/// warning mark (once, until it falls back).
async fn tend_thin_pools(ctx: &Context) {
    let Ok(state) = ctx.lvm.snapshot().await else {
        return;
    };
    let ours: Vec<String> = state
        .vgs
        .iter()
        .map(|g| g.name.clone())
        .filter(|vg| hwameistor_api::PoolClass::from_pool_name(vg).is_some())
        .filter(|vg| thin::thin_pool(&state, vg).is_some())
        .collect();
    if ours.is_empty() {
        return;
    }
    let nodes: Api<LocalStorageNode> = Api::all(ctx.client.clone());
    let node = nodes.get_opt(&ctx.node).await.ok().flatten();
    for vg in &ours {
        match ctx.lvm.grow_thin_pool(vg, &ctx.tuning.thin).await {
            Ok(Some(thin::ThinOp::ExtendPool {
                data_bytes,
                metadata_bytes,
            })) => {
                let msg = format!(
                    "thin pool {vg}/{} grown to {} of data and {} of metadata",
                    thin::THIN_POOL_LV,
                    format_size(data_bytes),
                    format_size(metadata_bytes)
                );
                tracing::info!(%vg, data_bytes, metadata_bytes, "thin pool grown");
                if let Some(n) = &node {
                    ctx.event(n, false, "ThinPoolGrown", "Grow", msg).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%vg, error = %e, "growing the thin pool failed"),
        }
    }
    let Ok(state) = ctx.lvm.snapshot().await else {
        return;
    };
    // Told once per pool and part (data, metadata), whatever the percent does meanwhile.
    let now: std::collections::BTreeMap<String, String> = ours
        .iter()
        .filter_map(|vg| thin::thin_pool(&state, vg))
        .flat_map(|p| thin::pool_warnings(&p, &ctx.tuning.thin))
        .map(|w| (w.split(" is ").next().unwrap_or(&w).to_string(), w))
        .collect();
    let fresh: Vec<String> = {
        let mut told = ctx.thin_warned.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = now
            .iter()
            .filter(|(k, _)| !told.contains(*k))
            .map(|(_, w)| w.clone())
            .collect();
        *told = now.into_keys().collect();
        fresh
    };
    for w in fresh {
        tracing::warn!(warning = %w, "thin pool filling up");
        if let Some(n) = &node {
            ctx.event(n, true, "ThinPoolFilling", "Watch", w).await;
        }
    }
}

/// Runs one scan and applies its plan.
pub async fn scan_once(ctx: &Context) -> Result<ScanSummary, ScanError> {
    tend_thin_pools(ctx).await;
    let (observed, lvm) = consistent_scan(ctx).await?;
    let api: Api<LocalDisk> = Api::all(ctx.client.clone());
    let mine = ListParams::default().fields(&ctx.node_selector());
    let existing = api.list(&mine).await?.items;
    let actions = disks::plan(&ctx.node, &observed, &lvm, &existing);
    let changes = actions.len();
    for action in actions {
        if let Err(e) = apply(ctx, &api, action).await {
            // One disk failing to update must not stop the others; the next scan retries.
            tracing::warn!(error = %e, "could not update a LocalDisk");
        }
    }
    let disks_now = if changes > 0 {
        api.list(&mine).await?.items
    } else {
        existing
    };
    update_node(ctx, &lvm, &disks_now, None).await?;
    if changes > 0 {
        let _ = ctx.disks_changed.send(());
    }
    Ok(ScanSummary {
        disks: observed.len(),
        changes,
    })
}

async fn apply(ctx: &Context, api: &Api<LocalDisk>, action: DiskAction) -> Result<(), kube::Error> {
    match action {
        DiskAction::Create(ld) => {
            let name = ld.metadata.name.clone().unwrap_or_default();
            let status = ld.status.clone();
            let mut created = match api.create(&PostParams::default(), &ld).await {
                Ok(c) => c,
                Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await?,
                Err(e) => return Err(e),
            };
            created.status = status;
            let created = api
                .replace_status(&name, &PostParams::default(), &created)
                .await?;
            let st = created.status.clone().unwrap_or_default();
            tracing::info!(disk = %name, device = ?st.device_path, phase = ?st.phase, reason = ?st.reason, "discovered disk");
            ctx.event(
                &created,
                false,
                "Discovered",
                "Discover",
                format!(
                    "{} on node {}: {} {:?}{}",
                    st.device_path.unwrap_or_default(),
                    ctx.node,
                    hwameistor_api::quantity::format_size(st.capacity_bytes.unwrap_or(0)),
                    st.phase,
                    st.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                ),
            )
            .await;
        }
        DiskAction::UpdateStatus { name, status } => {
            let mut current = api.get(&name).await?;
            let was = current.status.clone().unwrap_or_default();
            current.status = Some(*status.clone());
            let updated = api
                .replace_status(&name, &PostParams::default(), &current)
                .await?;
            if was.state != status.state || was.phase != status.phase {
                tracing::info!(disk = %name, state = ?status.state, phase = ?status.phase, device = ?status.device_path, "disk changed");
                let warning = status.state == Some(hwameistor_api::DiskPresence::Inactive);
                ctx.event(
                    &updated,
                    warning,
                    if warning { "Removed" } else { "Changed" },
                    "Discover",
                    format!(
                        "state {:?}, phase {:?}{}",
                        status.state,
                        status.phase,
                        status.reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                )
                .await;
            }
        }
    }
    Ok(())
}

/// Creates the node's LocalStorageNode if needed and publishes its pools. `problem`, when
/// given, marks the node NotReady with that message.
pub async fn update_node(
    ctx: &Context,
    lvm: &LvmState,
    disks: &[LocalDisk],
    problem: Option<String>,
) -> Result<(), kube::Error> {
    let api: Api<LocalStorageNode> = Api::all(ctx.client.clone());
    let mut lsn = match api.get_opt(&ctx.node).await? {
        Some(n) => n,
        None => {
            let mut n = LocalStorageNode::new(
                &ctx.node,
                LocalStorageNodeSpec {
                    hostname: ctx.node.clone(),
                    storage_ip: ctx.storage_ip.clone(),
                },
            );
            n.metadata.labels = Some([(LABEL_NODE.to_string(), ctx.node.clone())].into());
            match api.create(&PostParams::default(), &n).await {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 409 => api.get(&ctx.node).await?,
                Err(e) => return Err(e),
            }
        }
    };
    if ctx.storage_ip.is_some() && lsn.spec.storage_ip != ctx.storage_ip {
        // The address changed (or was never published): peers configure DRBD with it.
        let patch = serde_json::json!({ "spec": { "storageIP": ctx.storage_ip } });
        lsn = api
            .patch(&ctx.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let pools = pools::pool_status(lvm, disks, Some(&ctx.tuning.thin));
    let old = lsn.status.clone().unwrap_or_default();
    let ready = problem.is_none();
    let condition = Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: if ready {
            "AgentReady"
        } else {
            "StorageUnavailable"
        }
        .into(),
        message: problem
            .clone()
            .unwrap_or_else(|| "disks scanned and LVM reachable".into()),
        observed_generation: lsn.metadata.generation,
        last_transition_time: old
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == if ready { "True" } else { "False" })
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
            }),
    };
    let status = LocalStorageNodeStatus {
        state: Some(if ready {
            NodeState::Ready
        } else {
            NodeState::NotReady
        }),
        volume_count: pools.values().map(|p| p.volume_count).sum(),
        pools,
        agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        // Published by the block mover when it starts, not by the scan.
        mover: lsn.status.as_ref().and_then(|s| s.mover.clone()),
        conditions: vec![condition],
    };
    // Write only on change: status churn costs the API server and every watcher.
    if lsn.status.as_ref() != Some(&status) {
        lsn.status = Some(status);
        api.replace_status(&ctx.node, &PostParams::default(), &lsn)
            .await?;
    }
    Ok(())
}

/// The host's block-device uevents, or `None` (with a warning) when the socket cannot be
/// opened: scans then run on the periodic resync only.
pub fn host_uevents() -> Option<tokio::sync::mpsc::Receiver<discovery::UEvent>> {
    match discovery::watch_block_uevents() {
        Ok(rx) => Some(rx),
        Err(e) => {
            tracing::warn!(error = %e, "no uevent socket; falling back to periodic scans only");
            None
        }
    }
}

/// Asks for a scan whenever the spec of one of the node's LocalDisks changes (what users
/// and the controller decide about a disk), so its phase follows at once. Runs until
/// dropped.
async fn watch_decisions(ctx: Arc<Context>) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    use std::collections::HashMap;
    let api: Api<LocalDisk> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&ctx.node_selector());
    let mut seen: HashMap<String, hwameistor_api::LocalDiskSpec> = HashMap::new();
    let mut events = watcher(api, cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(ev) = events.next().await {
        let Ok(d) = ev else { continue };
        let name = d.metadata.name.clone().unwrap_or_default();
        if let Some(before) = seen.insert(name, d.spec.clone()) {
            if before != d.spec {
                ctx.rescan.notify_one();
            }
        }
    }
}

/// The scanner loop. Never returns.
pub async fn run(
    ctx: Arc<Context>,
    resync: Duration,
    mut uevents: Option<tokio::sync::mpsc::Receiver<discovery::UEvent>>,
) {
    use tokio::time::Instant;
    let mut lvm_changed = ctx.lvm.subscribe();
    let mut last_resync = Instant::now();
    // When the next scan is due. A disk appearing or going is scanned at once (and once more
    // shortly after: udev creates the by-id links a moment after the kernel announces the
    // device). Changes of volumes (device-mapper uevents, the agent's own operations, a
    // re-read of LVM) only move pool figures: those scans wait until such changes have
    // stopped for a moment, so a burst of volume creations costs one scan, not one each.
    let mut due = Some(Instant::now());
    let mut followup: Option<Instant> = None;
    let decisions = tokio::spawn(watch_decisions(ctx.clone()));
    // The watch stops with the scanner.
    struct Stop(tokio::task::JoinHandle<()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _decisions = Stop(decisions);
    loop {
        let next_resync = last_resync + resync;
        let wake = [due, followup, Some(next_resync)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_resync);
        let wait_uevent = async {
            match uevents.as_mut() {
                Some(rx) => match rx.recv().await {
                    Some(ev) => ev,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let now = Instant::now();
        if wake <= now {
            if wake == next_resync {
                last_resync = now;
                ctx.lvm.invalidate();
            }
            if followup.is_some_and(|f| f <= now) {
                followup = None;
            }
            due = None;
            match scan_once(&ctx).await {
                Ok(s) if s.changes > 0 => {
                    tracing::info!(disks = s.disks, changes = s.changes, "scan applied changes")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "scan failed");
                    if let ScanError::Lvm(le) = &e {
                        let _ =
                            update_node(&ctx, &Default::default(), &[], Some(le.to_string())).await;
                    }
                }
            }
            continue;
        }
        let settle = |due: Option<Instant>| {
            // Volume-level changes: after a quiet moment, never later than an earlier plan.
            let quiet = Instant::now() + ctx.tuning.scan_quiet;
            Some(due.map_or(quiet, |d| d.max(quiet)))
        };
        tokio::select! {
            ev = wait_uevent => {
                // Devices come in bursts (a disk and its partitions); gather them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut disk_event = is_disk_event(&ev);
                if let Some(rx) = uevents.as_mut() {
                    while let Ok(ev) = rx.try_recv() {
                        disk_event |= is_disk_event(&ev);
                    }
                }
                // LVM may have changed under us: re-read it in the background.
                ctx.lvm.invalidate();
                if disk_event {
                    due = Some(Instant::now());
                    followup = Some(Instant::now() + Duration::from_millis(1500));
                } else {
                    due = settle(due);
                }
            }
            _ = ctx.rescan.notified() => due = settle(due),
            // A lagging receiver still means "LVM changed".
            _ = lvm_changed.recv() => due = settle(due),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Whether a uevent is about a disk (or its partitions), not a device-mapper or loop device
/// built on top: only those change which disks exist.
fn is_disk_event(ev: &discovery::UEvent) -> bool {
    let name = ev.devname.as_deref().unwrap_or_default();
    ev.action == discovery::OVERFLOW_ACTION
        || !(name.starts_with("dm-") || name.starts_with("loop") || name.starts_with("zram"))
}
