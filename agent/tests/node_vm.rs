//! The node agent in a real kernel: disks discovered by the agent in a VM, a claim growing a
//! real LVM pool, logical volumes created, extended and removed, disks in use refused, and
//! disks hot-added and removed. Needs root and qemu-system-x86_64 (scripts/install-host-deps.sh).

mod support;

use hwameistor_api::*;
use hwameistor_sandbox::{eventually, run_prefix};
use hwameistor_testbed::{DiskSpec, VmSpec};
use kube::api::Api;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_are_discovered_claimed_into_a_pool_and_serve_volumes() {
    let node = format!("{}-n1", run_prefix());
    let sb = start(vec![VmSpec::new(&node)
        .disk("hdd-a", 512 * MIB)
        .disk("hdd-b", 768 * MIB)
        .disk("used-c", 400 * MIB)])
    .await;
    let vm = sb.testbed.vm(&node);
    // A disk someone already uses: the agent must refuse it and say why.
    vm.exec_ok("mkfs.ext4 -q -F /dev/disk/by-id/virtio-used-c")
        .await
        .expect("mkfs");
    sb.start_agent(&node, &[]).await.expect("agent");

    let disks = check(&sb, &node, wait_disks(&sb, &node, 3).await).await;
    let a = by_serial(&disks, "hdd-a");
    let b = by_serial(&disks, "hdd-b");
    let c = by_serial(&disks, "used-c");
    let (sa, sc) = (
        a.status.clone().expect("status"),
        c.status.clone().expect("status"),
    );
    assert_eq!(sa.capacity_bytes, Some(512 << 20));
    assert_eq!(sa.phase, Some(DiskPhase::Available), "{sa:?}");
    assert_eq!(sa.identity_source, Some(IdentitySource::Serial));
    assert!(
        sa.dev_links
            .iter()
            .any(|l| l == "/dev/disk/by-id/virtio-hdd-a"),
        "{:?}",
        sa.dev_links
    );
    assert_eq!(
        b.status.as_ref().and_then(|s| s.capacity_bytes),
        Some(768 << 20)
    );
    assert_eq!(sc.phase, Some(DiskPhase::Unavailable));
    assert_eq!(
        sc.reason.as_deref(),
        Some("carries a ext4 signature"),
        "{sc:?}"
    );
    let disk_type = sa.disk_type.expect("type");

    // A claim that can match nothing stays Pending and says why.
    let want = if disk_type == DiskType::Nvme {
        DiskType::Ssd
    } else {
        DiskType::Nvme
    };
    create_claim(
        &sb,
        &format!("{node}-nomatch"),
        &node,
        DiskSelector {
            disk_type: Some(want),
            ..Default::default()
        },
    )
    .await;
    let pending = check(
        &sb,
        &node,
        wait_claim(&sb, &format!("{node}-nomatch"), ClaimPhase::Pending).await,
    )
    .await;
    let cond = &pending.status.as_ref().expect("status").conditions[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("Matched", "False", "NoMatchingDisks")
    );
    assert!(
        cond.message.contains(&format!("claim wants {want}")),
        "{}",
        cond.message
    );
    assert!(
        cond.message.contains("carries a ext4 signature"),
        "{}",
        cond.message
    );

    // A claim naming two disks turns them into the pool of their class.
    let claim = format!("{node}-pool");
    create_claim(
        &sb,
        &claim,
        &node,
        DiskSelector {
            local_disk_names: vec![name(a), name(b)],
            ..Default::default()
        },
    )
    .await;
    let bound = check(&sb, &node, wait_claim(&sb, &claim, ClaimPhase::Bound).await).await;
    let st = bound.status.expect("status");
    assert_eq!(st.bound_disks.len(), 2);
    let pool = disk_type.pool_class().pool_name();
    assert_eq!(
        vm.exec_ok(&format!("vgs --noheadings -o pv_count {pool}"))
            .await
            .expect("vgs")
            .trim(),
        "2"
    );
    // The disk in use was never touched.
    assert_eq!(
        vm.exec_ok("blkid -o value -s TYPE /dev/disk/by-id/virtio-used-c")
            .await
            .expect("blkid")
            .trim(),
        "ext4"
    );

    let lsn_api: Api<LocalStorageNode> = Api::all(sb.client.clone());
    let lsn = check(
        &sb,
        &node,
        eventually(WAIT, "pool in LocalStorageNode", || async {
            let n = lsn_api.get(&node).await?;
            Ok(n.status
                .clone()
                .and_then(|s| s.pools.get(pool).cloned())
                .filter(|p| p.disks.len() == 2)
                .map(|p| (n, p)))
        })
        .await,
    )
    .await;
    let (lsn, p) = lsn;
    assert_eq!(
        lsn.status.as_ref().and_then(|s| s.state),
        Some(NodeState::Ready)
    );
    // 512 + 768 MiB less one metadata area and rounding per PV.
    assert!(
        p.total_capacity_bytes > 1200 << 20 && p.total_capacity_bytes <= 1280 << 20,
        "{p:?}"
    );
    assert_eq!(p.free_capacity_bytes, p.total_capacity_bytes);
    assert_eq!(p.extent_size_bytes, 4 << 20);
    let disks = node_disks(&sb, &node).await;
    for d in [by_serial(&disks, "hdd-a"), by_serial(&disks, "hdd-b")] {
        let s = d.status.as_ref().expect("status");
        assert_eq!(
            (s.phase, s.pool.as_deref()),
            (Some(DiskPhase::Bound), Some(pool)),
            "{s:?}"
        );
    }

    // A bound disk cannot be claimed again: a claim naming it fails with the reason.
    create_claim(
        &sb,
        &format!("{node}-again"),
        &node,
        DiskSelector {
            local_disk_names: vec![name(a)],
            ..Default::default()
        },
    )
    .await;
    let again = check(
        &sb,
        &node,
        wait_claim(&sb, &format!("{node}-again"), ClaimPhase::Failed).await,
    )
    .await;
    assert!(again
        .status
        .and_then(|s| s.message)
        .is_some_and(|m| m.contains(&format!("(claim {claim})"))));

    // Logical volumes: create, extend, remove.
    if disk_type != DiskType::Hdd {
        panic!("virtio disks were expected to be reported as HDD (rotational), got {disk_type}");
    }
    let r = create_replica(&sb, "vol1", &node, 64 << 20).await;
    let ready = check(&sb, &node, wait_replica_ready(&sb, &r, 64 << 20).await).await;
    let rs = ready.status.expect("status");
    assert_eq!(
        rs.device_path.as_deref(),
        Some("/dev/LocalStorage_PoolHDD/vol1")
    );
    assert_eq!(rs.allocated_capacity_bytes, Some(64 << 20));
    assert!(ready
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&FINALIZER_REPLICA.to_string()));
    assert_eq!(lv_size(&sb, &node, pool, "vol1").await, Some(64 << 20));
    vm.exec_ok("test -b /dev/LocalStorage_PoolHDD/vol1")
        .await
        .expect("device node");

    let api: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let patch = serde_json::json!({ "spec": { "requiredCapacityBytes": 130 << 20 } });
    api.patch(&r, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch");
    let grown = check(&sb, &node, wait_replica_ready(&sb, &r, 130 << 20).await).await;
    // Rounded up to whole 4 MiB extents.
    assert_eq!(
        grown.status.and_then(|s| s.allocated_capacity_bytes),
        Some(132 << 20)
    );
    assert_eq!(lv_size(&sb, &node, pool, "vol1").await, Some(132 << 20));

    delete_replica(&sb, &r).await;
    check(&sb, &node, wait_replica_gone(&sb, &r).await).await;
    assert_eq!(lv_size(&sb, &node, pool, "vol1").await, None);

    // A volume larger than the pool fails with the reason, and leaves no LV behind.
    let big = create_replica(&sb, "toobig", &node, 4 << 30).await;
    let failed = check(
        &sb,
        &node,
        eventually(WAIT, "oversized replica to report no space", || async {
            let r = api.get(&big).await?;
            Ok(r.status
                .clone()
                .filter(|s| {
                    s.message
                        .as_deref()
                        .is_some_and(|m| m.contains("bytes free"))
                })
                .map(|s| (r, s)))
        })
        .await,
    )
    .await;
    assert_eq!(failed.1.state, Some(ReplicaState::NotReady));
    assert_eq!(lv_size(&sb, &node, pool, "toobig").await, None);
    delete_replica(&sb, &big).await;
    check(&sb, &node, wait_replica_gone(&sb, &big).await).await;

    // A volume larger than any one disk spans both: one volume listing both disks, counted
    // once in the pool (lvs prints one row per segment).
    let span = create_replica(&sb, "span", &node, 900 << 20).await;
    check(&sb, &node, wait_replica_ready(&sb, &span, 900 << 20).await).await;
    let devices = vm
        .exec_ok(&format!("lvs --noheadings -o devices {pool}/span"))
        .await
        .expect("lvs devices");
    assert_eq!(devices.lines().count(), 2, "two segments: {devices}");
    let with_disks = check(
        &sb,
        &node,
        eventually(WAIT, "the replica to list both disks", || async {
            let r = api.get(&span).await?;
            Ok(r.status.clone().filter(|s| s.disks.len() == 2))
        })
        .await,
    )
    .await;
    assert_eq!(with_disks.allocated_capacity_bytes, Some(900 << 20));
    let counted = check(
        &sb,
        &node,
        eventually(WAIT, "the pool to count the volume once", || async {
            let n = lsn_api.get(&node).await?;
            Ok(n.status
                .and_then(|s| s.pools.get(pool).cloned())
                .filter(|p| p.free_capacity_bytes == p.total_capacity_bytes - (900 << 20)))
        })
        .await,
    )
    .await;
    assert_eq!(counted.volume_count, 1, "{counted:?}");
    delete_replica(&sb, &span).await;
    check(&sb, &node, wait_replica_gone(&sb, &span).await).await;

    // Hot-plug: a new disk appears as a LocalDisk; a removed one becomes Inactive, not deleted.
    let mut sb = sb;
    sb.testbed
        .vm_mut(&node)
        .add_disk(DiskSpec::new("hot-d", 256 * MIB))
        .await
        .expect("hot add");
    let disks = check(&sb, &node, wait_disks(&sb, &node, 4).await).await;
    assert_eq!(
        by_serial(&disks, "hot-d")
            .status
            .as_ref()
            .and_then(|s| s.phase),
        Some(DiskPhase::Available)
    );
    sb.testbed
        .vm_mut(&node)
        .hot_remove_disk("used-c")
        .await
        .expect("hot remove");
    let gone = check(
        &sb,
        &node,
        eventually(WAIT, "removed disk to be Inactive", || async {
            let d = node_disks(&sb, &node).await;
            let c = by_serial(&d, "used-c").clone();
            Ok(
                (c.status.as_ref().and_then(|s| s.state) == Some(DiskPresence::Inactive))
                    .then_some((d.len(), c)),
            )
        })
        .await,
    )
    .await;
    assert_eq!(gone.0, 4, "no LocalDisk is deleted when its disk goes away");
    sb.shutdown().await.expect("shutdown");
}
