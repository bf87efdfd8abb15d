//! LocalVolume decisions: the next step towards what the volume asks for. Pure.
//!
//! One step at a time, each idempotent, so a reconcile interrupted anywhere is finished by
//! the next one. The finalizer goes on before anything is placed and comes off only after
//! every replica is gone, so a deleted volume never leaves a logical volume behind.

use crate::drbd::DEFAULT_PORT_BASE;
use crate::ha;
use hwameistor_api::replica::replica_name;
use hwameistor_api::{
    CopySource, HaState, LocalVolume, LocalVolumeReplica, LocalVolumeReplicaSpec, ReplicaState,
    ReplicationSpec, VolumeConfig, VolumeState, FINALIZER_VOLUME, LABEL_NODE, LABEL_VOLUME,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use std::collections::BTreeMap;

/// What the controller writes to a LocalVolume's status (the fields it owns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    pub state: VolumeState,
    pub replicas: Vec<String>,
    pub allocated: Option<i64>,
    pub message: Option<String>,
    /// How an HA volume's copies stand; `None` for a volume without replication.
    pub ha_state: Option<HaState>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    AddFinalizer,
    /// No placement yet: choose nodes.
    Place,
    /// The volume grew: carry the new size into the placement.
    UpdateConfig(VolumeConfig),
    CreateReplica(Box<LocalVolumeReplica>),
    /// Carry the volume's replication decisions (primary, fenced, peer) and the copy
    /// source (a replica filled by the block mover) into a replica.
    UpdateReplication {
        name: String,
        replication: Option<Box<ReplicationSpec>>,
        copy_from: Option<Box<CopySource>>,
    },
    /// The restored replica holds the snapshot's data: clear the placement's copy source
    /// (after removing `clone_snapshot`, the snapshot taken only for this clone, if any).
    FinishRestore {
        config: VolumeConfig,
        clone_snapshot: Option<String>,
    },
    /// The split brain the operator resolved is over (both replicas connected again).
    ClearSplitBrainResolution,
    ResizeReplica {
        name: String,
        bytes: i64,
    },
    DeleteReplicas(Vec<String>),
    RemoveFinalizer,
    Status(StatusUpdate),
    /// Nothing to do until a watched object changes.
    Wait,
}

pub fn has_finalizer(v: &LocalVolume) -> bool {
    v.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER_VOLUME))
}

fn name(v: &LocalVolume) -> String {
    v.metadata.name.clone().unwrap_or_default()
}

fn current_status(v: &LocalVolume) -> StatusUpdate {
    let st = v.status.clone().unwrap_or_default();
    StatusUpdate {
        state: st.state.unwrap_or(VolumeState::Creating),
        replicas: st.replicas,
        allocated: st.allocated_capacity_bytes,
        message: st.message,
        ha_state: st.ha_state,
    }
}

/// Where the block mover fills the replica on `node` from: the config says it is a copy of
/// another node's replica, and the operation holding the volume names the copy (its uid
/// keys it), or the volume is restored from a snapshot (see [`crate::restore`]). `None`
/// when the replica is not a copy, or neither an operation nor a restore names one.
pub fn copy_source(v: &LocalVolume, config: &VolumeConfig, node: &str) -> Option<CopySource> {
    let from = config
        .replicas
        .iter()
        .find(|a| a.hostname == node)?
        .copy_from
        .clone()?;
    let Some(op) = v.spec.operation.as_ref() else {
        // Without an operation, only a restore copies.
        return crate::restore::copy_source(v, config, node);
    };
    Some(CopySource {
        node: from,
        operation: op.name.clone(),
        operation_uid: op.uid.clone(),
        bandwidth_limit_bytes_per_second: op.bandwidth_limit_bytes_per_second,
        snapshot: None,
    })
}

/// Why the volume may not be published on `node` now, as its placement stands during an
/// operation: a leaving replica serves nothing (its resource is down), a replica being
/// filled by the block mover is not a copy yet, and the replica a copy reads from must not
/// change while it is read. `None` when nothing in the placement forbids it.
pub fn publish_refusal(config: &VolumeConfig, node: &str) -> Option<String> {
    let me = config.replicas.iter().find(|a| a.hostname == node)?;
    if me.leaving
        && config
            .replicas
            .iter()
            .any(|a| a.copy_from.as_deref() == Some(node))
    {
        return Some(format!(
            "the volume is being copied off {node} by a migration; it can be used again once the copy is complete (on its new node) or the migration is aborted"
        ));
    }
    if me.leaving {
        return Some(format!(
            "the replica on {node} is being moved off {node} by a migration; the volume serves from its other node(s)"
        ));
    }
    if let Some(from) = &me.copy_from {
        return Some(format!(
            "the replica on {node} is still being filled by a block copy from {from}"
        ));
    }
    None
}

/// The nodes a pod using volume `v` may run on now: those whose replica may serve it (not
/// one a migration is replacing or still filling, not an HA replica recorded outdated); for
/// a volume not placed yet, the nodes it must be usable from.
pub fn serving_nodes(v: &LocalVolume) -> Vec<String> {
    match v.spec.config.as_ref() {
        None => v.spec.accessibility.nodes.clone(),
        Some(c) => c
            .replicas
            .iter()
            .filter(|a| !a.outdated && publish_refusal(c, &a.hostname).is_none())
            .map(|a| a.hostname.clone())
            .collect(),
    }
}

/// The replica object the volume's placement `config` calls for on `node`.
pub fn replica_for(v: &LocalVolume, config: &VolumeConfig, node: &str) -> LocalVolumeReplica {
    let volume = name(v);
    let bytes = config.required_capacity_bytes;
    let mut r = LocalVolumeReplica::new(
        &replica_name(&volume, node),
        LocalVolumeReplicaSpec {
            volume_name: volume.clone(),
            pool_name: v.spec.pool_name.clone(),
            node_name: node.to_string(),
            volume_kind: v.spec.volume_kind,
            required_capacity_bytes: bytes,
            thin: v.spec.thin,
            replication: ha::replication_spec(v, config, node, DEFAULT_PORT_BASE),
            copy_from: copy_source(v, config, node),
        },
    );
    r.metadata.labels = Some(BTreeMap::from([
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_VOLUME.to_string(), volume),
    ]));
    r.metadata.owner_references = Some(vec![OwnerReference {
        api_version: LocalVolume::api_version(&()).into_owned(),
        kind: LocalVolume::kind(&()).into_owned(),
        name: name(v),
        uid: v.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    r
}

/// The status the volume's replicas add up to.
pub fn desired_status(
    v: &LocalVolume,
    config: &VolumeConfig,
    replicas: &[LocalVolumeReplica],
) -> StatusUpdate {
    let volume = name(v);
    let mut names: Vec<String> = config
        .replicas
        .iter()
        .map(|r| replica_name(&volume, &r.hostname))
        .collect();
    names.sort();
    let mut problems = Vec::new();
    let mut allocated: Option<i64> = None;
    let mut all_ready = true;
    let mut all_present = true;
    // A leaving replica (a migration replaces it) keeps its data but serves nothing: the
    // volume stands on the others.
    for a in config.replicas.iter().filter(|a| !a.leaving) {
        let rname = replica_name(&volume, &a.hostname);
        let Some(r) = replicas
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(rname.as_str()))
        else {
            all_present = false;
            all_ready = false;
            continue;
        };
        let st = r.status.clone().unwrap_or_default();
        let size = st.allocated_capacity_bytes.unwrap_or(0);
        allocated = Some(allocated.map_or(size, |x: i64| x.min(size)));
        if st.state != Some(ReplicaState::Ready) {
            all_ready = false;
            let state = st
                .state
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "pending".into());
            problems.push(match st.message {
                Some(m) => format!("replica {rname} on {}: {state}: {m}", a.hostname),
                None => format!("replica {rname} on {}: {state}", a.hostname),
            });
        }
    }
    let was_ready = matches!(
        current_status(v).state,
        VolumeState::Ready | VolumeState::NotReady | VolumeState::Expanding
    );
    let state = if all_ready && allocated.is_some_and(|a| a >= config.required_capacity_bytes) {
        VolumeState::Ready
    } else if all_ready && all_present {
        VolumeState::Expanding
    } else if was_ready {
        VolumeState::NotReady
    } else {
        VolumeState::Creating
    };
    for r in replicas.iter().filter(|r| {
        r.metadata.deletion_timestamp.is_none()
            && !config
                .replicas
                .iter()
                .any(|a| a.hostname == r.spec.node_name)
    }) {
        problems.push(format!(
            "replica {} on {} is not in the volume's placement; it is kept (only an operation that moved the volume removes a replica)",
            r.metadata.name.as_deref().unwrap_or_default(),
            r.spec.node_name
        ));
    }
    let ha_state = ha::ha_state(config, replicas);
    if ha_state == Some(HaState::SplitBrain) {
        let nodes: Vec<String> = config.replicas.iter().map(|a| a.hostname.clone()).collect();
        problems.insert(0, ha::split_brain_message(&volume, &nodes));
    }
    StatusUpdate {
        state,
        ha_state,
        replicas: names,
        allocated: if all_present { allocated } else { None },
        message: if problems.is_empty() {
            None
        } else {
            Some(problems.join("; "))
        },
    }
}

/// The next step for volume `v`, given the replicas labelled with its name.
pub fn next_step(v: &LocalVolume, replicas: &[LocalVolumeReplica]) -> Step {
    if v.metadata.deletion_timestamp.is_some() {
        let alive: Vec<String> = replicas
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        if !alive.is_empty() {
            return Step::DeleteReplicas(alive);
        }
        if !replicas.is_empty() {
            // The agents remove the logical volumes, then their finalizers.
            let cur = current_status(v);
            if cur.state != VolumeState::Deleting {
                return Step::Status(StatusUpdate {
                    state: VolumeState::Deleting,
                    ..cur
                });
            }
            return Step::Wait;
        }
        return if has_finalizer(v) {
            Step::RemoveFinalizer
        } else {
            Step::Wait
        };
    }
    if !has_finalizer(v) {
        return Step::AddFinalizer;
    }
    let Some(config) = v.spec.config.as_ref() else {
        return Step::Place;
    };
    if config.required_capacity_bytes < v.spec.required_capacity_bytes {
        let mut grown = config.clone();
        grown.required_capacity_bytes = v.spec.required_capacity_bytes;
        grown.version += 1;
        return Step::UpdateConfig(grown);
    }
    for a in &config.replicas {
        if !replicas
            .iter()
            .any(|r| r.spec.node_name == a.hostname && r.metadata.deletion_timestamp.is_none())
        {
            if replicas.iter().any(|r| r.spec.node_name == a.hostname) {
                // The old object is still going away; create the new one after.
                return Step::Wait;
            }
            return Step::CreateReplica(Box::new(replica_for(v, config, &a.hostname)));
        }
    }
    // A replica off the placement is never deleted here: only the operation that moved the
    // volume removes its old replica, once the new one is complete (see `operation`). Such
    // a replica is reported in the status instead.
    for r in replicas.iter().filter(|r| {
        r.metadata.deletion_timestamp.is_none()
            && config
                .replicas
                .iter()
                .any(|a| a.hostname == r.spec.node_name)
    }) {
        let want = ha::replication_spec(v, config, &r.spec.node_name, DEFAULT_PORT_BASE);
        let copy = copy_source(v, config, &r.spec.node_name);
        if r.spec.replication != want || r.spec.copy_from != copy {
            return Step::UpdateReplication {
                name: r.metadata.name.clone().unwrap_or_default(),
                replication: want.map(Box::new),
                copy_from: copy.map(Box::new),
            };
        }
    }
    if let Some(next) = crate::restore::finished(v, config, replicas) {
        return Step::FinishRestore {
            config: next,
            clone_snapshot: v
                .spec
                .data_source
                .as_ref()
                .filter(|d| d.clone_of.is_some())
                .map(|d| d.snapshot.clone()),
        };
    }
    if let Some(next) = ha::settle(config, replicas) {
        return Step::UpdateConfig(next);
    }
    if v.spec.split_brain_resolution.is_some()
        && ha::ha_state(config, replicas)
            .is_some_and(|s| s != HaState::SplitBrain && s != HaState::Degraded)
    {
        return Step::ClearSplitBrainResolution;
    }
    if let Some(r) = replicas
        .iter()
        .find(|r| r.spec.required_capacity_bytes < config.required_capacity_bytes)
    {
        return Step::ResizeReplica {
            name: r.metadata.name.clone().unwrap_or_default(),
            bytes: config.required_capacity_bytes,
        };
    }
    let want = desired_status(v, config, replicas);
    if want != current_status(v) {
        return Step::Status(want);
    }
    Step::Wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{
        LocalVolumeReplicaStatus, LocalVolumeSpec, LocalVolumeStatus, ReplicaAssignment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const MI: i64 = 1 << 20;

    fn volume() -> LocalVolume {
        let mut v = LocalVolume::new(
            "pvc-1",
            LocalVolumeSpec {
                pool_name: "LocalStorage_PoolHDD".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 300 * MI,
                replica_number: 1,
                convertible: false,
                accessibility: Default::default(),
                pvc_namespace: None,
                pvc_name: None,
                fs_type: Some("xfs".into()),
                config: None,
                split_brain_resolution: None,
                operation: None,
                thin: false,
                data_source: None,
            },
        );
        v.metadata.uid = Some("uid-1".into());
        v
    }

    fn with_finalizer(mut v: LocalVolume) -> LocalVolume {
        v.metadata.finalizers = Some(vec![FINALIZER_VOLUME.into()]);
        v
    }

    fn placed(mut v: LocalVolume, node: &str) -> LocalVolume {
        v.spec.config = Some(VolumeConfig {
            version: 1,
            required_capacity_bytes: v.spec.required_capacity_bytes,
            resource_id: -1,
            replicas: vec![ReplicaAssignment {
                id: 1,
                hostname: node.into(),
                ip: None,
                ..Default::default()
            }],
            initial: false,
        });
        v
    }

    fn replica_at(v: &LocalVolume, node: &str, size: i64) -> LocalVolumeReplica {
        let mut c = v.spec.config.clone().unwrap_or_default();
        c.required_capacity_bytes = size;
        replica_for(v, &c, node)
    }

    fn ready_replica(v: &LocalVolume, node: &str, size: i64) -> LocalVolumeReplica {
        let mut r = replica_at(v, node, size);
        r.status = Some(LocalVolumeReplicaStatus {
            state: Some(ReplicaState::Ready),
            device_path: Some(format!("/dev/LocalStorage_PoolHDD/{}", "pvc-1")),
            allocated_capacity_bytes: Some(size),
            ..Default::default()
        });
        r
    }

    fn deleting<T: Resource>(mut o: T) -> T {
        o.meta_mut().deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        o
    }

    fn set_state(mut v: LocalVolume, s: StatusUpdate) -> LocalVolume {
        v.status = Some(LocalVolumeStatus {
            state: Some(s.state),
            replicas: s.replicas,
            allocated_capacity_bytes: s.allocated,
            message: s.message,
            ..Default::default()
        });
        v
    }

    #[test]
    fn create_path_finalizer_place_replica_ready() {
        let v = volume();
        assert_eq!(next_step(&v, &[]), Step::AddFinalizer);
        let v = with_finalizer(v);
        assert_eq!(next_step(&v, &[]), Step::Place);
        let v = placed(v, "n1");
        let Step::CreateReplica(r) = next_step(&v, &[]) else {
            panic!("expected CreateReplica")
        };
        assert_eq!(r.metadata.name.as_deref(), Some("pvc-1-n1"));
        assert_eq!(r.spec.node_name, "n1");
        assert_eq!(r.spec.required_capacity_bytes, 300 * MI);
        let labels = r.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_NODE).map(String::as_str), Some("n1"));
        assert_eq!(labels.get(LABEL_VOLUME).map(String::as_str), Some("pvc-1"));
        let owner = &r.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("LocalVolume", "pvc-1", "uid-1", Some(true))
        );

        // Replica exists but the agent has not reported: Creating, with the reason.
        let pending = replica_at(&v, "n1", 300 * MI);
        let Step::Status(s) = next_step(&v, std::slice::from_ref(&pending)) else {
            panic!("status expected")
        };
        assert_eq!(s.state, VolumeState::Creating);
        assert_eq!(s.replicas, vec!["pvc-1-n1".to_string()]);
        assert_eq!(
            s.message.as_deref(),
            Some("replica pvc-1-n1 on n1: pending")
        );
        let v = set_state(v, s);
        assert_eq!(next_step(&v, std::slice::from_ref(&pending)), Step::Wait);

        let ready = ready_replica(&v, "n1", 300 * MI);
        let Step::Status(s) = next_step(&v, std::slice::from_ref(&ready)) else {
            panic!("status expected")
        };
        assert_eq!(
            s,
            StatusUpdate {
                state: VolumeState::Ready,
                replicas: vec!["pvc-1-n1".into()],
                allocated: Some(300 * MI),
                message: None,
                ha_state: None,
            }
        );
        let v = set_state(v, s);
        assert_eq!(next_step(&v, &[ready]), Step::Wait);
    }

    #[test]
    fn a_broken_replica_makes_a_ready_volume_not_ready() {
        let v = placed(with_finalizer(volume()), "n1");
        let ready = ready_replica(&v, "n1", 300 * MI);
        let v = set_state(
            v.clone(),
            desired_status(
                &v,
                v.spec.config.as_ref().expect("config"),
                std::slice::from_ref(&ready),
            ),
        );
        let mut broken = ready;
        if let Some(st) = broken.status.as_mut() {
            st.state = Some(ReplicaState::NotReady);
            st.message = Some("LV inactive".into());
        }
        let Step::Status(s) = next_step(&v, &[broken]) else {
            panic!("status expected")
        };
        assert_eq!(s.state, VolumeState::NotReady);
        assert_eq!(
            s.message.as_deref(),
            Some("replica pvc-1-n1 on n1: NotReady: LV inactive")
        );
    }

    #[test]
    fn expansion_flows_from_spec_to_config_to_replica_to_status() {
        let v = placed(with_finalizer(volume()), "n1");
        let ready = ready_replica(&v, "n1", 300 * MI);
        let mut v = set_state(
            v.clone(),
            desired_status(
                &v,
                v.spec.config.as_ref().expect("config"),
                std::slice::from_ref(&ready),
            ),
        );
        v.spec.required_capacity_bytes = 400 * MI;
        let Step::UpdateConfig(c) = next_step(&v, std::slice::from_ref(&ready)) else {
            panic!("config update expected")
        };
        assert_eq!((c.required_capacity_bytes, c.version), (400 * MI, 2));
        v.spec.config = Some(c);
        assert_eq!(
            next_step(&v, std::slice::from_ref(&ready)),
            Step::ResizeReplica {
                name: "pvc-1-n1".into(),
                bytes: 400 * MI
            }
        );
        let mut resized = ready.clone();
        resized.spec.required_capacity_bytes = 400 * MI;
        let Step::Status(s) = next_step(&v, &[resized.clone()]) else {
            panic!("status expected")
        };
        assert_eq!(
            (s.state, s.allocated),
            (VolumeState::Expanding, Some(300 * MI))
        );
        let v = set_state(v, s);
        let grown = ready_replica(&v, "n1", 400 * MI);
        let Step::Status(s) = next_step(&v, &[grown]) else {
            panic!("status expected")
        };
        assert_eq!((s.state, s.allocated), (VolumeState::Ready, Some(400 * MI)));
    }

    #[test]
    fn a_restored_volume_fills_its_replica_from_the_snapshot_then_clears_the_source() {
        use hwameistor_api::{CopyStatus, VolumeDataSource};
        let mut v = with_finalizer(volume());
        v.spec.data_source = Some(VolumeDataSource {
            snapshot: "clone-pvc-1".into(),
            snapshot_uid: "uid-s".into(),
            node: "n1".into(),
            pool_name: "LocalStorage_PoolHDD".into(),
            bytes: 300 * MI,
            thin: false,
            clone_of: Some("pvc-0".into()),
        });
        let mut v = placed(v, "n2");
        if let Some(c) = v.spec.config.as_mut() {
            c.replicas[0].copy_from = Some("n1".into());
        }
        // The replica is made with its copy source: the snapshot on n1.
        let Step::CreateReplica(r) = next_step(&v, &[]) else {
            panic!("expected the replica")
        };
        let src = r.spec.copy_from.clone().expect("copy source");
        assert_eq!(
            (src.node.as_str(), src.snapshot.as_deref()),
            ("n1", Some("clone-pvc-1"))
        );
        // Filled and verified: the source is cleared and the clone's snapshot removed.
        let mut r = ready_replica(&v, "n2", 300 * MI);
        if let Some(st) = r.status.as_mut() {
            st.copy = Some(CopyStatus {
                operation_uid: "uid-s".into(),
                verified: true,
                ..Default::default()
            });
        }
        let Step::FinishRestore {
            config,
            clone_snapshot,
        } = next_step(&v, std::slice::from_ref(&r))
        else {
            panic!("expected the restore finished")
        };
        assert_eq!(clone_snapshot.as_deref(), Some("clone-pvc-1"));
        assert_eq!(config.replicas[0].copy_from, None);
        // The replica then loses its copy source too.
        v.spec.config = Some(config);
        assert!(matches!(
            next_step(&v, std::slice::from_ref(&r)),
            Step::UpdateReplication {
                copy_from: None,
                ..
            }
        ));
    }

    #[test]
    fn delete_path_replicas_first_finalizer_last() {
        let v = deleting(placed(with_finalizer(volume()), "n1"));
        let r = ready_replica(&v, "n1", 300 * MI);
        assert_eq!(
            next_step(&v, std::slice::from_ref(&r)),
            Step::DeleteReplicas(vec!["pvc-1-n1".into()])
        );
        let going = deleting(r);
        let Step::Status(s) = next_step(&v, std::slice::from_ref(&going)) else {
            panic!("status expected")
        };
        assert_eq!(s.state, VolumeState::Deleting);
        let v = set_state(v, s);
        assert_eq!(
            next_step(&v, &[going]),
            Step::Wait,
            "wait for the agent to remove the LV"
        );
        assert_eq!(next_step(&v, &[]), Step::RemoveFinalizer);
        let mut gone = v;
        gone.metadata.finalizers = None;
        assert_eq!(next_step(&gone, &[]), Step::Wait);
    }

    #[test]
    fn unplaced_volume_is_deleted_without_replicas() {
        let v = deleting(with_finalizer(volume()));
        assert_eq!(next_step(&v, &[]), Step::RemoveFinalizer);
    }

    #[test]
    fn replicas_off_the_placement_are_kept_and_reported_never_deleted() {
        let v = placed(with_finalizer(volume()), "n1");
        let stray = ready_replica(&v, "n9", 300 * MI);
        let good = ready_replica(&v, "n1", 300 * MI);
        let Step::Status(s) = next_step(&v, &[good.clone(), stray.clone()]) else {
            panic!("a status, never a deletion");
        };
        assert_eq!(s.state, VolumeState::Ready);
        assert!(
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("pvc-1-n9 on n9 is not in the volume's placement")),
            "{s:?}"
        );
        let v = set_state(v, s);
        assert_eq!(next_step(&v, &[good, stray]), Step::Wait);
    }

    #[test]
    fn a_volume_is_not_published_where_a_migration_reads_or_writes() {
        let mut c = placed(volume(), "n1").spec.config.expect("config");
        assert_eq!(publish_refusal(&c, "n1"), None);
        c.replicas[0].leaving = true;
        c.replicas.push(ReplicaAssignment {
            id: 2,
            hostname: "n2".into(),
            copy_from: Some("n1".into()),
            ..Default::default()
        });
        assert!(publish_refusal(&c, "n1").is_some_and(|m| m.contains("being copied off n1")));
        assert!(publish_refusal(&c, "n2").is_some_and(|m| m.contains("block copy from n1")));
        c.replicas[1].copy_from = None;
        assert!(publish_refusal(&c, "n1").is_some_and(|m| m.contains("serves from its other")));
        assert_eq!(publish_refusal(&c, "n2"), None);
    }

    #[test]
    fn a_leaving_replica_is_kept_and_the_volume_stands_on_the_others() {
        let mut v = placed(with_finalizer(volume()), "n1");
        let cfg = v.spec.config.as_mut().expect("config");
        cfg.replicas[0].leaving = true;
        cfg.replicas.push(ReplicaAssignment {
            id: 2,
            hostname: "n2".into(),
            copy_from: Some("n1".into()),
            ..Default::default()
        });
        v.spec.operation = Some(hwameistor_api::OperationRef {
            kind: Some(hwameistor_api::OperationKind::Migrate),
            name: "mig-1".into(),
            uid: "op-uid".into(),
            bandwidth_limit_bytes_per_second: None,
        });
        let old = ready_replica(&v, "n1", 300 * MI);
        // The copy's replica carries its source and the operation keying it.
        let Step::CreateReplica(new) = next_step(&v, std::slice::from_ref(&old)) else {
            panic!("the copy's replica is created");
        };
        assert_eq!(
            new.spec.copy_from,
            Some(CopySource {
                node: "n1".into(),
                operation: "mig-1".into(),
                operation_uid: "op-uid".into(),
                bandwidth_limit_bytes_per_second: None,
                snapshot: None,
            })
        );
        // Until the copy is Ready the volume is not; the leaving replica does not count.
        let Step::Status(s) = next_step(&v, &[old.clone(), *new.clone()]) else {
            panic!("status");
        };
        assert_eq!(s.state, VolumeState::Creating);
        let ready_new = ready_replica(&v, "n2", 300 * MI);
        let Step::Status(s) = next_step(&v, &[old.clone(), ready_new.clone()]) else {
            panic!("status");
        };
        assert_eq!(s.state, VolumeState::Ready);
        // The operation ends the copy: the source is dropped from the replica's spec.
        let mut done = v.clone();
        done.spec.operation = None;
        let Step::UpdateReplication {
            name, copy_from, ..
        } = next_step(&done, &[old, ready_new])
        else {
            panic!("the copy source is cleared");
        };
        assert_eq!((name.as_str(), copy_from), ("pvc-1-n2", None));
    }

    #[test]
    fn a_replica_still_going_away_is_not_recreated_yet() {
        let v = placed(with_finalizer(volume()), "n1");
        let old = deleting(ready_replica(&v, "n1", 300 * MI));
        assert_eq!(next_step(&v, &[old]), Step::Wait);
    }

    fn placed_ha(mut v: LocalVolume) -> LocalVolume {
        v.spec.replica_number = 2;
        v.spec.config = Some(VolumeConfig {
            version: 1,
            required_capacity_bytes: v.spec.required_capacity_bytes,
            resource_id: 4,
            replicas: vec![
                ReplicaAssignment {
                    id: 1,
                    hostname: "n1".into(),
                    ip: Some("10.0.0.1".into()),
                    primary: true,
                    outdated: false,
                    copy_from: None,
                    leaving: false,
                },
                ReplicaAssignment {
                    id: 2,
                    hostname: "n2".into(),
                    ip: Some("10.0.0.2".into()),
                    primary: false,
                    outdated: false,
                    copy_from: None,
                    leaving: false,
                },
            ],
            initial: true,
        });
        v
    }

    fn drbd_reports(
        mut r: LocalVolumeReplica,
        role: &str,
        disk: &str,
        conn: &str,
    ) -> LocalVolumeReplica {
        let st = r.status.get_or_insert_with(Default::default);
        st.replication = Some(hwameistor_api::ReplicationStatus {
            role: role.into(),
            disk_state: disk.into(),
            connection_state: conn.into(),
            ..Default::default()
        });
        r
    }

    #[test]
    fn ha_replicas_carry_the_replication_decisions() {
        let v = placed_ha(with_finalizer(volume()));
        let Step::CreateReplica(r1) = next_step(&v, &[]) else {
            panic!("create expected")
        };
        let rep = r1.spec.replication.clone().expect("replication");
        assert_eq!((rep.minor, rep.port), (4, DEFAULT_PORT_BASE + 4));
        assert!(rep.primary && rep.initial);
        assert_eq!(rep.peer.as_ref().map(|p| p.node.as_str()), Some("n2"));
        let r1 = ready_replica(&v, "n1", 300 * MI);
        let Step::CreateReplica(r2) = next_step(&v, std::slice::from_ref(&r1)) else {
            panic!("second create expected")
        };
        assert!(!r2.spec.replication.as_ref().unwrap().primary);

        // The primary node reports UpToDate: `initial` is cleared in the config...
        let r1 = drbd_reports(r1, "Primary", "UpToDate", "SyncSource");
        let r2 = drbd_reports(
            ready_replica(&v, "n2", 300 * MI),
            "Secondary",
            "Inconsistent",
            "SyncTarget",
        );
        let Step::UpdateConfig(c) = next_step(&v, &[r1.clone(), r2.clone()]) else {
            panic!("settle expected")
        };
        assert!(!c.initial);
        // ... and then carried into each replica.
        let mut v2 = v.clone();
        v2.spec.config = Some(c);
        let Step::UpdateReplication {
            name, replication, ..
        } = next_step(&v2, &[r1.clone(), r2.clone()])
        else {
            panic!("update expected")
        };
        assert_eq!(name, "pvc-1-n1");
        assert!(!replication.unwrap().initial);
    }

    #[test]
    fn a_split_brain_is_in_the_status_with_the_way_out() {
        let mut v = placed_ha(with_finalizer(volume()));
        v.spec.config.as_mut().unwrap().initial = false;
        let c = v.spec.config.clone().unwrap();
        let mut rs: Vec<LocalVolumeReplica> = ["n1", "n2"]
            .iter()
            .map(|n| {
                let mut r = replica_for(&v, &c, n);
                r.status = ready_replica(&v, n, 300 * MI).status;
                drbd_reports(r, "Primary", "UpToDate", "StandAlone")
            })
            .collect();
        for r in &mut rs {
            r.status
                .as_mut()
                .unwrap()
                .replication
                .as_mut()
                .unwrap()
                .split_brain = true;
        }
        let Step::Status(s) = next_step(&v, &rs) else {
            panic!("status expected")
        };
        assert_eq!(s.ha_state, Some(HaState::SplitBrain));
        assert!(s
            .message
            .unwrap()
            .contains("resolve-split-brain pvc-1 --keep"));
        // The operator chose n2: n1 is told to discard its changes.
        v.spec.split_brain_resolution =
            Some(hwameistor_api::SplitBrainResolution { keep: "n2".into() });
        let Step::UpdateReplication {
            name, replication, ..
        } = next_step(&v, &rs)
        else {
            panic!("update expected")
        };
        assert_eq!(name, "pvc-1-n1");
        assert!(replication.unwrap().discard_my_data);
    }
}
