//! CSI snapshots end to end in the middle layer: the CSI controller service (CreateSnapshot,
//! ListSnapshots, DeleteSnapshot, DeleteVolume) against the in-process API server, and the
//! real node agent over a stateful fake LVM taking, reporting and removing the snapshots.

mod fake_node;

use fake_node::*;
use hwameistor_api::*;
use hwameistor_csi::controller::{ControllerService, Timeouts};
use hwameistor_csi::csi::controller_server::Controller;
use hwameistor_csi::csi::*;
use hwameistor_testkit::OpKind;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Request};

/// A volume placed on `node` (one replica, made by the node's agent).
async fn placed_volume(node: &FakeNode, bytes: i64, thin: bool) -> String {
    let name = unique("data");
    let mut v = LocalVolume::new(
        &name,
        LocalVolumeSpec {
            thin,
            ..LocalVolumeSpec::single(HDD, bytes)
        },
    );
    v.spec.config = Some(VolumeConfig {
        version: 1,
        required_capacity_bytes: bytes,
        resource_id: -1,
        replicas: vec![ReplicaAssignment {
            id: 1,
            hostname: node.name.clone(),
            ..Default::default()
        }],
        ..Default::default()
    });
    Api::<LocalVolume>::all(node.client.clone())
        .create(&PostParams::default(), &v)
        .await
        .expect("volume");
    let r = if thin {
        node.thin_replica(&name, HDD, bytes).await
    } else {
        node.replica(&name, HDD, bytes).await
    };
    node.wait_ready(&r, bytes).await;
    name
}

/// Removes the test's LocalVolumes (no controller runs here to do it).
async fn remove_volumes(client: &kube::Client, names: &[&str]) {
    let api = Api::<LocalVolume>::all(client.clone());
    for n in names {
        let _ = api.delete(n, &Default::default()).await;
    }
}

fn service(node: &FakeNode) -> ControllerService {
    let t = Duration::from_secs(20);
    ControllerService::new(
        node.client.clone(),
        Timeouts {
            create: t,
            delete: t,
            expand: t,
        },
    )
}

fn create(name: &str, volume: &str, params: &[(&str, &str)]) -> Request<CreateSnapshotRequest> {
    Request::new(CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: volume.into(),
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    })
}

fn list(volume: &str, max: i32, token: &str) -> Request<ListSnapshotsRequest> {
    Request::new(ListSnapshotsRequest {
        source_volume_id: volume.into(),
        max_entries: max,
        starting_token: token.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn snapshots_are_created_listed_in_pages_block_their_volume_and_deleted() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = placed_volume(&node, 40 * MI, false).await;
    let csi = service(&node);

    // The external-snapshotter's names start with "snapshot", which LVM reserves.
    let csi_name = format!("snapshot-{}", unique("u"));
    // The sidecar's --extra-create-metadata parameters name the VolumeSnapshot.
    let params = [
        ("cowSize", "50%"),
        ("csi.storage.k8s.io/volumesnapshot/name", "nightly"),
        ("csi.storage.k8s.io/volumesnapshot/namespace", "apps"),
    ];
    let first = csi
        .create_snapshot(create(&csi_name, &volume, &params))
        .await
        .expect("create")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert!(first.ready_to_use);
    assert_eq!(
        (first.size_bytes, first.source_volume_id.as_str()),
        (40 * MI, volume.as_str())
    );
    assert!(first.creation_time.is_some());
    assert_ne!(first.snapshot_id, csi_name, "mapped to a name LVM accepts");
    let lvs = Api::<LocalVolumeSnapshot>::all(client.clone())
        .get(&first.snapshot_id)
        .await
        .expect("LocalVolumeSnapshot");
    // Half of what never overflows: the volume and about 1/128 of it, and 4 MiB.
    assert_eq!(
        lvs.spec.cow_capacity_bytes,
        Some((40 * MI + 40 * MI / 128 + 4 * MI + 1) / 2)
    );
    assert_eq!(lvs.spec.node_name, node.name);
    assert_eq!(
        lvs.annotations()
            .get(hwameistor_api::snapshot::ANNOTATION_VOLUME_SNAPSHOT)
            .map(String::as_str),
        Some("apps/nightly"),
        "the VolumeSnapshot is recorded for the scheduler extender"
    );
    // The same call again: the same snapshot, taken once.
    let again = csi
        .create_snapshot(create(&csi_name, &volume, &params))
        .await
        .expect("repeat")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(again, first);
    assert_eq!(node.lvm.count(OpKind::CreateSnapshot), 1);
    // Its name for another volume: a conflict.
    let other = placed_volume(&node, 8 * MI, false).await;
    let err = csi
        .create_snapshot(create(&csi_name, &other, &[]))
        .await
        .expect_err("name taken");
    assert_eq!(err.code(), Code::AlreadyExists);
    // Bad input: nothing is made.
    for (req, code) in [
        (create(&unique("s"), "no-such-volume", &[]), Code::NotFound),
        (
            create(&unique("s"), &volume, &[("cowSize", "150%")]),
            Code::InvalidArgument,
        ),
        (
            create(&unique("s"), &volume, &[("snapsize", "1Gi")]),
            Code::InvalidArgument,
        ),
        (create("", &volume, &[]), Code::InvalidArgument),
    ] {
        assert_eq!(
            csi.create_snapshot(req).await.expect_err("bad").code(),
            code
        );
    }

    // A second snapshot (the whole volume's size of COW space by default); pages of one.
    let second = csi
        .create_snapshot(create(&unique("nightly"), &volume, &[]))
        .await
        .expect("second")
        .into_inner()
        .snapshot
        .expect("snapshot");
    let page1 = csi
        .list_snapshots(list(&volume, 1, ""))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page1.entries.len(), 1);
    assert!(!page1.next_token.is_empty());
    let page2 = csi
        .list_snapshots(list(&volume, 1, &page1.next_token))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(page2.entries.len(), 1);
    assert!(page2.next_token.is_empty());
    let mut ids: Vec<String> = page1
        .entries
        .iter()
        .chain(&page2.entries)
        .filter_map(|e| e.snapshot.as_ref().map(|s| s.snapshot_id.clone()))
        .collect();
    ids.sort();
    let mut want = vec![first.snapshot_id.clone(), second.snapshot_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    let by_id = csi
        .list_snapshots(Request::new(ListSnapshotsRequest {
            snapshot_id: second.snapshot_id.clone(),
            ..Default::default()
        }))
        .await
        .expect("by id")
        .into_inner();
    assert_eq!(by_id.entries.len(), 1);
    assert_eq!(
        csi.list_snapshots(list(&volume, 1, "99"))
            .await
            .expect_err("bad token")
            .code(),
        Code::Aborted
    );

    // The volume cannot be deleted while it has snapshots.
    let err = csi
        .delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: volume.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("has snapshots");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&first.snapshot_id), "{err}");

    // Deleted: the objects and the LVM snapshots go; deleting again is fine.
    for id in [&first.snapshot_id, &second.snapshot_id] {
        csi.delete_snapshot(Request::new(DeleteSnapshotRequest {
            snapshot_id: id.clone(),
            ..Default::default()
        }))
        .await
        .expect("delete");
        csi.delete_snapshot(Request::new(DeleteSnapshotRequest {
            snapshot_id: id.clone(),
            ..Default::default()
        }))
        .await
        .expect("delete again");
    }
    assert!(csi
        .list_snapshots(list(&volume, 0, ""))
        .await
        .expect("list")
        .into_inner()
        .entries
        .is_empty());
    assert!(node.lvm.snapshot().lvs.iter().all(|l| l.origin.is_none()));
    node.cleanup().await;
}

#[tokio::test]
async fn a_thin_volumes_snapshot_is_thin_and_takes_no_cow_size() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = placed_volume(&node, 100 * MI, true).await;
    let csi = service(&node);
    let err = csi
        .create_snapshot(create(&unique("s"), &volume, &[("cowSize", "10%")]))
        .await
        .expect_err("thin takes no cowSize");
    assert_eq!(err.code(), Code::InvalidArgument);
    let s = csi
        .create_snapshot(create(&unique("s"), &volume, &[]))
        .await
        .expect("thin snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert!(s.ready_to_use);
    let lvs = Api::<LocalVolumeSnapshot>::all(client.clone())
        .get(&s.snapshot_id)
        .await
        .expect("object");
    assert_eq!(lvs.spec.cow_capacity_bytes, None);
    let lv = node
        .lvm
        .snapshot()
        .lv(HDD, &hwameistor_core::snapshot::lv_name(&s.snapshot_id))
        .cloned()
        .expect("LVM snapshot");
    assert_eq!(lv.pool_lv.as_deref(), Some("hwameistor-thin"));
    csi.delete_snapshot(Request::new(DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id,
        ..Default::default()
    }))
    .await
    .expect("delete");
    node.cleanup().await;
    remove_volumes(&client, &[&volume]).await;
}
