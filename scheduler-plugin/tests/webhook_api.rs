//! The webhook against an API server: a pod whose claim the caches have not seen yet (a
//! StatefulSet creates the pod right after its claims) still gets the hwameistor-scheduler:
//! the claim and its class are read from the API server. Runs on a real cluster too (its own
//! namespace and class, removed at the end).

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
