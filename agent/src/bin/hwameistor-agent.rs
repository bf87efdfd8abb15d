//! The node agent binary.

use anyhow::Context as _;
use clap::Parser;
use hwameistor_agent::context::{Context, Tuning};
use hwameistor_agent::crash::CrashPoints;
use hwameistor_agent::discovery::{HostDisks, HostRoots};
use hwameistor_agent::exec::{HostExecutor, HostMode};
use hwameistor_agent::lvm::{LvmCli, LvmHealth};
use hwameistor_agent::{claim_controller, replica_controller, scanner};
use hwameistor_csi::readiness::{ApiReachability, Readiness, ReadinessSource};
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
    /// Root of sysfs (tests point this elsewhere).
    #[arg(long, default_value = "/sys")]
    sys_root: PathBuf,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Serve the CSI identity and node services on this socket (e.g. unix:///csi/csi.sock).
    #[arg(long)]
    csi_endpoint: Option<String>,
    /// Most volumes the CSI node service accepts on this node (reported to the scheduler).
    #[arg(long, default_value_t = 1000)]
    csi_max_volumes: i64,
}

/// The CSI node service, when asked for; otherwise a future that never completes. Its
/// mounts run in this container's mount namespace (the kubelet directory is mounted with
/// bidirectional propagation), so it always uses direct host commands, whatever
/// `--host-mode` the LVM side uses.
async fn csi_node(
    args: &Args,
    readiness: Arc<dyn hwameistor_csi::readiness::ReadinessSource>,
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
        node: Some(NodeService::new(
            args.node_name.clone(),
            host,
            args.csi_max_volumes,
        )),
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
    let roots = HostRoots {
        sys: args.sys_root.clone(),
        ..HostRoots::default()
    };
    let ctx = Context::new(
        client,
        args.node_name.clone(),
        Arc::new(LvmCli::new(exec)),
        Arc::new(HostDisks { roots }),
        crash,
        Tuning::default(),
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
    let csi = csi_node(&args, Arc::new(readiness));
    tokio::select! {
        r = csi => {
            if let Err(e) = r {
                tracing::error!(error = %e, "CSI node service failed");
                return Err(e.into());
            }
        }
        _ = ctx.lvm.clone().run_refresher() => {}
        _ = scanner::run(ctx.clone(), args.resync, scanner::host_uevents()) => {}
        _ = claim_controller::run(ctx.clone()) => {}
        _ = replica_controller::run(ctx.clone()) => {}
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; stopping"); }
    }
    Ok(())
}
