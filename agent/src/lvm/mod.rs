//! The node's LVM as the agent uses it: a cached view, per-volume-group locks, and the
//! operations that bring a logical volume or a pool to what is asked, one LVM command each.
//!
//! # The view
//! Reading LVM costs two commands (`pvs`, `lvs`), each of which rescans every device; on a
//! busy node that is most of the cost of creating a volume. So the agent keeps the last
//! report and keeps it true itself:
//! - its own operations update the view with exactly what they changed (a created volume
//!   with its size and path, the group's free space), and ask for a background re-read for
//!   what they cannot know (which disks the new extents landed on);
//! - uevents and the periodic resync ask for a background re-read too, which runs once the
//!   host has been quiet for a moment, off every request's path, and tells the reconcilers
//!   when it found the host different from the view (a volume removed by hand, the disks of
//!   a new volume);
//! - any failed operation marks the view stale: the next decision re-reads LVM first.
//!
//! LVM stays the authority: every decision made on the view is checked again by LVM when
//! the command runs, and a refusal (volume already exists, no room) leads to a re-read.
//!
//! # Locks
//! One lock per volume group, held only while a decision is made and its commands run, never
//! across an API call; a re-read takes all of them so it never sees half an operation. A
//! slow operation on one pool never waits for another pool, and the disk scanner takes no
//! lock at all (see [`LvmCache::membership_epoch`]).

use crate::crash::{CrashPoint, CrashPoints};
use hwameistor_core::lvm::{
    plan_ensure_lv, plan_extend_pool, plan_remove_lv, ForeignVg, LvOp, LvPlanError,
};
pub use hwameistor_core::lvm::{Lv, LvmState, Pv, Vg};
use hwameistor_core::thin::{
    plan_ensure_thin_clone, plan_ensure_thin_lv, plan_grow_pool, thin_pool, ThinOp, ThinPlanError,
    ThinPolicy, THIN_POOL_LV,
};
pub use hwameistor_hostexec::lvm::{Lvm as LvmHost, LvmCli, LvmError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{broadcast, Notify, OwnedMutexGuard};

/// Why an operation did not reach its goal.
#[derive(Debug, Error)]
pub enum LvmOpError {
    #[error(transparent)]
    Plan(#[from] LvPlanError),
    #[error(transparent)]
    ThinPlan(#[from] ThinPlanError),
    #[error(transparent)]
    Foreign(#[from] ForeignVg),
    #[error(transparent)]
    Lvm(#[from] LvmError),
}

impl LvmOpError {
    /// Whether trying again later can succeed without anyone changing the request.
    pub fn retryable(&self) -> bool {
        // An over-provisioned pool may have room later (a volume deleted, a disk added to
        // the group); a bad name or a thick volume in the way will not.
        !matches!(
            self,
            LvmOpError::Plan(LvPlanError::InvalidName(_))
                | LvmOpError::ThinPlan(
                    ThinPlanError::InvalidName(_) | ThinPlanError::NotThin { .. }
                )
        )
    }
}

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Commands ran to reach the goal.
    Changed,
    /// The goal already held; nothing ran.
    AlreadyDone,
}

#[derive(Default)]
struct View {
    state: Option<LvmState>,
    /// The next decision must re-read LVM first.
    stale: bool,
    /// A background re-read should run.
    dirty: bool,
    /// Bumped by every operation that changes LVM.
    mutations: u64,
    last_mutation: Option<Instant>,
    /// Physical-volume membership operations started and finished (see
    /// [`LvmCache::membership_epoch`]).
    membership_started: u64,
    membership_finished: u64,
    /// The last re-read's failure, while it lasts.
    last_error: Option<String>,
}

/// LVM with a cached view and per-group locks. See the module docs.
pub struct LvmCache {
    host: Arc<dyn LvmHost>,
    crash: Arc<CrashPoints>,
    view: Mutex<View>,
    reread: tokio::sync::Mutex<()>,
    groups: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    wake: Notify,
    changed: broadcast::Sender<()>,
    quiet: Duration,
}

/// What the last read of LVM says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LvmHealth {
    Ok,
    /// The agent is starting: LVM has not been read yet.
    NotReadYet,
    /// The last read failed; the message says how.
    Failing(String),
}

/// How long the host must have been quiet before a background re-read runs, so that a
/// burst of operations is not slowed by re-reads between them.
pub const QUIET: Duration = Duration::from_millis(1500);

impl LvmCache {
    pub fn new(host: Arc<dyn LvmHost>, crash: Arc<CrashPoints>, quiet: Duration) -> Arc<Self> {
        Arc::new(LvmCache {
            host,
            crash,
            view: Mutex::new(View {
                stale: true,
                ..View::default()
            }),
            reread: tokio::sync::Mutex::new(()),
            groups: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            changed: broadcast::channel(16).0,
            quiet,
        })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // The view is plain data; a panic elsewhere leaves it usable.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn group_lock(&self, vg: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(vg.to_string()).or_default().clone()
    }

    /// Fires after a background re-read found LVM different from the view.
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    /// Asks for a background re-read (uevents, periodic resync).
    pub fn invalidate(&self) {
        self.view().dirty = true;
        self.wake.notify_one();
    }

    /// Whether LVM answered the last time it was read.
    pub fn health(&self) -> LvmHealth {
        let v = self.view();
        match (&v.last_error, &v.state) {
            (Some(e), _) => LvmHealth::Failing(format!("LVM cannot be read: {e}")),
            (None, None) => LvmHealth::NotReadYet,
            (None, Some(_)) => LvmHealth::Ok,
        }
    }

    /// The current view, re-reading LVM first when it is stale.
    pub async fn snapshot(&self) -> Result<LvmState, LvmError> {
        {
            let v = self.view();
            if let (false, Some(s)) = (v.stale, &v.state) {
                return Ok(s.clone());
            }
        }
        self.reread(false).await
    }

    /// Re-reads LVM with every group lock held, so no operation is half done. `force`
    /// re-reads even when the view is fresh (background refresh). Never call it while
    /// holding a group lock.
    pub async fn reread(&self, force: bool) -> Result<LvmState, LvmError> {
        let _one = self.reread.lock().await;
        if !force {
            let v = self.view();
            if let (false, Some(s)) = (v.stale, &v.state) {
                return Ok(s.clone());
            }
        }
        let locks: Vec<_> = {
            let g = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            g.values().cloned().collect()
        };
        let mut held: Vec<OwnedMutexGuard<()>> = Vec::with_capacity(locks.len());
        for l in locks {
            held.push(l.lock_owned().await);
        }
        let before = self.view().mutations;
        let result = self.host.report().await;
        drop(held);
        let mut v = self.view();
        match &result {
            Ok(state) => {
                v.last_error = None;
                // A group created meanwhile (its lock did not exist yet) may be missing from
                // the report: keep the view and try again later.
                if v.mutations == before {
                    let differs = v.state.as_ref() != Some(state);
                    v.state = Some(state.clone());
                    v.stale = false;
                    v.dirty = false;
                    if differs && force {
                        let _ = self.changed.send(());
                    }
                } else {
                    v.dirty = true;
                    self.wake.notify_one();
                }
            }
            Err(e) => {
                v.last_error = Some(e.to_string());
                v.stale = true;
            }
        }
        result
    }

    /// The background re-reader: runs after [`LvmCache::invalidate`] or an operation, once
    /// LVM has been quiet for the quiet period ([`QUIET`] on a node). Never returns.
    pub async fn run_refresher(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let since = self.view().last_mutation.map(|t| t.elapsed());
                match since {
                    Some(e) if e < self.quiet => tokio::time::sleep(self.quiet - e).await,
                    _ => break,
                }
            }
            if !self.view().dirty {
                continue;
            }
            if let Err(e) = self.reread(true).await {
                tracing::warn!(error = %e, "reading LVM failed; retrying");
                tokio::time::sleep(self.quiet).await;
                self.invalidate();
            }
        }
    }

    /// The view for a decision under `vg`'s lock, fresh, or `None` when it must be re-read
    /// first (drop the lock, re-read, try again).
    fn fresh_view(&self) -> Option<LvmState> {
        let v = self.view();
        match (v.stale, &v.state) {
            (false, Some(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Takes `vg`'s lock with a fresh view to decide on.
    async fn lock_fresh(&self, vg: &str) -> Result<(OwnedMutexGuard<()>, LvmState), LvmError> {
        loop {
            self.snapshot().await?;
            let guard = self.group_lock(vg).lock_owned().await;
            if let Some(state) = self.fresh_view() {
                return Ok((guard, state));
            }
        }
    }

    /// Records that an operation changed LVM: applies what it is known to have done to the
    /// view (or marks it stale) and schedules a background re-read for the rest.
    fn mutated(&self, apply: impl FnOnce(&mut LvmState) -> bool) {
        let mut v = self.view();
        v.mutations += 1;
        v.last_mutation = Some(Instant::now());
        v.dirty = true;
        let known = v.state.as_mut().map(apply).unwrap_or(false);
        if !known {
            v.stale = true;
        }
        drop(v);
        self.wake.notify_one();
    }

    fn failed(&self) {
        let mut v = self.view();
        v.stale = true;
        v.mutations += 1;
    }

    /// Grows `vg`'s thin pool as [`plan_grow_pool`] says (its data or metadata filling up),
    /// as far as the group allows; the growth made, if any.
    pub async fn grow_thin_pool(
        &self,
        vg: &str,
        policy: &ThinPolicy,
    ) -> Result<Option<ThinOp>, LvmError> {
        let (_guard, state) = self.lock_fresh(vg).await?;
        let (Some(pool), Some(op)) = (thin_pool(&state, vg), plan_grow_pool(&state, vg, policy))
        else {
            return Ok(None);
        };
        let ThinOp::ExtendPool {
            data_bytes,
            metadata_bytes,
        } = op
        else {
            return Ok(None);
        };
        // Metadata first: a full metadata device is the worse failure.
        if metadata_bytes > pool.metadata_bytes {
            if let Err(e) = self
                .host
                .extend_thin_metadata(vg, THIN_POOL_LV, metadata_bytes)
                .await
            {
                self.failed();
                return Err(e);
            }
        }
        if data_bytes > pool.data_bytes {
            if let Err(e) = self.host.extend_lv(vg, THIN_POOL_LV, data_bytes).await {
                self.failed();
                return Err(e);
            }
        }
        // The pool's new sizes and the group's free space are read back.
        self.mutated(|_| false);
        Ok(Some(op))
    }

    /// Makes `vg/name` an active logical volume of at least `bytes` (rounded up to the
    /// group's extents): creates, grows or activates it as needed; never shrinks.
    pub async fn ensure_lv(
        &self,
        vg: &str,
        name: &str,
        bytes: i64,
    ) -> Result<(Outcome, Lv), LvmOpError> {
        // One retry: a view that missed a volume made behind our back is re-read once.
        for attempt in 0..2 {
            let (_guard, state) = self.lock_fresh(vg).await?;
            let ops = plan_ensure_lv(&state, vg, name, bytes)?;
            let mut outcome = Outcome::AlreadyDone;
            let mut result = Ok(());
            for op in ops {
                result = self.run_lv_op(vg, name, &op).await;
                if result.is_err() {
                    break;
                }
                outcome = Outcome::Changed;
                if matches!(op, LvOp::Create { .. }) {
                    self.crash.point(CrashPoint::LvmAfterLvcreate).await;
                }
            }
            match result {
                Ok(()) => {}
                Err(LvmError::LvExists { .. }) if attempt == 0 => continue,
                Err(e) => return Err(e.into()),
            }
            let lv = self
                .fresh_view()
                .and_then(|s| s.lv(vg, name).cloned())
                .or_else(|| state.lv(vg, name).cloned());
            return match lv {
                Some(lv) => Ok((outcome, lv)),
                // The view went stale under us (a failure elsewhere): read it back.
                None => {
                    drop(_guard);
                    Ok((outcome, self.read_back(vg, name).await?))
                }
            };
        }
        Err(LvmError::LvExists {
            vg: vg.into(),
            lv: name.into(),
        }
        .into())
    }

    /// Makes `vg/name` an active thin volume of at least `bytes` in the group's thin pool,
    /// creating or growing the pool as [`plan_ensure_thin_lv`] says; refused (with the
    /// numbers) when the pool would be over-provisioned past `policy`'s ratio and the group
    /// has no room to grow it. Never shrinks.
    pub async fn ensure_thin_lv(
        &self,
        vg: &str,
        name: &str,
        bytes: i64,
        policy: &ThinPolicy,
    ) -> Result<(Outcome, Lv), LvmOpError> {
        self.run_thin_plan(vg, name, |state| {
            plan_ensure_thin_lv(state, vg, name, bytes, policy)
        })
        .await
    }

    /// Makes `vg/name` an active thin volume of at least `bytes` holding thin snapshot
    /// `vg/source`'s data (a restore on the snapshot's node): a writable clone of it, grown
    /// when asked larger, under the same ratio rule as any thin volume
    /// ([`plan_ensure_thin_clone`]). An existing `name` is only grown and activated.
    pub async fn ensure_thin_clone(
        &self,
        vg: &str,
        source: &str,
        name: &str,
        bytes: i64,
        policy: &ThinPolicy,
    ) -> Result<(Outcome, Lv), LvmOpError> {
        self.run_thin_plan(vg, name, |state| {
            plan_ensure_thin_clone(state, vg, name, source, bytes, policy)
        })
        .await
    }

    /// Plans `vg/name`'s thin operations under the group's lock from a fresh view and
    /// carries them out.
    async fn run_thin_plan(
        &self,
        vg: &str,
        name: &str,
        plan: impl FnOnce(&LvmState) -> Result<Vec<ThinOp>, ThinPlanError>,
    ) -> Result<(Outcome, Lv), LvmOpError> {
        let (guard, state) = self.lock_fresh(vg).await?;
        let ops = plan(&state)?;
        let outcome = if ops.is_empty() {
            Outcome::AlreadyDone
        } else {
            Outcome::Changed
        };
        for op in &ops {
            let r = match op {
                ThinOp::CreatePool {
                    data_bytes,
                    metadata_bytes,
                } => {
                    self.host
                        .create_thin_pool(vg, THIN_POOL_LV, *data_bytes, *metadata_bytes)
                        .await
                }
                ThinOp::ExtendPool {
                    data_bytes,
                    metadata_bytes,
                } => {
                    let pool = thin_pool(&state, vg);
                    let mut r = Ok(());
                    if pool
                        .as_ref()
                        .is_none_or(|p| *metadata_bytes > p.metadata_bytes)
                    {
                        r = self
                            .host
                            .extend_thin_metadata(vg, THIN_POOL_LV, *metadata_bytes)
                            .await;
                    }
                    if r.is_ok() {
                        r = self.host.extend_lv(vg, THIN_POOL_LV, *data_bytes).await;
                    }
                    r
                }
                ThinOp::CreateThin { bytes } => {
                    self.host
                        .create_thin_lv(vg, THIN_POOL_LV, name, *bytes)
                        .await
                }
                ThinOp::ExtendThin { bytes } => self.host.extend_lv(vg, name, *bytes).await,
                ThinOp::Activate => self.host.activate_lv(vg, name).await,
                ThinOp::CloneFrom { source } => self.host.clone_thin(vg, source, name).await,
            };
            if let Err(e) = r {
                tracing::warn!(volume = %format!("{vg}/{name}"), error = %e, ?op, "LVM refused");
                self.failed();
                return Err(e.into());
            }
            // Pool and thin sizes are LVM's to say (metadata spare, rounding): read back.
            self.mutated(|_| false);
            match op {
                ThinOp::CreatePool { .. } => self.crash.point(CrashPoint::LvmAfterThinPool).await,
                ThinOp::CreateThin { .. } => self.crash.point(CrashPoint::LvmAfterLvcreate).await,
                ThinOp::CloneFrom { .. } => self.crash.point(CrashPoint::RestoreAfterClone).await,
                _ => {}
            }
        }
        drop(guard);
        Ok((outcome, self.read_back(vg, name).await?))
    }

    /// `vg/name` as LVM reports it right after an operation made it (read again: sizes,
    /// pools and origins are LVM's to say). Call without the group's lock.
    async fn read_back(&self, vg: &str, name: &str) -> Result<Lv, LvmError> {
        let s = self.snapshot().await?;
        s.lv(vg, name).cloned().ok_or_else(|| LvmError::Report {
            command: "lvs".into(),
            reason: format!("{vg}/{name} missing right after it was made"),
        })
    }

    /// Takes snapshot `vg/name` of `vg/origin` (copy-on-write with `cow` bytes, or thin):
    /// one `lvcreate`, under the group's lock, unless it exists already. The snapshot as
    /// LVM reports it.
    pub async fn ensure_snapshot(
        &self,
        vg: &str,
        origin: &str,
        name: &str,
        cow: Option<i64>,
    ) -> Result<(Outcome, Lv), LvmOpError> {
        let (guard, state) = self.lock_fresh(vg).await?;
        let outcome = if state.lv(vg, name).is_some() {
            Outcome::AlreadyDone
        } else {
            let extent = state.vg(vg).map(|g| g.extent_size).unwrap_or(1);
            let cow = cow.map(|b| hwameistor_core::lvm::round_up_to_extent(b, extent));
            if let Err(e) = self.host.create_snapshot(vg, origin, name, cow).await {
                tracing::warn!(snapshot = %format!("{vg}/{name}"), error = %e, "LVM refused the snapshot");
                self.failed();
                return Err(e.into());
            }
            // Its size and the origin's attributes are LVM's to say: read back.
            self.mutated(|_| false);
            self.crash.point(CrashPoint::SnapshotAfterLvcreate).await;
            Outcome::Changed
        };
        drop(guard);
        Ok((outcome, self.read_back(vg, name).await?))
    }

    async fn run_lv_op(&self, vg: &str, name: &str, op: &LvOp) -> Result<(), LvmError> {
        let r = match op {
            LvOp::Create { bytes } => self.host.create_lv(vg, name, *bytes).await,
            LvOp::Extend { bytes } => self.host.extend_lv(vg, name, *bytes).await,
            LvOp::Activate => self.host.activate_lv(vg, name).await,
        };
        if let Err(e) = &r {
            tracing::warn!(volume = %format!("{vg}/{name}"), error = %e, ?op, "LVM refused");
            self.failed();
            return r;
        }
        self.mutated(|s| apply_lv_op(s, vg, name, op));
        r
    }

    /// Removes `vg/name`; removing a volume that does not exist succeeds.
    pub async fn remove_lv(&self, vg: &str, name: &str) -> Result<Outcome, LvmOpError> {
        let (_guard, state) = self.lock_fresh(vg).await?;
        if !plan_remove_lv(&state, vg, name)? {
            return Ok(Outcome::AlreadyDone);
        }
        match self.host.remove_lv(vg, name).await {
            Ok(()) => {}
            Err(LvmError::NoSuchLv { .. }) => {
                self.failed();
                return Ok(Outcome::AlreadyDone);
            }
            Err(e) => {
                self.failed();
                return Err(e.into());
            }
        }
        self.mutated(|s| {
            let Some(i) = s.lvs.iter().position(|l| l.vg_name == vg && l.name == name) else {
                return false;
            };
            let lv = s.lvs.remove(i);
            if let Some(g) = s.vgs.iter_mut().find(|g| g.name == vg) {
                // A thin volume's blocks go back to its pool, not to the group.
                if lv.pool_lv.is_none() {
                    g.free += lv.size;
                }
                g.lv_count -= 1;
            }
            true
        });
        self.crash.point(CrashPoint::LvmAfterLvremove).await;
        Ok(Outcome::Changed)
    }

    /// Makes every device of `devices` a physical volume of `vg`, creating the group if
    /// needed. `pvcreate` is never forced: LVM refuses a device that gained a signature.
    pub async fn extend_pool(&self, vg: &str, devices: &[String]) -> Result<Outcome, LvmOpError> {
        let (_guard, state) = self.lock_fresh(vg).await?;
        let plan = plan_extend_pool(&state, vg, devices)?;
        if plan.is_empty() {
            return Ok(Outcome::AlreadyDone);
        }
        self.view().membership_started += 1;
        let result = self.run_pool_plan(vg, &plan).await;
        {
            let mut v = self.view();
            v.membership_finished += 1;
        }
        // Physical volume sizes are LVM's to say: read them back before the next decision.
        self.mutated(|_| false);
        result.map(|()| Outcome::Changed)
    }

    async fn run_pool_plan(
        &self,
        vg: &str,
        plan: &hwameistor_core::lvm::PoolPlan,
    ) -> Result<(), LvmOpError> {
        for dev in &plan.create_pvs {
            self.host.create_pv(dev).await?;
            self.crash.point(CrashPoint::LvmAfterPvcreate).await;
        }
        if !plan.create_vg.is_empty() {
            self.host.create_vg(vg, &plan.create_vg).await?;
        }
        if !plan.extend_vg.is_empty() {
            self.host.extend_vg(vg, &plan.extend_vg).await?;
        }
        Ok(())
    }

    /// A number that changes whenever a physical volume joins or leaves a group, or `None`
    /// while such an operation runs. The disk scanner reads it before and after a scan and
    /// scans again when they differ, so a disk half-way into a pool is never judged on a
    /// view that does not show it yet, without the scanner ever waiting for a lock.
    pub fn membership_epoch(&self) -> Option<u64> {
        let v = self.view();
        (v.membership_started == v.membership_finished).then_some(v.membership_started)
    }
}

/// What a successful [`LvOp`] did to LVM, as far as the agent knows; `false` when the view
/// cannot follow (it is then re-read).
fn apply_lv_op(s: &mut LvmState, vg: &str, name: &str, op: &LvOp) -> bool {
    match op {
        LvOp::Create { bytes } => {
            let Some(g) = s.vgs.iter_mut().find(|g| g.name == vg) else {
                return false;
            };
            g.free -= bytes;
            g.lv_count += 1;
            s.lvs.push(Lv {
                name: name.to_string(),
                vg_name: vg.to_string(),
                size: *bytes,
                attr: "-wi-a-----".into(),
                path: format!("/dev/{vg}/{name}"),
                // Which disks its extents are on is LVM's choice: the background re-read
                // fills this in.
                devices: Vec::new(),
                ..Default::default()
            });
            true
        }
        LvOp::Extend { bytes } => {
            let Some(lv) = s.lvs.iter_mut().find(|l| l.vg_name == vg && l.name == name) else {
                return false;
            };
            let grown = bytes - lv.size;
            lv.size = *bytes;
            if let Some(g) = s.vgs.iter_mut().find(|g| g.name == vg) {
                g.free -= grown;
            }
            true
        }
        LvOp::Activate => {
            let Some(lv) = s.lvs.iter_mut().find(|l| l.vg_name == vg && l.name == name) else {
                return false;
            };
            let mut attr: Vec<char> = lv.attr.chars().collect();
            if attr.len() > 4 {
                attr[4] = 'a';
                lv.attr = attr.into_iter().collect();
                true
            } else {
                false
            }
        }
    }
}
