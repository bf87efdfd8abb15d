//! The cluster controller binary: leader-elected reconcilers plus the CSI controller service.

use anyhow::Context as _;
use clap::Parser;
use hwameistor_controller::disk_volumes;
use hwameistor_controller::evictor;
use hwameistor_controller::failover::{self, FailoverConfig};
use hwameistor_controller::groups;
use hwameistor_controller::leader::{Elector, ElectorConfig};
use hwameistor_controller::metrics::{self, Health, HealthLimits, Metrics, Unhealthy};
use hwameistor_controller::operations::{self, OperationSettings};
use hwameistor_controller::volume_reconciler::{self, Scope};
use hwameistor_core::operation::slots;
use hwameistor_core::placement::Policy;
use hwameistor_csi::controller::{ControllerService, Timeouts};
use hwameistor_csi::disk_controller::{DiskControllerService, DISK_DRIVER_NAME};
use hwameistor_csi::identity::IdentityService;
use hwameistor_csi::readiness::Readiness;
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
    /// Where to serve the CSI controller service of `disk.hwameistor.io` (raw-disk volumes),
    /// e.g. unix:///csi-disk/csi.sock; absent: not served.
    #[arg(long)]
    disk_csi_endpoint: Option<String>,
    /// Where /metrics, /healthz (liveness) and /readyz (readiness) are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Longest CreateVolume, DeleteVolume and ControllerExpandVolume wait for the cluster.
    #[arg(long, default_value = "50s", value_parser = hwameistor_api::duration::parse_duration)]
    csi_timeout: Duration,
    /// Most volumes one pool may hold; unlimited when unset.
    #[arg(long)]
    max_volumes_per_pool: Option<i64>,
    /// Partitioning option: act only on the LocalStorageNodes this equality label selector
    /// (key=value[,key=value...]) matches and on the LocalVolumes placed on them (before
    /// placement: allowed on one of them and on no node of another partition). Unset: the
    /// whole cluster, as deployed. Give each partition its own --lease-name.
    #[arg(long, value_parser = parse_scope)]
    scope_selector: Option<Scope>,
    /// How long past its heartbeat's validity an agent must stay silent before the HA
    /// volumes whose primary it holds fail over (fencing keeps this safe; this sets only how
    /// soon a failover is tried).
    #[arg(long, default_value = "5s", value_parser = hwameistor_api::duration::parse_duration)]
    failover_grace: Duration,
    /// How often HA volumes are checked for a lost primary.
    #[arg(long, default_value = "1s", value_parser = hwameistor_api::duration::parse_duration)]
    failover_tick: Duration,
    /// How long an ended volume operation (migrate, convert, expand) is kept as history
    /// when it does not set ttlSecondsAfterFinished itself.
    #[arg(long, default_value = "24h", value_parser = hwameistor_api::duration::parse_duration)]
    operation_ttl: Duration,
    /// Most data-moving operations (migrations, conversions) running at once in the cluster.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    max_migrations: u16,
    /// Most data-moving operations running at once on one node (as source or target).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    max_migrations_per_node: u16,
    /// How often the evictor looks for cordoned nodes whose volumes must move off
    /// (a node labelled hwameistor.io/eviction=disable is left alone).
    #[arg(long, default_value = "5s", value_parser = hwameistor_api::duration::parse_duration)]
    evictor_tick: Duration,
    /// Volume groups (LocalVolumeGroup) follow pods and volumes through watches; this is how
    /// often they are brought up to date besides (and retried after a failed pass).
    #[arg(long, default_value = "60s", value_parser = hwameistor_api::duration::parse_duration)]
    group_interval: Duration,
    /// Run without the evictor (cordoned nodes keep their volumes).
    #[arg(long)]
    no_evictor: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
        .map_err(|e: volume_reconciler::ScopeError| e.to_string())
}

/// What CSI Probe answers: the same health as /readyz. An API server not reached since
/// start is "still starting" (ready: false); anything else unhealthy is FailedPrecondition.
fn probe_readiness(health: &Health) -> Readiness {
    match health.readiness() {
        Ok(()) => Readiness::Ready,
        Err(e @ Unhealthy::ApiNeverReached { .. }) => Readiness::Starting(e.to_string()),
        Err(e) => Readiness::Unhealthy(e.to_string()),
    }
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
    let mut config = ElectorConfig::new(&args.namespace, &args.lease_name, "");
    config.lease_duration = args.lease_duration;
    config.renew_deadline = args.renew_deadline;
    config.retry_period = args.retry_period;
    config
        .validate()
        .context("--lease-duration, --renew-deadline and --retry-period")?;
    let client = hwameistor_api::client::client(args.kubeconfig.as_deref()).await?;
    let identity = match args.identity.clone() {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "hwameistor-controller".into()),
    };
    tracing::info!(%identity, version = env!("CARGO_PKG_VERSION"), "controller starting");

    config.identity = identity.clone();

    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(HealthLimits {
        // The lease traffic succeeds every retry period when the API server answers; an
        // outage shorter than a lease duration does not make the instance unready.
        api_fresh_for: args.lease_duration,
        // One election round is a retry-period sleep and a request bounded by the renew
        // deadline; twice that without a report means the loop is stuck.
        election_stale_after: 2 * (args.retry_period + args.renew_deadline),
    }));
    let listener = metrics::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let mut metrics_task = tokio::spawn(metrics::serve(listener, metrics.clone(), health.clone()));
    // Pool gauges on every instance, leader or not: they only read.
    tokio::spawn(hwameistor_controller::pool_metrics::run(
        client.clone(),
        metrics.clone(),
    ));

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
        identity: IdentityService::new(true, {
            let health = health.clone();
            Arc::new(move || probe_readiness(&health))
        }),
        controller: Some(ControllerService::new(client.clone(), timeouts)),
        node: None,
    };
    let disk_identity = args.disk_csi_endpoint.clone().map(|endpoint| {
        let health = health.clone();
        let identity = IdentityService::named(
            DISK_DRIVER_NAME,
            true,
            Arc::new(move || probe_readiness(&health)),
        );
        (endpoint, identity)
    });
    let endpoint = args.csi_endpoint.clone();
    let mut csi = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        let disk_stop = stopped(stop_rx.clone());
        let disk_client = client.clone();
        async move {
            let lvm = server::serve(&endpoint, services, stop);
            let disk = async move {
                match disk_identity {
                    Some((endpoint, identity)) => {
                        server::serve_disk_controller(
                            &endpoint,
                            identity,
                            DiskControllerService::new(disk_client, timeouts),
                            disk_stop,
                        )
                        .await
                    }
                    None => std::future::pending().await,
                }
            };
            // Either server ending ends both: the container restarts whole.
            tokio::select! {
                r = lvm => r,
                r = disk => r,
            }
        }
    });

    let ctx = volume_reconciler::Context::new_scoped(
        client.clone(),
        &identity,
        metrics.clone(),
        Policy {
            max_volumes_per_pool: args.max_volumes_per_pool,
        },
        args.scope_selector.clone(),
    );
    let elector = Elector::new(client, config).with_health(health.clone());
    let failover_cfg = FailoverConfig {
        namespace: args.namespace.clone(),
        grace: args.failover_grace,
        tick: args.failover_tick,
    };
    let op_settings = OperationSettings {
        ttl: args.operation_ttl,
        limits: slots::Limits {
            cluster: usize::from(args.max_migrations),
            per_node: usize::from(args.max_migrations_per_node),
        },
    };
    let (evictor_tick, no_evictor) = (args.evictor_tick, args.no_evictor);
    let group_interval = args.group_interval;
    let lead = move || {
        let (ctx, cfg) = (ctx.clone(), failover_cfg.clone());
        async move {
            let evict = {
                let ctx = ctx.clone();
                async move {
                    if no_evictor {
                        std::future::pending::<()>().await
                    } else {
                        evictor::run(ctx, evictor_tick).await
                    }
                }
            };
            // All run while this instance leads; none ends on its own.
            tokio::join!(
                volume_reconciler::run(ctx.clone()),
                operations::run(ctx.clone(), op_settings),
                evict,
                groups::run(ctx.clone(), group_interval),
                disk_volumes::run(ctx.clone()),
                failover::run(ctx, cfg)
            );
        }
    };
    let mut election = tokio::spawn(elector.run(lead, stopped(stop_rx.clone())));

    // Anything that ends but a signal is a failure: exit non-zero so the kubelet restarts
    // the container (and counts it), instead of running on with a part missing.
    let failure: Option<anyhow::Error> = tokio::select! {
        _ = terminated() => {
            tracing::info!("terminating");
            None
        }
        r = &mut csi => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the CSI server stopped"),
            Ok(Err(e)) => anyhow::Error::new(e).context("the CSI server failed"),
            Err(e) => anyhow::Error::new(e).context("the CSI server task failed"),
        }),
        r = &mut election => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("leader election stopped without being asked to"),
            // The elector has released the lease already.
            Ok(Err(e)) => anyhow::Error::new(e),
            Err(e) => anyhow::Error::new(e).context("the leader-election task failed"),
        }),
        r = &mut metrics_task => Some(match r {
            Ok(()) => anyhow::anyhow!("the metrics endpoint stopped"),
            Err(e) => anyhow::Error::new(e).context("the metrics endpoint failed"),
        }),
    };
    let _ = stop_tx.send(true);
    if !election.is_finished() {
        // Give the elector a moment to release the lease so a standby takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut election).await;
    }
    metrics_task.abort();
    match failure {
        Some(e) => {
            tracing::error!(error = format!("{e:#}"), "controller stopping");
            Err(e)
        }
        None => Ok(()),
    }
}
