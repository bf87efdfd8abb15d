//! The extender against an API server: a pod whose claim the caches have not seen yet (a
//! StatefulSet creates the pod right after its claims) still gets the hwameistor-scheduler
//! from the webhook, the claim and its class read from the API server; `bind` assigns a pod
//! once. Runs on a real cluster too (its own namespace and class, removed at the end; the
//! pod names a scheduler that does not exist, so nothing else binds or runs it).

mod common;

use common::*;
use hwameistor_scheduler_plugin::cache::Caches;
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use hwameistor_testapi::{unique_name, TestCluster};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::core::admission::AdmissionReview;
use kube::core::DynamicObject;
use serde_json::json;

#[tokio::test]
async fn a_pod_whose_claim_the_caches_lack_still_gets_the_scheduler() {
    let cluster = TestCluster::start().await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let cleanup = cluster.cleanup();
    let ns = unique_name("hook");
    let class = unique_name("hook-local");
    own_namespace(&client, &cleanup, &ns).await;
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &storage_class(&class, 1))
        .await
        .expect("class");
    cleanup.object(format!("/apis/storage.k8s.io/v1/storageclasses/{class}"));
    let mut c = claim(&ns, "data", &class, GI);
    c.metadata.uid = None;
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &c)
        .await
        .expect("claim");

    // Caches that never saw the claim nor the class (no watches).
    let caches = Caches::new();
    caches.mark_ready();
    let ext = Extender::new(caches, Settings::default(), Some(client.clone()));
    ext.set_ready();
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "r1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns, "operation": "CREATE", "userInfo": {},
            "object": serde_json::to_value(pod(&ns, "db-0", &["data"])).expect("pod")}
    }))
    .expect("review");
    let answer = ext.admit(review).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
}

#[tokio::test]
async fn bind_assigns_the_pod_to_the_node_once() {
    use hwameistor_scheduler_plugin::protocol::ExtenderBindingArgs;
    use k8s_openapi::api::core::v1::Pod;
    let cluster = TestCluster::start().await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let cleanup = cluster.cleanup();
    let ns = unique_name("bind");
    own_namespace(&client, &cleanup, &ns).await;
    let mut p = pod(&ns, "web-0", &[]);
    p.metadata.uid = None;
    if let Some(spec) = p.spec.as_mut() {
        spec.scheduler_name = Some("hwameistor-test-no-scheduler".into());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods.create(&PostParams::default(), &p).await.expect("pod");
    let ext = Extender::new(Caches::new(), Settings::default(), Some(client.clone()));
    let args = ExtenderBindingArgs {
        pod_name: "web-0".into(),
        pod_namespace: ns.clone(),
        pod_uid: created.metadata.uid.clone().unwrap_or_default(),
        node: unique_name("node"),
    };
    let r = ext.bind(&args).await;
    assert_eq!(r.error, "", "{r:?}");
    let bound = pods.get("web-0").await.expect("pod");
    assert_eq!(
        bound.spec.and_then(|s| s.node_name),
        Some(args.node.clone())
    );
    // Once: a second bind is refused, and says why.
    let again = ext
        .bind(&ExtenderBindingArgs {
            node: "elsewhere".into(),
            ..args.clone()
        })
        .await;
    assert!(again.error.contains("already assigned"), "{again:?}");
    // A pod that does not exist.
    let missing = ext
        .bind(&ExtenderBindingArgs {
            pod_name: "nope".into(),
            ..args
        })
        .await;
    assert!(!missing.error.is_empty());
}
