//! `bench-node`: measures the node agent in a VM and prints the figures.
//!
//! - idle resident memory and CPU of the agent with 3 disks and 10 volumes;
//! - time from a disk being hot-plugged to its LocalDisk existing in the API;
//! - a volume create through the agent (API object → Ready) against the bare `lvcreate` it
//!   runs, timed inside the VM.
//!
//! The VM runs under software emulation (TCG), which slows every process in it, the agent and
//! LVM alike: compare the figures with each other, not with bare metal.

use clap::Parser;
use hwameistor_api::*;
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox};
use hwameistor_testbed::{DiskSpec, VmSpec};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "bench-node", about = "Benchmark the node agent in a VM")]
struct Args {
    /// Volume creates to time, through the agent and bare.
    #[arg(long, default_value_t = 10)]
    volumes: usize,
    /// Disk hot-plugs to time.
    #[arg(long, default_value_t = 5)]
    hotplugs: usize,
    /// Seconds to sample the idle agent.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
}

const WAIT: Duration = Duration::from_secs(120);

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, mean {:.0} ms, min {:.0} ms, max {:.0} ms (n={})",
        pick(0.5),
        pick(0.9),
        mean,
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node = "bench1";
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    println!(
        "agent binary: {} ({} bytes)",
        agent.display(),
        std::fs::metadata(&agent)?.len()
    );
    let mut sb = Sandbox::start(
        &agent,
        vec![VmSpec::new(node)
            .disk("b-1", 1 << 30)
            .disk("b-2", 1 << 30)
            .disk("b-3", 1 << 30)],
    )
    .await?;
    let mut pid = sb.start_agent_with(node, &[], "RUST_LOG=info", "").await?;
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    eventually(WAIT, "3 disks", || async {
        Ok((disks.list(&ListParams::default()).await?.items.len() == 3).then_some(()))
    })
    .await?;
    let claims: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    claims
        .create(
            &PostParams::default(),
            &LocalDiskClaim::new(
                "bench",
                LocalDiskClaimSpec {
                    node_name: node.into(),
                    description: DiskSelector::default(),
                },
            ),
        )
        .await?;
    eventually(WAIT, "claim Bound", || async {
        Ok(
            (claims.get("bench").await?.status.and_then(|s| s.phase) == Some(ClaimPhase::Bound))
                .then_some(()),
        )
    })
    .await?;
    let vm = sb.testbed.vm(node);
    // The bare commands run with the agent stopped: a running agent re-reads LVM after every
    // device the bare commands create, which would slow them and flatter the agent.
    vm.kill(pid, 15).await?;
    eventually(WAIT, "the agent to stop", || async {
        Ok(matches!(
            vm.process_state(pid).await?,
            hwameistor_testbed::ProcessState::Exited { .. }
        )
        .then_some(()))
    })
    .await?;
    // Bare lvcreate with the flags the agent uses, timed from the host through the exec
    // channel, less that channel's own round trip (measured with `true`).
    let mut channel = Vec::new();
    for _ in 0..args.volumes {
        let t0 = Instant::now();
        vm.exec_ok("true").await?;
        channel.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let channel_ms = median(channel.clone());
    let mut bare = Vec::new();
    for i in 0..args.volumes {
        let t0 = Instant::now();
        vm.exec_ok(&format!("lvcreate --yes -W y -Z y --addtag hwameistor -n bare{i} -L 8388608b LocalStorage_PoolHDD")).await?;
        bare.push((t0.elapsed().as_secs_f64() * 1000.0 - channel_ms).max(0.0));
    }
    vm.exec_ok_timeout("for lv in $(lvs --noheadings -o lv_name -S 'lv_name=~^bare' LocalStorage_PoolHDD); do lvremove --yes LocalStorage_PoolHDD/$lv >/dev/null; done", Duration::from_secs(600)).await?;
    pid = sb.start_agent_with(node, &[], "RUST_LOG=info", "").await?;
    // Give the restarted agent time to read LVM, list its objects and settle before timing
    // it (it reads LVM on its first scan, within a second or two under emulation).
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Through the agent: create the LocalVolumeReplica, wait (watching) until Ready.
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let mut through = Vec::new();
    for i in 0..args.volumes {
        let name = format!("bench-v{i}");
        let mut r = LocalVolumeReplica::new(
            &format!("{name}-r"),
            LocalVolumeReplicaSpec {
                volume_name: name.clone(),
                pool_name: PoolClass::Hdd.pool_name().into(),
                node_name: node.into(),
                volume_kind: VolumeKind::Lvm,
                required_capacity_bytes: 8 << 20,
                replication: None,
                copy_from: None,
                thin: false,
            },
        );
        r.metadata.labels = Some([(LABEL_NODE.to_string(), node.to_string())].into());
        let t0 = Instant::now();
        replicas.create(&PostParams::default(), &r).await?;
        let ready = |o: Option<&LocalVolumeReplica>| {
            o.and_then(|r| r.status.as_ref()).and_then(|s| s.state) == Some(ReplicaState::Ready)
        };
        tokio::time::timeout(
            WAIT,
            await_condition(replicas.clone(), &format!("{name}-r"), ready),
        )
        .await??;
        through.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!("\n== volume create (8 MiB), {} volumes", args.volumes);
    println!("exec channel round trip:        {}", stats(channel));
    println!("bare lvcreate in the VM:        {}", stats(bare.clone()));
    println!("through the agent (API→Ready):  {}", stats(through.clone()));
    println!(
        "overhead ratio (median):        {:.2}x",
        median(through) / median(bare)
    );

    // Idle footprint with 3 disks and the volumes just created.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let read = |what: &'static str| {
        let vm = sb.testbed.vm(node);
        async move { vm.exec_ok(&format!("cat /proc/{pid}/{what}")).await }
    };
    let ticks = |stat: &str| -> anyhow::Result<u64> {
        // Fields after the command name (which may hold spaces): utime is 14th, stime 15th.
        let after = stat
            .rsplit_once(") ")
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow::anyhow!("bad stat"))?;
        let f: Vec<&str> = after.split_whitespace().collect();
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    };
    let rss = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    let s0 = ticks(&read("stat").await?)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let s1 = ticks(&read("stat").await?)?;
    let secs = t0.elapsed().as_secs_f64();
    let hz: f64 = vm
        .exec_ok("getconf CLK_TCK 2>/dev/null || echo 100")
        .await?
        .trim()
        .parse()
        .unwrap_or(100.0);
    let status = read("status").await?;
    println!(
        "\n== idle agent, 3 disks + {} volumes, default resync (60 s)",
        args.volumes
    );
    println!(
        "resident memory: {}",
        rss(&status)
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "peak resident:   {}",
        status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "CPU over {secs:.0} s idle: {:.2}% of one core ({} ticks at {hz} Hz, emulated CPU)",
        (s1 - s0) as f64 / hz / secs * 100.0,
        s1 - s0
    );

    // Disk hot-plug → LocalDisk.
    let mut appear = Vec::new();
    for i in 0..args.hotplugs {
        let serial = format!("hot-{i}");
        let t0 = Instant::now();
        sb.testbed
            .vm_mut(node)
            .add_disk(DiskSpec::new(&serial, 64 << 20))
            .await?;
        let s = serial.clone();
        eventually(WAIT, "hot-plugged disk's LocalDisk", || {
            let disks = disks.clone();
            let s = s.clone();
            async move {
                let l = disks.list(&ListParams::default()).await?.items;
                Ok(l.iter()
                    .any(|d| {
                        d.status.as_ref().and_then(|st| st.serial.as_deref()) == Some(s.as_str())
                    })
                    .then_some(()))
            }
        })
        .await?;
        appear.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!("\n== disk hot-plug (QMP device_add) → LocalDisk in the API");
    println!(
        "{} (includes QEMU hot-plug and the guest kernel's probe; polled every 100 ms)",
        stats(appear)
    );
    sb.shutdown().await?;
    Ok(())
}
