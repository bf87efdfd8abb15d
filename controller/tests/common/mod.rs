//! A cluster for API-level tests: the project's in-process API server with the CRDs, storage
//! nodes with pools, the real LocalVolume reconciler, and a FAKE node agent.
//!
//! The fake agent is a test double: it stands in for `hwameistor-agent`'s replica
//! reconciler, which needs LVM. Like the real one it adds its finalizer first, reports
//! Ready with a device path and the requested size, and on deletion drops its finalizer.
//! It creates no logical volumes and never updates the nodes' free space, so the
//! controller's accounting of placed-but-unreported volumes is what keeps placements honest.
#![allow(dead_code)]

use futures::StreamExt;
use hwameistor_api::{
    LocalStorageNode, LocalStorageNodeSpec, LocalStorageNodeStatus, LocalVolumeReplica,
    LocalVolumeReplicaStatus, NodeState, PoolClass, PoolStatus, ReplicaState, FINALIZER_REPLICA,
};
use hwameistor_controller::metrics::Metrics;
use hwameistor_controller::volume_reconciler;
use hwameistor_core::placement::Policy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub const GI: i64 = 1 << 30;

pub struct Cluster {
    pub server: hwameistor_testapi::TestCluster,
    pub client: Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in hwameistor_api::crds::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
}

/// Creates a Ready storage node whose HDD pool has `total` bytes, `free` of them free.
pub async fn add_node(client: &Client, name: &str, total: i64, free: i64) {
    let api: Api<LocalStorageNode> = Api::all(client.clone());
    let node = LocalStorageNode::new(
        name,
        LocalStorageNodeSpec {
            hostname: name.into(),
            storage_ip: None,
        },
    );
    api.create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let class = PoolClass::Hdd;
    let status = LocalStorageNodeStatus {
        state: Some(NodeState::Ready),
        pools: [(
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
            },
        )]
        .into(),
        ..Default::default()
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await
    .expect("node status");
}

/// One step of the fake node agent for one replica; returns whether it wrote anything.
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
    let want = LocalVolumeReplicaStatus {
        state: Some(ReplicaState::Ready),
        device_path: Some(format!("/dev/{}/{}", r.spec.pool_name, r.spec.volume_name)),
        allocated_capacity_bytes: Some(r.spec.required_capacity_bytes),
        observed_generation: r.metadata.generation,
        ..Default::default()
    };
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

/// The fake node agent (test double): reacts to every replica event at once.
pub async fn fake_node_agent(client: Client) {
    let api: Api<LocalVolumeReplica> = Api::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    while let Some(ev) = events.next().await {
        let objs = match ev {
            Ok(watcher::Event::Apply(r)) | Ok(watcher::Event::InitApply(r)) => vec![r],
            _ => continue,
        };
        for r in objs {
            if let Err(e) = fake_agent_step(&api, &r).await {
                tracing::debug!(error = %e, "fake agent step failed; the next event retries");
            }
        }
    }
}

/// A test API server with CRDs, the LocalVolume reconciler and the fake node agent running.
pub async fn start() -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = hwameistor_testapi::TestCluster::start()
        .await
        .expect("test API server");
    let client = server.client().await.expect("client");
    install_crds(&client).await;
    let ctx = volume_reconciler::Context::new(
        client.clone(),
        "test",
        Arc::new(Metrics::default()),
        Policy::default(),
    );
    let tasks = vec![
        tokio::spawn(volume_reconciler::run(ctx)),
        tokio::spawn(fake_node_agent(client.clone())),
    ];
    Cluster {
        server,
        client,
        tasks,
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
