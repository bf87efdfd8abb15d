//! What the VM tests of the controller share: the sandbox's node VMs with the real agent
//! and its CSI node service, driven through the `csi_node_call` example client, and the
//! control plane (volume reconciler, CSI controller service) in the test process.
#![allow(dead_code)]

pub use hwameistor_api::*;
pub use hwameistor_controller::metrics::Metrics;
pub use hwameistor_controller::volume_reconciler;
pub use hwameistor_core::placement::Policy;
pub use hwameistor_csi::controller::{ControllerService, Timeouts};
pub use hwameistor_csi::csi::controller_server::Controller;
pub use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, MountVolume,
};
pub use hwameistor_csi::csi::*;
pub use hwameistor_csi::topology;
pub use hwameistor_sandbox::{
    eventually, run_prefix, Error, Sandbox, GUEST_AGENT, GUEST_AGENT_LOG, GUEST_KUBECONFIG,
};
pub use hwameistor_testbed::{Vm, VmSpec};
pub use kube::api::{Api, ListParams, PostParams};
pub use std::collections::HashMap;
pub use std::path::PathBuf;
pub use std::sync::Arc;
pub use std::time::Duration;
#[allow(unused_imports)]
pub use tonic::{Code, Request};

pub const MIB: i64 = 1 << 20;
pub const WAIT: Duration = Duration::from_secs(120);
pub const SOCKET: &str = "/run/csi/csi.sock";
pub const CALL: &str = "/usr/local/bin/csi_node_call";

/// A binary of this workspace's target directory (`deps/..` of this test executable).
pub fn target_binary(rel: &str, env: &str) -> PathBuf {
    hwameistor_sandbox::workspace_binary(rel, env).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn logs(sb: &Sandbox, nodes: &[&str]) -> String {
    let mut out = String::new();
    for n in nodes {
        out.push_str(&format!(
            "\n--- agent log on {n} ---\n{}",
            sb.agent_log(n).await
        ));
    }
    out
}

pub async fn ok<T>(sb: &Sandbox, nodes: &[&str], r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}{}", logs(sb, nodes).await),
    }
}

/// Runs the CSI node client in the VM; returns its output line, or panics with the logs.
pub async fn call(sb: &Sandbox, vm: &Vm, node: &str, args: &str) -> String {
    call_on(sb, vm, node, SOCKET, args).await
}

/// [`call`] on the node service at `socket` (another driver's).
pub async fn call_on(sb: &Sandbox, vm: &Vm, node: &str, socket: &str, args: &str) -> String {
    let out = vm
        .exec(&format!("{CALL} {socket} {args}"))
        .await
        .expect("exec");
    if !out.success() {
        panic!(
            "csi_node_call {args} failed: {}{}{}",
            out.stdout,
            out.stderr,
            logs(sb, &[node]).await
        );
    }
    out.stdout.trim().to_string()
}

/// Filesystem size from `df -Pk` (POSIX format: one line per filesystem, however long the
/// device name).
pub async fn df_bytes(vm: &Vm, path: &str) -> i64 {
    let out = vm
        .exec_ok(&format!("df -Pk {path} | tail -1"))
        .await
        .expect("df");
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<i64>().ok())
        .map(|k| k * 1024)
        .unwrap_or_else(|| panic!("df output {out:?}"))
}

pub async fn lv_size(vm: &Vm, lv: &str) -> Option<i64> {
    let out = vm
        .exec(&format!(
            "lvs --noheadings --units b --nosuffix -o lv_size LocalStorage_PoolHDD/{lv}"
        ))
        .await
        .expect("lvs");
    out.success()
        .then(|| out.stdout.trim().parse().ok())
        .flatten()
}

pub fn cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

pub fn create(name: &str, bytes: i64, node: &str, fs: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap(fs)],
        parameters: HashMap::from([("poolClass".to_string(), "HDD".to_string())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![topology::of_node(node)],
            preferred: vec![topology::of_node(node)],
        }),
        ..Default::default()
    }
}

pub async fn claim_pool(sb: &Sandbox, node: &str) {
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    let disk = ok(
        sb,
        &[node],
        eventually(WAIT, &format!("an Available disk on {node}"), || async {
            let l = disks
                .list(&ListParams::default().labels(&format!("{LABEL_NODE}={node}")))
                .await?;
            Ok(l.items
                .into_iter()
                .find(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Available)))
        })
        .await,
    )
    .await;
    let claims: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    let claim = LocalDiskClaim::new(
        &format!("{node}-pool"),
        LocalDiskClaimSpec {
            node_name: node.into(),
            description: DiskSelector {
                local_disk_names: vec![disk.metadata.name.clone().unwrap_or_default()],
                ..Default::default()
            },
        },
    );
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    let nodes: Api<LocalStorageNode> = Api::all(sb.client.clone());
    ok(
        sb,
        &[node],
        eventually(WAIT, &format!("an HDD pool on {node}"), || async {
            let n = nodes.get_opt(node).await?;
            Ok(n.and_then(|n| n.status)
                .filter(|s| s.state == Some(NodeState::Ready))
                .and_then(|s| s.pools.get(PoolClass::Hdd.pool_name()).cloned())
                .filter(|p| p.free_capacity_bytes > 900 * MIB))
        })
        .await,
    )
    .await;
}

/// The volume reconciler (running) and the CSI controller service, as the controller binary
/// wires them, with `t` as every CSI wait.
pub fn control_plane(
    sb: &Sandbox,
    identity: &str,
    t: Duration,
) -> (tokio::task::JoinHandle<()>, ControllerService) {
    let ctx = volume_reconciler::Context::new(
        sb.client.clone(),
        identity,
        Arc::new(Metrics::default()),
        Policy::default(),
    );
    let reconciler = tokio::spawn(async move {
        tokio::join!(
            volume_reconciler::run(ctx.clone()),
            hwameistor_controller::operations::run(ctx, Default::default())
        );
    });
    let csi = ControllerService::new(
        sb.client.clone(),
        Timeouts {
            create: t,
            delete: t,
            expand: t,
        },
    );
    (reconciler, csi)
}

/// The CSI node client, stripped (debug info would fill the VM's RAM-backed root).
pub fn stripped_client(client_bin: &std::path::Path) -> Vec<u8> {
    let stripped = tempfile::NamedTempFile::new().expect("tempfile");
    let status = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(stripped.path())
        .arg(client_bin)
        .status()
        .expect("strip");
    assert!(status.success());
    std::fs::read(stripped.path()).expect("read client")
}

/// Starts the agent with its CSI node service; `env` may arm a crash point.
pub async fn start_csi_agent(sb: &Sandbox, node: &str, env: &str) -> u32 {
    start_csi_agent_with(sb, node, env, "").await
}

/// [`start_csi_agent`] with extra agent arguments.
pub async fn start_csi_agent_with(sb: &Sandbox, node: &str, env: &str, args: &str) -> u32 {
    let cmd = format!(
        "{env} RUST_LOG=info exec {GUEST_AGENT} --node-name {node} --kubeconfig {GUEST_KUBECONFIG} --resync 20s --csi-endpoint unix://{SOCKET} {args}"
    );
    sb.testbed
        .vm(node)
        .spawn(&cmd, GUEST_AGENT_LOG)
        .await
        .expect("start agent")
}

pub async fn wait_agent_exit(sb: &Sandbox, node: &str, pid: u32) {
    let vm = sb.testbed.vm(node);
    ok(
        sb,
        &[node],
        eventually(WAIT, &format!("agent {pid} on {node} to exit"), || async {
            Ok(matches!(
                vm.process_state(pid).await?,
                hwameistor_testbed::ProcessState::Exited { .. }
            )
            .then_some(()))
        })
        .await,
    )
    .await;
}

pub fn create_block(name: &str, bytes: i64, node: &str) -> CreateVolumeRequest {
    let mut req = create(name, bytes, node, "");
    req.volume_capabilities = vec![block_cap()];
    req
}

pub fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(
            hwameistor_csi::csi::volume_capability::BlockVolume {},
        )),
    }
}

// HA and operation VM tests share these.

pub const HELPER: &str = "/usr/local/bin/hwameistor-drbd-helper";
pub const LEASES: &str = "default";
/// The heartbeat the agents declare valid, and the grace the controller adds.
pub const HEARTBEAT_VALID: Duration = Duration::from_secs(3);

/// The SHA-256 of what `source` (a shell command writing to stdout) prints, in the VM.
pub async fn sha256(vm: &Vm, source: &str) -> String {
    vm.exec_ok(&format!("{source} | sha256sum | cut -d' ' -f1"))
        .await
        .unwrap_or_else(|e| panic!("checksum of `{source}`: {e}"))
        .trim()
        .to_string()
}

pub fn ha_create(name: &str, bytes: i64, node: &str) -> CreateVolumeRequest {
    let mut req = create(name, bytes, node, "ext4");
    req.parameters
        .insert("replicaNumber".to_string(), "2".to_string());
    req
}

pub async fn ha_agent(sb: &Sandbox, node: &str) -> u32 {
    ha_agent_with(sb, node, "").await
}

/// [`ha_agent`] with `extra` agent arguments.
pub async fn ha_agent_with(sb: &Sandbox, node: &str, extra: &str) -> u32 {
    let ip = sb.testbed.vm(node).private_ip();
    start_csi_agent_with(
        sb,
        node,
        "",
        &format!(
            "--storage-ip {ip} --namespace {LEASES} --heartbeat 1s --heartbeat-valid {}s --drbd-helper {HELPER} {extra}",
            HEARTBEAT_VALID.as_secs()
        ),
    )
    .await
}

pub async fn volume(sb: &Sandbox, name: &str) -> LocalVolume {
    Api::<LocalVolume>::all(sb.client.clone())
        .get(name)
        .await
        .expect("get volume")
}

pub fn primary(v: &LocalVolume) -> Option<String> {
    v.spec
        .config
        .as_ref()?
        .replicas
        .iter()
        .find(|a| a.primary)
        .map(|a| a.hostname.clone())
}

pub async fn wait_volume(
    sb: &Sandbox,
    nodes: &[&str],
    name: &str,
    what: &str,
    check: impl Fn(&LocalVolume) -> bool,
) -> LocalVolume {
    let api: Api<LocalVolume> = Api::all(sb.client.clone());
    ok(
        sb,
        nodes,
        eventually(WAIT, &format!("volume {name}: {what}"), || async {
            Ok(api.get_opt(name).await?.filter(|v| check(v)))
        })
        .await,
    )
    .await
}

pub fn healthy(v: &LocalVolume) -> bool {
    let st = v.status.clone().unwrap_or_default();
    st.state == Some(VolumeState::Ready) && st.ha_state == Some(HaState::Healthy)
}

pub async fn publish(
    csi: &ControllerService,
    vol: &str,
    node: &str,
) -> Result<String, tonic::Status> {
    let r = csi
        .controller_publish_volume(Request::new(ControllerPublishVolumeRequest {
            volume_id: vol.into(),
            node_id: node.into(),
            volume_capability: Some(cap("ext4")),
            ..Default::default()
        }))
        .await?;
    Ok(r.into_inner()
        .publish_context
        .get("devicePath")
        .cloned()
        .unwrap_or_default())
}

pub async fn unpublish(csi: &ControllerService, vol: &str, node: &str) {
    csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        ..Default::default()
    }))
    .await
    .expect("unpublish");
}

pub fn paths(vol: &str, pod: &str) -> (String, String) {
    (
        format!("/var/lib/kubelet/plugins/kubernetes.io/csi/lvm.hwameistor.io/{vol}/globalmount"),
        format!("/var/lib/kubelet/pods/{pod}/volumes/kubernetes.io~csi/{vol}/mount"),
    )
}

/// Stages and publishes as the kubelet does, retrying while the node answers Unavailable
/// (the primary has not reached it yet).
pub async fn mount_on(sb: &Sandbox, node: &str, vol: &str, dev: &str, pod: &str) -> String {
    let vm = sb.testbed.vm(node);
    let (staging, target) = paths(vol, pod);
    ok(
        sb,
        &[node],
        eventually(WAIT, &format!("{vol} staged on {node}"), || async {
            let out = vm
                .exec(&format!("{CALL} {SOCKET} stage {vol} {dev} {staging} ext4"))
                .await?;
            Ok(out.success().then_some(()))
        })
        .await,
    )
    .await;
    call(
        sb,
        vm,
        node,
        &format!("publish {vol} {dev} {staging} {target} ext4"),
    )
    .await;
    target
}

pub async fn unmount_on(sb: &Sandbox, node: &str, vol: &str, pod: &str) {
    let vm = sb.testbed.vm(node);
    let (staging, target) = paths(vol, pod);
    call(sb, vm, node, &format!("unpublish {vol} {target}")).await;
    call(sb, vm, node, &format!("unstage {vol} {staging}")).await;
}

/// The test process's logs: the controller's and the CSI controller service's.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "hwameistor_controller=info,hwameistor_csi=info",
        ))
        .with_test_writer()
        .try_init();
}

/// `count` node VMs (`<run>-<tag>1`...) joined by a private link, each with the agent (DRBD
/// on), the DRBD helper, the CSI client and a pool; and the name of this test's volume
/// (`<run>-<volume>`).
pub async fn ha_nodes(tag: &str, volume: &str, count: usize) -> (Sandbox, Vec<String>, String) {
    init_tracing();
    let agent = target_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN");
    let helper = target_binary("hwameistor-drbd-helper", "HWAMEISTOR_DRBD_HELPER_BIN");
    let client_bin = target_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN");
    let prefix = run_prefix();
    let nodes: Vec<String> = (1..=count).map(|i| format!("{prefix}-{tag}{i}")).collect();
    let sb = Sandbox::start(
        &agent,
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| VmSpec::new(n).disk(format!("{tag}-disk-{}", i + 1), 1 << 30))
            .collect(),
    )
    .await
    .expect("sandbox: test API server and node VMs");
    let client_bytes = stripped_client(&client_bin);
    let helper_bytes = stripped_client(&helper);
    for n in &nodes {
        let vm = sb.testbed.vm(n);
        vm.write_file_mode(CALL, &client_bytes, 0o755)
            .await
            .expect("install client");
        vm.write_file_mode(HELPER, &helper_bytes, 0o755)
            .await
            .expect("install helper");
        ha_agent(&sb, n).await;
    }
    for n in &nodes {
        claim_pool(&sb, n).await;
    }
    (sb, nodes, format!("{prefix}-{volume}"))
}

/// The copy status of `vol`'s replica on `node`.
pub async fn copy_of(sb: &Sandbox, vol: &str, node: &str) -> Option<CopyStatus> {
    Api::<LocalVolumeReplica>::all(sb.client.clone())
        .get_opt(&replica::replica_name(vol, node))
        .await
        .ok()
        .flatten()
        .and_then(|r| r.status)
        .and_then(|s| s.copy)
}

/// Waits until every node's agent published its block mover.
pub async fn movers_published(sb: &Sandbox, nodes: &[&str]) {
    let lsns: Api<LocalStorageNode> = Api::all(sb.client.clone());
    ok(
        sb,
        nodes,
        eventually(WAIT, "every block mover published", || async {
            let mut all = true;
            for n in nodes {
                all &= lsns
                    .get_opt(n)
                    .await?
                    .and_then(|l| l.status)
                    .and_then(|s| s.mover)
                    .is_some();
            }
            Ok(all.then_some(()))
        })
        .await,
    )
    .await;
}
