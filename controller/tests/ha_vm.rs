//! HA volumes on real nodes: two QEMU VMs joined by a private link run the real agent with
//! DRBD 8.4; the test process runs the volume reconciler, the failover loop and the CSI
//! controller service against the test API server, and drives each node's CSI service as
//! the kubelet would. A volume is created on both nodes and synced, written and checksummed
//! on one, moved to the other with the same checksum, then the serving node's VM is killed
//! outright mid-write: the survivor takes over after fencing with every acknowledged record,
//! and the killed node, powered on again, resyncs and is healthy.
//!
//! Needs root, QEMU and the host packages of scripts/install-host-deps.sh, and the agent,
//! the DRBD helper and the csi_node_call example built (`cargo build --workspace
//! --all-targets`).

mod vm_support;

use hwameistor_controller::failover::{self, FailoverConfig};
use kube::api::{Patch, PatchParams};
use std::time::Instant;
use vm_support::*;

/// The grace the controller's failover loop adds to a silent heartbeat.
const GRACE: Duration = Duration::from_secs(2);

/// Two node VMs (`<run>-<tag>1`, `<run>-<tag>2`) with the HA agent and a pool each, and the
/// name of this test's volume.
async fn ha_sandbox(tag: &str, volume: &str) -> (Sandbox, String, String, String) {
    let (sb, mut nodes, vol) = ha_nodes(tag, volume, 2).await;
    let n2 = nodes.pop().expect("two nodes");
    let n1 = nodes.pop().expect("two nodes");
    (sb, n1, n2, vol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_volume_moves_between_nodes_and_survives_the_loss_of_its_node() {
    let (mut sb, n1, n2, vol) = ha_sandbox("h", "ha").await;
    let nodes = [n1.as_str(), n2.as_str()];
    let (reconciler, csi) = control_plane(&sb, "ha-vm-test", Duration::from_secs(120));
    let failover_loop = {
        let ctx = hwameistor_controller::volume_reconciler::Context::new(
            sb.client.clone(),
            "ha-vm-failover",
            Arc::new(Metrics::default()),
            Policy::default(),
        );
        tokio::spawn(failover::run(
            ctx,
            FailoverConfig {
                namespace: LEASES.into(),
                grace: GRACE,
                tick: Duration::from_millis(250),
            },
        ))
    };

    // Created on n1 (the pod's node) and n2, initial sync over the private link.
    let created = csi
        .create_volume(Request::new(ha_create(&vol, 128 * MIB, &n1)))
        .await;
    if let Err(e) = created {
        panic!("create: {e:?}{}", logs(&sb, &nodes).await);
    }
    let v = wait_volume(&sb, &nodes, &vol, "Ready and Healthy", healthy).await;
    assert_eq!(primary(&v).as_deref(), Some(n1.as_str()));
    let minor = v.spec.config.as_ref().expect("config").resource_id;
    for n in nodes {
        let vm = sb.testbed.vm(n);
        let lvs = vm
            .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD")
            .await
            .expect("lvs");
        let mut names: Vec<&str> = lvs.split_whitespace().collect();
        names.sort();
        assert_eq!(names, [vol.clone(), format!("{vol}_drbdmeta")], "on {n}");
        let state = vm
            .exec_ok(&format!(
                "drbdsetup-84 events2 --now {vol} 2>/dev/null || cat /proc/drbd"
            ))
            .await
            .unwrap_or_default();
        assert!(state.contains("UpToDate"), "{n}: {state}");
    }

    // Served on n1 from the DRBD device: data with a checksum.
    let dev = publish(&csi, &vol, &n1).await.expect("publish on n1");
    assert_eq!(dev, format!("/dev/drbd{minor}"));
    let target = mount_on(&sb, &n1, &vol, &dev, "pod-1").await;
    sb.testbed
        .vm(&n1)
        .exec_ok(&format!(
            "dd if=/dev/urandom of={target}/data bs=1M count=8 2>/dev/null && sync"
        ))
        .await
        .expect("write data");
    let sum = sha256(sb.testbed.vm(&n1), &format!("cat {target}/data")).await;

    // Moved to n2: unstaged (demoted) on n1, the primary switches, same data there.
    unmount_on(&sb, &n1, &vol, "pod-1").await;
    unpublish(&csi, &vol, &n1).await;
    let dev2 = ok(
        &sb,
        &nodes,
        eventually(WAIT, "publish on n2", || async {
            Ok(publish(&csi, &vol, &n2).await.ok())
        })
        .await,
    )
    .await;
    assert_eq!(dev2, dev);
    assert_eq!(
        primary(&volume(&sb, &vol).await).as_deref(),
        Some(n2.as_str())
    );
    let target2 = mount_on(&sb, &n2, &vol, &dev2, "pod-2").await;
    let sum2 = sha256(sb.testbed.vm(&n2), &format!("cat {target2}/data")).await;
    assert_eq!(sum2, sum, "same data on the other node");

    // Grown online while in use on n2: both volumes, then the device, then ext4.
    let before = df_bytes(sb.testbed.vm(&n2), &target2).await;
    let grown = csi
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: vol.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 192 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(cap("ext4")),
            ..Default::default()
        }))
        .await;
    match grown {
        Ok(g) => assert_eq!(g.into_inner().capacity_bytes, 192 * MIB),
        Err(e) => panic!("expand: {e:?}{}", logs(&sb, &nodes).await),
    }
    for n in nodes {
        assert_eq!(
            lv_size(sb.testbed.vm(n), &vol).await,
            Some(192 * MIB),
            "on {n}"
        );
    }
    let (staging2, _) = paths(&vol, "pod-2");
    let out = call(
        &sb,
        sb.testbed.vm(&n2),
        &n2,
        &format!("expand {vol} {target2} {staging2} {}", 192 * MIB),
    )
    .await;
    assert_eq!(out, format!("ok capacity_bytes={}", 192 * MIB));
    let after = df_bytes(sb.testbed.vm(&n2), &target2).await;
    assert!(
        after > before + 50 * MIB,
        "ext4 did not grow: {before} -> {after}"
    );
    let sum3 = sha256(sb.testbed.vm(&n2), &format!("cat {target2}/data")).await;
    assert_eq!(sum3, sum, "data intact after growth");
    // The grown area resyncs to n1; until it is done n1 holds no up-to-date copy (and a
    // failover to it would be refused).
    wait_volume(&sb, &nodes, &vol, "healthy after growth", healthy).await;

    // n2 dies mid-write: a writer appends fsynced records; the last one read back proves
    // every earlier one was acknowledged durable.
    sb.testbed.vm(&n2).spawn(
        &format!("i=0; while true; do echo record-$i >> {target2}/log; sync {target2}/log; i=$((i+1)); done"),
        "/tmp/writer.log",
    )
    .await
    .expect("writer");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last_line = sb
        .testbed
        .vm(&n2)
        .exec_ok(&format!("tail -n 1 {target2}/log"))
        .await
        .expect("read log");
    let seen: i64 = last_line
        .trim()
        .strip_prefix("record-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("log line {last_line:?}"));
    assert!(seen > 1, "the writer made progress");
    let durable = seen - 1;
    sb.testbed.vm_mut(&n2).crash().await.expect("crash n2");
    let lost_at = Instant::now();

    wait_volume(&sb, &[&n1], &vol, "failed over to n1", |v| {
        primary(v).as_deref() == Some(n1.as_str())
            && v.spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == n2 && a.outdated))
    })
    .await;
    let fenced_after = lost_at.elapsed();
    // The status follows the config (the volume reconciler's next pass).
    wait_volume(&sb, &[&n1], &vol, "reported not Healthy", |v| {
        v.status.as_ref().and_then(|s| s.ha_state) != Some(HaState::Healthy)
    })
    .await;
    // Published on n2, which is fenced: n1 may take it.
    let dev1 = ok(
        &sb,
        &[&n1],
        eventually(WAIT, "publish on the survivor", || async {
            Ok(publish(&csi, &vol, &n1).await.ok())
        })
        .await,
    )
    .await;
    let target1 = mount_on(&sb, &n1, &vol, &dev1, "pod-3").await;
    let usable_after = lost_at.elapsed();
    eprintln!(
        "failover on VMs: node killed -> fenced and primary moved in {fenced_after:?}, usable mount in {usable_after:?} (heartbeat valid {HEARTBEAT_VALID:?} + grace {GRACE:?})"
    );
    let vm1 = sb.testbed.vm(&n1);
    let records = vm1
        .exec_ok(&format!("cat {target1}/log"))
        .await
        .expect("read log on the survivor");
    let got: Vec<&str> = records.lines().collect();
    for i in 0..=durable {
        assert_eq!(
            got.get(i as usize).copied(),
            Some(format!("record-{i}").as_str()),
            "acknowledged record {i} of {durable} is on the survivor"
        );
    }
    let sum1 = sha256(vm1, &format!("cat {target1}/data")).await;
    assert_eq!(sum1, sum);

    // n2 comes back with its disk: its replica rejoins as secondary, resyncs, is cleared.
    sb.testbed
        .vm_mut(&n2)
        .power_on()
        .await
        .expect("power on n2");
    ha_agent(&sb, &n2).await;
    let v = wait_volume(&sb, &nodes, &vol, "healthy again with n2 resynced", |v| {
        healthy(v)
            && !v
                .spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.outdated))
    })
    .await;
    assert_eq!(primary(&v).as_deref(), Some(n1.as_str()));

    // Removed: nothing left on either node.
    unmount_on(&sb, &n1, &vol, "pod-3").await;
    unpublish(&csi, &vol, &n1).await;
    if let Err(e) = csi
        .delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: vol.clone(),
            ..Default::default()
        }))
        .await
    {
        panic!("delete: {e:?}{}", logs(&sb, &nodes).await);
    }
    for n in nodes {
        let vm = sb.testbed.vm(n);
        let lvs = vm
            .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD")
            .await
            .expect("lvs");
        assert!(lvs.trim().is_empty(), "volumes left on {n}: {lvs}");
        let res = vm
            .exec_ok("ls /etc/hwameistor/drbd/ 2>/dev/null | grep -c '\\.res$' || true")
            .await
            .unwrap_or_default();
        assert_eq!(res.trim(), "0", "resource files left on {n}");
    }
    failover_loop.abort();
    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_keeps_one_writer_and_a_forced_split_brain_waits_for_the_operator() {
    let (sb, n1, n2, vol) = ha_sandbox("p", "hp").await;
    let nodes = [n1.as_str(), n2.as_str()];
    let (reconciler, csi) = control_plane(&sb, "ha-vm-partition", Duration::from_secs(120));
    let created = csi
        .create_volume(Request::new(ha_create(&vol, 64 * MIB, &n1)))
        .await;
    if let Err(e) = created {
        panic!("create: {e:?}{}", logs(&sb, &nodes).await);
    }
    wait_volume(&sb, &nodes, &vol, "Ready and Healthy", healthy).await;
    let dev = publish(&csi, &vol, &n1).await.expect("publish on n1");
    let target = mount_on(&sb, &n1, &vol, &dev, "pod-p").await;
    let outdated = |node: String| {
        move |v: &LocalVolume| {
            v.spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == node && a.outdated))
        }
    };

    // The link between the nodes is cut; both keep the API. DRBD freezes n1's I/O and
    // runs the fence-peer handler, which reaches the agent: n2 is recorded outdated and
    // n1 writes on. n2 can never serve meanwhile.
    sb.testbed.partition(&n1, &n2).expect("partition");
    let t = Instant::now();
    let write = sb
        .testbed
        .vm(&n1)
        .exec_timeout(
            &format!("echo after-the-cut > {target}/cut && sync {target}/cut"),
            Duration::from_secs(90),
        )
        .await
        .expect("exec");
    assert!(
        write.success(),
        "n1 writes on after fencing: {write:?}{}",
        logs(&sb, &nodes).await
    );
    eprintln!(
        "partition: write on the primary completed {:?} after the cut",
        t.elapsed()
    );
    // The fast path was taken: DRBD ran the handler of our resource file (drbdadm finds it
    // through /run/drbd), the helper reached the agent over its socket.
    let log = String::from_utf8_lossy(
        &sb.testbed
            .vm(&n1)
            .read_file(GUEST_AGENT_LOG)
            .await
            .expect("agent log"),
    )
    .into_owned();
    assert!(
        log.contains("DRBD helper call") && log.contains("fence-peer"),
        "the fence-peer handler reached the agent:{log}"
    );
    wait_volume(
        &sb,
        &nodes,
        &vol,
        "n2 recorded outdated",
        outdated(n2.clone()),
    )
    .await;
    assert_eq!(
        primary(&volume(&sb, &vol).await).as_deref(),
        Some(n1.as_str())
    );
    let refused = publish(&csi, &vol, &n2)
        .await
        .expect_err("n2 may not serve");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Healed: n2 resyncs from n1, its mark is cleared, no split brain.
    sb.testbed.heal(&n1, &n2).expect("heal");
    wait_volume(&sb, &nodes, &vol, "healthy with n2 resynced", |v| {
        healthy(v) && !outdated(n2.clone())(v)
    })
    .await;

    // Test-only path to a split brain: apart again, n2 forced primary and written while n1
    // writes too. Detected on reconnection and surfaced; both copies stay until the
    // operator chooses; then one copy, as chosen.
    unmount_on(&sb, &n1, &vol, "pod-p").await;
    unpublish(&csi, &vol, &n1).await;
    // The agents are stopped meanwhile: they would demote what the test promotes by hand.
    for n in nodes {
        let vm = sb.testbed.vm(n);
        let pid: u32 = vm
            .exec_ok("pidof hwameistor-agent")
            .await
            .expect("agent running")
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("pid");
        vm.kill(pid, 9).await.expect("stop agent");
        wait_agent_exit(&sb, n, pid).await;
    }
    sb.testbed.partition(&n1, &n2).expect("partition");
    // Both sides must have noticed the loss before either is forced (a side that still
    // believes it is connected refuses a second primary).
    for n in nodes {
        let vm = sb.testbed.vm(n);
        ok(
            &sb,
            &nodes,
            eventually(WAIT, &format!("{n} to see the link lost"), || async {
                let p = vm.exec_ok("cat /proc/drbd").await?;
                Ok((!p.contains("cs:Connected") && !p.contains("cs:Sync")).then_some(()))
            })
            .await,
        )
        .await;
    }
    let drbdadm = "drbdadm -c /etc/hwameistor/drbd/drbd.conf".to_string();
    for n in nodes {
        let vm = sb.testbed.vm(n);
        // The forced promotion first asks the fence-peer handler (which fails: the agents
        // are stopped); DRBD may refuse while it still settles the lost connection, so it
        // is tried a few times.
        let mut last = None;
        for _ in 0..5 {
            let out = vm
                .exec(&format!(
                    "{drbdadm} primary --force {vol} && dd if=/dev/urandom of={dev} bs=4k count=16 oflag=direct conv=fsync && {drbdadm} secondary {vol}"
                ))
                .await
                .expect("exec");
            if out.success() {
                last = None;
                break;
            }
            last = Some(out);
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if let Some(out) = last {
            let dmesg = vm
                .exec_ok("dmesg | grep -i drbd | tail -30")
                .await
                .unwrap_or_default();
            panic!("forcing {n}: {out:?}\n{dmesg}{}", logs(&sb, &nodes).await);
        }
    }
    // What each side wrote, read back from its data volume (a secondary's DRBD device is
    // not readable in 8.4).
    let lv_read =
        format!("dd if=/dev/LocalStorage_PoolHDD/{vol} bs=4k count=16 iflag=direct 2>/dev/null");
    let lv_sum = |n: &str| sha256(sb.testbed.vm(n), &lv_read);
    let (sum1, sum2) = (lv_sum(&n1).await, lv_sum(&n2).await);
    assert_ne!(sum1, sum2);
    for n in nodes {
        ha_agent(&sb, n).await;
    }
    sb.testbed.heal(&n1, &n2).expect("heal");
    let v = wait_volume(&sb, &nodes, &vol, "split brain surfaced", |v| {
        v.status.as_ref().and_then(|s| s.ha_state) == Some(HaState::SplitBrain)
    })
    .await;
    let msg = v.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("resolve-split-brain"), "{msg}");
    // Both copies intact, nothing discarded.
    assert_eq!(lv_sum(&n1).await, sum1);
    assert_eq!(lv_sum(&n2).await, sum2);

    // The operator keeps n1's data.
    Api::<LocalVolume>::all(sb.client.clone())
        .patch(
            &vol,
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({ "spec": { "splitBrainResolution": { "keep": n1 } } }),
            ),
        )
        .await
        .expect("resolve");
    wait_volume(&sb, &nodes, &vol, "resolved and healthy", |v| {
        healthy(v) && v.spec.split_brain_resolution.is_none()
    })
    .await;
    assert_eq!(lv_sum(&n2).await, sum1, "n2 took n1's data");
    assert_eq!(lv_sum(&n1).await, sum1);

    if let Err(e) = csi
        .delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: vol.clone(),
            ..Default::default()
        }))
        .await
    {
        panic!("delete: {e:?}{}", logs(&sb, &nodes).await);
    }
    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}
