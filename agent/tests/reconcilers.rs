//! The middle layer: the agent's disk scanner, claim and replica reconcilers against the
//! test API server (or a real cluster, see `HWAMEISTOR_TEST_KUBECONFIG`), with a stateful
//! fake LVM. Every step, every crash point and the error paths, in seconds.

mod fake_node;

use fake_node::*;
use hwameistor_agent::crash::CrashPoint;
use hwameistor_api::*;
use hwameistor_hostexec::lvm::LvmError;
use hwameistor_testkit::OpKind;
use kube::api::{Api, Patch, PatchParams};

fn by_type(t: DiskType) -> DiskSelector {
    DiskSelector {
        disk_type: Some(t),
        ..Default::default()
    }
}

fn names(disks: &[LocalDisk]) -> Vec<String> {
    disks
        .iter()
        .filter_map(|d| d.metadata.name.clone())
        .collect()
}

/// The LocalDisk names of `devs` on the node, once scanned.
async fn disk_names(node: &FakeNode, devs: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for dev in devs {
        out.push(
            node.disk(dev, DiskPhase::Available)
                .await
                .metadata
                .name
                .expect("name"),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Claims

#[tokio::test]
async fn a_claim_turns_its_disks_into_a_pool_and_reports_it() {
    let (_server, client) = cluster().await;
    let mut node = FakeNode::new(&client);
    node.add_disk("/dev/vdb", 101 * MI, true);
    node.add_disk("/dev/vdc", 201 * MI, true);
    node.add_disk("/dev/vdd", 401 * MI, false);
    node.start();
    node.disk("/dev/vdd", DiskPhase::Available).await;
    let claim = node.claim("hdd", by_type(DiskType::Hdd)).await;
    let c = node.wait_claim(&claim, ClaimPhase::Bound).await;
    let st = c.status.expect("status");
    assert_eq!(st.bound_disks.len(), 2);
    assert_eq!(st.capacity_bytes, Some(300 * MI));
    let lvm = node.lvm.snapshot();
    let vg = lvm.vg(HDD).expect("HDD pool on the host");
    assert_eq!((vg.pv_count, vg.size), (2, 300 * MI));
    assert!(lvm.vg(SSD).is_none(), "the SSD was not claimed");
    node.disk("/dev/vdb", DiskPhase::Bound).await;
    node.disk("/dev/vdd", DiskPhase::Available).await;
    let lsn = eventually("the pool in the LocalStorageNode", || async {
        node.lsn()
            .await
            .filter(|n| n.status.as_ref().is_some_and(|s| s.pools.contains_key(HDD)))
    })
    .await;
    let pool = &lsn.status.expect("status").pools[HDD];
    assert_eq!(
        (
            pool.total_capacity_bytes,
            pool.free_capacity_bytes,
            pool.disks.len()
        ),
        (300 * MI, 300 * MI, 2)
    );
    // Each disk was made a physical volume once; the group made in one command.
    assert_eq!(node.lvm.count(OpKind::CreatePv), 2);
    assert_eq!(node.lvm.count(OpKind::CreateVg), 1);
    node.cleanup().await;
}

#[tokio::test]
async fn a_claim_that_matches_nothing_waits_with_reasons_and_binds_a_disk_plugged_later() {
    let (_server, client) = cluster().await;
    let mut node = FakeNode::new(&client);
    node.add_disk("/dev/vdb", 101 * MI, true);
    node.start();
    node.disk("/dev/vdb", DiskPhase::Available).await;
    let claim = node.claim("ssd", by_type(DiskType::Ssd)).await;
    let c = node.wait_claim(&claim, ClaimPhase::Pending).await;
    let st = c.status.expect("status");
    let matched = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Matched")
        .expect("Matched condition");
    assert_eq!(matched.status, "False");
    assert!(
        matched.message.contains("type HDD, claim wants SSD"),
        "{}",
        matched.message
    );
    // Hot-plug an SSD: the claim takes it without anyone touching the claim.
    node.add_disk("/dev/vdc", 101 * MI, false);
    node.rescan();
    node.wait_claim(&claim, ClaimPhase::Bound).await;
    assert!(node.lvm.snapshot().vg(SSD).is_some());
    node.cleanup().await;
}

#[tokio::test]
async fn a_claim_naming_an_unusable_disk_fails_with_the_reason_until_its_spec_changes() {
    let (_server, client) = cluster().await;
    let mut node = FakeNode::new(&client);
    node.add_disk("/dev/vdb", 101 * MI, true);
    node.add_disk("/dev/vdc", 101 * MI, true);
    node.lvm.set_signature("/dev/vdc", "xfs");
    node.start();
    let good = disk_names(&node, &["/dev/vdb"]).await;
    let bad = node.disk("/dev/vdc", DiskPhase::Unavailable).await;
    let bad = bad.metadata.name.expect("name");
    let claim = node
        .claim(
            "named",
            DiskSelector {
                local_disk_names: vec![good[0].clone(), bad.clone()],
                ..Default::default()
            },
        )
        .await;
    let c = node.wait_claim(&claim, ClaimPhase::Failed).await;
    let msg = c.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains(&bad) && msg.contains("xfs"), "{msg}");
    // Nothing was bound or touched.
    assert!(node
        .disks()
        .await
        .iter()
        .all(|d| d.spec.claim_ref.is_none()));
    assert_eq!(node.lvm.count(OpKind::CreatePv), 0);
    // The user drops the bad disk from the claim: it starts again and completes.
    Api::<LocalDiskClaim>::all(client.clone())
        .patch(
            &claim,
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({ "spec": { "description": { "localDiskNames": good } } }),
            ),
        )
        .await
        .expect("edit claim");
    node.wait_claim(&claim, ClaimPhase::Bound).await;
    node.cleanup().await;
}

#[tokio::test]
async fn a_disk_that_gains_data_before_pvcreate_is_refused_never_wiped() {
    let (_server, client) = cluster().await;
    let mut node = FakeNode::new(&client);
    node.add_disk("/dev/vdb", 101 * MI, true);
    node.add_disk("/dev/vdc", 101 * MI, true);
    node.start();
    let both = disk_names(&node, &["/dev/vdb", "/dev/vdc"]).await;
    // Hold pvcreate of vdc; meanwhile someone writes a filesystem on it.
    let gate = node.lvm.gate(OpKind::CreatePv, "/dev/vdc");
    let claim = node.claim("all", by_type(DiskType::Hdd)).await;
    eventually("pvcreate of vdc to be attempted", || async {
        node.lvm
            .calls()
            .iter()
            .any(|c| c.op == OpKind::CreatePv && c.target == "/dev/vdc")
            .then_some(())
    })
    .await;
    node.lvm.set_signature("/dev/vdc", "ext4");
    gate.release();
    // The claim gives vdc up (a selector claim goes on with what is left) and completes.
    let c = node.wait_claim(&claim, ClaimPhase::Bound).await;
    let st = c.status.expect("status");
    assert_eq!(st.bound_disks, vec![both[0].clone()]);
    let vdc = node.disk("/dev/vdc", DiskPhase::Unavailable).await;
    assert!(vdc.spec.claim_ref.is_none(), "released");
    assert_eq!(
        node.lvm.signature("/dev/vdc").as_deref(),
        Some("ext4"),
        "never wiped"
    );
    node.cleanup().await;
}

const CLAIM_POINTS: [CrashPoint; 3] = [
    CrashPoint::ClaimAfterChoose,
    CrashPoint::ClaimAfterBindDisk,
    CrashPoint::LvmAfterPvcreate,
];
const REPLICA_POINTS: [CrashPoint; 3] = [
    CrashPoint::ReplicaAfterFinalizer,
    CrashPoint::LvmAfterLvcreate,
    CrashPoint::LvmAfterLvremove,
];
const THIN_POINTS: [CrashPoint; 2] = [CrashPoint::LvmAfterThinPool, CrashPoint::LvmAfterLvcreate];
const SNAPSHOT_POINTS: [CrashPoint; 1] = [CrashPoint::SnapshotAfterLvcreate];

#[test]
fn every_crash_point_is_exercised_below() {
    let mut tested: Vec<&str> = CLAIM_POINTS
        .iter()
        .chain(REPLICA_POINTS.iter())
        .chain(THIN_POINTS.iter())
        .chain(SNAPSHOT_POINTS.iter())
        .map(|p| p.name())
        .collect();
    // HA points are exercised in tests/ha.rs (which checks them the same way), and so is
    // the restore's (a_thin_snapshot_restores_on_its_node_by_lvm_alone_even_across_a_crash).
    let mut all: Vec<&str> = CrashPoint::ALL
        .iter()
        .map(|p| p.name())
        .filter(|n| !n.starts_with("ha-") && *n != CrashPoint::RestoreAfterClone.name())
        .collect();
    tested.sort();
    tested.dedup();
    all.sort();
    assert_eq!(tested, all, "a crash point without a test");
}

#[tokio::test]
async fn a_claim_resumes_after_a_crash_at_each_of_its_points() {
    let (_server, client) = cluster().await;
    for point in CLAIM_POINTS {
        let mut node = FakeNode::new(&client);
        node.add_disk("/dev/vdb", 101 * MI, true);
        node.add_disk("/dev/vdc", 201 * MI, true);
        node.start();
        disk_names(&node, &["/dev/vdb", "/dev/vdc"]).await;
        node.stop();
        node.start_crashing_at(point);
        let claim = node.claim("crash", by_type(DiskType::Hdd)).await;
        assert_eq!(node.crash().await, point);
        // What the crash left behind.
        match point {
            CrashPoint::ClaimAfterChoose => {
                assert!(node
                    .disks()
                    .await
                    .iter()
                    .all(|d| d.spec.claim_ref.is_none()))
            }
            CrashPoint::ClaimAfterBindDisk => assert_eq!(
                node.disks()
                    .await
                    .iter()
                    .filter(|d| d.spec.claim_ref.is_some())
                    .count(),
                1
            ),
            CrashPoint::LvmAfterPvcreate => {
                let lvm = node.lvm.snapshot();
                assert_eq!(lvm.pvs.len(), 1, "one PV, in no group yet");
                assert!(lvm.vgs.is_empty());
            }
            _ => unreachable!(),
        }
        node.start();
        node.wait_claim(&claim, ClaimPhase::Bound).await;
        let lvm = node.lvm.snapshot();
        assert_eq!(lvm.vg(HDD).map(|g| g.pv_count), Some(2), "after {point:?}");
        assert_eq!(lvm.vgs.len(), 1);
        node.disk("/dev/vdb", DiskPhase::Bound).await;
        node.disk("/dev/vdc", DiskPhase::Bound).await;
        node.cleanup().await;
    }
}

#[tokio::test]
async fn a_transient_lvm_failure_while_extending_is_retried() {
    let (_server, client) = cluster().await;
    let mut node = FakeNode::new(&client);
    node.add_disk("/dev/vdb", 101 * MI, true);
    node.start();
    disk_names(&node, &["/dev/vdb"]).await;
    node.lvm.fail(
        OpKind::CreateVg,
        HDD,
        LvmError::Report {
            command: "vgcreate".into(),
            reason: "locking failed".into(),
        },
        Some(2),
    );
    let claim = node.claim("retry", by_type(DiskType::Hdd)).await;
    node.wait_claim(&claim, ClaimPhase::Bound).await;
    assert_eq!(node.lvm.count(OpKind::CreateVg), 3);
    node.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// Replicas

/// A node with a 300 MiB HDD pool and a running agent that has read it.

#[tokio::test]
async fn a_replica_is_created_grown_and_removed_with_one_lvm_command_each() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = unique("pvc");
    // Warm the view, then count.
    node.ctx().lvm.snapshot().await.expect("view");
    let reports = node.lvm.count(OpKind::Report);
    let r = node.replica(&volume, HDD, 5 * MI).await;
    let ready = node.wait_ready(&r, 8 * MI).await;
    let st = ready.status.clone().expect("status");
    assert_eq!(
        st.device_path.as_deref(),
        Some(format!("/dev/{HDD}/{volume}").as_str())
    );
    assert_eq!(
        st.synced, None,
        "no replication: nothing to be in sync with"
    );
    assert!(ready
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&FINALIZER_REPLICA.to_string()));
    assert_eq!(node.lvm.count(OpKind::CreateLv), 1);
    assert_eq!(
        node.lvm.count(OpKind::Report),
        reports,
        "a create with a warm view reads nothing from LVM"
    );
    // The background re-read fills in the disks the extents landed on.
    node.wait_replica(&r, "disks known", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.disks == vec!["/dev/vdb".to_string()])
    })
    .await;

    node.resize_replica(&r, 120 * MI).await;
    let grown = node.wait_ready(&r, 120 * MI).await;
    assert_eq!(node.lvm.count(OpKind::ExtendLv), 1);
    // 120 MiB does not fit on vdb (100 MiB of extents): the volume spans both disks.
    node.wait_replica(&r, "both disks listed", |r| {
        r.status.as_ref().is_some_and(|s| s.disks.len() == 2)
    })
    .await;
    assert_eq!(
        grown.status.and_then(|s| s.allocated_capacity_bytes),
        Some(120 * MI)
    );

    node.delete_replica(&r).await;
    node.wait_replica_gone(&r).await;
    assert!(node.lvm.snapshot().lv(HDD, &volume).is_none());
    assert_eq!(node.lvm.count(OpKind::RemoveLv), 1);
    node.cleanup().await;
}

#[tokio::test]
async fn a_volume_spanning_two_disks_counts_once_in_the_pool() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let r = node.replica(&unique("big"), HDD, 150 * MI).await;
    node.wait_ready(&r, 152 * MI).await;
    let lsn = eventually("the pool to count one volume", || async {
        node.lsn().await.filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.pools.get(HDD))
                .is_some_and(|p| p.free_capacity_bytes == 148 * MI)
        })
    })
    .await;
    let st = lsn.status.expect("status");
    assert_eq!(st.pools[HDD].volume_count, 1);
    assert_eq!(st.volume_count, 1);
    node.cleanup().await;
}

#[tokio::test]
async fn a_full_pool_leaves_the_replica_not_ready_until_there_is_room() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let r = node.replica(&unique("huge"), HDD, 400 * MI).await;
    let nr = node
        .wait_replica(&r, "NotReady", |r| {
            r.status.as_ref().and_then(|s| s.state) == Some(ReplicaState::NotReady)
        })
        .await;
    let msg = nr.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("free but") && msg.contains(HDD), "{msg}");
    assert_eq!(
        node.lvm.count(OpKind::CreateLv),
        0,
        "refused before asking LVM"
    );
    // A disk joins the pool (a claim): the replica is made without anyone touching it.
    node.add_disk("/dev/vdd", 201 * MI, true);
    node.rescan();
    let claim = node.claim("more", by_type(DiskType::Hdd)).await;
    node.wait_claim(&claim, ClaimPhase::Bound).await;
    node.wait_ready(&r, 400 * MI).await;
    node.cleanup().await;
}

#[tokio::test]
async fn lvm_failures_are_reported_and_retried_and_bad_names_fail_for_good() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = unique("flaky");
    node.lvm.fail(
        OpKind::CreateLv,
        &volume,
        LvmError::Report {
            command: "lvcreate".into(),
            reason: "device busy".into(),
        },
        Some(1),
    );
    let r = node.replica(&volume, HDD, 4 * MI).await;
    node.wait_ready(&r, 4 * MI).await;
    assert_eq!(node.lvm.count(OpKind::CreateLv), 2);

    // A volume name lvm2 refuses (the CSI layer maps names, but the agent must not loop).
    let bad = node.replica("snapshot-of-something", HDD, 4 * MI).await;
    let failed = node
        .wait_replica(&bad, "Failed", |r| {
            r.status.as_ref().and_then(|s| s.state) == Some(ReplicaState::Failed)
        })
        .await;
    assert!(failed
        .status
        .and_then(|s| s.message)
        .unwrap_or_default()
        .contains("not a valid logical volume name"));
    assert_eq!(
        node.lvm.count(OpKind::CreateLv),
        2,
        "no LVM call for a bad name"
    );
    node.cleanup().await;
}

#[tokio::test]
async fn an_open_volume_is_not_removed_until_it_is_closed() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = unique("busy");
    let r = node.replica(&volume, HDD, 4 * MI).await;
    node.wait_ready(&r, 4 * MI).await;
    node.lvm.set_open(HDD, &volume, true);
    node.rescan();
    node.delete_replica(&r).await;
    let held = node
        .wait_replica(&r, "Deleting with a reason", |r| {
            r.status.as_ref().and_then(|s| s.state) == Some(ReplicaState::Deleting)
        })
        .await;
    assert!(held
        .status
        .and_then(|s| s.message)
        .unwrap_or_default()
        .contains("is open"));
    assert!(node.lvm.snapshot().lv(HDD, &volume).is_some());
    node.lvm.set_open(HDD, &volume, false);
    node.rescan();
    node.wait_replica_gone(&r).await;
    node.cleanup().await;
}

#[tokio::test]
async fn an_inactive_volume_is_activated_and_a_vanished_one_is_never_recreated() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = unique("v");
    let r = node.replica(&volume, HDD, 4 * MI).await;
    node.wait_ready(&r, 4 * MI).await;
    node.lvm.deactivate(HDD, &volume);
    node.rescan();
    eventually("the volume to be activated again", || async {
        (node.lvm.count(OpKind::ActivateLv) == 1).then_some(())
    })
    .await;
    assert!(node
        .lvm
        .snapshot()
        .lv(HDD, &volume)
        .is_some_and(|l| l.active()));

    node.lvm.remove_behind_the_back(HDD, &volume);
    node.rescan();
    let lost = node
        .wait_replica(&r, "Failed", |r| {
            r.status.as_ref().and_then(|s| s.state) == Some(ReplicaState::Failed)
        })
        .await;
    assert!(lost
        .status
        .and_then(|s| s.message)
        .unwrap_or_default()
        .contains("not recreated empty"));
    assert_eq!(node.lvm.count(OpKind::CreateLv), 1, "never recreated");
    // Deleting it still works: there is nothing left to remove.
    node.delete_replica(&r).await;
    node.wait_replica_gone(&r).await;
    node.cleanup().await;
}

#[tokio::test]
async fn a_replica_resumes_after_a_crash_at_each_of_its_points() {
    let (_server, client) = cluster().await;
    for point in REPLICA_POINTS {
        let mut node = node_with_pool(&client).await;
        let volume = unique("crash");
        let r = if point == CrashPoint::LvmAfterLvremove {
            let r = node.replica(&volume, HDD, 4 * MI).await;
            node.wait_ready(&r, 4 * MI).await;
            node.stop();
            node.start_crashing_at(point);
            node.delete_replica(&r).await;
            r
        } else {
            node.stop();
            node.start_crashing_at(point);
            node.replica(&volume, HDD, 4 * MI).await
        };
        assert_eq!(node.crash().await, point);
        let lv = node.lvm.snapshot().lv(HDD, &volume).cloned();
        match point {
            CrashPoint::ReplicaAfterFinalizer => assert!(lv.is_none()),
            CrashPoint::LvmAfterLvcreate => {
                assert!(lv.is_some());
                let st = node.get_replica(&r).await.and_then(|r| r.status);
                assert!(st.and_then(|s| s.state).is_none(), "status not written yet");
            }
            CrashPoint::LvmAfterLvremove => {
                assert!(lv.is_none());
                assert!(node.get_replica(&r).await.is_some(), "finalizer still held");
            }
            _ => unreachable!(),
        }
        node.start();
        if point == CrashPoint::LvmAfterLvremove {
            node.wait_replica_gone(&r).await;
        } else {
            node.wait_ready(&r, 4 * MI).await;
        }
        let lvs = node.lvm.snapshot().lvs;
        let expected = usize::from(point != CrashPoint::LvmAfterLvremove);
        assert_eq!(lvs.len(), expected, "after {point:?}: {lvs:?}");
        assert_eq!(
            node.lvm.count(OpKind::CreateLv),
            1,
            "after {point:?}: created once"
        );
        node.cleanup().await;
    }
}

#[tokio::test]
async fn a_slow_volume_blocks_neither_another_pool_nor_disk_discovery() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    node.add_disk("/dev/vdd", 101 * MI, false);
    node.pool(SSD, &["/dev/vdd"]).await;
    node.rescan();
    node.disk("/dev/vdd", DiskPhase::Bound).await;
    let slow = unique("slow");
    let gate = node.lvm.gate(OpKind::CreateLv, &slow);
    let r_slow = node.replica(&slow, HDD, 4 * MI).await;
    eventually("the slow lvcreate to start", || async {
        node.lvm
            .calls()
            .iter()
            .any(|c| c.op == OpKind::CreateLv && c.target.contains(&slow))
            .then_some(())
    })
    .await;
    // Another pool goes ahead.
    let fast = node.replica(&unique("fast"), SSD, 4 * MI).await;
    node.wait_ready(&fast, 4 * MI).await;
    // A disk plugged in now is discovered now.
    node.add_disk("/dev/vdf", 101 * MI, true);
    node.rescan();
    node.disk("/dev/vdf", DiskPhase::Available).await;
    assert!(
        node.get_replica(&r_slow)
            .await
            .and_then(|r| r.status)
            .and_then(|s| s.state)
            .is_none(),
        "the slow one is still held"
    );
    gate.release();
    node.wait_ready(&r_slow, 4 * MI).await;
    node.cleanup().await;
}

#[tokio::test]
async fn another_nodes_objects_are_never_touched() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let mut other = FakeNode::new(&client);
    let theirs = other.replica(&unique("theirs"), HDD, 4 * MI).await;
    let ours = node.replica(&unique("ours"), HDD, 4 * MI).await;
    node.wait_ready(&ours, 4 * MI).await;
    let r = other.get_replica(&theirs).await.expect("exists");
    assert!(r.metadata.finalizers.unwrap_or_default().is_empty());
    assert!(r.status.is_none());
    assert_eq!(node.lvm.count(OpKind::CreateLv), 1);
    let claim = other.claim("theirs", DiskSelector::default()).await;
    let c = Api::<LocalDiskClaim>::all(client.clone())
        .get(&claim)
        .await
        .expect("claim");
    assert!(c.status.is_none(), "not this agent's claim");
    assert!(names(&node.disks().await).len() >= 2);
    other.cleanup().await;
    node.cleanup().await;
}

/// A thin pool filling up is grown by its agent from the group's free space, with an event
/// on the node; once the group has no more room, the pool's use past the warning mark is a
/// Warning event, told once; the node's pool status reports the pool's use.
#[tokio::test]
async fn a_filling_thin_pool_is_grown_then_warned_about_once() {
    use hwameistor_core::thin::THIN_POOL_LV;
    use hwameistor_hostexec::lvm::Lvm;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::api::ListParams;
    let (_server, client) = cluster().await;
    let mut node = FakeNode::new(&client);
    // 700 MiB: 696 MiB of extents; a 512 MiB pool and its metadata (twice 8 MiB) leave 168.
    node.add_disk("/dev/vdb", 700 * MI, true);
    node.start();
    node.disk("/dev/vdb", DiskPhase::Available).await;
    let claim = node.claim("hdd", by_type(DiskType::Hdd)).await;
    node.wait_claim(&claim, ClaimPhase::Bound).await;
    node.lvm
        .create_thin_pool(HDD, THIN_POOL_LV, 512 * MI, 8 * MI)
        .await
        .expect("pool");
    node.lvm
        .create_thin_lv(HDD, THIN_POOL_LV, "t1", 1024 * MI)
        .await
        .expect("thin");
    let ctx = node.ctx();
    ctx.lvm.invalidate();

    // 400 MiB written (78%): grown by a quarter, to 640 MiB.
    node.lvm.write_thin(HDD, "t1", 400 * MI);
    ctx.lvm.reread(true).await.expect("reread");
    hwameistor_agent::scanner::scan_once(&ctx)
        .await
        .expect("scan");
    let pool = |s: &hwameistor_core::lvm::LvmState| {
        hwameistor_core::thin::thin_pool(s, HDD).expect("pool")
    };
    assert_eq!(pool(&node.lvm.snapshot()).data_bytes, 640 * MI);
    let lsn = eventually("the pool's thin use published", || async {
        let n = Api::<LocalStorageNode>::all(client.clone())
            .get(&node.name)
            .await
            .ok()?;
        let t = n.status?.pools.get(HDD)?.thin.clone()?;
        (t.data_bytes == 640 * MI).then_some(t)
    })
    .await;
    assert_eq!((lsn.data_used_percent, lsn.volume_count), (62, 1));

    // 600 MiB written (94%): the group has 40 MiB left; all of it goes to the pool, which
    // stays past 80%: a warning, told once over the next scans.
    node.lvm.write_thin(HDD, "t1", 600 * MI);
    for _ in 0..3 {
        ctx.lvm.reread(true).await.expect("reread");
        hwameistor_agent::scanner::scan_once(&ctx)
            .await
            .expect("scan");
    }
    let p = pool(&node.lvm.snapshot());
    assert_eq!(p.data_bytes, 680 * MI);
    assert_eq!(node.lvm.snapshot().vg(HDD).expect("vg").free, 0);
    assert_eq!(
        node.lvm.count(OpKind::ExtendLv),
        2,
        "no growth without room"
    );
    // The recorder folds repeats of one event into a series: the growth is one event seen
    // twice, the warning one event seen once.
    let events = eventually("the events", || async {
        let events: Vec<(String, String, i32)> =
            Api::<K8sEvent>::namespaced(client.clone(), "default")
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node.name.as_str())
                })
                .filter_map(|e| {
                    let seen = e.series.as_ref().map(|x| x.count).unwrap_or(1);
                    Some((e.reason?, e.note.unwrap_or_default(), seen))
                })
                .collect();
        events
            .iter()
            .any(|e| e.0 == "ThinPoolGrown" && e.2 == 2)
            .then_some(events)
    })
    .await;
    let filling: Vec<&(String, String, i32)> =
        events.iter().filter(|e| e.0 == "ThinPoolFilling").collect();
    assert_eq!(filling.len(), 1, "{events:?}");
    assert_eq!(filling[0].2, 1, "told once: {events:?}");
    assert!(filling[0].1.contains("data is 88.2% used"), "{events:?}");
    node.cleanup().await;
}

/// A thin replica is made in its group's thin pool (created for it, sized by the ratio),
/// reported with the pool; one that would over-provision the pool past the ratio while the
/// group has no room to grow it is refused with the numbers, and made once room is back.
#[tokio::test]
async fn thin_replicas_are_made_in_the_thin_pool_and_refused_past_the_ratio() {
    use hwameistor_core::thin::{thin_pool, THIN_POOL_LV};
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    // 300 MiB of extents. 200 MiB thin at ratio 2: a pool of 100 MiB (+ 2 x 8 MiB metadata).
    let t1 = node.thin_replica(&unique("thin"), HDD, 200 * MI).await;
    let ready = node.wait_ready(&t1, 200 * MI).await;
    let volume = ready.spec.volume_name.clone();
    let s = node.lvm.snapshot();
    let lv = s.lv(HDD, &volume).expect("thin volume");
    assert_eq!(lv.pool_lv.as_deref(), Some(THIN_POOL_LV));
    let p = thin_pool(&s, HDD).expect("pool");
    assert_eq!((p.data_bytes, p.provisioned_bytes), (100 * MI, 200 * MI));
    assert_eq!(s.vg(HDD).expect("vg").free, 300 * MI - 116 * MI);
    assert_eq!(node.lvm.count(OpKind::CreateLv), 0, "nothing thick");
    // The node reports the pool and its ratio, which placement reads.
    let pool = eventually("the thin pool reported", || async {
        let n = Api::<LocalStorageNode>::all(client.clone())
            .get(&node.name)
            .await
            .ok()?;
        let p = n.status?.pools.get(HDD)?.clone();
        (p.thin.as_ref()?.provisioned_bytes == 200 * MI).then_some(p)
    })
    .await;
    assert_eq!(pool.thin_overprovision_percent, Some(200));
    assert_eq!(pool.volume_count, 1, "the pool is no volume");

    // 300 MiB more: the pool grows to 252 MiB (152 of the 184 MiB left).
    let t2 = node.thin_replica(&unique("thin"), HDD, 300 * MI).await;
    node.wait_ready(&t2, 300 * MI).await;
    assert_eq!(
        thin_pool(&node.lvm.snapshot(), HDD)
            .expect("pool")
            .data_bytes,
        252 * MI
    );
    // 200 MiB more needs a 352 MiB pool: 100 MiB more than the 32 MiB left. Refused.
    let t3 = node.thin_replica(&unique("thin"), HDD, 200 * MI).await;
    let refused = node
        .wait_replica(&t3, "refused with a reason", |r| {
            r.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("cannot take"))
        })
        .await;
    let msg = refused.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("thin pool LocalStorage_PoolHDD/hwameistor-thin cannot take 200Mi more: 500Mi are provisioned in it, at most 2 times its data may be, and the group has 32Mi free to grow it (it needs 100Mi)"),
        "{msg}"
    );
    // t2 goes: t1 + t3 fit the pool as it is; t3 is made without growing it.
    node.delete_replica(&t2).await;
    node.wait_replica_gone(&t2).await;
    node.wait_ready(&t3, 200 * MI).await;
    let p = thin_pool(&node.lvm.snapshot(), HDD).expect("pool");
    assert_eq!((p.data_bytes, p.provisioned_bytes), (252 * MI, 400 * MI));
    assert_eq!(node.lvm.count(OpKind::CreateThinPool), 1);
    node.cleanup().await;
}

#[tokio::test]
async fn a_thin_replica_resumes_after_a_crash_at_each_of_its_points() {
    use hwameistor_core::thin::thin_pool;
    let (_server, client) = cluster().await;
    for point in THIN_POINTS {
        let mut node = node_with_pool(&client).await;
        let volume = unique("crash");
        node.stop();
        node.start_crashing_at(point);
        let r = node.thin_replica(&volume, HDD, 40 * MI).await;
        assert_eq!(node.crash().await, point);
        let s = node.lvm.snapshot();
        assert!(thin_pool(&s, HDD).is_some(), "the pool is made first");
        assert_eq!(
            s.lv(HDD, &volume).is_some(),
            point == CrashPoint::LvmAfterLvcreate,
            "after {point:?}"
        );
        node.start();
        node.wait_ready(&r, 40 * MI).await;
        assert_eq!(node.lvm.count(OpKind::CreateThinPool), 1, "after {point:?}");
        assert_eq!(node.lvm.count(OpKind::CreateThinLv), 1, "after {point:?}");
        node.cleanup().await;
    }
}

/// A snapshot object for `volume` on `node`'s HDD pool (copy-on-write space `cow`, or thin).
async fn snapshot_of(node: &FakeNode, volume: &str, bytes: i64, cow: Option<i64>) -> String {
    let name = unique("snap");
    Api::<LocalVolumeSnapshot>::all(node.client.clone())
        .create(
            &kube::api::PostParams::default(),
            &LocalVolumeSnapshot::new(
                &name,
                LocalVolumeSnapshotSpec {
                    source_volume: volume.into(),
                    node_name: node.name.clone(),
                    pool_name: HDD.into(),
                    source_capacity_bytes: bytes,
                    cow_capacity_bytes: cow,
                },
            ),
        )
        .await
        .expect("create snapshot");
    name
}

async fn wait_snapshot(
    node: &FakeNode,
    name: &str,
    what: &str,
    check: impl Fn(&LocalVolumeSnapshotStatus) -> bool,
) -> LocalVolumeSnapshot {
    let api = Api::<LocalVolumeSnapshot>::all(node.client.clone());
    eventually(&format!("snapshot {name}: {what}"), || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|s| s.status.as_ref().is_some_and(&check))
    })
    .await
}

/// A thick volume's snapshot is taken once with its copy-on-write space, reported Ready with
/// its use, warned about as it fills, Failed (with an event) once LVM invalidates it, and
/// removed with its object; the volume cannot be removed while it has one.
#[tokio::test]
async fn snapshots_are_taken_once_watched_as_they_fill_and_removed() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::api::ListParams;
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = unique("data");
    let r = node.replica(&volume, HDD, 40 * MI).await;
    node.wait_ready(&r, 40 * MI).await;
    let snap = snapshot_of(&node, &volume, 40 * MI, Some(10 * MI)).await;
    let ready = wait_snapshot(&node, &snap, "Ready", |s| s.ready_to_use).await;
    let st = ready.status.clone().expect("status");
    assert_eq!(st.used_percent, Some(0));
    assert!(st.creation_time.is_some());
    let lv_name = hwameistor_core::snapshot::lv_name(&snap);
    let lv = node
        .lvm
        .snapshot()
        .lv(HDD, &lv_name)
        .cloned()
        .expect("LVM snapshot");
    assert_eq!(
        (lv.origin.as_deref(), lv.size),
        (Some(volume.as_str()), 12 * MI)
    );
    assert_eq!(node.lvm.count(OpKind::CreateSnapshot), 1);

    // 10 of its 12 MiB used: a warning; then more than its space: invalid, Failed.
    node.lvm.write_origin(HDD, &volume, 10 * MI);
    node.rescan();
    wait_snapshot(&node, &snap, "83% used", |s| s.used_percent == Some(83)).await;
    node.lvm.write_origin(HDD, &volume, 4 * MI);
    node.rescan();
    let failed = wait_snapshot(&node, &snap, "Failed", |s| {
        s.state == Some(SnapshotState::Failed)
    })
    .await;
    assert!(!failed.status.clone().expect("status").ready_to_use);
    let reasons = eventually("the events", || async {
        let reasons: Vec<String> = Api::<K8sEvent>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(snap.as_str()))
            .filter_map(|e| e.reason)
            .collect();
        reasons
            .iter()
            .any(|r| r == "SnapshotFailed")
            .then_some(reasons)
    })
    .await;
    for r in ["SnapshotReady", "SnapshotFilling", "SnapshotFailed"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} missing from {reasons:?}"
        );
    }
    assert_eq!(node.lvm.count(OpKind::CreateSnapshot), 1, "never re-taken");

    // The volume's replica cannot go while its snapshot exists (lvremove would take it).
    node.delete_replica(&r).await;
    let held = node
        .wait_replica(&r, "Deleting with a reason", |r| {
            r.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("has snapshots"))
        })
        .await;
    assert!(node.lvm.snapshot().lv(HDD, &volume).is_some(), "{held:?}");
    // The snapshot goes, then the replica.
    Api::<LocalVolumeSnapshot>::all(client.clone())
        .delete(&snap, &Default::default())
        .await
        .expect("delete snapshot");
    eventually("the snapshot object gone", || async {
        Api::<LocalVolumeSnapshot>::all(client.clone())
            .get_opt(&snap)
            .await
            .ok()
            .and_then(|o| o.is_none().then_some(()))
    })
    .await;
    node.wait_replica_gone(&r).await;
    assert!(node.lvm.snapshot().lvs.is_empty());
    node.cleanup().await;
}

/// A thin volume's snapshot is thin (no space of its own); a snapshot whose logical volume
/// vanishes after it was taken is Failed, never taken again.
#[tokio::test]
async fn thin_snapshots_share_the_pool_and_a_lost_one_is_never_retaken() {
    let (_server, client) = cluster().await;
    let mut node = node_with_pool(&client).await;
    let volume = unique("thin");
    let r = node.thin_replica(&volume, HDD, 100 * MI).await;
    node.wait_ready(&r, 100 * MI).await;
    let free = node.lvm.snapshot().vg(HDD).expect("vg").free;
    let snap = snapshot_of(&node, &volume, 100 * MI, None).await;
    wait_snapshot(&node, &snap, "Ready", |s| s.ready_to_use).await;
    let s = node.lvm.snapshot();
    let lv = s
        .lv(HDD, &hwameistor_core::snapshot::lv_name(&snap))
        .cloned()
        .expect("thin snapshot");
    assert_eq!(lv.pool_lv.as_deref(), Some("hwameistor-thin"));
    assert_eq!(s.vg(HDD).expect("vg").free, free, "no space of its own");
    // Removed by hand: Failed, and never re-taken.
    node.lvm.remove_behind_the_back(HDD, &lv.name);
    node.rescan();
    let failed = wait_snapshot(&node, &snap, "Failed", |s| {
        s.state == Some(SnapshotState::Failed)
    })
    .await;
    assert!(failed
        .status
        .and_then(|s| s.message)
        .is_some_and(|m| m.contains("not taken again")));
    assert_eq!(node.lvm.count(OpKind::CreateSnapshot), 1);
    node.cleanup().await;
}

#[tokio::test]
async fn a_snapshot_resumes_after_a_crash_at_each_of_its_points() {
    let (_server, client) = cluster().await;
    for point in SNAPSHOT_POINTS {
        let mut node = node_with_pool(&client).await;
        let volume = unique("crash");
        let r = node.replica(&volume, HDD, 8 * MI).await;
        node.wait_ready(&r, 8 * MI).await;
        node.stop();
        node.start_crashing_at(point);
        let snap = snapshot_of(&node, &volume, 8 * MI, Some(8 * MI)).await;
        assert_eq!(node.crash().await, point);
        let lv = hwameistor_core::snapshot::lv_name(&snap);
        assert!(node.lvm.snapshot().lv(HDD, &lv).is_some(), "taken");
        node.start();
        wait_snapshot(&node, &snap, "Ready", |s| s.ready_to_use).await;
        assert_eq!(node.lvm.count(OpKind::CreateSnapshot), 1, "taken once");
        Api::<LocalVolumeSnapshot>::all(client.clone())
            .delete(&snap, &Default::default())
            .await
            .expect("delete snapshot");
        node.cleanup().await;
    }
}
