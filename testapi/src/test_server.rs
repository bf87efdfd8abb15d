//! [`TestApiServer`]: starting, addressing and stopping the in-process server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::errors::Error;
use crate::kubeconfig;
use crate::server::{self, Shared};
use crate::store::{lock, SharedStore, Store};
use crate::tls;
use crate::util::random_token;

/// How to run a [`TestApiServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Subject alternative names besides 127.0.0.1 and localhost (IPs or DNS
    /// names). 10.0.2.2 is how a QEMU user-mode guest reaches the host.
    pub extra_sans: Vec<String>,
    /// Watch events kept per resource; resuming from older revisions is 410 Gone.
    pub history: usize,
    /// How often watches that allow bookmarks receive a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            extra_sans: vec!["10.0.2.2".to_string()],
            history: 10_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// An in-process Kubernetes API server over HTTPS with bearer-token auth.
pub struct TestApiServer {
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    store: SharedStore,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl TestApiServer {
    /// Generate TLS material and a token, bind, and start serving.
    pub async fn start(opts: ServerOptions) -> Result<Self, Error> {
        let tls = tls::generate(&opts.extra_sans)?;
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let token = random_token();
        let store: SharedStore = Arc::new(Mutex::new(Store::new(opts.history)));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: store.clone(),
            token: token.clone(),
            bookmark_interval: opts.bookmark_interval,
            shutdown: shutdown_rx,
            server_address: format!("{}:{}", client_ip(addr.ip()), addr.port()),
        });
        let task = tokio::spawn(server::serve(listener, tls.server_config, shared));
        tracing::info!(%addr, "hwameistor-testapi serving");
        Ok(TestApiServer {
            addr,
            ca_pem: tls.ca_pem,
            token,
            store,
            shutdown_tx,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (the bound IP, or loopback for a wildcard bind).
    pub fn url(&self) -> String {
        kubeconfig::server_url(&client_ip(self.addr.ip()).to_string(), self.addr.port())
    }

    /// The PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token clients must present.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A full kubeconfig pointing at `https://{server_host}:{port}`.
    pub fn kubeconfig_yaml(&self, server_host: &str) -> String {
        kubeconfig::render(
            &kubeconfig::server_url(server_host, self.addr.port()),
            &self.ca_pem,
            &self.token,
        )
    }

    pub fn write_kubeconfig(&self, path: &Path, server_host: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(server_host))
    }

    /// A kube client built from the kubeconfig (real TLS and token path).
    /// Watch events (not bookmarks) delivered so far by every test API server of this
    /// process (benchmarks take differences).
    pub fn watch_events_sent(&self) -> u64 {
        crate::watch::EVENTS_SENT.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kc = Kubeconfig::from_yaml(&self.kubeconfig_yaml("127.0.0.1"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Drop all watch history: resourceVersions before now become 410 Gone.
    pub fn compact(&self) {
        lock(&self.store).compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.store).current_rv()
    }

    /// Stop accepting, end watches, and wait for connections to close.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        // A server dropped without shutdown() still stops serving.
        let _ = self.shutdown_tx.send(true);
    }
}

fn client_ip(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        ip
    }
}
