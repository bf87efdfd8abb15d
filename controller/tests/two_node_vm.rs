//! Provision to mount on real nodes: two QEMU VMs with a virtual disk each run the real
//! agent (LVM pools, logical volumes, and the CSI node service on a Unix socket); the test
//! process runs the LocalVolume reconciler and the CSI controller service against the
//! project's test API server, and drives the node service with the `csi_node_call` example
//! client inside the VM, as the kubelet would.
//!
//! Needs root, QEMU and the host packages of scripts/install-host-deps.sh, and the agent
//! binary and the csi_node_call example built (`cargo build --workspace --all-targets`).

mod vm_support;

use vm_support::*;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_provisioned_mounted_grown_and_removed_on_real_nodes() {
    let agent = target_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN");
    let client_bin = target_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN");
    let prefix = run_prefix();
    let (n1, n2) = (format!("{prefix}-n1"), format!("{prefix}-n2"));
    // Volume names unique per run, like the nodes': runs share a real cluster.
    let (xfs, ext4) = (format!("{prefix}-xfs"), format!("{prefix}-ext4"));
    let sb = Sandbox::start(
        &agent,
        vec![
            VmSpec::new(&n1).disk("disk-1", 1 << 30),
            VmSpec::new(&n2).disk("disk-2", 1 << 30),
        ],
    )
    .await
    .expect("sandbox: test API server and two node VMs");

    let client_bytes = stripped_client(&client_bin);
    for n in [&n1, &n2] {
        sb.testbed
            .vm(n)
            .write_file_mode(CALL, &client_bytes, 0o755)
            .await
            .expect("install client");
        start_csi_agent(&sb, n, "").await;
    }
    for n in [&n1, &n2] {
        claim_pool(&sb, n).await;
    }
    let (vm1, vm2) = (sb.testbed.vm(&n1), sb.testbed.vm(&n2));
    assert_eq!(
        call(&sb, vm2, &n2, "info").await,
        format!("ok node={n2} max_volumes=1000")
    );

    let (reconciler, csi) = control_plane(&sb, "vm-test", Duration::from_secs(90));

    // An xfs volume on n2, asked for smaller than xfs allows: rounded up to 300 MiB.
    let vol = csi
        .create_volume(Request::new(create(xfs.as_str(), 100 * MIB, &n2, "")))
        .await;
    let vol = match vol {
        Ok(v) => v.into_inner().volume.expect("volume"),
        Err(e) => panic!("create: {e:?}{}", logs(&sb, &[&n2]).await),
    };
    assert_eq!(vol.capacity_bytes, 300 * MIB);
    assert_eq!(vol.accessible_topology, vec![topology::of_node(&n2)]);
    assert_eq!(lv_size(vm2, xfs.as_str()).await, Some(300 * MIB));
    assert_eq!(lv_size(vm1, xfs.as_str()).await, None);

    let published = csi
        .controller_publish_volume(Request::new(ControllerPublishVolumeRequest {
            volume_id: xfs.as_str().into(),
            node_id: n2.clone(),
            volume_capability: Some(cap("")),
            ..Default::default()
        }))
        .await
        .expect("publish")
        .into_inner();
    let dev = published
        .publish_context
        .get("devicePath")
        .cloned()
        .expect("device");
    assert_eq!(dev, format!("/dev/LocalStorage_PoolHDD/{xfs}"));

    let staging =
        format!("/var/lib/kubelet/plugins/kubernetes.io/csi/lvm.hwameistor.io/{xfs}/globalmount");
    let target = format!("/var/lib/kubelet/pods/pod-1/volumes/kubernetes.io~csi/{xfs}/mount");
    for _ in 0..2 {
        assert_eq!(
            call(&sb, vm2, &n2, &format!("stage {xfs} {dev} {staging} xfs")).await,
            "ok"
        );
        assert_eq!(
            call(
                &sb,
                vm2,
                &n2,
                &format!("publish {xfs} {dev} {staging} {target} xfs")
            )
            .await,
            "ok"
        );
    }
    assert_eq!(
        vm2.exec_ok(&format!("blkid -p -o value -s TYPE {dev}"))
            .await
            .expect("blkid")
            .trim(),
        "xfs"
    );
    vm2.exec_ok(&format!(
        "echo provisioned-to-mount > {target}/hello && sync"
    ))
    .await
    .expect("write");
    let before = df_bytes(vm2, &target).await;

    // Grow: the controller grows the LV on n2, the node grows xfs online.
    let grown = csi
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: xfs.as_str().into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 600 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(cap("")),
            ..Default::default()
        }))
        .await;
    let grown = match grown {
        Ok(g) => g.into_inner(),
        Err(e) => panic!("expand: {e:?}{}", logs(&sb, &[&n2]).await),
    };
    assert_eq!(
        (grown.capacity_bytes, grown.node_expansion_required),
        (600 * MIB, true)
    );
    assert_eq!(lv_size(vm2, xfs.as_str()).await, Some(600 * MIB));
    let out = call(
        &sb,
        vm2,
        &n2,
        &format!("expand {xfs} {target} {staging} {}", 600 * MIB),
    )
    .await;
    assert_eq!(out, format!("ok capacity_bytes={}", 600 * MIB));
    let after = df_bytes(vm2, &target).await;
    assert!(
        after > before + 250 * MIB,
        "xfs did not grow: {before} -> {after}"
    );
    assert_eq!(
        vm2.exec_ok(&format!("cat {target}/hello"))
            .await
            .expect("read")
            .trim(),
        "provisioned-to-mount"
    );
    let stats = call(&sb, vm2, &n2, &format!("stats {xfs} {target}")).await;
    assert!(stats.contains("abnormal=false"), "{stats}");
    let total: i64 = stats
        .split_whitespace()
        .find_map(|w| w.strip_prefix("total="))
        .and_then(|v| v.parse().ok())
        .expect("bytes total");
    assert_eq!(total, after, "NodeGetVolumeStats and df agree");

    // A second volume that does not fit n1's pool: refused, nothing left behind.
    let err = csi
        .create_volume(Request::new(create(
            &format!("{prefix}-huge"),
            2 << 30,
            &n1,
            "",
        )))
        .await
        .expect_err("no room");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let volumes: Api<LocalVolume> = Api::all(sb.client.clone());
    assert!(volumes
        .get_opt(&format!("{prefix}-huge"))
        .await
        .expect("get")
        .is_none());

    // ext4 on n1: formatted, mounted, grown online (root in the VM may resize ext4).
    let v = csi
        .create_volume(Request::new(create(ext4.as_str(), 64 * MIB, &n1, "ext4")))
        .await
        .expect("ext4 volume")
        .into_inner();
    assert_eq!(v.volume.map(|v| v.capacity_bytes), Some(64 * MIB));
    csi.controller_publish_volume(Request::new(ControllerPublishVolumeRequest {
        volume_id: ext4.as_str().into(),
        node_id: n1.clone(),
        volume_capability: Some(cap("ext4")),
        ..Default::default()
    }))
    .await
    .expect("publish ext4");
    let (dev1, staging1, target1) = (
        format!("/dev/LocalStorage_PoolHDD/{ext4}"),
        format!("/var/lib/kubelet/stage/{ext4}"),
        "/var/lib/kubelet/pods/pod-2/mount",
    );
    call(
        &sb,
        vm1,
        &n1,
        &format!("stage {ext4} {dev1} {staging1} ext4"),
    )
    .await;
    call(
        &sb,
        vm1,
        &n1,
        &format!("publish {ext4} {dev1} {staging1} {target1} ext4"),
    )
    .await;
    vm1.exec_ok(&format!("echo ext4-data > {target1}/f && sync"))
        .await
        .expect("write ext4");
    let small = df_bytes(vm1, target1).await;
    csi.controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
        volume_id: ext4.as_str().into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 128 * MIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    }))
    .await
    .expect("expand ext4");
    call(
        &sb,
        vm1,
        &n1,
        &format!("expand {ext4} {target1} {staging1} {}", 128 * MIB),
    )
    .await;
    let big = df_bytes(vm1, target1).await;
    assert!(
        big > small + 50 * MIB,
        "ext4 did not grow: {small} -> {big}"
    );
    assert_eq!(
        vm1.exec_ok(&format!("cat {target1}/f"))
            .await
            .expect("read")
            .trim(),
        "ext4-data"
    );

    // Tear down both, every node call twice; the logical volumes go with the objects.
    for (vm, node, vol, staging, target) in [
        (vm2, &n2, xfs.as_str(), staging.as_str(), target.as_str()),
        (vm1, &n1, ext4.as_str(), staging1.as_str(), target1),
    ] {
        for _ in 0..2 {
            call(&sb, vm, node, &format!("unpublish {vol} {target}")).await;
            call(&sb, vm, node, &format!("unstage {vol} {staging}")).await;
        }
        assert_eq!(
            vm.exec(&format!("grep -c ' {staging} ' /proc/self/mountinfo"))
                .await
                .expect("grep")
                .stdout
                .trim(),
            "0"
        );
        csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
            volume_id: vol.into(),
            node_id: node.clone(),
            ..Default::default()
        }))
        .await
        .expect("unpublish");
        if let Err(e) = csi
            .delete_volume(Request::new(DeleteVolumeRequest {
                volume_id: vol.into(),
                ..Default::default()
            }))
            .await
        {
            panic!("delete {vol}: {e:?}{}", logs(&sb, &[node]).await);
        }
        assert_eq!(lv_size(vm, vol).await, None, "LV {vol} removed on {node}");
    }
    assert!(volumes
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    assert!(replicas
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());

    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_converges_when_the_agent_dies_mid_create_and_mid_delete_and_serves_raw_block() {
    let agent = target_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN");
    let client_bin = target_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN");
    let prefix = run_prefix();
    let node = format!("{prefix}-k1");
    let blk = format!("{prefix}-blk");
    let sb = Sandbox::start(&agent, vec![VmSpec::new(&node).disk("kill-1", 1 << 30)])
        .await
        .expect("sandbox");
    let vm = sb.testbed.vm(&node);
    vm.write_file_mode(CALL, &stripped_client(&client_bin), 0o755)
        .await
        .expect("install client");
    let pid = start_csi_agent(&sb, &node, "").await;
    claim_pool(&sb, &node).await;
    let (reconciler, csi) = control_plane(&sb, "vm-crash-test", Duration::from_secs(120));

    // CreateVolume while the agent dies right after lvcreate, before it reports the volume:
    // the call keeps waiting and completes once a restarted agent finishes the job.
    vm.kill(pid, 9).await.expect("kill agent");
    wait_agent_exit(&sb, &node, pid).await;
    let armed = start_csi_agent(&sb, &node, "HWAMEISTOR_CRASH_POINT=lvm-after-lvcreate").await;
    let (created, _) = tokio::join!(
        csi.create_volume(Request::new(create_block(blk.as_str(), 64 * MIB, &node))),
        async {
            wait_agent_exit(&sb, &node, armed).await;
            assert_eq!(
                lv_size(vm, blk.as_str()).await,
                Some(64 * MIB),
                "crashed after lvcreate"
            );
            start_csi_agent(&sb, &node, "").await
        }
    );
    let created = match created {
        Ok(c) => c.into_inner().volume.expect("volume"),
        Err(e) => panic!(
            "create across an agent crash: {e:?}{}",
            logs(&sb, &[&node]).await
        ),
    };
    assert_eq!(created.capacity_bytes, 64 * MIB);
    let lvs = vm
        .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD")
        .await
        .expect("lvs");
    assert_eq!(
        lvs.split_whitespace().collect::<Vec<_>>(),
        [blk.as_str()],
        "one LV, no duplicate"
    );

    // A raw block volume: staged and published as a device, written and read back, never
    // formatted.
    let dev = csi
        .controller_publish_volume(Request::new(ControllerPublishVolumeRequest {
            volume_id: blk.as_str().into(),
            node_id: node.clone(),
            volume_capability: Some(block_cap()),
            ..Default::default()
        }))
        .await
        .expect("publish block")
        .into_inner()
        .publish_context
        .get("devicePath")
        .cloned()
        .expect("device path");
    let staging =
        format!("/var/lib/kubelet/plugins/kubernetes.io/csi/lvm.hwameistor.io/{blk}/globalmount");
    let target = format!("/var/lib/kubelet/pods/pod-b/volumeDevices/kubernetes.io~csi/{blk}");
    for _ in 0..2 {
        call(
            &sb,
            vm,
            &node,
            &format!("stage {blk} {dev} {staging} block"),
        )
        .await;
        call(
            &sb,
            vm,
            &node,
            &format!("publish {blk} {dev} {staging} {target} block"),
        )
        .await;
    }
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null && dd if=/tmp/pattern of={target} bs=1M count=4 conv=fsync 2>/dev/null && dd if={target} bs=1M count=4 2>/dev/null | cmp - /tmp/pattern"
    ))
    .await
    .expect("raw block data written through the published device reads back");
    let sig = vm.exec(&format!("blkid -p {dev}")).await.expect("blkid");
    assert!(
        !sig.success() || sig.stdout.trim().is_empty(),
        "a block volume was formatted: {}",
        sig.stdout
    );
    for _ in 0..2 {
        call(&sb, vm, &node, &format!("unpublish {blk} {target}")).await;
        call(&sb, vm, &node, &format!("unstage {blk} {staging}")).await;
    }
    csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
        volume_id: blk.as_str().into(),
        node_id: node.clone(),
        ..Default::default()
    }))
    .await
    .expect("unpublish");

    // DeleteVolume while the agent dies right after lvremove, before it releases the
    // replica: the call completes once a restarted agent finishes, and nothing is left.
    let running = vm
        .exec_ok("pidof hwameistor-agent")
        .await
        .expect("agent running");
    let running: u32 = running
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    vm.kill(running, 9).await.expect("kill agent");
    wait_agent_exit(&sb, &node, running).await;
    let armed = start_csi_agent(&sb, &node, "HWAMEISTOR_CRASH_POINT=lvm-after-lvremove").await;
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let (deleted, _) = tokio::join!(
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: blk.as_str().into(),
            ..Default::default()
        })),
        async {
            wait_agent_exit(&sb, &node, armed).await;
            assert_eq!(
                lv_size(vm, blk.as_str()).await,
                None,
                "crashed after lvremove"
            );
            let left = replicas
                .list(&ListParams::default())
                .await
                .expect("list")
                .items;
            assert_eq!(
                left.len(),
                1,
                "the replica outlives its LV until the agent releases it"
            );
            start_csi_agent(&sb, &node, "").await
        }
    );
    if let Err(e) = deleted {
        panic!(
            "delete across an agent crash: {e:?}{}",
            logs(&sb, &[&node]).await
        );
    }
    let volumes: Api<LocalVolume> = Api::all(sb.client.clone());
    assert!(volumes
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    assert!(replicas
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    let lvs = vm
        .exec_ok("lvs --noheadings -o lv_name LocalStorage_PoolHDD")
        .await
        .expect("lvs");
    assert!(lvs.trim().is_empty(), "no LV leaked: {lvs}");
    reconciler.abort();
    sb.shutdown().await.expect("shutdown");
}
