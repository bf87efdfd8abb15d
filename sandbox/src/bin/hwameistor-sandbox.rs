//! `hwameistor-sandbox`: a local HwameiStor with no cluster needed. Starts the test API
//! server, boots node VMs with virtual disks running the real node agent, runs the
//! controller on this machine, and shows the system at work: disks discovered (one of them
//! refused because it is in use), a claim naming the disk in use failing with the reason,
//! the other disks claimed into pools, a LocalVolume larger than any one disk placed by the
//! controller and made by the agent across two disks, a thin volume in the group's thin pool,
//! its snapshot and a volume restored from it, and (with two nodes or more) an HA
//! volume replicated by DRBD on two nodes, synced.

use anyhow::Context;
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
/// Where the node VMs find the program DRBD runs to fence a peer or report a split brain.
const GUEST_HELPER: &str = "/usr/local/bin/hwameistor-drbd-helper";

fn step(started: Instant, msg: &str) {
    println!("[{:>5.1}s] {msg}", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let agent = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let helper = workspace_binary("hwameistor-drbd-helper", "HWAMEISTOR_DRBD_HELPER_BIN")?;
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("node{i}")).collect();
    let specs: Vec<VmSpec> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let spec = VmSpec::new(n)
                .disk(format!("{n}-hdd1"), 1 << 30)
                .disk(format!("{n}-hdd2"), 2 << 30)
                .disk(format!("{n}-inuse"), 512 << 20);
            // The first node also has a disk for a raw-disk volume (one whole disk, no LVM).
            if i == 0 {
                spec.disk(format!("{n}-raw"), 768 << 20)
            } else {
                spec
            }
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
        // The DRBD helper beside the agent, and the node's replication address (its
        // address on the VMs' private link).
        let vm = sb.testbed.vm(n);
        vm.write_file_mode(GUEST_HELPER, &std::fs::read(&helper)?, 0o755)
            .await?;
        sb.start_agent_with(
            n,
            &[],
            "RUST_LOG=info,hwameistor_agent=debug",
            &format!(
                "--resync 20s --storage-ip {} --namespace {SYSTEM_NAMESPACE} --drbd-helper {GUEST_HELPER}",
                vm.private_ip()
            ),
        )
        .await?;
    }
    step(started, "agents started; waiting for disk discovery");
    let disks: Api<LocalDisk> = Api::all(sb.client.clone());
    let want = names.len() * 3 + 1;
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
    // The raw disk is reserved first: the node's HDD claim below leaves it out of the pool.
    let raw = all
        .iter()
        .find(|d| {
            d.status.as_ref().and_then(|s| s.serial.as_deref())
                == Some(&format!("{}-raw", names[0]))
        })
        .and_then(|d| d.metadata.name.clone())
        .unwrap_or_default();
    let reserve = |on: bool| serde_json::json!({ "spec": { "reserved": on } });
    disks
        .patch(
            &raw,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&reserve(true)),
        )
        .await?;
    step(
        started,
        &format!("reserved {raw} ({}-raw): no claim takes it", names[0]),
    );
    let claims: Api<LocalDiskClaim> = Api::all(sb.client.clone());
    // A claim naming the disk in use cannot complete: it fails at once, saying why, and
    // touches nothing.
    let first = &names[0];
    let in_use = all
        .iter()
        .find(|d| {
            d.status.as_ref().and_then(|s| s.serial.as_deref()) == Some(&format!("{first}-inuse"))
        })
        .and_then(|d| d.metadata.name.clone())
        .unwrap_or_default();
    claims
        .create(
            &PostParams::default(),
            &LocalDiskClaim::new(
                &format!("{first}-inuse"),
                LocalDiskClaimSpec {
                    node_name: first.clone(),
                    description: DiskSelector {
                        local_disk_names: vec![in_use],
                        ..Default::default()
                    },
                },
            ),
        )
        .await?;
    let failed = eventually(WAIT, "the claim of the disk in use to fail", || async {
        let c = claims.get(&format!("{first}-inuse")).await?;
        Ok(c.status
            .filter(|s| s.phase == Some(ClaimPhase::Failed))
            .and_then(|s| s.message))
    })
    .await?;
    step(
        started,
        &format!("claim {first}-inuse (naming the disk in use): Failed: {failed}"),
    );
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
    // The controller on this machine: it places volumes by the pools the agents report.
    let controller_bin = workspace_binary("hwameistor-controller", "HWAMEISTOR_CONTROLLER_BIN")?;
    let mut controller = sb.start_controller(&controller_bin, "sandbox").await?;
    step(started, "controller started on this machine");

    // A volume larger than any one disk (the pools are 1 GiB + 2 GiB): the controller picks
    // a node with room, the agent makes one logical volume across both disks.
    let volumes: Api<LocalVolume> = Api::all(sb.client.clone());
    let bytes: i64 = 2560 << 20;
    volumes
        .create(
            &PostParams::default(),
            &LocalVolume::new(
                "demo-volume",
                LocalVolumeSpec::single(PoolClass::Hdd.pool_name(), bytes),
            ),
        )
        .await?;
    step(
        started,
        &format!("created LocalVolume demo-volume of {}", format_size(bytes)),
    );
    let node = ready_node(&volumes, "demo-volume").await?;
    let replicas: Api<LocalVolumeReplica> = Api::all(sb.client.clone());
    let replica = eventually(WAIT, "the replica to list its disks", || async {
        let r = replicas
            .get(&replica::replica_name("demo-volume", &node))
            .await?;
        Ok(r.status
            .clone()
            .filter(|s| s.state == Some(ReplicaState::Ready) && !s.disks.is_empty()))
    })
    .await?;
    step(
        started,
        &format!(
            "demo-volume Ready, placed on {node}: {} ({}) on {}",
            replica.device_path.unwrap_or_default(),
            format_size(replica.allocated_capacity_bytes.unwrap_or(0)),
            replica.disks.join(" + ")
        ),
    );
    let lvs = sb
        .testbed
        .vm(&node)
        .exec_ok("lvs -o lv_name,vg_name,lv_size,devices LocalStorage_PoolHDD")
        .await?;
    println!("\n{node}$ lvs -o lv_name,vg_name,lv_size,devices\n{lvs}");

    // A thin volume (StorageClass thin: "true"): 2 GiB counted as 1 GiB of the pool at the
    // agents' default ratio of 2; the agent makes the group's thin pool for it, and only
    // what is written takes room.
    let thin_bytes: i64 = 2 << 30;
    volumes
        .create(
            &PostParams::default(),
            &LocalVolume::new(
                "demo-thin",
                LocalVolumeSpec {
                    thin: true,
                    ..LocalVolumeSpec::single(PoolClass::Hdd.pool_name(), thin_bytes)
                },
            ),
        )
        .await?;
    step(
        started,
        &format!(
            "created thin LocalVolume demo-thin of {}",
            format_size(thin_bytes)
        ),
    );
    let thin_node = ready_node(&volumes, "demo-thin").await?;
    let vm = sb.testbed.vm(&thin_node);
    vm.exec_ok("dd if=/dev/urandom of=/dev/LocalStorage_PoolHDD/demo-thin bs=1M count=128 oflag=direct status=none")
        .await?;
    let thin_lvs = vm
        .exec_ok(
            "lvs -o lv_name,lv_size,pool_lv,data_percent,metadata_percent LocalStorage_PoolHDD",
        )
        .await?;
    step(
        started,
        &format!("demo-thin Ready on {thin_node}, 128 MiB written into it"),
    );
    println!(
        "\n{thin_node}$ lvs -o lv_name,lv_size,pool_lv,data_percent,metadata_percent\n{thin_lvs}"
    );
    let storage_nodes: Api<LocalStorageNode> = Api::all(sb.client.clone());
    let thin_pool = eventually(WAIT, "the thin pool in the node's report", || async {
        let n = storage_nodes.get(&thin_node).await?;
        Ok(n.status
            .and_then(|s| s.pools.get(PoolClass::Hdd.pool_name()).cloned())
            .filter(|p| p.thin.as_ref().is_some_and(|t| t.data_used_percent > 0)))
    })
    .await?;
    if let Some(t) = &thin_pool.thin {
        step(
            started,
            &format!(
                "{thin_node} reports its thin pool: {} data, {}% used, {} provisioned in {} volume(s), over-provisioning up to {}%",
                format_size(t.data_bytes),
                t.data_used_percent,
                format_size(t.provisioned_bytes),
                t.volume_count,
                thin_pool.thin_overprovision_percent.unwrap_or(100)
            ),
        );
    }

    // A snapshot of the thin volume (as CSI CreateSnapshot writes it): taken by the agent
    // in the thin pool; it keeps the data of its moment while the volume changes.
    let thin_dev = "/dev/LocalStorage_PoolHDD/demo-thin";
    let sum = |dev: String| async move {
        vm.exec_ok(&format!("head -c 33554432 {dev} | md5sum | cut -c1-32"))
            .await
            .map(|s| s.trim().to_string())
    };
    let before = sum(thin_dev.to_string()).await?;
    let snapshots: Api<LocalVolumeSnapshot> = Api::all(sb.client.clone());
    snapshots
        .create(
            &PostParams::default(),
            &LocalVolumeSnapshot::new(
                "demo-thin-snap",
                LocalVolumeSnapshotSpec {
                    source_volume: "demo-thin".into(),
                    node_name: thin_node.clone(),
                    pool_name: PoolClass::Hdd.pool_name().into(),
                    source_capacity_bytes: thin_bytes,
                    cow_capacity_bytes: None,
                },
            ),
        )
        .await?;
    let snap = eventually(WAIT, "demo-thin-snap Ready", || async {
        let s = snapshots.get("demo-thin-snap").await?;
        Ok(s.status.clone().filter(|st| st.ready_to_use))
    })
    .await?;
    vm.exec_ok(&format!(
        "dd if=/dev/urandom of={thin_dev} bs=1M count=16 oflag=direct conv=notrunc status=none"
    ))
    .await?;
    let (after, kept) = (
        sum(thin_dev.to_string()).await?,
        sum(snap.device_path.clone().unwrap_or_default()).await?,
    );
    anyhow::ensure!(
        kept == before && after != before,
        "the snapshot did not keep the data of its moment ({before} / {kept} / {after})"
    );
    step(
        started,
        &format!(
            "snapshot demo-thin-snap Ready on {thin_node} ({}), taken {}; 16 MiB rewritten in demo-thin since: the snapshot still reads what it held then (md5 of its first 32 MiB {before})",
            snap.device_path.clone().unwrap_or_default(),
            snap.creation_time.clone().unwrap_or_default()
        ),
    );

    // Restored into a new thin volume (as CSI CreateVolume with the snapshot as its content
    // source writes it): on the snapshot's node LVM makes it alone, a thin snapshot of the
    // snapshot, nothing copied. It holds what the snapshot holds, and outlives it.
    let t = Instant::now();
    volumes
        .create(
            &PostParams::default(),
            &LocalVolume::new(
                "demo-restored",
                LocalVolumeSpec {
                    thin: true,
                    data_source: Some(VolumeDataSource {
                        snapshot: "demo-thin-snap".into(),
                        snapshot_uid: snapshots
                            .get("demo-thin-snap")
                            .await?
                            .metadata
                            .uid
                            .unwrap_or_default(),
                        node: thin_node.clone(),
                        pool_name: PoolClass::Hdd.pool_name().into(),
                        bytes: thin_bytes,
                        thin: true,
                        clone_of: None,
                    }),
                    ..LocalVolumeSpec::single(PoolClass::Hdd.pool_name(), thin_bytes)
                },
            ),
        )
        .await?;
    let restored_node = ready_node(&volumes, "demo-restored").await?;
    let restore_secs = t.elapsed().as_secs_f64();
    let replica = Api::<LocalVolumeReplica>::all(sb.client.clone())
        .get(&hwameistor_api::replica::replica_name(
            "demo-restored",
            &restored_node,
        ))
        .await?;
    let how = match replica.status.and_then(|s| s.copy) {
        Some(c) if c.lvm_clone => "made by LVM alone (a thin clone of the snapshot)".to_string(),
        Some(c) => format!(
            "copied by the block mover, {} bytes, digest {}",
            c.bytes_done,
            c.digest.unwrap_or_default()
        ),
        None => "with no record of how it was filled".to_string(),
    };
    snapshots
        .delete("demo-thin-snap", &Default::default())
        .await?;
    eventually(WAIT, "demo-thin-snap removed", || async {
        Ok(snapshots
            .get_opt("demo-thin-snap")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    let restored = sum("/dev/LocalStorage_PoolHDD/demo-restored".to_string()).await?;
    anyhow::ensure!(
        restored_node == thin_node && restored == before,
        "demo-restored on {restored_node} does not hold the snapshot's data ({restored}, snapshot {before})"
    );
    step(
        started,
        &format!(
            "demo-restored Ready on {restored_node} {restore_secs:.1} s after it was written, {how}; the snapshot deleted since, it still holds the snapshot's data (md5 {restored})"
        ),
    );
    volumes.delete("demo-restored", &Default::default()).await?;

    // An HA volume: two replicas on two nodes, kept in sync by DRBD (protocol C).
    if names.len() >= 2 {
        let ha_bytes: i64 = 256 << 20;
        volumes
            .create(
                &PostParams::default(),
                &LocalVolume::new(
                    "demo-ha",
                    LocalVolumeSpec {
                        pool_name: PoolClass::Hdd.pool_name().into(),
                        volume_kind: VolumeKind::Lvm,
                        required_capacity_bytes: ha_bytes,
                        replica_number: 2,
                        convertible: false,
                        accessibility: Accessibility::default(),
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
        step(
            started,
            &format!(
                "created HA LocalVolume demo-ha of {} (replicaNumber 2)",
                format_size(ha_bytes)
            ),
        );
        let ha = eventually(WAIT, "demo-ha Ready and Healthy", || async {
            let v = volumes.get("demo-ha").await?;
            let st = v.status.clone().unwrap_or_default();
            Ok(
                (st.state == Some(VolumeState::Ready) && st.ha_state == Some(HaState::Healthy))
                    .then_some(v),
            )
        })
        .await?;
        let config = ha.spec.config.clone().unwrap_or_default();
        step(
            started,
            &format!(
                "demo-ha Healthy: DRBD resource {} on /dev/drbd{}, initial sync done",
                config.resource_id, config.resource_id
            ),
        );
        println!("\n$ kubectl get lvr (demo-ha)");
        println!(
            "{:<24} {:<8} {:<7} {:<10} {:<11} {:<12} {:<8}",
            "NAME", "NODE", "STATE", "ROLE", "DISK", "CONNECTION", "ALLOWED"
        );
        for a in &config.replicas {
            let r = replicas
                .get(&replica::replica_name("demo-ha", &a.hostname))
                .await?;
            let st = r.status.clone().unwrap_or_default();
            let rs = st.replication.clone().unwrap_or_default();
            println!(
                "{:<24} {:<8} {:<7} {:<10} {:<11} {:<12} {:<8}",
                r.metadata.name.clone().unwrap_or_default(),
                a.hostname,
                st.state.map(|s| format!("{s:?}")).unwrap_or_default(),
                rs.role,
                rs.disk_state,
                rs.connection_state,
                if a.primary { "primary" } else { "-" }
            );
        }
        let first = config
            .replicas
            .first()
            .map(|a| a.hostname.clone())
            .unwrap_or_default();
        let events = sb
            .testbed
            .vm(&first)
            .exec_ok("drbdsetup events2 --now demo-ha")
            .await
            .unwrap_or_default();
        println!("\n{first}$ drbdsetup events2 --now demo-ha\n{events}");

        // Volume operations as resources: the HA volume grows online, and a plain volume
        // on the other node converts to HA without moving its data.
        let other = config
            .replicas
            .iter()
            .map(|a| a.hostname.clone())
            .find(|n| *n != node)
            .unwrap_or_default();
        volumes
            .create(
                &PostParams::default(),
                &LocalVolume::new(
                    "demo-convert",
                    LocalVolumeSpec {
                        pool_name: PoolClass::Hdd.pool_name().into(),
                        volume_kind: VolumeKind::Lvm,
                        required_capacity_bytes: 64 << 20,
                        replica_number: 1,
                        // DRBD on its one node from the start: it converts online.
                        convertible: true,
                        accessibility: Accessibility {
                            nodes: vec![other.clone()],
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
        eventually(WAIT, "demo-convert Ready", || async {
            let v = volumes.get("demo-convert").await?;
            Ok((v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)).then_some(()))
        })
        .await?;
        let alone = Api::<LocalVolumeReplica>::all(sb.client.clone())
            .get(&hwameistor_api::replica::replica_name(
                "demo-convert",
                &other,
            ))
            .await?;
        let rep = alone.status.as_ref().and_then(|s| s.replication.clone());
        step(
            started,
            &format!(
                "demo-convert (created convertible) Ready on {other}: DRBD on that node alone, device {}, {} {}",
                alone
                    .status
                    .as_ref()
                    .and_then(|s| s.device_path.clone())
                    .unwrap_or_default(),
                rep.as_ref().map(|r| r.connection_state.as_str()).unwrap_or("-"),
                rep.as_ref().map(|r| r.disk_state.as_str()).unwrap_or("-"),
            ),
        );
        let grown: i64 = 384 << 20;
        Api::<LocalVolumeExpand>::all(sb.client.clone())
            .create(
                &PostParams::default(),
                &LocalVolumeExpand::new(
                    "demo-ha-grow",
                    LocalVolumeExpandSpec {
                        volume_name: "demo-ha".into(),
                        required_capacity_bytes: grown,
                        abort: false,
                        ttl_seconds_after_finished: None,
                    },
                ),
            )
            .await?;
        Api::<LocalVolumeConvert>::all(sb.client.clone())
            .create(
                &PostParams::default(),
                &LocalVolumeConvert::new(
                    "demo-convert-ha",
                    LocalVolumeConvertSpec {
                        volume_name: "demo-convert".into(),
                        replica_number: 2,
                        convert_all_volumes: true,
                        target_node: None,
                        abort: false,
                        ttl_seconds_after_finished: None,
                    },
                ),
            )
            .await?;
        step(
            started,
            &format!(
                "created LocalVolumeExpand demo-ha-grow (demo-ha to {}) and LocalVolumeConvert demo-convert-ha (demo-convert on {other} to 2 replicas)",
                format_size(grown)
            ),
        );
        let ended =
            |st: Option<OperationStatus>| st.filter(|s| s.phase.is_some_and(|p| p.is_final()));
        let exp = eventually(WAIT, "demo-ha-grow ended", || async {
            Ok(ended(
                Api::<LocalVolumeExpand>::all(sb.client.clone())
                    .get("demo-ha-grow")
                    .await?
                    .status,
            ))
        })
        .await?;
        let conv = eventually(WAIT, "demo-convert-ha ended", || async {
            Ok(ended(
                Api::<LocalVolumeConvert>::all(sb.client.clone())
                    .get("demo-convert-ha")
                    .await?
                    .status,
            ))
        })
        .await?;
        let took = |s: &OperationStatus| match (&s.start_time, &s.completion_time) {
            (Some(a), Some(b)) => format!("{}s", b.0.as_second() - a.0.as_second()),
            _ => "-".into(),
        };
        step(started, "operations ended");
        println!("\n$ kubectl get lvexpand,lvconvert");
        println!(
            "{:<36} {:<14} {:<10} {:<16} {:<6} MESSAGE",
            "NAME", "VOLUME", "PHASE", "STEP", "TOOK"
        );
        for (name, vol, s) in [
            ("localvolumeexpand/demo-ha-grow", "demo-ha", &exp),
            ("localvolumeconvert/demo-convert-ha", "demo-convert", &conv),
        ] {
            println!(
                "{:<36} {:<14} {:<10} {:<16} {:<6} {}",
                name,
                vol,
                s.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
                s.step.clone().unwrap_or_default(),
                took(s),
                s.message.clone().unwrap_or_default()
            );
        }
        if exp.phase != Some(OperationPhase::Succeeded)
            || conv.phase != Some(OperationPhase::Succeeded)
        {
            anyhow::bail!("a volume operation did not succeed (see above)");
        }
    }
    // A raw-disk volume (what disk.hwameistor.io's CreateVolume makes): the reserved disk is
    // released, the controller binds it to the volume, the agent confirms it on its stable
    // path; deleted, the agent wipes it and it is free again.
    disks
        .patch(
            &raw,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&reserve(false)),
        )
        .await?;
    // Where a pod with a claim for a whole disk may run: the scheduler extender (the real
    // binary, its caches filled by watches), asked as kube-scheduler asks it.
    eventually(WAIT, "the released disk Available", || async {
        let d = disks.get(&raw).await?;
        Ok((disk_unavailability(&d).is_none()).then_some(()))
    })
    .await?;
    let chosen = extender_demo(&sb, &args.kubeconfig_out, &names, started).await?;
    let ldvs: Api<LocalDiskVolume> = Api::all(sb.client.clone());
    ldvs.create(
        &PostParams::default(),
        &LocalDiskVolume::new(
            "demo-disk",
            LocalDiskVolumeSpec {
                node_name: chosen,
                disk_type: DiskType::Hdd,
                required_capacity_bytes: 512 << 20,
                max_capacity_bytes: None,
                pvc_namespace: Some(DEMO_NS.into()),
                pvc_name: Some("data".into()),
                wipe: WipePolicy::Signatures,
            },
        ),
    )
    .await?;
    let ready = eventually(WAIT, "demo-disk Ready", || async {
        let v = ldvs.get("demo-disk").await?;
        Ok(v.status.filter(|s| s.state == Some(DiskVolumeState::Ready)))
    })
    .await?;
    step(
        started,
        &format!(
            "raw-disk volume demo-disk Ready on {}: the whole disk {} ({}), {}",
            names[0],
            ready.local_disk_name.clone().unwrap_or_default(),
            format_size(ready.capacity_bytes.unwrap_or(0)),
            ready.device_path.clone().unwrap_or_default()
        ),
    );
    ldvs.delete("demo-disk", &Default::default()).await?;
    eventually(WAIT, "demo-disk wiped and given back", || async {
        let gone = ldvs.get_opt("demo-disk").await?.is_none();
        let d = disks.get(&raw).await?;
        Ok((gone && d.status.and_then(|s| s.phase) == Some(DiskPhase::Available)).then_some(()))
    })
    .await?;
    step(
        started,
        &format!("demo-disk deleted: {raw} wiped (its signatures) and Available again"),
    );
    controller.child.kill().await.ok();
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

/// The namespace of the sandbox's demo claim.
const DEMO_NS: &str = "demo";

/// Starts `hwameistor-scheduler-extender` on loopback, makes a raw-disk StorageClass and a
/// claim of 512 MiB on it, and asks the extender's `filter` where a pod using that claim may
/// run among `nodes`: prints its answer and returns the node it gave the pod (which must be
/// the one with the free disk).
/// Waits until LocalVolume `name` is Ready; the node of its (first) replica.
async fn ready_node(volumes: &Api<LocalVolume>, name: &str) -> anyhow::Result<String> {
    let v = eventually(WAIT, &format!("{name} Ready"), || async {
        let v = volumes.get(name).await?;
        Ok((v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)).then_some(v))
    })
    .await?;
    Ok(v.spec
        .config
        .as_ref()
        .and_then(|c| c.replicas.first())
        .map(|r| r.hostname.clone())
        .unwrap_or_default())
}

async fn extender_demo(
    sb: &Sandbox,
    kubeconfig: &std::path::Path,
    nodes: &[String],
    started: Instant,
) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    let bin = workspace_binary("hwameistor-scheduler-extender", "HWAMEISTOR_EXTENDER_BIN")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let _extender = tokio::process::Command::new(&bin)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .args(["--listen", &addr.to_string()])
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": DEMO_NS}}))?;
    match Api::<Namespace>::all(sb.client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "demo-disk-hdd"},
        "provisioner": hwameistor_api::DISK_DRIVER_NAME,
        "volumeBindingMode": "WaitForFirstConsumer",
        "parameters": {"diskType": "HDD"}
    }))?;
    Api::<StorageClass>::all(sb.client.clone())
        .create(&PostParams::default(), &class)
        .await?;
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data", "namespace": DEMO_NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "demo-disk-hdd",
                 "resources": {"requests": {"storage": "512Mi"}}}
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(sb.client.clone(), DEMO_NS)
        .create(&PostParams::default(), &claim)
        .await?;
    let pod = serde_json::json!({
        "metadata": {"name": "db-0", "namespace": DEMO_NS, "uid": "demo-db-0"},
        "spec": {"containers": [{"name": "db", "image": "postgres"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    });
    let request = serde_json::json!({"pod": pod, "nodenames": nodes}).to_string();
    // Ready once its caches are synced; asked until its watches show the claim and the
    // free disk (a node given, or the last answer after a while).
    let last = std::sync::Mutex::new(None);
    let asked = eventually(Duration::from_secs(30), "the extender's answer", || async {
        let Ok((200, body)) = http(addr, "POST", "/filter", &request).await else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            hwameistor_sandbox::Error::Other(format!("the extender answered {body:?}: {e}"))
        })?;
        let given = v["nodenames"].as_array().is_some_and(|n| !n.is_empty());
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.clone());
        Ok(given.then_some(v))
    })
    .await;
    let answer = match (asked, last.into_inner().unwrap_or_else(|e| e.into_inner())) {
        (Ok(v), _) | (Err(_), Some(v)) => v,
        (Err(e), None) => return Err(e.into()),
    };
    let given: Vec<String> = serde_json::from_value(answer["nodenames"].clone())?;
    let mut lines = vec![format!(
        "extender: pod {DEMO_NS}/db-0 (claim {DEMO_NS}/data: a whole HDD disk of at least 512Mi) goes to {}",
        given.first().map(String::as_str).unwrap_or("no node")
    )];
    if let Some(failed) = answer["failedAndUnresolvableNodes"].as_object() {
        for (node, why) in failed {
            lines.push(format!(
                "  not {node}: {}",
                why.as_str().unwrap_or_default()
            ));
        }
    }
    step(started, &lines.join("\n"));
    match given.as_slice() {
        [one] if *one == nodes[0] => Ok(one.clone()),
        _ => anyhow::bail!(
            "the extender gave the pod {given:?}, not {} (the node with the free disk)",
            nodes[0]
        ),
    }
}

/// One HTTP/1.1 request on loopback: the status and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: extender\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}
