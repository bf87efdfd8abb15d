//! Group-wide operations: a migration or conversion of a volume in a LocalVolumeGroup takes
//! the group's other volumes with it, to the same node. Pure.
//!
//! The operation asked for (the group's *lead*) chooses one target node with room for every
//! volume that goes (its own and the members'), records the members (`status.groupVolumes`)
//! as it starts, and once it runs makes one operation of its own kind per member, pinned to
//! that node ([`OpStep::StartMembers`]). A member's operation is an ordinary one: its own
//! hold on its volume, its own steps, crash points and abort. The lead ends only once they
//! all ended: Succeeded when they all did, Failed naming those that did not (the group is
//! then apart, and the LocalVolumeGroup's status says so).
//!
//! An abort of the lead aborts its members while the lead itself can still be undone (a lead
//! whose own part completed refuses, and its members complete too: the group stays
//! together). A lead that failed or was aborted aborts the members still running. A member's
//! operation deleted while the lead runs is made again: the group moves as one; stop it by
//! aborting the lead.

use super::{finish, progress, Machine, Op, OpStep, Start, World, POLL_SECONDS};
use hwameistor_api::{LocalVolume, OperationPhase, OperationStatus};

/// The lead's step while its own volume is done and its members' operations run.
pub const STEP_MEMBERS: &str = "GroupMembers";

/// An operation the lead made for a member of its group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Child {
    pub name: String,
    pub volume: String,
    pub abort: bool,
    pub status: OperationStatus,
}

impl Child {
    fn phase(&self) -> Option<OperationPhase> {
        self.status.phase
    }

    fn ended(&self) -> bool {
        self.phase().is_some_and(|p| p.is_final())
    }
}

/// The operation's volume's group, as the controller read it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Group<'a> {
    /// The group's other volumes (none when the volume is in no group).
    pub members: &'a [LocalVolume],
    /// The operations this one made for them (labelled with its name).
    pub children: &'a [Child],
}

/// The name of the operation lead `lead` makes for the group's volume `volume` (stable, so
/// it is found again after a restart; at most 253 characters).
pub fn member_operation_name(lead: &str, volume: &str) -> String {
    let base = format!("{lead}-{volume}");
    if base.len() <= 253 {
        return base;
    }
    let keep: String = base.chars().take(240).collect();
    let hash = base.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{}-{hash:08x}", keep.trim_end_matches(['-', '.']))
}

/// The group's volumes that go with a group-wide operation of `machine`, each with whether
/// its new replica replicates; or the wait when one of them is held by another operation.
/// None when the operation is not group-wide.
pub fn joining<'a>(
    machine: &dyn Machine,
    w: &World<'a>,
) -> Result<Vec<(&'a LocalVolume, bool)>, Start> {
    if !machine.group_wide() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for m in w.group.members {
        if m.metadata.deletion_timestamp.is_some() || m.spec.config.is_none() {
            continue;
        }
        let Some(replicated) = machine.member_goes(m) else {
            continue;
        };
        if let Some(other) = m.spec.operation.as_ref() {
            let kind = other.kind.map(|k| k.as_str()).unwrap_or("operation");
            return Err(Start::Wait(format!(
                "the group's volume {} is held by another operation ({kind} {}); the group moves together once it ended",
                m.metadata.name.as_deref().unwrap_or_default(),
                other.name
            )));
        }
        out.push((m, replicated));
    }
    Ok(out)
}

/// The member operations a running lead still has to make.
pub(super) fn start_members(op: &Op, w: &World) -> Option<OpStep> {
    let missing: Vec<String> = op
        .status
        .group_volumes
        .iter()
        .filter(|v| !w.group.children.iter().any(|c| &c.volume == *v))
        .cloned()
        .collect();
    (!missing.is_empty()).then_some(OpStep::StartMembers(missing))
}

/// The member operations to abort: those not ended nor aborted yet.
pub(super) fn abort_members(w: &World) -> Option<OpStep> {
    let running: Vec<String> = w
        .group
        .children
        .iter()
        .filter(|c| !c.ended() && !c.abort)
        .map(|c| c.name.clone())
        .collect();
    (!running.is_empty()).then_some(OpStep::AbortMembers(running))
}

/// Why a lead whose own part is done refuses an abort.
pub(super) fn members_refuse_abort(op: &Op) -> Option<String> {
    (op.status.step.as_deref() == Some(STEP_MEMBERS)).then(|| {
        format!(
            "its own volume is done and the group's other volumes ({}) follow it to stay together; abort their operations to stop them",
            op.status.group_volumes.join(", ")
        )
    })
}

fn child_text(c: &Child) -> String {
    let phase = c
        .phase()
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into());
    let mut s = format!("{} ({phase}", c.volume);
    if let Some(step) = c.status.step.as_deref().filter(|_| !c.ended()) {
        s.push_str(&format!(", {step}"));
        if let Some(p) = &c.status.progress {
            s.push_str(&format!(" {}%", p.percent));
        }
    }
    if let Some(m) = c.status.message.as_deref().filter(|_| {
        matches!(
            c.phase(),
            None | Some(OperationPhase::Pending | OperationPhase::Failed | OperationPhase::Aborted)
        )
    }) {
        s.push_str(&format!(": {m}"));
    }
    s.push(')');
    s
}

fn capacity(w: &World, volume: &str) -> i64 {
    w.group
        .members
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some(volume))
        .map(|m| m.spec.required_capacity_bytes)
        .unwrap_or(0)
}

/// `own`, the step the lead's machine decided, held back while its members run: a lead
/// succeeds only once every member's operation ended, and fails when one of them did not
/// succeed.
pub(super) fn gate(op: &Op, w: &World, own: OpStep) -> OpStep {
    if op.status.group_volumes.is_empty() {
        return own;
    }
    let OpStep::Status(st) = &own else {
        return own;
    };
    if st.phase != Some(OperationPhase::Succeeded) {
        return own;
    }
    let done_msg = st.message.clone().unwrap_or_default();
    let children: Vec<&Child> = op
        .status
        .group_volumes
        .iter()
        .filter_map(|v| w.group.children.iter().find(|c| &c.volume == v))
        .collect();
    if children.len() < op.status.group_volumes.len() || children.iter().any(|c| !c.ended()) {
        let own_bytes = w
            .volume
            .map(|v| v.spec.required_capacity_bytes)
            .unwrap_or(0);
        let mut total = own_bytes;
        let mut done = own_bytes;
        for v in &op.status.group_volumes {
            let cap = capacity(w, v);
            total += cap;
            done += match children.iter().find(|c| &c.volume == v) {
                Some(c) if c.phase() == Some(OperationPhase::Succeeded) => cap,
                Some(c) if !c.ended() => c
                    .status
                    .progress
                    .as_ref()
                    .map(|p| p.bytes_done.min(cap))
                    .unwrap_or(0),
                _ => 0,
            };
        }
        let running: Vec<String> = children
            .iter()
            .filter(|c| !c.ended())
            .map(|c| child_text(c))
            .collect();
        let mut next = op.status.clone();
        next.step = Some(STEP_MEMBERS.into());
        next.progress = Some(progress(done, total, None));
        next.message = Some(format!(
            "{done_msg}; waiting for the group's other volumes: {}",
            running.join(", ")
        ));
        return if next == *op.status {
            OpStep::Wait {
                seconds: POLL_SECONDS,
            }
        } else {
            OpStep::Status(Box::new(next))
        };
    }
    let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
    let failed: Vec<String> = children
        .iter()
        .filter(|c| c.phase() != Some(OperationPhase::Succeeded))
        .map(|c| child_text(c))
        .collect();
    if failed.is_empty() {
        return finish(
            op,
            w,
            OperationPhase::Succeeded,
            format!(
                "{done_msg}; the group's other volumes followed: {} (operations {})",
                op.status.group_volumes.join(", "),
                names.join(", ")
            ),
        );
    }
    let target = op.status.target_node.as_deref().unwrap_or("the same node");
    finish(
        op,
        w,
        OperationPhase::Failed,
        format!(
            "{done_msg}; but not all of the group's other volumes followed: {}; the group is apart until they are on {target} too ({} them there once the cause is fixed)",
            failed.join(", "),
            op.kind.as_str().to_lowercase()
        ),
    )
}

/// The lead's last word once its own undo is done: aborted, after its members' operations
/// ended (naming those that could not be undone).
pub(super) fn aborted(op: &Op, w: &World) -> OpStep {
    let children: Vec<&Child> = w.group.children.iter().collect();
    if children.iter().any(|c| !c.ended()) {
        let running: Vec<String> = children
            .iter()
            .filter(|c| !c.ended())
            .map(|c| child_text(c))
            .collect();
        let msg = format!(
            "aborting: its volume is as it was; waiting for the group's other volumes: {}",
            running.join(", ")
        );
        if op.status.message.as_deref() == Some(msg.as_str()) {
            return OpStep::Wait {
                seconds: POLL_SECONDS,
            };
        }
        let mut st = op.status.clone();
        st.message = Some(msg);
        return OpStep::Status(Box::new(st));
    }
    let completed: Vec<String> = children
        .iter()
        .filter(|c| c.phase() == Some(OperationPhase::Succeeded))
        .map(|c| c.volume.clone())
        .collect();
    let msg = if completed.is_empty() {
        "aborted; the volume is as it was".to_string()
    } else {
        format!(
            "aborted; the volume is as it was, but the group's {} completed before the abort reached them: the group is apart",
            completed.join(", ")
        )
    };
    finish(op, w, OperationPhase::Aborted, msg)
}

#[cfg(test)]
mod tests {
    use super::super::convert::Convert;
    use super::super::migrate::Migrate;
    use super::super::testing::{ready, volume, Sim, GI};
    use super::*;
    use crate::placement::PoolView;
    use hwameistor_api::{
        LocalVolumeConvertSpec, LocalVolumeMigrateSpec, OperationKind, OperationRef, PoolClass,
    };

    fn migrate_spec(all: bool) -> LocalVolumeMigrateSpec {
        LocalVolumeMigrateSpec {
            volume_name: "vol".into(),
            source_node: "a".into(),
            target_nodes: Vec::new(),
            migrate_all_volumes: all,
            bandwidth_limit_bytes_per_second: None,
            abort: false,
            ttl_seconds_after_finished: None,
        }
    }

    fn convert_spec(all: bool) -> LocalVolumeConvertSpec {
        LocalVolumeConvertSpec {
            volume_name: "vol".into(),
            replica_number: 2,
            target_node: None,
            convert_all_volumes: all,
            abort: false,
            ttl_seconds_after_finished: None,
        }
    }

    /// A placed volume of the group named `name`, of `bytes` in `class`, on `on`.
    fn member(name: &str, on: &[&str], class: PoolClass, bytes: i64) -> LocalVolume {
        let mut m = volume(on);
        m.metadata.name = Some(name.into());
        m.metadata.uid = Some(format!("{name}-uid"));
        m.spec.pool_name = class.pool_name().into();
        m.spec.required_capacity_bytes = bytes;
        if let Some(c) = m.spec.config.as_mut() {
            c.required_capacity_bytes = bytes;
        }
        m
    }

    /// Nodes a, b, c: b has the most HDD room but no SSD pool; c has both.
    fn sim(kind: OperationKind, own_on: &[&str]) -> Sim {
        let mut sim = ready(Sim::new(kind, volume(own_on), &["a", "b", "c", "d"]));
        sim.nodes.retain(|n| n.name != "d");
        for n in &mut sim.nodes {
            let hdd = n.pools.get_mut(&PoolClass::Hdd).expect("hdd");
            hdd.free = if n.name == "b" { 60 * GI } else { 40 * GI };
            if n.name != "b" {
                n.pools.insert(
                    PoolClass::Ssd,
                    PoolView {
                        total: 100 * GI,
                        free: 30 * GI,
                        extent: 4 << 20,
                        volumes: 0,
                        thin_percent: 100,
                    },
                );
            }
        }
        sim
    }

    fn child_phase(sim: &mut Sim, volume: &str, phase: OperationPhase, msg: &str) {
        let c = sim
            .children
            .iter_mut()
            .find(|c| c.volume == volume)
            .expect("member operation");
        c.status.phase = Some(phase);
        c.status.message = Some(msg.into());
    }

    /// Steps until `pred` holds (at most 60).
    fn until(sim: &mut Sim, m: &dyn Machine, pred: impl Fn(&Sim) -> bool) {
        for _ in 0..60 {
            if pred(sim) {
                return;
            }
            sim.step(m);
        }
        panic!("not reached; status {:?}\nlog {:?}", sim.status, sim.log);
    }

    #[test]
    fn a_group_migration_goes_where_every_volume_fits_and_makes_one_operation_per_member() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![
            member("m-ssd", &["a"], PoolClass::Ssd, 20 * GI),
            // Not on the source node: it stays where it is.
            member("m-elsewhere", &["c"], PoolClass::Hdd, GI),
        ];
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| !s.children.is_empty());
        // b has the most room but no SSD pool for m-ssd: c takes the group.
        assert_eq!(sim.status.target_node.as_deref(), Some("c"));
        assert_eq!(sim.status.group_volumes, vec!["m-ssd".to_string()]);
        assert_eq!(sim.children.len(), 1);
        assert_eq!(sim.children[0].name, "op-m-ssd");
        // Its own volume moves; the lead waits for its member before it ends.
        until(&mut sim, &m, |s| {
            s.status.step.as_deref() == Some(STEP_MEMBERS)
        });
        assert_eq!(sim.config_nodes(), vec!["c".to_string()]);
        assert_eq!(sim.status.phase, Some(OperationPhase::Running));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("waiting for the group's other volumes: m-ssd"),
            "{msg}"
        );
        // Its own bytes done, the member's not yet.
        let p = sim.status.progress.clone().expect("progress");
        assert_eq!((p.bytes_done, p.bytes_total), (GI, 21 * GI));
        for _ in 0..5 {
            assert!(!matches!(sim.step(&m), OpStep::StartMembers(_)));
            assert_eq!(sim.status.phase, Some(OperationPhase::Running));
        }
        child_phase(&mut sim, "m-ssd", OperationPhase::Succeeded, "moved");
        sim.run(&m, 10);
        assert_eq!(sim.status.phase, Some(OperationPhase::Succeeded));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("followed: m-ssd (operations op-m-ssd)"),
            "{msg}"
        );
    }

    #[test]
    fn without_migrate_all_volumes_only_its_volume_moves() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![member("m-ssd", &["a"], PoolClass::Ssd, 20 * GI)];
        let spec = migrate_spec(false);
        sim.run(&Migrate { spec: &spec }, 60);
        assert_eq!(sim.status.phase, Some(OperationPhase::Succeeded));
        assert_eq!(sim.status.target_node.as_deref(), Some("b"));
        assert!(sim.children.is_empty() && sim.status.group_volumes.is_empty());
    }

    #[test]
    fn no_node_with_room_for_the_whole_group_fails_before_anything_changes() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![member("m-big", &["a"], PoolClass::Ssd, 35 * GI)];
        let spec = migrate_spec(true);
        sim.run(&Migrate { spec: &spec }, 20);
        assert_eq!(sim.status.phase, Some(OperationPhase::Failed));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("no node can take the volume and the group's volumes going with it (m-big) together")
                && msg.contains("b has no SSD pool (for the group's volume m-big of 35Gi)")
                && msg.contains("c has 30Gi free (for the group's volume m-big of 35Gi)"),
            "{msg}"
        );
        assert!(sim.children.is_empty());
        assert_eq!(sim.config_nodes(), vec!["a".to_string()]);
        assert!(sim.volume().spec.operation.is_none());
    }

    #[test]
    fn a_node_holding_a_members_replica_is_not_the_target() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        // An HA member on a and b: it leaves a, but cannot go to b where it is already.
        sim.members = vec![member("m-ha", &["a", "b"], PoolClass::Hdd, GI)];
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| !s.children.is_empty());
        assert_eq!(sim.status.target_node.as_deref(), Some("c"));
    }

    #[test]
    fn a_member_held_by_another_operation_keeps_the_lead_pending() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        let mut held = member("m-held", &["a"], PoolClass::Hdd, GI);
        held.spec.operation = Some(OperationRef {
            kind: Some(OperationKind::Expand),
            name: "grow-it".into(),
            uid: "x".into(),
            bandwidth_limit_bytes_per_second: None,
        });
        sim.members = vec![held];
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        for _ in 0..5 {
            sim.step(&m);
        }
        assert_eq!(sim.status.phase, Some(OperationPhase::Pending));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("m-held is held by another operation (Expand grow-it)"),
            "{msg}"
        );
        assert!(
            sim.volume().spec.operation.is_none(),
            "its own volume not taken"
        );
        sim.members[0].spec.operation = None;
        until(&mut sim, &m, |s| !s.children.is_empty());
    }

    #[test]
    fn a_member_that_fails_fails_the_lead_and_says_the_group_is_apart() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![
            member("m1", &["a"], PoolClass::Hdd, GI),
            member("m2", &["a"], PoolClass::Hdd, GI),
        ];
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| {
            s.status.step.as_deref() == Some(STEP_MEMBERS)
        });
        child_phase(&mut sim, "m1", OperationPhase::Succeeded, "moved");
        child_phase(&mut sim, "m2", OperationPhase::Failed, "its pool is gone");
        sim.run(&m, 10);
        assert_eq!(sim.status.phase, Some(OperationPhase::Failed));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(msg.contains("m2 (Failed: its pool is gone)"), "{msg}");
        assert!(
            msg.contains("the group is apart until they are on b too"),
            "{msg}"
        );
        assert!(!msg.contains("m1 ("), "{msg}");
        // Nothing left to stop: the one that failed ended.
        assert!(!sim.children.iter().any(|c| c.abort));
    }

    #[test]
    fn aborting_the_lead_aborts_its_members_and_ends_once_they_ended() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![member("m1", &["a"], PoolClass::Hdd, GI)];
        sim.held.insert("b".into());
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| {
            s.status.step.as_deref() == Some(super::super::migrate::STEP_COPY)
        });
        child_phase(&mut sim, "m1", OperationPhase::Running, "");
        sim.abort = true;
        until(&mut sim, &m, |s| s.children[0].abort);
        until(&mut sim, &m, |s| {
            s.config_nodes() == vec!["a".to_string()] && s.replica_nodes() == vec!["a".to_string()]
        });
        for _ in 0..5 {
            sim.step(&m);
        }
        // Its own volume is back; it waits for the member's undo.
        assert_eq!(sim.status.phase, Some(OperationPhase::Aborting));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("waiting for the group's other volumes: m1 (Running"),
            "{msg}"
        );
        child_phase(&mut sim, "m1", OperationPhase::Aborted, "aborted");
        sim.run(&m, 10);
        assert_eq!(sim.status.phase, Some(OperationPhase::Aborted));
        assert_eq!(
            sim.status.message.as_deref(),
            Some("aborted; the volume is as it was")
        );
    }

    #[test]
    fn a_lead_whose_own_part_is_done_refuses_an_abort_and_its_members_go_on() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![member("m1", &["a"], PoolClass::Hdd, GI)];
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| {
            s.status.step.as_deref() == Some(STEP_MEMBERS)
        });
        sim.abort = true;
        for _ in 0..5 {
            sim.step(&m);
        }
        assert_eq!(sim.status.phase, Some(OperationPhase::Running));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.starts_with("abort refused: its own volume is done"),
            "{msg}"
        );
        assert!(!sim.children[0].abort, "the member is not stopped");
        child_phase(&mut sim, "m1", OperationPhase::Succeeded, "moved");
        sim.run(&m, 10);
        assert_eq!(sim.status.phase, Some(OperationPhase::Succeeded));
    }

    #[test]
    fn a_lead_that_failed_stops_its_running_members() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![member("m1", &["a"], PoolClass::Hdd, GI)];
        sim.held.insert("b".into());
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| !s.children.is_empty());
        child_phase(&mut sim, "m1", OperationPhase::Running, "");
        // Something else rewrites the volume's placement under it.
        until(&mut sim, &m, |s| s.config_nodes().len() == 2);
        if let Some(c) = sim.v.as_mut().and_then(|v| v.spec.config.as_mut()) {
            c.replicas.retain(|a| a.hostname == "c");
            c.version += 1;
        }
        until(&mut sim, &m, |s| {
            s.status.phase == Some(OperationPhase::Failed)
        });
        until(&mut sim, &m, |s| s.children[0].abort);
    }

    #[test]
    fn a_deleted_member_operation_is_made_again() {
        let mut sim = sim(OperationKind::Migrate, &["a"]);
        sim.members = vec![member("m1", &["a"], PoolClass::Hdd, GI)];
        let spec = migrate_spec(true);
        let m = Migrate { spec: &spec };
        until(&mut sim, &m, |s| !s.children.is_empty());
        sim.children.clear();
        assert_eq!(sim.step(&m), OpStep::StartMembers(vec!["m1".into()]));
    }

    #[test]
    fn a_group_conversion_puts_every_new_replica_on_one_node() {
        let mut sim = sim(OperationKind::Convert, &["a"]);
        sim.members = vec![
            member("m-ssd", &["a"], PoolClass::Ssd, 10 * GI),
            // Replicated already: nothing to do for it.
            member("m-ha", &["a", "c"], PoolClass::Hdd, GI),
        ];
        let spec = convert_spec(true);
        let m = Convert { spec: &spec };
        until(&mut sim, &m, |s| !s.children.is_empty());
        assert_eq!(sim.status.target_node.as_deref(), Some("c"));
        assert_eq!(sim.status.group_volumes, vec!["m-ssd".to_string()]);
        until(&mut sim, &m, |s| {
            s.status.step.as_deref() == Some(STEP_MEMBERS)
        });
        child_phase(&mut sim, "m-ssd", OperationPhase::Succeeded, "replicated");
        sim.run(&m, 10);
        assert_eq!(sim.status.phase, Some(OperationPhase::Succeeded));
    }

    #[test]
    fn converting_a_replicated_volume_of_a_group_with_plain_members_says_which_to_convert() {
        let mut sim = sim(OperationKind::Convert, &["a", "c"]);
        sim.members = vec![member("m-plain", &["a"], PoolClass::Hdd, GI)];
        let spec = convert_spec(true);
        sim.run(&Convert { spec: &spec }, 10);
        assert_eq!(sim.status.phase, Some(OperationPhase::Failed));
        let msg = sim.status.message.clone().unwrap_or_default();
        assert!(
            msg.contains("the group's m-plain are not: convert one of those"),
            "{msg}"
        );
    }

    #[test]
    fn member_operation_names_are_stable_and_bounded() {
        assert_eq!(member_operation_name("mig-1", "vol-a"), "mig-1-vol-a");
        let long = member_operation_name(&"x".repeat(250), "vol-a");
        assert!(long.len() <= 253);
        assert_eq!(long, member_operation_name(&"x".repeat(250), "vol-a"));
        assert_ne!(long, member_operation_name(&"x".repeat(250), "vol-b"));
    }
}
