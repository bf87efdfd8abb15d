//! What the source's server asks its agent before serving a copy: whether the operation
//! exists, which device it reads and which node's key may fetch it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::crypto::CopyIdentity;
use crate::key::PublicKey;

/// A target's request, as its Hello announced it (not yet authenticated: the grant's key
/// decides whether it is who it says).
#[derive(Clone, Debug)]
pub struct CopyRequest {
    pub identity: CopyIdentity,
    /// The chunk size the target cuts the copy into (it owns the checkpoint, which depends
    /// on it).
    pub chunk_size: u32,
    pub peer_addr: SocketAddr,
}

/// What the agent allows for a request.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The device to read (opened read-only).
    pub device: PathBuf,
    /// The operation's uid, volume and target node as the API has them: a request naming
    /// others is refused with a clear reason.
    pub uid: String,
    pub volume: String,
    pub target_node: String,
    /// The target node's published key: only that node can complete the handshake.
    pub target_key: PublicKey,
    /// Bytes to copy; `None`: the whole device.
    pub size: Option<u64>,
}

/// Why a request is refused; travels to the peer as a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The peers speak different protocol versions.
    UnsupportedVersion,
    UnknownOperation,
    UidMismatch,
    /// The request names another volume, source or target node than the operation.
    WrongCopy,
    /// The operation is known but the source is not ready to serve it yet (retryable).
    NotReady,
    /// The agent refuses for a reason of its own.
    Denied,
    /// The source device is empty: nothing to copy is most likely a wrong device.
    EmptySource,
    /// The source device cannot be opened or read (retryable: an LV may be activating).
    Device,
    /// The server serves as many connections as it allows (retryable).
    Busy,
    /// The peer's proof did not verify.
    Authentication,
    /// The peer sent something the protocol does not allow.
    Protocol,
    /// The request is malformed (e.g. an invalid chunk size).
    InvalidRequest,
    /// A code this version does not know (a newer peer).
    Other(u8),
}

impl RefusalKind {
    pub fn code(self) -> u8 {
        match self {
            RefusalKind::UnsupportedVersion => 1,
            RefusalKind::UnknownOperation => 2,
            RefusalKind::UidMismatch => 3,
            RefusalKind::WrongCopy => 4,
            RefusalKind::NotReady => 5,
            RefusalKind::Denied => 6,
            RefusalKind::EmptySource => 7,
            RefusalKind::Device => 8,
            RefusalKind::Busy => 9,
            RefusalKind::Authentication => 10,
            RefusalKind::Protocol => 11,
            RefusalKind::InvalidRequest => 12,
            RefusalKind::Other(code) => code,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code {
            1 => RefusalKind::UnsupportedVersion,
            2 => RefusalKind::UnknownOperation,
            3 => RefusalKind::UidMismatch,
            4 => RefusalKind::WrongCopy,
            5 => RefusalKind::NotReady,
            6 => RefusalKind::Denied,
            7 => RefusalKind::EmptySource,
            8 => RefusalKind::Device,
            9 => RefusalKind::Busy,
            10 => RefusalKind::Authentication,
            11 => RefusalKind::Protocol,
            12 => RefusalKind::InvalidRequest,
            other => RefusalKind::Other(other),
        }
    }

    /// Whether asking again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            RefusalKind::NotReady | RefusalKind::Device | RefusalKind::Busy | RefusalKind::Protocol
        )
    }
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalKind::UnsupportedVersion => f.write_str("unsupported protocol version"),
            RefusalKind::UnknownOperation => f.write_str("unknown operation"),
            RefusalKind::UidMismatch => f.write_str("operation uid mismatch"),
            RefusalKind::WrongCopy => f.write_str("not this operation's copy"),
            RefusalKind::NotReady => f.write_str("source not ready"),
            RefusalKind::Denied => f.write_str("denied"),
            RefusalKind::EmptySource => f.write_str("empty source device"),
            RefusalKind::Device => f.write_str("source device unusable"),
            RefusalKind::Busy => f.write_str("busy"),
            RefusalKind::Authentication => f.write_str("authentication failed"),
            RefusalKind::Protocol => f.write_str("protocol violation"),
            RefusalKind::InvalidRequest => f.write_str("invalid request"),
            RefusalKind::Other(code) => write!(f, "refusal code {code}"),
        }
    }
}

/// A refusal with the reason shown to the peer (and in its error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// Decides whether the server serves a request; the agent implements it from the API.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(
        &self,
        request: &CopyRequest,
    ) -> impl Future<Output = Result<Grant, Refusal>> + Send;
}

/// Grants from a fixed table keyed by operation name: for tests, benchmarks and tools.
#[derive(Clone, Debug, Default)]
pub struct StaticAuthorizer {
    grants: HashMap<String, Grant>,
}

impl StaticAuthorizer {
    pub fn new() -> Self {
        StaticAuthorizer::default()
    }

    pub fn grant(mut self, operation: impl Into<String>, grant: Grant) -> Self {
        self.grants.insert(operation.into(), grant);
        self
    }
}

impl Authorizer for StaticAuthorizer {
    async fn authorize(&self, request: &CopyRequest) -> Result<Grant, Refusal> {
        self.grants
            .get(&request.identity.operation)
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    RefusalKind::UnknownOperation,
                    format!("no operation {:?} here", request.identity.operation),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(RefusalKind::from_code(code).code(), code);
        }
    }
}
