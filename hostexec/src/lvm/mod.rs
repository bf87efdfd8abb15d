//! LVM as a typed service: what the node agent asks of lvm2, in lvm2's own terms.
//!
//! [`Lvm`] is the boundary: the agent decides (with `hwameistor-core`) and calls these
//! operations; [`LvmCli`] carries them out with lvm2's commands through the crate's
//! [`Executor`](crate::Executor); tests use a stateful in-memory LVM that implements the
//! same trait (in `hwameistor-testkit`). Every operation does exactly one thing and never
//! forces: deciding whether it is needed is the caller's job, refusing what would lose data
//! is LVM's.
//!
//! Failures LVM reports in a way callers act on are typed ([`LvmError`]'s named variants);
//! anything else is the command's failure with its command line and stderr.

mod cli;
pub mod report;

pub use cli::LvmCli;

use crate::ExecError;
use async_trait::async_trait;
use hwameistor_core::lvm::LvmState;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LvmError {
    /// A command failed in a way not classified below.
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("cannot read the report of `{command}`: {reason}")]
    Report { command: String, reason: String },
    #[error("volume group {0} does not exist")]
    NoSuchVg(String),
    #[error("logical volume {vg}/{lv} already exists")]
    LvExists { vg: String, lv: String },
    #[error("logical volume {vg}/{lv} does not exist")]
    NoSuchLv { vg: String, lv: String },
    #[error("volume group {vg} has not enough free space for {need} bytes: {detail}")]
    InsufficientSpace {
        vg: String,
        need: i64,
        detail: String,
    },
    #[error("logical volume {vg}/{lv} is open; it cannot be removed while in use")]
    LvInUse { vg: String, lv: String },
    /// LVM refused to make a device a physical volume or to add it to a group: it carries a
    /// signature, is in use, or belongs to another group.
    #[error("LVM refused device {device}: {reason}")]
    DeviceRefused { device: String, reason: String },
}

/// The LVM operations the node agent uses.
#[async_trait]
pub trait Lvm: Send + Sync + 'static {
    /// Every physical volume, volume group and logical volume of the node; a logical volume
    /// spanning several disks is one entry listing each disk once.
    async fn report(&self) -> Result<LvmState, LvmError>;
    /// Makes `device` a physical volume. Never forced: a device that carries any signature
    /// is refused ([`LvmError::DeviceRefused`]), so a disk that gained data is never wiped.
    async fn create_pv(&self, device: &str) -> Result<(), LvmError>;
    /// Creates volume group `vg` from physical volumes `devices`.
    async fn create_vg(&self, vg: &str, devices: &[String]) -> Result<(), LvmError>;
    /// Adds physical volumes `devices` to volume group `vg`.
    async fn extend_vg(&self, vg: &str, devices: &[String]) -> Result<(), LvmError>;
    /// Creates `vg/name` of `bytes` (a whole number of extents), active, tagged as ours,
    /// with any old signature on its extents wiped so no stale filesystem shows through.
    async fn create_lv(&self, vg: &str, name: &str, bytes: i64) -> Result<(), LvmError>;
    /// Grows `vg/name` to `bytes` (a whole number of extents).
    async fn extend_lv(&self, vg: &str, name: &str, bytes: i64) -> Result<(), LvmError>;
    /// Activates `vg/name` so its device node exists.
    async fn activate_lv(&self, vg: &str, name: &str) -> Result<(), LvmError>;
    /// Removes `vg/name`; an open volume is refused ([`LvmError::LvInUse`]).
    async fn remove_lv(&self, vg: &str, name: &str) -> Result<(), LvmError>;
    /// Creates thin pool `vg/pool` of `data` bytes with `metadata` bytes of metadata (LVM
    /// keeps a spare of the metadata beside it), tagged as ours. New blocks are zeroed
    /// before use, so a thin volume never reads another's old data. Its data grows with
    /// [`Lvm::extend_lv`].
    async fn create_thin_pool(
        &self,
        vg: &str,
        pool: &str,
        data: i64,
        metadata: i64,
    ) -> Result<(), LvmError>;
    /// Grows thin pool `vg/pool`'s metadata to `metadata` bytes.
    async fn extend_thin_metadata(
        &self,
        vg: &str,
        pool: &str,
        metadata: i64,
    ) -> Result<(), LvmError>;
    /// Creates thin volume `vg/name` of `bytes` (virtual) in thin pool `vg/pool`, active,
    /// tagged as ours; it grows with [`Lvm::extend_lv`].
    async fn create_thin_lv(
        &self,
        vg: &str,
        pool: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(), LvmError>;
    /// Creates `vg/name`, a read-only snapshot of `vg/origin`, active, tagged as ours: a
    /// thin snapshot (in the origin's thin pool, no space of its own) when `cow` is `None`,
    /// else a copy-on-write snapshot with `cow` bytes (whole extents) for the origin's
    /// blocks that change after it (past that, LVM marks it invalid). The origin is
    /// suspended for the instant it is taken, which flushes what was written to it.
    async fn create_snapshot(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        cow: Option<i64>,
    ) -> Result<(), LvmError>;
    /// Creates `vg/name`, a writable thin snapshot of thin volume `vg/source` (a volume
    /// restored from a thin snapshot: blocks shared until written), active, tagged as ours.
    async fn clone_thin(&self, vg: &str, source: &str, name: &str) -> Result<(), LvmError>;
}
