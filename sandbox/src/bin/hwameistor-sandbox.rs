//! `hwameistor-sandbox`: a local HwameiStor with no cluster needed. Starts the test API
//! server, boots node VMs with virtual disks running the real node agent, and shows the
//! system at work: disks discovered (one of them refused because it is in use), claimed into
//! a pool, and a logical volume created from it.

use clap::Parser;
use hwameistor_api::quantity::format_size;
use hwameistor_api::*;
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox};
use hwameistor_testbed::VmSpec;
use kube::api::{Api, ListParams, PostParams};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "hwameistor-sandbox",
    version,
    about = "Run HwameiStor locally: a test API server and node VMs"
)]
struct Args {
    /// Number of node VMs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    nodes: u8,
    /// Where to write a kubeconfig for kubectl on this machine.
    #[arg(long, default_value = "sandbox.kubeconfig")]
    kubeconfig_out: PathBuf,
    /// Keep everything running until Ctrl-C (to explore with kubectl).
    #[arg(long)]
    keep_running: bool,
}

const WAIT: Duration = Duration::from_secs(120);

fn step(started: Instant, msg: &str) {
    println!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("node{i}")).collect();
    let specs: Vec<VmSpec> = names
        .iter()
        .map(|n| {
            VmSpec::new(n)
                .disk(format!("{n}-hdd1"), 1 << 30)
                .disk(format!("{n}-hdd2"), 2 << 30)
                .disk(format!("{n}-inuse"), 512 << 20)
        })
        .collect();
    step(
        started,
        &format!(
            "building VM assets and booting {} node VM(s) (software emulation: ~10-20 s)",
            names.len()
        ),
    );
    let sb = Sandbox::start(&agent, specs).await?;
    if let hwameistor_testapi::TestCluster::Local(server) = &sb.cluster {
        server.write_kubeconfig(&args.kubeconfig_out, "127.0.0.1")?;
        step(
            started,
            &format!(
                "API server at {} (kubeconfig: {})",
                server.url(),
                args.kubeconfig_out.display()
            ),
        );
    }
    for n in &names {
        // One disk per node already carries a filesystem: the agent must leave it alone.
        sb.testbed
            .vm(n)
            .exec_ok(&format!("mkfs.xfs -q -f /dev/disk/by-id/virtio-{n}-inuse"))
            .await?;
        sb.start_agent(n, &[]).await?;
    }
    step(started, "agents started; waiting for disk discovery");
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    let want = names.len() * 3;
    let all = eventually(WAIT, "all disks discovered", || async {
        let l = disks.list(&ListParams::default()).await?.items;
        Ok((l
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.phase).is_some())
            .count()
            == want)
            .then_some(l))
    })
    .await?;
    println!(
        "\n{:<8} {:<24} {:<10} {:<14} {:>8} {:<12} REASON",
        "NODE", "LOCALDISK", "DEVICE", "SERIAL", "SIZE", "PHASE"
    );
    let mut rows: Vec<_> = all.iter().collect();
    rows.sort_by_key(|d| {
        (
            d.spec.node_name.clone(),
            d.status.as_ref().and_then(|s| s.serial.clone()),
        )
    });
    for d in rows {
        let s = d.status.clone().unwrap_or_default();
        println!(
            "{:<8} {:<24} {:<10} {:<14} {:>8} {:<12} {}",
            d.spec.node_name,
            d.metadata.name.clone().unwrap_or_default(),
            s.device_path.unwrap_or_default(),
            s.serial.unwrap_or_default(),
            format_size(s.capacity_bytes.unwrap_or(0)),
            s.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
            s.reason.unwrap_or_default()
        );
    }
    println!();
    let claims: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    for n in &names {
        let c = LocalDiskClaim::new(
            &format!("{n}-hdd"),
            LocalDiskClaimSpec {
                node_name: n.clone(),
                description: DiskSelector {
                    disk_type: Some(DiskType::Hdd),
                    ..Default::default()
                },
            },
        );
        claims.create(&PostParams::default(), &c).await?;
    }
    step(
        started,
        "created a LocalDiskClaim per node for its HDD disks; waiting for the pools",
    );
    for n in &names {
        let name = format!("{n}-hdd");
        let c = eventually(WAIT, &format!("claim {name} Bound"), || async {
            let c = claims.get(&name).await?;
            Ok(c.status
                .as_ref()
                .and_then(|s| s.phase)
                .filter(|p| *p == ClaimPhase::Bound || *p == ClaimPhase::Failed)
                .map(|_| c))
        })
        .await?;
        step(
            started,
            &format!(
                "claim {name}: {}",
                c.status.and_then(|s| s.message).unwrap_or_default()
            ),
        );
    }
    let nodes: Api<LocalStorageNode> = Api::all(sb.client.clone());
    println!(
        "\n{:<8} {:<22} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "NODE", "POOL", "TOTAL", "USED", "FREE", "DISKS", "VOLUMES"
    );
    for n in &names {
        let lsn = eventually(WAIT, &format!("{n} pools reported"), || async {
            let l = nodes.get(n).await?;
            Ok(l.status
                .as_ref()
                .is_some_and(|s| !s.pools.is_empty())
                .then_some(l))
        })
        .await?;
        for p in lsn.status.unwrap_or_default().pools.values() {
            println!(
                "{:<8} {:<22} {:>8} {:>8} {:>8} {:>6} {:>8}",
                n,
                p.name,
                format_size(p.total_capacity_bytes),
                format_size(p.used_capacity_bytes),
                format_size(p.free_capacity_bytes),
                p.disks.len(),
                p.volume_count
            );
        }
    }
    println!();
    // A logical volume through the agent's contract resource.
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let node = &names[0];
    let mut r = LocalVolumeReplica::new(
        "demo-volume-r1",
        LocalVolumeReplicaSpec {
            volume_name: "demo-volume".into(),
            pool_name: PoolClass::Hdd.pool_name().into(),
            node_name: node.clone(),
            volume_kind: VolumeKind::Lvm,
            required_capacity_bytes: 1 << 30,
        },
    );
    r.metadata.labels = Some([(LABEL_NODE.to_string(), node.clone())].into());
    replicas.create(&PostParams::default(), &r).await?;
    let ready = eventually(WAIT, "demo volume Ready", || async {
        let r = replicas.get("demo-volume-r1").await?;
        Ok((r.status.as_ref().and_then(|s| s.state) == Some(ReplicaState::Ready)).then_some(r))
    })
    .await?;
    let st = ready.status.unwrap_or_default();
    step(
        started,
        &format!(
            "volume demo-volume Ready on {node}: {} ({})",
            st.device_path.unwrap_or_default(),
            format_size(st.allocated_capacity_bytes.unwrap_or(0))
        ),
    );
    let lvs = sb
        .testbed
        .vm(node)
        .exec_ok("lvs -o lv_name,vg_name,lv_size LocalStorage_PoolHDD")
        .await?;
    println!("\n{node}$ lvs\n{lvs}");
    if args.keep_running {
        println!(
            "Explore with: kubectl --kubeconfig {} get localdisks,localdiskclaims,localstoragenodes,localvolumereplicas\nCtrl-C stops the sandbox and its VMs.",
            args.kubeconfig_out.display()
        );
        tokio::signal::ctrl_c().await?;
    }
    sb.shutdown().await?;
    step(started, "sandbox stopped; VMs and temporary files removed");
    Ok(())
}
