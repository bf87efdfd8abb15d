//! The scheduler extender process: watches the cluster and answers kube-scheduler.

use clap::Parser;
use hwameistor_api::duration::parse_duration;
use hwameistor_core::placement::Policy;
use hwameistor_scheduler_plugin::admission::WebhookSettings;
use hwameistor_scheduler_plugin::cache::{spawn_watches, Caches};
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use hwameistor_scheduler_plugin::server::{serve, TlsFiles, DEFAULT_MAX_BODY};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "hwameistor-scheduler-extender",
    version,
    about = "HwameiStor scheduler extender (filter, prioritize, bind) and admission webhook (pods get the hwameistor-scheduler; HwameiStor resources are checked)"
)]
struct Args {
    /// Address to serve on.
    #[arg(
        long,
        default_value = "0.0.0.0:8443",
        env = "HWAMEISTOR_EXTENDER_LISTEN"
    )]
    listen: SocketAddr,
    /// Serving certificate (PEM); with --tls-key, HTTPS. Re-read when the file changes.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long room stays held for a pod whose new volumes are not provisioned yet.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    reservation_ttl: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// Most volumes one pool may hold (as the controller's placement is told).
    #[arg(long)]
    max_volumes_per_pool: Option<i64>,
    /// The scheduler the admission webhook gives pods with HwameiStor volumes.
    #[arg(long, default_value = "hwameistor-scheduler")]
    scheduler_name: String,
    /// Namespaces whose pods the webhook never changes (repeatable).
    #[arg(long = "webhook-ignore-namespace", default_values_t = ["kube-system".to_string(), hwameistor_api::SYSTEM_NAMESPACE.to_string()])]
    webhook_ignore_namespaces: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let caches = Caches::new();
    spawn_watches(client.clone(), caches.clone());
    let ext = Arc::new(
        Extender::new(
            caches.clone(),
            Settings {
                reservation_ttl: args.reservation_ttl,
                policy: Policy {
                    max_volumes_per_pool: args.max_volumes_per_pool,
                },
                ..Default::default()
            },
            Some(client),
        )
        .with_webhook(WebhookSettings {
            scheduler_name: args.scheduler_name,
            ignored_namespaces: args.webhook_ignore_namespaces.into_iter().collect(),
        }),
    );
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(c), Some(k)) => Some(Arc::new(TlsFiles::new(c, k)?)),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, https = tls.is_some(), "serving; waiting for the caches");
    let ready = ext.clone();
    tokio::spawn(async move {
        caches.wait_ready().await;
        ready.set_ready();
        tracing::info!("caches synced");
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    serve(listener, ext, tls, args.max_body_bytes, rx).await;
    Ok(())
}
