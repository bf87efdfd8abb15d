//! Object semantics through a real kube client: optimistic concurrency,
//! finalizers, garbage collection, namespaces, selectors, pagination,
//! patches, dry-run, error Status shapes, and TestCluster.

mod common;

use std::collections::BTreeMap;

use common::*;
use either::Either;
use futures::StreamExt;
use hwameistor_testapi::TestCluster;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
    Preconditions, PropagationPolicy,
};
use kube::Client;
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn owner_ref(o: &ObjectMeta, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: kind.into(),
        name: o.name.clone().unwrap(),
        uid: o.uid.clone().unwrap(),
        ..Default::default()
    }
}

async fn create_ns(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns).await.unwrap();
}

#[tokio::test]
async fn stale_resource_version_is_409_conflict() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = api
        .create(&PostParams::default(), &cm("c1", &[]))
        .await
        .unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();

    let mut first = created.clone();
    first.data = Some(BTreeMap::from([("k".into(), "first".into())]));
    let updated = api
        .replace("c1", &PostParams::default(), &first)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "every write moves the global revision");

    let mut stale = created.clone();
    stale.data = Some(BTreeMap::from([("k".into(), "second".into())]));
    let err = api_err(api.replace("c1", &PostParams::default(), &stale).await);
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on configmaps \"c1\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // A merge patch carrying a stale resourceVersion is a precondition too.
    let err = api_err(
        api.patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": rv1.to_string()}, "data": {"k": "x"}}),
            ),
        )
        .await,
    );
    assert_eq!(err.code, 409);

    // Without a resourceVersion the update is unconditional.
    stale.metadata.resource_version = None;
    let forced = api
        .replace("c1", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "second");

    // Lists carry the current global revision.
    let list = api.list(&ListParams::default()).await.unwrap();
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert_eq!(
        list_rv,
        forced
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
}

#[tokio::test]
async fn create_conflicts_generate_name_and_missing_namespace() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("dup", &[]))
        .await
        .unwrap();
    let err = api_err(api.create(&PostParams::default(), &cm("dup", &[])).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"dup\" already exists");

    let mut gen = cm("", &[]);
    gen.metadata.name = None;
    gen.metadata.generate_name = Some("pre-".into());
    let made = api.create(&PostParams::default(), &gen).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("pre-") && name.len() == 9, "{name}");

    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let err = api_err(missing.create(&PostParams::default(), &cm("x", &[])).await);
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"nowhere\" not found");

    // default and kube-system exist from the start.
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["default", "kube-system"] {
        let n = nss.get(ns).await.unwrap();
        assert_eq!(n.status.unwrap().phase.as_deref(), Some("Active"));
    }
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_server, client) = start().await;
    let api = local_volumes(&client).await;
    let mut obj = lv(
        "f1",
        json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5}),
    );
    obj.metadata.finalizers = Some(vec!["hwameistor.io/protect".into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();

    let res = api.delete("f1", &DeleteParams::default()).await.unwrap();
    let Either::Left(deleting) = res else {
        panic!("expected the object back")
    };
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(0));
    let still = api.get("f1").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // Deleting again is harmless; adding finalizers now is forbidden.
    api.delete("f1", &DeleteParams::default()).await.unwrap();
    let err = api_err(
        api.patch(
            "f1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["hwameistor.io/protect", "x/y"]}})),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        err.message
    );

    // Other updates still work while deleting.
    api.patch(
        "f1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await
    .unwrap();
    // Removing the last finalizer removes the object.
    api.patch(
        "f1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let err = api_err(api.get("f1").await);
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "localvolumes.hwameistor.io \"f1\" not found");
    assert_eq!(err.details.unwrap().kind, "localvolumes");

    // Without finalizers, delete removes at once and returns the object.
    api.create(
        &PostParams::default(),
        &lv(
            "f2",
            json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5}),
        ),
    )
    .await
    .unwrap();
    match api.delete("f2", &DeleteParams::default()).await.unwrap() {
        Either::Left(o) => assert_eq!(o.metadata.name.as_deref(), Some("f2")),
        Either::Right(s) => assert_eq!(s.code, 200),
    }
    assert_eq!(api_err(api.get("f2").await).code, 404);
}

#[tokio::test]
async fn delete_preconditions_are_honoured() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let c = api
        .create(&PostParams::default(), &cm("pre", &[]))
        .await
        .unwrap();
    let dp = |uid: Option<&str>, rv: Option<&str>| DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.map(str::to_string),
            resource_version: rv.map(str::to_string),
        }),
        ..Default::default()
    };
    let err = api_err(api.delete("pre", &dp(Some("not-the-uid"), None)).await);
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        err.message
    );
    let err = api_err(api.delete("pre", &dp(None, Some("1"))).await);
    assert_eq!(err.code, 409);
    api.delete(
        "pre",
        &dp(
            c.metadata.uid.as_deref(),
            c.metadata.resource_version.as_deref(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(api_err(api.get("pre").await).code, 404);
}

#[tokio::test]
async fn garbage_collection_cascades_to_dependents() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("owner", &[])).await.unwrap();
    let other = cms.create(&pp, &cm("other", &[])).await.unwrap();

    let mut dep = Secret::default();
    dep.metadata.name = Some("dep".into());
    dep.metadata.owner_references = Some(vec![owner_ref(&owner.metadata, "ConfigMap")]);
    let dep = secrets.create(&pp, &dep).await.unwrap();
    // A grandchild owned by the secret goes too (the cascade continues).
    let mut grand = cm("grand", &[]);
    grand.metadata.owner_references = Some(vec![owner_ref(&dep.metadata, "Secret")]);
    cms.create(&pp, &grand).await.unwrap();
    // A dependent with another live owner stays.
    let mut shared = cm("shared", &[]);
    shared.metadata.owner_references = Some(vec![
        owner_ref(&owner.metadata, "ConfigMap"),
        owner_ref(&other.metadata, "ConfigMap"),
    ]);
    cms.create(&pp, &shared).await.unwrap();
    // A dependent with a finalizer is marked for deletion and waits.
    let mut held = cm("held", &[]);
    held.metadata.owner_references = Some(vec![owner_ref(&owner.metadata, "ConfigMap")]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&pp, &held).await.unwrap();

    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("dependents collected", || async {
        secrets.get_opt("dep").await.unwrap().is_none()
            && cms.get_opt("grand").await.unwrap().is_none()
    })
    .await;
    assert!(cms.get_opt("shared").await.unwrap().is_some());
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());

    // Orphan propagation keeps dependents and drops their owner reference.
    let owner2 = cms.create(&pp, &cm("owner2", &[])).await.unwrap();
    let mut orphan = cm("orphan", &[]);
    orphan.metadata.owner_references = Some(vec![owner_ref(&owner2.metadata, "ConfigMap")]);
    cms.create(&pp, &orphan).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    cms.delete("owner2", &dp).await.unwrap();
    let orphan = cms.get("orphan").await.unwrap();
    assert!(orphan
        .metadata
        .owner_references
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let (_server, client) = start().await;
    create_ns(&client, "scratch").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    let pp = PostParams::default();
    cms.create(&pp, &cm("a", &[])).await.unwrap();
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&pp, &held).await.unwrap();
    let elsewhere: Api<ConfigMap> = Api::default_namespaced(client.clone());
    elsewhere.create(&pp, &cm("a", &[])).await.unwrap();

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    let ns = nss.get("scratch").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let err = api_err(cms.create(&pp, &cm("new", &[])).await);
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains("because it is being terminated"),
        "{}",
        err.message
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        nss.get_opt("scratch").await.unwrap().is_none(),
        "namespace goes once empty"
    );
    assert!(
        elsewhere.get_opt("a").await.unwrap().is_some(),
        "other namespaces untouched"
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (_server, client) = start().await;
    create_ns(&client, "other").await;
    let pp = PostParams::default();
    let mk = |name: &str, node: &str, labels: &[(&str, &str)]| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    let default: Api<Pod> = Api::default_namespaced(client.clone());
    let other: Api<Pod> = Api::namespaced(client.clone(), "other");
    default
        .create(&pp, &mk("p1", "node1", &[("app", "a"), ("tier", "db")]))
        .await
        .unwrap();
    default
        .create(&pp, &mk("p2", "node2", &[("app", "b")]))
        .await
        .unwrap();
    default
        .create(&pp, &mk("p3", "node1", &[("tier", "web")]))
        .await
        .unwrap();
    other
        .create(&pp, &mk("p4", "node1", &[("app", "a")]))
        .await
        .unwrap();

    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(default.list(&q("app=a")).await.unwrap()), ["p1"]);
    assert_eq!(names(default.list(&q("app==a")).await.unwrap()), ["p1"]);
    assert_eq!(
        names(default.list(&q("app!=a")).await.unwrap()),
        ["p2", "p3"]
    );
    assert_eq!(
        names(default.list(&q("app in (a,b)")).await.unwrap()),
        ["p1", "p2"]
    );
    assert_eq!(
        names(default.list(&q("app notin (a)")).await.unwrap()),
        ["p2", "p3"]
    );
    assert_eq!(names(default.list(&q("tier")).await.unwrap()), ["p1", "p3"]);
    assert_eq!(names(default.list(&q("!app")).await.unwrap()), ["p3"]);
    assert_eq!(
        names(default.list(&q("app,tier=db")).await.unwrap()),
        ["p1"]
    );
    let bad = api_err(default.list(&q("app in (a")).await);
    assert_eq!(bad.code, 400);

    let f = |s: &str| ListParams::default().fields(s);
    assert_eq!(
        names(default.list(&f("spec.nodeName=node1")).await.unwrap()),
        ["p1", "p3"]
    );
    assert_eq!(
        names(default.list(&f("metadata.name=p2")).await.unwrap()),
        ["p2"]
    );
    assert_eq!(
        names(
            default
                .list(&f("metadata.name!=p2,spec.nodeName==node1"))
                .await
                .unwrap()
        ),
        ["p1", "p3"]
    );

    // Across all namespaces (/api/v1/pods).
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        names(all.list(&ListParams::default()).await.unwrap()),
        ["p1", "p2", "p3", "p4"]
    );
    assert_eq!(names(all.list(&q("app=a")).await.unwrap()), ["p1", "p4"]);
    assert_eq!(
        names(all.list(&f("metadata.namespace=other")).await.unwrap()),
        ["p4"]
    );

    // Custom resources: metadata fields and declared selectableFields only.
    let lvs = local_volumes(&client).await;
    lvs.create(
        &pp,
        &lv(
            "l1",
            json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1}),
        ),
    )
    .await
    .unwrap();
    lvs.create(
        &pp,
        &lv(
            "l2",
            json!({"poolName": "LocalStorage_PoolSSD", "requiredCapacityBytes": 1}),
        ),
    )
    .await
    .unwrap();
    let got: Vec<String> = lvs
        .list(&f("spec.poolName=LocalStorage_PoolSSD"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name.unwrap())
        .collect();
    assert_eq!(got, ["l2"]);
    let err = api_err(lvs.list(&f("spec.replicaNumber=1")).await);
    assert_eq!(err.code, 400);
    assert_eq!(err.message, "field label not supported: spec.replicaNumber");
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..25 {
        api.create(
            &PostParams::default(),
            &cm(
                &format!("cm-{i:02}"),
                &[("even", if i % 2 == 0 { "y" } else { "n" })],
            ),
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        let n = page.items.len();
        seen.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => {
                assert_eq!(n, 10);
                assert_eq!(
                    page.metadata.remaining_item_count,
                    Some(25 - seen.len() as i64)
                );
                token = Some(c);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(seen, want);

    // Pagination combines with selectors.
    let page = api
        .list(&ListParams::default().labels("even=y").limit(5))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);
    assert_eq!(page.metadata.remaining_item_count, Some(8));
    let bad = api_err(
        api.list(&ListParams::default().limit(5).continue_token("garbage"))
            .await,
    );
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches() {
    let (_server, client) = start().await;
    let api = local_volumes(&client).await;
    let pp = PatchParams::default();
    api.create(&PostParams::default(), &lv("m1", json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5, "labels": {"a": "1", "b": "2"}})))
        .await
        .unwrap();

    // RFC 7386 merge patch: null deletes, objects merge.
    let o = api
        .patch(
            "m1",
            &pp,
            &Patch::Merge(json!({"spec": {"labels": {"a": null, "c": "3"}, "replicaNumber": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(o.data["spec"]["labels"], json!({"b": "2", "c": "3"}));
    assert_eq!(o.data["spec"]["replicaNumber"], 2);

    // RFC 6902 JSON patch, including a passing and a failing `test`.
    let path = "/apis/hwameistor.io/v1alpha1/localvolumes/m1";
    let ops = json!([
        {"op": "test", "path": "/spec/replicaNumber", "value": 2},
        {"op": "replace", "path": "/spec/replicaNumber", "value": 3},
        {"op": "add", "path": "/spec/labels/d", "value": "4"},
        {"op": "remove", "path": "/spec/labels/b"}
    ]);
    let o = raw_patch(&client, path, "application/json-patch+json", &ops)
        .await
        .unwrap();
    assert_eq!(o["spec"]["replicaNumber"], 3);
    assert_eq!(o["spec"]["labels"], json!({"c": "3", "d": "4"}));
    let failing = json!([
        {"op": "test", "path": "/spec/replicaNumber", "value": 1},
        {"op": "replace", "path": "/spec/replicaNumber", "value": 4}
    ]);
    let err = api_err(raw_patch(&client, path, "application/json-patch+json", &failing).await);
    assert_eq!(err.code, 422);
    assert_eq!(
        api.get("m1").await.unwrap().data["spec"]["replicaNumber"],
        3,
        "failed patch changes nothing"
    );
    let err = api_err(
        raw_patch(
            &client,
            path,
            "application/json-patch+json",
            &json!({"op": "add"}),
        )
        .await,
    );
    assert_eq!(err.code, 400);

    // A patch producing an invalid object is rejected by the schema.
    let err = api_err(
        api.patch(
            "m1",
            &pp,
            &Patch::Merge(json!({"spec": {"replicaNumber": 9}})),
        )
        .await,
    );
    assert_eq!(err.code, 422);

    // Server-side apply: creates when absent, merges when present.
    let ssa = PatchParams::apply("test-manager");
    let applied = api
        .patch(
            "m2",
            &ssa,
            &Patch::Apply(json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": "m2"},
                "spec": {"poolName": "LocalStorage_PoolSSD", "requiredCapacityBytes": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["replicaNumber"], 1);
    let applied = api
        .patch(
            "m2",
            &ssa.clone().force(),
            &Patch::Apply(json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": "m2"},
                "spec": {"replicaNumber": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["replicaNumber"], 2);
    assert_eq!(applied.data["spec"]["poolName"], "LocalStorage_PoolSSD");
    // Apply without a field manager is 422.
    let req = http::Request::patch("/apis/hwameistor.io/v1alpha1/localvolumes/m2")
        .header("Content-Type", "application/apply-patch+yaml")
        .body(
            b"apiVersion: hwameistor.io/v1alpha1\nkind: LocalVolume\nmetadata:\n  name: m2\n"
                .to_vec(),
        )
        .unwrap();
    let err = api_err(client.request::<serde_json::Value>(req).await);
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("fieldManager: Required value"),
        "{}",
        err.message
    );
    // An unknown patch type is 415.
    let req = http::Request::patch("/apis/hwameistor.io/v1alpha1/localvolumes/m2")
        .header("Content-Type", "application/x-made-up")
        .body(b"{}".to_vec())
        .unwrap();
    let err = api_err(client.request::<serde_json::Value>(req).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    // Strategic merge patch on a built-in (approximated as merge patch).
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("s", &[("x", "1")]))
        .await
        .unwrap();
    let c = cms
        .patch(
            "s",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"y": "2"}}, "data": {"k2": "v2"}})),
        )
        .await
        .unwrap();
    assert_eq!(c.metadata.labels.unwrap().len(), 2);
    assert_eq!(c.data.unwrap().len(), 2);
    // Strategic merge patch merges keyed lists on built-ins (pod conditions by type).
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "finalizers": ["a/b"]},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let set_condition = |t: &str, st: &str| {
        Patch::Strategic(json!({"status": {"conditions": [{"type": t, "status": st}]}}))
    };
    pods.patch_status("p", &pp, &set_condition("Ready", "False"))
        .await
        .unwrap();
    pods.patch_status("p", &pp, &set_condition("Scheduled", "True"))
        .await
        .unwrap();
    let p = pods
        .patch_status("p", &pp, &set_condition("Ready", "True"))
        .await
        .unwrap();
    let conds: Vec<(String, String)> = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(
        conds,
        [
            ("Ready".to_string(), "True".to_string()),
            ("Scheduled".to_string(), "True".to_string())
        ]
    );
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Strategic(json!({"metadata": {"finalizers": ["c/d"]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.finalizers.unwrap(),
        ["a/b", "c/d"],
        "finalizers merge as a set"
    );

    // Patching what does not exist is 404 (only apply creates).
    assert_eq!(
        api_err(
            cms.patch("nope", &pp, &Patch::Merge(json!({"data": {}})))
                .await
        )
        .code,
        404
    );
}

#[tokio::test]
async fn dry_run_validates_but_stores_nothing() {
    let (server, client) = start().await;
    let api = local_volumes(&client).await;
    let rv_before = server.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let o = api
        .create(
            &dry,
            &lv(
                "d1",
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        o.data["spec"]["replicaNumber"], 1,
        "defaults applied in dry run"
    );
    assert!(api.get_opt("d1").await.unwrap().is_none());
    let err = api_err(
        api.create(
            &dry,
            &lv("d1", json!({"poolName": "X", "requiredCapacityBytes": 5})),
        )
        .await,
    );
    assert_eq!(err.code, 422);
    assert_eq!(server.resource_version(), rv_before);

    api.create(
        &PostParams::default(),
        &lv(
            "d2",
            json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5}),
        ),
    )
    .await
    .unwrap();
    let rv = server.resource_version();
    let dpp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let patched = api
        .patch(
            "d2",
            &dpp,
            &Patch::Merge(json!({"spec": {"replicaNumber": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["replicaNumber"], 3);
    let mut got = api.get("d2").await.unwrap();
    assert_eq!(got.data["spec"]["replicaNumber"], 1);
    got.data["spec"]["replicaNumber"] = json!(4);
    api.replace("d2", &dry, &got).await.unwrap();
    assert_eq!(
        api.get("d2").await.unwrap().data["spec"]["replicaNumber"],
        1
    );
    api.delete(
        "d2",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get_opt("d2").await.unwrap().is_some());
    assert_eq!(server.resource_version(), rv, "dry runs write nothing");
}

#[tokio::test]
async fn errors_are_status_objects_with_http_codes() {
    let (server, client) = start().await;
    // 401 without the right token.
    let wrong = server
        .kubeconfig_yaml("127.0.0.1")
        .replace(server.token(), "wrong-token");
    let kc = kube::config::Kubeconfig::from_yaml(&wrong).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let bad_client = Client::try_from(cfg).unwrap();
    let nss: Api<Namespace> = Api::all(bad_client);
    let err = api_err(nss.list(&ListParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));

    // 400 for an undecodable body.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("Content-Type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let err = api_err(client.request::<serde_json::Value>(req).await);
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));

    // 404 for an unknown resource path and a missing object.
    let req = http::Request::get("/apis/nope.io/v1/things")
        .body(vec![])
        .unwrap();
    assert_eq!(
        api_err(client.request::<serde_json::Value>(req).await).code,
        404
    );
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let err = api_err(cms.get("missing").await);
    assert_eq!(err.message, "configmaps \"missing\" not found");
    assert_eq!(
        err.status,
        Some(kube::core::response::StatusSummary::Failure)
    );

    // 405 for a verb the path does not take.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps/x")
        .header("Content-Type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(
        api_err(client.request::<serde_json::Value>(req).await).code,
        405
    );

    // 400 when the body's name does not match the URL.
    cms.create(&PostParams::default(), &cm("real", &[]))
        .await
        .unwrap();
    let err = api_err(
        cms.replace("real", &PostParams::default(), &cm("other", &[]))
            .await,
    );
    assert_eq!(err.code, 400);

    // The raw body is a v1 Status.
    let req = http::Request::get("/api/v1/namespaces/default/configmaps/missing")
        .body(vec![])
        .unwrap();
    let resp = client.send(req.map(Into::into)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["status"], "Failure");
    assert_eq!(
        v["details"],
        json!({"name": "missing", "kind": "configmaps"})
    );
}

#[tokio::test]
async fn test_cluster_local_and_kubeconfig_path() {
    let cluster = TestCluster::start().await.unwrap();
    if cluster.is_real() {
        eprintln!("HWAMEISTOR_TEST_KUBECONFIG is set; the local-server checks do not apply");
        return;
    }
    let yaml = cluster.kubeconfig_yaml("10.0.2.2").unwrap();
    let port = cluster.local().unwrap().addr().port();
    assert!(
        yaml.contains(&format!("server: https://10.0.2.2:{port}")),
        "{yaml}"
    );
    assert!(yaml.contains("certificate-authority-data: "));
    assert!(yaml.contains(&format!("token: {}", cluster.local().unwrap().token())));
    let client = cluster.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client);
    assert!(nss.get("default").await.is_ok());

    // The Real variant reads a kubeconfig file; point it at the local server.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    cluster
        .local()
        .unwrap()
        .write_kubeconfig(&path, "127.0.0.1")
        .unwrap();
    let real = TestCluster::Real {
        kubeconfig: path.clone(),
    };
    assert!(real.is_real());
    let api: Api<Namespace> = Api::all(real.client().await.unwrap());
    assert!(api.get("kube-system").await.is_ok());
    assert_eq!(
        real.kubeconfig_yaml("ignored").unwrap(),
        std::fs::read_to_string(&path).unwrap()
    );
    let _unused: Option<DynamicObject> = None;
}

#[tokio::test]
async fn thousands_of_objects_stay_fast() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let started = std::time::Instant::now();
    let results: Vec<_> = futures::stream::iter(0..2000)
        .map(|i| {
            let api = api.clone();
            async move {
                let parity = if i % 2 == 0 { "even" } else { "odd" };
                api.create(
                    &PostParams::default(),
                    &cm(&format!("bulk-{i:04}"), &[("parity", parity)]),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok));
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 2000);
    let even = api
        .list(&ListParams::default().labels("parity=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 1000);
    let page = api.list(&ListParams::default().limit(100)).await.unwrap();
    assert_eq!(page.metadata.remaining_item_count, Some(1900));
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "2000 creates and lists took {elapsed:?}"
    );
}
