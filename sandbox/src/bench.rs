//! What the benchmark binaries (`bench-ha`, `bench-mover`, ...) share: storage nodes with
//! the agent, the DRBD helper and the CSI client installed and a pool claimed, timing of
//! commands inside a VM, memory of a process and percentiles of timings.

use crate::{eventually, Sandbox};
use hwameistor_api::*;
use kube::api::{Api, ListParams, PostParams};
use std::path::Path;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(180);
pub const CALL: &str = "/usr/local/bin/csi_node_call";
pub const HELPER: &str = "/usr/local/bin/hwameistor-drbd-helper";
pub const SOCKET: &str = "/run/csi/csi.sock";

/// Waits until each of `nodes` published its block mover.
pub async fn movers_published(sb: &Sandbox, nodes: &[&str]) -> anyhow::Result<()> {
    let lsns: Api<LocalStorageNode> = Api::all(sb.client.clone());
    for n in nodes {
        eventually(WAIT, "the block mover published", || async {
            Ok(lsns
                .get_opt(n)
                .await?
                .and_then(|l| l.status)
                .and_then(|s| s.mover))
        })
        .await?;
    }
    Ok(())
}

/// The resident set (KiB) in the text of a `/proc/PID/status` file.
pub fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The resident set (MiB) of process `pid` (`"self"` for this one); NaN when unknown.
pub fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| rss_kib(&s))
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// The `p` quantile (0..1) of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `bin` without debug info (which would fill a VM's RAM-backed root).
pub fn stripped(bin: &Path) -> anyhow::Result<Vec<u8>> {
    let out = tempfile::NamedTempFile::new()?;
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(out.path())
        .arg(bin)
        .status()?
        .success();
    anyhow::ensure!(ok, "strip {} failed", bin.display());
    Ok(std::fs::read(out.path())?)
}

/// Seconds a shell command takes in the VM: timed from here, less the cost of running an
/// empty command (the VM's busybox `date` has no sub-second precision).
pub async fn timed(vm: &hwameistor_testbed::Vm, cmd: &str) -> anyhow::Result<f64> {
    let mut idle = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        vm.exec_ok("true").await?;
        idle.push(t.elapsed().as_secs_f64());
    }
    idle.sort_by(|a, b| a.total_cmp(b));
    let t = Instant::now();
    vm.exec_ok_timeout(&format!("{cmd} >/dev/null 2>&1"), Duration::from_secs(600))
        .await?;
    Ok((t.elapsed().as_secs_f64() - idle[1]).max(1e-6))
}

/// Starts the agent on `node` with its CSI service, DRBD helper and storage IP (the VM's
/// private address; the block mover listens there too).
pub async fn start_agent(sb: &Sandbox, node: &str) -> anyhow::Result<u32> {
    let ip = sb.testbed.vm(node).private_ip();
    Ok(sb
        .start_agent_with(
            node,
            &[],
            "RUST_LOG=info",
            &format!(
                "--csi-endpoint unix://{SOCKET} --storage-ip {ip} --namespace {} --heartbeat 1s --heartbeat-valid 3s --drbd-helper {HELPER}",
                hwameistor_api::SYSTEM_NAMESPACE
            ),
        )
        .await?)
}

/// Installs the CSI client and the DRBD helper on `nodes`, starts their agents, claims
/// each node's first Available disk as its HDD pool, and waits for the pools and storage
/// IPs.
pub async fn storage_nodes(
    sb: &Sandbox,
    nodes: &[&str],
    call: &Path,
    helper: &Path,
) -> anyhow::Result<()> {
    let (call_bytes, helper_bytes) = (stripped(call)?, stripped(helper)?);
    for n in nodes {
        let vm = sb.testbed.vm(n);
        vm.write_file_mode(CALL, &call_bytes, 0o755).await?;
        vm.write_file_mode(HELPER, &helper_bytes, 0o755).await?;
        start_agent(sb, n).await?;
    }
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    for n in nodes {
        let disk = eventually(WAIT, "an Available disk", || async {
            Ok(disks
                .list(&ListParams::default().labels(&format!("{LABEL_NODE}={n}")))
                .await?
                .items
                .into_iter()
                .find(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Available)))
        })
        .await?;
        let claim = LocalDiskClaim::new(
            &format!("{n}-pool"),
            LocalDiskClaimSpec {
                node_name: n.to_string(),
                description: DiskSelector {
                    local_disk_names: vec![disk.metadata.name.clone().unwrap_or_default()],
                    ..Default::default()
                },
            },
        );
        Api::<LocalDiskClaim>::all(sb.client.clone())
            .create(&PostParams::default(), &claim)
            .await?;
    }
    let lsns: Api<LocalStorageNode> = Api::all(sb.client.clone());
    for n in nodes {
        eventually(WAIT, "a pool with a storage IP", || async {
            Ok(lsns.get_opt(n).await?.filter(|l| {
                l.spec.storage_ip.is_some()
                    && l.status
                        .as_ref()
                        .is_some_and(|s| s.pools.contains_key(PoolClass::Hdd.pool_name()))
            }))
        })
        .await?;
    }
    Ok(())
}
