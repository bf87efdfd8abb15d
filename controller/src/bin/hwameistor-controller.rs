//! The cluster controller binary: leader-elected reconcilers plus the CSI controller service.

use anyhow::Context as _;
use clap::Parser;
use hwameistor_controller::leader::{Elector, ElectorConfig};
use hwameistor_controller::metrics::{self, Metrics};
use hwameistor_controller::volume_reconciler;
use hwameistor_core::placement::Policy;
use hwameistor_csi::controller::{ControllerService, Timeouts};
use hwameistor_csi::identity::IdentityService;
use hwameistor_csi::server::{self, Services};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "hwameistor-controller",
    version,
    about = "HwameiStor cluster controller and CSI controller service"
)]
struct Args {
    /// Kubeconfig to use; in a pod the service account is used instead.
    #[arg(long, env = "HWAMEISTOR_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "hwameistor")]
    namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "hwameistor-controller")]
    lease_name: String,
    /// This instance's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value = "15s", value_parser = hwameistor_api::duration::parse_duration)]
    lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = hwameistor_api::duration::parse_duration)]
    renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = hwameistor_api::duration::parse_duration)]
    retry_period: Duration,
    /// Where the CSI identity and controller services listen.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    csi_endpoint: String,
    /// Where /metrics and /healthz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Longest CreateVolume, DeleteVolume and ControllerExpandVolume wait for the cluster.
    #[arg(long, default_value = "50s", value_parser = hwameistor_api::duration::parse_duration)]
    csi_timeout: Duration,
    /// Most volumes one pool may hold; unlimited when unset.
    #[arg(long)]
    max_volumes_per_pool: Option<i64>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// Completes on SIGTERM or SIGINT.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Sets the leader gauge while leading, and clears it however leading ends.
struct LeaderFlag(Arc<Metrics>);

impl Drop for LeaderFlag {
    fn drop(&mut self) {
        self.0.set_leader(false);
    }
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
    if args.renew_deadline >= args.lease_duration {
        anyhow::bail!(
            "--renew-deadline must be shorter than --lease-duration, or two leaders could overlap"
        );
    }
    let client = hwameistor_api::client::client(args.kubeconfig.as_deref()).await?;
    let identity = match args.identity.clone() {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "hwameistor-controller".into()),
    };
    tracing::info!(%identity, version = env!("CARGO_PKG_VERSION"), "controller starting");

    let metrics = Arc::new(Metrics::default());
    let listener = metrics::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let metrics_task = tokio::spawn(metrics::serve(listener, metrics.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let timeouts = Timeouts {
        create: args.csi_timeout,
        delete: args.csi_timeout,
        expand: args.csi_timeout,
    };
    let services = Services {
        identity: IdentityService::new(true),
        controller: Some(ControllerService::new(client.clone(), timeouts)),
        node: None,
    };
    let endpoint = args.csi_endpoint.clone();
    let mut csi = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move { server::serve(&endpoint, services, stop).await }
    });

    let ctx = volume_reconciler::Context::new(
        client.clone(),
        &identity,
        metrics.clone(),
        Policy {
            max_volumes_per_pool: args.max_volumes_per_pool,
        },
    );
    let mut config = ElectorConfig::new(&args.namespace, &args.lease_name, &identity);
    config.lease_duration = args.lease_duration;
    config.renew_deadline = args.renew_deadline;
    config.retry_period = args.retry_period;
    let elector = Elector::new(client, config);
    let lead = {
        let metrics = metrics.clone();
        move || {
            let ctx = ctx.clone();
            let flag = LeaderFlag(metrics.clone());
            flag.0.set_leader(true);
            async move {
                let _flag = flag;
                volume_reconciler::run(ctx).await;
            }
        }
    };
    let election = tokio::spawn(elector.run(lead, stopped(stop_rx.clone())));

    tokio::select! {
        _ = terminated() => tracing::info!("terminating"),
        r = &mut csi => {
            match r {
                Ok(Ok(())) => tracing::warn!("CSI server stopped"),
                Ok(Err(e)) => tracing::error!(error = %e, "CSI server failed"),
                Err(e) => tracing::error!(error = %e, "CSI server task failed"),
            }
        }
    }
    let _ = stop_tx.send(true);
    // Give the elector a moment to release the lease so a standby takes over at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    metrics_task.abort();
    Ok(())
}
