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
