//! The node's block mover (see `hwameistor-mover`): a server other nodes' agents pull
//! volumes from, and copy tasks that fill this node's replicas from other nodes.
//!
//! Source side: [`ApiAuthorizer`] serves a copy only for the operation the volume's record
//! names (`spec.operation`, by name and uid), to the node the placement names as the copy's
//! target, from this node's replica of it, while nobody uses the volume. The peer proves it
//! is that node with the key it published in its LocalStorageNode.
//!
//! Target side: a replica whose spec says `copyFrom` gets one copy task (restarted by the
//! replica reconciler after an agent restart: it resumes from its checkpoint). The task
//! reports its progress in the replica's `status.copy`, and marks it verified when both
//! sides' digests of the whole device agree; only then does the replica become Ready.

use crate::context::Context;
use hwameistor_api::{
    CopySource, CopyStatus, LocalStorageNode, LocalVolume, LocalVolumeReplica, LocalVolumeSnapshot,
    MoverEndpoint, VolumeDataSource,
};
use hwameistor_core::snapshot;
use hwameistor_mover::{
    Authorizer, CancellationToken, Client, ClientConfig, CopyIdentity, CopyRequest, FaultInjection,
    FileCheckpointStore, Grant, NodeKey, PublicKey, Refusal, RefusalKind, Server, ServerOptions,
    TargetZeroed,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Where a volume's data is on this node: its logical volume's device.
pub type DeviceResolver = Arc<dyn Fn(&str, &str) -> PathBuf + Send + Sync>;

/// The device of logical volume `volume` in volume group `pool`.
pub fn lvm_device() -> DeviceResolver {
    Arc::new(|pool: &str, volume: &str| PathBuf::from(format!("/dev/{pool}/{volume}")))
}

pub struct MoverSettings {
    pub key: Arc<NodeKey>,
    /// Checkpoints of running copies (must survive an agent restart).
    pub state_dir: PathBuf,
    pub device: DeviceResolver,
    /// Pause before a failed copy (or one whose source is not ready) is tried again.
    pub retry: Duration,
}

/// A copy task running for a replica.
struct Running {
    uid: String,
    cancel: CancellationToken,
}

pub struct Mover {
    settings: MoverSettings,
    tasks: Mutex<HashMap<String, Running>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values only: a panic while held cannot leave them half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mover {
    pub fn new(settings: MoverSettings) -> Arc<Self> {
        Arc::new(Mover {
            settings,
            tasks: Mutex::new(HashMap::new()),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.settings.key.public_key()
    }

    /// Whether a copy task runs for `replica`.
    pub fn copying(&self, replica: &str) -> bool {
        lock(&self.tasks).contains_key(replica)
    }

    /// Stops the copy task of `replica` unless it copies for operation `keep_uid`.
    pub fn cancel_unless(&self, replica: &str, keep_uid: Option<&str>) {
        let mut tasks = lock(&self.tasks);
        if let Some(t) = tasks.get(replica) {
            if keep_uid != Some(t.uid.as_str()) {
                t.cancel.cancel();
                tasks.remove(replica);
                tracing::info!(replica, "block copy stopped");
            }
        }
    }

    /// Starts the copy into replica `r` from `src` unless one runs for it already.
    pub fn ensure_copy(
        self: &Arc<Self>,
        ctx: Arc<Context>,
        r: &LocalVolumeReplica,
        src: &CopySource,
    ) {
        let name = r.name_any();
        let mut tasks = lock(&self.tasks);
        if tasks.get(&name).is_some_and(|t| t.uid == src.operation_uid) {
            return;
        }
        if let Some(old) = tasks.remove(&name) {
            old.cancel.cancel();
        }
        let cancel = CancellationToken::new();
        tasks.insert(
            name.clone(),
            Running {
                uid: src.operation_uid.clone(),
                cancel: cancel.clone(),
            },
        );
        let job = CopyJob {
            ctx,
            mover: self.clone(),
            replica: name,
            pool: r.spec.pool_name.clone(),
            volume: r.spec.volume_name.clone(),
            thin: r.spec.thin,
            src: src.clone(),
            cancel,
        };
        tokio::spawn(job.run());
    }

    fn finished(&self, replica: &str, uid: &str) {
        let mut tasks = lock(&self.tasks);
        if tasks.get(replica).is_some_and(|t| t.uid == uid) {
            tasks.remove(replica);
        }
    }

    fn checkpoint_path(&self, uid: &str, volume: &str) -> PathBuf {
        self.settings.state_dir.join(format!("{volume}-{uid}.json"))
    }
}

struct CopyJob {
    ctx: Arc<Context>,
    mover: Arc<Mover>,
    replica: String,
    pool: String,
    volume: String,
    /// The target is a new thin volume: it reads zeros where nothing was written, so zero
    /// chunks are skipped rather than written (which would allocate them in the pool).
    thin: bool,
    src: CopySource,
    cancel: CancellationToken,
}

/// Writes a replica's copy status (a merge patch of `status.copy` only: the replica
/// reconciler owns the rest; the error is written as null when there is none, so an old one
/// goes).
async fn report(api: &Api<LocalVolumeReplica>, replica: &str, copy: &CopyStatus) {
    let mut value = match serde_json::to_value(copy) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "copy status not serializable");
            return;
        }
    };
    if copy.error.is_none() {
        value["error"] = serde_json::Value::Null;
    }
    let patch = serde_json::json!({ "status": { "copy": value } });
    if let Err(e) = api
        .patch_status(replica, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(replica, error = %e, "could not report copy progress");
    }
}

impl CopyJob {
    /// The copy status for progress `p`, with `error` as the last error when given.
    fn status(&self, p: &hwameistor_mover::Progress, error: Option<String>) -> CopyStatus {
        let mut st = copy_status(&self.src.operation_uid, p);
        if error.is_some() {
            st.error = error;
        }
        st
    }

    async fn run(self) {
        let api: Api<LocalVolumeReplica> = Api::all(self.ctx.client.clone());
        let nodes: Api<LocalStorageNode> = Api::all(self.ctx.client.clone());
        let retry = self.mover.settings.retry;
        let mut last = hwameistor_mover::Progress::default();
        tracing::info!(replica = %self.replica, from = %self.src.node, operation = %self.src.operation, "block copy starting");
        while !self.cancel.is_cancelled() {
            let endpoint = match nodes.get_opt(&self.src.node).await {
                Ok(Some(n)) => n.status.and_then(|s| s.mover),
                Ok(None) => None,
                Err(e) => {
                    report(
                        &api,
                        &self.replica,
                        &self.status(&last, Some(format!("reading the source node: {e}"))),
                    )
                    .await;
                    self.pause(retry).await;
                    continue;
                }
            };
            let Some(MoverEndpoint {
                endpoint,
                public_key,
            }) = endpoint
            else {
                let msg = format!(
                    "{} publishes no block mover (its agent runs without one, or has not started)",
                    self.src.node
                );
                report(&api, &self.replica, &self.status(&last, Some(msg))).await;
                self.pause(retry).await;
                continue;
            };
            let key = match PublicKey::from_base64(&public_key) {
                Ok(k) => k,
                Err(e) => {
                    let msg = format!("{}'s published mover key is not valid: {e}", self.src.node);
                    report(&api, &self.replica, &self.status(&last, Some(msg))).await;
                    self.pause(retry).await;
                    continue;
                }
            };
            let identity = CopyIdentity {
                operation: self.src.operation.clone(),
                uid: self.src.operation_uid.clone(),
                volume: self.volume.clone(),
                source_node: self.src.node.clone(),
                target_node: self.ctx.node.clone(),
            };
            let mut cfg = ClientConfig::new(
                identity,
                endpoint,
                key,
                (self.mover.settings.device)(&self.pool, &self.volume),
            );
            if self.thin {
                cfg.target_zeroed = TargetZeroed::Yes;
            }
            cfg.rate_limit = self
                .src
                .bandwidth_limit_bytes_per_second
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(0);
            let checkpoint = self
                .mover
                .checkpoint_path(&self.src.operation_uid, &self.volume);
            let store = Arc::new(FileCheckpointStore::new(checkpoint.clone()));
            let client = match Client::new(cfg, self.mover.settings.key.clone(), store) {
                Ok(c) => c,
                Err(e) => {
                    report(
                        &api,
                        &self.replica,
                        &self.status(&last, Some(e.to_string())),
                    )
                    .await;
                    self.pause(retry).await;
                    continue;
                }
            };
            let mut progress = client.progress();
            let reporter = {
                let (api, replica, uid) = (
                    api.clone(),
                    self.replica.clone(),
                    self.src.operation_uid.clone(),
                );
                tokio::spawn(async move {
                    while progress.changed().await.is_ok() {
                        let p = progress.borrow_and_update().clone();
                        report(&api, &replica, &copy_status(&uid, &p)).await;
                        // At most one write a second, whatever the chunk rate.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            };
            let result = client.run(self.cancel.clone()).await;
            reporter.abort();
            last = client.progress().borrow().clone();
            match result {
                Ok(outcome) => {
                    let mut st = self.status(&last, None);
                    st.bytes_done = i64::try_from(outcome.bytes).unwrap_or(i64::MAX);
                    st.bytes_total = st.bytes_done;
                    st.verified = true;
                    st.digest = Some(outcome.digest.to_hex());
                    report(&api, &self.replica, &st).await;
                    if let Err(e) = std::fs::remove_file(&checkpoint) {
                        tracing::debug!(error = %e, "checkpoint already gone");
                    }
                    tracing::info!(replica = %self.replica, bytes = outcome.bytes, on_wire = outcome.bytes_on_wire, zero_chunks = outcome.zero_chunks, resends = outcome.resends, resumes = outcome.resumes, secs = outcome.elapsed.as_secs_f64(), digest = %outcome.digest, "block copy verified");
                    if let Ok(r) = api.get(&self.replica).await {
                        self.ctx
                            .event(
                                &r,
                                false,
                                "CopyVerified",
                                "Copy",
                                format!(
                                    "copied {} bytes from {} ({} on the wire, {} resumes, {} chunks re-sent); digest {}",
                                    outcome.bytes, self.src.node, outcome.bytes_on_wire, outcome.resumes, outcome.resends, outcome.digest
                                ),
                            )
                            .await;
                    }
                    self.mover.finished(&self.replica, &self.src.operation_uid);
                    return;
                }
                Err(_) if self.cancel.is_cancelled() => break,
                Err(e) => {
                    tracing::warn!(replica = %self.replica, error = %e, "block copy failed; it resumes from its checkpoint");
                    report(
                        &api,
                        &self.replica,
                        &self.status(&last, Some(e.to_string())),
                    )
                    .await;
                    self.pause(retry).await;
                }
            }
        }
        tracing::info!(replica = %self.replica, "block copy cancelled");
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.cancel.cancelled() => {}
        }
    }
}

/// The copy status of operation `uid`'s copy at progress `p` (not verified yet).
fn copy_status(uid: &str, p: &hwameistor_mover::Progress) -> CopyStatus {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    CopyStatus {
        operation_uid: uid.to_string(),
        bytes_done: count(p.bytes_done),
        bytes_total: count(p.bytes_total),
        bytes_per_second: p.bytes_per_second.map(count),
        resumes: count(p.resumes),
        resends: count(p.resends),
        verified: false,
        digest: None,
        error: p.last_error.clone(),
        lvm_clone: false,
    }
}

/// Serves copies of this node's volumes to the targets the API names.
pub struct ApiAuthorizer {
    pub client: kube::Client,
    pub node: String,
    pub device: DeviceResolver,
}

impl Authorizer for ApiAuthorizer {
    async fn authorize(&self, request: &CopyRequest) -> Result<Grant, Refusal> {
        let id = &request.identity;
        let api_err =
            |e: kube::Error| Refusal::new(RefusalKind::NotReady, format!("reading the API: {e}"));
        let v = Api::<LocalVolume>::all(self.client.clone())
            .get_opt(&id.volume)
            .await
            .map_err(api_err)?
            .ok_or_else(|| {
                Refusal::new(
                    RefusalKind::UnknownOperation,
                    format!("volume {} does not exist", id.volume),
                )
            })?;
        if let Some(ds) = v
            .spec
            .data_source
            .as_ref()
            .filter(|d| d.snapshot == id.operation && v.spec.operation.is_none())
        {
            return self.authorize_restore(&v, ds, request).await;
        }
        let op = v.spec.operation.as_ref().ok_or_else(|| {
            Refusal::new(
                RefusalKind::UnknownOperation,
                format!("no operation holds volume {}", id.volume),
            )
        })?;
        if op.name != id.operation {
            return Err(Refusal::new(
                RefusalKind::UnknownOperation,
                format!(
                    "volume {} is held by operation {}, not {}",
                    id.volume, op.name, id.operation
                ),
            ));
        }
        if op.uid != id.uid {
            return Err(Refusal::new(
                RefusalKind::UidMismatch,
                format!("operation {} has another uid (re-created?)", op.name),
            ));
        }
        let config = v.spec.config.as_ref().ok_or_else(|| {
            Refusal::new(
                RefusalKind::WrongCopy,
                format!("volume {} is not placed", id.volume),
            )
        })?;
        let names_copy = config.replicas.iter().any(|a| {
            a.hostname == id.target_node && a.copy_from.as_deref() == Some(self.node.as_str())
        });
        if id.source_node != self.node || !names_copy {
            return Err(Refusal::new(
                RefusalKind::WrongCopy,
                format!(
                    "the placement of {} names no copy from {} to {}",
                    id.volume, self.node, id.target_node
                ),
            ));
        }
        if let Some(n) = v.status.as_ref().and_then(|s| s.published_node.as_deref()) {
            return Err(Refusal::new(
                RefusalKind::NotReady,
                format!(
                    "volume {} is in use on {n}; it is copied only while unused",
                    id.volume
                ),
            ));
        }
        let target_key = self.target_key(&id.target_node).await?;
        Ok(Grant {
            device: (self.device)(&v.spec.pool_name, &id.volume),
            uid: op.uid.clone(),
            volume: id.volume.clone(),
            target_node: id.target_node.clone(),
            target_key,
            size: None,
        })
    }
}

impl ApiAuthorizer {
    /// A restore's copy: from snapshot `ds` on this node (the copy's name and uid are the
    /// snapshot's) into the replica the restored volume's placement fills from here.
    async fn authorize_restore(
        &self,
        v: &LocalVolume,
        ds: &VolumeDataSource,
        request: &CopyRequest,
    ) -> Result<Grant, Refusal> {
        let id = &request.identity;
        if ds.snapshot_uid != id.uid {
            return Err(Refusal::new(
                RefusalKind::UidMismatch,
                format!("snapshot {} has another uid (re-created?)", ds.snapshot),
            ));
        }
        let names_copy = v.spec.config.as_ref().is_some_and(|c| {
            c.replicas.iter().any(|a| {
                a.hostname == id.target_node && a.copy_from.as_deref() == Some(self.node.as_str())
            })
        });
        if id.source_node != self.node || ds.node != self.node || !names_copy {
            return Err(Refusal::new(
                RefusalKind::WrongCopy,
                format!(
                    "the placement of {} names no restore from {} to {}",
                    id.volume, self.node, id.target_node
                ),
            ));
        }
        let snap = Api::<LocalVolumeSnapshot>::all(self.client.clone())
            .get_opt(&ds.snapshot)
            .await
            .map_err(|e| Refusal::new(RefusalKind::NotReady, format!("reading the API: {e}")))?
            .filter(|s| s.metadata.uid.as_deref() == Some(ds.snapshot_uid.as_str()))
            .ok_or_else(|| {
                Refusal::new(
                    RefusalKind::Denied,
                    format!("snapshot {} no longer exists", ds.snapshot),
                )
            })?;
        if !snap.status.as_ref().is_some_and(|s| s.ready_to_use) {
            return Err(Refusal::new(
                RefusalKind::Denied,
                format!("snapshot {} is not ready to use (failed?)", ds.snapshot),
            ));
        }
        let target_key = self.target_key(&id.target_node).await?;
        Ok(Grant {
            device: (self.device)(&ds.pool_name, &snapshot::lv_name(&ds.snapshot)),
            uid: ds.snapshot_uid.clone(),
            volume: id.volume.clone(),
            target_node: id.target_node.clone(),
            target_key,
            size: u64::try_from(ds.bytes).ok(),
        })
    }

    /// The published key of `node`, the only peer a copy may go to.
    async fn target_key(&self, node: &str) -> Result<PublicKey, Refusal> {
        let target = Api::<LocalStorageNode>::all(self.client.clone())
            .get_opt(node)
            .await
            .map_err(|e| Refusal::new(RefusalKind::NotReady, format!("reading the API: {e}")))?;
        let key = target
            .and_then(|n| n.status)
            .and_then(|s| s.mover)
            .ok_or_else(|| {
                Refusal::new(
                    RefusalKind::NotReady,
                    format!("{node} publishes no mover key"),
                )
            })?;
        PublicKey::from_base64(&key.public_key).map_err(|e| {
            Refusal::new(
                RefusalKind::Denied,
                format!("{node}'s published key is not valid: {e}"),
            )
        })
    }
}

/// Serves this node's volumes on `listen` and publishes `endpoint` and the node's key in
/// its LocalStorageNode (again whenever it is missing or different).
pub async fn serve(
    ctx: Arc<Context>,
    mover: Arc<Mover>,
    listener: tokio::net::TcpListener,
    endpoint: String,
    fault: FaultInjection,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    let server = Server::new(
        ctx.node.clone(),
        mover.settings.key.clone(),
        ApiAuthorizer {
            client: ctx.client.clone(),
            node: ctx.node.clone(),
            device: mover.settings.device.clone(),
        },
        ServerOptions {
            fault,
            ..ServerOptions::default()
        },
    );
    let published = MoverEndpoint {
        endpoint,
        public_key: mover.public_key().to_base64(),
    };
    let publisher = {
        let ctx = ctx.clone();
        async move {
            let api: Api<LocalStorageNode> = Api::all(ctx.client.clone());
            loop {
                match api.get_opt(&ctx.node).await {
                    Ok(Some(n))
                        if n.status.as_ref().and_then(|s| s.mover.as_ref()) != Some(&published) =>
                    {
                        let patch = serde_json::json!({ "status": { "mover": published } });
                        match api
                            .patch_status(&ctx.node, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {
                                tracing::info!(endpoint = %published.endpoint, "block mover published")
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "could not publish the block mover")
                            }
                        }
                    }
                    Ok(None) => {
                        // The scanner creates it shortly after the agent starts.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "could not read this node's LocalStorageNode")
                    }
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };
    tracing::info!(%listen, "block mover listening");
    tokio::select! {
        _ = server.serve(listener, CancellationToken::new()) => {}
        _ = publisher => {}
    }
    Ok(())
}
