//! What every reconciler of the agent shares.

use crate::crash::CrashPoints;
use crate::discovery::DiskSource;
use crate::lvm::{LvmCache, LvmHost};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Timings of the agent's retries; the defaults suit a node, tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// How long a replica or claim whose LVM operation failed waits before trying again.
    pub retry: Duration,
    /// How long LVM must be quiet before a background re-read of it runs.
    pub lvm_quiet: Duration,
    /// How long volume-level changes must have stopped before the disk scanner publishes
    /// the pools again (disks appearing or going are scanned at once).
    pub scan_quiet: Duration,
    /// How thin pools grow and when they are warned about.
    pub thin: hwameistor_core::thin::ThinPolicy,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retry: Duration::from_secs(15),
            lvm_quiet: crate::lvm::QUIET,
            scan_quiet: Duration::from_secs(1),
            thin: Default::default(),
        }
    }
}

pub struct Context {
    pub client: Client,
    /// The node this agent runs on.
    pub node: String,
    /// LVM, through its cached view and per-group locks.
    pub lvm: Arc<LvmCache>,
    /// Where disks are discovered.
    pub disks: Arc<dyn DiskSource>,
    pub crash: Arc<CrashPoints>,
    /// Wakes the disk scanner (after a claim or replica changed something on the host).
    pub rescan: Notify,
    /// Wakes the claim reconciler (after a scan changed disks).
    pub disks_changed: tokio::sync::broadcast::Sender<()>,
    pub tuning: Tuning,
    pub recorder: Recorder,
    /// DRBD replication for HA replicas; `None` when the agent runs without it.
    pub replication: Option<Arc<crate::ha::Replication>>,
    /// This node's replication address, published as its LocalStorageNode's `storageIP`.
    pub storage_ip: Option<String>,
    /// The block mover, when the agent runs one (set once at start).
    pub mover: std::sync::OnceLock<Arc<crate::mover::Mover>>,
    /// The thin pool warnings last told (an event is sent when one appears).
    pub thin_warned: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        node: String,
        lvm: Arc<dyn LvmHost>,
        disks: Arc<dyn DiskSource>,
        crash: CrashPoints,
        tuning: Tuning,
    ) -> Arc<Self> {
        Self::with_replication(client, node, lvm, disks, crash, tuning, None, None)
    }

    /// A context whose agent also runs HA replicas through `replication`, reachable by
    /// its peers at `storage_ip`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_replication(
        client: Client,
        node: String,
        lvm: Arc<dyn LvmHost>,
        disks: Arc<dyn DiskSource>,
        crash: CrashPoints,
        tuning: Tuning,
        replication: Option<Arc<crate::ha::Replication>>,
        storage_ip: Option<String>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "hwameistor-agent".into(),
            instance: Some(node.clone()),
        };
        let (disks_changed, _) = tokio::sync::broadcast::channel(16);
        let crash = Arc::new(crash);
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node,
            lvm: LvmCache::new(lvm, crash.clone(), tuning.lvm_quiet),
            disks,
            crash,
            rescan: Notify::new(),
            disks_changed,
            tuning,
            replication,
            storage_ip,
            mover: std::sync::OnceLock::new(),
            thin_warned: Default::default(),
        })
    }

    /// A field selector for this node's objects (LocalDisk, LocalDiskClaim,
    /// LocalVolumeReplica declare `spec.nodeName` selectable), so the agent watches and
    /// caches only its own node's objects however large the cluster is.
    pub fn node_selector(&self) -> String {
        format!("spec.nodeName={}", self.node)
    }

    /// Publishes a Kubernetes Event on `obj`. Failing to publish is logged, never fatal:
    /// events are for people, the resources carry the truth.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
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
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish event");
        }
    }
}
