//! Run the test API server standalone until Ctrl-C, e.g. for a QEMU VM or a
//! developer's kubectl:
//! `hwameistor-testapi --bind 127.0.0.1:6443 --kubeconfig-out /tmp/kc`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use hwameistor_testapi::{ServerOptions, TestApiServer};

#[derive(Parser, Debug)]
#[command(about = "In-process Kubernetes API server for HwameiStor tests")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    bind: SocketAddr,
    /// Where to write the kubeconfig for clients.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Host clients use in the kubeconfig's server URL (10.0.2.2 from a QEMU guest).
    #[arg(long, default_value = "127.0.0.1")]
    server_host: String,
    /// Extra subject alternative names for the serving certificate.
    #[arg(long = "extra-san", default_value = "10.0.2.2")]
    extra_sans: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut extra_sans = args.extra_sans.clone();
    if !extra_sans.contains(&args.server_host) {
        extra_sans.push(args.server_host.clone());
    }
    let server = TestApiServer::start(ServerOptions {
        bind: args.bind,
        extra_sans,
        ..ServerOptions::default()
    })
    .await?;
    server.write_kubeconfig(&args.kubeconfig_out, &args.server_host)?;
    tracing::info!(
        url = %server.url(),
        kubeconfig = %args.kubeconfig_out.display(),
        "ready; Ctrl-C to stop"
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
