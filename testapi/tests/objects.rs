//! Object semantics through a real kube client: optimistic concurrency,
//! finalizers, garbage collection, namespaces, selectors, pagination,
//! patches, dry-run, immutable fields, error Status shapes, and TestCluster.
//! Every test holds on the in-process server and on a real cluster
//! (HWAMEISTOR_TEST_KUBECONFIG) unless it is marked otherwise.

mod common;

use std::collections::BTreeMap;

use common::*;
use either::Either;
use futures::StreamExt;
use hwameistor_testapi::{unique_name, TestCluster};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
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

fn rv(meta: &ObjectMeta) -> u64 {
    meta.resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn stale_resource_version_is_409_conflict() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &cm("c1", &[]))
        .await
        .unwrap();
    let rv1 = rv(&created.metadata);

    let mut first = created.clone();
    first.data = Some(BTreeMap::from([("k".into(), "first".into())]));
    let updated = api
        .replace("c1", &PostParams::default(), &first)
        .await
        .unwrap();
    assert!(
        rv(&updated.metadata) > rv1,
        "every write moves the revision"
    );

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

    // Without a resourceVersion the update of a ConfigMap is unconditional.
    stale.metadata.resource_version = None;
    let forced = api
        .replace("c1", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_eq!(forced.data.clone().unwrap()["k"], "second");

    // Lists carry a revision at least as new as every write before them
    // (other writers may have moved it on since, on a shared cluster).
    let list = api.list(&ListParams::default()).await.unwrap();
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv(&forced.metadata), "{list_rv}");
}

#[tokio::test]
async fn custom_resources_need_a_resource_version_to_be_replaced() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let created = ctx.create_lv(&api, "r1").await;
    let mut unconditional = created.clone();
    unconditional.metadata.resource_version = None;
    unconditional.data["spec"]["replicaNumber"] = json!(2);
    for result in [
        api.replace("r1", &PostParams::default(), &unconditional)
            .await,
        api.replace_status("r1", &PostParams::default(), &unconditional)
            .await,
    ] {
        let err = api_err(result);
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            err.message,
            format!(
                "localvolumes.{} \"r1\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ctx.group()
            )
        );
        assert_eq!(
            err.details.unwrap().causes[0].field,
            "metadata.resourceVersion"
        );
    }
    // With the version read, the same update goes through.
    let mut update = created.clone();
    update.data["spec"]["replicaNumber"] = json!(2);
    let replaced = api
        .replace("r1", &PostParams::default(), &update)
        .await
        .unwrap();
    assert_eq!(replaced.data["spec"]["replicaNumber"], 2);
}

#[tokio::test]
async fn create_conflicts_generate_name_and_missing_namespace() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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

    let nowhere = unique_name("nowhere");
    let missing: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &nowhere);
    let err = api_err(missing.create(&PostParams::default(), &cm("x", &[])).await);
    assert_eq!(err.code, 404);
    assert_eq!(err.message, format!("namespaces \"{nowhere}\" not found"));

    // default and kube-system exist from the start.
    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    for ns in ["default", "kube-system"] {
        let n = nss.get(ns).await.unwrap();
        assert_eq!(n.status.unwrap().phase.as_deref(), Some("Active"));
    }
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let mut obj = ctx.lv(
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
    assert_eq!(
        err.message,
        format!("localvolumes.{} \"f1\" not found", ctx.group())
    );
    assert_eq!(err.details.unwrap().kind, "localvolumes");

    // Without finalizers, delete removes at once and returns the object.
    api.create(
        &PostParams::default(),
        &ctx.lv(
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
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
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
    eventually("the held dependent marked for deletion", || async {
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    // A dependent with another live owner stays, without its reference to the
    // owner that is gone.
    eventually("the dangling owner reference removed", || async {
        let refs = cms
            .get("shared")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default();
        refs.len() == 1 && refs[0].uid == other.metadata.uid.clone().unwrap()
    })
    .await;
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
    eventually("the orphan released", || async {
        cms.get("orphan")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    eventually("the orphaning owner gone", || async {
        cms.get_opt("owner2").await.unwrap().is_none()
    })
    .await;
    assert!(cms.get_opt("orphan").await.unwrap().is_some());
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("owner", &[])).await.unwrap();
    let blocking = |name: &str, finalizer: bool| {
        let mut c = cm(name, &[]);
        let mut r = owner_ref(&owner.metadata, "ConfigMap");
        r.block_owner_deletion = Some(true);
        c.metadata.owner_references = Some(vec![r]);
        if finalizer {
            c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        }
        c
    };
    cms.create(&pp, &blocking("free", false)).await.unwrap();
    cms.create(&pp, &blocking("held", true)).await.unwrap();

    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    cms.delete("owner", &dp).await.unwrap();
    // The owner stays, deleting, until its blocking dependents are gone.
    eventually("the free dependent collected", || async {
        cms.get_opt("free").await.unwrap().is_none()
    })
    .await;
    eventually("the held dependent marked for deletion", || async {
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let waiting = cms.get("owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_string()][..])
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the owner gone after its dependents", || async {
        cms.get_opt("owner").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let ctx = start().await;
    let scratch = ctx.namespace().await;
    let elsewhere_ns = ctx.namespace().await;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &scratch);
    let pp = PostParams::default();
    cms.create(&pp, &cm("a", &[])).await.unwrap();
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&pp, &held).await.unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &elsewhere_ns);
    elsewhere.create(&pp, &cm("a", &[])).await.unwrap();

    let nss: Api<Namespace> = Api::all(ctx.client.clone());
    nss.delete(&scratch, &DeleteParams::default())
        .await
        .unwrap();
    let ns = nss.get(&scratch).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let err = api_err(cms.create(&pp, &cm("new", &[])).await);
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains("because it is being terminated"),
        "{}",
        err.message
    );
    eventually("the namespace's objects deleted", || async {
        cms.get_opt("a").await.unwrap().is_none()
            && cms
                .get("held")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_some()
    })
    .await;

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace gone once empty", || async {
        nss.get_opt(&scratch).await.unwrap().is_none()
    })
    .await;
    assert!(
        elsewhere.get_opt("a").await.unwrap().is_some(),
        "other namespaces untouched"
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let ctx = start().await;
    let first = ctx.settled_namespace().await;
    let second = ctx.settled_namespace().await;
    let pp = PostParams::default();
    // Every pod carries the test's label, so lists across all namespaces can
    // be narrowed to this test's pods on a shared cluster. The pods are bound
    // to nodes that do not exist and never run.
    let mk = |name: &str, node: &str, labels: &[(&str, &str)]| -> Pod {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("test".into(), ctx.id.clone());
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    };
    let one: Api<Pod> = Api::namespaced(ctx.client.clone(), &first);
    let two: Api<Pod> = Api::namespaced(ctx.client.clone(), &second);
    let node1 = format!("{}-node1", ctx.id);
    let node2 = format!("{}-node2", ctx.id);
    one.create(&pp, &mk("p1", &node1, &[("app", "a"), ("tier", "db")]))
        .await
        .unwrap();
    one.create(&pp, &mk("p2", &node2, &[("app", "b")]))
        .await
        .unwrap();
    one.create(&pp, &mk("p3", &node1, &[("tier", "web")]))
        .await
        .unwrap();
    two.create(&pp, &mk("p4", &node1, &[("app", "a")]))
        .await
        .unwrap();

    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(one.list(&q("app=a")).await.unwrap()), ["p1"]);
    assert_eq!(names(one.list(&q("app==a")).await.unwrap()), ["p1"]);
    assert_eq!(names(one.list(&q("app!=a")).await.unwrap()), ["p2", "p3"]);
    assert_eq!(
        names(one.list(&q("app in (a,b)")).await.unwrap()),
        ["p1", "p2"]
    );
    assert_eq!(
        names(one.list(&q("app notin (a)")).await.unwrap()),
        ["p2", "p3"]
    );
    assert_eq!(names(one.list(&q("tier")).await.unwrap()), ["p1", "p3"]);
    assert_eq!(names(one.list(&q("!app")).await.unwrap()), ["p3"]);
    assert_eq!(names(one.list(&q("app,tier=db")).await.unwrap()), ["p1"]);
    let bad = api_err(one.list(&q("app in (a")).await);
    assert_eq!(bad.code, 400);

    let f = |s: &str| ListParams::default().fields(s);
    assert_eq!(
        names(
            one.list(&f(&format!("spec.nodeName={node1}")))
                .await
                .unwrap()
        ),
        ["p1", "p3"]
    );
    assert_eq!(
        names(one.list(&f("metadata.name=p2")).await.unwrap()),
        ["p2"]
    );
    assert_eq!(
        names(
            one.list(&f(&format!("metadata.name!=p2,spec.nodeName=={node1}")))
                .await
                .unwrap()
        ),
        ["p1", "p3"]
    );

    // Across all namespaces (/api/v1/pods), narrowed to this test's pods.
    let all: Api<Pod> = Api::all(ctx.client.clone());
    let mine = format!("test={}", ctx.id);
    let mut got = names(all.list(&q(&mine)).await.unwrap());
    got.sort();
    assert_eq!(got, ["p1", "p2", "p3", "p4"]);
    let mut got = names(all.list(&q(&format!("{mine},app=a"))).await.unwrap());
    got.sort();
    assert_eq!(got, ["p1", "p4"]);
    assert_eq!(
        names(
            all.list(&q(&mine).fields(&format!("metadata.namespace={second}")))
                .await
                .unwrap()
        ),
        ["p4"]
    );

    // Custom resources: metadata.name and the CRD's selectableFields only.
    let lvs = ctx.local_volumes().await;
    let spec = |pool: &str, node: &str| json!({"poolName": pool, "requiredCapacityBytes": 1, "nodeName": node});
    lvs.create(&pp, &ctx.lv("l1", spec("LocalStorage_PoolHDD", "n1")))
        .await
        .unwrap();
    lvs.create(&pp, &ctx.lv("l2", spec("LocalStorage_PoolSSD", "n2")))
        .await
        .unwrap();
    lvs.create(&pp, &ctx.lv("l3", spec("LocalStorage_PoolSSD", "n1")))
        .await
        .unwrap();
    let lv_names = |sel: String| {
        let lvs = lvs.clone();
        async move {
            lvs.list(&f(&sel))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|o| o.metadata.name.unwrap())
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(
        lv_names("spec.poolName=LocalStorage_PoolSSD".into()).await,
        ["l2", "l3"]
    );
    assert_eq!(lv_names("spec.nodeName=n1".into()).await, ["l1", "l3"]);
    assert_eq!(lv_names("spec.nodeName==n2".into()).await, ["l2"]);
    assert_eq!(lv_names("spec.nodeName!=n1".into()).await, ["l2"]);
    assert_eq!(
        lv_names("spec.nodeName=n1,spec.poolName=LocalStorage_PoolSSD".into()).await,
        ["l3"]
    );
    assert_eq!(lv_names("metadata.name=l2".into()).await, ["l2"]);
    let err = api_err(lvs.list(&f("spec.replicaNumber=1")).await);
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert_eq!(err.message, "field label not supported: spec.replicaNumber");
    // A cluster-scoped resource has no namespace field label.
    let err = api_err(lvs.list(&f("metadata.namespace=x")).await);
    assert_eq!(err.code, 400);
    assert_eq!(err.message, "field label not supported: metadata.namespace");
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let ctx = start().await;
    // A real cluster adds its own ConfigMap (kube-root-ca.crt) to every
    // namespace: the pages count this test's objects among what is there.
    let ns = ctx.settled_namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let before = api.list(&ListParams::default()).await.unwrap().items.len();
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
    let total = before + 25;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        let n = page.items.len();
        seen.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => {
                assert_eq!(n, 10);
                assert_eq!(
                    page.metadata.remaining_item_count,
                    Some((total - seen.len()) as i64)
                );
                token = Some(c);
            }
            None => break,
        }
    }
    assert_eq!(pages, total.div_ceil(10));
    let mine: Vec<String> = seen.into_iter().filter(|n| n.starts_with("cm-")).collect();
    let want: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(mine, want);

    // Pagination combines with selectors; a filtered list cannot count what
    // remains, so it says nothing about it.
    let page = api
        .list(&ListParams::default().labels("even=y").limit(5))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);
    assert!(page.metadata.continue_.is_some_and(|c| !c.is_empty()));
    assert_eq!(page.metadata.remaining_item_count, None);
    let bad = api_err(
        api.list(&ListParams::default().limit(5).continue_token("garbage"))
            .await,
    );
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn merge_json_strategic_and_apply_patches() {
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let pp = PatchParams::default();
    api.create(&PostParams::default(), &ctx.lv("m1", json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5, "labels": {"a": "1", "b": "2"}})))
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
    let path = format!("/apis/{}/v1alpha1/localvolumes/m1", ctx.group());
    let ops = json!([
        {"op": "test", "path": "/spec/replicaNumber", "value": 2},
        {"op": "replace", "path": "/spec/replicaNumber", "value": 3},
        {"op": "add", "path": "/spec/labels/d", "value": "4"},
        {"op": "remove", "path": "/spec/labels/b"}
    ]);
    let o = raw_patch(&ctx.client, &path, "application/json-patch+json", &ops)
        .await
        .unwrap();
    assert_eq!(o["spec"]["replicaNumber"], 3);
    assert_eq!(o["spec"]["labels"], json!({"c": "3", "d": "4"}));
    let failing = json!([
        {"op": "test", "path": "/spec/replicaNumber", "value": 1},
        {"op": "replace", "path": "/spec/replicaNumber", "value": 4}
    ]);
    let err = api_err(raw_patch(&ctx.client, &path, "application/json-patch+json", &failing).await);
    assert_eq!(err.code, 422);
    assert_eq!(
        api.get("m1").await.unwrap().data["spec"]["replicaNumber"],
        3,
        "failed patch changes nothing"
    );
    let err = api_err(
        raw_patch(
            &ctx.client,
            &path,
            "application/json-patch+json",
            &json!({"op": "add"}),
        )
        .await,
    );
    assert_eq!(err.code, 400);

    // Custom resources have no patch strategies: a strategic merge patch is
    // refused for its media type.
    let err = api_err(
        api.patch(
            "m1",
            &pp,
            &Patch::Strategic(json!({"spec": {"replicaNumber": 1}})),
        )
        .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    assert!(
        err.message.starts_with("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{}",
        err.message
    );
    assert_eq!(
        api.get("m1").await.unwrap().data["spec"]["replicaNumber"],
        3
    );

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

    // Server-side apply: creates when absent; another manager's apply merges
    // into what the first one set.
    let apply_body = |spec: serde_json::Value| {
        Patch::Apply(
            json!({"apiVersion": format!("{}/v1alpha1", ctx.group()), "kind": "LocalVolume",
            "metadata": {"name": "m2"}, "spec": spec}),
        )
    };
    let applied = api
        .patch(
            "m2",
            &PatchParams::apply("test-manager"),
            &apply_body(json!({"poolName": "LocalStorage_PoolSSD", "requiredCapacityBytes": 7})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["replicaNumber"], 1);
    let applied = api
        .patch(
            "m2",
            &PatchParams::apply("other-manager").force(),
            &apply_body(json!({"replicaNumber": 2})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["replicaNumber"], 2);
    assert_eq!(applied.data["spec"]["poolName"], "LocalStorage_PoolSSD");
    // Apply without a field manager is 422.
    let req = http::Request::patch(format!("/apis/{}/v1alpha1/localvolumes/m2", ctx.group()))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(
            format!(
                "apiVersion: {}/v1alpha1\nkind: LocalVolume\nmetadata:\n  name: m2\n",
                ctx.group()
            )
            .into_bytes(),
        )
        .unwrap();
    let err = api_err(ctx.client.request::<serde_json::Value>(req).await);
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("fieldManager: Required value"),
        "{}",
        err.message
    );
    // An unknown patch type is 415.
    let req = http::Request::patch(format!("/apis/{}/v1alpha1/localvolumes/m2", ctx.group()))
        .header("Content-Type", "application/x-made-up")
        .body(b"{}".to_vec())
        .unwrap();
    let err = api_err(ctx.client.request::<serde_json::Value>(req).await);
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    // Strategic merge patch on a built-in.
    let ns = ctx.settled_namespace().await;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
    // Strategic merge patch merges keyed lists on built-ins (pod conditions
    // by type). No scheduler by that name exists, so nothing else writes the
    // pod's conditions on a real cluster; the finalizers are removed by the
    // test's cleanup there.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "finalizers": ["a/b"]},
        "spec": {"schedulerName": "hwameistor-tests-no-scheduler", "containers": [{"name": "c", "image": "i"}]}}))
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
    pods.patch(
        "p",
        &pp,
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();

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
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let o = api
        .create(
            &dry,
            &ctx.lv(
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
            &ctx.lv("d1", json!({"poolName": "X", "requiredCapacityBytes": 5})),
        )
        .await,
    );
    assert_eq!(err.code, 422);

    let stored = ctx.create_lv(&api, "d2").await;
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
    let after = api.get("d2").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, stored.metadata.resource_version,
        "dry runs write nothing"
    );
}

#[tokio::test]
async fn immutable_fields_of_built_ins_are_refused_on_update() {
    let ctx = start().await;
    let pp = PostParams::default();
    let patch = PatchParams::default();

    // CSIDriver: attachRequired and volumeLifecycleModes are fixed at creation
    // (the real server's error path reads "attachedRequired").
    let drivers: Api<CSIDriver> = Api::all(ctx.client.clone());
    let driver = format!("{}.csi.hwameistor.io", ctx.id);
    ctx.cleanup
        .object(format!("/apis/storage.k8s.io/v1/csidrivers/{driver}"));
    let created = drivers
        .create(
            &pp,
            &serde_json::from_value(
                json!({"metadata": {"name": driver}, "spec": {"podInfoOnMount": false}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        created.spec.attach_required,
        Some(true),
        "attachRequired defaults to true"
    );
    // Naming a default is no change; podInfoOnMount may change.
    drivers
        .patch(
            &driver,
            &patch,
            &Patch::Merge(json!({"spec": {"attachRequired": true, "podInfoOnMount": true}})),
        )
        .await
        .unwrap();
    let err = api_err(
        drivers
            .patch(
                &driver,
                &patch,
                &Patch::Merge(json!({"spec": {"attachRequired": false}})),
            )
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        format!("CSIDriver.storage.k8s.io \"{driver}\" is invalid: spec.attachedRequired: Invalid value: false: field is immutable")
    );
    let err = api_err(
        drivers
            .patch(
                &driver,
                &patch,
                &Patch::Merge(json!({"spec": {"volumeLifecycleModes": ["Ephemeral"]}})),
            )
            .await,
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.details.unwrap().causes[0].field,
        "spec.volumeLifecycleModes"
    );

    // StorageClass: provisioner, parameters, reclaimPolicy, volumeBindingMode.
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let class = format!("{}-class", ctx.id);
    ctx.cleanup
        .object(format!("/apis/storage.k8s.io/v1/storageclasses/{class}"));
    classes
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": class},
                "provisioner": "lvm.hwameistor.io", "parameters": {"poolClass": "HDD"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    classes
        .patch(
            &class,
            &patch,
            &Patch::Merge(json!({"allowVolumeExpansion": true, "reclaimPolicy": "Delete"})),
        )
        .await
        .expect("allowVolumeExpansion may change; Delete is the default");
    for (change, field, message) in [
        (
            json!({"parameters": {"poolClass": "SSD"}}),
            "parameters",
            "parameters: Forbidden: updates to parameters are forbidden.",
        ),
        (
            json!({"provisioner": "other.example.com"}),
            "provisioner",
            "provisioner: Forbidden: updates to provisioner are forbidden.",
        ),
        (
            json!({"reclaimPolicy": "Retain"}),
            "reclaimPolicy",
            "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
        ),
        (
            json!({"volumeBindingMode": "WaitForFirstConsumer"}),
            "volumeBindingMode",
            // How the value is printed varies between Kubernetes versions.
            "volumeBindingMode: Invalid value: ",
        ),
    ] {
        let err = api_err(classes.patch(&class, &patch, &Patch::Merge(change)).await);
        assert_eq!(err.code, 422, "{field}");
        assert_eq!(err.details.unwrap().causes[0].field, field);
        let prefix = format!("StorageClass.storage.k8s.io \"{class}\" is invalid: ");
        if message.ends_with(": ") {
            assert!(
                err.message.starts_with(&format!("{prefix}{message}"))
                    && err.message.ends_with("field is immutable"),
                "{}",
                err.message
            );
        } else {
            assert_eq!(err.message, format!("{prefix}{message}"));
        }
    }

    // Workloads: the selector of Deployments and DaemonSets; a StatefulSet's
    // spec beyond replicas, template, update strategy and a few more.
    let ns = ctx.namespace().await;
    let template = |app: &str| {
        json!({"metadata": {"labels": {"app": app, "v": "1"}},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    let workload = |app: &str| {
        json!({"metadata": {"name": app},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": app}}, "template": template(app)}})
    };
    // The new selector still matches the template's labels, so immutability is
    // the only objection a real server has.
    let selector_change = json!({"spec": {"selector": {"matchLabels": {"v": "1"}}}});
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    deployments
        .create(&pp, &serde_json::from_value(workload("d")).unwrap())
        .await
        .unwrap();
    deployments
        .patch(
            "d",
            &patch,
            &Patch::Merge(json!({"spec": {"replicas": 0, "minReadySeconds": 1}})),
        )
        .await
        .unwrap();
    let err = api_err(
        deployments
            .patch("d", &patch, &Patch::Merge(selector_change.clone()))
            .await,
    );
    assert_eq!(err.code, 422);
    let cause = &err.details.unwrap().causes[0];
    assert_eq!(cause.field, "spec.selector");
    assert!(
        cause.message.ends_with("field is immutable"),
        "{}",
        cause.message
    );

    let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut ds = workload("ds");
    ds["spec"].as_object_mut().unwrap().remove("replicas");
    sets.create(&pp, &serde_json::from_value(ds).unwrap())
        .await
        .unwrap();
    let err = api_err(
        sets.patch("ds", &patch, &Patch::Merge(selector_change.clone()))
            .await,
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.details.unwrap().causes[0].field, "spec.selector");

    let stateful: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut sts = workload("sts");
    sts["spec"]["serviceName"] = json!("sts");
    stateful
        .create(&pp, &serde_json::from_value(sts).unwrap())
        .await
        .unwrap();
    stateful
        .patch(
            "sts",
            &patch,
            &Patch::Merge(json!({"spec": {"replicas": 0, "minReadySeconds": 2}})),
        )
        .await
        .unwrap();
    let err = api_err(
        stateful
            .patch(
                "sts",
                &patch,
                &Patch::Merge(json!({"spec": {"serviceName": "other"}})),
            )
            .await,
    );
    assert_eq!(err.code, 422);
    let cause = &err.details.unwrap().causes[0];
    assert_eq!(cause.field, "spec");
    assert!(
        cause.message.starts_with("Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy'"),
        "{}",
        cause.message
    );
}

#[tokio::test]
async fn errors_are_status_objects_with_http_codes() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    // 401 with a token the server does not know (the cluster's own TLS
    // settings, but neither its token nor its client certificate).
    let kc = match &ctx.cluster {
        TestCluster::Real { kubeconfig } => kube::config::Kubeconfig::read_from(kubeconfig),
        TestCluster::Local(server) => {
            kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml("127.0.0.1"))
        }
    }
    .unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info = kube::config::AuthInfo {
        token: Some("wrong-token".to_string().into()),
        ..Default::default()
    };
    let bad_client = Client::try_from(cfg).unwrap();
    let nss: Api<Namespace> = Api::all(bad_client);
    let err = api_err(nss.list(&ListParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));

    // 400 for an undecodable body.
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/configmaps"))
        .header("Content-Type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let err = api_err(ctx.client.request::<serde_json::Value>(req).await);
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));

    // 404 for an unknown resource path and a missing object.
    let req = http::Request::get(format!("/apis/{}/v1/things", ctx.group()))
        .body(vec![])
        .unwrap();
    assert_eq!(
        api_err(ctx.client.request::<serde_json::Value>(req).await).code,
        404
    );
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let err = api_err(cms.get("missing").await);
    assert_eq!(err.message, "configmaps \"missing\" not found");
    assert_eq!(
        err.status,
        Some(kube::core::response::StatusSummary::Failure)
    );

    // 405 for a verb the path does not take.
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/configmaps/x"))
        .header("Content-Type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(
        api_err(ctx.client.request::<serde_json::Value>(req).await).code,
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
    let req = http::Request::get(format!("/api/v1/namespaces/{ns}/configmaps/missing"))
        .body(vec![])
        .unwrap();
    let resp = ctx.client.send(req.map(Into::into)).await.unwrap();
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
#[cfg_attr(
    real_cluster,
    ignore = "checks the kubeconfig of the in-process server TestCluster starts without HWAMEISTOR_TEST_KUBECONFIG"
)]
async fn test_cluster_local_and_kubeconfig_path() {
    let cluster = TestCluster::start().await.unwrap();
    assert!(!cluster.is_real());
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
    assert!(
        !cluster.cleanup().is_active(),
        "nothing to clean up locally"
    );

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
    assert!(real.cleanup().is_active());
    let api: Api<Namespace> = Api::all(real.client().await.unwrap());
    assert!(api.get("kube-system").await.is_ok());
    // Its kubeconfig text reaches the same cluster, with the same credentials.
    let text = real.kubeconfig_yaml("127.0.0.1").unwrap();
    assert!(text.contains(&format!("token: {}", cluster.local().unwrap().token())));
    let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let api: Api<Namespace> = Api::all(Client::try_from(cfg).unwrap());
    assert!(api.get("kube-public").await.is_ok());
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "measures the in-process server's speed with 2000 objects"
)]
async fn thousands_of_objects_stay_fast() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
