//! Shared fixtures for the cluster tests: a test cluster (the in-process test API server,
//! or the real cluster HWAMEISTOR_TEST_KUBECONFIG names), fake HwameiStor objects, and
//! TEST DOUBLES standing in for components that do not run in tests (kube-controller-
//! manager marking workloads ready, the node agent binding claims). Each double is named
//! as such and does only the bookkeeping the real component would publish.
//!
//! On a real cluster every test shares the cluster with other tests and runs: each one
//! installs into a namespace of its own, names its nodes, disks, volumes and cluster-scoped
//! objects with a suffix of its own ([`Env::id`]), only ever looks at those, and deletes
//! them when its [`Env`] is dropped. The HwameiStor CRDs are applied (idempotently, with
//! server-side apply) and never deleted.

#![allow(dead_code)] // each test binary uses a different subset

pub mod ops;

use hwameistor_api::{
    ClaimPhase, DiskPhase, DiskPresence, DiskType, HaState, LocalDisk, LocalDiskClaim,
    LocalDiskSpec, LocalDiskStatus, LocalStorageNode, LocalStorageNodeSpec, LocalStorageNodeStatus,
    LocalVolume, LocalVolumeReplica, LocalVolumeReplicaStatus, LocalVolumeStatus, NodeState,
    ObjectRef, PoolClass, PoolDisk, PoolStatus, ReplicaState, VolumeState, LABEL_VOLUME,
};
use hwameistor_testapi::{unique_name, Cleanup, TestCluster};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubectl_hwameistor::admin::customize::Customization;
use kubectl_hwameistor::admin::install::{self, InstallOptions};
use kubectl_hwameistor::admin::manifests::{embedded_files, Bundle};
use kubectl_hwameistor::progress::Progress;
use kubectl_hwameistor::Cluster;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const GI: i64 = 1 << 30;

/// The collections of HwameiStor's custom resources (all cluster-scoped).
const HWAMEISTOR_COLLECTIONS: [&str; 9] = [
    "/apis/hwameistor.io/v1alpha1/localdisks",
    "/apis/hwameistor.io/v1alpha1/localdiskclaims",
    "/apis/hwameistor.io/v1alpha1/localstoragenodes",
    "/apis/hwameistor.io/v1alpha1/localvolumes",
    "/apis/hwameistor.io/v1alpha1/localvolumereplicas",
    // Operations are named after their volume, which carries the test's suffix.
    "/apis/hwameistor.io/v1alpha1/localvolumemigrates",
    "/apis/hwameistor.io/v1alpha1/localvolumeconverts",
    "/apis/hwameistor.io/v1alpha1/localvolumeexpands",
    "/apis/hwameistor.io/v1alpha1/localvolumesnapshots",
];

/// A test's cluster, client, system namespace and kubeconfig file. Field order matters:
/// the cleanup guard is dropped first, while an in-process server still runs.
pub struct Env {
    pub cleanup: Cleanup,
    /// This test's suffix: its nodes, disks, volumes, namespace and cluster-scoped objects
    /// carry it.
    pub id: String,
    /// The namespace this test installs HwameiStor into (created by the install).
    pub ns: String,
    pub cluster: Cluster,
    pub kubeconfig: PathBuf,
    pub server: TestCluster,
    _dir: tempfile::TempDir,
}

impl Env {
    /// A test cluster with the HwameiStor CRDs installed and Established.
    pub async fn start() -> Env {
        let env = Env::start_without_crds().await;
        env.install_crds().await;
        env
    }

    /// A test cluster as it is: on the in-process server, one without HwameiStor (tests
    /// that need that are not run on a real cluster, where other tests install the CRDs).
    pub async fn start_without_crds() -> Env {
        let server = TestCluster::start().await.expect("start test cluster");
        let client = server.client().await.expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        // A real cluster's kubeconfig is used where it is: it may name certificate files
        // relative to itself.
        let kubeconfig = match &server {
            TestCluster::Real { kubeconfig } => kubeconfig.clone(),
            TestCluster::Local(s) => {
                let path = dir.path().join("kubeconfig");
                s.write_kubeconfig(&path, "127.0.0.1")
                    .expect("write kubeconfig");
                path
            }
        };
        let id = unique_name("t");
        let ns = format!("hwameistor-{id}");
        let cleanup = server.cleanup();
        // Everything a test may create; deleting what does not exist is harmless.
        cleanup.namespace(&ns);
        for collection in HWAMEISTOR_COLLECTIONS {
            cleanup.matching(collection, &id);
        }
        cleanup.matching("/api/v1/persistentvolumes", &id);
        for (collection, name) in cluster_scoped_fixture_objects(&id) {
            cleanup.object(format!("{collection}/{name}"));
        }
        for n in ["node-a", "node-b", "node-c"] {
            cleanup.object(format!("/api/v1/nodes/{n}-{id}"));
            cleanup.object(format!("/apis/storage.k8s.io/v1/csinodes/{n}-{id}"));
        }
        Env {
            cleanup,
            cluster: Cluster::new(client, &ns),
            id,
            ns,
            kubeconfig,
            server,
            _dir: dir,
        }
    }

    pub fn client(&self) -> Client {
        self.cluster.client.clone()
    }

    pub fn is_real(&self) -> bool {
        self.server.is_real()
    }

    /// `base-<id>`: a name of this test's own.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// The fixture names of this test (see [`populate`]).
    pub fn fx(&self) -> Fixture {
        Fixture::new(&self.id)
    }

    /// Runs the CLI in-process with this cluster's kubeconfig and this test's namespace;
    /// returns (exit code or error text, stdout).
    pub async fn cli(&self, args: &[&str]) -> (Result<i32, String>, String) {
        let mut argv = vec![
            "kubectl-hwameistor",
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap_or_default(),
            "-q",
            "-n",
            &self.ns,
        ];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        let code = kubectl_hwameistor::cli::run_args(argv, &mut out)
            .await
            .map_err(|e| e.to_string());
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    /// Installs only the CRDs (what the lists need), without waiting for workloads. Server-
    /// side apply: idempotent, and harmless to other tests on a shared cluster.
    pub async fn install_crds(&self) {
        let crds = Bundle::parse(
            embedded_files()
                .iter()
                .copied()
                .filter(|(f, _)| f.starts_with("crds/")),
        )
        .expect("crds");
        let opts = InstallOptions {
            customization: self.customization(),
            dry_run: false,
            wait: false,
            timeout: Duration::from_secs(60),
        };
        install::install(&self.cluster, crds, &opts, &Progress::quiet())
            .await
            .expect("install CRDs");
    }

    pub fn customization(&self) -> Customization {
        Customization {
            namespace: self.ns.clone(),
            ..Default::default()
        }
    }

    /// Install options for this test's namespace; `wait` for workloads to be ready.
    pub fn install_opts(&self, wait: bool) -> InstallOptions {
        InstallOptions {
            customization: self.customization(),
            dry_run: false,
            wait,
            timeout: Duration::from_secs(60),
        }
    }

    /// The embedded CRDs plus [`deploy_fixture`] for this test.
    pub fn full_bundle(&self) -> Bundle {
        full_bundle_with(&deploy_fixture(&self.id))
    }

    /// Waits (on a real cluster) until the controller manager has made the `default`
    /// ServiceAccount of this test's namespace, which pods need.
    pub async fn wait_for_default_service_account(&self) {
        if !self.is_real() {
            return;
        }
        let sas: Api<ServiceAccount> = Api::namespaced(self.client(), &self.ns);
        eventually("the namespace's default ServiceAccount", || async {
            sas.get_opt("default").await.ok().flatten().is_some()
        })
        .await;
    }
}

/// Waits (bounded) for a condition: at once on the in-process server, after a moment of
/// controller work on a real cluster.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The names [`populate`] uses for one test.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub node_a: String,
    pub node_b: String,
    pub volume: String,
}

impl Fixture {
    pub fn new(id: &str) -> Self {
        Fixture {
            node_a: format!("node-a-{id}"),
            node_b: format!("node-b-{id}"),
            volume: format!("pvc-1-{id}"),
        }
    }

    /// A disk of a node: `<node>-<dev>`.
    pub fn disk(&self, node: &str, dev: &str) -> String {
        format!("{node}-{dev}")
    }

    /// The PVC the volume is for, as `namespace/name`.
    pub fn pvc(&self) -> String {
        format!("default/data-{}", self.volume)
    }
}

/// A deploy/ stand-in with one object of every kind the installer orders, written out of
/// order on purpose. Cluster-scoped objects carry the test's suffix, so tests never share
/// them; the namespaced ones go to the test's namespace through the install customization.
pub fn deploy_fixture(id: &str) -> String {
    format!(
        r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: hwameistor-storage-lvm-hdd-{id}}}
provisioner: lvm-{id}.hwameistor.io
parameters: {{poolClass: HDD}}
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: hwameistor-node, namespace: hwameistor}}
spec:
  selector: {{matchLabels: {{app: hwameistor-node}}}}
  template:
    metadata: {{labels: {{app: hwameistor-node}}}}
    spec:
      serviceAccountName: hwameistor-admin
      containers:
      - {{name: agent, image: ghcr.io/hwameistor/agent:v0.1.0}}
      - {{name: registrar, image: registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hwameistor-controller, namespace: hwameistor}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: hwameistor-controller}}}}
  template:
    metadata: {{labels: {{app: hwameistor-controller}}}}
    spec:
      serviceAccountName: hwameistor-admin
      containers:
      - {{name: controller, image: ghcr.io/hwameistor/controller:v0.1.0}}
---
apiVersion: v1
kind: Service
metadata: {{name: hwameistor-controller-metrics, namespace: hwameistor}}
spec:
  selector: {{app: hwameistor-controller}}
  ports: [{{port: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: hwameistor-config, namespace: hwameistor}}
data: {{logLevel: info}}
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {{name: lvm-{id}.hwameistor.io}}
spec: {{attachRequired: false, podInfoOnMount: true}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: hwameistor-admin-{id}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: hwameistor-admin-{id}}}
subjects: [{{kind: ServiceAccount, name: hwameistor-admin, namespace: hwameistor}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: hwameistor-admin-{id}}}
rules: [{{apiGroups: [hwameistor.io], resources: ["*"], verbs: ["*"]}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: hwameistor-admin, namespace: hwameistor}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: hwameistor}}
"#
    )
}

/// (collection URL path, name) of the cluster-scoped objects of [`deploy_fixture`].
pub fn cluster_scoped_fixture_objects(id: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "/apis/storage.k8s.io/v1/storageclasses",
            format!("hwameistor-storage-lvm-hdd-{id}"),
        ),
        (
            "/apis/storage.k8s.io/v1/csidrivers",
            format!("lvm-{id}.hwameistor.io"),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            format!("hwameistor-admin-{id}"),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            format!("hwameistor-admin-{id}"),
        ),
    ]
}

/// The embedded CRDs plus a deploy/ fixture.
pub fn full_bundle_with(fixture: &str) -> Bundle {
    let crds = embedded_files()
        .iter()
        .copied()
        .filter(|(f, _)| f.starts_with("crds/"));
    Bundle::parse(crds.chain([("deploy/fixture.yaml", fixture)])).expect("bundle")
}

/// TEST DOUBLE for kube-controller-manager and the kubelets: marks every Deployment
/// available and every DaemonSet ready (on `nodes` nodes) in `ns`, over and over, until
/// the returned task is aborted. Only meaningful on the in-process server: on a real
/// cluster the controller manager owns these statuses and overwrites them.
pub fn spawn_workload_readiness_double(
    client: Client,
    ns: &str,
    nodes: i32,
) -> tokio::task::JoinHandle<()> {
    let ns = ns.to_string();
    tokio::spawn(async move {
        loop {
            let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            for d in deploys
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": want,
                    "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}});
                let _ = deploys
                    .patch_status(
                        &d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&status),
                    )
                    .await;
            }
            let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
            for d in sets
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let status = json!({"status": {"observedGeneration": d.metadata.generation,
                    "desiredNumberScheduled": nodes, "currentNumberScheduled": nodes, "numberMisscheduled": 0,
                    "numberReady": nodes, "updatedNumberScheduled": nodes, "numberAvailable": nodes}});
                let _ = sets
                    .patch_status(
                        &d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&status),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// A LocalDisk with the status a node agent would report.
pub fn disk(name: &str, node: &str, dtype: DiskType, capacity: i64, phase: DiskPhase) -> LocalDisk {
    let mut d = LocalDisk::new(
        name,
        LocalDiskSpec {
            node_name: node.into(),
            reserved: false,
            claim_ref: None,
            volume_ref: None,
        },
    );
    d.metadata.labels = Some(BTreeMap::from([(
        hwameistor_api::LABEL_NODE.to_string(),
        node.to_string(),
    )]));
    d.status = Some(LocalDiskStatus {
        state: Some(DiskPresence::Active),
        phase: Some(phase),
        device_path: Some(format!("/dev/{}", name.rsplit('-').next().unwrap_or("sdx"))),
        disk_type: Some(dtype),
        capacity_bytes: Some(capacity),
        serial: Some(format!("SER-{name}")),
        ..Default::default()
    });
    d
}

/// A LocalStorageNode with the given pools: (class, total, used, volume count).
pub fn storage_node(
    name: &str,
    state: NodeState,
    pools: &[(PoolClass, i64, i64, i64)],
) -> LocalStorageNode {
    let mut n = LocalStorageNode::new(
        name,
        LocalStorageNodeSpec {
            hostname: name.into(),
            storage_ip: Some("10.0.0.1".into()),
        },
    );
    n.status = Some(LocalStorageNodeStatus {
        state: Some(state),
        pools: pools
            .iter()
            .map(|(class, total, used, vols)| {
                (
                    class.pool_name().to_string(),
                    PoolStatus {
                        name: class.pool_name().into(),
                        class: *class,
                        total_capacity_bytes: *total,
                        used_capacity_bytes: *used,
                        free_capacity_bytes: total - used,
                        extent_size_bytes: 4 << 20,
                        volume_count: *vols,
                        disks: vec![PoolDisk {
                            local_disk: None,
                            device_path: "/dev/sdz".into(),
                            capacity_bytes: *total,
                            free_bytes: total - used,
                        }],
                        thin: None,
                        thin_overprovision_percent: None,
                    },
                )
            })
            .collect(),
        volume_count: pools.iter().map(|p| p.3).sum(),
        agent_version: Some("v0.1.0".into()),
        mover: None,
        conditions: vec![],
    });
    n
}

pub fn volume(name: &str, capacity: i64, nodes: &[&str], state: VolumeState) -> LocalVolume {
    // From JSON, so optional fields added to the API later do not break the fixture.
    let mut v: LocalVolume = serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalVolume",
        "metadata": {"name": name},
        "spec": {
            "poolName": PoolClass::Hdd.pool_name(),
            "requiredCapacityBytes": capacity,
            "replicaNumber": nodes.len(),
            "accessibility": {"nodes": nodes},
            "pvcNamespace": "default",
            "pvcName": format!("data-{name}"),
        }
    }))
    .expect("volume fixture");
    v.status = Some(LocalVolumeStatus {
        state: Some(state),
        allocated_capacity_bytes: Some(capacity),
        replicas: nodes.iter().map(|n| format!("{name}-{n}")).collect(),
        published_node: nodes.first().map(|n| n.to_string()),
        ..Default::default()
    });
    v
}

pub fn replica(volume: &str, node: &str, capacity: i64, state: ReplicaState) -> LocalVolumeReplica {
    let mut r: LocalVolumeReplica = serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalVolumeReplica",
        "metadata": {"name": format!("{volume}-{node}")},
        "spec": {
            "volumeName": volume,
            "poolName": PoolClass::Hdd.pool_name(),
            "nodeName": node,
            "requiredCapacityBytes": capacity,
        }
    }))
    .expect("replica fixture");
    r.status = Some(LocalVolumeReplicaStatus {
        state: Some(state),
        synced: Some(true),
        allocated_capacity_bytes: Some(capacity),
        ..Default::default()
    });
    r
}

/// Creates a cluster-scoped custom resource, then writes its status through the status
/// subresource (the create ignores it), as the agent and controller would.
pub async fn create_with_status<K>(client: &Client, obj: K)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let value = serde_json::to_value(&obj).expect("serialize");
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    if let Some(status) = value.get("status") {
        let patch = json!({"status": status});
        api.patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("status");
    }
}

/// TEST DOUBLE for the node agent's claim controller: waits for claims on `node`, binds the
/// disks they name (claimRef, phase Bound, pool), grows the node's pool by their capacity,
/// and marks the claim Extending then Bound, as the agent publishes them.
pub fn spawn_agent_claim_double(client: Client, node: &str) -> tokio::task::JoinHandle<()> {
    let node = node.to_string();
    tokio::spawn(async move {
        let claims: Api<LocalDiskClaim> = Api::all(client.clone());
        let disks: Api<LocalDisk> = Api::all(client.clone());
        let nodes: Api<LocalStorageNode> = Api::all(client.clone());
        loop {
            for c in claims
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                if c.spec.node_name != node || c.status.as_ref().and_then(|s| s.phase).is_some() {
                    continue;
                }
                let name = c.name_any();
                let chosen = c.spec.description.local_disk_names.clone();
                let extending =
                    json!({"status": {"phase": ClaimPhase::Extending, "boundDisks": chosen}});
                let _ = claims
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&extending))
                    .await;
                let mut added: BTreeMap<String, i64> = BTreeMap::new();
                for d in &chosen {
                    let Ok(ld) = disks.get(d).await else { continue };
                    let st = ld.status.clone().unwrap_or_default();
                    let pool = st
                        .disk_type
                        .map(|t| t.pool_class().pool_name().to_string())
                        .unwrap_or_default();
                    *added.entry(pool.clone()).or_default() += st.capacity_bytes.unwrap_or(0);
                    let spec = json!({"spec": {"claimRef": ObjectRef { name: name.clone(), uid: String::new() }}});
                    let _ = disks
                        .patch(d, &PatchParams::default(), &Patch::Merge(&spec))
                        .await;
                    let status = json!({"status": {"phase": DiskPhase::Bound, "pool": pool}});
                    let _ = disks
                        .patch_status(d, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
                // Publish the pools' new size before completing, as the agent does.
                if let Ok(mut lsn) = nodes.get(&node).await {
                    let mut st = lsn.status.take().unwrap_or_default();
                    for (pool, bytes) in &added {
                        let class = PoolClass::from_pool_name(pool).unwrap_or(PoolClass::Hdd);
                        let p = st.pools.entry(pool.clone()).or_insert_with(|| PoolStatus {
                            name: pool.clone(),
                            class,
                            total_capacity_bytes: 0,
                            used_capacity_bytes: 0,
                            free_capacity_bytes: 0,
                            extent_size_bytes: 4 << 20,
                            volume_count: 0,
                            disks: vec![],
                            thin: None,
                            thin_overprovision_percent: None,
                        });
                        p.total_capacity_bytes += bytes;
                        p.free_capacity_bytes += bytes;
                    }
                    let patch = json!({"status": {"pools": st.pools}});
                    let _ = nodes
                        .patch_status(&node, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let total: i64 = added.values().sum();
                let bound = json!({"status": {"phase": ClaimPhase::Bound, "capacityBytes": total,
                    "message": format!("{} disk(s) added", chosen.len())}});
                let _ = claims
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&bound))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Two nodes: node-a with an HDD pool and three disks (one blank HDD, one blank SSD, one
/// with a filesystem), node-b with one volume's replica; one volume spans both. All names
/// carry the fixture's suffix.
pub async fn populate(client: &Client, fx: &Fixture) {
    let (a, b) = (fx.node_a.as_str(), fx.node_b.as_str());
    create_with_status(
        client,
        storage_node(
            a,
            NodeState::Ready,
            &[(PoolClass::Hdd, 200 * GI, 20 * GI, 1)],
        ),
    )
    .await;
    create_with_status(
        client,
        storage_node(
            b,
            NodeState::Ready,
            &[(PoolClass::Hdd, 100 * GI, 10 * GI, 1)],
        ),
    )
    .await;
    create_with_status(
        client,
        disk(
            &fx.disk(a, "sdb"),
            a,
            DiskType::Hdd,
            100 * GI,
            DiskPhase::Available,
        ),
    )
    .await;
    create_with_status(
        client,
        disk(
            &fx.disk(a, "sdc"),
            a,
            DiskType::Ssd,
            50 * GI,
            DiskPhase::Available,
        ),
    )
    .await;
    let mut fs = disk(
        &fx.disk(a, "sdd"),
        a,
        DiskType::Hdd,
        100 * GI,
        DiskPhase::Unavailable,
    );
    if let Some(st) = fs.status.as_mut() {
        st.reason = Some("has a filesystem (xfs)".into());
        st.filesystem = Some("xfs".into());
    }
    create_with_status(client, fs).await;
    create_with_status(
        client,
        disk(
            &fx.disk(b, "sdb"),
            b,
            DiskType::Hdd,
            100 * GI,
            DiskPhase::Available,
        ),
    )
    .await;
    create_with_status(
        client,
        volume(&fx.volume, 10 * GI, &[a, b], VolumeState::Ready),
    )
    .await;
    create_with_status(client, replica(&fx.volume, a, 10 * GI, ReplicaState::Ready)).await;
    create_with_status(client, replica(&fx.volume, b, 10 * GI, ReplicaState::Ready)).await;
}

/// An HA volume on `a` and `b` (the config lets `a` be primary), published on `a`, with
/// the HA state the controller reported.
pub fn ha_volume(name: &str, a: &str, b: &str, ha: HaState) -> LocalVolume {
    serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalVolume",
        "metadata": {"name": name},
        "spec": {
            "poolName": PoolClass::Hdd.pool_name(),
            "requiredCapacityBytes": GI,
            "replicaNumber": 2,
            "accessibility": {"nodes": [a, b]},
            "pvcNamespace": "default",
            "pvcName": format!("data-{name}"),
            "fsType": "xfs",
            "config": {
                "version": 3,
                "requiredCapacityBytes": GI,
                "resourceId": 7,
                "replicas": [
                    {"id": 1, "hostname": a, "ip": "10.0.0.1", "primary": true},
                    {"id": 2, "hostname": b, "ip": "10.0.0.2"},
                ],
            },
        },
        "status": {
            "state": VolumeState::Ready,
            "allocatedCapacityBytes": GI,
            "replicas": [format!("{name}-{a}"), format!("{name}-{b}")],
            "publishedNode": a,
            "haState": ha,
        },
    }))
    .expect("HA volume fixture")
}

/// The replica of `volume` on `node`, labelled as the controller labels it, Ready, with
/// what its DRBD reports.
pub fn ha_replica(volume: &str, node: &str, replication: Value) -> LocalVolumeReplica {
    serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalVolumeReplica",
        "metadata": {"name": format!("{volume}-{node}"), "labels": {LABEL_VOLUME: volume}},
        "spec": {
            "volumeName": volume,
            "poolName": PoolClass::Hdd.pool_name(),
            "nodeName": node,
            "requiredCapacityBytes": GI,
        },
        "status": {
            "state": ReplicaState::Ready,
            "synced": replication["diskState"] == "UpToDate",
            "allocatedCapacityBytes": GI,
            "devicePath": "/dev/drbd7",
            "replication": replication,
        },
    }))
    .expect("HA replica fixture")
}

/// What each side of a split brain reports: Primary, UpToDate, alone.
pub fn split_side() -> Value {
    json!({"role": "Primary", "diskState": "UpToDate", "connectionState": "StandAlone",
           "peerDiskState": "DUnknown", "splitBrain": true})
}

/// Creates an HA volume in split brain on the fixture's two nodes; returns its name.
pub async fn split_brain_volume(env: &Env, base: &str) -> String {
    let fx = env.fx();
    let name = env.name(base);
    let c = env.client();
    create_with_status(
        &c,
        ha_volume(&name, &fx.node_a, &fx.node_b, HaState::SplitBrain),
    )
    .await;
    for n in [&fx.node_a, &fx.node_b] {
        create_with_status(&c, ha_replica(&name, n, split_side())).await;
    }
    name
}

/// The whitespace-separated cells of each line: tables compared cell by cell, since
/// column widths depend on the (suffixed) names.
pub fn cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The cells of the first line whose first cell is `first`.
pub fn row(text: &str, first: &str) -> Vec<String> {
    cells(text)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row for {first:?} in:\n{text}"))
}
