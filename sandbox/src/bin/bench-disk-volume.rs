//! `bench-disk-volume`: sequential throughput through a raw-disk volume's published device
//! against the bare disk, in one node VM, and prints the figures.
//!
//! The VM's disk serves a LocalDiskVolume (bound by the controller, confirmed by the
//! agent), staged and published as a raw block device through the agent's
//! `disk.hwameistor.io` node service, the way the kubelet does. The same direct-I/O `dd`
//! writes then reads the disk through the published device and bare, at its kernel name
//! (the same disk: two disks of one VM differ by more than any path could). Under software
//! emulation (TCG) compare the ratio, not the absolute figures.

use clap::Parser;
use hwameistor_api::*;
use hwameistor_sandbox::bench::{stripped, timed, CALL, WAIT};
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox};
use hwameistor_testbed::VmSpec;
use kube::api::{Api, PostParams};

#[derive(Parser)]
#[command(
    name = "bench-disk-volume",
    about = "Throughput through a raw-disk volume against the bare disk, in a node VM"
)]
struct Args {
    /// MiB written and read on each.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Rounds of each measurement (the best is kept).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const DISK_SOCKET: &str = "/run/csi-disk/csi.sock";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let controller_bin = workspace_binary("hwameistor-controller", "HWAMEISTOR_CONTROLLER_BIN")?;
    let call = workspace_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN")?;
    let size = (args.mib + 64) << 20;
    let sb = Sandbox::start(&agent, vec![VmSpec::new("bench1").disk("bench-vol", size)]).await?;
    let vm = sb.testbed.vm("bench1");
    vm.write_file_mode(CALL, &stripped(&call)?, 0o755).await?;
    sb.start_agent_with(
        "bench1",
        &[],
        "RUST_LOG=info",
        &format!("--disk-csi-endpoint unix://{DISK_SOCKET}"),
    )
    .await?;
    let mut controller = sb.start_controller(&controller_bin, "bench").await?;
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    let disk = eventually(WAIT, "the disk discovered", || async {
        let l = disks.list(&Default::default()).await?.items;
        Ok(l.into_iter()
            .find(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DiskPhase::Available)))
    })
    .await?;
    // The same disk, bare: its kernel name.
    let bare_dev = disk.status.and_then(|s| s.device_path).unwrap_or_default();
    let ldvs: Api<LocalDiskVolume> = Api::all(sb.client.clone());
    ldvs.create(
        &PostParams::default(),
        &LocalDiskVolume::new(
            "bench-disk",
            LocalDiskVolumeSpec {
                node_name: "bench1".into(),
                disk_type: DiskType::Hdd,
                required_capacity_bytes: (args.mib << 20) as i64,
                max_capacity_bytes: None,
                pvc_namespace: None,
                pvc_name: None,
                wipe: WipePolicy::Signatures,
            },
        ),
    )
    .await?;
    let st = eventually(WAIT, "bench-disk Ready", || async {
        Ok(ldvs
            .get("bench-disk")
            .await?
            .status
            .filter(|s| s.state == Some(DiskVolumeState::Ready)))
    })
    .await?;
    let dev = st.device_path.unwrap_or_default();
    let staging = "/var/lib/kubelet/plugins/disk/bench-disk/staging";
    let target = "/var/lib/kubelet/pods/bench/volumeDevices/bench-disk";
    vm.exec_ok(&format!(
        "{CALL} {DISK_SOCKET} stage bench-disk {dev} {staging} block && {CALL} {DISK_SOCKET} publish bench-disk {dev} {staging} {target} block"
    ))
    .await?;
    let count = args.mib;
    let write = |path: &str| {
        format!("dd if=/dev/zero of={path} bs=1M count={count} oflag=direct conv=fsync")
    };
    let read = |path: &str| format!("dd if={path} of=/dev/null bs=1M count={count} iflag=direct");
    let mut figures = Vec::new();
    for (what, cmd_for) in [
        ("write", &write as &dyn Fn(&str) -> String),
        ("read", &read),
    ] {
        let mut best = [f64::MAX, f64::MAX];
        for round in 0..args.rounds {
            // Alternate which goes first, so neither profits from the other's warm-up.
            let mut order = [(0, target), (1, bare_dev.as_str())];
            if round % 2 == 1 {
                order.reverse();
            }
            for (i, path) in order {
                let t = timed(vm, &cmd_for(path)).await?;
                best[i] = best[i].min(t);
            }
        }
        let rate = |secs: f64| count as f64 / secs;
        figures.push((what, rate(best[0]), rate(best[1])));
    }
    println!(
        "\nsequential {} MiB, direct I/O, best of {} (MiB/s):",
        count, args.rounds
    );
    println!(
        "{:<6} {:>14} {:>12} {:>8}",
        "", "published", "bare", "ratio"
    );
    for (what, vol, bare) in &figures {
        println!("{what:<6} {vol:>14.1} {bare:>12.1} {:>8.3}", vol / bare);
    }
    vm.exec_ok(&format!(
        "{CALL} {DISK_SOCKET} unpublish bench-disk {target} && {CALL} {DISK_SOCKET} unstage bench-disk {staging}"
    ))
    .await?;
    controller.child.kill().await.ok();
    sb.shutdown().await?;
    Ok(())
}
