//! Fixtures for the volume-operation tests (migrate, convert, expand, operations, drain):
//! storage nodes with a block mover, placed volumes, pods using them through a claim and a
//! PersistentVolume, and a TEST DOUBLE for the controller's operation reconcilers, which do
//! not run in these tests: it walks each new operation through a scripted series of statuses,
//! as the controller would report them.

use super::{create_with_status, Env, GI};
use hwameistor_api::{
    LocalStorageNode, LocalVolume, LocalVolumeReplica, PoolClass, CSI_DRIVER_NAME, LABEL_VOLUME,
};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

/// A Ready storage node with an HDD pool of 100 GiB of which `free` is free, a replication
/// address and a block mover, as its agent reports them.
pub fn mover_node(name: &str, free: i64) -> LocalStorageNode {
    let pool = PoolClass::Hdd.pool_name();
    serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalStorageNode",
        "metadata": {"name": name},
        "spec": {"hostname": name, "storageIP": "10.0.0.1"},
        "status": {
            "state": "Ready",
            "pools": {pool: {"name": pool, "class": "HDD", "totalCapacityBytes": 100 * GI,
                "usedCapacityBytes": 100 * GI - free, "freeCapacityBytes": free,
                "extentSizeBytes": 4 << 20, "volumeCount": 0, "disks": []}},
            "volumeCount": 0,
            "mover": {"endpoint": "10.0.0.1:7070", "publicKey": "a2V5"},
        },
    }))
    .expect("storage node fixture")
}

/// A Ready volume of `bytes` placed on `nodes` (HA, resource 7, when more than one; the
/// first node allowed to be primary), published on `published`, for PVC `pvc`
/// (`namespace`, `name`).
pub fn placed_volume(
    name: &str,
    bytes: i64,
    nodes: &[&str],
    published: Option<&str>,
    pvc: (&str, &str),
) -> LocalVolume {
    let ha = nodes.len() > 1;
    let replicas: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(
            |(i, n)| json!({"id": i + 1, "hostname": n, "ip": "10.0.0.1", "primary": ha && i == 0}),
        )
        .collect();
    let mut status = json!({
        "state": "Ready",
        "allocatedCapacityBytes": bytes,
        "replicas": nodes.iter().map(|n| format!("{name}-{n}")).collect::<Vec<_>>(),
    });
    if let Some(p) = published {
        status["publishedNode"] = json!(p);
    }
    if ha {
        status["haState"] = json!("Healthy");
    }
    serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalVolume",
        "metadata": {"name": name},
        "spec": {
            "poolName": PoolClass::Hdd.pool_name(),
            "requiredCapacityBytes": bytes,
            "replicaNumber": nodes.len(),
            "accessibility": {"nodes": nodes},
            "pvcNamespace": pvc.0,
            "pvcName": pvc.1,
            "fsType": "xfs",
            "config": {"version": 1, "requiredCapacityBytes": bytes,
                       "resourceId": if ha { 7 } else { -1 }, "replicas": replicas},
        },
        "status": status,
    }))
    .expect("volume fixture")
}

/// The Ready replicas of a placed volume, labelled as the controller labels them.
pub fn replicas_of(v: &LocalVolume) -> Vec<LocalVolumeReplica> {
    let name = v.name_any();
    let bytes = v.spec.required_capacity_bytes;
    v.spec
        .config
        .iter()
        .flat_map(|c| c.replicas.iter())
        .map(|a| {
            serde_json::from_value(json!({
                "apiVersion": "hwameistor.io/v1alpha1",
                "kind": "LocalVolumeReplica",
                "metadata": {"name": format!("{name}-{}", a.hostname), "labels": {LABEL_VOLUME: name}},
                "spec": {"volumeName": name, "poolName": PoolClass::Hdd.pool_name(),
                         "nodeName": a.hostname, "requiredCapacityBytes": bytes},
                "status": {"state": "Ready", "synced": true, "allocatedCapacityBytes": bytes},
            }))
            .expect("replica fixture")
        })
        .collect()
}

/// Creates a volume and its replicas with their statuses.
pub async fn create_volume(client: &Client, v: LocalVolume) {
    for r in replicas_of(&v) {
        create_with_status(client, r).await;
    }
    create_with_status(client, v).await;
}

/// Creates the test's namespace (where its pods and claims live), once.
pub async fn ensure_namespace(env: &Env) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": env.ns}})).unwrap();
    match Api::<Namespace>::all(env.client())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace: {e}"),
    }
    env.wait_for_default_service_account().await;
}

/// A Kubernetes Node `name` (what a drain cordons). Never Ready: nothing runs there.
pub async fn create_node(client: &Client, name: &str) {
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
}

/// A PersistentVolume of HwameiStor's CSI driver for `volume`, and the bound claim `claim`
/// in `ns`. The PV is named `pv-<volume>` (the volume's name carries the test's suffix).
pub async fn create_claim(client: &Client, ns: &str, claim: &str, volume: &str) {
    let pv_name = format!("pv-{volume}");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": ns, "name": claim},
                 "csi": {"driver": CSI_DRIVER_NAME, "volumeHandle": volume}},
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create PV");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": claim, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "volumeName": pv_name, "storageClassName": ""},
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create PVC");
}

/// A pod bound to `node` using claim `claim`, owned by a StatefulSet `owner` (None: a bare
/// pod).
pub async fn create_pod(
    client: &Client,
    ns: &str,
    name: &str,
    node: &str,
    claim: &str,
    owner: Option<&str>,
) {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some(o) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet",
            "name": o, "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// A status the double writes, after a pause.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub after: Duration,
    pub status: Value,
}

pub fn at(ms: u64, status: Value) -> Scripted {
    Scripted {
        after: Duration::from_millis(ms),
        status,
    }
}

/// TEST DOUBLE for the controller's reconciler of operation kind `K`: every operation of
/// that kind whose volume has a script in `scripts` and that has no status yet is walked
/// through its script (each status written with a merge patch on the status subresource,
/// after its pause). Runs until aborted.
pub fn spawn_operation_double<K>(
    client: Client,
    scripts: BTreeMap<String, Vec<Scripted>>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let api: Api<K> = Api::all(client);
        let mut started: BTreeSet<String> = BTreeSet::new();
        loop {
            let items = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for o in items {
                let v = serde_json::to_value(&o).unwrap_or_default();
                let volume = v["spec"]["volumeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let name = o.name_any();
                let has_status = v.get("status").is_some_and(|s| s.get("phase").is_some());
                let Some(script) = scripts.get(&volume) else {
                    continue;
                };
                if has_status || !started.insert(name.clone()) {
                    continue;
                }
                let (api, script) = (api.clone(), script.clone());
                tokio::spawn(async move {
                    for s in script {
                        tokio::time::sleep(s.after).await;
                        let patch = json!({"status": s.status});
                        let _ = api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
