//! The extender's HTTP API as kube-scheduler calls it: request and response bodies shaped
//! as the upstream types serialize them, malformed and oversized bodies refused with clear
//! statuses, HTTPS with a certificate rotated under a running server.

mod common;

use common::*;
use hwameistor_scheduler_plugin::cache::Caches;
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use hwameistor_scheduler_plugin::server::TlsFiles;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NS: &str = "apps";

/// An extender over two storage nodes (a: 10 GiB free, b: 4 GiB), a plain and an HA
/// StorageClass and a few claims; served on loopback.
async fn started(max_body: usize) -> (SocketAddr, Arc<Extender>, tokio::sync::watch::Sender<bool>) {
    serve(base_caches(), max_body).await
}

/// The caches [`started`] serves.
fn base_caches() -> Arc<Caches> {
    let caches = Caches::new();
    for n in [storage_node("a", 10 * GI), storage_node("b", 4 * GI)] {
        caches.apply(n);
    }
    for c in [storage_class("local", 1), storage_class("local-ha", 2)] {
        caches.apply(c);
    }
    for c in [
        claim(NS, "data", "local", 3 * GI),
        claim(NS, "logs", "local", GI),
        claim(NS, "big", "local", 8 * GI),
        claim(NS, "ha", "local-ha", GI),
    ] {
        caches.apply(c);
    }
    caches
}

/// An extender over `caches`, served on loopback.
async fn serve(
    caches: Arc<Caches>,
    max_body: usize,
) -> (SocketAddr, Arc<Extender>, tokio::sync::watch::Sender<bool>) {
    caches.mark_ready();
    let ext = Arc::new(Extender::new(caches, Settings::default(), None));
    ext.set_ready();
    let (addr, tx) = serve_local(ext.clone(), None, max_body).await;
    (addr, ext, tx)
}

async fn post_json(addr: SocketAddr, path: &str, v: &Value) -> (u16, Value) {
    let (status, body) = post(addr, path, v.to_string().as_bytes()).await;
    let parsed = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, parsed)
}

fn args(pod: &k8s_openapi::api::core::v1::Pod, nodes: &[&str]) -> Value {
    json!({"pod": pod, "nodenames": nodes})
}

#[tokio::test]
async fn filter_gives_a_pod_with_new_volumes_the_node_with_room_and_holds_it() {
    let (addr, ext, _stop) = started(1 << 20).await;
    // 3 GiB + 1 GiB: a has room, b has 4 GiB free but both volumes round to extents and fit
    // too; a has more left, so a is chosen and b is told why not.
    let p = pod(NS, "web-0", &["data", "logs"]);
    let (status, v) = post_json(addr, "/filter", &args(&p, &["a", "b", "c"])).await;
    assert_eq!(status, 200);
    assert_eq!(v["nodenames"], json!(["a"]), "{v}");
    // b would do too but is not the one: left out; c is told why it can never be.
    let failed = &v["failedAndUnresolvableNodes"];
    assert!(failed.get("b").is_none(), "{v}");
    assert_eq!(
        failed["c"],
        "c runs no HwameiStor agent (no LocalStorageNode)"
    );
    assert!(v.get("failedNodes").is_none() && v.get("error").is_none() && v.get("nodes").is_none());
    let held = ext.reservations();
    assert_eq!(held.len(), 2);
    assert!(held
        .iter()
        .all(|r| r.node == "a" && r.pod_uid == "uid-pod-apps-web-0"));

    // An 8 GiB volume fits only a (b has 4): with a's room held for web-0 (4 GiB of 10),
    // 6 GiB are left there, so nowhere.
    let big = pod(NS, "big-0", &["big"]);
    let (_, v) = post_json(addr, "/filter", &args(&big, &["a", "b"])).await;
    assert_eq!(v["nodenames"], json!([]), "{v}");
    assert_eq!(
        v["failedAndUnresolvableNodes"]["a"],
        "a has 6Gi free in its HDD pool, the pod's new volumes there need 8Gi"
    );
    // web-0 filtered again (its node did not work out): its own hold does not count.
    let (_, v) = post_json(addr, "/filter", &args(&p, &["a"])).await;
    assert_eq!(v["nodenames"], json!(["a"]));
    assert_eq!(ext.reservations().len(), 2);
}

#[tokio::test]
async fn full_node_objects_are_answered_as_node_objects() {
    let (addr, _ext, _stop) = started(1 << 20).await;
    let p = pod(NS, "web-1", &["logs"]);
    let body = json!({
        "pod": p,
        "nodes": {"metadata": {}, "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}
    });
    let (status, v) = post_json(addr, "/filter", &body).await;
    assert_eq!(status, 200);
    assert!(v.get("nodenames").is_none(), "{v}");
    let names: Vec<&str> = v["nodes"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test]
async fn prioritize_scores_every_candidate_and_bind_needs_a_client() {
    let (addr, _ext, _stop) = started(1 << 20).await;
    let p = pod(NS, "web-2", &["logs"]);
    let (status, v) = post_json(addr, "/prioritize", &args(&p, &["a", "b", "c"])).await;
    assert_eq!(status, 200);
    let list = v.as_array().expect("a HostPriorityList");
    assert_eq!(list.len(), 3);
    let score = |h: &str| {
        list.iter()
            .find(|x| x["host"] == h)
            .and_then(|x| x["score"].as_i64())
            .expect("scored")
    };
    assert!(score("a") > score("b"), "{v}");
    assert_eq!(score("c"), 0);
    // A pod without HwameiStor volumes is everyone's.
    let plain = pod(NS, "plain", &[]);
    let (_, v) = post_json(addr, "/filter", &args(&plain, &["a", "x"])).await;
    assert_eq!(v["nodenames"], json!(["a", "x"]));
    // An HA claim: a first replica and a second node with room (b has 4 GiB).
    let ha = pod(NS, "db-0", &["ha"]);
    let (_, v) = post_json(addr, "/filter", &args(&ha, &["a", "b"])).await;
    assert_eq!(v["nodenames"], json!(["a"]), "{v}");
    // Bind, as the scheduler sends it.
    let (status, v) = post_json(
        addr,
        "/bind",
        &json!({"podName": "db-0", "podNamespace": NS, "podUID": "u", "node": "a"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"error": "this extender has no API client to bind with"})
    );
    // A pod whose claim does not exist can run nowhere, and every node says why.
    let lost = pod(NS, "lost", &["nosuch"]);
    let (_, v) = post_json(addr, "/filter", &args(&lost, &["a"])).await;
    assert_eq!(
        v["failedAndUnresolvableNodes"]["a"],
        "PersistentVolumeClaim apps/nosuch does not exist (yet)"
    );
}

#[tokio::test]
async fn malformed_oversized_and_misdirected_requests_get_clear_statuses() {
    let (addr, ext, _stop) = started(64 << 10).await;
    let (status, body) = post(addr, "/filter", b"{\"pod\": [").await;
    assert_eq!(status, 400);
    assert!(
        body.starts_with("request body is not valid JSON for this call"),
        "{body}"
    );
    let (status, body) = post(addr, "/bind", br#"{"podName": 7}"#).await;
    assert_eq!(status, 400, "{body}");
    // Declared too large: refused before reading.
    let big = vec![b' '; 65 << 10];
    let (status, body) = post(addr, "/filter", &big).await;
    assert_eq!(status, 413);
    assert_eq!(
        body.trim(),
        format!("request body larger than {} bytes", 64 << 10)
    );
    // Too large without a declared length (chunked): refused while reading.
    let mut chunked = b"POST /prioritize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..80 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024).as_bytes());
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw(addr, &chunked).await;
    assert_eq!(status, 413);
    // No pod: an answer with the error, as the scheduler reads it.
    let (status, v) = post_json(addr, "/filter", &json!({"nodenames": ["a"]})).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"error": "the request names no pod"}));
    let (status, _) = post(addr, "/prioritize", br#"{"nodenames": ["a"]}"#).await;
    assert_eq!(status, 400);
    let (status, _) = raw(
        addr,
        b"GET /filter HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    let (status, body) = raw(
        addr,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("POST /filter"));
    let (status, _) = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let (_, metrics) = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        metrics.contains("hwameistor_extender_bad_requests_total 5"),
        "{metrics}"
    );
    // Garbage that is not HTTP: the connection is dropped, the server lives on.
    let (status, _) = raw(addr, b"\x00\x01\x02 nonsense\r\n\r\n").await;
    assert_ne!(status, 200);
    let (status, _) = raw(
        addr,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(ext.is_ready());
}

#[tokio::test]
async fn before_the_caches_are_synced_filter_answers_an_error_and_readyz_says_so() {
    let caches = Caches::new();
    let ext = Arc::new(Extender::new(caches, Settings::default(), None));
    let (addr, _stop) = serve_local(ext, None, 1 << 20).await;
    let p = pod(NS, "early", &["data"]);
    let (_, v) = post_json(addr, "/filter", &args(&p, &["a"])).await;
    assert_eq!(
        v,
        json!({"error": "the HwameiStor extender's caches are not synced yet; retry"})
    );
    let (status, _) = raw(
        addr,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 503);
}

fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

/// The certificate a TLS client is served at `addr`, trusting `ca_pem`; `Err` when the
/// handshake fails.
async fn served_by(addr: SocketAddr, ca_pem: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("pem"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("extender.test").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    if String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out).to_string())
    }
}

#[tokio::test]
async fn https_serves_the_rotated_certificate_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (c1, k1) = self_signed("extender.test");
    std::fs::write(&cert, &c1).expect("cert");
    std::fs::write(&key, &k1).expect("key");
    let caches = Caches::new();
    let ext = Arc::new(Extender::new(caches, Settings::default(), None));
    let tls = Arc::new(TlsFiles::new(cert.clone(), key.clone()).expect("tls"));
    let (addr, _stop) = serve_local(ext, Some(tls), 1 << 20).await;
    served_by(addr, &c1).await.expect("the first certificate");
    // Rotated (a new key and certificate written, as a Secret update reaches the files).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (c2, k2) = self_signed("extender.test");
    std::fs::write(&key, &k2).expect("key");
    std::fs::write(&cert, &c2).expect("cert");
    served_by(addr, &c2).await.expect("the rotated certificate");
    assert!(served_by(addr, &c1).await.is_err(), "the old one is gone");
    // A half-written rotation (garbage) keeps the last good one.
    std::fs::write(&cert, "not a certificate").expect("garbage");
    served_by(addr, &c2).await.expect("still the rotated one");
}

/// Room the volume binder handed to a node is held again after a restart, from the claims
/// alone; the pod those claims belong to, filtered again, is not refused its own room.
#[tokio::test]
async fn held_room_is_rebuilt_from_claims_and_never_blocks_its_own_pod() {
    use hwameistor_scheduler_plugin::protocol::ExtenderArgs;
    let caches = Caches::new();
    caches.apply(storage_node("a", 4 * GI));
    caches.apply(storage_class("local", 1));
    for name in ["one", "two"] {
        let mut c = claim(NS, name, "local", 2 * GI);
        c.metadata.annotations = Some(
            [(
                hwameistor_scheduler_plugin::claims::SELECTED_NODE.to_string(),
                "a".to_string(),
            )]
            .into(),
        );
        caches.apply(c);
    }
    caches.apply(claim(NS, "three", "local", 2 * GI));
    caches.mark_ready();
    let ext = Extender::new(caches, Settings::default(), None);
    ext.set_ready();
    let filter = |p: k8s_openapi::api::core::v1::Pod| {
        ext.filter(&ExtenderArgs {
            pod: Some(p),
            nodenames: Some(vec!["a".into()]),
            nodes: None,
        })
    };
    // Both handed-over claims are held on a (all of its 4 GiB): a pod of another claim finds
    // no room...
    assert_eq!(ext.reservations().len(), 2);
    let r = filter(pod(NS, "late", &["three"]));
    assert_eq!(r.nodenames, Some(vec![]), "{r:?}");
    // ...while the pod of claim one, filtered again, is not refused its own room.
    let r = filter(pod(NS, "owner", &["one"]));
    assert_eq!(r.nodenames, Some(vec!["a".to_string()]), "{r:?}");
    let held = ext.reservations();
    assert_eq!(held.len(), 2, "one for each claim, none twice: {held:?}");
    assert!(held
        .iter()
        .any(|h| h.pvc == format!("{NS}/one") && h.pod_uid == "uid-pod-apps-owner"));
}

#[tokio::test]
async fn prioritize_puts_a_restored_or_cloned_claim_where_its_data_is() {
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, PersistentVolume, PersistentVolumeSpec,
        TypedLocalObjectReference,
    };
    let caches = base_caches();
    // A snapshot on b (less room than a) taken for VolumeSnapshot apps/nightly.
    let mut snap = hwameistor_api::LocalVolumeSnapshot::new(
        "snap-x",
        hwameistor_api::LocalVolumeSnapshotSpec {
            source_volume: "pvc-src".into(),
            node_name: "b".into(),
            pool_name: hwameistor_api::PoolClass::Hdd.pool_name().into(),
            source_capacity_bytes: GI,
            cow_capacity_bytes: None,
        },
    );
    snap.metadata.annotations = Some(
        [(
            hwameistor_api::snapshot::ANNOTATION_VOLUME_SNAPSHOT.to_string(),
            format!("{NS}/nightly"),
        )]
        .into(),
    );
    caches.apply(snap);
    let from = |name: &str, kind: &str, group: Option<&str>, source: &str| {
        let mut c = claim(NS, name, "local", GI);
        if let Some(spec) = c.spec.as_mut() {
            spec.data_source = Some(TypedLocalObjectReference {
                api_group: group.map(str::to_string),
                kind: kind.into(),
                name: source.into(),
            });
        }
        c
    };
    caches.apply(from(
        "restored",
        "VolumeSnapshot",
        Some("snapshot.storage.k8s.io"),
        "nightly",
    ));
    // A bound claim whose volume is on b, and a clone of it.
    let mut src = claim(NS, "src", "local", GI);
    if let Some(spec) = src.spec.as_mut() {
        spec.volume_name = Some("pv-src".into());
    }
    caches.apply(src);
    caches.apply(PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: Some("pv-src".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            csi: Some(CSIPersistentVolumeSource {
                driver: hwameistor_api::CSI_DRIVER_NAME.into(),
                volume_handle: "pvc-src".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut v = hwameistor_api::LocalVolume::new(
        "pvc-src",
        hwameistor_api::LocalVolumeSpec::single(hwameistor_api::PoolClass::Hdd.pool_name(), GI),
    );
    v.spec.config = Some(hwameistor_api::VolumeConfig {
        version: 1,
        required_capacity_bytes: GI,
        resource_id: -1,
        replicas: vec![hwameistor_api::ReplicaAssignment {
            id: 1,
            hostname: "b".into(),
            ..Default::default()
        }],
        initial: false,
    });
    caches.apply(v);
    caches.apply(from("cloned", "PersistentVolumeClaim", None, "src"));
    // A data source HwameiStor cannot restore from counts for nothing.
    caches.apply(from("other", "Foo", Some("example.com"), "x"));
    let (addr, _ext, _stop) = serve(caches, 1 << 20).await;
    let scores = |v: &Value| -> (i64, i64) {
        let list = v.as_array().expect("a HostPriorityList");
        let s = |h: &str| {
            list.iter()
                .find(|x| x["host"] == h)
                .and_then(|x| x["score"].as_i64())
                .expect("scored")
        };
        (s("a"), s("b"))
    };
    for claim in ["restored", "cloned"] {
        let p = pod(NS, &format!("app-{claim}"), &[claim]);
        let (status, v) = post_json(addr, "/prioritize", &args(&p, &["a", "b"])).await;
        assert_eq!(status, 200);
        let (a, b) = scores(&v);
        assert!(
            b > a,
            "{claim}: the data's node b scores above a with more room: {v}"
        );
    }
    let p = pod(NS, "app-other", &["other"]);
    let (_, v) = post_json(addr, "/prioritize", &args(&p, &["a", "b"])).await;
    let (a, b) = scores(&v);
    assert!(a > b, "room decides without a known data source: {v}");
}
