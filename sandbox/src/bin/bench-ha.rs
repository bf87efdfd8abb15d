//! `bench-ha`: measures HA volumes (DRBD 8.4) on two node VMs and prints the figures.
//!
//! - the private link itself: `dd | socat` from one VM to the other (the ceiling);
//! - sequential write throughput and 4 KiB direct (completed-by-the-device) write latency on the HA device
//!   (primary, connected, protocol C) against a plain logical volume in the same VM;
//! - resync throughput after the peer was cut off while the primary wrote;
//! - failover: the primary's VM killed outright → the controller fences it and moves the
//!   primary (node loss detected) → the volume staged and mounted on the survivor.
//!
//! The VMs run under software emulation (TCG) and share this machine's cores: compare the
//! figures with each other (ratios), not with bare metal.

use clap::Parser;
use hwameistor_api::*;
use hwameistor_sandbox::bench::{storage_nodes, timed, CALL, SOCKET, WAIT};
use hwameistor_sandbox::{eventually, workspace_binary, Sandbox, GUEST_AGENT_LOG};
use hwameistor_testbed::VmSpec;
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "bench-ha",
    about = "Benchmark HA (DRBD) volumes on two node VMs"
)]
struct Args {
    /// MiB written for the throughput and resync figures.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// 4 KiB synchronous writes timed for the latency figures.
    #[arg(long, default_value_t = 500)]
    syncs: u64,
    /// Controller failover grace (the agents' heartbeat is declared valid for 3 s).
    #[arg(long, default_value = "2s")]
    grace: String,
}

const MIB: i64 = 1 << 20;

fn primary(v: &LocalVolume) -> Option<String> {
    v.spec
        .config
        .as_ref()?
        .replicas
        .iter()
        .find(|a| a.primary)
        .map(|a| a.hostname.clone())
}

fn healthy(v: &LocalVolume) -> bool {
    let st = v.status.clone().unwrap_or_default();
    st.state == Some(VolumeState::Ready) && st.ha_state == Some(HaState::Healthy)
}

async fn wait_volume(
    sb: &Sandbox,
    name: &str,
    what: &str,
    check: impl Fn(&LocalVolume) -> bool,
) -> anyhow::Result<LocalVolume> {
    let api: Api<LocalVolume> = Api::all(sb.client.clone());
    Ok(eventually(WAIT, what, || async {
        Ok(api.get_opt(name).await?.filter(|v| check(v)))
    })
    .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let helper = workspace_binary("hwameistor-drbd-helper", "HWAMEISTOR_DRBD_HELPER_BIN")?;
    let call = workspace_binary("examples/csi_node_call", "HWAMEISTOR_CSI_CALL_BIN")?;
    let controller = workspace_binary("hwameistor-controller", "HWAMEISTOR_CONTROLLER_BIN")?;
    let (n1, n2) = ("ha-bench-1", "ha-bench-2");
    let mut sb = Sandbox::start(
        &agent,
        vec![
            VmSpec::new(n1).disk("hb-1", 2 << 30),
            VmSpec::new(n2).disk("hb-2", 2 << 30),
        ],
    )
    .await?;
    storage_nodes(&sb, &[n1, n2], &call, &helper).await?;
    let _controller = sb
        .start_controller_with(&controller, "bench-ha", &["--failover-grace", &args.grace])
        .await?;

    // The raw link: the ceiling for replication and resync.
    let (vm1, vm2) = (sb.testbed.vm(n1), sb.testbed.vm(n2));
    let ip2 = vm2.private_ip();
    let mib = args.mib;
    vm2.spawn(
        "socat -u TCP-LISTEN:45000,reuseaddr - > /dev/null",
        "/tmp/socat.log",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let link_s = timed(
        vm1,
        &format!("dd if=/dev/zero bs=1M count={mib} 2>/dev/null | socat -u - TCP:{ip2}:45000"),
    )
    .await?;
    let link = mib as f64 / link_s;
    println!("raw link (dd | socat, {mib} MiB n1 -> n2): {link:.1} MiB/s");

    // A plain volume and an HA volume, both on n1's pool.
    let plain = "bench-plain";
    let ha = "bench-ha";
    let volumes: Api<LocalVolume> = Api::all(sb.client.clone());
    for (name, replicas) in [(plain, 1), (ha, 2)] {
        let v = LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: PoolClass::Hdd.pool_name().into(),
                volume_kind: VolumeKind::Lvm,
                required_capacity_bytes: 512 * MIB,
                replica_number: replicas,
                convertible: false,
                accessibility: Accessibility {
                    nodes: vec![n1.into(), n2.into()],
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
        );
        volumes.create(&PostParams::default(), &v).await?;
    }
    let t = Instant::now();
    // The initial full sync, timed on the secondary's /proc/drbd (polled every 200 ms).
    let vm2 = sb.testbed.vm(n2);
    let started = eventually(WAIT, "the initial sync to start", || async {
        let p = vm2.exec_ok("cat /proc/drbd 2>/dev/null || true").await?;
        Ok(p.contains("cs:SyncTarget").then_some(Instant::now()))
    })
    .await?;
    let done = eventually(WAIT, "the initial sync to end", || async {
        let p = vm2.exec_ok("cat /proc/drbd 2>/dev/null || true").await?;
        Ok(
            (p.contains("cs:Connected") && p.contains("ds:UpToDate/UpToDate"))
                .then_some(Instant::now()),
        )
    })
    .await?;
    let v = wait_volume(&sb, ha, "HA volume healthy", healthy).await?;
    let full = done.duration_since(started).as_secs_f64();
    println!(
        "HA volume of 512 MiB: created and Healthy in {:.1} s; initial full sync {full:.1} s = {:.1} MiB/s",
        t.elapsed().as_secs_f64(),
        512.0 / full
    );
    wait_volume(&sb, plain, "plain volume ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await?;
    let minor = v.spec.config.as_ref().map(|c| c.resource_id).unwrap_or(0);
    let dev = format!("/dev/drbd{minor}");
    let lv = format!("/dev/LocalStorage_PoolHDD/{plain}");
    let staging =
        format!("/var/lib/kubelet/plugins/kubernetes.io/csi/lvm.hwameistor.io/{ha}/globalmount");
    // Promoted through the agent (CSI staging of a raw block volume).
    vm1.exec_ok(&format!("{CALL} {SOCKET} stage {ha} {dev} {staging} block"))
        .await?;

    let seq = |target: String| async move {
        let s = timed(
            vm1,
            &format!("dd if=/dev/zero of={target} bs=1M count={mib} oflag=direct"),
        )
        .await?;
        anyhow::Ok(mib as f64 / s)
    };
    let lv_tp = seq(lv.clone()).await?;
    let ha_tp = seq(dev.clone()).await?;
    println!(
        "sequential write, 1 MiB direct, {mib} MiB: plain LV {lv_tp:.1} MiB/s, HA {ha_tp:.1} MiB/s ({:.2}x the plain LV, {:.2}x the raw link)",
        ha_tp / lv_tp,
        ha_tp / link
    );
    let n = args.syncs;
    let lat = |target: String| async move {
        let s = timed(
            vm1,
            // O_DIRECT: each 4 KiB write returns only once the device completed it (for DRBD
            // protocol C: once both disks have it). busybox dd has no O_DSYNC.
            &format!("dd if=/dev/zero of={target} bs=4k count={n} oflag=direct"),
        )
        .await?;
        anyhow::Ok(s * 1e6 / n as f64)
    };
    let lv_lat = lat(lv.clone()).await?;
    let ha_lat = lat(dev.clone()).await?;
    println!(
        "4 KiB O_DIRECT writes, one at a time ({n}): plain LV {lv_lat:.0} us, HA {ha_lat:.0} us each ({:.2}x)",
        ha_lat / lv_lat
    );

    // Resync: the peer cut off while the primary writes, then healed.
    sb.testbed.partition(n1, n2)?;
    wait_volume(&sb, ha, "n2 fenced and the volume degraded", |v| {
        v.spec
            .config
            .as_ref()
            .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == n2 && a.outdated))
            && v.status.as_ref().and_then(|s| s.ha_state) == Some(HaState::Degraded)
    })
    .await?;
    vm1.exec_ok_timeout(
        &format!("dd if=/dev/urandom of={dev} bs=1M count={mib} oflag=direct"),
        Duration::from_secs(600),
    )
    .await?;
    let t = Instant::now();
    sb.testbed.heal(n1, n2)?;
    // From the reconnection to n2 up to date, on n2's /proc/drbd (polled every 200 ms).
    let vm2 = sb.testbed.vm(n2);
    let syncing = eventually(WAIT, "n2 resyncing", || async {
        let p = vm2.exec_ok("cat /proc/drbd").await?;
        Ok(p.contains("cs:SyncTarget").then_some(Instant::now()))
    })
    .await?;
    let synced = eventually(WAIT, "n2 up to date", || async {
        let p = vm2.exec_ok("cat /proc/drbd").await?;
        Ok(
            (p.contains("cs:Connected") && p.contains("ds:UpToDate/UpToDate"))
                .then_some(Instant::now()),
        )
    })
    .await?;
    wait_volume(&sb, ha, "resynced and cleared", |v| {
        healthy(v)
            && !v
                .spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.outdated))
    })
    .await?;
    let total = t.elapsed().as_secs_f64();
    let sync_s = synced.duration_since(syncing).as_secs_f64().max(0.1);
    println!(
        "resync after {mib} MiB written while apart: reconnect {:.1} s after the heal, resync {sync_s:.1} s ({:.1} MiB/s, {:.2}x the raw link; 200 ms polling), Healthy and cleared {total:.1} s after the heal",
        syncing.duration_since(t).as_secs_f64(),
        mib as f64 / sync_s,
        mib as f64 / sync_s / link
    );

    // Failover: n1 (primary, staged) killed outright.
    sb.testbed.vm_mut(n1).crash().await?;
    let lost = Instant::now();
    wait_volume(&sb, ha, "failed over to n2", |v| {
        primary(v).as_deref() == Some(n2)
    })
    .await?;
    let fenced = lost.elapsed();
    let vm2 = sb.testbed.vm(n2);
    let staged = eventually(WAIT, "staged on the survivor", || async {
        let out = vm2
            .exec(&format!("{CALL} {SOCKET} stage {ha} {dev} {staging} block"))
            .await?;
        Ok(out.success().then_some(()))
    })
    .await;
    staged?;
    let usable = lost.elapsed();
    println!(
        "failover: VM killed -> old primary fenced and survivor allowed in {:.1} s; -> staged (promoted) on the survivor in {:.1} s (heartbeat valid 3 s, grace {})",
        fenced.as_secs_f64(),
        usable.as_secs_f64(),
        args.grace
    );
    let log = vm2.read_file(GUEST_AGENT_LOG).await.unwrap_or_default();
    let errors = String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains("ERROR"))
        .count();
    println!("survivor agent log: {errors} ERROR lines");
    sb.shutdown().await?;
    Ok(())
}
