//! Raw-disk volumes (`disk.hwameistor.io`) on a real node: a QEMU VM with three extra disks
//! runs the real agent (disk discovery, the volume's confirm, the wipe, the CSI node service
//! on its second socket); the test process runs the controller's binder and the disk CSI
//! controller service, and drives the node service as the kubelet would.
//!
//! Two volumes created at once get two different disks, each the smallest that fits; a
//! filesystem volume is formatted, written and read back after a restage; a block volume is
//! written and read back through its published device (each publish recorded in the
//! volume); a volume no disk fits is refused with nothing left behind; a deleted volume's
//! disk is wiped (no signature left) and free again.
//!
//! Needs root, QEMU and the host packages of scripts/install-host-deps.sh, and the agent and
//! the csi_node_call example built.

mod vm_support;

use hwameistor_csi::disk_controller::DiskControllerService;
use vm_support::*;

const DISK_SOCKET: &str = "/run/csi-disk/csi.sock";

fn disk_create(name: &str, bytes: i64, node: &str, cap: VolumeCapability) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        parameters: HashMap::from([("diskType".to_string(), "HDD".to_string())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![topology::of_node(node)],
            preferred: vec![topology::of_node(node)],
        }),
        ..Default::default()
    }
}

async fn disk_call(sb: &Sandbox, node: &str, args: &str) -> String {
    call_on(sb, sb.testbed.vm(node), node, DISK_SOCKET, args).await
}

/// Stages `vol` (on `dev`) and publishes it at `target`, as the kubelet does for a pod.
async fn attach(
    sb: &Sandbox,
    node: &str,
    vol: &str,
    dev: &str,
    staging: &str,
    target: &str,
    kind: &str,
) {
    disk_call(sb, node, &format!("stage {vol} {dev} {staging} {kind}")).await;
    disk_call(
        sb,
        node,
        &format!("publish {vol} {dev} {staging} {target} {kind}"),
    )
    .await;
}

/// Unpublishes and unstages `vol`, as the kubelet does when the pod goes.
async fn detach(sb: &Sandbox, node: &str, vol: &str, staging: &str, target: &str) {
    disk_call(sb, node, &format!("unpublish {vol} {target}")).await;
    disk_call(sb, node, &format!("unstage {vol} {staging}")).await;
}

async fn ldv(sb: &Sandbox, name: &str) -> LocalDiskVolume {
    Api::<LocalDiskVolume>::all(sb.client.clone())
        .get(name)
        .await
        .expect("LocalDiskVolume")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_disks_serve_volumes_never_shared_and_are_wiped_when_released() {
    init_tracing();
    let agent = target_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN");
    let client_bin = target_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN");
    let node = format!("{}-dk1", run_prefix());
    let sb = Sandbox::start(
        &agent,
        vec![VmSpec::new(&node)
            .disk("dk-small", 512 << 20)
            .disk("dk-mid", 1 << 30)
            .disk("dk-big", 2 << 30)],
    )
    .await
    .expect("sandbox: test API server and a node VM");
    let nodes = [node.as_str()];
    let vm = sb.testbed.vm(&node);
    vm.write_file_mode(CALL, &stripped_client(&client_bin), 0o755)
        .await
        .expect("install client");
    start_csi_agent_with(
        &sb,
        &node,
        "",
        &format!("--disk-csi-endpoint unix://{DISK_SOCKET}"),
    )
    .await;
    let binder = {
        let ctx = volume_reconciler::Context::new(
            sb.client.clone(),
            "disk-vm-binder",
            Arc::new(Metrics::default()),
            Policy::default(),
        );
        tokio::spawn(hwameistor_controller::disk_volumes::run(ctx))
    };
    let csi = DiskControllerService::new(
        sb.client.clone(),
        Timeouts {
            create: Duration::from_secs(120),
            delete: Duration::from_secs(120),
            expand: Duration::from_secs(120),
        },
    );
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    ok(
        &sb,
        &nodes,
        eventually(WAIT, "three Available disks", || async {
            let l = disks
                .list(&ListParams::default().labels(&format!("{LABEL_NODE}={node}")))
                .await?;
            let free = l
                .items
                .iter()
                .filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Available))
                .count();
            Ok((free == 3).then_some(()))
        })
        .await,
    )
    .await;

    // Two at once: 400 MiB (the 512 MiB disk fits) and 700 MiB (the 1 GiB one).
    let prefix = run_prefix();
    let (fs_vol, block_vol) = (format!("{prefix}-dfs"), format!("{prefix}-dblk"));
    let (a, b) = tokio::join!(
        csi.create_volume(Request::new(disk_create(
            &fs_vol,
            700 * MIB,
            &node,
            cap("xfs")
        ))),
        csi.create_volume(Request::new(disk_create(
            &block_vol,
            400 * MIB,
            &node,
            block_cap()
        ))),
    );
    let a = a
        .expect("create fs volume")
        .into_inner()
        .volume
        .expect("volume");
    let b = b
        .expect("create block volume")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(
        a.capacity_bytes,
        1 << 30,
        "the smallest disk that fits 700 MiB"
    );
    assert_eq!(
        b.capacity_bytes,
        512 << 20,
        "the smallest disk that fits 400 MiB"
    );
    let (fa, fb) = (ldv(&sb, &fs_vol).await, ldv(&sb, &block_vol).await);
    let (sa, sb_) = (fa.status.expect("status"), fb.status.expect("status"));
    assert_ne!(
        sa.local_disk_name, sb_.local_disk_name,
        "never one disk for two"
    );
    let dev_a = sa.device_path.expect("device");
    let dev_b = sb_.device_path.expect("device");
    assert!(dev_a.starts_with("/dev/disk/by-id/"), "{dev_a}");

    // The filesystem volume: formatted on stage, written, read back after a restage.
    let staging = format!("/var/lib/kubelet/plugins/disk/{fs_vol}/staging");
    let target = format!("/var/lib/kubelet/pods/p1/volumes/{fs_vol}/mount");
    attach(&sb, &node, &fs_vol, &dev_a, &staging, &target, "xfs").await;
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of={target}/data bs=1M count=64 2>/dev/null && sync"
    ))
    .await
    .expect("write");
    let sum = sha256(vm, &format!("cat {target}/data")).await;
    detach(&sb, &node, &fs_vol, &staging, &target).await;
    attach(&sb, &node, &fs_vol, &dev_a, &staging, &target, "xfs").await;
    assert_eq!(sha256(vm, &format!("cat {target}/data")).await, sum);
    detach(&sb, &node, &fs_vol, &staging, &target).await;

    // The block volume: written and read back through the published device file.
    let bstaging = format!("/var/lib/kubelet/plugins/disk/{block_vol}/staging");
    let btarget = format!("/var/lib/kubelet/pods/p2/volumeDevices/{block_vol}");
    attach(&sb, &node, &block_vol, &dev_b, &bstaging, &btarget, "block").await;
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of=/tmp/blk bs=1M count=32 2>/dev/null && dd if=/tmp/blk of={btarget} bs=1M oflag=direct 2>/dev/null && sync"
    ))
    .await
    .expect("write block");
    assert_eq!(
        sha256(vm, &format!("head -c {} {btarget}", 32 * MIB)).await,
        sha256(vm, "cat /tmp/blk").await
    );
    // No mount table shows a raw block volume in use: its record does (the agent wipes
    // nothing while one is there).
    let st = ldv(&sb, &block_vol).await.status.expect("status");
    assert_eq!(st.published_targets, std::slice::from_ref(&btarget));
    assert_eq!(st.published_node.as_deref(), Some(node.as_str()));
    detach(&sb, &node, &block_vol, &bstaging, &btarget).await;
    let st = ldv(&sb, &block_vol).await.status.expect("status");
    assert!(
        st.published_targets.is_empty() && st.published_node.is_none(),
        "{st:?}"
    );

    // 3 GiB fits no disk: refused, nothing left behind.
    let huge = format!("{prefix}-dhuge");
    let e = csi
        .create_volume(Request::new(disk_create(&huge, 3 << 30, &node, cap("xfs"))))
        .await
        .expect_err("no disk fits");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(Api::<LocalDiskVolume>::all(sb.client.clone())
        .get_opt(&huge)
        .await
        .expect("get")
        .is_none());

    // Deleted: the disk is wiped (no signature left) and free again.
    csi.delete_volume(Request::new(DeleteVolumeRequest {
        volume_id: fs_vol.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete");
    let probe = vm.exec(&format!("blkid -p {dev_a}")).await.expect("blkid");
    assert!(
        !probe.success() && probe.stdout.trim().is_empty(),
        "signature left: {}",
        probe.stdout
    );
    let freed = sa.local_disk_name.expect("disk");
    ok(
        &sb,
        &nodes,
        eventually(WAIT, "the wiped disk Available again", || async {
            let d = disks.get(&freed).await?;
            Ok(
                (d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Available)
                    && d.spec.volume_ref.is_none())
                .then_some(()),
            )
        })
        .await,
    )
    .await;
    csi.delete_volume(Request::new(DeleteVolumeRequest {
        volume_id: block_vol.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete block");
    binder.abort();
    sb.shutdown().await.expect("shutdown");
}
