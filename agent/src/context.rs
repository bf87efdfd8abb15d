//! What every reconciler of the agent shares.

use crate::discovery::HostRoots;
use crate::lvm::Lvm;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

pub struct Context {
    pub client: Client,
    /// The node this agent runs on.
    pub node: String,
    pub lvm: Lvm,
    pub roots: HostRoots,
    /// Held while the host is read or changed, so a scan never sees half an operation and
    /// two operations never interleave their LVM commands.
    pub host: Mutex<()>,
    /// Wakes the disk scanner (after a claim or replica changed something on the host).
    pub rescan: Notify,
    /// Wakes the claim reconciler (after a scan changed disks).
    pub disks_changed: tokio::sync::broadcast::Sender<()>,
    pub recorder: Recorder,
}

impl Context {
    pub fn new(client: Client, node: String, lvm: Lvm, roots: HostRoots) -> Arc<Self> {
        let reporter = Reporter {
            controller: "hwameistor-agent".into(),
            instance: Some(node.clone()),
        };
        let (disks_changed, _) = tokio::sync::broadcast::channel(16);
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node,
            lvm,
            roots,
            host: Mutex::new(()),
            rescan: Notify::new(),
            disks_changed,
        })
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
