//! LocalVolumeMigrate: move a volume's replica off a node.
//!
//! HA volume (DRBD): `AddReplica` (the source replica is marked leaving: its resource goes
//! down with data and metadata kept; the new replica joins the staying one, which resyncs
//! it) → `Sync` (until the new replica is UpToDate, both sides say so after seeing the
//! current config, and its fence mark is cleared) → `Accessibility` (the volume, then its
//! PersistentVolume, usable from the new nodes) → `Prune` (the source leaves the
//! placement, then its replica is deleted) → Succeeded. DRBD 8.4 replicates to one peer,
//! so during `Sync` the staying replica is the only complete copy; the source is kept
//! intact until the new one is complete, and an abort reconnects it.
//!
//! (Prune comes before Accessibility: a PersistentVolume's affinity changes only while the
//! volume is unused, and that wait must not keep an old replica alive.)
//!
//! Volume without replication: the same with `Copy` instead of `Sync`: the block mover
//! fills the new replica from the source (agent to agent, checkpointed, digest-verified),
//! only while nobody uses the volume (the source is read as a whole; publishing is refused
//! meanwhile).
//!
//! Abort is possible until `Prune` removes the source from the placement: the new replica
//! leaves the placement and is deleted, the source comes back (HA: it reconnects and
//! resyncs what it missed), the accessibility goes back.

use super::group;
use super::{
    accessibility_step, any_replica_on, at_step, finish, progress, remove_replica_on, replica_on,
    wait_until_ready, Machine, Op, OpStep, Start, VolumeChange, World,
};
use crate::ha;
use crate::placement::{place, NodeView, Placed, PlacementError, Request};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    HaState, LocalVolume, LocalVolumeMigrateSpec, LocalVolumeReplica, OperationPhase,
    OperationStatus, PoolClass, ReplicaAssignment, ReplicaState, VolumeConfig,
};

pub const STEP_ADD: &str = "AddReplica";
pub const STEP_SYNC: &str = "Sync";
pub const STEP_COPY: &str = "Copy";
pub const STEP_ACCESS: &str = "Accessibility";
pub const STEP_PRUNE: &str = "Prune";

pub struct Migrate<'a> {
    pub spec: &'a LocalVolumeMigrateSpec,
}

/// Where the volume stands in a move of `source` to `target`, read from its config (the
/// record every step changes by compare-and-swap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Neither changed yet.
    Before,
    /// The target joined, the source is leaving.
    Moving,
    /// The source left the placement.
    Pruned,
    /// Something else changed the placement.
    Foreign,
}

fn stage(config: &VolumeConfig, source: &str, target: &str) -> Stage {
    let has = |n: &str| config.replicas.iter().any(|a| a.hostname == n);
    match (has(source), has(target)) {
        (true, false) => Stage::Before,
        (true, true) => Stage::Moving,
        (false, true) => Stage::Pruned,
        (false, false) => Stage::Foreign,
    }
}

/// Why no target was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoTarget {
    pub message: String,
    /// Only because a node's agent has not published its block mover (yet): worth waiting
    /// for, unlike a lack of room.
    pub transient: bool,
}

impl std::fmt::Display for NoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The node the replica goes to: among the suggested nodes (any when none), a Ready node
/// holding no replica of the volume, with room (HA: and a replication address and room
/// for metadata; without replication: a block mover on it). `also`: the volumes of its
/// group going to the same node (each with whether its new replica replicates): the node
/// holds none of theirs and has room for them all.
pub fn choose_target(
    suggested: &[String],
    w: &World,
    v: &LocalVolume,
    config: &VolumeConfig,
    replicated: bool,
    also: &[(&LocalVolume, bool)],
) -> Result<String, NoTarget> {
    let class = PoolClass::from_pool_name(&v.spec.pool_name).ok_or_else(|| NoTarget {
        message: format!("unknown pool {}", v.spec.pool_name),
        transient: false,
    })?;
    let mut excluded = Vec::new();
    let mut without_mover = 0;
    let member_on = |node: &str| {
        also.iter().find(|(m, _)| {
            m.spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == node))
        })
    };
    let copies = !replicated || also.iter().any(|(_, r)| !r);
    let candidates: Vec<_> = w
        .nodes
        .iter()
        .filter(|n| {
            let keep = (suggested.is_empty() || suggested.contains(&n.name))
                && !config.replicas.iter().any(|a| a.hostname == n.name)
                && !any_replica_on(w.replicas, &n.name);
            if keep {
                if let Some((m, _)) = member_on(&n.name) {
                    excluded.push(format!(
                        "{} holds a replica of the group's volume {}",
                        n.name,
                        m.metadata.name.as_deref().unwrap_or_default()
                    ));
                    return false;
                }
            }
            if keep && copies && !w.movers.contains(&n.name) {
                excluded.push(format!("{} runs no block mover", n.name));
                without_mover += 1;
                return false;
            }
            keep
        })
        .cloned()
        .collect();
    for t in suggested {
        if !w.nodes.iter().any(|n| &n.name == t) {
            excluded.push(format!("{t} is not a storage node"));
        } else if config.replicas.iter().any(|a| &a.hostname == t) {
            excluded.push(format!("{t} holds a replica of the volume already"));
        }
    }
    let req = Request {
        volume: v.metadata.name.clone().unwrap_or_default(),
        class,
        bytes: config.required_capacity_bytes,
        replicas: 1,
        replicated,
        thin: v.spec.thin,
        accessibility: Vec::new(),
        prefer: Vec::new(),
    };
    let fits_all = fit_group(&req, also, &candidates, w, &mut excluded);
    if !also.is_empty() && fits_all.is_empty() && !candidates.is_empty() {
        let names: Vec<&str> = also
            .iter()
            .filter_map(|(m, _)| m.metadata.name.as_deref())
            .collect();
        return Err(NoTarget {
            message: format!(
                "no node can take the volume and the group's volumes going with it ({}) together: {}",
                names.join(", "),
                excluded.join("; ")
            ),
            transient: false,
        });
    }
    let candidates = if also.is_empty() {
        candidates
    } else {
        fits_all
    };
    match place(&req, &candidates, w.placed, &w.policy) {
        Ok(nodes) => nodes.into_iter().next().ok_or_else(|| NoTarget {
            message: "no node can take the replica".to_string(),
            transient: false,
        }),
        Err(e) => {
            let mut why = e.to_string();
            if !excluded.is_empty() {
                why = format!("{why}; {}", excluded.join("; "));
            }
            Err(NoTarget {
                message: format!("no node can take the replica: {why}"),
                // Nodes that would do but for a mover not published yet (an agent
                // starting or restarting): the move waits for them.
                transient: candidates.is_empty() && without_mover > 0,
            })
        }
    }
}

/// The nodes of `candidates` with room for the group's volumes `also` and for `req` besides
/// (the reasons of the others added to `why`).
fn fit_group(
    req: &Request,
    also: &[(&LocalVolume, bool)],
    candidates: &[NodeView],
    w: &World,
    why: &mut Vec<String>,
) -> Vec<NodeView> {
    if also.is_empty() {
        return Vec::new();
    }
    let mut fits = Vec::new();
    'nodes: for n in candidates {
        let mut sim: Vec<Placed> = w.placed.to_vec();
        for (m, replicated) in also {
            let name = m.metadata.name.clone().unwrap_or_default();
            let bytes = m
                .spec
                .config
                .as_ref()
                .map_or(m.spec.required_capacity_bytes, |c| {
                    c.required_capacity_bytes
                });
            let Some(class) = PoolClass::from_pool_name(&m.spec.pool_name) else {
                why.push(format!("the group's volume {name} has an unknown pool"));
                continue 'nodes;
            };
            let mreq = Request {
                volume: name.clone(),
                class,
                bytes,
                replicas: 1,
                replicated: *replicated,
                thin: m.spec.thin,
                accessibility: Vec::new(),
                prefer: Vec::new(),
            };
            if let Err(PlacementError::NoRoom { reasons, .. }) =
                place(&mreq, std::slice::from_ref(n), &sim, &w.policy)
            {
                why.push(format!(
                    "{reasons} (for the group's volume {name} of {})",
                    format_size(bytes)
                ));
                continue 'nodes;
            }
            sim.push(Placed {
                volume: name,
                node: n.name.clone(),
                class,
                required: bytes,
                allocated: None,
                meta: if *replicated {
                    crate::drbd::meta_bytes(bytes)
                } else {
                    0
                },
                thin: m.spec.thin,
            });
        }
        match place(req, std::slice::from_ref(n), &sim, &w.policy) {
            Ok(_) => fits.push(n.clone()),
            Err(PlacementError::NoRoom { reasons, .. }) => why.push(format!(
                "{reasons} (for {} besides the group's other volumes)",
                req.volume
            )),
        }
    }
    fits
}

/// Whether the replica on `node` of an HA volume is a complete copy: it and its peer report,
/// after seeing the current config, that they are connected and both UpToDate, and the
/// controller cleared its fence mark.
pub fn ha_in_sync(config: &VolumeConfig, replicas: &[LocalVolumeReplica], node: &str) -> bool {
    let Some(me) = config.replicas.iter().find(|a| a.hostname == node) else {
        return false;
    };
    if me.outdated || me.leaving {
        return false;
    }
    let Some(peer) = ha::active_peer(config, node) else {
        return false;
    };
    let fresh_connected_up_to_date = |r: Option<&LocalVolumeReplica>, own: bool| {
        r.is_some_and(|r| {
            let fresh = ha::reported_after(config, r);
            let rep = r.status.as_ref().and_then(|s| s.replication.as_ref());
            fresh
                && rep.is_some_and(|s| {
                    s.connection_state == crate::drbd::ConnState::Connected.as_str()
                        && s.peer_disk_state.as_deref()
                            == Some(crate::drbd::DiskState::UpToDate.as_str())
                        && (!own || s.disk_state == crate::drbd::DiskState::UpToDate.as_str())
                })
        })
    };
    fresh_connected_up_to_date(replica_on(replicas, node), true)
        && fresh_connected_up_to_date(replica_on(replicas, &peer.hostname), false)
}

/// Resync progress of the replica on `node` (bytes of `total` in sync).
pub(super) fn sync_progress(
    replicas: &[LocalVolumeReplica],
    node: &str,
    total: i64,
) -> hwameistor_api::OperationProgress {
    let rep = replica_on(replicas, node)
        .and_then(|r| r.status.as_ref())
        .and_then(|s| s.replication.as_ref());
    let done = match rep {
        Some(s) if s.disk_state == crate::drbd::DiskState::UpToDate.as_str() => total,
        Some(s)
            if crate::drbd::ConnState::parse(&s.connection_state)
                .is_some_and(|c| c.connected()) =>
        {
            total - s.out_of_sync_bytes
        }
        _ => 0,
    };
    progress(done, total, None)
}

fn copy_verified(r: Option<&LocalVolumeReplica>, uid: &str) -> bool {
    r.and_then(|r| r.status.as_ref()).is_some_and(|s| {
        s.state == Some(ReplicaState::Ready)
            && s.copy
                .as_ref()
                .is_some_and(|c| c.operation_uid == uid && c.verified)
    })
}

impl Migrate<'_> {
    fn source(&self) -> &str {
        &self.spec.source_node
    }

    /// The config with `target` joined and the source leaving.
    fn add_target(&self, w: &World, config: &VolumeConfig, target: &str) -> VolumeConfig {
        let replicated = ha::is_ha(config);
        let mut next = config.clone();
        let source_was_primary = next
            .replicas
            .iter()
            .any(|a| a.hostname == self.source() && a.primary);
        // DRBD on one node (a volume created convertible): the target joins as its peer
        // and syncs from the source, which stays in the replication (and primary) until the
        // prune; no single-copy window.
        let alone = ha::alone(config);
        for a in next.replicas.iter_mut().filter(|_| !alone) {
            if a.hostname == self.source() {
                a.leaving = true;
                a.primary = false;
                // It stops receiving writes: a copy that may be stale once it is back.
                a.outdated = replicated;
            } else if source_was_primary && replicated && !a.leaving {
                a.primary = true;
            }
        }
        let id = next.replicas.iter().map(|a| a.id).max().unwrap_or(0) + 1;
        next.replicas.push(ReplicaAssignment {
            id,
            hostname: target.to_string(),
            ip: w.storage_ip(target),
            primary: false,
            // No data until resynced: never promoted before, and a lost link to it needs no
            // fence.
            outdated: replicated,
            leaving: false,
            copy_from: (!replicated).then(|| self.source().to_string()),
        });
        next.version += 1;
        next
    }

    /// The nodes the volume is usable from once moved: its replicas' but the source's, and
    /// the target's.
    fn nodes_after(&self, config: &VolumeConfig, target: &str) -> Vec<String> {
        let mut nodes: Vec<String> = config
            .replicas
            .iter()
            .map(|a| a.hostname.clone())
            .filter(|n| n != self.source() && n != target)
            .collect();
        nodes.push(target.to_string());
        nodes
    }
}

impl Machine for Migrate<'_> {
    fn bandwidth(&self) -> Option<i64> {
        self.spec.bandwidth_limit_bytes_per_second
    }

    fn group_wide(&self) -> bool {
        self.spec.migrate_all_volumes
    }

    /// A volume of the group goes when it has a replica on the source node (one a move is
    /// not replacing already); it moves as it is (HA over DRBD, plain by a block copy).
    fn member_goes(&self, member: &LocalVolume) -> Option<bool> {
        let config = member.spec.config.as_ref()?;
        config
            .replicas
            .iter()
            .any(|a| a.hostname == self.source() && !a.leaving)
            .then(|| ha::is_ha(config))
    }

    fn start(&self, _op: &Op, w: &World, v: &LocalVolume) -> Start {
        let Some(config) = v.spec.config.as_ref() else {
            return Start::Wait("the volume is not placed yet".into());
        };
        let source = self.source();
        if !config.replicas.iter().any(|a| a.hostname == source) {
            // Moved already (a group's member operation made again, a retried request).
            if let Some(t) = self
                .spec
                .target_nodes
                .iter()
                .find(|t| config.replicas.iter().any(|a| &a.hostname == *t))
            {
                return Start::Done(format!("the volume has left {source} for {t} already"));
            }
            let on: Vec<&str> = config
                .replicas
                .iter()
                .map(|a| a.hostname.as_str())
                .collect();
            return Start::Fail(format!(
                "the volume has no replica on {source}; its replicas are on {}",
                on.join(", ")
            ));
        }
        let held: Vec<&str> = w
            .snapshots
            .iter()
            .filter(|s| s.spec.node_name == source)
            .filter_map(|s| s.metadata.name.as_deref())
            .collect();
        if !held.is_empty() {
            // They live beside the replica that would go, and would go with it.
            return Start::Fail(format!(
                "the volume has snapshots on {source} ({}): they stay beside its replica there and would be lost with it; delete them (their VolumeSnapshots) before moving it",
                held.join(", ")
            ));
        }
        if let Some(wait) = wait_until_ready(v, "a replica moves only off a Ready volume") {
            return wait;
        }
        let st = v.status.clone().unwrap_or_default();
        let replicated = ha::is_ha(config);
        if replicated {
            if !ha::alone(config) && st.ha_state != Some(HaState::Healthy) {
                return Start::Wait(format!(
                    "the HA volume is {}; both replicas must be in sync before one moves (the staying one is the only complete copy during the move)",
                    st.ha_state.map(|h| format!("{h:?}")).unwrap_or_else(|| "not reported".into())
                ));
            }
            if st.published_node.as_deref() == Some(source) {
                return Start::Wait(format!(
                    "the volume is in use on {source} (published there); its replica moves once the pod stops there (drain the node or delete the pod)"
                ));
            }
        } else {
            if let Some(node) = st.published_node.as_deref() {
                return Start::Wait(format!(
                    "the volume is in use on {node}; a volume without replication is copied while nobody uses it: stop its pod (scale it down, or drain {node})"
                ));
            }
            if !w.movers.contains(source) {
                return Start::Wait(format!(
                    "{source} runs no block mover (its agent has not published one)"
                ));
            }
        }
        let also = match group::joining(self, w) {
            Ok(a) => a,
            Err(wait) => return wait,
        };
        let target = match choose_target(&self.spec.target_nodes, w, v, config, replicated, &also) {
            Ok(t) => t,
            Err(e) if e.transient => return Start::Wait(e.message),
            Err(e) => return Start::Fail(e.message),
        };
        Start::Go(Box::new(OperationStatus {
            step: Some(STEP_ADD.into()),
            target_node: Some(target),
            source_nodes: config.replicas.iter().map(|a| a.hostname.clone()).collect(),
            group_volumes: also
                .iter()
                .filter_map(|(m, _)| m.metadata.name.clone())
                .collect(),
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
        let source = self.source();
        let replicated = ha::is_ha(config);
        match stage(config, source, target) {
            Stage::Foreign => finish(
                op,
                w,
                OperationPhase::Failed,
                format!("the volume's placement no longer names {source} nor {target}; something else changed it"),
            ),
            Stage::Before => {
                if op.status.step.as_deref() != Some(STEP_ADD) {
                    return at_step(op, STEP_ADD, None);
                }
                OpStep::UpdateVolume(Box::new(VolumeChange {
                    config: Some(self.add_target(w, config, target)),
                    ..Default::default()
                }))
            }
            Stage::Moving => {
                let total = config.required_capacity_bytes;
                if replicated {
                    if !ha_in_sync(config, w.replicas, target) {
                        return at_step(op, STEP_SYNC, Some(sync_progress(w.replicas, target, total)));
                    }
                } else {
                    let r = replica_on(w.replicas, target);
                    if !copy_verified(r, op.uid) {
                        let copy = r.and_then(|r| r.status.as_ref()).and_then(|s| s.copy.clone());
                        let p = match copy.filter(|c| c.operation_uid == op.uid) {
                            Some(c) => progress(c.bytes_done, c.bytes_total.max(total), c.bytes_per_second),
                            None => progress(0, total, None),
                        };
                        return at_step(op, STEP_COPY, Some(p));
                    }
                }
                if op.status.step.as_deref() != Some(STEP_PRUNE) {
                    return at_step(op, STEP_PRUNE, Some(progress(total, total, None)));
                }
                let mut next = config.clone();
                let source_was_primary = config
                    .replicas
                    .iter()
                    .any(|a| a.hostname == source && a.primary);
                next.replicas.retain(|a| a.hostname != source);
                // A volume that ran on one node runs on the target alone now.
                let serves_alone = source_was_primary && ha::alone(&next);
                for a in &mut next.replicas {
                    a.copy_from = None;
                    a.primary |= serves_alone;
                }
                next.version += 1;
                OpStep::UpdateVolume(Box::new(VolumeChange {
                    config: Some(next),
                    ..Default::default()
                }))
            }
            Stage::Pruned => {
                if let Some(r) = replica_on(w.replicas, source) {
                    return OpStep::DeleteReplica(r.metadata.name.clone().unwrap_or_default());
                }
                if any_replica_on(w.replicas, source) {
                    // Its agent removes the logical volume(s), then the object goes.
                    return at_step(op, STEP_PRUNE, None);
                }
                let nodes = self.nodes_after(config, target);
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
                    format!(
                        "moved from {source} to {target} ({})",
                        format_size(config.required_capacity_bytes)
                    ),
                )
            }
        }
    }

    fn abortable(&self, op: &Op, v: &LocalVolume) -> Result<(), String> {
        let (Some(config), Some(target)) =
            (v.spec.config.as_ref(), op.status.target_node.as_deref())
        else {
            return Ok(());
        };
        match stage(config, self.source(), target) {
            Stage::Pruned => Err(format!(
                "the new replica on {target} was complete and verified and {} left the placement; the migration completes",
                self.source()
            )),
            _ => Ok(()),
        }
    }

    fn undo(&self, op: &Op, w: &World, v: &LocalVolume) -> Option<OpStep> {
        let config = v.spec.config.as_ref()?;
        let source = self.source();
        if let Some(target) = op.status.target_node.as_deref() {
            if config.replicas.iter().any(|a| a.hostname == target)
                || config
                    .replicas
                    .iter()
                    .any(|a| a.hostname == source && a.leaving)
            {
                let mut next = config.clone();
                next.replicas.retain(|a| a.hostname != target);
                for a in &mut next.replicas {
                    if a.hostname == source {
                        // Back in the replication; an HA source keeps its fence mark until
                        // it resynced what it missed (the controller clears it then).
                        a.leaving = false;
                    }
                }
                next.version += 1;
                return Some(OpStep::UpdateVolume(Box::new(VolumeChange {
                    config: Some(next),
                    ..Default::default()
                })));
            }
            return remove_replica_on(w, target);
        }
        None
    }
}
