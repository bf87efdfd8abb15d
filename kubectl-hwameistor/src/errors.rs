//! The errors the admin library returns. Each message says what went wrong and what to do
//! next, because the CLI prints them as they are.

use hwameistor_api::quantity::SizeError;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("HwameiStor is not installed in this cluster: run `kubectl hwameistor install`")]
    NotInstalled,

    #[error("node {name:?} not found; {}", known_list("known nodes", known, "no node has reported to HwameiStor yet (is the node agent running? try `kubectl hwameistor diagnose`)"))]
    UnknownNode { name: String, known: Vec<String> },

    #[error(
        "disk {name:?} not found{}; {}",
        on_node(node),
        known_list("known disks", known, "no LocalDisk exists there yet")
    )]
    UnknownDisk {
        name: String,
        node: Option<String>,
        known: Vec<String>,
    },

    #[error(
        "volume {name:?} not found; {}",
        known_list("known volumes", known, "there are no LocalVolumes")
    )]
    UnknownVolume { name: String, known: Vec<String> },

    #[error(
        "snapshot {name:?} not found; {}",
        known_list("known snapshots", known, "there are no LocalVolumeSnapshots")
    )]
    UnknownSnapshot { name: String, known: Vec<String> },

    #[error("invalid size: {0}")]
    Size(#[from] SizeError),

    #[error("{0}")]
    InvalidArgument(String),

    #[error("cannot load kubeconfig{}: {message}; pass --kubeconfig FILE or set KUBECONFIG", path.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    Kubeconfig {
        path: Option<String>,
        message: String,
    },

    #[error(
        "context {name:?} not found in the kubeconfig; {}",
        known_list("known contexts", known, "it has no contexts")
    )]
    UnknownContext { name: String, known: Vec<String> },

    #[error("no disk of node {node:?} can be claimed:\n{}", reasons.iter().map(|(d, r)| format!("  - {d}: {r}")).collect::<Vec<_>>().join("\n"))]
    NothingToClaim {
        node: String,
        reasons: Vec<(String, String)>,
    },

    #[error("{action} needs confirmation, but stdin is not a terminal: pass --yes to proceed")]
    ConfirmationRequired { action: String },

    #[error("aborted: {action} was not confirmed")]
    NotConfirmed { action: String },

    #[error("aborted: {action} was not confirmed (typed {typed:?}, not {expected:?}); nothing was changed")]
    TypedMismatch {
        action: String,
        typed: String,
        expected: String,
    },

    #[error("volume {volume:?} is not replicated (HA): it has a single copy, so there is no split brain to resolve")]
    NotHa { volume: String },

    #[error("volume {volume:?} is not in split brain (HA state {ha_state}, and no replica reports one); nothing to resolve")]
    NotSplitBrain { volume: String, ha_state: String },

    #[error(
        "node {node:?} holds no replica of volume {volume:?}; {}",
        known_list("its replicas are on", nodes, "it has no replicas")
    )]
    NotAReplicaNode {
        volume: String,
        node: String,
        nodes: Vec<String>,
    },

    #[error("a split-brain resolution of volume {volume:?} is already pending (the data of {keep} is kept); the controller clears it once the replicas are connected again: `kubectl hwameistor volume get {volume}` shows how far it is")]
    ResolutionPending { volume: String, keep: String },

    #[error("{what} changed since it was read (another writer, or the controller): nothing was written; run the command again to see its current state")]
    Conflict { what: String },

    #[error("{0}")]
    ResolutionAbandoned(String),

    #[error("cannot grow volume {volume:?}: {reason}; free space in the pool first (`kubectl hwameistor pool list`), or add disks (`kubectl hwameistor disk claim`)")]
    NoRoom { volume: String, reason: String },

    #[error(
        "refusing to shrink volume {volume:?} from {current} to {requested}: volumes can only grow"
    )]
    Shrink {
        volume: String,
        current: String,
        requested: String,
    },

    #[error("disk {disk:?} is Bound{}; a disk in a pool or serving a volume cannot be reserved", owner.as_deref().map(|o| format!(" to {o}")).unwrap_or_default())]
    DiskBound { disk: String, owner: Option<String> },

    #[error("refusing to uninstall: {} LocalVolume(s) exist ({}); delete their PVCs first, or pass --force-with-volumes to leave them without a controller", names.len(), short_list(names, 10))]
    VolumesExist { names: Vec<String> },

    #[error("claim {name:?} failed: {message}")]
    ClaimFailed { name: String, message: String },

    #[error("timed out after {} waiting for {what}: {detail}", humanize(*waited))]
    Timeout {
        what: String,
        waited: Duration,
        detail: String,
    },

    #[error(
        "volume {volume:?} is not placed yet (no node holds a replica of it): nothing to {action}"
    )]
    NotPlaced { volume: String, action: String },

    #[error("volume {volume:?} is replicated (HA) with replicas on {}: say which one moves with --from NODE", nodes.join(", "))]
    FromRequired { volume: String, nodes: Vec<String> },

    #[error("cannot put the replica of volume {volume:?} on node {node:?}: {reason}")]
    InvalidTarget {
        volume: String,
        node: String,
        reason: String,
    },

    #[error("no node can take the replica of volume {volume:?} (predicted as the controller decides): {reason}; free space or add disks (`kubectl hwameistor pool list`, `kubectl hwameistor disk claim`), or name a node with --to")]
    NoTarget { volume: String, reason: String },

    #[error("volume {volume:?} is held by {kind} {name} ({phase}): only one operation changes a volume at a time; wait until it ended, or abort it; see `kubectl hwameistor operation get {name}`")]
    OperationInProgress {
        volume: String,
        kind: String,
        name: String,
        phase: String,
    },

    #[error("refusing to {action} volume {volume:?}: {reason}")]
    OperationRefused {
        volume: String,
        action: String,
        reason: String,
    },

    #[error("the volume operation resources (LocalVolumeMigrate, LocalVolumeConvert, LocalVolumeExpand) are not installed in this cluster: upgrade HwameiStor (`kubectl hwameistor upgrade`)")]
    OperationsNotInstalled,

    #[error(
        "operation {name:?} not found; {}",
        known_list("known operations", known, "there are no volume operations")
    )]
    UnknownOperation { name: String, known: Vec<String> },

    #[error("{name:?} names more than one operation ({}); say which: {}", kinds.join(", "), kinds.iter().map(|k| format!("{}/{name}", k.to_lowercase())).collect::<Vec<_>>().join(" or "))]
    AmbiguousOperation { name: String, kinds: Vec<String> },

    #[error("cannot abort {kind} {name}: {reason}")]
    AbortRefused {
        kind: String,
        name: String,
        reason: String,
    },

    #[error("{kind} {name} has not ended ({phase}): deleting it would not stop it cleanly; abort it first (`kubectl hwameistor operation abort {name}`) and delete it once it ended")]
    OperationNotEnded {
        kind: String,
        name: String,
        phase: String,
    },

    #[error("{kind} {name} was deleted before it ended; what it did to volume {volume:?} shows in `kubectl hwameistor volume get {volume}`")]
    OperationDeleted {
        kind: String,
        name: String,
        volume: String,
    },

    #[error("cannot evict pod {pod}: the API server does not serve the eviction subresource (pods/eviction); pass --disable-eviction to delete the pods instead (this bypasses PodDisruptionBudgets)")]
    EvictionUnsupported { pod: String },

    #[error("invalid manifest {source_name}: {message}")]
    Manifest {
        source_name: String,
        message: String,
    },

    #[error("cannot create webhook certificates: {0}")]
    Certificate(String),

    #[error("cannot encode output: {0}")]
    Encode(String),

    #[error("{context}: {source}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl AdminError {
    /// Wraps a client error with what was being done, e.g. "listing LocalDisks".
    pub fn api(context: impl Into<String>, source: kube::Error) -> Self {
        AdminError::Api {
            context: context.into(),
            source,
        }
    }
}

/// True when the API server answered 404 (unknown resource type or object).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn on_node(node: &Option<String>) -> String {
    node.as_deref()
        .map(|n| format!(" on node {n:?}"))
        .unwrap_or_default()
}

fn known_list(label: &str, known: &[String], none: &str) -> String {
    if known.is_empty() {
        none.to_string()
    } else {
        format!("{label}: {}", short_list(known, 20))
    }
}

/// A comma-separated list cut at `max` entries, saying how many were left out, so an error
/// about a cluster with thousands of disks stays readable.
pub fn short_list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!(
            "{}, … and {} more",
            items[..max].join(", "),
            items.len() - max
        )
    }
}

/// `90s` → `1m30s`, the way kubectl prints durations.
pub fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_node_lists_known_nodes() {
        let e = AdminError::UnknownNode {
            name: "x".into(),
            known: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.to_string(), "node \"x\" not found; known nodes: a, b");
    }

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..25).map(|i| format!("d{i}")).collect();
        assert!(short_list(&names, 3).ends_with("d2, … and 22 more"));
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(3600)), "1h");
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
    }
}
