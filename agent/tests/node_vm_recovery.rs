//! Crash safety and stable identity, in a real kernel: the agent is killed between the steps
//! of a claim and of a volume operation and must converge when restarted, with nothing
//! leaked or lost; a node rebooted with its disks attached in another order keeps the same
//! LocalDisk names. Needs root and qemu-system-x86_64.

mod support;

use hwameistor_api::*;
use hwameistor_sandbox::run_prefix;
use hwameistor_testbed::VmSpec;
use kube::api::Api;
use std::collections::BTreeMap;
use support::*;

/// Kills the agent (like a node losing power under it) and waits until it is gone.
async fn stop_agent(sb: &hwameistor_sandbox::Sandbox, node: &str, pid: u32) {
    sb.testbed.vm(node).kill(pid, 9).await.expect("kill agent");
    check(sb, node, wait_exited(sb, node, pid).await).await;
    let left = sb
        .testbed
        .vm(node)
        .exec_ok("pidof hwameistor-agent || true")
        .await
        .expect("pidof");
    assert!(left.trim().is_empty(), "an agent is still running: {left}");
}

/// Starts the agent armed with `point`, waits until it aborted there, and checks the log
/// says so (so the test proves the crash happened where it claims).
async fn crash_at(sb: &hwameistor_sandbox::Sandbox, node: &str, point: &str) {
    let pid = sb
        .start_agent(node, &[("HWAMEISTOR_CRASH_POINT", point)])
        .await
        .expect("agent");
    check(sb, node, wait_exited(sb, node, pid).await).await;
    let log = sb.agent_log(node).await;
    assert!(
        log.contains(&format!("crash point {point} reached")),
        "agent did not stop at {point}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_between_steps_converges_without_leaks() {
    let node = format!("{}-n2", run_prefix());
    let sb = start(vec![VmSpec::new(&node)
        .disk("crash-a", 256 * MIB)
        .disk("crash-b", 256 * MIB)])
    .await;
    let vm = sb.testbed.vm(&node);

    // Discover the disks with a normal agent, then stop it.
    let pid = sb.start_agent(&node, &[]).await.expect("agent");
    let disks = check(&sb, &node, wait_disks(&sb, &node, 2).await).await;
    stop_agent(&sb, &node, pid).await;

    // Claim: crash after choosing the disks, after binding the first, after its pvcreate.
    let claim = format!("{node}-c");
    let names = vec![
        name(by_serial(&disks, "crash-a")),
        name(by_serial(&disks, "crash-b")),
    ];
    create_claim(
        &sb,
        &claim,
        &node,
        DiskSelector {
            local_disk_names: names.clone(),
            ..Default::default()
        },
    )
    .await;
    crash_at(&sb, &node, "claim-after-choose").await;
    let c = wait_claim(&sb, &claim, ClaimPhase::Extending)
        .await
        .expect("claim extending");
    assert_eq!(c.status.expect("status").bound_disks, names);

    crash_at(&sb, &node, "claim-after-bind-disk").await;
    let bound: Vec<_> = node_disks(&sb, &node)
        .await
        .into_iter()
        .filter(|d| d.spec.claim_ref.is_some())
        .collect();
    assert_eq!(bound.len(), 1, "exactly one disk bound when the agent died");

    crash_at(&sb, &node, "lvm-after-pvcreate").await;
    // A physical volume exists that belongs to no volume group yet: a half-done extend.
    let pvs = vm
        .exec_ok("pvs --noheadings -o pv_name,vg_name")
        .await
        .expect("pvs");
    assert_eq!(pvs.lines().count(), 1, "one PV after the crash: {pvs}");
    assert_eq!(
        pvs.split_whitespace().count(),
        1,
        "the PV has no VG yet: {pvs}"
    );

    let pid = sb.start_agent(&node, &[]).await.expect("agent");
    let done = check(&sb, &node, wait_claim(&sb, &claim, ClaimPhase::Bound).await).await;
    assert_eq!(done.status.expect("status").bound_disks.len(), 2);
    assert_eq!(
        vm.exec_ok("vgs --noheadings -o pv_count LocalStorage_PoolHDD")
            .await
            .expect("vgs")
            .trim(),
        "2"
    );
    // Let the scan publish both disks as pool members, then stop the agent again.
    check(
        &sb,
        &node,
        hwameistor_sandbox::eventually(WAIT, "disks Bound", || async {
            let d = node_disks(&sb, &node).await;
            Ok(d.iter()
                .all(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Bound))
                .then_some(()))
        })
        .await,
    )
    .await;
    stop_agent(&sb, &node, pid).await;

    // Volume create: crash after the finalizer is set, then right after lvcreate.
    let r = create_replica(&sb, "cvol", &node, 32 << 20).await;
    crash_at(&sb, &node, "replica-after-finalizer").await;
    let api: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let obj = api.get(&r).await.expect("replica");
    assert!(obj
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&FINALIZER_REPLICA.to_string()));
    assert_eq!(
        lv_size(&sb, &node, "LocalStorage_PoolHDD", "cvol").await,
        None,
        "no LV before lvcreate"
    );

    crash_at(&sb, &node, "lvm-after-lvcreate").await;
    assert_eq!(
        lv_size(&sb, &node, "LocalStorage_PoolHDD", "cvol").await,
        Some(32 << 20)
    );
    assert_ne!(
        api.get(&r)
            .await
            .expect("replica")
            .status
            .and_then(|s| s.state),
        Some(ReplicaState::Ready)
    );

    let pid = sb.start_agent(&node, &[]).await.expect("agent");
    check(&sb, &node, wait_replica_ready(&sb, &r, 32 << 20).await).await;
    let lvs = vm
        .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD")
        .await
        .expect("lvs");
    assert_eq!(
        lvs.split_whitespace().collect::<Vec<_>>(),
        ["cvol"],
        "exactly one LV, no leftovers"
    );

    // Volume delete: crash after lvremove, before the finalizer is released.
    stop_agent(&sb, &node, pid).await;
    delete_replica(&sb, &r).await;
    crash_at(&sb, &node, "lvm-after-lvremove").await;
    assert_eq!(
        lv_size(&sb, &node, "LocalStorage_PoolHDD", "cvol").await,
        None
    );
    assert!(
        api.get_opt(&r).await.expect("get").is_some(),
        "the object outlives its LV until the finalizer goes"
    );
    sb.start_agent(&node, &[]).await.expect("agent");
    check(&sb, &node, wait_replica_gone(&sb, &r).await).await;
    let lvs = vm
        .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD")
        .await
        .expect("lvs");
    assert!(lvs.trim().is_empty(), "no LV leaked: {lvs}");
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_with_disks_in_another_order_keeps_names() {
    let node = format!("{}-n3", run_prefix());
    let serials = ["ord-a", "ord-b", "ord-c"];
    let mut spec = VmSpec::new(&node);
    for (i, s) in serials.iter().enumerate() {
        spec = spec.disk(*s, (200 + 50 * i as u64) * MIB);
    }
    let mut sb = start(vec![spec]).await;
    sb.start_agent(&node, &[]).await.expect("agent");
    let before = check(&sb, &node, wait_disks(&sb, &node, 3).await).await;
    let names_before: BTreeMap<String, (String, String)> = serials
        .iter()
        .map(|s| {
            let d = by_serial(&before, s);
            (
                s.to_string(),
                (
                    name(d),
                    d.status
                        .as_ref()
                        .and_then(|s| s.device_path.clone())
                        .expect("dev"),
                ),
            )
        })
        .collect();
    // Put ord-a into a pool so the reboot also has data to keep.
    create_claim(
        &sb,
        &format!("{node}-c"),
        &node,
        DiskSelector {
            local_disk_names: vec![names_before["ord-a"].0.clone()],
            ..Default::default()
        },
    )
    .await;
    check(
        &sb,
        &node,
        wait_claim(&sb, &format!("{node}-c"), ClaimPhase::Bound).await,
    )
    .await;

    sb.testbed
        .vm_mut(&node)
        .reboot(Some(vec!["ord-c".into(), "ord-b".into(), "ord-a".into()]))
        .await
        .expect("reboot");
    let vm = sb.testbed.vm(&node);
    let now_a = vm
        .exec_ok("readlink -f /dev/disk/by-id/virtio-ord-a")
        .await
        .expect("readlink");
    assert_ne!(
        now_a.trim(),
        names_before["ord-a"].1,
        "the reboot must really have moved the disk"
    );
    sb.start_agent(&node, &[]).await.expect("agent");
    let after = check(
        &sb,
        &node,
        hwameistor_sandbox::eventually(WAIT, "device paths updated after reboot", || async {
            let d = node_disks(&sb, &node).await;
            let moved = d.iter().any(|d| {
                d.status.as_ref().and_then(|s| s.device_path.as_deref()) == Some(now_a.trim())
                    && d.status.as_ref().and_then(|s| s.serial.as_deref()) == Some("ord-a")
            });
            Ok(moved.then_some(d))
        })
        .await,
    )
    .await;
    assert_eq!(after.len(), 3, "no new LocalDisk appeared");
    for s in serials {
        let d = by_serial(&after, s);
        assert_eq!(name(d), names_before[s].0, "disk {s} kept its name");
        assert_eq!(
            d.status.as_ref().and_then(|s| s.state),
            Some(DiskPresence::Active)
        );
    }
    let a = by_serial(&after, "ord-a").status.clone().expect("status");
    assert_eq!(
        (a.phase, a.pool.as_deref()),
        (Some(DiskPhase::Bound), Some("LocalStorage_PoolHDD"))
    );
    sb.shutdown().await.expect("shutdown");
}
