//! `bench-stack`: the whole volume path on a real node. Runs the controller binary on the
//! host and the agent in a VM, creates LocalVolumes, and prints create→Ready latency (the
//! controller places the volume and creates its replica, the agent runs `lvcreate`) and the
//! resident memory of the controller and the agent once 100 volumes exist.
//!
//! The VM runs under software emulation (TCG): LVM in it is several times slower than on
//! real hardware, so latency figures are upper bounds.

use clap::Parser;
use hwameistor_api::*;
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox};
use hwameistor_testbed::VmSpec;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "bench-stack",
    about = "Benchmark controller + agent on a VM node"
)]
struct Args {
    /// Volumes to create one after another (latency).
    #[arg(long, default_value_t = 20)]
    sequential: usize,
    /// Total volumes to reach (the rest are created concurrently) before measuring memory.
    #[arg(long, default_value_t = 100)]
    total: usize,
}

const WAIT: Duration = Duration::from_secs(300);

fn pct(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn volume(name: &str, node: &str) -> LocalVolume {
    LocalVolume::new(
        name,
        LocalVolumeSpec {
            pool_name: PoolClass::Hdd.pool_name().into(),
            volume_kind: VolumeKind::Lvm,
            required_capacity_bytes: 8 << 20,
            replica_number: 1,
            convertible: false,
            accessibility: Accessibility {
                nodes: vec![node.to_string()],
            },
            pvc_namespace: None,
            pvc_name: None,
            fs_type: None,
            config: None,
            split_brain_resolution: None,
            operation: None,
            thin: false,
            data_source: None,
        },
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node = "stack1";
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let controller_bin = workspace_binary("hwameistor-controller", "HWAMEISTOR_CONTROLLER_BIN")?;
    let sb = Sandbox::start(
        &agent,
        vec![VmSpec::new(node)
            .disk("s-1", 2 << 30)
            .disk("s-2", 2 << 30)
            .disk("s-3", 2 << 30)],
    )
    .await?;
    let agent_pid = sb.start_agent_with(node, &[], "RUST_LOG=info", "").await?;
    let claims: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    eventually(WAIT, "3 disks", || async {
        Ok((disks.list(&ListParams::default()).await?.items.len() == 3).then_some(()))
    })
    .await?;
    claims
        .create(
            &PostParams::default(),
            &LocalDiskClaim::new(
                "stack",
                LocalDiskClaimSpec {
                    node_name: node.into(),
                    description: DiskSelector::default(),
                },
            ),
        )
        .await?;
    eventually(WAIT, "claim Bound", || async {
        Ok(
            (claims.get("stack").await?.status.and_then(|s| s.phase) == Some(ClaimPhase::Bound))
                .then_some(()),
        )
    })
    .await?;
    let mut controller = sb.start_controller(&controller_bin, "bench").await?;
    let controller_pid = controller.pid();

    let volumes: Api<LocalVolume> = Api::all(sb.client.clone());
    let ready = |o: Option<&LocalVolume>| {
        o.and_then(|v| v.status.as_ref()).and_then(|s| s.state) == Some(VolumeState::Ready)
    };
    let mut latency = Vec::new();
    for i in 0..args.sequential {
        let name = format!("stack-v{i:03}");
        let t0 = Instant::now();
        volumes
            .create(&PostParams::default(), &volume(&name, node))
            .await?;
        tokio::time::timeout(WAIT, await_condition(volumes.clone(), &name, ready)).await??;
        latency.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let t0 = Instant::now();
    let rest: Vec<String> = (args.sequential..args.total)
        .map(|i| format!("stack-v{i:03}"))
        .collect();
    for name in &rest {
        volumes
            .create(&PostParams::default(), &volume(name, node))
            .await?;
    }
    for name in &rest {
        tokio::time::timeout(WAIT, await_condition(volumes.clone(), name, ready)).await??;
    }
    let burst = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;

    let controller_rss = hwameistor_sandbox::bench::rss_kib(&std::fs::read_to_string(format!(
        "/proc/{controller_pid}/status"
    ))?)
    .unwrap_or(0);
    let agent_rss = hwameistor_sandbox::bench::rss_kib(
        &sb.testbed
            .vm(node)
            .exec_ok(&format!("cat /proc/{agent_pid}/status"))
            .await?,
    )
    .unwrap_or(0);
    let lvs = sb
        .testbed
        .vm(node)
        .exec_ok("lvs --noheadings LocalStorage_PoolHDD | wc -l")
        .await?;
    println!(
        "\n== LocalVolume create → Ready (controller placement + agent lvcreate), sequential, n={}",
        latency.len()
    );
    println!(
        "p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        pct(latency.clone(), 0.5),
        pct(latency.clone(), 0.99),
        pct(latency.clone(), 0.0),
        pct(latency, 1.0)
    );
    println!(
        "== {} more volumes created at once: all Ready in {burst:.1} s ({:.1} volumes/s)",
        rest.len(),
        rest.len() as f64 / burst
    );
    println!(
        "== resident memory with {} volumes ({} LVs on the node)",
        args.total,
        lvs.trim()
    );
    println!(
        "controller (host process):  {:.1} MiB",
        controller_rss as f64 / 1024.0
    );
    println!(
        "node agent (in the VM):     {:.1} MiB",
        agent_rss as f64 / 1024.0
    );
    controller.child.kill().await.ok();
    sb.shutdown().await?;
    Ok(())
}
