//! `bench-mover`: measures the block mover between two node VMs and prints the figures.
//!
//! - a raw `dd | socat` of a volume's logical volume into a logical volume on the other VM,
//!   over the same private link (the ceiling), against a migration of the same volume by the
//!   block mover (the copy alone, and the whole operation);
//! - a 10 %-used volume moved by the mover against the full raw copy of it;
//! - the agents' CPU time and peak memory per GiB moved (source and target);
//! - a copy whose source agent is killed at about 50 %: its time against an uncut one.
//!
//! The VMs run under software emulation (TCG) and share this machine's cores: compare the
//! figures with each other (ratios), not with bare metal.

use clap::Parser;
use hwameistor_api::*;
use hwameistor_sandbox::bench::{movers_published, start_agent, storage_nodes, timed, WAIT};
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox};
use hwameistor_testbed::{Vm, VmSpec};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "bench-mover",
    about = "Benchmark the block mover on two node VMs"
)]
struct Args {
    /// Size of the volumes moved, MiB.
    #[arg(long, default_value_t = 256)]
    mib: i64,
}

const MIB: i64 = 1 << 20;
const POOL: &str = "LocalStorage_PoolHDD";

fn lv(name: &str) -> String {
    format!("/dev/{POOL}/{name}")
}

async fn create_volume(sb: &Sandbox, name: &str, mib: i64, node: &str) -> anyhow::Result<()> {
    let api: Api<LocalVolume> = Api::all(sb.client.clone());
    api.create(
        &PostParams::default(),
        &LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: POOL.into(),
                volume_kind: VolumeKind::Lvm,
                required_capacity_bytes: mib * MIB,
                replica_number: 1,
                convertible: false,
                accessibility: Accessibility {
                    nodes: vec![node.into()],
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
        ),
    )
    .await?;
    eventually(WAIT, &format!("{name} Ready"), || async {
        let v = api.get(name).await?;
        Ok((v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)).then_some(()))
    })
    .await?;
    Ok(())
}

/// Fills `used` percent of the volume's 4 MiB chunks (spread evenly) with random data, the
/// rest with zeros.
async fn fill(vm: &Vm, name: &str, mib: i64, used: i64) -> anyhow::Result<()> {
    vm.exec_ok("dd if=/dev/urandom of=/tmp/rand bs=1M count=4 2>/dev/null")
        .await?;
    vm.exec_ok_timeout(
        &format!(
            "dd if=/dev/zero of={} bs=1M count={mib} 2>/dev/null",
            lv(name)
        ),
        Duration::from_secs(600),
    )
    .await?;
    let chunks = mib / 4;
    let every = (100 / used.max(1)).max(1);
    let mut script = String::new();
    for c in (0..chunks).filter(|c| c % every == 0) {
        script.push_str(&format!(
            "dd if=/tmp/rand of={} bs=1M seek={} conv=notrunc 2>/dev/null; ",
            lv(name),
            c * 4
        ));
    }
    script.push_str("sync");
    vm.exec_ok_timeout(&script, Duration::from_secs(600))
        .await?;
    Ok(())
}

/// The agent's CPU seconds (user + system) and peak resident memory (KiB) in the VM.
async fn agent_usage(vm: &Vm) -> anyhow::Result<(f64, i64)> {
    let out = vm
        .exec_ok("p=$(pidof hwameistor-agent); cat /proc/$p/stat; grep VmHWM /proc/$p/status")
        .await?;
    let mut lines = out.lines();
    let stat = lines.next().unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        rest.get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the name).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let hwm = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((cpu, hwm))
}

/// Migrates `name` from `from` to `to` and returns (seconds copying, seconds for the whole
/// operation). With `kill_at`, the source's agent is killed (SIGKILL) and started again once
/// the copy reached that fraction of the bytes: the copy resumes from its checkpoint.
async fn migrate(
    sb: &Sandbox,
    name: &str,
    from: &str,
    to: &str,
    kill_at: Option<f64>,
) -> anyhow::Result<(f64, f64)> {
    let ops: Api<LocalVolumeMigrate> = Api::all(sb.client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let op = format!("{name}-to-{to}-{run}");
    let started = Instant::now();
    ops.create(
        &PostParams::default(),
        &LocalVolumeMigrate::new(
            &op,
            LocalVolumeMigrateSpec {
                volume_name: name.into(),
                source_node: from.into(),
                target_nodes: vec![to.into()],
                migrate_all_volumes: true,
                bandwidth_limit_bytes_per_second: None,
                abort: false,
                ttl_seconds_after_finished: None,
            },
        ),
    )
    .await?;
    let rname = replica::replica_name(name, to);
    // The copy is timed from the first progress its replica reports to its verification
    // (the whole migration time includes creating the volume, the controller's steps and
    // removing the source).
    let mut copy_started = None;
    let mut copy_done = None;
    let mut fired = false;
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "{op} took too long"
        );
        let copy = replicas
            .get_opt(&rname)
            .await?
            .and_then(|r| r.status)
            .and_then(|s| s.copy);
        if let Some(c) = &copy {
            if copy_started.is_none() && c.bytes_done > 0 {
                copy_started = Some(Instant::now());
            }
            if copy_done.is_none() && c.verified {
                copy_done = Some(Instant::now());
            }
            if let Some(frac) = kill_at {
                if !fired && c.bytes_total > 0 && c.bytes_done as f64 >= frac * c.bytes_total as f64
                {
                    fired = true;
                    sb.testbed
                        .vm(from)
                        .exec("kill -9 $(pidof hwameistor-agent)")
                        .await?;
                    start_agent(sb, from).await?;
                }
            }
        }
        let st = ops.get(&op).await?.status.unwrap_or_default();
        if let Some(p) = st.phase.filter(|p| p.is_final()) {
            anyhow::ensure!(
                p == OperationPhase::Succeeded,
                "{op} ended {p:?}: {:?}",
                st.message
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let copy = match (copy_started, copy_done) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => total,
    };
    Ok((copy, total))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let helper = workspace_binary("hwameistor-drbd-helper", "HWAMEISTOR_DRBD_HELPER_BIN")?;
    let call = workspace_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN")?;
    let controller = workspace_binary("hwameistor-controller", "HWAMEISTOR_CONTROLLER_BIN")?;
    let (n1, n2) = ("mv-bench-1", "mv-bench-2");
    let sb = Sandbox::start(
        &agent,
        vec![
            VmSpec::new(n1).disk("mb-1", 2 << 30),
            VmSpec::new(n2).disk("mb-2", 2 << 30),
        ],
    )
    .await?;
    storage_nodes(&sb, &[n1, n2], &call, &helper).await?;
    let _controller = sb
        .start_controller_with(&controller, "bench-mover", &[])
        .await?;
    let (vm1, vm2) = (sb.testbed.vm(n1), sb.testbed.vm(n2));
    movers_published(&sb, &[n1, n2]).await?;
    let mib = args.mib;
    let gib = mib as f64 / 1024.0;

    // Dense: every chunk holds data.
    create_volume(&sb, "dense", mib, n1).await?;
    fill(vm1, "dense", mib, 100).await?;
    // The ceiling: the same logical volume through dd | socat into a logical volume there.
    vm2.exec_ok(&format!("lvcreate -q -y -n rawtarget -L {mib}m {POOL}"))
        .await?;
    let ip2 = vm2.private_ip();
    vm2.spawn(
        &format!(
            "socat -u TCP-LISTEN:45001,reuseaddr OPEN:{},wronly",
            lv("rawtarget")
        ),
        "/tmp/socat.log",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let raw_s = timed(
        vm1,
        &format!(
            "dd if={} bs=1M 2>/dev/null | socat -u - TCP:{ip2}:45001",
            lv("dense")
        ),
    )
    .await?;
    vm2.exec_ok("sync").await?;
    let raw = mib as f64 / raw_s;
    println!("raw dd | socat of the logical volume ({mib} MiB {n1} -> {n2}): {raw_s:.1} s, {raw:.1} MiB/s");

    let (cpu1, _) = agent_usage(vm1).await?;
    let (cpu2, _) = agent_usage(vm2).await?;
    let (copy_s, total_s) = migrate(&sb, "dense", n1, n2, None).await?;
    let (cpu1b, hwm1) = agent_usage(vm1).await?;
    let (cpu2b, hwm2) = agent_usage(vm2).await?;
    let mover = mib as f64 / copy_s;
    println!(
        "mover, dense ({mib} MiB): copy {copy_s:.1} s = {mover:.1} MiB/s ({:.0} % of raw); whole migration {total_s:.1} s",
        100.0 * mover / raw
    );
    println!(
        "agent CPU per GiB moved: source {:.1} s, target {:.1} s; agents' peak RSS: source {} MiB, target {} MiB",
        (cpu1b - cpu1) / gib,
        (cpu2b - cpu2) / gib,
        hwm1 / 1024,
        hwm2 / 1024
    );

    // Sparse: 10 % of the chunks hold data.
    create_volume(&sb, "sparse", mib, n1).await?;
    fill(vm1, "sparse", mib, 10).await?;
    let (sparse_s, sparse_total) = migrate(&sb, "sparse", n1, n2, None).await?;
    println!(
        "mover, 10 %-used ({mib} MiB): copy {sparse_s:.1} s ({sparse_total:.1} s whole): {:.1}x faster than the raw full copy, {:.1}x than the dense move",
        raw_s / sparse_s,
        copy_s / sparse_s
    );

    // Resume: the dense volume back to n1 uncut, then to n2 again with the source's agent
    // killed at about 50 % and started again.
    let (uncut_s, _) = migrate(&sb, "dense", n2, n1, None).await?;
    let (cut_s, _) = migrate(&sb, "dense", n1, n2, Some(0.5)).await?;
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let resumes = replicas
        .get(&replica::replica_name("dense", n2))
        .await?
        .status
        .and_then(|s| s.copy)
        .map(|c| c.resumes)
        .unwrap_or(0);
    println!(
        "resume: uncut copy {uncut_s:.1} s; source agent killed at 50 % and restarted: {cut_s:.1} s ({resumes} resume(s)), {:.1} s more",
        cut_s - uncut_s
    );
    sb.shutdown().await?;
    Ok(())
}
