//! The node agent binary.

use anyhow::Context as _;
use clap::Parser;
use hwameistor_agent::context::{Context, Tuning};
use hwameistor_agent::crash::CrashPoints;
use hwameistor_agent::discovery::{HostDisks, HostRoots};
use hwameistor_agent::disk_volume_controller::{self, DiskVolumes};
use hwameistor_agent::exec::{HostExecutor, HostMode};
use hwameistor_agent::ha::Replication;
use hwameistor_agent::lvm::{LvmCli, LvmHealth};
use hwameistor_agent::mover::{lvm_device, Mover, MoverSettings};
use hwameistor_agent::{claim_controller, replica_controller, scanner, snapshot_controller};
use hwameistor_csi::readiness::{ApiReachability, Readiness, ReadinessSource};
use hwameistor_hostexec::disk::WipeCli;
use hwameistor_hostexec::drbd::{DrbdCli, LocalConfigFiles};
use hwameistor_mover::{FaultInjection, NodeKey};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "hwameistor-agent",
    version,
    about = "HwameiStor node agent: disks, pools and volumes of one node"
)]
struct Args {
    /// Name of the Kubernetes node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Kubeconfig to use; in a pod the service account is used instead.
    #[arg(long, env = "HWAMEISTOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// How host tools are run.
    #[arg(long, value_enum, default_value = "direct")]
    host_mode: HostMode,
    /// Full rescan interval, as a safety net behind uevents.
    #[arg(long, default_value = "60s", value_parser = hwameistor_api::duration::parse_duration)]
    resync: Duration,
    /// Longest a single host command may run.
    #[arg(long, default_value = "120s", value_parser = hwameistor_api::duration::parse_duration)]
    command_timeout: Duration,
    /// Longest the wipe of a deleted raw-disk volume's disk may run (a full wipe writes the
    /// whole disk).
    #[arg(long, default_value = "24h", value_parser = hwameistor_api::duration::parse_duration)]
    wipe_timeout: Duration,
    /// Thin volumes' sizes sum to at most this many times their pool's data size; a new
    /// thin volume past it (the group having no room to grow the pool) is refused. The
    /// node reports it, and placement counts a thin volume as size / ratio of the pool.
    #[arg(long, default_value_t = 2.0, value_parser = ratio)]
    thin_overprovision_ratio: f64,
    /// A new thin pool's data size, at least (the group allowing).
    #[arg(long, default_value = "1Gi", value_parser = size)]
    thin_min_pool_size: i64,
    /// A thin pool's metadata is its data size divided by this (at least 8Mi).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i64).range(16..=65536))]
    thin_metadata_divisor: i64,
    /// A thin pool whose data or metadata use reaches this percent is grown from its
    /// volume group's free space...
    #[arg(long, default_value_t = 70.0, value_parser = percent)]
    thin_grow_at_percent: f64,
    /// ...by this percent of its size (as far as the group allows).
    #[arg(long, default_value_t = 25.0, value_parser = percent)]
    thin_grow_by_percent: f64,
    /// A thin pool's use from this percent is a Warning event on the node (`diagnose` warns
    /// from 80%).
    #[arg(long, default_value_t = 80.0, value_parser = percent)]
    thin_warn_at_percent: f64,
    /// Root of sysfs (tests point this elsewhere).
    #[arg(long, default_value = "/sys")]
    sys_root: PathBuf,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Serve the CSI identity and node services on this socket (e.g. unix:///csi/csi.sock).
    #[arg(long)]
    csi_endpoint: Option<String>,
    /// Where to serve the CSI node service of `disk.hwameistor.io` (raw-disk volumes: one
    /// whole disk each), e.g. unix:///csi-disk/csi.sock; absent: not served.
    #[arg(long)]
    disk_csi_endpoint: Option<String>,
    /// Most volumes the CSI node service accepts on this node (reported to the scheduler).
    #[arg(long, default_value_t = 1000)]
    csi_max_volumes: i64,
    /// Run HA replicas with DRBD (8.4). Without it, HA replicas on this node report that
    /// they cannot run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    drbd: bool,
    /// Directory of the agent's own DRBD configuration (drbd.conf and one file per
    /// resource); the node's /etc/drbd.conf is never used.
    #[arg(long, default_value = "/etc/hwameistor/drbd")]
    drbd_config_dir: String,
    /// The program DRBD runs to fence a peer or report a split brain (named in every
    /// resource file); it reaches this agent through --drbd-helper-socket.
    #[arg(long, default_value = "/usr/local/bin/hwameistor-drbd-helper")]
    drbd_helper: String,
    #[arg(long, default_value = hwameistor_agent::helper_socket::DEFAULT_SOCKET)]
    drbd_helper_socket: PathBuf,
    /// This node's replication address, published as its LocalStorageNode's storageIP.
    /// Unset: the Node's `hwameistor.io/storage-ip` annotation, else its InternalIP.
    #[arg(long, env = "STORAGE_IP")]
    storage_ip: Option<String>,
    /// Port of the block mover (volume copies between agents, on the storage IP); 0 runs
    /// without one (this node's volumes without replication then cannot be migrated).
    #[arg(long, default_value_t = 43000)]
    mover_port: u16,
    /// The node's mover key (X25519), made on first start; keep it across restarts.
    #[arg(long, default_value = "/var/lib/hwameistor/mover/node.key")]
    mover_key: PathBuf,
    /// Checkpoints of copies into this node (a copy resumes from them after a restart).
    #[arg(long, default_value = "/var/lib/hwameistor/mover")]
    mover_state_dir: PathBuf,
    /// TEST ONLY: damage this chunk of every copy served, once (the target must detect it
    /// and have it sent again).
    #[arg(long, hide = true)]
    mover_fault_corrupt_chunk: Option<u64>,
    /// Namespace of the heartbeat Lease the controller watches for failover.
    #[arg(long, env = "POD_NAMESPACE", default_value = "hwameistor")]
    namespace: String,
    /// How often the heartbeat is renewed, and how long each renewal is declared valid.
    #[arg(long, default_value = "2s", value_parser = hwameistor_api::duration::parse_duration)]
    heartbeat: Duration,
    #[arg(long, default_value = "6s", value_parser = hwameistor_api::duration::parse_duration)]
    heartbeat_valid: Duration,
}

/// Annotation on a Node naming its replication address.
const STORAGE_IP_ANNOTATION: &str = "hwameistor.io/storage-ip";

/// The replication address: the flag, else the Node's annotation, else its InternalIP.
async fn storage_ip(client: &kube::Client, args: &Args) -> Option<String> {
    if let Some(ip) = &args.storage_ip {
        return Some(ip.clone());
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let node = match nodes.get_opt(&args.node_name).await {
        Ok(n) => n?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read this node's Node object for its storage IP");
            return None;
        }
    };
    if let Some(ip) = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STORAGE_IP_ANNOTATION))
    {
        return Some(ip.clone());
    }
    node.status?
        .addresses?
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
}

/// The CSI node service, when asked for; otherwise a future that never completes. Its
/// mounts run in this container's mount namespace (the kubelet directory is mounted with
/// bidirectional propagation), so it always uses direct host commands, whatever
/// `--host-mode` the LVM side uses.
async fn csi_node(
    args: &Args,
    readiness: Arc<dyn hwameistor_csi::readiness::ReadinessSource>,
    replication: Option<Arc<dyn hwameistor_csi::node::Replicated>>,
) -> Result<(), hwameistor_csi::errors::ServeError> {
    use hwameistor_csi::{
        exec::HostExecutor,
        identity::IdentityService,
        node::{host::Host, NodeService},
        server,
    };
    let Some(endpoint) = args.csi_endpoint.clone() else {
        return std::future::pending().await;
    };
    let host = Host::new(Arc::new(HostExecutor::direct(args.command_timeout)));
    let services = server::Services {
        identity: IdentityService::new(false, readiness),
        controller: None,
        node: Some({
            let n = NodeService::new(args.node_name.clone(), host, args.csi_max_volumes);
            match replication {
                Some(r) => n.with_replication(r),
                None => n,
            }
        }),
    };
    server::serve(&endpoint, services, std::future::pending()).await
}

/// The CSI node service of `disk.hwameistor.io`, when asked for: the same stage, publish
/// and stats as the LVM driver's, on the whole disk CreateVolume named (no replication),
/// each publish recorded in its LocalDiskVolume.
async fn disk_csi_node(
    args: &Args,
    readiness: Arc<dyn hwameistor_csi::readiness::ReadinessSource>,
    record: Arc<dyn hwameistor_csi::node::PublishRecord>,
) -> Result<(), hwameistor_csi::errors::ServeError> {
    use hwameistor_csi::{
        disk_controller::DISK_DRIVER_NAME,
        exec::HostExecutor,
        identity::IdentityService,
        node::{host::Host, NodeService},
        server,
    };
    let Some(endpoint) = args.disk_csi_endpoint.clone() else {
        return std::future::pending().await;
    };
    let host = Host::new(Arc::new(HostExecutor::direct(args.command_timeout)));
    let services = server::Services {
        identity: IdentityService::named(DISK_DRIVER_NAME, false, readiness),
        controller: None,
        node: Some(
            NodeService::new(args.node_name.clone(), host, args.csi_max_volumes)
                .with_publish_record(record),
        ),
    };
    server::serve(&endpoint, services, std::future::pending()).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let crash = CrashPoints::from_env().map_err(anyhow::Error::msg)?;
    let client = hwameistor_api::client::client(args.kubeconfig.as_deref())
        .await
        .context("connecting to the API server")?;
    let exec = Arc::new(HostExecutor::new(args.host_mode, args.command_timeout));
    let wipe = Arc::new(WipeCli::new(Arc::new(HostExecutor::new(
        args.host_mode,
        args.wipe_timeout,
    ))));
    let roots = HostRoots {
        sys: args.sys_root.clone(),
        ..HostRoots::default()
    };
    let replication = if args.drbd {
        // Files are written from this process: in nsenter mode the config directory must be
        // the same path in the container and on the host (a hostPath mount).
        let drbd = DrbdCli::with_config_dir(
            exec.clone(),
            Arc::new(LocalConfigFiles),
            &args.drbd_config_dir,
        )
        .context("--drbd-config-dir")?;
        Some(Replication::new(
            Arc::new(drbd),
            Some(args.drbd_helper.clone()),
        ))
    } else {
        None
    };
    let ip = storage_ip(&client, &args).await;
    if ip.is_none() {
        tracing::warn!("no storage IP (flag, Node annotation or InternalIP): this node cannot hold HA replicas");
    }
    let ctx = Context::with_replication(
        client,
        args.node_name.clone(),
        Arc::new(LvmCli::new(exec)),
        Arc::new(HostDisks { roots }),
        crash,
        Tuning {
            thin: hwameistor_core::thin::ThinPolicy {
                grow_at_percent: args.thin_grow_at_percent,
                grow_by_percent: args.thin_grow_by_percent,
                warn_at_percent: args.thin_warn_at_percent,
                overprovision_ratio: args.thin_overprovision_ratio,
                min_data_bytes: args.thin_min_pool_size,
                metadata_divisor: args.thin_metadata_divisor,
            },
            ..Tuning::default()
        },
        replication.clone(),
        ip,
    );
    tracing::info!(node = %args.node_name, version = env!("CARGO_PKG_VERSION"), "agent starting");
    // CSI Probe: ready when LVM answered its last read and the API server answers.
    let api = ApiReachability::new(Duration::from_secs(60));
    tokio::spawn(api.clone().run(ctx.client.clone(), Duration::from_secs(10)));
    let readiness = {
        let lvm = ctx.lvm.clone();
        move || {
            let lvm = match lvm.health() {
                LvmHealth::Ok => Readiness::Ready,
                LvmHealth::NotReadYet => Readiness::Starting("LVM not read yet".into()),
                LvmHealth::Failing(e) => Readiness::Unhealthy(e),
            };
            Readiness::all([lvm, api.readiness()])
        }
    };
    let mover_task = match (&ctx.storage_ip, args.mover_port) {
        (_, 0) => None,
        (None, _) => {
            tracing::warn!("no storage IP: the block mover does not run (volumes without replication cannot move to or from this node)");
            None
        }
        (Some(ip), port) => {
            std::fs::create_dir_all(&args.mover_state_dir)
                .with_context(|| format!("--mover-state-dir {}", args.mover_state_dir.display()))?;
            let key = NodeKey::load_or_generate(&args.mover_key)
                .with_context(|| format!("--mover-key {}", args.mover_key.display()))?;
            let mover = Mover::new(MoverSettings {
                key: Arc::new(key),
                state_dir: args.mover_state_dir.clone(),
                device: lvm_device(),
                retry: Duration::from_secs(5),
            });
            let _ = ctx.mover.set(mover.clone());
            let endpoint = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            let fault = FaultInjection {
                corrupt_chunk: args.mover_fault_corrupt_chunk,
                corrupt_times: 0,
            };
            let listener =
                tokio::net::TcpListener::bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)))
                    .await
                    .with_context(|| format!("--mover-port {port}"))?;
            Some(hwameistor_agent::mover::serve(
                ctx.clone(),
                mover,
                listener,
                endpoint,
                fault,
            ))
        }
    };
    let mover_task = async move {
        match mover_task {
            Some(t) => {
                if let Err(e) = t.await {
                    tracing::error!(error = %e, "block mover failed; volumes cannot be copied to or from this node");
                }
                std::future::pending::<()>().await
            }
            None => std::future::pending::<()>().await,
        }
    };
    let csi_replication = replication.clone().map(|r| {
        Arc::new(hwameistor_agent::ha::CsiReplication {
            ctx: ctx.clone(),
            replication: r,
        }) as Arc<dyn hwameistor_csi::node::Replicated>
    });
    let readiness: Arc<dyn hwameistor_csi::readiness::ReadinessSource> = Arc::new(readiness);
    let csi = csi_node(&args, readiness.clone(), csi_replication);
    let disk_record = Arc::new(hwameistor_agent::disk_publish::DiskPublishRecord::new(
        ctx.client.clone(),
        args.node_name.clone(),
    )) as Arc<dyn hwameistor_csi::node::PublishRecord>;
    let disk_csi = disk_csi_node(&args, readiness, disk_record);
    let ha = {
        let (ctx, rep, socket) = (
            ctx.clone(),
            replication.clone(),
            args.drbd_helper_socket.clone(),
        );
        async move {
            let Some(rep) = rep else {
                return std::future::pending::<()>().await;
            };
            tokio::spawn(rep.clone().run_monitor(Duration::from_secs(1)));
            if let Err(e) = hwameistor_agent::helper_socket::serve(ctx, rep, &socket).await {
                tracing::error!(error = %e, socket = %socket.display(), "DRBD helper socket failed; fencing falls back to the replica reconciler");
                std::future::pending::<()>().await
            }
        }
    };
    let disk_volumes = Arc::new(DiskVolumes {
        ctx: ctx.clone(),
        wipe,
    });
    let beat = hwameistor_agent::heartbeat::run(
        ctx.client.clone(),
        args.namespace.clone(),
        args.node_name.clone(),
        args.heartbeat,
        args.heartbeat_valid,
    );
    tokio::select! {
        r = csi => {
            if let Err(e) = r {
                tracing::error!(error = %e, "CSI node service failed");
                return Err(e.into());
            }
        }
        r = disk_csi => {
            if let Err(e) = r {
                tracing::error!(error = %e, "disk CSI node service failed");
                return Err(e.into());
            }
        }
        _ = ctx.lvm.clone().run_refresher() => {}
        _ = scanner::run(ctx.clone(), args.resync, scanner::host_uevents()) => {}
        _ = claim_controller::run(ctx.clone()) => {}
        _ = replica_controller::run(ctx.clone()) => {}
        _ = snapshot_controller::run(ctx.clone()) => {}
        _ = disk_volume_controller::run(disk_volumes) => {}
        _ = ha => {}
        _ = mover_task => {}
        _ = beat => {}
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); }
    }
    Ok(())
}

/// A percentage: a number from 1 to 100.
fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (1.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s} is not a ratio from 1 (no over-provisioning) to 100"
        ))
    }
}

fn size(s: &str) -> Result<i64, String> {
    hwameistor_api::quantity::parse_size(s).map_err(|e| e.to_string())
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (1.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not a percentage from 1 to 100"))
    }
}
