//! The errors the mover reports, and which of them a retry can cure.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::auth::RefusalKind;
use crate::checkpoint::CheckpointError;
use crate::digest::Digest;
use crate::frame::FrameError;
use crate::key::KeyError;

/// The two ends of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node holding the data, running the server.
    Source,
    /// The node receiving the copy, running the client.
    Target,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Target => "target",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("stream from the {peer}: {error}")]
    Frame {
        peer: Role,
        #[source]
        error: FrameError,
    },
    #[error("the {peer} broke the protocol: {message}")]
    Protocol { peer: Role, message: String },
    #[error("the {peer} could not prove it holds this copy's key (another node key, operation, uid, node or volume)")]
    Authentication { peer: Role },
    #[error("the peer's public key is of low order (no shared secret)")]
    WeakPeerKey,
    #[error("refused by the {peer}: {kind}: {message}")]
    RefusedByPeer {
        peer: Role,
        kind: RefusalKind,
        message: String,
    },
    #[error("refused the {peer}: {kind}: {message}")]
    Refused {
        peer: Role,
        kind: RefusalKind,
        message: String,
    },
    #[error("chunk size {0} is not a multiple of 4 KiB between 4 KiB and 64 MiB")]
    InvalidChunkSize(u32),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("the target device holds {target} bytes, the source {needed}")]
    TargetTooSmall { target: u64, needed: u64 },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no randomness from the OS: {0}")]
    Random(String),
    #[error("the copy differs from the source: the source's digest is {source_digest}, the target's {target_digest}")]
    DigestMismatch {
        source_digest: Digest,
        target_digest: Digest,
    },
    #[error("{what}: nothing from the {peer} for {after:?}")]
    Timeout {
        peer: Role,
        what: &'static str,
        after: Duration,
    },
    #[error("chunk {index} arrived damaged {times} times in a row")]
    Damaged { index: u64, times: u32 },
    #[error("cancelled")]
    Cancelled,
    #[error("gave up after {attempts} attempts in a row without progress: {last}")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<MoverError>,
    },
}

impl MoverError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        MoverError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether reconnecting and resuming may succeed: the link, the peer's process or its
    /// readiness failed, not the copy's identity, keys or data.
    pub fn is_retryable(&self) -> bool {
        match self {
            MoverError::Io { .. }
            | MoverError::Frame { .. }
            | MoverError::Protocol { .. }
            | MoverError::Timeout { .. }
            | MoverError::Damaged { .. } => true,
            MoverError::RefusedByPeer { kind, .. } => kind.is_retryable(),
            MoverError::Checkpoint(e) => e.is_retryable(),
            MoverError::Authentication { .. }
            | MoverError::WeakPeerKey
            | MoverError::Refused { .. }
            | MoverError::InvalidChunkSize(_)
            | MoverError::InvalidConfig(_)
            | MoverError::TargetTooSmall { .. }
            | MoverError::Key(_)
            | MoverError::Random(_)
            | MoverError::DigestMismatch { .. }
            | MoverError::Cancelled
            | MoverError::GaveUp { .. } => false,
        }
    }
}
