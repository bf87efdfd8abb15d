//! Volume operations (migrate, convert, expand): one state machine per kind, each a pure
//! function from what the controller read to the one step it takes next.
//!
//! The shape every operation shares lives here:
//!
//! - **Pending**: nothing changed yet. The operation waits (the `Waiting` condition says
//!   for what) until its volume can take it and a slot is free, then takes the volume
//!   ([`OpStep::Acquire`]: `LocalVolume.spec.operation`, by compare-and-swap), so no two
//!   operations ever change one volume.
//! - **Running**: the kind's steps, each recorded in `status.step` before or as it acts;
//!   every change to the volume is a compare-and-swap, and a step decided again after a
//!   crash finds its own earlier effect and goes on.
//! - **Aborting**: the kind's undo, back to the volume as it was, while that is still
//!   possible (a kind says when it is not: then the abort is refused with the reason and
//!   the operation goes on).
//! - **Succeeded / Failed / Aborted**: the final phase is written first, then the volume is
//!   released ([`OpStep::Release`]); the ended operation is kept as history until its
//!   time-to-live passes ([`OpStep::Delete`]).
//!
//! The rule of every kind: an old copy of the data goes only after the new one is complete
//! and verified, and an operation stopped at any step leaves the volume usable with its data
//! where it was.

pub mod convert;
pub mod evict;
pub mod expand;
pub mod group;
pub mod migrate;
pub mod slots;

use crate::placement::{NodeView, Placed, Policy};
use hwameistor_api::operation::{CONDITION_RUNNING, CONDITION_WAITING};
use hwameistor_api::{
    LocalVolume, LocalVolumeReplica, OperationKind, OperationPhase, OperationProgress,
    OperationRef, OperationStatus, VolumeConfig, VolumeState,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::BTreeSet;

/// How long an ended operation is kept when neither it nor the controller says otherwise.
pub const DEFAULT_TTL_SECONDS: i64 = 24 * 3600;

/// The operation as its reconciler sees it.
#[derive(Clone, Debug)]
pub struct Op<'a> {
    pub kind: OperationKind,
    pub name: &'a str,
    pub uid: &'a str,
    pub generation: Option<i64>,
    pub abort: bool,
    /// The object is being deleted: a running operation then stops as by an abort.
    pub deleting: bool,
    /// The controller's finalizer is on it (so a deletion waits for it to let go).
    pub has_finalizer: bool,
    /// Seconds it is kept after it ended.
    pub ttl_seconds: i64,
    pub status: &'a OperationStatus,
}

impl Op<'_> {
    pub fn phase(&self) -> Option<OperationPhase> {
        self.status.phase
    }

    /// The reference the volume holds while this operation runs.
    pub fn reference(&self, bandwidth: Option<i64>) -> OperationRef {
        OperationRef {
            kind: Some(self.kind),
            name: self.name.to_string(),
            uid: self.uid.to_string(),
            bandwidth_limit_bytes_per_second: bandwidth,
        }
    }

    fn holds(&self, v: &LocalVolume) -> bool {
        v.spec
            .operation
            .as_ref()
            .is_some_and(|o| !self.uid.is_empty() && o.uid == self.uid)
    }
}

/// A PersistentVolume's node affinity, as far as the operations care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvView {
    pub name: String,
    /// The nodes its required node affinity allows; empty when it has none.
    pub nodes: Vec<String>,
    /// It is being re-created (deleted, saved copy pending): finishing that comes first,
    /// whatever else holds.
    pub recreating: bool,
}

/// What the controller read for one reconcile of an operation.
#[derive(Clone, Debug)]
pub struct World<'a> {
    pub now: Timestamp,
    /// The operation's volume; `None` when it does not exist.
    pub volume: Option<&'a LocalVolume>,
    /// The replicas labelled with the volume's name.
    pub replicas: &'a [LocalVolumeReplica],
    /// The storage nodes, and every replica placed (for room).
    pub nodes: &'a [NodeView],
    pub placed: &'a [Placed],
    pub policy: Policy,
    /// Nodes whose agent publishes a block mover.
    pub movers: &'a BTreeSet<String>,
    /// The PersistentVolume of the volume, when it has one.
    pub pv: Option<&'a PvView>,
    /// Whether this operation may start now (the concurrency limits, see [`slots`]); the
    /// reason when not.
    pub slot: Result<(), String>,
    /// A replication resource id no volume holds (for a conversion), if any is left.
    pub free_resource_id: Option<i64>,
    /// The volume's group: its other volumes and the operations this one made for them.
    pub group: group::Group<'a>,
    /// The volume's snapshots (they live beside its replica on their node).
    pub snapshots: &'a [hwameistor_api::LocalVolumeSnapshot],
}

impl World<'_> {
    /// The replication address of storage node `node`, if it reports one.
    pub fn storage_ip(&self, node: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.storage_ip.clone())
    }
}

/// A change to the volume, applied with a compare-and-swap on its resourceVersion.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeChange {
    pub config: Option<VolumeConfig>,
    pub required_capacity_bytes: Option<i64>,
    pub replica_number: Option<i64>,
    /// The nodes the volume must be usable from.
    pub accessibility: Option<Vec<String>>,
    /// Whether the volume runs DRBD on one node when it has one replica (an aborted
    /// conversion leaves its DRBD layer in place).
    pub convertible: Option<bool>,
}

/// The one step an operation takes next.
#[derive(Clone, Debug, PartialEq)]
pub enum OpStep {
    /// Write the operation's status.
    Status(Box<OperationStatus>),
    /// Put the controller's finalizer on the operation (before anything else).
    AddFinalizer,
    /// The deleted operation ended and let its volume go: let the object go.
    RemoveFinalizer,
    /// Take the volume (compare-and-swap on `spec.operation`, which must be empty).
    Acquire(OperationRef),
    UpdateVolume(Box<VolumeChange>),
    /// Delete one replica: the old copy, once its replacement is complete, or the new one
    /// of an aborted operation.
    DeleteReplica(String),
    /// Rewrite the PersistentVolume's node affinity to these nodes (Kubernetes keeps it
    /// immutable: the object is re-created, see the controller's `pv_affinity`).
    RewritePvAffinity {
        pv: String,
        nodes: Vec<String>,
    },
    /// Make an operation of this kind for each of these volumes of the group, pinned to
    /// this operation's target node (see [`group`]).
    StartMembers(Vec<String>),
    /// Abort these operations made for the group's volumes.
    AbortMembers(Vec<String>),
    /// Let the volume go (clear `spec.operation` if this operation holds it).
    Release,
    /// The ended operation outlived its time-to-live.
    Delete,
    /// Nothing to do until something changes; look again after this many seconds.
    Wait {
        seconds: u64,
    },
}

/// How long to wait between looks while an operation runs (progress is refreshed at this
/// pace too).
pub const POLL_SECONDS: u64 = 2;

/// A kind's answer to "may it start now?".
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// Yes; these are the facts to record as it starts (target node, source nodes,
    /// original capacity).
    Go(Box<OperationStatus>),
    /// Not yet; the reason.
    Wait(String),
    /// Never: the request cannot be done; the reason says what to do instead.
    Fail(String),
    /// Nothing to do: the volume is already as asked.
    Done(String),
}

/// The kind-specific part of a state machine.
pub trait Machine {
    /// The volume's bandwidth cap for the operation's copies, when it has one.
    fn bandwidth(&self) -> Option<i64> {
        None
    }
    /// Whether it takes the volume's group with it (see [`group`]).
    fn group_wide(&self) -> bool {
        false
    }
    /// Whether the group's volume `member` goes with it (`Some`: and whether its new
    /// replica replicates); `None`: it stays as it is.
    fn member_goes(&self, _member: &LocalVolume) -> Option<bool> {
        None
    }
    /// Whether it may start, before it holds the volume.
    fn start(&self, op: &Op, w: &World, v: &LocalVolume) -> Start;
    /// The next step while running and holding the volume.
    fn run(&self, op: &Op, w: &World, v: &LocalVolume) -> OpStep;
    /// `Ok` when an abort can still undo it; the reason otherwise.
    fn abortable(&self, op: &Op, v: &LocalVolume) -> Result<(), String>;
    /// The next step of undoing it; `None` when the volume is back as it was.
    fn undo(&self, op: &Op, w: &World, v: &LocalVolume) -> Option<OpStep>;
}

/// The next step of operation `op`, run by `machine`.
pub fn next_step(op: &Op, w: &World, machine: &dyn Machine) -> OpStep {
    let phase = op.phase();
    if phase.is_some_and(|p| p.is_final()) {
        // The final phase is written before the volume is let go, so a crash in between
        // still releases it.
        if w.volume.is_some_and(|v| op.holds(v)) {
            return OpStep::Release;
        }
        // A lead that did not succeed stops its group's other volumes too.
        if phase != Some(OperationPhase::Succeeded) {
            if let Some(step) = group::abort_members(w) {
                return step;
            }
        }
        if op.deleting {
            return if op.has_finalizer {
                OpStep::RemoveFinalizer
            } else {
                OpStep::Wait {
                    seconds: POLL_SECONDS,
                }
            };
        }
        return expire(op, w);
    }
    if !op.has_finalizer {
        // Deleted before it was ever taken up: nothing was changed, nothing to undo.
        return if op.deleting {
            OpStep::Wait {
                seconds: POLL_SECONDS,
            }
        } else {
            OpStep::AddFinalizer
        };
    }
    // Deleting a running operation stops it as an abort does.
    let aborting = op.abort || op.deleting;
    let Some(v) = w.volume else {
        return finish(
            op,
            w,
            OperationPhase::Failed,
            "the volume does not exist".into(),
        );
    };
    if v.metadata.deletion_timestamp.is_some() {
        return finish(
            op,
            w,
            OperationPhase::Failed,
            "the volume is being deleted".into(),
        );
    }
    let holding = op.holds(v);
    match phase {
        None | Some(OperationPhase::Pending) => {
            if aborting {
                // Nothing was changed: stopping is all there is to do.
                return finish(
                    op,
                    w,
                    OperationPhase::Aborted,
                    "aborted before it started; nothing was changed".into(),
                );
            }
            let facts = match machine.start(op, w, v) {
                Start::Go(facts) => facts,
                Start::Wait(why) => return pending(op, w, why),
                Start::Fail(why) => return finish(op, w, OperationPhase::Failed, why),
                Start::Done(why) => return finish(op, w, OperationPhase::Succeeded, why),
            };
            if !holding {
                if let Some(other) = v.spec.operation.as_ref() {
                    let kind = other.kind.map(|k| k.as_str()).unwrap_or("operation");
                    return pending(
                        op,
                        w,
                        format!(
                            "another operation holds the volume ({kind} {}); this one starts once it ended",
                            other.name
                        ),
                    );
                }
                if let Err(why) = &w.slot {
                    return pending(op, w, why.clone());
                }
                return OpStep::Acquire(op.reference(machine.bandwidth()));
            }
            // Holding: record the start and the facts it decided (the target chosen now
            // is the one every later step reads).
            let mut st = op.status.clone();
            st.phase = Some(OperationPhase::Running);
            st.start_time = Some(Time(w.now));
            st.message = None;
            st.step = facts.step.clone();
            st.target_node = facts.target_node.clone();
            st.source_nodes = facts.source_nodes.clone();
            st.original_capacity_bytes = facts.original_capacity_bytes;
            st.group_volumes = facts.group_volumes.clone();
            st.observed_generation = op.generation;
            set_condition(&mut st, w, CONDITION_WAITING, false, "Started", "");
            set_condition(&mut st, w, CONDITION_RUNNING, true, "Started", "");
            OpStep::Status(Box::new(st))
        }
        Some(OperationPhase::Running) => {
            if !holding {
                return finish(
                    op,
                    w,
                    OperationPhase::Failed,
                    "the volume no longer records this operation as holding it; nothing more is changed".into(),
                );
            }
            if aborting {
                let abortable = match group::members_refuse_abort(op) {
                    Some(why) => Err(why),
                    None => machine.abortable(op, v),
                };
                return match abortable {
                    Ok(()) => {
                        let mut st = op.status.clone();
                        st.phase = Some(OperationPhase::Aborting);
                        st.message = Some("aborting: undoing its changes".into());
                        st.observed_generation = op.generation;
                        OpStep::Status(Box::new(st))
                    }
                    Err(why) => {
                        let msg = format!("abort refused: {why}");
                        if op.status.message.as_deref() == Some(msg.as_str()) {
                            if let Some(step) = group::start_members(op, w) {
                                return step;
                            }
                            group::gate(op, w, machine.run(op, w, v))
                        } else {
                            let mut st = op.status.clone();
                            st.message = Some(msg);
                            OpStep::Status(Box::new(st))
                        }
                    }
                };
            }
            if let Some(step) = group::start_members(op, w) {
                return step;
            }
            group::gate(op, w, machine.run(op, w, v))
        }
        Some(OperationPhase::Aborting) => {
            if let Some(step) = group::abort_members(w) {
                return step;
            }
            if !holding {
                return group::aborted(op, w);
            }
            match machine.undo(op, w, v) {
                Some(step) => step,
                None => group::aborted(op, w),
            }
        }
        Some(_) => OpStep::Wait {
            seconds: POLL_SECONDS,
        },
    }
}

fn expire(op: &Op, w: &World) -> OpStep {
    let Some(end) = op.status.completion_time.as_ref() else {
        return OpStep::Wait {
            seconds: POLL_SECONDS,
        };
    };
    let age = w.now.as_second() - end.0.as_second();
    if age >= op.ttl_seconds {
        OpStep::Delete
    } else {
        OpStep::Wait {
            seconds: u64::try_from(op.ttl_seconds - age).unwrap_or(1).max(1),
        }
    }
}

fn pending(op: &Op, w: &World, why: String) -> OpStep {
    let mut st = op.status.clone();
    st.phase = Some(OperationPhase::Pending);
    st.message = Some(why.clone());
    st.observed_generation = op.generation;
    set_condition(&mut st, w, CONDITION_WAITING, true, "Waiting", &why);
    if st == *op.status {
        OpStep::Wait {
            seconds: POLL_SECONDS,
        }
    } else {
        OpStep::Status(Box::new(st))
    }
}

/// The status of an operation that ended with `phase`.
pub fn finish(op: &Op, w: &World, phase: OperationPhase, message: String) -> OpStep {
    let mut st = op.status.clone();
    st.phase = Some(phase);
    st.message = Some(message.clone());
    st.completion_time = Some(Time(w.now));
    st.observed_generation = op.generation;
    let reason = match phase {
        OperationPhase::Succeeded => "Succeeded",
        OperationPhase::Aborted => "Aborted",
        _ => "Failed",
    };
    set_condition(&mut st, w, CONDITION_WAITING, false, reason, "");
    set_condition(&mut st, w, CONDITION_RUNNING, false, reason, &message);
    OpStep::Status(Box::new(st))
}

/// The status with `step` and `progress` recorded, or a wait when it is recorded already.
pub fn at_step(op: &Op, step: &str, progress: Option<OperationProgress>) -> OpStep {
    let mut st = op.status.clone();
    st.step = Some(step.to_string());
    if progress.is_some() {
        st.progress = progress;
    }
    if st == *op.status {
        OpStep::Wait {
            seconds: POLL_SECONDS,
        }
    } else {
        OpStep::Status(Box::new(st))
    }
}

/// Progress of `done` out of `total` bytes, with the rate and time left when known.
pub fn progress(done: i64, total: i64, rate: Option<i64>) -> OperationProgress {
    let done = done.clamp(0, total.max(0));
    let percent = if total > 0 {
        i64::try_from(i128::from(done) * 100 / i128::from(total)).unwrap_or(100)
    } else {
        100
    };
    let eta = rate
        .filter(|r| *r > 0)
        .map(|r| ((total - done).max(0) + r - 1) / r);
    OperationProgress {
        bytes_done: done,
        bytes_total: total.max(0),
        percent,
        bytes_per_second: rate,
        eta_seconds: eta,
    }
}

fn set_condition(
    st: &mut OperationStatus,
    w: &World,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(w.now);
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message.into();
        return;
    }
    st.conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(w.now),
        observed_generation: None,
    });
}

/// The name of the volume's replica on `node` among `replicas`, when one exists and is not
/// going away.
pub fn replica_on<'a>(
    replicas: &'a [LocalVolumeReplica],
    node: &str,
) -> Option<&'a LocalVolumeReplica> {
    replicas
        .iter()
        .find(|r| r.spec.node_name == node && r.metadata.deletion_timestamp.is_none())
}

/// Whether any replica (going away or not) is on `node`.
pub fn any_replica_on(replicas: &[LocalVolumeReplica], node: &str) -> bool {
    replicas.iter().any(|r| r.spec.node_name == node)
}

/// The undo step that removes the replica on `node`: its deletion, then a wait while its
/// agent removes its volumes; `None` once it is gone.
pub fn remove_replica_on(w: &World, node: &str) -> Option<OpStep> {
    if let Some(r) = replica_on(w.replicas, node) {
        return Some(OpStep::DeleteReplica(
            r.metadata.name.clone().unwrap_or_default(),
        ));
    }
    any_replica_on(w.replicas, node).then_some(OpStep::Wait {
        seconds: POLL_SECONDS,
    })
}

/// A wait naming the volume's state when it is not Ready (`only`: what needs it Ready).
pub fn wait_until_ready(v: &LocalVolume, only: &str) -> Option<Start> {
    let st = v.status.as_ref();
    let state = st.and_then(|s| s.state);
    if state == Some(VolumeState::Ready) {
        return None;
    }
    let state = state
        .map(|s| format!("{s:?}"))
        .unwrap_or_else(|| "not reported".into());
    Some(Start::Wait(format!("the volume is {state}; {only}")))
}

/// The step that brings the volume's accessibility and its PersistentVolume's node affinity
/// to `nodes`, or `None` when both are there. The PersistentVolume is re-created to change
/// its affinity (Kubernetes keeps it immutable), which is done only while nobody uses the
/// volume: until then the operation waits at `step`, saying so.
pub fn accessibility_step(
    op: &Op,
    w: &World,
    v: &LocalVolume,
    step: &str,
    nodes: &[String],
) -> Option<OpStep> {
    let mut want: Vec<String> = nodes.to_vec();
    want.sort();
    let mut have = v.spec.accessibility.nodes.clone();
    have.sort();
    if have != want {
        return Some(OpStep::UpdateVolume(Box::new(VolumeChange {
            accessibility: Some(want),
            ..Default::default()
        })));
    }
    let pv = w.pv?;
    if pv.recreating {
        return Some(OpStep::RewritePvAffinity {
            pv: pv.name.clone(),
            nodes: want,
        });
    }
    let mut pv_nodes = pv.nodes.clone();
    pv_nodes.sort();
    // A PV without node affinity can be used anywhere already.
    if pv_nodes.is_empty() || pv_nodes == want {
        return None;
    }
    if let Some(node) = v.status.as_ref().and_then(|s| s.published_node.as_deref()) {
        let msg = format!(
            "the data is moved; the PersistentVolume {} still names {} and is re-created with {} once the volume is unpublished (it is in use on {node}; Kubernetes keeps a PV's node affinity immutable)",
            pv.name,
            pv_nodes.join(", "),
            want.join(", ")
        );
        let mut st = op.status.clone();
        st.step = Some(step.to_string());
        st.message = Some(msg);
        return Some(if st == *op.status {
            OpStep::Wait {
                seconds: POLL_SECONDS,
            }
        } else {
            OpStep::Status(Box::new(st))
        });
    }
    Some(OpStep::RewritePvAffinity {
        pv: pv.name.clone(),
        nodes: want,
    })
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
