//! The admission webhook through its HTTP endpoint: AdmissionReview in, AdmissionReview out,
//! as the API server sends and reads them.

mod common;

use base64::Engine;
use common::*;
use hwameistor_api::*;
use hwameistor_scheduler_plugin::cache::Caches;
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

async fn started() -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let caches = Caches::new();
    caches.apply(storage_node("a", 10 * GI));
    caches.apply(storage_class("local", 1));
    caches.apply(claim("apps", "data", "local", GI));
    caches.apply(claim("apps", "other", "not-ours", GI));
    let mut v = LocalVolume::new(
        "pvc-1",
        LocalVolumeSpec {
            pool_name: PoolClass::Hdd.pool_name().into(),
            volume_kind: Default::default(),
            required_capacity_bytes: 2 * GI,
            replica_number: 1,
            convertible: false,
            accessibility: Accessibility {
                nodes: vec!["a".into()],
            },
            pvc_namespace: None,
            pvc_name: None,
            fs_type: None,
            config: Some(VolumeConfig {
                version: 1,
                required_capacity_bytes: 2 * GI,
                resource_id: -1,
                replicas: vec![ReplicaAssignment {
                    id: 1,
                    hostname: "a".into(),
                    ..Default::default()
                }],
                initial: false,
            }),
            split_brain_resolution: None,
            operation: None,
            thin: false,
            data_source: None,
        },
    );
    v.metadata.uid = Some("v-uid".into());
    caches.apply(v);
    caches.mark_ready();
    let ext = Arc::new(Extender::new(caches, Settings::default(), None));
    ext.set_ready();
    serve_local(ext, None, 1 << 20).await
}

async fn post_value(addr: SocketAddr, path: &str, body: &Value) -> (u16, String) {
    post(addr, path, body.to_string().as_bytes()).await
}

fn review(
    kind: (&str, &str, &str),
    op: &str,
    ns: Option<&str>,
    object: Value,
    old: Value,
) -> Value {
    let (group, version, k) = kind;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "kind": {"group": group, "version": version, "kind": k},
            "resource": {"group": group, "version": version, "resource": format!("{}s", k.to_lowercase())},
            "name": object["metadata"]["name"],
            "namespace": ns,
            "operation": op,
            "userInfo": {"username": "tester"},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

async fn answer(addr: SocketAddr, path: &str, body: Value) -> Value {
    let (status, text) = post_value(addr, path, &body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "req-1", "the uid comes back");
    v["response"].clone()
}

fn pod_json(ns: &str, claims: &[&str], scheduler: Option<&str>) -> Value {
    let mut p = serde_json::to_value(pod(ns, "web-0", claims)).expect("pod");
    if let Some(s) = scheduler {
        p["spec"]["schedulerName"] = json!(s);
    }
    p
}

#[tokio::test]
async fn pods_with_hwameistor_volumes_get_the_scheduler_and_others_are_untouched() {
    let (addr, _stop) = started().await;
    let r = answer(
        addr,
        "/mutate-pods",
        review(
            ("", "v1", "Pod"),
            "CREATE",
            Some("apps"),
            pod_json("apps", &["data"], Some("default-scheduler")),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().expect("patch"))
        .expect("base64");
    let patch: Value = serde_json::from_slice(&patch).expect("json patch");
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/schedulerName", "value": "hwameistor-scheduler"}])
    );
    // Another provisioner's claim, no volumes, kube-system, or already ours: no patch.
    for (ns, claims, sched) in [
        ("apps", vec!["other"], None),
        ("apps", vec![], None),
        ("kube-system", vec!["data"], None),
        ("apps", vec!["data"], Some("hwameistor-scheduler")),
    ] {
        let r = answer(
            addr,
            "/mutate-pods",
            review(
                ("", "v1", "Pod"),
                "CREATE",
                Some(ns),
                pod_json(ns, &claims, sched),
                Value::Null,
            ),
        )
        .await;
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none(), "{ns} {claims:?}: {r}");
    }
    // A generic ephemeral volume of a HwameiStor class (its claim does not exist yet).
    let mut p = pod_json("apps", &[], None);
    p["spec"]["volumes"] = json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "storageClassName": "local", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}}}}]);
    let r = answer(
        addr,
        "/mutate-pods",
        review(("", "v1", "Pod"), "CREATE", Some("apps"), p, Value::Null),
    )
    .await;
    assert!(r.get("patch").is_some(), "{r}");
}

fn volume_json(replicas: i64, convertible: bool, bytes: i64) -> Value {
    json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": "v"},
        "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": bytes,
                 "replicaNumber": replicas, "convertible": convertible}})
}

#[tokio::test]
async fn hwameistor_resources_get_cross_field_checks_with_what_to_do() {
    let (addr, _stop) = started().await;
    let lv = ("hwameistor.io", "v1alpha1", "LocalVolume");
    let denied = |r: &Value| {
        assert_eq!(r["allowed"], false, "{r}");
        r["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let r = answer(
        addr,
        "/validate",
        review(lv, "CREATE", None, volume_json(2, true, GI), Value::Null),
    )
    .await;
    assert!(denied(&r).contains("drop convertible"), "{r}");
    let r = answer(
        addr,
        "/validate",
        review(lv, "CREATE", None, volume_json(1, true, GI), Value::Null),
    )
    .await;
    assert_eq!(r["allowed"], true);
    let r = answer(
        addr,
        "/validate",
        review(
            lv,
            "UPDATE",
            None,
            volume_json(1, false, GI),
            volume_json(1, false, 2 * GI),
        ),
    )
    .await;
    assert!(denied(&r).starts_with("volumes never shrink"), "{r}");
    // Thin volumes keep one replica, and a volume stays thin or thick.
    let thin = |replicas: i64, convertible: bool| {
        let mut v = volume_json(replicas, convertible, GI);
        v["spec"]["thin"] = json!(true);
        v
    };
    for (replicas, convertible) in [(2, false), (1, true)] {
        let r = answer(
            addr,
            "/validate",
            review(lv, "CREATE", None, thin(replicas, convertible), Value::Null),
        )
        .await;
        assert!(denied(&r).contains("thin volumes keep one replica"), "{r}");
    }
    let r = answer(
        addr,
        "/validate",
        review(lv, "CREATE", None, thin(1, false), Value::Null),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    let r = answer(
        addr,
        "/validate",
        review(
            lv,
            "UPDATE",
            None,
            volume_json(1, false, GI),
            thin(1, false),
        ),
    )
    .await;
    assert!(denied(&r).starts_with("a volume stays thin"), "{r}");
    // A restored volume keeps one replica and its dataSource.
    let restored = |replicas: i64, snapshot: &str| {
        let mut v = volume_json(replicas, false, GI);
        v["spec"]["dataSource"] = json!({"snapshot": snapshot, "snapshotUid": "u", "node": "n1",
            "poolName": "LocalStorage_PoolHDD", "bytes": GI});
        v
    };
    let r = answer(
        addr,
        "/validate",
        review(lv, "CREATE", None, restored(2, "s1"), Value::Null),
    )
    .await;
    assert!(
        denied(&r).contains("restore into a one-replica convertible volume"),
        "{r}"
    );
    let r = answer(
        addr,
        "/validate",
        review(lv, "UPDATE", None, restored(1, "s2"), restored(1, "s1")),
    )
    .await;
    assert!(
        denied(&r).starts_with("a volume's dataSource is fixed"),
        "{r}"
    );
    let r = answer(
        addr,
        "/validate",
        review(lv, "UPDATE", None, restored(1, "s1"), restored(1, "s1")),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");

    let mig = |volume: &str, from: &str, to: Value| {
        json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeMigrate", "metadata": {"name": "m"},
            "spec": {"volumeName": volume, "sourceNode": from, "targetNodes": to}})
    };
    let op = ("hwameistor.io", "v1alpha1", "LocalVolumeMigrate");
    let r = answer(
        addr,
        "/validate",
        review(op, "CREATE", None, mig("nope", "a", json!([])), Value::Null),
    )
    .await;
    assert!(denied(&r).contains("there is no LocalVolume nope"), "{r}");
    let r = answer(
        addr,
        "/validate",
        review(
            op,
            "CREATE",
            None,
            mig("pvc-1", "b", json!([])),
            Value::Null,
        ),
    )
    .await;
    assert!(
        denied(&r).contains("its replicas are on a: set sourceNode"),
        "{r}"
    );
    let r = answer(
        addr,
        "/validate",
        review(
            op,
            "CREATE",
            None,
            mig("pvc-1", "a", json!(["a"])),
            Value::Null,
        ),
    )
    .await;
    assert!(denied(&r).contains("includes the source node"), "{r}");
    let r = answer(
        addr,
        "/validate",
        review(
            op,
            "CREATE",
            None,
            mig("pvc-1", "a", json!(["b"])),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(r["allowed"], true);

    let exp = json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeExpand", "metadata": {"name": "e"},
        "spec": {"volumeName": "pvc-1", "requiredCapacityBytes": GI}});
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalVolumeExpand"),
            "CREATE",
            None,
            exp,
            Value::Null,
        ),
    )
    .await;
    assert!(denied(&r).contains("never shrink"), "{r}");

    let conv = json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeConvert", "metadata": {"name": "c"},
        "spec": {"volumeName": "pvc-1", "replicaNumber": 2, "targetNode": "a"}});
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalVolumeConvert"),
            "CREATE",
            None,
            conv,
            Value::Null,
        ),
    )
    .await;
    assert!(
        denied(&r).contains("holds the volume's replica already"),
        "{r}"
    );

    // A claim on a node without an agent: allowed, with a warning the client shows.
    let ldc = json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalDiskClaim", "metadata": {"name": "c"},
        "spec": {"nodeName": "ghost", "description": {"localDiskNames": ["d1"]}}});
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalDiskClaim"),
            "CREATE",
            None,
            ldc,
            Value::Null,
        ),
    )
    .await;
    assert_eq!(r["allowed"], true);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("ghost runs no HwameiStor agent"),
        "{r}"
    );
    let dup = json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalDiskClaim", "metadata": {"name": "c"},
        "spec": {"nodeName": "a", "description": {"localDiskNames": ["d1", "d1"]}}});
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalDiskClaim"),
            "CREATE",
            None,
            dup,
            Value::Null,
        ),
    )
    .await;
    assert!(denied(&r).contains("names d1 twice"), "{r}");

    // A raw-disk volume: a limit below the size is refused; node, type and size are fixed.
    let ldv = |max: i64, node: &str| {
        json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalDiskVolume", "metadata": {"name": "v"},
            "spec": {"nodeName": node, "diskType": "HDD", "requiredCapacityBytes": 10_i64 << 30, "maxCapacityBytes": max}})
    };
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalDiskVolume"),
            "CREATE",
            None,
            ldv(5 << 30, "a"),
            Value::Null,
        ),
    )
    .await;
    assert!(
        denied(&r).contains("maxCapacityBytes 5Gi is below requiredCapacityBytes 10Gi"),
        "{r}"
    );
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalDiskVolume"),
            "CREATE",
            None,
            ldv(20 << 30, "ghost"),
            Value::Null,
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("ghost runs no HwameiStor agent"),
        "{r}"
    );
    let r = answer(
        addr,
        "/validate",
        review(
            ("hwameistor.io", "v1alpha1", "LocalDiskVolume"),
            "UPDATE",
            None,
            ldv(20 << 30, "b"),
            ldv(20 << 30, "a"),
        ),
    )
    .await;
    assert!(denied(&r).contains("fixed once created"), "{r}");
}

#[tokio::test]
async fn an_unreadable_review_is_refused_clearly() {
    let (addr, _stop) = started().await;
    let (status, text) = post_value(addr, "/validate", &json!({"request": 7})).await;
    assert_eq!(status, 400, "{text}");
    // A review without a request: answered as invalid.
    let (status, text) = post_value(
        addr,
        "/validate",
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["response"]["allowed"], false);
}
