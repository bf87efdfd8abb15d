//! DRBD (8.4) as a typed service: what the node agent asks of the replication layer, in
//! DRBD's own terms.
//!
//! [`Drbd`] is the boundary: the agent decides (with `hwameistor-core`) and calls these
//! operations; the command-line implementation drives `drbdadm`/`drbdsetup` through the
//! crate's [`Executor`](crate::Executor) ([`DrbdCli`], with its own configuration directory
//! written through [`ConfigFiles`]); tests use a stateful in-memory DRBD that
//! implements the same trait (in `hwameistor-testkit`). Every operation does exactly one
//! thing, and none discards data on its own: metadata is never overwritten, `primary` is
//! forced only when the caller says so, and `connect` discards local data only when the
//! caller names it (split-brain resolution the operator chose).
//!
//! Failures callers act on are typed ([`DrbdError`]'s named variants); anything else is the
//! command's failure with its command line and stderr.

mod cli;
mod files;
pub mod status;

pub use cli::{DrbdCli, DEFAULT_CONFIG_DIR, MAIN_CONFIG_FILE};
pub use files::{ConfigFiles, LocalConfigFiles};

use crate::ExecError;
use async_trait::async_trait;
use hwameistor_core::drbd::{ResourceConfig, ResourceStatus};
use thiserror::Error;

/// The DRBD kernel module the node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDrbd {
    /// e.g. `8.4.11`.
    pub version: String,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DrbdError {
    /// A command failed in a way not classified below.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The kernel has no DRBD module loaded (and loading it failed).
    #[error("the DRBD kernel module is not available on this node: {detail}; install the kernel's drbd module (DRBD 8.4) and drbd-utils, or do not place HA volumes here")]
    NotLoaded { detail: String },
    /// The kernel's DRBD is not a version this agent drives.
    #[error("DRBD {found} is loaded, but this agent drives DRBD 8.4 only")]
    UnsupportedVersion { found: String },
    #[error("DRBD resource {0} is not configured or not up on this node")]
    NoSuchResource(String),
    /// `create-md` found metadata already there; it is never overwritten.
    #[error("DRBD resource {0} already has metadata")]
    MetadataExists(String),
    /// Demoting or taking down refused: the device is open (mounted, or a pod uses it).
    #[error("DRBD resource {0} is in use (its device is open)")]
    InUse(String),
    /// Promoting refused because the peer is primary (one primary at a time).
    #[error("DRBD resource {0}: the peer is primary")]
    PeerIsPrimary(String),
    /// Promoting refused because this side has no up-to-date data.
    #[error("DRBD resource {0}: no up-to-date data to promote (local disk is not UpToDate)")]
    NotUpToDate(String),
    #[error("cannot read DRBD state from `{command}`: {reason}")]
    Parse { command: String, reason: String },
    #[error("cannot write DRBD configuration {path}: {reason}")]
    Config { path: String, reason: String },
}

/// The DRBD operations the node agent uses.
#[async_trait]
pub trait Drbd: Send + Sync + 'static {
    /// The loaded kernel module (loading it when it is not); refuses clearly where DRBD is
    /// missing or not 8.4.
    async fn kernel(&self) -> Result<KernelDrbd, DrbdError>;
    /// Writes the resource file for `cfg` (atomically); `true` when its content changed.
    async fn write_config(&self, cfg: &ResourceConfig) -> Result<bool, DrbdError>;
    /// Removes resource `name`'s file; no error when it is already gone.
    async fn remove_config(&self, name: &str) -> Result<(), DrbdError>;
    /// Whether resource `name`'s metadata device carries DRBD metadata.
    async fn has_metadata(&self, name: &str) -> Result<bool, DrbdError>;
    /// Creates metadata on the resource's (external) metadata device. Refuses
    /// ([`DrbdError::MetadataExists`]) rather than overwrite metadata that is there.
    async fn create_metadata(&self, name: &str) -> Result<(), DrbdError>;
    /// Wipes the resource's metadata (the resource must be down).
    async fn wipe_metadata(&self, name: &str) -> Result<(), DrbdError>;
    /// Attaches the disks and connects (`drbdadm up`). A file that names no peer (a
    /// resource on one node) is attached and left StandAlone.
    async fn up(&self, name: &str) -> Result<(), DrbdError>;
    /// Makes the running resource match its file (`drbdadm adjust`): connects to a peer
    /// the file names now, drops a connection it no longer names.
    async fn adjust(&self, name: &str) -> Result<(), DrbdError>;
    /// Connects to the peer; with `discard_my_data` this side's changes since the split
    /// are thrown away and it resyncs from the peer (split-brain resolution only).
    async fn connect(&self, name: &str, discard_my_data: bool) -> Result<(), DrbdError>;
    /// Drops the connection to the peer (the resource stays up, StandAlone).
    async fn disconnect(&self, name: &str) -> Result<(), DrbdError>;
    /// Promotes. `force` makes Inconsistent data UpToDate: only for the first primary of a
    /// brand-new volume whose both sides never held data.
    async fn primary(&self, name: &str, force: bool) -> Result<(), DrbdError>;
    /// Demotes; refused ([`DrbdError::InUse`]) while the device is open.
    async fn secondary(&self, name: &str) -> Result<(), DrbdError>;
    /// Marks the local disk Outdated (it must not become primary before a resync).
    async fn outdate(&self, name: &str) -> Result<(), DrbdError>;
    /// Resumes frozen I/O after fencing recorded the peer outdated.
    async fn resume_io(&self, name: &str) -> Result<(), DrbdError>;
    /// Starts a new data generation with a cleared bitmap: skips the initial sync of a new
    /// resource whose both sides provably read the same (both zeroed).
    async fn skip_initial_sync(&self, name: &str) -> Result<(), DrbdError>;
    /// Grows the device to its backing disks' size (both sides' disks grown first). With
    /// `alone` (a resource without peer) DRBD is told the peer has room, as there is none.
    async fn resize(&self, name: &str, alone: bool) -> Result<(), DrbdError>;
    /// Takes the resource down (`drbdadm down`); refused ([`DrbdError::InUse`]) while open.
    async fn down(&self, name: &str) -> Result<(), DrbdError>;
    /// The state of every resource the kernel has.
    async fn status(&self) -> Result<Vec<ResourceStatus>, DrbdError>;
}
