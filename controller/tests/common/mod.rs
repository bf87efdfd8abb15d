//! A cluster for API-level tests: the project's in-process API server, or the real cluster
//! `HWAMEISTOR_TEST_KUBECONFIG` names, with the CRDs, storage nodes with pools, the real
//! LocalVolume reconciler, and a FAKE node agent.
//!
//! The fake agent is a test double: it stands in for `hwameistor-agent`'s replica
//! reconciler, which needs LVM. Like the real one it adds its finalizer first, reports
//! Ready with a device path and the requested size, and on deletion drops its finalizer.
//! It creates no logical volumes and never updates the nodes' free space, so the
//! controller's accounting of placed-but-unreported volumes is what keeps placements honest.
//!
//! On a real cluster every test of every binary shares one API server, and tests of one
//! binary run at the same time. So a test ([`start_scoped`]) names everything it creates
//! with its own random id ([`Cluster::name`]), labels its nodes with it, runs a reconciler
//! scoped to those nodes and a fake agent that serves only them, pins its volumes to its
//! nodes, and removes what it created when it ends, also when it fails ([`Cluster`]'s drop).
#![allow(dead_code)]

use futures::StreamExt;
use hwameistor_api::{
    CopyStatus, LocalStorageNode, LocalStorageNodeSpec, LocalStorageNodeStatus, LocalVolume,
    LocalVolumeConvert, LocalVolumeExpand, LocalVolumeMigrate, LocalVolumeReplica,
    LocalVolumeReplicaStatus, NodeState, PoolClass, PoolStatus, ReplicaState, ReplicationStatus,
    FINALIZER_REPLICA,
};
use hwameistor_controller::metrics::Metrics;
use hwameistor_controller::volume_reconciler::{self, Scope};
use hwameistor_core::placement::Policy;
use hwameistor_testapi::TestCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const GI: i64 = 1 << 30;

/// Annotation on a LocalVolume that makes the fake agent hold its block copies at 25 %.
pub const ANNOTATION_HOLD_COPY: &str = "test.hwameistor.io/hold-copy";

/// The label that puts a node into one test's scope; its value is the test's id.
pub const SCOPE_LABEL: &str = "hwameistor.io/test-scope";

/// Where the controller's leases live.
pub const LEASE_NAMESPACE: &str = "hwameistor";

/// A random id of lowercase letters and digits (testapi's one rule for generated names): a
/// valid label value and name suffix.
pub fn unique_id() -> String {
    hwameistor_testapi::util::generate_name_suffix()
}

/// Connects to the test cluster (in-process, or real when the environment says so).
pub async fn connect() -> (TestCluster, Client) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = TestCluster::start().await.expect("test cluster");
    let client = server.client().await.expect("client");
    (server, client)
}

/// Installs the CRDs idempotently (server-side apply) and waits until they are Established:
/// on a shared cluster they may exist already, from another test or an earlier run.
pub async fn install_crds(client: &Client) {
    hwameistor_sandbox::install_crds(client)
        .await
        .expect("install CRDs");
}

/// Creates `name` unless it exists (a shared cluster has it from other tests); never
/// deleted, other tests may be using it.
pub async fn ensure_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

fn hdd_pool(total: i64, free: i64) -> BTreeMap<String, PoolStatus> {
    let class = PoolClass::Hdd;
    BTreeMap::from([(
        class.pool_name().to_string(),
        PoolStatus {
            name: class.pool_name().into(),
            class,
            total_capacity_bytes: total,
            used_capacity_bytes: total - free,
            free_capacity_bytes: free,
            extent_size_bytes: 4 << 20,
            volume_count: 0,
            disks: vec![],
            thin: None,
            // As the agent reports by default (thin volumes up to twice the pool).
            thin_overprovision_percent: Some(200),
        },
    )])
}

/// Creates a Ready storage node with `labels` whose HDD pool has `total` bytes, `free` of
/// them free.
pub async fn create_node(
    client: &Client,
    name: &str,
    labels: BTreeMap<String, String>,
    total: i64,
    free: i64,
) {
    let api: Api<LocalStorageNode> = Api::all(client.clone());
    let mut node = LocalStorageNode::new(
        name,
        LocalStorageNodeSpec {
            hostname: name.into(),
            // A replication address of its own (never contacted: no agent runs).
            storage_ip: Some(test_ip(name)),
        },
    );
    node.metadata.labels = Some(labels);
    api.create(&PostParams::default(), &node)
        .await
        .expect("create node");
    set_pool(client, name, total, free).await;
}

/// A documentation-range address derived from the node's name.
pub fn test_ip(name: &str) -> String {
    let h = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("198.51.{}.{}", (h >> 8) % 256, h % 254 + 1)
}

/// Sets a node's HDD pool to `total` bytes, `free` of them free, as its agent would report.
pub async fn set_pool(client: &Client, name: &str, total: i64, free: i64) {
    let status = LocalStorageNodeStatus {
        state: Some(NodeState::Ready),
        pools: hdd_pool(total, free),
        ..Default::default()
    };
    Api::<LocalStorageNode>::all(client.clone())
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": status })),
        )
        .await
        .expect("node status");
}

/// Creates an unlabelled Ready storage node (for the whole-cluster setup of [`start`]).
pub async fn add_node(client: &Client, name: &str, total: i64, free: i64) {
    create_node(client, name, BTreeMap::new(), total, free).await;
}

/// One step of the fake node agent for one replica.
async fn fake_agent_step(
    api: &Api<LocalVolumeReplica>,
    r: &LocalVolumeReplica,
) -> Result<(), kube::Error> {
    let name = r.name_any();
    let has_finalizer = r.finalizers().iter().any(|f| f == FINALIZER_REPLICA);
    if r.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            let rest: Vec<String> = r
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER_REPLICA)
                .cloned()
                .collect();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "metadata": { "finalizers": rest } })),
            )
            .await?;
        }
        return Ok(());
    }
    if !has_finalizer {
        let mut f = r.finalizers().to_vec();
        f.push(FINALIZER_REPLICA.into());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "metadata": { "finalizers": f } })),
        )
        .await?;
        return Ok(());
    }
    let mut want = LocalVolumeReplicaStatus {
        state: Some(ReplicaState::Ready),
        device_path: Some(format!("/dev/{}/{}", r.spec.pool_name, r.spec.volume_name)),
        allocated_capacity_bytes: Some(r.spec.required_capacity_bytes),
        observed_generation: r.metadata.generation,
        ..Default::default()
    };
    if let Some(rep) = &r.spec.replication {
        // An HA replica: served from its DRBD device, connected and up to date, unless the
        // test has set what DRBD reports (kept as the test wrote it).
        want.device_path = Some(format!("/dev/drbd{}", rep.minor));
        want.synced = Some(true);
        want.replication = r
            .status
            .as_ref()
            .and_then(|s| s.replication.clone())
            .or(Some(ReplicationStatus {
                role: "Secondary".into(),
                disk_state: "UpToDate".into(),
                connection_state: "Connected".into(),
                peer_role: Some("Secondary".into()),
                peer_disk_state: Some("UpToDate".into()),
                ..Default::default()
            }));
    }
    if let Some(rep) = &r.spec.replication {
        if rep.leaving {
            // Taken down and kept, as the real agent does for a replica being replaced.
            want.synced = Some(false);
            want.replication = Some(ReplicationStatus {
                role: "Unknown".into(),
                disk_state: "UpToDate".into(),
                connection_state: "StandAlone".into(),
                ..Default::default()
            });
        }
    }
    if let Some(copy) = &r.spec.copy_from {
        // A block copy (the real agent's mover): verified at once, unless the test holds
        // copies of this volume back (annotation on the LocalVolume).
        let volumes: Api<LocalVolume> = Api::all(api.clone().into_client());
        let held = volumes
            .get_opt(&r.spec.volume_name)
            .await?
            .is_some_and(|v| v.annotations().contains_key(ANNOTATION_HOLD_COPY));
        let total = r.spec.required_capacity_bytes;
        want.copy = Some(CopyStatus {
            operation_uid: copy.operation_uid.clone(),
            bytes_done: if held { total / 4 } else { total },
            bytes_total: total,
            bytes_per_second: Some(64 << 20),
            verified: !held,
            digest: (!held).then(|| "fake-digest".into()),
            ..Default::default()
        });
        if held {
            want.state = Some(ReplicaState::NotReady);
        }
    } else {
        want.copy = r.status.as_ref().and_then(|s| s.copy.clone());
    }
    if r.status.as_ref() != Some(&want) {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": want })),
        )
        .await?;
    }
    Ok(())
}

/// The fake node agent (test double) for the replicas `serves` accepts: reacts to every
/// replica event at once.
async fn fake_agent_where(client: Client, serves: impl Fn(&LocalVolumeReplica) -> bool) {
    let api: Api<LocalVolumeReplica> = Api::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    while let Some(ev) = events.next().await {
        let r = match ev {
            Ok(watcher::Event::Apply(r)) | Ok(watcher::Event::InitApply(r)) => r,
            _ => continue,
        };
        if !serves(&r) {
            continue;
        }
        if let Err(e) = fake_agent_step(&api, &r).await {
            tracing::debug!(error = %e, "fake agent step failed; the next event retries");
        }
    }
}

/// The fake node agent for every node.
pub async fn fake_node_agent(client: Client) {
    fake_agent_where(client, |_| true).await;
}

/// The fake node agent for the nodes in `nodes` only (other tests' nodes have their own).
pub async fn fake_node_agent_for(client: Client, nodes: Arc<Mutex<BTreeSet<String>>>) {
    fake_agent_where(client, move |r| {
        nodes
            .lock()
            .map(|n| n.contains(&r.spec.node_name))
            .unwrap_or(false)
    })
    .await;
}

pub struct Cluster {
    pub server: TestCluster,
    pub client: Client,
    /// This test's id: the suffix of every name it creates and its scope label's value.
    pub id: String,
    /// The reconciler's metrics (when this cluster runs one).
    pub metrics: Arc<Metrics>,
    /// The nodes this test created; its fake agent serves these only.
    nodes: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let TestCluster::Real { kubeconfig } = &self.server {
            remove_leftovers(kubeconfig.clone(), &self.id);
        }
    }
}

impl Cluster {
    /// `base` made this test's own: `base-<id>`.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// The scope of this test's reconciler: its own nodes.
    pub fn scope(&self) -> Scope {
        format!("{SCOPE_LABEL}={}", self.id)
            .parse()
            .expect("a valid scope")
    }

    /// Creates this test's node `base-<id>` (in its scope, served by its fake agent) and
    /// returns its name.
    pub async fn add_node(&self, base: &str, total: i64, free: i64) -> String {
        let name = self.name(base);
        self.add_node_named(&name, total, free).await;
        name
    }

    /// [`Self::add_node`] with the name as given: for a test that needs a short name, on a
    /// server of its own.
    pub async fn add_node_named(&self, name: &str, total: i64, free: i64) {
        self.nodes
            .lock()
            .expect("node set")
            .insert(name.to_string());
        let labels = BTreeMap::from([(SCOPE_LABEL.to_string(), self.id.clone())]);
        create_node(&self.client, name, labels, total, free).await;
    }

    /// Starts the fake node agent for this test's nodes.
    pub fn spawn_fake_agent(&mut self) {
        self.tasks.push(tokio::spawn(fake_node_agent_for(
            self.client.clone(),
            self.nodes.clone(),
        )));
    }

    /// Starts a LocalVolume reconciler acting on `scope` (everything when None).
    pub fn spawn_reconciler(&mut self, scope: Option<Scope>) {
        let ctx = volume_reconciler::Context::new_scoped(
            self.client.clone(),
            &self.name("test"),
            self.metrics.clone(),
            Policy::default(),
            scope,
        );
        self.tasks
            .push(tokio::spawn(volume_reconciler::run(ctx.clone())));
        self.tasks
            .push(tokio::spawn(hwameistor_controller::operations::run(
                ctx,
                Default::default(),
            )));
    }

    /// The names of this test's objects of a kind among all of them (a shared cluster has
    /// other tests' too).
    pub async fn own<K>(&self) -> Vec<String>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let suffix = format!("-{}", self.id);
        let mut names: Vec<String> = Api::<K>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|o| o.name_any())
            .filter(|n| n.ends_with(&suffix))
            .collect();
        names.sort();
        names
    }
}

/// CRDs installed, no reconciler, no agent: for tests that run the controller themselves.
pub async fn connect_bare() -> Cluster {
    let (server, client) = connect().await;
    install_crds(&client).await;
    Cluster {
        server,
        client,
        id: unique_id(),
        metrics: Arc::new(Metrics::default()),
        nodes: Default::default(),
        tasks: Vec::new(),
    }
}

/// A cluster with CRDs, this test's reconciler (scoped to this test's nodes) and its fake
/// node agent running. Volumes must name this test's nodes (accessibility) to be served.
pub async fn start_scoped() -> Cluster {
    let mut c = connect_bare().await;
    let scope = c.scope();
    c.spawn_reconciler(Some(scope));
    c.spawn_fake_agent();
    c
}

/// A whole-cluster setup as deployed: an unscoped reconciler and a fake agent for every
/// node. For the in-process server only (the benchmark); tests use [`start_scoped`].
pub async fn start() -> Cluster {
    let mut c = connect_bare().await;
    c.spawn_reconciler(None);
    c.tasks
        .push(tokio::spawn(fake_node_agent(c.client.clone())));
    c
}

/// Deletes every object of a kind that `ours` picks, removing finalizers left by
/// controllers that no longer run.
async fn purge<K>(api: &Api<K>, ours: impl Fn(&K) -> bool) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let gone = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    };
    for o in api.list(&ListParams::default()).await?.items {
        if !ours(&o) {
            continue;
        }
        let name = o.name_any();
        // Deleted first so that nothing can add a finalizer back (the API server refuses
        // new finalizers on an object being deleted), then unblocked.
        gone(api.delete(&name, &DeleteParams::default()).await.map(drop))?;
        let unblock = serde_json::json!({ "metadata": { "finalizers": null } });
        gone(
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&unblock))
                .await
                .map(drop),
        )?;
    }
    Ok(())
}

/// Removes what the test `id` left on a real cluster: every object named `*-<id>`, and the
/// volumes and replicas on its nodes (volumes named by the CSI name mapping end with a
/// hash instead). On a thread and runtime of its own:
/// this runs in a drop, while the test's runtime (which drives the test's client) is blocked.
/// Best effort: a failure is printed, never fails the test (names are unique per run, so a
/// leftover cannot disturb another test).
pub fn remove_leftovers(kubeconfig: PathBuf, id: &str) {
    let suffix = format!("-{id}");
    let work = move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let cluster = TestCluster::Real { kubeconfig };
            let client = cluster.client().await.map_err(|e| e.to_string())?;
            let mine = |name: &str| name.ends_with(&suffix);
            let cleanup = async {
                purge(&Api::<LocalVolumeReplica>::all(client.clone()), |r| {
                    mine(&r.name_any()) || mine(&r.spec.node_name)
                })
                .await?;
                purge(&Api::<LocalVolume>::all(client.clone()), |v| {
                    let placed = v.spec.config.iter().flat_map(|c| &c.replicas);
                    mine(&v.name_any())
                        || v.spec.accessibility.nodes.iter().any(|n| mine(n))
                        || placed.map(|r| &r.hostname).any(|n| mine(n))
                })
                .await?;
                purge(&Api::<LocalVolumeMigrate>::all(client.clone()), |o| {
                    mine(&o.name_any())
                })
                .await?;
                purge(&Api::<LocalVolumeConvert>::all(client.clone()), |o| {
                    mine(&o.name_any())
                })
                .await?;
                purge(&Api::<LocalVolumeExpand>::all(client.clone()), |o| {
                    mine(&o.name_any()) || mine(&o.spec.volume_name)
                })
                .await?;
                purge(&Api::<PersistentVolume>::all(client.clone()), |o| {
                    mine(&o.name_any())
                })
                .await?;
                purge(
                    &Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()),
                    |n| mine(&n.name_any()),
                )
                .await?;
                purge(&Api::<LocalStorageNode>::all(client.clone()), |n| {
                    mine(&n.name_any())
                })
                .await?;
                purge(
                    &Api::<hwameistor_api::LocalVolumeGroup>::all(client.clone()),
                    |g| mine(&g.name_any()),
                )
                .await?;
                // Pods that name a test's claims (co-location tests), in the volumes'
                // namespace.
                purge(
                    &Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "apps"),
                    |p| mine(&p.name_any()),
                )
                .await?;
                purge(
                    &Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
                    |l| mine(&l.name_any()),
                )
                .await
            };
            match tokio::time::timeout(Duration::from_secs(60), cleanup).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("timed out".into()),
            }
        })
    };
    match std::thread::spawn(work).join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cleanup of test {id} failed: {e}"),
        Err(_) => eprintln!("cleanup of test {id} panicked"),
    }
}

/// Polls `check` (for assertions about eventual state in tests only) until it holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
