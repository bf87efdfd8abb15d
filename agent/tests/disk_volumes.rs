//! Raw-disk volumes (LocalDiskVolume) in the middle layer: the controller's binder and the
//! agent's reconciler against the test API server (or a real cluster), with fake disks and a
//! fake wipe. A volume gets the smallest fitting disk, two volumes never share one, a pool's
//! claim and a volume never share one, and a deleted volume's disk is wiped, then given
//! back.

mod fake_node;

use fake_node::*;
use hwameistor_api::*;
use hwameistor_controller::metrics::Metrics;
use hwameistor_controller::volume_reconciler::{self, Scope};
use hwameistor_core::placement::Policy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::str::FromStr;
use std::sync::Arc;

const SCOPE_LABEL: &str = "hwameistor.io/test-scope";

/// The node's LocalStorageNode labelled with `scope` (what the test's controller acts on),
/// made before the agent starts.
async fn scoped(node: &FakeNode, scope: &str) {
    let mut lsn = LocalStorageNode::new(
        &node.name,
        LocalStorageNodeSpec {
            hostname: node.name.clone(),
            storage_ip: None,
        },
    );
    lsn.metadata.labels = Some(
        [
            (SCOPE_LABEL.to_string(), scope.to_string()),
            (LABEL_NODE.to_string(), node.name.clone()),
        ]
        .into(),
    );
    Api::<LocalStorageNode>::all(node.client.clone())
        .create(&PostParams::default(), &lsn)
        .await
        .expect("create node");
}

/// The controller's disk-volume binder, acting on `scope`'s nodes only.
fn binder(node: &FakeNode, scope: &str) -> tokio::task::JoinHandle<()> {
    let ctx = volume_reconciler::Context::new_scoped(
        node.client.clone(),
        &unique("controller"),
        Arc::new(Metrics::default()),
        Policy::default(),
        Some(Scope::from_str(&format!("{SCOPE_LABEL}={scope}")).expect("scope")),
    );
    tokio::spawn(hwameistor_controller::disk_volumes::run(ctx))
}

/// A started node whose HDDs (`(device, size)`) are all Available, scoped for a binder that
/// runs alongside: the test's cluster (kept alive), client, node and binder.
async fn started(
    disks: &[(&str, i64)],
) -> (
    hwameistor_testapi::TestCluster,
    kube::Client,
    FakeNode,
    tokio::task::JoinHandle<()>,
) {
    let (server, client) = cluster().await;
    let scope = unique("ldv");
    let mut node = FakeNode::new(&client);
    for (dev, size) in disks {
        node.add_disk(dev, *size, true);
    }
    scoped(&node, &scope).await;
    node.start();
    for (dev, _) in disks {
        node.disk(dev, DiskPhase::Available).await;
    }
    let controller = binder(&node, &scope);
    (server, client, node, controller)
}

fn ldv(node: &FakeNode, want: i64, wipe: WipePolicy) -> LocalDiskVolume {
    LocalDiskVolume::new(
        &unique("ldv"),
        LocalDiskVolumeSpec {
            node_name: node.name.clone(),
            disk_type: DiskType::Hdd,
            required_capacity_bytes: want,
            max_capacity_bytes: None,
            pvc_namespace: Some("apps".into()),
            pvc_name: Some("data".into()),
            wipe,
        },
    )
}

async fn wait_state(node: &FakeNode, name: &str, state: DiskVolumeState) -> LocalDiskVolume {
    let api: Api<LocalDiskVolume> = Api::all(node.client.clone());
    eventually(&format!("{name} {state:?}"), || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|v| v.status.as_ref().and_then(|s| s.state) == Some(state))
    })
    .await
}

async fn disk_of(node: &FakeNode, dev: &str) -> LocalDisk {
    node.disks()
        .await
        .into_iter()
        .find(|d| d.status.as_ref().and_then(|s| s.device_path.as_deref()) == Some(dev))
        .expect("disk")
}

#[tokio::test]
async fn volumes_get_the_smallest_fitting_disks_never_a_shared_one_and_wipe_them_when_deleted() {
    let (_server, client, mut node, controller) = started(&[
        ("/dev/vdb", 8 * GI),
        ("/dev/vdc", 2 * GI),
        ("/dev/vdd", 4 * GI),
        ("/dev/vde", GI),
    ])
    .await;
    let api: Api<LocalDiskVolume> = Api::all(client.clone());

    // Three volumes of 1.5 GiB at once, for three disks that fit (vde is too small):
    // each gets its own, smallest first overall.
    let mut names = Vec::new();
    for _ in 0..3 {
        let v = api
            .create(
                &PostParams::default(),
                &ldv(&node, 3 * GI / 2, WipePolicy::Signatures),
            )
            .await
            .expect("create");
        names.push(v.metadata.name.expect("name"));
    }
    let mut got = Vec::new();
    for n in &names {
        let v = wait_state(&node, n, DiskVolumeState::Ready).await;
        let st = v.status.expect("status");
        assert!(
            st.device_path
                .as_deref()
                .is_some_and(|p| p.starts_with("/dev/disk/by-id/")),
            "{st:?}"
        );
        got.push(st.local_disk_name.expect("disk"));
    }
    let mut unique_disks = got.clone();
    unique_disks.sort();
    unique_disks.dedup();
    assert_eq!(unique_disks.len(), 3, "no disk serves two volumes: {got:?}");
    let small = disk_of(&node, "/dev/vde").await;
    assert!(small.spec.volume_ref.is_none(), "too small for any");
    // The bound disks are Bound, owned by their volume.
    let vdb = eventually("the bound disk's phase Bound", || async {
        let d = disk_of(&node, "/dev/vdb").await;
        (d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Bound)).then_some(d)
    })
    .await;
    assert!(disk_unavailability(&vdb).is_some_and(|r| r.starts_with("used by disk volume")));

    // A fourth waits, saying why.
    let extra = api
        .create(
            &PostParams::default(),
            &ldv(&node, 3 * GI / 2, WipePolicy::Full),
        )
        .await
        .expect("create")
        .metadata
        .name
        .expect("name");
    let v = wait_state(&node, &extra, DiskVolumeState::Pending).await;
    let msg = v.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("is too small") && msg.contains("used by disk volume"),
        "{msg}"
    );

    // Deleted while its disk is busy: the wipe is refused and retried; once free, the disk
    // is wiped, given back, and the waiting volume (Full wipe) takes it.
    let first = &names[0];
    let first_disk = disk_of_volume(&node, &got[0]).await;
    let dev = first_disk
        .status
        .as_ref()
        .and_then(|s| s.device_path.clone())
        .expect("device");
    node.wipe.set_busy(&dev, true);
    api.delete(first, &DeleteParams::default())
        .await
        .expect("delete");
    let v = wait_state(&node, first, DiskVolumeState::Releasing).await;
    eventually("the busy wipe reported", || async {
        api.get_opt(first)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.status)
            .and_then(|s| s.message)
            .filter(|m| m.contains("Device or resource busy"))
    })
    .await;
    assert!(v.status.is_some_and(|s| !s.wiped));
    assert!(node.wipe.wiped().is_empty());
    node.wipe.set_busy(&dev, false);
    eventually("the volume gone", || async {
        api.get_opt(first).await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(node.wipe.wiped(), vec![(dev.clone(), false)]);
    let v = wait_state(&node, &extra, DiskVolumeState::Ready).await;
    assert_eq!(
        v.status.and_then(|s| s.local_disk_name).as_deref(),
        Some(got[0].as_str())
    );
    // Deleted: its Full wipe zeroes the disk.
    api.delete(&extra, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the second wipe", || async {
        (node.wipe.wiped().len() >= 2).then_some(())
    })
    .await;
    // Once each: the controller writes the Releasing status while the agent wipes, and
    // that must not erase the disk a second time.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        node.wipe.wiped(),
        vec![(dev.clone(), false), (dev.clone(), true)]
    );
    eventually("the disk free again", || async {
        disk_of_volume(&node, &got[0])
            .await
            .spec
            .volume_ref
            .is_none()
            .then_some(())
    })
    .await;
    for n in &names[1..] {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
    controller.abort();
    node.cleanup().await;
}

async fn disk_of_volume(node: &FakeNode, disk: &str) -> LocalDisk {
    Api::<LocalDisk>::all(node.client.clone())
        .get(disk)
        .await
        .expect("disk")
}

#[tokio::test]
async fn a_pool_claim_and_a_disk_volume_never_get_the_same_disk() {
    let (_server, client, mut node, controller) =
        started(&[("/dev/vdb", 4 * GI), ("/dev/vdc", 4 * GI)]).await;
    let api: Api<LocalDiskVolume> = Api::all(client.clone());
    // Both at once: the claim wants every HDD, the volume one.
    let v = api
        .create(
            &PostParams::default(),
            &ldv(&node, GI, WipePolicy::Signatures),
        )
        .await
        .expect("create")
        .metadata
        .name
        .expect("name");
    let claim = node
        .claim(
            "hdd",
            DiskSelector {
                disk_type: Some(DiskType::Hdd),
                ..Default::default()
            },
        )
        .await;
    // Whoever wins each disk, no disk ends with both, and the loser says why.
    let c = eventually("the claim settled", || async {
        let c = Api::<LocalDiskClaim>::all(client.clone())
            .get(&claim)
            .await
            .ok()?;
        matches!(
            c.status.as_ref().and_then(|s| s.phase),
            Some(ClaimPhase::Bound)
        )
        .then_some(c)
    })
    .await;
    let bound = c.status.expect("status").bound_disks;
    let vol = eventually("the volume settled", || async {
        let v = api.get(&v).await.ok()?;
        matches!(
            v.status.as_ref().and_then(|s| s.state),
            Some(DiskVolumeState::Ready | DiskVolumeState::Pending)
        )
        .then_some(v)
    })
    .await;
    let st = vol.status.expect("status");
    match st.state {
        Some(DiskVolumeState::Ready) => {
            let taken = st.local_disk_name.expect("disk");
            assert!(!bound.contains(&taken), "{bound:?} vs {taken}");
            assert_eq!(bound.len(), 1);
        }
        _ => {
            assert_eq!(bound.len(), 2, "the claim took both");
            let msg = st.message.unwrap_or_default();
            assert!(
                msg.contains("bound to claim") || msg.contains("in pool"),
                "{msg}"
            );
        }
    }
    let disks = Api::<LocalDisk>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", node.name)))
        .await
        .expect("disks")
        .items;
    assert!(disks
        .iter()
        .all(|d| !(d.spec.claim_ref.is_some() && d.spec.volume_ref.is_some())));
    controller.abort();
    node.cleanup().await;
}

/// The `disk.hwameistor.io` controller service over the binder and the agent: a volume
/// gets a whole disk and reports its size, a repeat finds it, one that fits no disk is
/// refused with nothing left behind, capacity is what the free disks offer, and a delete
/// returns once the disk was wiped and given back.
#[tokio::test]
async fn the_disk_csi_controller_service_creates_refuses_reports_and_deletes() {
    use hwameistor_csi::csi::controller_server::Controller;
    use hwameistor_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType};
    use hwameistor_csi::csi::*;
    use hwameistor_csi::disk_controller::DiskControllerService;
    use tonic::{Code, Request};

    let (_server, client, mut node, controller) =
        started(&[("/dev/vdb", 8 * GI), ("/dev/vdc", 2 * GI)]).await;
    let csi = DiskControllerService::new(
        client.clone(),
        hwameistor_csi::controller::Timeouts::default(),
    );
    let cap = VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(Default::default())),
    };
    let on_node = TopologyRequirement {
        requisite: vec![hwameistor_csi::topology::of_node(&node.name)],
        preferred: vec![hwameistor_csi::topology::of_node(&node.name)],
    };
    let create = |name: &str, gib: i64| CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: gib * GI,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap.clone()],
        parameters: [("diskType".to_string(), "HDD".to_string())].into(),
        accessibility_requirements: Some(on_node.clone()),
        ..Default::default()
    };
    let capacity = || async {
        csi.get_capacity(Request::new(GetCapacityRequest {
            parameters: [("diskType".to_string(), "HDD".to_string())].into(),
            accessible_topology: Some(hwameistor_csi::topology::of_node(&node.name)),
            ..Default::default()
        }))
        .await
        .expect("capacity")
        .into_inner()
    };
    let c = capacity().await;
    assert_eq!(
        (c.available_capacity, c.maximum_volume_size),
        (10 * GI, Some(8 * GI))
    );

    let name = unique("pvc");
    let v = csi
        .create_volume(Request::new(create(&name, 3)))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    // The whole disk: 8 GiB, though 3 were asked.
    assert_eq!(v.capacity_bytes, 8 * GI);
    let again = csi
        .create_volume(Request::new(create(&name, 3)))
        .await
        .expect("repeat")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(again.volume_id, v.volume_id);
    let c = capacity().await;
    assert_eq!(
        (c.available_capacity, c.maximum_volume_size),
        (2 * GI, Some(2 * GI))
    );

    // 5 GiB fits no free disk now: refused, nothing left behind.
    let big = unique("pvc");
    let e = csi
        .create_volume(Request::new(create(&big, 5)))
        .await
        .expect_err("no disk");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("is too small"), "{e:?}");
    let api: Api<LocalDiskVolume> = Api::all(client.clone());
    assert!(api.get_opt(&big).await.expect("get").is_none());

    // Delete: back once wiped and given back.
    csi.delete_volume(Request::new(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete");
    assert!(api.get_opt(&v.volume_id).await.expect("get").is_none());
    assert_eq!(node.wipe.wiped().len(), 1);
    // The given-back disk is free again as soon as its agent looked at it.
    eventually("the disk free again", || async {
        (capacity().await.available_capacity == 10 * GI).then_some(())
    })
    .await;
    // Deleting again is fine.
    csi.delete_volume(Request::new(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete again");
    controller.abort();
    node.cleanup().await;
}

/// The disk driver's node service records each publish in the volume before making it:
/// a deleted volume's disk is not wiped while any target is recorded (a raw block volume
/// bound into a pod shows in no mount table), and is once the last one is gone.
#[tokio::test]
async fn a_published_volume_s_disk_is_wiped_only_once_every_target_is_unpublished() {
    use hwameistor_agent::disk_publish::DiskPublishRecord;
    use hwameistor_csi::node::PublishRecord;
    let (_server, client, mut node, controller) = started(&[("/dev/vdb", 2 * GI)]).await;
    let api: Api<LocalDiskVolume> = Api::all(client.clone());
    let name = api
        .create(
            &PostParams::default(),
            &ldv(&node, GI, WipePolicy::Signatures),
        )
        .await
        .expect("create")
        .metadata
        .name
        .expect("name");
    wait_state(&node, &name, DiskVolumeState::Ready).await;

    let record = DiskPublishRecord::new(client.clone(), node.name.clone());
    let (t1, t2) = ("/var/lib/kubelet/pods/a/t", "/var/lib/kubelet/pods/b/t");
    for t in [t1, t2, t1] {
        record.publishing(&name, t).await.expect("recorded");
    }
    let st = api.get(&name).await.expect("get").status.expect("status");
    assert_eq!(st.published_targets, [t1, t2], "each once, in order");
    assert_eq!(st.published_node.as_deref(), Some(node.name.as_str()));
    // Another node's service, or a volume that does not exist.
    let e = DiskPublishRecord::new(client.clone(), "elsewhere".into())
        .publishing(&name, t1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let e = record.publishing("no-such-volume", t1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    record
        .unpublished("no-such-volume", t1)
        .await
        .expect("nothing to remove");

    // Deleted while published: the agent waits, saying where; nothing is wiped.
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the wait reported", || async {
        api.get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|v| v.status)
            .and_then(|s| s.message)
            .filter(|m| m.contains(&format!("still published at {t1}, {t2}")))
    })
    .await;
    let e = record
        .publishing(&name, "/var/lib/kubelet/pods/c/t")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    record.unpublished(&name, t1).await.expect("unpublished");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(node.wipe.wiped().is_empty(), "{t2} still has it");
    let st = api.get(&name).await.expect("get").status.expect("status");
    assert_eq!(st.published_targets, [t2]);
    record.unpublished(&name, t2).await.expect("unpublished");
    eventually("the volume gone", || async {
        api.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(node.wipe.wiped().len(), 1);
    controller.abort();
    node.cleanup().await;
}
