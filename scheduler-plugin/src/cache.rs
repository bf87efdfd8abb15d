//! The extender's view of the cluster: one watch cache per resource it reads, holding only
//! what the decisions read of each object (a view), not the object: at 100,000 volumes the
//! full objects (their metadata above all) would cost the process most of a gigabyte.
//! A generation moves whenever something capacity depends on changed.

use futures::StreamExt;
use hwameistor_api::snapshot::ANNOTATION_VOLUME_SNAPSHOT;
use hwameistor_api::{
    disk_unavailability, DiskType, LocalDisk, LocalDiskVolume, LocalStorageNode, LocalVolume,
    LocalVolumeReplica, LocalVolumeSnapshot, PoolClass, VolumeConfig,
};
use hwameistor_core::placement::{self, NodeView};
use hwameistor_core::volume::serving_nodes;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// The annotation the scheduler's volume binder puts on a WaitForFirstConsumer claim once it
/// chose the pod's node (the provisioner then creates the volume there).
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What the decisions read of a LocalVolume.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeView {
    pub name: String,
    pub class: Option<PoolClass>,
    pub required: i64,
    /// A thin volume: takes the node's over-provisioning share of its size.
    pub thin: bool,
    pub config: Option<VolumeConfig>,
    /// The nodes a pod using it may run on now.
    pub serving: Vec<String>,
}

/// What the decisions read of a LocalVolumeReplica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub volume: String,
    pub node: String,
    pub allocated: Option<i64>,
}

/// What the decisions read of a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimView {
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    /// The PersistentVolume it is bound to.
    pub volume: Option<String>,
    pub class: Option<String>,
    pub request: Option<String>,
    pub limit: Option<String>,
    pub block: bool,
    /// The node the volume binder handed it to.
    pub selected_node: Option<String>,
    /// What it is restored or cloned from (`dataSourceRef`, else `dataSource`).
    pub data_source: Option<DataSourceRef>,
}

/// A claim's data source, in its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSourceRef {
    /// A VolumeSnapshot, by name.
    Snapshot(String),
    /// Another claim (a clone), by name.
    Claim(String),
}

/// What the decisions read of a LocalVolumeSnapshot: its node, and the VolumeSnapshot
/// (`namespace/name`) it was taken for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotView {
    pub node: String,
    pub volume_snapshot: Option<String>,
}

/// What the decisions read of a LocalDisk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskView {
    pub node: String,
    pub disk_type: Option<DiskType>,
    pub capacity: i64,
    /// Free for a new disk volume (the one eligibility rule).
    pub free: bool,
}

/// What the decisions read of a LocalDiskVolume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskVolumeView {
    pub name: String,
    pub node: String,
    /// A disk is bound to it (no longer free: what was held for its claim is no longer).
    pub bound: bool,
}

/// What the decisions read of a PersistentVolume: its CSI driver and volume handle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvView {
    pub driver: Option<String>,
    pub handle: String,
}

/// An object the caches hold a view of.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    type View: Send + Sync + 'static;
    fn view(&self) -> Self::View;
    fn table(c: &Caches) -> &Table<Self::View>;
    /// Whether a change of it moves the capacity generation.
    const COUNTS: bool = true;
}

fn key<K: Resource>(o: &K) -> String {
    match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.name_any()),
        None => o.name_any(),
    }
}

impl Cached for LocalStorageNode {
    type View = NodeView;
    fn view(&self) -> NodeView {
        placement::node_view(self)
    }
    fn table(c: &Caches) -> &Table<NodeView> {
        &c.nodes
    }
}

impl Cached for LocalVolume {
    type View = VolumeView;
    fn view(&self) -> VolumeView {
        VolumeView {
            name: self.name_any(),
            class: PoolClass::from_pool_name(&self.spec.pool_name),
            required: self.spec.required_capacity_bytes,
            thin: self.spec.thin,
            config: self.spec.config.clone(),
            serving: serving_nodes(self),
        }
    }
    fn table(c: &Caches) -> &Table<VolumeView> {
        &c.volumes
    }
}

impl Cached for LocalVolumeReplica {
    type View = ReplicaView;
    fn view(&self) -> ReplicaView {
        ReplicaView {
            volume: self.spec.volume_name.clone(),
            node: self.spec.node_name.clone(),
            allocated: self
                .status
                .as_ref()
                .and_then(|s| s.allocated_capacity_bytes),
        }
    }
    fn table(c: &Caches) -> &Table<ReplicaView> {
        &c.replicas
    }
}

impl Cached for LocalDisk {
    type View = DiskView;
    fn view(&self) -> DiskView {
        let st = self.status.as_ref();
        DiskView {
            node: self.spec.node_name.clone(),
            disk_type: st.and_then(|s| s.disk_type),
            capacity: st.and_then(|s| s.capacity_bytes).unwrap_or(0),
            free: disk_unavailability(self).is_none(),
        }
    }
    fn table(c: &Caches) -> &Table<DiskView> {
        &c.disks
    }
}

impl Cached for LocalDiskVolume {
    type View = DiskVolumeView;
    fn view(&self) -> DiskVolumeView {
        DiskVolumeView {
            name: self.name_any(),
            node: self.spec.node_name.clone(),
            bound: self
                .status
                .as_ref()
                .is_some_and(|s| s.local_disk_name.is_some()),
        }
    }
    fn table(c: &Caches) -> &Table<DiskVolumeView> {
        &c.disk_volumes
    }
}

impl Cached for PersistentVolumeClaim {
    type View = ClaimView;
    fn view(&self) -> ClaimView {
        let spec = self.spec.clone().unwrap_or_default();
        let data_source = data_source_ref(&spec);
        let res = spec.resources.unwrap_or_default();
        let q = |m: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >| { m.and_then(|m| m.get("storage")).map(|q| q.0.clone()) };
        ClaimView {
            key: key(self),
            uid: self.metadata.uid.clone().unwrap_or_default(),
            volume: spec.volume_name.filter(|n| !n.is_empty()),
            class: spec.storage_class_name.filter(|n| !n.is_empty()),
            request: q(res.requests.as_ref()),
            limit: q(res.limits.as_ref()),
            block: spec.volume_mode.as_deref() == Some("Block"),
            selected_node: self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE))
                .cloned(),
            data_source,
        }
    }
    fn table(c: &Caches) -> &Table<ClaimView> {
        &c.claims
    }
}

/// A claim spec's data source when it is one HwameiStor can restore or clone from.
fn data_source_ref(
    spec: &k8s_openapi::api::core::v1::PersistentVolumeClaimSpec,
) -> Option<DataSourceRef> {
    let (group, kind, name) = match (&spec.data_source_ref, &spec.data_source) {
        (Some(r), _) => (r.api_group.as_deref(), r.kind.as_str(), r.name.clone()),
        (None, Some(r)) => (r.api_group.as_deref(), r.kind.as_str(), r.name.clone()),
        (None, None) => return None,
    };
    match (group.unwrap_or_default(), kind) {
        ("snapshot.storage.k8s.io", "VolumeSnapshot") => Some(DataSourceRef::Snapshot(name)),
        ("", "PersistentVolumeClaim") => Some(DataSourceRef::Claim(name)),
        _ => None,
    }
}

impl Cached for LocalVolumeSnapshot {
    type View = SnapshotView;
    const COUNTS: bool = false;
    fn view(&self) -> SnapshotView {
        SnapshotView {
            node: self.spec.node_name.clone(),
            volume_snapshot: self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_VOLUME_SNAPSHOT))
                .cloned(),
        }
    }
    fn table(c: &Caches) -> &Table<SnapshotView> {
        &c.snapshots
    }
}

impl Cached for PersistentVolume {
    type View = PvView;
    const COUNTS: bool = false;
    fn view(&self) -> PvView {
        let csi = self.spec.as_ref().and_then(|s| s.csi.as_ref());
        PvView {
            driver: csi.map(|c| c.driver.clone()),
            handle: csi.map(|c| c.volume_handle.clone()).unwrap_or_default(),
        }
    }
    fn table(c: &Caches) -> &Table<PvView> {
        &c.pvs
    }
}

impl Cached for StorageClass {
    type View = StorageClass;
    fn view(&self) -> StorageClass {
        let mut c = self.clone();
        c.metadata.managed_fields = None;
        c.metadata.annotations = None;
        c
    }
    fn table(c: &Caches) -> &Table<StorageClass> {
        &c.classes
    }
}

/// Views by `namespace/name` (or `name`), filled from a watch.
pub struct Table<V> {
    map: RwLock<HashMap<String, Arc<V>>>,
    /// A re-list in progress: the views it delivered so far.
    relist: std::sync::Mutex<Option<HashMap<String, Arc<V>>>>,
    ready: AtomicBool,
    ready_notify: Notify,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            map: RwLock::default(),
            relist: std::sync::Mutex::default(),
            ready: AtomicBool::new(false),
            ready_notify: Notify::new(),
        }
    }
}

impl<V> Table<V> {
    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Every view (a snapshot).
    pub fn all(&self) -> Vec<Arc<V>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    async fn wait_ready(&self) {
        loop {
            let notified = self.ready_notify.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    fn insert(&self, key: String, v: V) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(v));
    }

    fn remove(&self, key: &str) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.ready_notify.notify_waiters();
    }
}

/// The caches the decisions read.
#[derive(Default)]
pub struct Caches {
    pub nodes: Table<NodeView>,
    pub volumes: Table<VolumeView>,
    pub replicas: Table<ReplicaView>,
    pub claims: Table<ClaimView>,
    pub pvs: Table<PvView>,
    pub classes: Table<StorageClass>,
    pub disks: Table<DiskView>,
    pub disk_volumes: Table<DiskVolumeView>,
    pub snapshots: Table<SnapshotView>,
    /// Moves on every change of nodes, volumes, replicas, claims, classes, disks or disk
    /// volumes: the capacity index is rebuilt when it moved.
    generation: AtomicU64,
}

impl Caches {
    pub fn new() -> Arc<Caches> {
        Arc::new(Caches::default())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Takes in one watch event (also how tests and benchmarks fill the caches).
    pub fn event<K: Cached>(&self, ev: &Event<K>) {
        let table = K::table(self);
        match ev {
            Event::Apply(o) => table.insert(key(o), o.view()),
            Event::Delete(o) => table.remove(&key(o)),
            Event::Init => {
                *table.relist.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
            }
            Event::InitApply(o) => {
                let mut relist = table.relist.lock().unwrap_or_else(|e| e.into_inner());
                relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key(o), Arc::new(o.view()));
            }
            Event::InitDone => {
                let fresh = table
                    .relist
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                *table.map.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                table.set_ready();
            }
        }
        if K::COUNTS {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Puts `o` in (as a watch would deliver it).
    pub fn apply<K: Cached>(&self, o: K) {
        self.event(&Event::Apply(o));
    }

    /// Marks every table listed (for caches filled by hand).
    pub fn mark_ready(&self) {
        self.nodes.set_ready();
        self.volumes.set_ready();
        self.replicas.set_ready();
        self.claims.set_ready();
        self.pvs.set_ready();
        self.classes.set_ready();
        self.disks.set_ready();
        self.disk_volumes.set_ready();
        self.snapshots.set_ready();
    }

    /// Waits until every table has its first full list.
    pub async fn wait_ready(&self) {
        self.nodes.wait_ready().await;
        self.volumes.wait_ready().await;
        self.replicas.wait_ready().await;
        self.claims.wait_ready().await;
        self.pvs.wait_ready().await;
        self.classes.wait_ready().await;
        self.disks.wait_ready().await;
        self.disk_volumes.wait_ready().await;
        self.snapshots.wait_ready().await;
    }
}

/// Runs one watch into the caches for as long as the process lives (the watcher retries
/// with backoff).
async fn watch<K: Cached>(api: Api<K>, caches: Arc<Caches>) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => caches.event(&ev),
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        }
    }
}

/// Starts the watches that fill `caches`.
pub fn spawn_watches(client: Client, caches: Arc<Caches>) {
    tokio::spawn(watch::<LocalStorageNode>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<LocalVolume>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<LocalVolumeReplica>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<PersistentVolumeClaim>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<PersistentVolume>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<LocalDisk>(Api::all(client.clone()), caches.clone()));
    tokio::spawn(watch::<LocalDiskVolume>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<LocalVolumeSnapshot>(
        Api::all(client.clone()),
        caches.clone(),
    ));
    tokio::spawn(watch::<StorageClass>(Api::all(client), caches));
}
