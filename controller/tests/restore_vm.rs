//! Restores and clones on real nodes: two QEMU VMs run the real agent (its snapshot
//! controller, LVM, the block mover); the test process runs the volume reconciler and the
//! CSI controller service, and drives each node's CSI service as the kubelet would.
//!
//! A mounted xfs volume's snapshot keeps the file it held while the file is rewritten;
//! restored larger on the same node (a local, verified copy: the snapshot is thick) it
//! mounts beside its still-mounted source (same XFS UUID), holds the snapshot-time file and
//! fills its volume; restored on the other node (the block mover) it holds the same file;
//! a clone holds the file as it is now. A thin volume's snapshot restores on its node by
//! LVM alone (a thin clone) and on the other node through the block mover, same checksum.
//! The deletion order is the spec's: a volume with snapshots is not deleted, a snapshot is
//! deleted before its volume, and a volume restored from a thin snapshot outlives it.
//!
//! Needs root, QEMU and the host packages of scripts/install-host-deps.sh, and the agent,
//! the DRBD helper and the csi_node_call example built.

mod vm_support;

use hwameistor_csi::csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
use vm_support::*;

/// A CreateVolume of `req` restored from `source`.
fn from(mut req: CreateVolumeRequest, source: Type) -> CreateVolumeRequest {
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(source),
    });
    req
}

fn snapshot_of(id: &str) -> Type {
    Type::Snapshot(SnapshotSource {
        snapshot_id: id.into(),
    })
}

async fn take_snapshot(
    sb: &Sandbox,
    nodes: &[&str],
    csi: &ControllerService,
    name: &str,
    volume: &str,
    params: &[(&str, &str)],
) -> String {
    match csi
        .create_snapshot(Request::new(CreateSnapshotRequest {
            name: name.into(),
            source_volume_id: volume.into(),
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }))
        .await
    {
        Ok(r) => r.into_inner().snapshot.expect("snapshot").snapshot_id,
        Err(e) => panic!("snapshot of {volume}: {e:?}{}", logs(sb, nodes).await),
    }
}

async fn create_ok(
    sb: &Sandbox,
    nodes: &[&str],
    csi: &ControllerService,
    req: CreateVolumeRequest,
) -> Volume {
    let name = req.name.clone();
    match csi.create_volume(Request::new(req)).await {
        Ok(r) => r.into_inner().volume.expect("volume"),
        Err(e) => panic!("create {name}: {e:?}{}", logs(sb, nodes).await),
    }
}

/// Publishes, stages (with the volume's context, as the kubelet passes it) and mounts
/// filesystem volume `v` on `node` for `pod`; the mount path.
async fn mount(sb: &Sandbox, csi: &ControllerService, v: &Volume, node: &str, pod: &str) -> String {
    let vol = &v.volume_id;
    let dev = publish(csi, vol, node).await.expect("publish");
    let (staging, target) = paths(vol, pod);
    let vm = sb.testbed.vm(node);
    let context: Vec<String> = v
        .volume_context
        .iter()
        .map(|(k, val)| format!("{k}={val}"))
        .collect();
    call(
        sb,
        vm,
        node,
        &format!("stage {vol} {dev} {staging} xfs {}", context.join(" ")),
    )
    .await;
    call(
        sb,
        vm,
        node,
        &format!("publish {vol} {dev} {staging} {target} xfs"),
    )
    .await;
    target
}

async fn unmount(sb: &Sandbox, csi: &ControllerService, vol: &str, node: &str, pod: &str) {
    let vm = sb.testbed.vm(node);
    let (staging, target) = paths(vol, pod);
    call(sb, vm, node, &format!("unpublish {vol} {target}")).await;
    call(sb, vm, node, &format!("unstage {vol} {staging}")).await;
    unpublish(csi, vol, node).await;
}

async fn delete_volume(csi: &ControllerService, vol: &str) {
    csi.delete_volume(Request::new(DeleteVolumeRequest {
        volume_id: vol.into(),
        ..Default::default()
    }))
    .await
    .unwrap_or_else(|e| panic!("delete {vol}: {e:?}"));
}

async fn delete_snapshot(csi: &ControllerService, id: &str) {
    csi.delete_snapshot(Request::new(DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    }))
    .await
    .unwrap_or_else(|e| panic!("delete snapshot {id}: {e:?}"));
}

fn thin_block(name: &str, bytes: i64, node: &str) -> CreateVolumeRequest {
    let mut req = create_block(name, bytes, node);
    req.parameters.insert("thin".into(), "true".into());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restore_on_the_same_node_and_across_nodes_and_volumes_clone_with_their_data() {
    let (sb, names, vol) = ha_nodes("r", "rs", 2).await;
    let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
    let (n1, n2) = (nodes[0], nodes[1]);
    let (reconciler, csi) = control_plane(&sb, "restore-vm-test", Duration::from_secs(180));
    let (vm1, vm2) = (sb.testbed.vm(n1), sb.testbed.vm(n2));
    movers_published(&sb, &nodes).await;

    // A mounted xfs volume with a file; a snapshot of it (20% COW space: the pools are 1
    // GiB, and n1 must also hold a restore and the clone's full-size snapshot); the file
    // is then rewritten.
    let src = create_ok(&sb, &nodes, &csi, create(&vol, 300 * MIB, n1, "xfs")).await;
    let target = mount(&sb, &csi, &src, n1, "pod-src").await;
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/data bs=1M count=24 2>/dev/null && sync"
    ))
    .await
    .expect("write");
    let at_snapshot = sha256(vm1, &format!("cat {target}/data")).await;
    let snap = take_snapshot(
        &sb,
        &nodes,
        &csi,
        &format!("{vol}-s1"),
        &vol,
        &[("cowSize", "20%")],
    )
    .await;
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/data bs=1M count=24 conv=notrunc 2>/dev/null && sync"
    ))
    .await
    .expect("rewrite");
    let now = sha256(vm1, &format!("cat {target}/data")).await;
    assert_ne!(now, at_snapshot);

    // Restored larger on n1 beside its mounted source: the snapshot-time file, and the
    // filesystem fills the larger volume.
    let r1 = format!("{vol}-r1");
    let v1 = create_ok(
        &sb,
        &nodes,
        &csi,
        from(create(&r1, 320 * MIB, n1, "xfs"), snapshot_of(&snap)),
    )
    .await;
    assert!(v1.content_source.is_some());
    let t1 = mount(&sb, &csi, &v1, n1, "pod-r1").await;
    assert_eq!(sha256(vm1, &format!("cat {t1}/data")).await, at_snapshot);
    let (grown, source) = (df_bytes(vm1, &t1).await, df_bytes(vm1, &target).await);
    assert!(
        grown >= source + 16 * MIB,
        "the restored filesystem was grown to its volume: {grown} against its source's {source}"
    );
    let copy = copy_of(&sb, &r1, n1).await.expect("copy status");
    assert!(copy.verified && copy.digest.is_some(), "{copy:?}");
    unmount(&sb, &csi, &r1, n1, "pod-r1").await;

    // Restored on n2 through the block mover: the same file.
    let r2 = format!("{vol}-r2");
    let v2 = create_ok(
        &sb,
        &nodes,
        &csi,
        from(create(&r2, 300 * MIB, n2, "xfs"), snapshot_of(&snap)),
    )
    .await;
    let t2 = mount(&sb, &csi, &v2, n2, "pod-r2").await;
    assert_eq!(sha256(vm2, &format!("cat {t2}/data")).await, at_snapshot);
    unmount(&sb, &csi, &r2, n2, "pod-r2").await;

    // A clone of the source as it is now (a snapshot is taken for it, then removed).
    unmount(&sb, &csi, &vol, n1, "pod-src").await;
    let c = format!("{vol}-c");
    let vc = create_ok(
        &sb,
        &nodes,
        &csi,
        from(
            create(&c, 300 * MIB, n2, "xfs"),
            Type::Volume(VolumeSource {
                volume_id: vol.clone(),
            }),
        ),
    )
    .await;
    let tc = mount(&sb, &csi, &vc, n2, "pod-c").await;
    assert_eq!(sha256(vm2, &format!("cat {tc}/data")).await, now);
    unmount(&sb, &csi, &c, n2, "pod-c").await;
    let snapshots: Api<LocalVolumeSnapshot> = Api::all(sb.client.clone());
    ok(
        &sb,
        &nodes,
        eventually(WAIT, "the clone's snapshot removed", || async {
            Ok(snapshots
                .get_opt(&hwameistor_core::restore::clone_snapshot_name(&c))
                .await?
                .is_none()
                .then_some(()))
        })
        .await,
    )
    .await;

    // A thin raw volume's snapshot: restored on n1 by LVM alone, on n2 by the block mover.
    let t = format!("{vol}-t");
    create_ok(&sb, &nodes, &csi, thin_block(&t, 32 * MIB, n1)).await;
    let lv = |v: &str| format!("/dev/LocalStorage_PoolHDD/{v}");
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={} bs=1M count=32 oflag=direct 2>/dev/null",
        lv(&t)
    ))
    .await
    .expect("write thin");
    let thin_sum = sha256(vm1, &format!("cat {}", lv(&t))).await;
    let tsnap = take_snapshot(&sb, &nodes, &csi, &format!("{vol}-ts"), &t, &[]).await;
    vm1.exec_ok(&format!(
        "dd if=/dev/zero of={} bs=1M count=8 oflag=direct 2>/dev/null",
        lv(&t)
    ))
    .await
    .expect("overwrite thin");
    let tr1 = format!("{vol}-tr1");
    create_ok(
        &sb,
        &nodes,
        &csi,
        from(thin_block(&tr1, 64 * MIB, n1), snapshot_of(&tsnap)),
    )
    .await;
    let copy = copy_of(&sb, &tr1, n1).await.expect("copy status");
    assert!(copy.lvm_clone && copy.verified, "made by LVM: {copy:?}");
    assert_eq!(
        sha256(vm1, &format!("head -c {} {}", 32 * MIB, lv(&tr1))).await,
        thin_sum
    );
    assert_eq!(lv_size(vm1, &tr1).await, Some(64 * MIB));
    let tr2 = format!("{vol}-tr2");
    create_ok(
        &sb,
        &nodes,
        &csi,
        from(thin_block(&tr2, 32 * MIB, n2), snapshot_of(&tsnap)),
    )
    .await;
    assert_eq!(sha256(vm2, &format!("cat {}", lv(&tr2))).await, thin_sum);

    // Deletion order: a volume with snapshots stays; the snapshots go first; a volume
    // restored from a thin snapshot keeps its data after the snapshot is gone.
    let err = csi
        .delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: vol.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("has snapshots");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    delete_snapshot(&csi, &tsnap).await;
    assert_eq!(
        sha256(vm1, &format!("head -c {} {}", 32 * MIB, lv(&tr1))).await,
        thin_sum,
        "the thin restore outlives its snapshot"
    );
    delete_snapshot(&csi, &snap).await;
    for v in [&r1, &r2, &c, &tr1, &tr2, &t, &vol] {
        delete_volume(&csi, v).await;
    }
    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}
