//! HwameiStor's block mover: copies a volume's block device from the node holding it (the
//! source) to another node (the target) over TCP, for volume migration.
//!
//! The target pulls: its [`Client`] connects to the source agent's [`Server`], which streams
//! the device. Both agents authenticate each other with their static node keys and the
//! operation (no secret is handed out); every chunk is authenticated and digested; all-zero
//! chunks are not sent; progress is checkpointed on the target so a copy resumes after any
//! failure; and the copy ends only when both sides digested their whole device and the
//! digests agree.
//!
//! An agent runs one server and one client per copy it receives:
//!
//! ```no_run
//! use std::sync::Arc;
//! use hwameistor_mover::*;
//!
//! # async fn agent(authorizer: StaticAuthorizer, source_key: PublicKey) -> Result<(), Box<dyn std::error::Error>> {
//! let key = Arc::new(NodeKey::load_or_generate("/var/lib/hwameistor/mover.key".as_ref())?);
//! // Published in the node's LocalStorageNode status with the endpoint.
//! let _public = key.public_key().to_base64();
//!
//! // The source side: serves every copy that reads from this node.
//! let server = Server::new("node-a", key.clone(), authorizer, ServerOptions::default());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:26700").await?;
//! let shutdown = CancellationToken::new();
//! tokio::spawn({
//!     let shutdown = shutdown.clone();
//!     async move { server.serve(listener, shutdown).await }
//! });
//!
//! // The target side of one copy.
//! let identity = CopyIdentity {
//!     operation: "migrate-pvc-1".into(),
//!     uid: "6f1c2b9e-…".into(),
//!     volume: "pvc-1".into(),
//!     source_node: "node-a".into(),
//!     target_node: "node-b".into(),
//! };
//! let mut config = ClientConfig::new(identity, "node-a.storage.example:26700", source_key, "/dev/LocalStorage_PoolHDD/pvc-1");
//! config.target_zeroed = TargetZeroed::Yes; // a fresh thin LV reads as zeros
//! let store = Arc::new(FileCheckpointStore::new("/var/lib/hwameistor/copies/pvc-1.json"));
//! let client = Client::new(config, key, store)?;
//! let mut progress = client.progress(); // report it to the replica's status
//! let outcome = client.run(CancellationToken::new()).await?;
//! println!("verified {} bytes, digest {}", outcome.bytes, outcome.digest);
//! # let _ = progress.changed().await;
//! # Ok(())
//! # }
//! ```

mod auth;
mod checkpoint;
mod client;
mod crypto;
mod device;
mod digest;
mod error;
mod frame;
mod fsutil;
mod handshake;
mod key;
mod layout;
mod pool;
mod progress;
mod ratelimit;
mod server;
mod sys;
mod task;
pub mod testing;
mod writer;

pub use auth::{Authorizer, CopyRequest, Grant, Refusal, RefusalKind, StaticAuthorizer};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointStore, FileCheckpointStore};
pub use client::{Client, ClientConfig, Outcome, RetryPolicy};
pub use crypto::CopyIdentity;
pub use digest::Digest;
pub use error::{MoverError, Role};
pub use frame::{FrameError, PROTOCOL_VERSION};
pub use key::{KeyError, NodeKey, PublicKey};
pub use layout::{validate_chunk_size, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE};
pub use progress::{Phase, Progress};
pub use server::{FaultInjection, Served, Server, ServerOptions};
pub use tokio_util::sync::CancellationToken;
pub use writer::TargetZeroed;
