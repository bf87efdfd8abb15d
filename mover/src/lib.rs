//! HwameiStor's block mover: copies a volume's block device from the node holding it (the
//! source) to another node (the target) over TCP, for volume migration.
//!
//! The target pulls: its [`Client`] connects to the source agent's [`Server`], which streams
//! the device. Both agents authenticate each other with their static node keys and the
//! operation (no secret is handed out); every chunk is authenticated and digested; all-zero
//! chunks are not sent; progress is checkpointed on the target so a copy resumes after any
//! failure; and the copy ends only when both sides digested their whole device and the
//! digests agree.

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
