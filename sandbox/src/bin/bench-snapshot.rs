//! `bench-snapshot`: what snapshots cost, in one node VM running the real agent and the
//! controller, and prints the figures:
//!
//! - creation time of a snapshot, thin against copy-on-write (thick), from the
//!   LocalVolumeSnapshot object written (as CSI CreateSnapshot writes it) to the agent
//!   reporting it Ready, and of the bare `lvcreate --snapshot` alone;
//! - sequential direct-write throughput on a thick volume with 0, 1 and 4 copy-on-write
//!   snapshots (each write to a block not copied yet first copies it to every snapshot);
//! - restore time, from the restored LocalVolume written (as CSI CreateVolume writes it) to
//!   Ready, per GiB: on the snapshot's node (a thin snapshot: an LVM clone; a thick one: a
//!   verified local copy by the block mover) and on a second node (the block mover).
//!
//! Under software emulation (TCG) compare the ratios, not the absolute figures.

use clap::Parser;
use hwameistor_api::*;
use hwameistor_sandbox::bench::{movers_published, storage_nodes, timed, WAIT};
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox};
use hwameistor_testbed::VmSpec;
use kube::api::{Api, DeleteParams, PostParams};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "bench-snapshot",
    about = "Snapshot creation time (thin, COW), write throughput under COW snapshots, and restore time on the same node and across nodes, in two node VMs"
)]
struct Args {
    /// Size of the benchmarked volumes, MiB (also what is written per round).
    #[arg(long, default_value_t = 256)]
    mib: i64,
    /// Snapshots taken of each kind for the creation time (the median is printed).
    #[arg(long, default_value_t = 5)]
    snapshots: usize,
    /// Measure the restores only (skip snapshot creation and the COW write costs).
    #[arg(long)]
    restore_only: bool,
}

const NODE: &str = "bench1";
/// The second node, where snapshots are restored across nodes.
const OTHER: &str = "bench2";
const VG: &str = "LocalStorage_PoolHDD";

fn volume(name: &str, bytes: i64, thin: bool, node: &str) -> LocalVolume {
    LocalVolume::new(
        name,
        LocalVolumeSpec {
            thin,
            accessibility: Accessibility {
                nodes: vec![node.into()],
            },
            ..LocalVolumeSpec::single(VG, bytes)
        },
    )
}

async fn ready_volume(sb: &Sandbox, name: &str, bytes: i64, thin: bool) -> anyhow::Result<()> {
    create_ready(sb, volume(name, bytes, thin, NODE))
        .await
        .map(drop)
}

/// Writes `v` and waits until it is Ready: the seconds it took.
async fn create_ready(sb: &Sandbox, v: LocalVolume) -> anyhow::Result<f64> {
    let api: Api<LocalVolume> = Api::all(sb.client.clone());
    let name = v.metadata.name.clone().unwrap_or_default();
    let t = Instant::now();
    api.create(&PostParams::default(), &v).await?;
    loop {
        let v = api.get(&name).await?;
        if v.status.and_then(|s| s.state) == Some(VolumeState::Ready) {
            return Ok(t.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(1800),
            "volume {name} not Ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds to restore `snapshot` (of `bytes`, `thin`) into a new volume on `node`.
async fn restore_time(
    sb: &Sandbox,
    name: &str,
    snapshot: &str,
    bytes: i64,
    thin: bool,
    node: &str,
) -> anyhow::Result<f64> {
    let s = Api::<LocalVolumeSnapshot>::all(sb.client.clone())
        .get(snapshot)
        .await?;
    let mut v = volume(name, bytes, thin, node);
    v.spec.data_source = Some(VolumeDataSource {
        snapshot: snapshot.into(),
        snapshot_uid: s.metadata.uid.clone().unwrap_or_default(),
        node: s.spec.node_name.clone(),
        pool_name: s.spec.pool_name.clone(),
        bytes: s.spec.source_capacity_bytes,
        thin: s.spec.cow_capacity_bytes.is_none(),
        clone_of: None,
    });
    create_ready(sb, v).await
}

/// Seconds from writing a snapshot object to its agent reporting it Ready.
async fn snapshot_ready(
    sb: &Sandbox,
    name: &str,
    volume: &str,
    bytes: i64,
    cow: Option<i64>,
) -> anyhow::Result<f64> {
    let api: Api<LocalVolumeSnapshot> = Api::all(sb.client.clone());
    let t = Instant::now();
    api.create(
        &PostParams::default(),
        &LocalVolumeSnapshot::new(
            name,
            LocalVolumeSnapshotSpec {
                source_volume: volume.into(),
                node_name: NODE.into(),
                pool_name: VG.into(),
                source_capacity_bytes: bytes,
                cow_capacity_bytes: cow,
            },
        ),
    )
    .await?;
    loop {
        let s = api.get(name).await?;
        let st = s.status.unwrap_or_default();
        if st.ready_to_use {
            return Ok(t.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            st.state != Some(SnapshotState::Failed),
            "snapshot {name} failed: {:?}",
            st.message
        );
        anyhow::ensure!(t.elapsed() < WAIT, "snapshot {name} not Ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delete_snapshots(sb: &Sandbox, names: &[String]) -> anyhow::Result<()> {
    let api: Api<LocalVolumeSnapshot> = Api::all(sb.client.clone());
    for n in names {
        api.delete(n, &DeleteParams::default()).await?;
    }
    for n in names {
        eventually(WAIT, "the snapshot gone", || async {
            Ok(api.get_opt(n).await?.is_none().then_some(()))
        })
        .await?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let helper = workspace_binary("hwameistor-drbd-helper", "HWAMEISTOR_DRBD_HELPER_BIN")?;
    let call = workspace_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN")?;
    let controller = workspace_binary("hwameistor-controller", "HWAMEISTOR_CONTROLLER_BIN")?;
    let bytes = args.mib << 20;
    // Room for the thick volume, 4 full-size COW snapshots, a thick restore and the thin
    // pool; on the other node, a thick restore and a thin pool of the agent's minimum size
    // (1 GiB; a smaller one, at the ratio of 2, would fill up while the fully written thin
    // snapshot is copied into it).
    let disk = ((8 * args.mib + 1024) as u64) << 20;
    let other = ((2 * args.mib + 1536) as u64) << 20;
    let sb = Sandbox::start(
        &agent,
        vec![
            VmSpec::new(NODE).disk("bench-pool", disk),
            VmSpec::new(OTHER).disk("bench-pool-2", other),
        ],
    )
    .await?;
    storage_nodes(&sb, &[NODE, OTHER], &call, &helper).await?;
    let mut ctl = sb
        .start_controller_with(&controller, "bench-snapshot", &[])
        .await?;
    ready_volume(&sb, "thick", bytes, false).await?;
    ready_volume(&sb, "thin", bytes, true).await?;

    let full = hwameistor_core::snapshot::full_cow_bytes(bytes);
    if !args.restore_only {
        creation_and_writes(&sb, &args, bytes, full).await?;
    }
    restores(&sb, &args, bytes, full).await?;
    let _ = ctl.child.kill().await;
    sb.shutdown().await?;
    Ok(())
}

/// Writes `mib` MiB of random data into the thick and the thin source volume.
async fn fill_random(sb: &Sandbox, mib: i64) -> anyhow::Result<()> {
    let vm = sb.testbed.vm(NODE);
    for v in ["thick", "thin"] {
        vm.exec_ok_timeout(
            &format!(
                "dd if=/dev/urandom of=/dev/{VG}/{v} bs=1M count={mib} oflag=direct status=none"
            ),
            Duration::from_secs(600),
        )
        .await?;
    }
    Ok(())
}

/// Snapshot creation time (through the agent and bare) and writes under COW snapshots.
async fn creation_and_writes(
    sb: &Sandbox,
    args: &Args,
    bytes: i64,
    full: i64,
) -> anyhow::Result<()> {
    fill_random(sb, args.mib).await?;
    let vm = sb.testbed.vm(NODE);
    let dev = |v: &str| format!("/dev/{VG}/{v}");
    // Creation time, through the agent and bare.
    let mut through = [Vec::new(), Vec::new()];
    let mut bare = [Vec::new(), Vec::new()];
    for (k, (v, cow)) in [("thick", Some(full)), ("thin", None)]
        .into_iter()
        .enumerate()
    {
        let mut names = Vec::new();
        for i in 0..args.snapshots {
            let name = format!("{v}-s{i}");
            through[k].push(snapshot_ready(sb, &name, v, bytes, cow).await?);
            names.push(name);
        }
        delete_snapshots(sb, &names).await?;
        for i in 0..args.snapshots {
            let size = cow
                .map(|b| format!("-L {b}b"))
                .unwrap_or_else(|| "-kn".into());
            bare[k].push(
                timed(
                    vm,
                    &format!("lvcreate -s -p r {size} -n bare_{v}{i} {VG}/{v}"),
                )
                .await?,
            );
        }
        for i in 0..args.snapshots {
            vm.exec_ok(&format!("lvremove -y {VG}/bare_{v}{i}")).await?;
        }
    }
    println!("snapshot creation, median of {} (ms):", args.snapshots);
    println!(
        "  object written -> agent reports Ready: thick (COW {}) {:.0}, thin {:.0}",
        hwameistor_api::quantity::format_size(full),
        median(through[0].clone()) * 1e3,
        median(through[1].clone()) * 1e3
    );
    println!(
        "  lvcreate --snapshot alone:             thick {:.0}, thin {:.0}",
        median(bare[0].clone()) * 1e3,
        median(bare[1].clone()) * 1e3
    );

    // Write throughput on the thick volume under 0, 1 and 4 COW snapshots: each round
    // rewrites the whole volume once, every block for the first time since the snapshots.
    println!(
        "sequential direct writes of {} MiB to a thick volume (MiB/s, best of 2):",
        args.mib
    );
    let mut base = 0.0;
    for n in [0usize, 1, 4] {
        let names: Vec<String> = (0..n).map(|i| format!("cow-{n}-{i}")).collect();
        let mut best = 0.0f64;
        for _round in 0..2 {
            for name in &names {
                snapshot_ready(sb, name, "thick", bytes, Some(full)).await?;
            }
            let secs = timed(
                vm,
                &format!(
                    "dd if=/dev/zero of={} bs=1M count={} oflag=direct conv=notrunc",
                    dev("thick"),
                    args.mib
                ),
            )
            .await?;
            best = best.max(args.mib as f64 / secs);
            delete_snapshots(sb, &names).await?;
        }
        if n == 0 {
            base = best;
        }
        println!(
            "  {n} snapshot(s): {best:.0} MiB/s ({:.2} of none)",
            best / base
        );
    }
    Ok(())
}

/// Restore time: each kind of snapshot restored on its node and on the other node; and, on
/// the other node, a bare `dd` of the restored data into a new thick and a new thin volume.
async fn restores(sb: &Sandbox, args: &Args, bytes: i64, full: i64) -> anyhow::Result<()> {
    movers_published(sb, &[NODE, OTHER]).await?;
    let gib = args.mib as f64 / 1024.0;
    // Random data in both sources (the write-cost rounds leave the thick one zeroed, which
    // the block mover would skip): every chunk is copied.
    fill_random(sb, args.mib).await?;
    println!(
        "restore of a {} MiB snapshot, written -> Ready (s, s/GiB):",
        args.mib
    );
    for (kind, thin) in [("thick", false), ("thin", true)] {
        let snap = format!("restore-src-{kind}");
        let cow = (!thin).then_some(full);
        snapshot_ready(sb, &snap, kind, bytes, cow).await?;
        for (place, node) in [("same node", NODE), ("other node", OTHER)] {
            let name = format!("restored-{kind}-{}", if node == NODE { 1 } else { 2 });
            let secs = restore_time(sb, &name, &snap, bytes, thin, node).await?;
            let how = match (thin, node == NODE) {
                (true, true) => "LVM thin clone",
                (false, true) => "local copy, verified",
                _ => "block mover, verified",
            };
            println!(
                "  {kind:5} {place:10} ({how}): {secs:.2} s, {:.2} s/GiB",
                secs / gib
            );
        }
    }
    // The same data copied by dd on the other node into a new thick and a new thin volume
    // (the agent's thin pool): what the target kind costs without the mover.
    let vm = sb.testbed.vm(OTHER);
    vm.exec_ok(&format!(
        "lvcreate -q -y -n bare_thick -L {bytes}b {VG} && lvcreate -q -y -n bare_thin -V {bytes}b --thinpool {VG}/{} -kn",
        hwameistor_core::thin::THIN_POOL_LV
    ))
    .await?;
    let mut line = Vec::new();
    for target in ["bare_thick", "bare_thin"] {
        let secs = timed(
            vm,
            &format!("dd if=/dev/{VG}/restored-thick-2 of=/dev/{VG}/{target} bs=4M conv=fsync"),
        )
        .await?;
        line.push(format!("{target} {secs:.2} s"));
    }
    println!(
        "  bare dd of the same data on the other node: {}",
        line.join(", ")
    );
    Ok(())
}
