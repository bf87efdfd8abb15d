//! Fixtures: two nodes' keys, a source file, a target file, a server on loopback, a client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hwameistor_mover::{
    CancellationToken, Checkpoint, CheckpointStore, Client, ClientConfig, CopyIdentity,
    FileCheckpointStore, Grant, MoverError, NodeKey, Outcome, Progress, RetryPolicy, Server,
    ServerOptions, StaticAuthorizer, TargetZeroed,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const CHUNK: usize = 64 * 1024;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Reproducible pseudo-random bytes, different per seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    hwameistor_mover::testing::fill_random(&mut out, seed);
    out
}

/// `chunks` chunks of random data with the listed chunks all zeros, plus `tail` random bytes.
pub fn device_image(chunks: usize, zero: &[usize], tail: usize, seed: u64) -> Vec<u8> {
    let mut data = random_bytes(chunks * CHUNK + tail, seed);
    for &i in zero {
        data[i * CHUNK..(i + 1) * CHUNK].fill(0);
    }
    data
}

/// The device digest computed here, independently of the crate: BLAKE3 over the
/// concatenated BLAKE3 digests of the chunks.
pub fn expected_digest(data: &[u8], chunk: usize) -> String {
    let mut outer = blake3::Hasher::new();
    for c in data.chunks(chunk) {
        outer.update(blake3::hash(c).as_bytes());
    }
    outer.finalize().to_hex().to_string()
}

pub struct Fixture {
    /// Holds the files; removed with the fixture.
    pub _dir: tempfile::TempDir,
    pub source_key: Arc<NodeKey>,
    pub target_key: Arc<NodeKey>,
    pub identity: CopyIdentity,
    pub source: PathBuf,
    pub target: PathBuf,
    pub checkpoint: PathBuf,
}

impl Fixture {
    /// A source holding `data` and a target of the same size reading as zeros.
    pub fn new(data: &[u8]) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("source.img");
        let target = dir.path().join("target.img");
        std::fs::write(&source, data)?;
        std::fs::File::create(&target)?.set_len(data.len() as u64)?;
        Ok(Fixture {
            checkpoint: dir.path().join("copy.checkpoint.json"),
            _dir: dir,
            source_key: Arc::new(NodeKey::generate()?),
            target_key: Arc::new(NodeKey::generate()?),
            identity: CopyIdentity {
                operation: "migrate-pvc-1".into(),
                uid: "6f1c2b9e-0000-4000-8000-000000000001".into(),
                volume: "pvc-1".into(),
                source_node: "node-a".into(),
                target_node: "node-b".into(),
            },
            source,
            target,
        })
    }

    pub fn grant(&self) -> Grant {
        Grant {
            device: self.source.clone(),
            uid: self.identity.uid.clone(),
            volume: self.identity.volume.clone(),
            target_node: self.identity.target_node.clone(),
            target_key: self.target_key.public_key(),
            size: None,
        }
    }

    pub fn authorizer(&self) -> StaticAuthorizer {
        StaticAuthorizer::new().grant(self.identity.operation.clone(), self.grant())
    }

    pub fn server(&self, options: ServerOptions) -> Server<StaticAuthorizer> {
        Server::new(
            self.identity.source_node.clone(),
            self.source_key.clone(),
            self.authorizer(),
            options,
        )
    }

    /// Small chunks, quick retries.
    pub fn config(&self, addr: SocketAddr) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.identity.clone(),
            addr.to_string(),
            self.source_key.public_key(),
            &self.target,
        );
        config.chunk_size = CHUNK as u32;
        config.target_zeroed = TargetZeroed::No;
        config.connect_timeout = Duration::from_secs(5);
        config.idle_timeout = Duration::from_secs(10);
        config.retry = RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_attempts: 20,
        };
        config
    }

    pub fn client(&self, config: ClientConfig) -> Result<Client, hwameistor_mover::MoverError> {
        Client::new(
            config,
            self.target_key.clone(),
            Arc::new(FileCheckpointStore::new(&self.checkpoint)),
        )
    }

    /// Runs a copy to its end.
    pub async fn copy(&self, config: ClientConfig) -> Result<Outcome, MoverError> {
        self.client(config)?.run(CancellationToken::new()).await
    }

    /// Starts a copy in a task of its own.
    pub fn copy_in_background(&self, config: ClientConfig) -> Result<Background, MoverError> {
        let client = self.client(config)?;
        let progress = client.progress();
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let copy = tokio::spawn(async move { client.run(token).await });
        Ok(Background {
            copy,
            progress,
            cancel,
        })
    }

    /// A server for this fixture's source on a free loopback port.
    pub async fn start(&self, options: ServerOptions) -> std::io::Result<Running> {
        Running::start(self.server(options), "127.0.0.1:0").await
    }

    pub fn target_bytes(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.target)
    }

    pub fn stored_checkpoint(&self) -> Result<Checkpoint, Box<dyn std::error::Error>> {
        Ok(FileCheckpointStore::new(&self.checkpoint)
            .load()?
            .ok_or("no checkpoint")?)
    }
}

/// A copy running in a task, its progress, and what cancels it.
pub struct Background {
    pub copy: JoinHandle<Result<Outcome, MoverError>>,
    pub progress: watch::Receiver<Progress>,
    pub cancel: CancellationToken,
}

/// A server running on loopback until stopped.
pub struct Running {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    pub async fn start(server: Server<StaticAuthorizer>, addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let handle = tokio::spawn(async move { server.serve(listener, token).await });
        Ok(Running {
            addr,
            cancel,
            handle,
        })
    }

    /// Stops the server and drops every connection it had (as if the agent died).
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.handle.await;
    }
}
