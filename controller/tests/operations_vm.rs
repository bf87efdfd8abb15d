//! Volume operations on real nodes: three QEMU VMs joined by a private link run the real
//! agent with DRBD 8.4; the test process runs the volume and operation reconcilers and the
//! CSI controller service, and drives each node's CSI service as the kubelet would.
//!
//! An HA volume in use moves its second replica to the third node (online: the pod's node
//! keeps serving), then serves from the new node with the same checksum; it grows online
//! through a LocalVolumeExpand; a plain volume with data converts to HA and serves the same
//! data from its new replica; a plain volume grows. A volume created convertible grows
//! alone and converts to HA while mounted and written.
//!
//! Needs root, QEMU and the host packages of scripts/install-host-deps.sh, and the agent,
//! the DRBD helper and the csi_node_call example built.

mod vm_support;

use vm_support::*;

async fn wait_op<K>(sb: &Sandbox, nodes: &[&str], name: &str) -> OperationStatus
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(sb.client.clone());
    let st = ok(
        sb,
        nodes,
        eventually(
            Duration::from_secs(300),
            &format!("{name} ended"),
            || async {
                let o = api.get(name).await?;
                let st: Option<OperationStatus> = serde_json::to_value(&o)
                    .ok()
                    .and_then(|v| v.get("status").cloned())
                    .and_then(|s| serde_json::from_value(s).ok());
                Ok(st.filter(|s| s.phase.is_some_and(|p| p.is_final())))
            },
        )
        .await,
    )
    .await;
    if st.phase != Some(OperationPhase::Succeeded) {
        panic!("{name} ended {st:?}{}", logs(sb, nodes).await);
    }
    st
}

fn expand_op(name: &str, vol: &str, bytes: i64) -> LocalVolumeExpand {
    LocalVolumeExpand::new(
        name,
        LocalVolumeExpandSpec {
            volume_name: vol.into(),
            required_capacity_bytes: bytes,
            abort: false,
            ttl_seconds_after_finished: None,
        },
    )
}

async fn lvs_of(vm: &Vm, vol: &str) -> Vec<String> {
    let out = vm
        .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD 2>/dev/null || true")
        .await
        .expect("lvs");
    out.split_whitespace()
        .filter(|l| l.starts_with(vol))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_move_convert_and_grow_on_real_nodes_keeping_their_data() {
    let (sb, names, vol) = ha_nodes("o", "op", 3).await;
    let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
    let (reconciler, csi) = control_plane(&sb, "ops-vm-test", Duration::from_secs(180));
    let n1 = nodes[0];

    // An HA volume used on n1; its other replica wherever placement put it.
    if let Err(e) = csi
        .create_volume(Request::new(ha_create(&vol, 128 * MIB, n1)))
        .await
    {
        panic!("create: {e:?}{}", logs(&sb, &nodes).await);
    }
    let v = wait_volume(&sb, &nodes, &vol, "Ready and Healthy", healthy).await;
    let placed: Vec<String> = v
        .spec
        .config
        .as_ref()
        .expect("config")
        .replicas
        .iter()
        .map(|a| a.hostname.clone())
        .collect();
    let second = placed.iter().find(|n| *n != n1).expect("second").clone();
    let third = nodes
        .iter()
        .find(|n| !placed.iter().any(|p| p == *n))
        .expect("a free node")
        .to_string();
    let dev = publish(&csi, &vol, n1).await.expect("publish on n1");
    let target = mount_on(&sb, n1, &vol, &dev, "pod-1").await;
    let vm1 = sb.testbed.vm(n1);
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/data bs=1M count=16 2>/dev/null && sync"
    ))
    .await
    .expect("write");
    let sum = sha256(vm1, &format!("cat {target}/data")).await;

    // Move the second replica to the third node while n1 serves.
    let mig = format!("{vol}-mig");
    Api::<LocalVolumeMigrate>::all(sb.client.clone())
        .create(
            &PostParams::default(),
            &LocalVolumeMigrate::new(
                &mig,
                LocalVolumeMigrateSpec {
                    volume_name: vol.clone(),
                    source_node: second.clone(),
                    target_nodes: vec![third.clone()],
                    migrate_all_volumes: true,
                    bandwidth_limit_bytes_per_second: None,
                    abort: false,
                    ttl_seconds_after_finished: None,
                },
            ),
        )
        .await
        .expect("create migrate");
    let st = wait_op::<LocalVolumeMigrate>(&sb, &nodes, &mig).await;
    assert_eq!(st.target_node.as_deref(), Some(third.as_str()));
    assert!(
        lvs_of(sb.testbed.vm(&second), &vol).await.is_empty(),
        "the old replica's volumes are removed"
    );
    let mut want = vec![vol.clone(), format!("{vol}_drbdmeta")];
    want.sort();
    let mut on_third = lvs_of(sb.testbed.vm(&third), &vol).await;
    on_third.sort();
    assert_eq!(on_third, want);
    assert_eq!(sha256(vm1, &format!("cat {target}/data")).await, sum);
    let v = wait_volume(&sb, &nodes, &vol, "Healthy on its new nodes", healthy).await;
    let mut now: Vec<String> = v
        .spec
        .config
        .expect("config")
        .replicas
        .into_iter()
        .map(|a| a.hostname)
        .collect();
    now.sort();
    let mut expect = vec![n1.to_string(), third.clone()];
    expect.sort();
    assert_eq!(now, expect);

    // The data is on the third node: served from there, same checksum.
    unmount_on(&sb, n1, &vol, "pod-1").await;
    unpublish(&csi, &vol, n1).await;
    let dev3 = ok(
        &sb,
        &nodes,
        eventually(WAIT, "published on the new node", || async {
            Ok(publish(&csi, &vol, &third).await.ok())
        })
        .await,
    )
    .await;
    let target3 = mount_on(&sb, &third, &vol, &dev3, "pod-2").await;
    let vm3 = sb.testbed.vm(&third);
    assert_eq!(sha256(vm3, &format!("cat {target3}/data")).await, sum);

    // Grown online, in use on the third node.
    let grow = format!("{vol}-grow");
    Api::<LocalVolumeExpand>::all(sb.client.clone())
        .create(&PostParams::default(), &expand_op(&grow, &vol, 192 * MIB))
        .await
        .expect("create expand");
    wait_op::<LocalVolumeExpand>(&sb, &nodes, &grow).await;
    let (staging, _) = paths(&vol, "pod-2");
    call(
        &sb,
        vm3,
        &third,
        &format!("expand {vol} {target3} {staging} {}", 192 * MIB),
    )
    .await;
    let size = df_bytes(vm3, &target3).await;
    assert!(size > 160 * MIB, "filesystem grew online: {size}");
    assert_eq!(sha256(vm3, &format!("cat {target3}/data")).await, sum);
    unmount_on(&sb, &third, &vol, "pod-2").await;
    unpublish(&csi, &vol, &third).await;

    // A plain volume with data converts to HA; its new replica serves the same data.
    let plain = format!("{vol}-plain");
    if let Err(e) = csi
        .create_volume(Request::new(create(&plain, 64 * MIB, n1, "ext4")))
        .await
    {
        panic!("create plain: {e:?}{}", logs(&sb, &nodes).await);
    }
    let pdev = publish(&csi, &plain, n1).await.expect("publish plain");
    let ptarget = mount_on(&sb, n1, &plain, &pdev, "pod-3").await;
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={ptarget}/data bs=1M count=8 2>/dev/null && sync"
    ))
    .await
    .expect("write plain");
    let psum = sha256(vm1, &format!("cat {ptarget}/data")).await;
    unmount_on(&sb, n1, &plain, "pod-3").await;
    unpublish(&csi, &plain, n1).await;
    let other = nodes.iter().find(|n| **n != n1).expect("other").to_string();
    let conv = format!("{vol}-conv");
    Api::<LocalVolumeConvert>::all(sb.client.clone())
        .create(
            &PostParams::default(),
            &LocalVolumeConvert::new(
                &conv,
                LocalVolumeConvertSpec {
                    volume_name: plain.clone(),
                    replica_number: 2,
                    convert_all_volumes: true,
                    target_node: Some(other.clone()),
                    abort: false,
                    ttl_seconds_after_finished: None,
                },
            ),
        )
        .await
        .expect("create convert");
    wait_op::<LocalVolumeConvert>(&sb, &nodes, &conv).await;
    wait_volume(&sb, &nodes, &plain, "converted, Healthy", healthy).await;
    let odev = ok(
        &sb,
        &nodes,
        eventually(WAIT, "published on the new replica", || async {
            Ok(publish(&csi, &plain, &other).await.ok())
        })
        .await,
    )
    .await;
    assert!(odev.starts_with("/dev/drbd"), "{odev}");
    let otarget = mount_on(&sb, &other, &plain, &odev, "pod-4").await;
    assert_eq!(
        sha256(sb.testbed.vm(&other), &format!("cat {otarget}/data")).await,
        psum,
        "the converted volume's new replica holds the data"
    );
    unmount_on(&sb, &other, &plain, "pod-4").await;
    unpublish(&csi, &plain, &other).await;

    // A plain volume grows through a LocalVolumeExpand.
    let small = format!("{vol}-small");
    if let Err(e) = csi
        .create_volume(Request::new(create(&small, 32 * MIB, &third, "ext4")))
        .await
    {
        panic!("create small: {e:?}{}", logs(&sb, &nodes).await);
    }
    wait_volume(&sb, &nodes, &small, "Ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    let sgrow = format!("{vol}-sgrow");
    Api::<LocalVolumeExpand>::all(sb.client.clone())
        .create(&PostParams::default(), &expand_op(&sgrow, &small, 96 * MIB))
        .await
        .expect("create expand");
    wait_op::<LocalVolumeExpand>(&sb, &nodes, &sgrow).await;
    assert_eq!(lv_size(vm3, &small).await, Some(96 * MIB));

    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}

/// A volume created convertible: DRBD on its one node from the start, used and written
/// there, grown alone while mounted, converted to HA while mounted and written, then served
/// from its new replica with every byte written before, during and after the conversion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convertible_volume_grows_alone_and_converts_online_while_mounted() {
    let (sb, names, vol) = ha_nodes("c", "cv", 2).await;
    let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
    let (reconciler, csi) = control_plane(&sb, "convertible-vm-test", Duration::from_secs(180));
    let (n1, n2) = (nodes[0], nodes[1]);
    let mut req = create(&vol, 64 * MIB, n1, "ext4");
    req.parameters
        .insert("convertible".to_string(), "true".to_string());
    if let Err(e) = csi.create_volume(Request::new(req)).await {
        panic!("create: {e:?}{}", logs(&sb, &nodes).await);
    }
    let v = wait_volume(&sb, &nodes, &vol, "Ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    assert!(v.spec.convertible);
    assert_eq!(v.status.as_ref().and_then(|s| s.ha_state), None);
    let vm1 = sb.testbed.vm(n1);
    let mut lvs = lvs_of(vm1, &vol).await;
    lvs.sort();
    assert_eq!(lvs, [vol.clone(), format!("{vol}_drbdmeta")]);
    assert!(lvs_of(sb.testbed.vm(n2), &vol).await.is_empty());

    let dev = publish(&csi, &vol, n1).await.expect("publish on n1");
    assert!(dev.starts_with("/dev/drbd"), "{dev}");
    let target = mount_on(&sb, n1, &vol, &dev, "pod-1").await;
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/before bs=1M count=8 2>/dev/null && sync"
    ))
    .await
    .expect("write");

    // Grown alone, mounted.
    let grow = format!("{vol}-grow");
    Api::<LocalVolumeExpand>::all(sb.client.clone())
        .create(&PostParams::default(), &expand_op(&grow, &vol, 96 * MIB))
        .await
        .expect("create expand");
    wait_op::<LocalVolumeExpand>(&sb, &nodes, &grow).await;
    let (staging, _) = paths(&vol, "pod-1");
    call(
        &sb,
        vm1,
        n1,
        &format!("expand {vol} {target} {staging} {}", 96 * MIB),
    )
    .await;
    let size = df_bytes(vm1, &target).await;
    assert!(size > 80 * MIB, "filesystem grew alone: {size}");

    // Converted while mounted, with a writer running through the sync.
    vm1.exec_ok(&format!(
        "(for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of={target}/during.$i bs=1M count=2 conv=fsync 2>/dev/null; sleep 1; done; touch {target}/writer-done) >/dev/null 2>&1 &"
    ))
    .await
    .expect("writer");
    let conv = format!("{vol}-conv");
    Api::<LocalVolumeConvert>::all(sb.client.clone())
        .create(
            &PostParams::default(),
            &LocalVolumeConvert::new(
                &conv,
                LocalVolumeConvertSpec {
                    volume_name: vol.clone(),
                    replica_number: 2,
                    convert_all_volumes: true,
                    target_node: Some(n2.to_string()),
                    abort: false,
                    ttl_seconds_after_finished: None,
                },
            ),
        )
        .await
        .expect("create convert");
    let st = wait_op::<LocalVolumeConvert>(&sb, &nodes, &conv).await;
    assert_eq!(st.target_node.as_deref(), Some(n2));
    let v = wait_volume(&sb, &nodes, &vol, "converted, Healthy", healthy).await;
    assert_eq!(primary(&v).as_deref(), Some(n1));
    ok(
        &sb,
        &nodes,
        eventually(WAIT, "the writer done", || async {
            Ok(vm1
                .exec(&format!("test -e {target}/writer-done"))
                .await
                .is_ok_and(|o| o.success())
                .then_some(()))
        })
        .await,
    )
    .await;
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/after bs=1M count=4 conv=fsync 2>/dev/null"
    ))
    .await
    .expect("write after");
    let sum_cmd = |t: &str| format!("cd {t} && cat before during.* after");
    let sum = sha256(vm1, &sum_cmd(&target)).await;

    // Served from the new replica: every byte there.
    unmount_on(&sb, n1, &vol, "pod-1").await;
    unpublish(&csi, &vol, n1).await;
    let dev2 = ok(
        &sb,
        &nodes,
        eventually(WAIT, "published on the new replica", || async {
            Ok(publish(&csi, &vol, n2).await.ok())
        })
        .await,
    )
    .await;
    assert_eq!(dev2, dev, "the same DRBD device");
    let target2 = mount_on(&sb, n2, &vol, &dev2, "pod-2").await;
    assert_eq!(sha256(sb.testbed.vm(n2), &sum_cmd(&target2)).await, sum);
    unmount_on(&sb, n2, &vol, "pod-2").await;
    unpublish(&csi, &vol, n2).await;

    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}

/// Waits until the copy of `vol` into `node` has moved past `bytes`.
async fn copied_past(sb: &Sandbox, nodes: &[&str], vol: &str, node: &str, bytes: i64) {
    ok(
        sb,
        nodes,
        eventually(
            WAIT,
            &format!("{vol}'s copy past {bytes} bytes"),
            || async {
                Ok(copy_of(sb, vol, node)
                    .await
                    .filter(|c| c.bytes_done >= bytes && !c.verified))
            },
        )
        .await,
    )
    .await;
}

/// Kills the agent on `node` outright (SIGKILL) and starts it again with `extra` arguments.
async fn restart_agent(sb: &Sandbox, node: &str, extra: &str) {
    sb.testbed
        .vm(node)
        .exec("kill -9 $(pidof hwameistor-agent) 2>/dev/null; sleep 1")
        .await
        .expect("kill agent");
    ha_agent_with(sb, node, extra).await;
}

/// Creates raw block volume `name` of `mib` MiB on `node` and fills it with random data.
async fn raw_volume_with_data(
    sb: &Sandbox,
    csi: &ControllerService,
    nodes: &[&str],
    name: &str,
    mib: i64,
    node: &str,
) {
    if let Err(e) = csi
        .create_volume(Request::new(create_block(name, mib * MIB, node)))
        .await
    {
        panic!("create {name}: {e:?}{}", logs(sb, nodes).await);
    }
    wait_volume(sb, nodes, name, "Ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    sb.testbed
        .vm(node)
        .exec_ok(&format!(
            "dd if=/dev/urandom of=/dev/LocalStorage_PoolHDD/{name} bs=1M count={mib} 2>/dev/null && sync"
        ))
        .await
        .expect("write");
}

fn migrate_op(
    name: &str,
    vol: &str,
    from: &str,
    to: &str,
    rate: Option<i64>,
) -> LocalVolumeMigrate {
    LocalVolumeMigrate::new(
        name,
        LocalVolumeMigrateSpec {
            volume_name: vol.into(),
            source_node: from.into(),
            target_nodes: vec![to.into()],
            migrate_all_volumes: true,
            bandwidth_limit_bytes_per_second: rate,
            abort: false,
            ttl_seconds_after_finished: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_volumes_move_by_block_copy_through_crashes_a_cut_link_and_damage() {
    let (sb, names, vol) = ha_nodes("m", "mv", 2).await;
    let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
    let (n1, n2) = (nodes[0], nodes[1]);
    let (reconciler, csi) = control_plane(&sb, "mover-vm-test", Duration::from_secs(180));
    let migrates: Api<LocalVolumeMigrate> = Api::all(sb.client.clone());

    // An xfs volume with a file of known checksum, unused.
    if let Err(e) = csi
        .create_volume(Request::new(create(&vol, 320 * MIB, n1, "xfs")))
        .await
    {
        panic!("create: {e:?}{}", logs(&sb, &nodes).await);
    }
    let dev = publish(&csi, &vol, n1).await.expect("publish");
    let (staging, target) = paths(&vol, "pod-1");
    let vm1 = sb.testbed.vm(n1);
    call(&sb, vm1, n1, &format!("stage {vol} {dev} {staging} xfs")).await;
    call(
        &sb,
        vm1,
        n1,
        &format!("publish {vol} {dev} {staging} {target} xfs"),
    )
    .await;
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/data bs=1M count=24 2>/dev/null && sync"
    ))
    .await
    .expect("write");
    let sum = sha256(vm1, &format!("cat {target}/data")).await;
    call(&sb, vm1, n1, &format!("unpublish {vol} {target}")).await;
    call(&sb, vm1, n1, &format!("unstage {vol} {staging}")).await;
    unpublish(&csi, &vol, n1).await;

    movers_published(&sb, &nodes).await;

    // Moved to n2 at 4 MiB/s; the source agent is killed, then the target agent, then the
    // link is cut: each time the copy resumes from its checkpoint.
    let mig = format!("{vol}-mig");
    migrates
        .create(
            &PostParams::default(),
            &migrate_op(&mig, &vol, n1, n2, Some(4 * MIB)),
        )
        .await
        .expect("create migrate");
    copied_past(&sb, &nodes, &vol, n2, 4 * MIB).await;
    restart_agent(&sb, n1, "").await;
    copied_past(&sb, &nodes, &vol, n2, 12 * MIB).await;
    restart_agent(&sb, n2, "").await;
    copied_past(&sb, &nodes, &vol, n2, 20 * MIB).await;
    sb.testbed.partition(n1, n2).expect("cut");
    tokio::time::sleep(Duration::from_secs(4)).await;
    sb.testbed.heal(n1, n2).expect("heal");
    let st = wait_op::<LocalVolumeMigrate>(&sb, &nodes, &mig).await;
    assert_eq!(st.target_node.as_deref(), Some(n2));
    let copy = copy_of(&sb, &vol, n2).await.expect("copy status");
    // Counters are the last copy run's (the target's agent restarted once): it resumed
    // after the cut link at least.
    assert!(copy.verified && copy.resumes >= 1, "{copy:?}");
    assert!(
        lvs_of(vm1, &vol).await.is_empty(),
        "the source volume is removed"
    );
    // Served from n2 with the same data.
    let dev2 = publish(&csi, &vol, n2).await.expect("publish on n2");
    let vm2 = sb.testbed.vm(n2);
    let (staging, target) = paths(&vol, "pod-2");
    call(&sb, vm2, n2, &format!("stage {vol} {dev2} {staging} xfs")).await;
    call(
        &sb,
        vm2,
        n2,
        &format!("publish {vol} {dev2} {staging} {target} xfs"),
    )
    .await;
    assert_eq!(sha256(vm2, &format!("cat {target}/data")).await, sum);
    call(&sb, vm2, n2, &format!("unpublish {vol} {target}")).await;
    call(&sb, vm2, n2, &format!("unstage {vol} {staging}")).await;
    unpublish(&csi, &vol, n2).await;

    // A raw block volume back to n1, its source damaging a chunk in flight once: detected,
    // sent again, same checksum.
    let raw = format!("{vol}-raw");
    let lv = |v: &str| format!("/dev/LocalStorage_PoolHDD/{v}");
    raw_volume_with_data(&sb, &csi, &nodes, &raw, 64, n2).await;
    let raw_sum = sha256(vm2, &format!("cat {}", lv(&raw))).await;
    restart_agent(&sb, n2, "--mover-fault-corrupt-chunk 3").await;
    let rmig = format!("{vol}-rawmig");
    migrates
        .create(
            &PostParams::default(),
            &migrate_op(&rmig, &raw, n2, n1, None),
        )
        .await
        .expect("create raw migrate");
    wait_op::<LocalVolumeMigrate>(&sb, &nodes, &rmig).await;
    let copy = copy_of(&sb, &raw, n1).await.expect("copy status");
    assert!(copy.verified && copy.resends >= 1, "{copy:?}");
    assert_eq!(sha256(vm1, &format!("cat {}", lv(&raw))).await, raw_sum);
    restart_agent(&sb, n2, "").await;

    // Aborted mid-way: the source is intact and the volume usable where it was.
    let kept = format!("{vol}-kept");
    raw_volume_with_data(&sb, &csi, &nodes, &kept, 64, n1).await;
    let kept_sum = sha256(vm1, &format!("cat {}", lv(&kept))).await;
    let kmig = format!("{vol}-keptmig");
    migrates
        .create(
            &PostParams::default(),
            &migrate_op(&kmig, &kept, n1, n2, Some(2 * MIB)),
        )
        .await
        .expect("create kept migrate");
    copied_past(&sb, &nodes, &kept, n2, 4 * MIB).await;
    migrates
        .patch(
            &kmig,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({ "spec": { "abort": true } })),
        )
        .await
        .expect("abort");
    let api: Api<LocalVolumeMigrate> = Api::all(sb.client.clone());
    let st = ok(
        &sb,
        &nodes,
        eventually(WAIT, "aborted", || async {
            Ok(api
                .get(&kmig)
                .await?
                .status
                .filter(|s| s.phase == Some(OperationPhase::Aborted)))
        })
        .await,
    )
    .await;
    assert!(st.message.is_some());
    ok(
        &sb,
        &nodes,
        eventually(WAIT, "the partial copy removed", || async {
            Ok(lvs_of(vm2, &kept).await.is_empty().then_some(()))
        })
        .await,
    )
    .await;
    assert_eq!(sha256(vm1, &format!("cat {}", lv(&kept))).await, kept_sum);
    let v = wait_volume(&sb, &nodes, &kept, "Ready on n1", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    assert_eq!(v.spec.config.expect("config").replicas.len(), 1);
    csi.controller_publish_volume(Request::new(ControllerPublishVolumeRequest {
        volume_id: kept.clone(),
        node_id: n1.into(),
        volume_capability: Some(block_cap()),
        ..Default::default()
    }))
    .await
    .expect("usable on n1 again");

    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_node_is_emptied_by_the_evictor_with_every_volume_s_data_intact() {
    let (sb, names, vol) = ha_nodes("d", "dr", 3).await;
    let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
    let n1 = nodes[0];
    let (reconciler, csi) = control_plane(&sb, "drain-vm-test", Duration::from_secs(180));
    let evictor = {
        let ctx = hwameistor_controller::volume_reconciler::Context::new(
            sb.client.clone(),
            "drain-vm-evictor",
            Arc::new(Metrics::default()),
            Policy::default(),
        );
        tokio::spawn(hwameistor_controller::evictor::run(
            ctx,
            Duration::from_secs(1),
        ))
    };
    let k8s_nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(sb.client.clone());
    for n in &nodes {
        let mut node = k8s_openapi::api::core::v1::Node::default();
        node.metadata.name = Some(n.to_string());
        k8s_nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("Node");
    }
    movers_published(&sb, &nodes).await;

    // Three volumes with a replica on n1: an HA one with a file, two raw ones.
    let ha = format!("{vol}-ha");
    if let Err(e) = csi
        .create_volume(Request::new(ha_create(&ha, 64 * MIB, n1)))
        .await
    {
        panic!("create: {e:?}{}", logs(&sb, &nodes).await);
    }
    wait_volume(&sb, &nodes, &ha, "Healthy", healthy).await;
    let dev = publish(&csi, &ha, n1).await.expect("publish");
    let target = mount_on(&sb, n1, &ha, &dev, "pod-1").await;
    let vm1 = sb.testbed.vm(n1);
    vm1.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/data bs=1M count=8 2>/dev/null && sync"
    ))
    .await
    .expect("write");
    let ha_sum = sha256(vm1, &format!("cat {target}/data")).await;
    unmount_on(&sb, n1, &ha, "pod-1").await;
    unpublish(&csi, &ha, n1).await;
    let lv = |v: &str| format!("/dev/LocalStorage_PoolHDD/{v}");
    let mut plain_sums = Vec::new();
    for i in 1..=2 {
        let p = format!("{vol}-p{i}");
        raw_volume_with_data(&sb, &csi, &nodes, &p, 32, n1).await;
        plain_sums.push((p.clone(), sha256(vm1, &format!("cat {}", lv(&p))).await));
    }
    // The two raw volumes are used by one pod: one group (as the group maintenance labels
    // them), so they go to the same node, by one migration of the evictor's and the one it
    // makes for the other volume.
    let group = format!("lvg-{vol}-p1");
    for (p, _) in &plain_sums {
        Api::<LocalVolume>::all(sb.client.clone())
            .patch(
                p,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    &serde_json::json!({ "metadata": { "labels": { LABEL_VOLUME_GROUP: group } } }),
                ),
            )
            .await
            .expect("group label");
    }

    // Cordoned: the evictor moves all three off n1.
    k8s_nodes
        .patch(
            n1,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({ "spec": { "unschedulable": true } })),
        )
        .await
        .expect("cordon");
    let volumes: Api<LocalVolume> = Api::all(sb.client.clone());
    let all = [ha.clone(), plain_sums[0].0.clone(), plain_sums[1].0.clone()];
    ok(
        &sb,
        &nodes,
        eventually(Duration::from_secs(600), "every volume off n1", || async {
            for v in &all {
                let v = volumes.get(v).await?;
                let on_n1 = v
                    .spec
                    .config
                    .as_ref()
                    .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == n1));
                if on_n1 || v.spec.operation.is_some() {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
        .await,
    )
    .await;
    assert!(lvs_of(vm1, &vol).await.is_empty(), "nothing left on n1");
    let migrations = Api::<LocalVolumeMigrate>::all(sb.client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .expect("migrations")
        .items;
    let for_volume = |v: &str| {
        migrations
            .iter()
            .filter(|m| m.spec.volume_name == v)
            .collect::<Vec<_>>()
    };
    let lead = for_volume(&plain_sums[0].0);
    let member = for_volume(&plain_sums[1].0);
    assert_eq!((lead.len(), member.len()), (1, 1), "{migrations:#?}");
    assert_eq!(
        kube::ResourceExt::labels(member[0]).get(LABEL_GROUP_OPERATION),
        lead[0].metadata.name.as_ref()
    );
    let mut targets = Vec::new();
    for (p, _) in &plain_sums {
        let v = volumes.get(p).await.expect("volume");
        targets.push(v.spec.config.expect("config").replicas[0].hostname.clone());
    }
    assert_eq!(targets[0], targets[1], "the group's volumes on one node");
    for (p, sum) in &plain_sums {
        let v = volumes.get(p).await.expect("volume");
        let node = v.spec.config.expect("config").replicas[0].hostname.clone();
        assert_ne!(node, n1);
        assert_eq!(
            &sha256(sb.testbed.vm(&node), &format!("cat {}", lv(p))).await,
            sum,
            "{p}"
        );
    }
    let v = wait_volume(&sb, &nodes, &ha, "Healthy off n1", healthy).await;
    let serving = primary(&v).expect("a primary");
    assert_ne!(serving, n1);
    let dev = publish(&csi, &ha, &serving).await.expect("publish off n1");
    let target = mount_on(&sb, &serving, &ha, &dev, "pod-2").await;
    assert_eq!(
        sha256(sb.testbed.vm(&serving), &format!("cat {target}/data")).await,
        ha_sum
    );
    evictor.abort();
    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}
