//! Crash points: named places where a test can make the agent stop dead, as a power cut or
//! an OOM kill would, to prove that every operation resumes correctly from there.
//!
//! Two ways to arm one:
//! - `HWAMEISTOR_CRASH_POINT=<name>` aborts the process at that point (VM tests restart the
//!   real binary afterwards);
//! - [`CrashPoints::for_test`] makes the reconcile that reaches the point report it and
//!   never resume, so an in-process test can drop the whole agent at that instant and start
//!   a fresh one on the same API server and the same (fake) host.
//!
//! Unarmed (production), a point costs one comparison.

use std::future::pending;
use tokio::sync::mpsc;

/// Every place the agent can be stopped at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// A claim's chosen disks are recorded; none is bound yet.
    ClaimAfterChoose,
    /// One disk's claimRef is set.
    ClaimAfterBindDisk,
    /// A disk was made a physical volume; it is in no volume group yet.
    LvmAfterPvcreate,
    /// A replica's finalizer is set; no logical volume exists yet.
    ReplicaAfterFinalizer,
    /// The logical volume exists; the replica's status does not say so yet.
    LvmAfterLvcreate,
    /// The logical volume is gone; the replica still holds its finalizer.
    LvmAfterLvremove,
    /// A group's thin pool was created for a thin volume; the volume is not made yet.
    LvmAfterThinPool,
    /// A snapshot's logical volume was taken; its status does not say so yet.
    SnapshotAfterLvcreate,
    /// A restored thin volume was cloned from its snapshot; not grown, and its replica's
    /// status does not say it is filled yet.
    RestoreAfterClone,
    /// An HA replica's DRBD metadata is created; the resource is not up.
    HaAfterMetadata,
    /// An HA replica's DRBD resource is up; its status does not say so yet.
    HaAfterUp,
    /// The first primary of a new HA volume was forced; it is still primary.
    HaAfterForcedPrimary,
    /// A lost peer is recorded outdated on the volume; this side's I/O is still frozen.
    HaAfterFence,
    /// An unused HA volume's device was grown by promoting this replica; it is still primary.
    HaAfterResize,
    /// An HA replica's resource is down; its metadata, file and volumes are still there.
    HaAfterDown,
    /// An HA replica's metadata is wiped; its file and volumes are still there.
    HaAfterWipe,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 16] = [
        CrashPoint::ClaimAfterChoose,
        CrashPoint::ClaimAfterBindDisk,
        CrashPoint::LvmAfterPvcreate,
        CrashPoint::ReplicaAfterFinalizer,
        CrashPoint::LvmAfterLvcreate,
        CrashPoint::LvmAfterLvremove,
        CrashPoint::LvmAfterThinPool,
        CrashPoint::SnapshotAfterLvcreate,
        CrashPoint::RestoreAfterClone,
        CrashPoint::HaAfterMetadata,
        CrashPoint::HaAfterUp,
        CrashPoint::HaAfterForcedPrimary,
        CrashPoint::HaAfterFence,
        CrashPoint::HaAfterResize,
        CrashPoint::HaAfterDown,
        CrashPoint::HaAfterWipe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::ClaimAfterChoose => "claim-after-choose",
            CrashPoint::ClaimAfterBindDisk => "claim-after-bind-disk",
            CrashPoint::LvmAfterPvcreate => "lvm-after-pvcreate",
            CrashPoint::ReplicaAfterFinalizer => "replica-after-finalizer",
            CrashPoint::LvmAfterLvcreate => "lvm-after-lvcreate",
            CrashPoint::LvmAfterLvremove => "lvm-after-lvremove",
            CrashPoint::LvmAfterThinPool => "lvm-after-thin-pool",
            CrashPoint::SnapshotAfterLvcreate => "snapshot-after-lvcreate",
            CrashPoint::RestoreAfterClone => "restore-after-clone",
            CrashPoint::HaAfterMetadata => "ha-after-metadata",
            CrashPoint::HaAfterUp => "ha-after-up",
            CrashPoint::HaAfterForcedPrimary => "ha-after-forced-primary",
            CrashPoint::HaAfterFence => "ha-after-fence",
            CrashPoint::HaAfterResize => "ha-after-resize",
            CrashPoint::HaAfterDown => "ha-after-down",
            CrashPoint::HaAfterWipe => "ha-after-wipe",
        }
    }

    pub fn parse(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The environment variable that arms a crash point in the process.
pub const CRASH_POINT_ENV: &str = "HWAMEISTOR_CRASH_POINT";

#[derive(Debug)]
enum Mode {
    Abort,
    Report(mpsc::UnboundedSender<CrashPoint>),
}

/// The armed crash point, if any.
#[derive(Debug)]
pub struct CrashPoints {
    armed: Option<CrashPoint>,
    mode: Mode,
}

impl CrashPoints {
    /// None armed.
    pub fn disarmed() -> Self {
        CrashPoints {
            armed: None,
            mode: Mode::Abort,
        }
    }

    /// Armed from [`CRASH_POINT_ENV`]; an unknown name is an error, so a typo in a test
    /// never silently runs without its crash.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(CRASH_POINT_ENV) {
            Ok(v) if !v.is_empty() => match CrashPoint::parse(&v) {
                Some(p) => Ok(CrashPoints {
                    armed: Some(p),
                    mode: Mode::Abort,
                }),
                None => Err(format!(
                    "{CRASH_POINT_ENV}={v:?} names no crash point; known: {}",
                    CrashPoint::ALL.map(CrashPoint::name).join(", ")
                )),
            },
            _ => Ok(Self::disarmed()),
        }
    }

    /// Armed at `point` for an in-process test: reaching it sends the point on the returned
    /// channel and parks that reconcile forever.
    pub fn for_test(point: CrashPoint) -> (Self, mpsc::UnboundedReceiver<CrashPoint>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            CrashPoints {
                armed: Some(point),
                mode: Mode::Report(tx),
            },
            rx,
        )
    }

    /// Stops here if this point is armed.
    pub async fn point(&self, point: CrashPoint) {
        if self.armed != Some(point) {
            return;
        }
        match &self.mode {
            Mode::Abort => {
                eprintln!("crash point {} reached: aborting", point.name());
                std::process::abort();
            }
            Mode::Report(tx) => {
                let _ = tx.send(point);
                pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in CrashPoint::ALL {
            assert_eq!(CrashPoint::parse(p.name()), Some(p));
        }
        assert_eq!(CrashPoint::parse("nope"), None);
    }

    #[tokio::test]
    async fn a_test_crash_reports_and_never_returns() {
        let (c, mut rx) = CrashPoints::for_test(CrashPoint::LvmAfterLvcreate);
        c.point(CrashPoint::ClaimAfterChoose).await;
        let parked = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            c.point(CrashPoint::LvmAfterLvcreate),
        )
        .await;
        assert!(parked.is_err(), "the armed point must not return");
        assert_eq!(rx.recv().await, Some(CrashPoint::LvmAfterLvcreate));
    }
}
