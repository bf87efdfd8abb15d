//! Objects for the extender's tests: storage nodes, StorageClasses, claims and pods.
#![allow(dead_code)]

use hwameistor_api::*;
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    Pod, PodSpec, Volume, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

pub const GI: i64 = 1 << 30;
pub const MI: i64 = 1 << 20;

/// A Ready storage node with an HDD pool of `free` bytes (of 1 TiB).
pub fn storage_node(name: &str, free: i64) -> LocalStorageNode {
    storage_node_sized(name, 1 << 40, free)
}

/// A Ready storage node with an HDD pool of `free` bytes of `total`.
pub fn storage_node_sized(name: &str, total: i64, free: i64) -> LocalStorageNode {
    let mut n = LocalStorageNode::new(
        name,
        LocalStorageNodeSpec {
            hostname: name.into(),
            storage_ip: Some("10.9.0.1".into()),
        },
    );
    let pool = PoolClass::Hdd.pool_name().to_string();
    n.status = Some(LocalStorageNodeStatus {
        state: Some(NodeState::Ready),
        pools: BTreeMap::from([(
            pool.clone(),
            PoolStatus {
                name: pool,
                class: PoolClass::Hdd,
                total_capacity_bytes: total,
                used_capacity_bytes: total - free,
                free_capacity_bytes: free,
                extent_size_bytes: 4 * MI,
                volume_count: 0,
                disks: vec![],
                thin: None,
                thin_overprovision_percent: None,
            },
        )]),
        ..Default::default()
    });
    n
}

/// A HwameiStor StorageClass with `replicas` (ext4, so small volumes are not rounded up to
/// xfs's minimum).
pub fn storage_class(name: &str, replicas: u32) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        provisioner: CSI_DRIVER_NAME.into(),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        parameters: Some(BTreeMap::from([
            ("poolClass".to_string(), "HDD".to_string()),
            ("replicaNumber".to_string(), replicas.to_string()),
            ("csi.storage.k8s.io/fstype".to_string(), "ext4".to_string()),
        ])),
        ..Default::default()
    }
}

/// An unbound claim of `bytes` on `class`.
pub fn claim(ns: &str, name: &str, class: &str, bytes: i64) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-{ns}-{name}")),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(class.into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(bytes.to_string()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod using `claims`.
pub fn pod(ns: &str, name: &str, claims: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: Some(format!("uid-pod-{ns}-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            volumes: Some(
                claims
                    .iter()
                    .map(|c| Volume {
                        name: c.to_string(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: c.to_string(),
                            read_only: None,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates namespace `name` (a test's own) and has `cleanup` remove it.
pub async fn own_namespace(
    client: &kube::Client,
    cleanup: &hwameistor_testapi::Cleanup,
    name: &str,
) {
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &kube::api::PostParams::default(),
            &k8s_openapi::api::core::v1::Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    cleanup.namespace(name.to_string());
}

/// Serves `ext` on a loopback port (HTTPS with `tls`); the server stops when the returned
/// sender is dropped or sends `true`.
pub async fn serve_local(
    ext: std::sync::Arc<hwameistor_scheduler_plugin::extender::Extender>,
    tls: Option<std::sync::Arc<hwameistor_scheduler_plugin::server::TlsFiles>>,
    max_body: usize,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hwameistor_scheduler_plugin::server::serve(
        listener, ext, tls, max_body, rx,
    ));
    (addr, tx)
}

/// Sends raw HTTP/1.1 to `addr` and returns the status and body.
pub async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// POSTs `body` as JSON to `path` (one connection) and returns the status and body.
pub async fn post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).await
}

/// A raw-disk StorageClass (`disk.hwameistor.io`) of disks of `disk_type`.
pub fn disk_class(name: &str, disk_type: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        provisioner: hwameistor_csi::disk_controller::DISK_DRIVER_NAME.into(),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        parameters: Some(BTreeMap::from([(
            "diskType".to_string(),
            disk_type.to_string(),
        )])),
        ..Default::default()
    }
}

/// A free (Available, Active) LocalDisk of `node`, as its agent reports it.
pub fn free_disk(name: &str, node: &str, disk_type: DiskType, capacity: i64) -> LocalDisk {
    let mut d = LocalDisk::new(
        name,
        LocalDiskSpec {
            node_name: node.into(),
            reserved: false,
            claim_ref: None,
            volume_ref: None,
        },
    );
    d.status = Some(LocalDiskStatus {
        state: Some(DiskPresence::Active),
        phase: Some(DiskPhase::Available),
        device_path: Some(format!("/dev/{name}")),
        disk_type: Some(disk_type),
        capacity_bytes: Some(capacity),
        ..Default::default()
    });
    d
}

/// A storage node without pools (its disks serve disk volumes only).
pub fn poolless_node(name: &str) -> LocalStorageNode {
    let mut n = storage_node(name, 0);
    if let Some(st) = n.status.as_mut() {
        st.pools.clear();
    }
    n
}
