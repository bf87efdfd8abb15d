//! Every operation's transitions, abort points and refusals, on the simulation in
//! `testing`.

use super::convert::Convert;
use super::expand::Expand;
use super::migrate::{ha_in_sync, Migrate};
use super::testing::{convertible_volume, ready, volume, Sim, GI};
use super::*;
use hwameistor_api::{
    HaState, LocalVolumeConvertSpec, LocalVolumeMigrateSpec, OperationKind, OperationPhase,
    VolumeState,
};

fn migrate_spec(from: &str, to: &[&str]) -> LocalVolumeMigrateSpec {
    LocalVolumeMigrateSpec {
        volume_name: "vol".into(),
        source_node: from.into(),
        target_nodes: to.iter().map(|n| n.to_string()).collect(),
        migrate_all_volumes: true,
        bandwidth_limit_bytes_per_second: None,
        abort: false,
        ttl_seconds_after_finished: None,
    }
}

fn convert_spec() -> LocalVolumeConvertSpec {
    LocalVolumeConvertSpec {
        volume_name: "vol".into(),
        replica_number: 2,
        convert_all_volumes: true,
        target_node: None,
        abort: false,
        ttl_seconds_after_finished: None,
    }
}

fn phase(sim: &Sim) -> Option<OperationPhase> {
    sim.status.phase
}

/// Invariants checked after every step of a move of `source`: the source's replica is
/// deleted only once the new one is complete; the source is never both leaving and gone
/// from the placement before the target is in sync.
fn check_move_invariants(sim: &Sim, source: &str, target: &str, replicated: bool) {
    let last = sim.log.last().expect("a step");
    if let OpStep::DeleteReplica(name) = last {
        if name.ends_with(source) {
            assert_eq!(sim.status.target_node.as_deref(), Some(target));
            assert!(
                !sim.config().replicas.iter().any(|a| a.hostname == source),
                "the source leaves the placement before its replica is deleted"
            );
            let t = sim
                .replicas
                .iter()
                .find(|r| r.spec.node_name == target)
                .expect("target replica exists when the source goes");
            if replicated && crate::ha::alone(sim.config()) {
                // It serves alone now: it holds up-to-date data.
                assert!(t
                    .status
                    .as_ref()
                    .and_then(|s| s.replication.as_ref())
                    .is_some_and(|s| s.disk_state == "UpToDate"));
            } else if replicated {
                assert!(ha_in_sync(sim.config(), &sim.replicas, target));
            } else {
                assert!(t
                    .status
                    .as_ref()
                    .and_then(|s| s.copy.as_ref())
                    .is_some_and(|c| c.verified));
            }
        }
    }
    if let OpStep::UpdateVolume(c) = last {
        if let Some(cfg) = &c.config {
            if !cfg.replicas.iter().any(|a| a.hostname == source)
                && sim.status.phase == Some(OperationPhase::Running)
            {
                let t = sim.replicas.iter().find(|r| r.spec.node_name == target);
                assert!(t.is_some(), "pruned only with the new replica there");
            }
        }
    }
}

#[test]
fn expand_walks_grow_wait_succeeded_and_releases() {
    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a", "b"]));
    let m = Expand {
        required_capacity_bytes: 2 * GI,
    };
    assert!(matches!(sim.step(&m), OpStep::Acquire(_)));
    assert!(matches!(sim.step(&m), OpStep::Status(_)));
    assert_eq!(phase(&sim), Some(OperationPhase::Running));
    assert_eq!(sim.status.original_capacity_bytes, Some(GI));
    assert!(sim.status.start_time.is_some());
    sim.run(&m, 20);
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.volume().spec.required_capacity_bytes, 2 * GI);
    assert!(sim.volume().spec.operation.is_none(), "released");
    assert!(sim.status.completion_time.is_some());
    let running = sim
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Running")
        .expect("Running condition");
    assert_eq!(
        (running.status.as_str(), running.reason.as_str()),
        ("False", "Succeeded")
    );
    // History until the time-to-live, then deleted.
    assert!(matches!(sim.step(&m), OpStep::Wait { .. }));
    sim.now = jiff::Timestamp::from_second(sim.now.as_second() + 3600).expect("t");
    assert_eq!(sim.step(&m), OpStep::Delete);
}

#[test]
fn expand_refusals_and_no_ops() {
    let m = |b| Expand {
        required_capacity_bytes: b,
    };
    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.step(&m(GI / 2));
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("never shrink")));

    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.step(&m(GI));
    assert_eq!(phase(&sim), Some(OperationPhase::Succeeded));
    assert!(sim.volume().spec.operation.is_none(), "never acquired");

    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.step(&m(500 * GI));
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));
    let msg = sim.status.message.clone().unwrap_or_default();
    assert!(
        msg.contains("no room to grow") && msg.contains("a can hold"),
        "{msg}"
    );
    assert_eq!(
        sim.volume().spec.required_capacity_bytes,
        GI,
        "nothing changed"
    );
}

#[test]
fn expand_abort_before_growing_changes_nothing_after_is_refused() {
    let m = Expand {
        required_capacity_bytes: 2 * GI,
    };
    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.step(&m); // acquire
    sim.step(&m); // running
    sim.abort = true;
    sim.run(&m, 10);
    assert_eq!(phase(&sim), Some(OperationPhase::Aborted));
    assert_eq!(sim.volume().spec.required_capacity_bytes, GI);

    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    while sim.volume().spec.required_capacity_bytes < 2 * GI {
        sim.step(&m);
    }
    sim.abort = true;
    sim.step(&m);
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.starts_with("abort refused")));
    sim.run(&m, 10);
    assert_eq!(phase(&sim), Some(OperationPhase::Succeeded));
}

#[test]
fn an_operation_waits_for_a_held_volume_and_for_a_slot() {
    let m = Expand {
        required_capacity_bytes: 2 * GI,
    };
    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.v.as_mut().expect("v").spec.operation = Some(hwameistor_api::OperationRef {
        kind: Some(OperationKind::Migrate),
        name: "other".into(),
        uid: "other-uid".into(),
        bandwidth_limit_bytes_per_second: None,
    });
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Pending));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("Migrate other")));
    assert!(
        matches!(sim.step(&m), OpStep::Wait { .. }),
        "no status churn"
    );
    sim.v.as_mut().expect("v").spec.operation = None;
    sim.slot = Err("4 operations move data already".into());
    sim.step(&m);
    assert_eq!(
        sim.status.message.as_deref(),
        Some("4 operations move data already")
    );
    sim.slot = Ok(());
    sim.run(&m, 20);
    assert_eq!(phase(&sim), Some(OperationPhase::Succeeded));
}

#[test]
fn an_operation_fails_when_its_volume_goes_or_its_hold_is_lost() {
    let m = Expand {
        required_capacity_bytes: 2 * GI,
    };
    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.v = None;
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));

    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.step(&m);
    sim.step(&m);
    sim.v.as_mut().expect("v").spec.operation = None;
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("no longer records")));
}

#[test]
fn migrate_ha_joins_syncs_switches_accessibility_then_prunes() {
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a", "b"]),
        &["a", "b", "c"],
    ));
    let spec = migrate_spec("b", &[]);
    let m = Migrate { spec: &spec };
    sim.held.insert("c".into());
    let mut saw_sync = false;
    for _ in 0..12 {
        sim.step(&m);
        check_move_invariants(&sim, "b", "c", true);
        if sim.status.step.as_deref() == Some(migrate::STEP_SYNC) {
            saw_sync = true;
            let p = sim.status.progress.clone().expect("progress");
            assert_eq!((p.bytes_total, p.percent), (GI, 50));
            // During the sync the source is kept, down, with its data.
            let src = sim
                .config()
                .replicas
                .iter()
                .find(|a| a.hostname == "b")
                .cloned();
            assert!(src.is_some_and(|a| a.leaving && !a.primary));
            assert!(sim.replicas.iter().any(|r| r.spec.node_name == "b"));
        }
    }
    assert!(saw_sync, "{:?}", sim.status);
    assert_eq!(phase(&sim), Some(OperationPhase::Running));
    sim.held.clear();
    sim.settle();
    for _ in 0..30 {
        sim.step(&m);
        check_move_invariants(&sim, "b", "c", true);
        if sim.volume().spec.operation.is_none() {
            break;
        }
    }
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.config_nodes(), ["a", "c"]);
    assert_eq!(sim.replica_nodes(), ["a", "c"]);
    assert!(sim
        .config()
        .replicas
        .iter()
        .all(|a| !a.leaving && !a.outdated));
    assert_eq!(sim.volume().spec.accessibility.nodes, ["a", "c"]);
    assert_eq!(
        sim.pv.as_ref().map(|p| p.nodes.clone()),
        Some(vec!["a".into(), "c".into()])
    );
    assert_eq!(
        sim.volume().status.as_ref().and_then(|s| s.ha_state),
        Some(hwameistor_api::HaState::Healthy)
    );
    // The primary stayed where it was.
    assert!(sim
        .config()
        .replicas
        .iter()
        .any(|a| a.hostname == "a" && a.primary));
}

#[test]
fn migrate_ha_of_the_primary_moves_the_primary_to_the_staying_replica() {
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a", "b"]),
        &["a", "b", "c"],
    ));
    let spec = migrate_spec("a", &["c"]);
    let m = Migrate { spec: &spec };
    sim.run(&m, 40);
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.config_nodes(), ["b", "c"]);
    assert!(sim
        .config()
        .replicas
        .iter()
        .any(|a| a.hostname == "b" && a.primary));
}

#[test]
fn migrate_waits_while_in_use_where_it_must_not_be() {
    // HA: in use on the source waits; in use on the staying node does not.
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a", "b"]),
        &["a", "b", "c"],
    ));
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("b".into());
    let spec = migrate_spec("b", &[]);
    let m = Migrate { spec: &spec };
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Pending));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("in use on b")));
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("a".into());
    assert!(matches!(sim.step(&m), OpStep::Acquire(_)));

    // Without replication: in use anywhere waits.
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("a".into());
    let spec = migrate_spec("a", &[]);
    let m = Migrate { spec: &spec };
    sim.step(&m);
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("copied while nobody uses it")));
}

#[test]
fn migrate_refusals_say_what_is_wrong() {
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    let spec = migrate_spec("z", &[]);
    sim.step(&Migrate { spec: &spec });
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("no replica on z; its replicas are on a")));

    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    let spec = migrate_spec("a", &["a"]);
    sim.step(&Migrate { spec: &spec });
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));
    assert!(
        sim.status
            .message
            .as_deref()
            .is_some_and(|s| s.contains("a holds a replica of the volume already")),
        "{:?}",
        sim.status.message
    );

    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.nodes[1]
        .pools
        .values_mut()
        .for_each(|p| p.free = GI / 2);
    let spec = migrate_spec("a", &[]);
    sim.step(&Migrate { spec: &spec });
    assert!(
        sim.status.message.as_deref().is_some_and(
            |s| s.contains("no node can take the replica") && s.contains("b has 512Mi free")
        ),
        "{:?}",
        sim.status.message
    );

    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.movers.remove("b");
    sim.step(&Migrate { spec: &spec });
    assert!(
        sim.status
            .message
            .as_deref()
            .is_some_and(|s| s.contains("b runs no block mover")),
        "{:?}",
        sim.status.message
    );
}

#[test]
fn a_replica_with_snapshots_beside_it_does_not_move() {
    use hwameistor_api::{LocalVolumeSnapshot, LocalVolumeSnapshotSpec};
    let snap = |name: &str, node: &str| {
        LocalVolumeSnapshot::new(
            name,
            LocalVolumeSnapshotSpec {
                source_volume: "vol".into(),
                node_name: node.into(),
                pool_name: "LocalStorage_PoolHDD".into(),
                source_capacity_bytes: GI,
                cow_capacity_bytes: None,
            },
        )
    };
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.snapshots = vec![snap("nightly", "a")];
    let spec = migrate_spec("a", &["b"]);
    sim.step(&Migrate { spec: &spec });
    assert_eq!(phase(&sim), Some(OperationPhase::Failed));
    assert!(
        sim.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("the volume has snapshots on a (nightly)")
                && m.contains("delete them")),
        "{:?}",
        sim.status.message
    );
    // Snapshots on another node (an HA volume's other replica) do not hold this one.
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.snapshots = vec![snap("elsewhere", "c")];
    sim.step(&Migrate { spec: &spec });
    assert_ne!(
        phase(&sim),
        Some(OperationPhase::Failed),
        "{:?}",
        sim.status
    );
}

#[test]
fn migrate_without_replication_copies_verifies_then_prunes() {
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    let spec = migrate_spec("a", &[]);
    let m = Migrate { spec: &spec };
    sim.held.insert("b".into());
    for _ in 0..10 {
        sim.step(&m);
        check_move_invariants(&sim, "a", "b", false);
    }
    assert_eq!(sim.status.step.as_deref(), Some(migrate::STEP_COPY));
    let p = sim.status.progress.clone().expect("progress");
    assert_eq!((p.percent, p.bytes_per_second), (25, Some(100 << 20)));
    assert!(p.eta_seconds.is_some());
    let copy = sim
        .replicas
        .iter()
        .find(|r| r.spec.node_name == "b")
        .and_then(|r| r.spec.copy_from.clone())
        .expect("the new replica names its source");
    assert_eq!(
        (copy.node.as_str(), copy.operation_uid.as_str()),
        ("a", "op-uid")
    );
    sim.held.clear();
    sim.settle();
    for _ in 0..30 {
        sim.step(&m);
        check_move_invariants(&sim, "a", "b", false);
        if sim.volume().spec.operation.is_none() {
            break;
        }
    }
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.config_nodes(), ["b"]);
    assert_eq!(sim.replica_nodes(), ["b"]);
    assert!(sim.config().replicas[0].copy_from.is_none());
    assert!(
        sim.replicas[0].spec.copy_from.is_none(),
        "copy source cleared"
    );
    assert_eq!(
        sim.pv.as_ref().map(|p| p.nodes.clone()),
        Some(vec!["b".into()])
    );
    assert_eq!(
        sim.volume().status.as_ref().and_then(|s| s.state),
        Some(VolumeState::Ready)
    );
}

/// Aborts a move after every possible number of steps: it ends Aborted with the volume as
/// it was (its data on the source), or, once the source left the placement, the abort is
/// refused and it completes.
fn abort_at_every_step(volume_on: &[&str], source: &str, nodes: &[&str]) {
    let replicated = volume_on.len() > 1;
    let spec = migrate_spec(source, &[]);
    let m = Migrate { spec: &spec };
    let mut total = None;
    let mut undid_a_join = false;
    let mut refused = false;
    for k in 0.. {
        let mut sim = ready(Sim::new(OperationKind::Migrate, volume(volume_on), nodes));
        let before_nodes = sim.config_nodes();
        let before_access = sim.volume().spec.accessibility.nodes.clone();
        for _ in 0..k {
            sim.step(&m);
        }
        if total.is_some_and(|t| k > t) {
            break;
        }
        if sim.status.phase.is_some_and(|p| p.is_final()) {
            total = Some(k);
        }
        sim.abort = true;
        sim.run(&m, 60);
        let target = sim.status.target_node.clone().unwrap_or_default();
        match phase(&sim) {
            Some(OperationPhase::Aborted) => {
                undid_a_join |= sim.log.iter().any(
                    |s| matches!(s, OpStep::DeleteReplica(n) if !target.is_empty() && n.ends_with(&target)),
                );
                assert_eq!(sim.config_nodes(), before_nodes, "abort after {k} steps");
                assert_eq!(sim.replica_nodes(), before_nodes, "abort after {k} steps");
                assert!(sim
                    .config()
                    .replicas
                    .iter()
                    .all(|a| !a.leaving && a.copy_from.is_none()));
                assert_eq!(
                    sim.volume().spec.accessibility.nodes,
                    before_access,
                    "after {k}"
                );
                assert_eq!(
                    sim.pv.as_ref().map(|p| p.nodes.clone()),
                    Some(before_access.clone())
                );
                if replicated {
                    // Back in the replication; the fence mark is cleared once resynced.
                    assert!(
                        sim.config().replicas.iter().all(|a| !a.outdated),
                        "after {k}"
                    );
                    assert!(sim.config().replicas.iter().any(|a| a.primary));
                }
            }
            Some(OperationPhase::Succeeded) => {
                refused |= sim.status.message.is_some()
                    && sim.log.iter().any(|s| matches!(s, OpStep::Status(st) if st.message.as_deref().is_some_and(|m| m.starts_with("abort refused"))));
                assert!(!sim.config_nodes().contains(&source.to_string()));
                assert!(sim.config_nodes().contains(&target));
            }
            other => panic!("abort after {k} steps ended {other:?}: {:?}", sim.status),
        }
        assert!(sim.volume().spec.operation.is_none());
    }
    assert!(total.is_some());
    assert!(undid_a_join, "some abort undid a joined replica");
    assert!(refused, "an abort after the prune was refused");
}

#[test]
fn migrate_ha_abort_at_every_step() {
    abort_at_every_step(&["a", "b"], "b", &["a", "b", "c"]);
    abort_at_every_step(&["a", "b"], "a", &["a", "b", "c"]);
}

#[test]
fn migrate_without_replication_abort_at_every_step() {
    abort_at_every_step(&["a"], "a", &["a", "b"]);
}

#[test]
fn convert_adds_drbd_with_the_existing_replica_as_the_source_of_the_sync() {
    let mut sim = ready(Sim::new(
        OperationKind::Convert,
        volume(&["a"]),
        &["a", "b"],
    ));
    let spec = convert_spec();
    let m = Convert { spec: &spec };
    sim.held.insert("b".into());
    for _ in 0..10 {
        sim.step(&m);
    }
    assert_eq!(sim.status.step.as_deref(), Some(convert::STEP_SYNC));
    let c = sim.config().clone();
    assert_eq!(c.resource_id, 3);
    assert_eq!(sim.volume().spec.replica_number, 2);
    let a = c.replicas.iter().find(|a| a.hostname == "a").expect("a");
    let b = c.replicas.iter().find(|a| a.hostname == "b").expect("b");
    assert!(
        a.primary && !b.primary && b.outdated,
        "only the data's replica may be forced"
    );
    // Both replicas run replication now: the old one over its data volume, untouched.
    assert!(sim.replicas.iter().all(|r| r.spec.replication.is_some()));
    sim.held.clear();
    sim.settle();
    sim.run(&m, 30);
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert!(!sim.config().initial);
    assert_eq!(sim.volume().spec.accessibility.nodes, ["a", "b"]);
    assert_eq!(
        sim.pv.as_ref().map(|p| p.nodes.clone()),
        Some(vec!["a".into(), "b".into()])
    );
}

#[test]
fn convert_waits_while_published_and_an_abort_after_drbd_leaves_the_volume_convertible() {
    let spec = convert_spec();
    let m = Convert { spec: &spec };
    let mut sim = ready(Sim::new(
        OperationKind::Convert,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("a".into());
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Pending));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("converts once unpublished")));
    sim.abort = true;
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Aborted));

    // Aborted once DRBD is under the volume: the new replica goes, the volume keeps its
    // DRBD layer on a alone (convertible now), its data volume untouched.
    let mut sim = ready(Sim::new(
        OperationKind::Convert,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.held.insert("b".into());
    while !crate::ha::is_ha(sim.config()) {
        sim.step(&m);
    }
    sim.settle();
    sim.abort = true;
    sim.run(&m, 30);
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Aborted),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.config_nodes(), ["a"]);
    assert_eq!(sim.replica_nodes(), ["a"]);
    assert!(crate::ha::alone(sim.config()));
    assert!(sim.volume().spec.convertible && sim.volume().spec.replica_number == 1);
    let a = &sim.config().replicas[0];
    assert!(a.primary && !a.outdated);
    assert!(sim
        .log
        .iter()
        .all(|s| !matches!(s, OpStep::DeleteReplica(n) if n.ends_with("-a"))));
    // A later conversion of it runs online.
    let mut again = Sim {
        status: Default::default(),
        abort: false,
        held: Default::default(),
        log: Vec::new(),
        ..sim
    };
    again
        .v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("a".into());
    for _ in 0..20 {
        again.step(&m);
    }
    assert_eq!(
        again.status.step.as_deref(),
        Some(convert::STEP_ACCESS),
        "replicated while in use"
    );
    assert_eq!(again.config_nodes().len(), 2);
    again
        .v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = None;
    again.run(&m, 20);
    assert_eq!(
        phase(&again),
        Some(OperationPhase::Succeeded),
        "{:?}",
        again.status
    );

    let mut sim = ready(Sim::new(
        OperationKind::Convert,
        volume(&["a", "b"]),
        &["a", "b"],
    ));
    sim.step(&m);
    assert_eq!(phase(&sim), Some(OperationPhase::Succeeded), "already HA");
}

#[test]
fn progress_rounds_and_estimates() {
    let p = progress(GI / 4, GI, Some(1 << 20));
    assert_eq!(p.percent, 25);
    assert_eq!(p.eta_seconds, Some(768));
    let p = progress(2 * GI, GI, None);
    assert_eq!((p.bytes_done, p.percent, p.eta_seconds), (GI, 100, None));
    assert_eq!(progress(0, 0, Some(0)).percent, 100);
}

#[test]
fn the_pv_is_recreated_only_once_the_volume_is_unpublished() {
    // HA volume in use on the staying node: the data moves online; the old replica goes;
    // the PV waits for the pod to stop.
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a", "b"]),
        &["a", "b", "c"],
    ));
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("a".into());
    let spec = migrate_spec("b", &["c"]);
    let m = Migrate { spec: &spec };
    for _ in 0..30 {
        sim.step(&m);
    }
    assert_eq!(phase(&sim), Some(OperationPhase::Running));
    assert_eq!(sim.status.step.as_deref(), Some(migrate::STEP_ACCESS));
    assert!(
        sim.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("re-created with a, c once the volume is unpublished")),
        "{:?}",
        sim.status.message
    );
    assert_eq!(
        sim.replica_nodes(),
        ["a", "c"],
        "the old replica did not wait for the PV"
    );
    assert_eq!(sim.volume().spec.accessibility.nodes, ["a", "c"]);
    assert_eq!(
        sim.pv.as_ref().map(|p| p.nodes.clone()),
        Some(vec!["a".into(), "b".into()])
    );
    assert!(
        !sim.log
            .iter()
            .any(|s| matches!(s, OpStep::RewritePvAffinity { .. })),
        "never under a running pod"
    );
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = None;
    sim.run(&m, 10);
    assert_eq!(phase(&sim), Some(OperationPhase::Succeeded));
    assert_eq!(
        sim.pv.as_ref().map(|p| p.nodes.clone()),
        Some(vec!["a".into(), "c".into()])
    );
}

#[test]
fn the_finalizer_goes_on_first_and_a_deleted_running_operation_is_undone_before_it_goes() {
    let spec = migrate_spec("a", &[]);
    let m = Migrate { spec: &spec };
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.has_finalizer = false;
    assert_eq!(sim.step(&m), OpStep::AddFinalizer);
    assert!(matches!(sim.step(&m), OpStep::Acquire(_)));
    sim.held.insert("b".into());
    while sim.status.step.as_deref() != Some(migrate::STEP_COPY) {
        sim.step(&m);
    }
    // `kubectl delete` of the running migration: undone like an abort, then let go.
    sim.deleting = true;
    sim.run(&m, 30);
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Aborted),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.config_nodes(), ["a"]);
    assert!(sim.volume().spec.operation.is_none());
    assert_eq!(sim.step(&m), OpStep::RemoveFinalizer);
    assert!(sim.deleted);

    // Deleted before it was taken up (no finalizer yet): nothing happens to the volume.
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        volume(&["a"]),
        &["a", "b"],
    ));
    sim.has_finalizer = false;
    sim.deleting = true;
    assert!(matches!(sim.step(&m), OpStep::Wait { .. }));
    assert!(sim.volume().spec.operation.is_none());

    // An expired one: deleted, then its finalizer removed.
    let e = Expand {
        required_capacity_bytes: 2 * GI,
    };
    let mut sim = ready(Sim::new(OperationKind::Expand, volume(&["a"]), &["a"]));
    sim.run(&e, 20);
    sim.now = jiff::Timestamp::from_second(sim.now.as_second() + 7200).expect("t");
    assert_eq!(sim.step(&e), OpStep::Delete);
    assert_eq!(sim.step(&e), OpStep::RemoveFinalizer);
    assert!(sim.deleted);
}

/// A volume created convertible, in use on `a`: converted online, its replica on `a` never
/// leaving nor losing the primary role, its resource kept; the PV follows once unpublished.
#[test]
fn convert_of_a_convertible_volume_runs_online_and_keeps_its_resource() {
    let spec = convert_spec();
    let m = Convert { spec: &spec };
    let mut sim = ready(Sim::new(
        OperationKind::Convert,
        convertible_volume("a"),
        &["a", "b"],
    ));
    assert_eq!(sim.volume().status.as_ref().and_then(|s| s.ha_state), None);
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = Some("a".into());
    sim.held.insert("b".into());
    for _ in 0..10 {
        sim.step(&m);
    }
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Running),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.status.step.as_deref(), Some(convert::STEP_SYNC));
    let c = sim.config().clone();
    assert_eq!(c.resource_id, 7, "the volume's resource is kept");
    assert_eq!(sim.volume().spec.replica_number, 2);
    let a = c.replicas.iter().find(|a| a.hostname == "a").expect("a");
    let b = c.replicas.iter().find(|a| a.hostname == "b").expect("b");
    assert!(a.primary && !a.leaving && !b.primary && b.outdated);
    assert!(!c.initial, "nothing is forced: a holds the data");
    let ra = sim
        .replicas
        .iter()
        .find(|r| r.spec.node_name == "a")
        .expect("ra");
    assert_eq!(
        ra.spec
            .replication
            .as_ref()
            .and_then(|s| s.peer.as_ref())
            .map(|p| p.node.as_str()),
        Some("b")
    );
    sim.held.clear();
    sim.settle();
    for _ in 0..10 {
        sim.step(&m);
    }
    // Replicated; the PV still names a only while the pod runs there.
    assert_eq!(sim.status.step.as_deref(), Some(convert::STEP_ACCESS));
    assert!(sim
        .status
        .message
        .as_deref()
        .is_some_and(|s| s.contains("once the volume is unpublished")));
    assert_eq!(
        sim.volume().status.as_ref().and_then(|s| s.ha_state),
        Some(HaState::Healthy)
    );
    sim.v
        .as_mut()
        .and_then(|v| v.status.as_mut())
        .expect("st")
        .published_node = None;
    sim.run(&m, 30);
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert_eq!(
        sim.pv.as_ref().map(|p| p.nodes.clone()),
        Some(vec!["a".into(), "b".into()])
    );
    assert!(!sim
        .log
        .iter()
        .any(|s| matches!(s, OpStep::DeleteReplica(_))));
}

/// Aborts a conversion of `v` (on `a`) after every possible number of steps: Aborted with
/// the volume alone on `a` again (its second replica gone; once DRBD was under it, it stays,
/// and the volume is convertible), or refused once the new replica is in sync.
fn convert_abort_at_every_step(v: &LocalVolume) {
    let spec = convert_spec();
    let m = Convert { spec: &spec };
    let (mut aborted_after_join, mut refused) = (false, false);
    for k in 0..40 {
        let mut sim = ready(Sim::new(OperationKind::Convert, v.clone(), &["a", "b"]));
        for _ in 0..k {
            sim.step(&m);
        }
        let joined = sim.config().replicas.len() == 2;
        sim.abort = true;
        sim.run(&m, 60);
        match phase(&sim) {
            Some(OperationPhase::Aborted) => {
                aborted_after_join |= joined;
                assert_eq!(sim.config_nodes(), ["a"], "after {k}");
                assert_eq!(sim.replica_nodes(), ["a"], "after {k}");
                assert_eq!(sim.volume().spec.replica_number, 1);
                let ra = &sim.replicas[0];
                if crate::ha::is_ha(sim.config()) {
                    assert!(sim.volume().spec.convertible, "after {k}");
                    let a = &sim.config().replicas[0];
                    assert!(a.primary && !a.outdated && !a.leaving);
                    assert!(ra
                        .spec
                        .replication
                        .as_ref()
                        .is_some_and(|s| s.peer.is_none() && s.primary));
                } else {
                    assert!(ra.spec.replication.is_none(), "untouched after {k}");
                }
            }
            Some(OperationPhase::Succeeded) => {
                refused |= sim.log.iter().any(|s| matches!(s, OpStep::Status(st) if st.message.as_deref().is_some_and(|m| m.starts_with("abort refused"))));
                assert_eq!(sim.config_nodes().len(), 2);
            }
            other => panic!("abort after {k} steps ended {other:?}: {:?}", sim.status),
        }
        assert!(sim.volume().spec.operation.is_none());
        assert!(
            !sim.log
                .iter()
                .any(|s| matches!(s, OpStep::DeleteReplica(n) if n.ends_with("-a"))),
            "the data's replica is never deleted"
        );
    }
    assert!(aborted_after_join, "some abort removed a joined replica");
    assert!(refused, "an abort once in sync was refused");
}

#[test]
fn convert_of_a_convertible_volume_aborts_at_every_step_until_in_sync() {
    convert_abort_at_every_step(&convertible_volume("a"));
}

#[test]
fn convert_of_a_plain_volume_aborts_at_every_step_until_in_sync() {
    convert_abort_at_every_step(&volume(&["a"]));
}

/// A volume running on one node moves without a single-copy window: the target joins as
/// the source's peer, the source stays primary until the prune, then the target serves
/// alone.
#[test]
fn migrate_of_a_volume_alone_joins_the_target_as_peer_then_prunes() {
    let spec = migrate_spec("a", &[]);
    let m = Migrate { spec: &spec };
    let mut sim = ready(Sim::new(
        OperationKind::Migrate,
        convertible_volume("a"),
        &["a", "b"],
    ));
    let mut steps = 0;
    while !phase(&sim).is_some_and(|p| p.is_final()) && steps < 60 {
        sim.step(&m);
        steps += 1;
        check_move_invariants(&sim, "a", "b", true);
        let c = sim.config();
        assert!(c.replicas.iter().all(|a| !a.leaving), "never leaving");
        if c.replicas.iter().any(|a| a.hostname == "a") {
            assert!(c.replicas.iter().any(|a| a.hostname == "a" && a.primary));
        }
    }
    assert_eq!(
        phase(&sim),
        Some(OperationPhase::Succeeded),
        "{:?}",
        sim.status
    );
    assert_eq!(sim.config_nodes(), ["b"]);
    assert_eq!(sim.replica_nodes(), ["b"]);
    let b = &sim.config().replicas[0];
    assert!(b.primary && !b.outdated);
    assert!(sim.replicas[0]
        .spec
        .replication
        .as_ref()
        .is_some_and(|s| s.peer.is_none()));
    assert_eq!(sim.volume().spec.accessibility.nodes, ["b"]);
}
