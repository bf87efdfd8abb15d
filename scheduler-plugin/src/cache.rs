//! The extender's view of the cluster: one watch cache (reflector store) per resource it
//! reads, and a generation that moves whenever something capacity depends on changed.

use futures::StreamExt;
use hwameistor_api::{LocalStorageNode, LocalVolume, LocalVolumeReplica};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The stores the decisions read.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<LocalStorageNode>,
    pub volumes: Store<LocalVolume>,
    pub replicas: Store<LocalVolumeReplica>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub pvs: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    /// Moves on every change of nodes, volumes, replicas or claims: the capacity index is
    /// rebuilt when it moved.
    pub generation: Arc<AtomicU64>,
}

/// The writers that fill [`Caches`] (from watches, or by hand in tests).
pub struct Writers {
    pub nodes: Writer<LocalStorageNode>,
    pub volumes: Writer<LocalVolume>,
    pub replicas: Writer<LocalVolumeReplica>,
    pub pvcs: Writer<PersistentVolumeClaim>,
    pub pvs: Writer<PersistentVolume>,
    pub classes: Writer<StorageClass>,
}

impl Caches {
    /// Empty caches and their writers.
    pub fn new() -> (Caches, Writers) {
        let nodes = Writer::default();
        let volumes = Writer::default();
        let replicas = Writer::default();
        let pvcs = Writer::default();
        let pvs = Writer::default();
        let classes = Writer::default();
        (
            Caches {
                nodes: nodes.as_reader(),
                volumes: volumes.as_reader(),
                replicas: replicas.as_reader(),
                pvcs: pvcs.as_reader(),
                pvs: pvs.as_reader(),
                classes: classes.as_reader(),
                generation: Arc::new(AtomicU64::new(0)),
            },
            Writers {
                nodes,
                volumes,
                replicas,
                pvcs,
                pvs,
                classes,
            },
        )
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether every store has its first full list.
    pub async fn wait_ready(&self) {
        let _ = tokio::join!(
            self.nodes.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.replicas.wait_until_ready(),
            self.pvcs.wait_until_ready(),
            self.pvs.wait_until_ready(),
            self.classes.wait_until_ready(),
        );
    }
}

/// Runs one watch into `writer` for as long as the process lives (the watcher retries with
/// backoff); bumps `generation` on every event when `counts`.
async fn watch<K>(api: Api<K>, writer: Writer<K>, generation: Arc<AtomicU64>, counts: bool)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => {
                if counts {
                    generation.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        }
    }
}

/// Starts the watches behind `writers`.
pub fn spawn_watches(client: Client, writers: Writers, generation: Arc<AtomicU64>) {
    let g = || generation.clone();
    tokio::spawn(watch(Api::all(client.clone()), writers.nodes, g(), true));
    tokio::spawn(watch(Api::all(client.clone()), writers.volumes, g(), true));
    tokio::spawn(watch(Api::all(client.clone()), writers.replicas, g(), true));
    tokio::spawn(watch(Api::all(client.clone()), writers.pvcs, g(), true));
    tokio::spawn(watch(Api::all(client.clone()), writers.pvs, g(), false));
    tokio::spawn(watch(Api::all(client), writers.classes, g(), true));
}
