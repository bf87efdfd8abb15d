//! LocalVolumeConvert: turn a single-replica volume into an HA one (two replicas over DRBD)
//! without moving its data.
//!
//! Steps: `AddReplica` (the volume gets a replication resource; its replica gains DRBD
//! with external metadata, so the data volume is not touched; it is the one allowed to be
//! primary and, the resource being new, the one forced UpToDate; a second replica is added
//! on another node) → `Sync` (the full initial sync from the existing replica, until the
//! new one is UpToDate on fresh reports from both) → `Accessibility` (usable from both
//! nodes) → Succeeded.
//!
//! A volume without replication changes its device (the DRBD device over the logical
//! volume), so in use it converts only once unpublished. A volume created convertible runs
//! DRBD on its one node from the start: `AddReplica` only names the second replica as its
//! peer, the existing one (primary, maybe in use) connects and syncs it, online.
//!
//! Abort is possible until the new replica is in sync: it leaves the placement and is
//! deleted, and the volume goes on alone on its node. A volume that had no replication keeps
//! the DRBD layer the conversion put under it (its data untouched): it runs DRBD on its one
//! node, as a volume created convertible does, and a later conversion runs online.

use super::migrate::{choose_target, ha_in_sync, sync_progress};
use super::{
    accessibility_step, at_step, finish, group, remove_replica_on, wait_until_ready, Machine, Op,
    OpStep, Start, VolumeChange, World,
};
use crate::lvm::round_up_to_extent;
use crate::placement::room;
use crate::{drbd, ha};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalVolume, LocalVolumeConvertSpec, OperationPhase, OperationStatus, PoolClass,
    ReplicaAssignment, VolumeConfig,
};

pub const STEP_ADD: &str = "AddReplica";
pub const STEP_SYNC: &str = "Sync";
pub const STEP_ACCESS: &str = "Accessibility";

pub struct Convert<'a> {
    pub spec: &'a LocalVolumeConvertSpec,
}

fn converted(config: &VolumeConfig, target: &str) -> bool {
    ha::is_ha(config) && config.replicas.iter().any(|a| a.hostname == target)
}

/// `config` with a second replica on `target`: no data until synced (outdated: never
/// promoted before, and a lost link to it needs no fence).
fn with_peer(w: &World, config: &VolumeConfig, target: &str) -> VolumeConfig {
    let mut next = config.clone();
    let id = next.replicas.iter().map(|a| a.id).max().unwrap_or(0) + 1;
    next.replicas.push(ReplicaAssignment {
        id,
        hostname: target.to_string(),
        ip: w.storage_ip(target),
        primary: false,
        outdated: true,
        leaving: false,
        copy_from: None,
    });
    next.version += 1;
    next
}

impl Convert<'_> {
    /// The start of a volume created convertible: it converts in use too.
    fn start_online(&self, w: &World, v: &LocalVolume, config: &VolumeConfig) -> Start {
        if let Some(wait) = wait_until_ready(v, "only a Ready volume converts") {
            return wait;
        }
        let sources: Vec<String> = ha::active(config).map(|a| a.hostname.clone()).collect();
        let also = match group::joining(self, w) {
            Ok(a) => a,
            Err(wait) => return wait,
        };
        let suggested: Vec<String> = self.spec.target_node.iter().cloned().collect();
        let target = match choose_target(&suggested, w, v, config, true, &also) {
            Ok(t) => t,
            Err(e) => return Start::Fail(e.message),
        };
        let group_volumes: Vec<String> = also
            .iter()
            .filter_map(|(m, _)| m.metadata.name.clone())
            .collect();
        Start::Go(Box::new(OperationStatus {
            step: Some(STEP_ADD.into()),
            target_node: Some(target),
            source_nodes: sources,
            group_volumes,
            ..Default::default()
        }))
    }
}

impl Machine for Convert<'_> {
    fn group_wide(&self) -> bool {
        self.spec.convert_all_volumes
    }

    /// A volume of the group goes when it has one replica (plain, or DRBD alone); its new
    /// replica replicates.
    fn member_goes(&self, member: &LocalVolume) -> Option<bool> {
        let config = member.spec.config.as_ref()?;
        (!ha::is_ha(config) || ha::alone(config)).then_some(true)
    }

    fn start(&self, _op: &Op, w: &World, v: &LocalVolume) -> Start {
        let Some(config) = v.spec.config.as_ref() else {
            return Start::Wait("the volume is not placed yet".into());
        };
        if v.spec.thin {
            return Start::Fail(format!(
                "the volume is thin and cannot be converted: {}",
                ha::THIN_NOT_REPLICATED
            ));
        }
        let online = ha::alone(config);
        if ha::is_ha(config) && !online {
            return if config.replicas.len() >= 2 {
                let on: Vec<&str> = config
                    .replicas
                    .iter()
                    .map(|a| a.hostname.as_str())
                    .collect();
                let others: Vec<String> = match group::joining(self, w) {
                    Ok(a) => a
                        .iter()
                        .filter_map(|(m, _)| m.metadata.name.clone())
                        .collect(),
                    Err(_) => Vec::new(),
                };
                if !others.is_empty() {
                    return Start::Fail(format!(
                        "the volume is replicated already (on {}) but the group's {} are not: convert one of those (the rest of the group comes with it)",
                        on.join(", "),
                        others.join(", ")
                    ));
                }
                Start::Done(format!(
                    "the volume is replicated already (on {})",
                    on.join(", ")
                ))
            } else {
                Start::Fail("the volume has a replication resource but one replica; migrate or recreate it instead".into())
            };
        }
        if online {
            return self.start_online(w, v, config);
        }
        let [source] = config.replicas.as_slice() else {
            return Start::Fail(format!(
                "a volume without replication has one replica, this one has {}",
                config.replicas.len()
            ));
        };
        if let Some(wait) = wait_until_ready(v, "only a Ready volume converts") {
            return wait;
        }
        let st = v.status.clone().unwrap_or_default();
        if let Some(node) = st.published_node.as_deref() {
            return Start::Wait(format!(
                "the volume is in use on {node}; converting puts DRBD under it and changes its device, so it converts once unpublished (stop its pod); volumes created convertible (StorageClass parameter convertible: \"true\") convert online"
            ));
        }
        let Some(class) = PoolClass::from_pool_name(&v.spec.pool_name) else {
            return Start::Fail(format!("unknown pool {}", v.spec.pool_name));
        };
        let Some(node) = w.nodes.iter().find(|n| n.name == source.hostname) else {
            return Start::Wait(format!(
                "{} does not report as a storage node",
                source.hostname
            ));
        };
        if node.storage_ip.is_none() {
            return Start::Fail(format!(
                "{} has no replication address (storageIP); set one on its LocalStorageNode or Node",
                source.hostname
            ));
        }
        if let Some(pool) = node.pools.get(&class) {
            let meta = round_up_to_extent(
                drbd::meta_bytes(config.required_capacity_bytes),
                pool.extent,
            );
            let r = room(&node.name, class, pool, w.placed, "");
            if r.bytes < meta {
                return Start::Fail(format!(
                    "{} needs {} free in its {class} pool for the replication metadata and has {}",
                    node.name,
                    format_size(meta),
                    format_size(r.bytes)
                ));
            }
        }
        if w.free_resource_id.is_none() {
            return Start::Fail("every replication resource id is taken".into());
        }
        let also = match group::joining(self, w) {
            Ok(a) => a,
            Err(wait) => return wait,
        };
        let suggested: Vec<String> = self.spec.target_node.iter().cloned().collect();
        let target = match choose_target(&suggested, w, v, config, true, &also) {
            Ok(t) => t,
            Err(e) => return Start::Fail(e.message),
        };
        let group_volumes: Vec<String> = also
            .iter()
            .filter_map(|(m, _)| m.metadata.name.clone())
            .collect();
        Start::Go(Box::new(OperationStatus {
            step: Some(STEP_ADD.into()),
            target_node: Some(target),
            source_nodes: vec![source.hostname.clone()],
            group_volumes,
            ..Default::default()
        }))
    }

    fn run(&self, op: &Op, w: &World, v: &LocalVolume) -> OpStep {
        let (Some(config), Some(target)) =
            (v.spec.config.as_ref(), op.status.target_node.as_deref())
        else {
            return finish(
                op,
                w,
                OperationPhase::Failed,
                "no target node recorded; nothing was changed".into(),
            );
        };
        if !converted(config, target) && ha::alone(config) {
            if op.status.step.as_deref() != Some(STEP_ADD) {
                return at_step(op, STEP_ADD, None);
            }
            return OpStep::UpdateVolume(Box::new(VolumeChange {
                config: Some(with_peer(w, config, target)),
                replica_number: Some(2),
                ..Default::default()
            }));
        }
        if !converted(config, target) {
            if ha::is_ha(config) || config.replicas.len() != 1 {
                return finish(
                    op,
                    w,
                    OperationPhase::Failed,
                    "the volume's placement changed under the conversion; nothing was changed"
                        .into(),
                );
            }
            if op.status.step.as_deref() != Some(STEP_ADD) {
                return at_step(op, STEP_ADD, None);
            }
            let Some(id) = w.free_resource_id else {
                return finish(
                    op,
                    w,
                    OperationPhase::Failed,
                    "every replication resource id is taken".into(),
                );
            };
            let mut next = config.clone();
            next.resource_id = id;
            // The existing replica holds the data: it alone may be primary, and the resource
            // being new it is the one made UpToDate; the full sync runs from it.
            next.initial = true;
            for a in &mut next.replicas {
                a.primary = true;
                a.ip = w.storage_ip(&a.hostname);
            }
            return OpStep::UpdateVolume(Box::new(VolumeChange {
                config: Some(with_peer(w, &next, target)),
                replica_number: Some(2),
                ..Default::default()
            }));
        }
        if !ha_in_sync(config, w.replicas, target) {
            let p = sync_progress(w.replicas, target, config.required_capacity_bytes);
            return at_step(op, STEP_SYNC, Some(p));
        }
        let nodes: Vec<String> = config.replicas.iter().map(|a| a.hostname.clone()).collect();
        if let Some(step) = accessibility_step(op, w, v, STEP_ACCESS, &nodes) {
            if op.status.step.as_deref() != Some(STEP_ACCESS) {
                return at_step(op, STEP_ACCESS, None);
            }
            return step;
        }
        finish(
            op,
            w,
            OperationPhase::Succeeded,
            format!("replicated on {}", nodes.join(" and ")),
        )
    }

    fn abortable(&self, op: &Op, v: &LocalVolume) -> Result<(), String> {
        let (Some(config), Some(target)) =
            (v.spec.config.as_ref(), op.status.target_node.as_deref())
        else {
            return Ok(());
        };
        if !converted(config, target) {
            return Ok(());
        }
        if op.status.step.as_deref() == Some(STEP_ACCESS) {
            return Err(format!(
                "the replica on {target} is in sync and the volume is being made usable from it; the conversion completes"
            ));
        }
        Ok(())
    }

    fn undo(&self, op: &Op, w: &World, v: &LocalVolume) -> Option<OpStep> {
        // The second replica goes; the first one goes on alone, over the DRBD layer it has
        // (a volume that had none keeps the one the conversion put under it).
        let config = v.spec.config.as_ref()?;
        let target = op.status.target_node.as_deref()?;
        if converted(config, target) {
            let mut next = config.clone();
            next.replicas.retain(|a| a.hostname != target);
            next.version += 1;
            return Some(OpStep::UpdateVolume(Box::new(VolumeChange {
                config: Some(next),
                replica_number: Some(1),
                convertible: (!v.spec.convertible).then_some(true),
                ..Default::default()
            })));
        }
        remove_replica_on(w, target)
    }
}
