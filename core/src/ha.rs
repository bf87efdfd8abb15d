//! HA volume decisions: who may be primary, who is fenced, when to fail over, and how an HA
//! volume's copies stand. Pure.
//!
//! The record of who may serve a volume is its config (`spec.config.replicas[].primary` and
//! `.outdated`). It changes only by a compare-and-swap on the LocalVolume (resourceVersion
//! precondition), and every path that changes it goes through a function here:
//!
//! - [`fence_peer`]: the primary's node lost its peer and DRBD froze its I/O; it may resume
//!   only once the peer is recorded outdated.
//! - [`failover`]: the controller saw the primary's node lost past a grace period; the
//!   survivor may be promoted only once the old primary is recorded outdated, and only if
//!   the survivor holds up-to-date data and is not itself outdated.
//! - [`switch_primary`]: the volume is published on the other node while the primary is
//!   not in use there.
//!
//! Because both a fence and a failover must win the same compare-and-swap, at most one of
//! them happens for one loss of connection: either the primary goes on and the survivor is
//! outdated (never promoted until resynced), or the survivor is promoted and the old primary
//! is outdated (its frozen I/O is never resumed). Nothing acknowledged is ever lost.

use crate::drbd::{self, port_for, resource_name};
use hwameistor_api::{
    HaState, LocalVolume, LocalVolumeReplica, LocalVolumeSpec, ReplicaAssignment, ReplicationPeer,
    ReplicationSpec, ReplicationStatus, VolumeConfig,
};
use std::fmt;

/// Whether a volume is replicated (has a replication resource).
pub fn is_ha(config: &VolumeConfig) -> bool {
    config.resource_id >= 0
}

/// Whether a new volume gets a replication resource: replicated volumes, and volumes
/// created convertible (DRBD over their one node from the start, so a conversion adds a
/// second replica online, under a volume in use).
pub fn wants_replication(spec: &LocalVolumeSpec) -> bool {
    spec.replica_number > 1 || spec.convertible
}

/// Why a thin volume cannot be replicated (HA, convertible, or converted): DRBD 8.4's
/// initial sync writes every block of the new replica, which would allocate the whole thin
/// volume on the second node and defeat thin provisioning. One rule for the StorageClass,
/// the admission webhook and the conversion.
pub const THIN_NOT_REPLICATED: &str = "thin volumes keep one replica: DRBD's initial sync writes every block, which would allocate the whole thin volume on the second node; use a thick StorageClass for HA or convertible volumes";

/// Whether a volume of this spec is thin but asks for replication (see
/// [`THIN_NOT_REPLICATED`]).
pub fn thin_replicated(spec: &LocalVolumeSpec) -> bool {
    spec.thin && wants_replication(spec)
}

/// Whether a replicated volume runs on one node only (its one active replica has no peer):
/// a volume created convertible and not converted yet.
pub fn alone(config: &VolumeConfig) -> bool {
    is_ha(config) && active(config).count() == 1
}

/// The lowest replication resource id no volume holds (a free list rebuilt from the
/// volumes that exist), or `None` when every id is taken.
pub fn allocate_resource_id(volumes: &[LocalVolume]) -> Option<i64> {
    drbd::free_resource_id(
        volumes
            .iter()
            .filter_map(|v| v.spec.config.as_ref())
            .map(|c| c.resource_id),
    )
}

fn assignment<'a>(config: &'a VolumeConfig, node: &str) -> Option<&'a ReplicaAssignment> {
    config.replicas.iter().find(|a| a.hostname == node)
}

/// The replicas in the volume's replication: all but those a migration is replacing (with
/// DRBD 8.4 a resource has two nodes, so a leaving replica makes room for its replacement).
pub fn active(config: &VolumeConfig) -> impl Iterator<Item = &ReplicaAssignment> {
    config.replicas.iter().filter(|a| !a.leaving)
}

/// The replica `node`'s replica replicates with: the other active one.
pub fn active_peer<'a>(config: &'a VolumeConfig, node: &str) -> Option<&'a ReplicaAssignment> {
    active(config).find(|a| a.hostname != node)
}

fn replica_on<'a>(
    replicas: &'a [LocalVolumeReplica],
    node: &str,
) -> Option<&'a LocalVolumeReplica> {
    replicas
        .iter()
        .find(|r| r.spec.node_name == node && r.metadata.deletion_timestamp.is_none())
}

fn replication_status(r: Option<&LocalVolumeReplica>) -> Option<&ReplicationStatus> {
    r.and_then(|r| r.status.as_ref())
        .and_then(|s| s.replication.as_ref())
}

fn up_to_date(r: Option<&LocalVolumeReplica>) -> bool {
    replication_status(r).is_some_and(|s| s.disk_state == drbd::DiskState::UpToDate.as_str())
}

fn is_primary(r: Option<&LocalVolumeReplica>) -> bool {
    replication_status(r).is_some_and(|s| s.role == drbd::Role::Primary.as_str())
}

/// The replication part of the replica on `node`, from the volume's config; `None` for a
/// volume without replication, or a node the config does not place it on, or when a
/// node's replication address is not known yet (the replica cannot be configured).
pub fn replication_spec(
    v: &LocalVolume,
    config: &VolumeConfig,
    node: &str,
    port_base: i64,
) -> Option<ReplicationSpec> {
    if !is_ha(config) {
        return None;
    }
    let me = assignment(config, node)?;
    let address = me.ip.clone()?;
    // A leaving replica is out of the replication: no peer (its resource goes down).
    let peer = active_peer(config, node)
        .filter(|_| !me.leaving)
        .and_then(|a| {
            a.ip.clone().map(|address| ReplicationPeer {
                node: a.hostname.clone(),
                address,
            })
        });
    let volume = v.metadata.name.clone().unwrap_or_default();
    // A resolution naming a node without a replica decides nothing.
    let keep = v
        .spec
        .split_brain_resolution
        .as_ref()
        .map(|r| r.keep.as_str())
        .filter(|k| config.replicas.iter().any(|a| a.hostname == *k));
    let discard_my_data = keep.is_some_and(|k| k != node);
    let keep_my_data = keep == Some(node);
    Some(ReplicationSpec {
        resource: resource_name(&volume, config.resource_id),
        minor: config.resource_id,
        port: port_for(port_base, config.resource_id),
        address,
        peer,
        primary: me.primary && !me.leaving,
        outdated: me.outdated,
        initial: config.initial,
        discard_my_data,
        keep_my_data,
        leaving: me.leaving,
        config_version: config.version,
    })
}

/// What the fence-peer handler of `node` (whose DRBD froze I/O after losing its peer)
/// does.
#[derive(Clone, Debug, PartialEq)]
pub enum FenceVerdict {
    /// Record the peer outdated with this config (compare-and-swap), then resume I/O.
    Fence(VolumeConfig),
    /// The peer is recorded outdated already: resume I/O.
    AlreadyFenced,
    /// Do not resume: I/O stays frozen. The reason says why (this replica was fenced
    /// itself, or is not the one allowed to be primary).
    Refuse(String),
}

/// The fence decision for `node`'s replica, which lost its peer while primary (or while
/// being promoted).
pub fn fence_peer(config: &VolumeConfig, node: &str) -> FenceVerdict {
    let Some(me) = assignment(config, node) else {
        return FenceVerdict::Refuse(format!("node {node} holds no replica of this volume"));
    };
    if me.outdated {
        return FenceVerdict::Refuse(format!(
            "the replica on {node} is recorded outdated (fenced): its peer may have been promoted"
        ));
    }
    if !me.primary || me.leaving {
        return FenceVerdict::Refuse(format!(
            "the replica on {node} is not the one allowed to be primary"
        ));
    }
    // A leaving replica is out of the replication already (its resource is down, and it is
    // never promoted): only the active peer needs the mark.
    let peers: Vec<&ReplicaAssignment> = active(config).filter(|a| a.hostname != node).collect();
    if peers.iter().all(|a| a.outdated) {
        return FenceVerdict::AlreadyFenced;
    }
    let mut next = config.clone();
    for a in next
        .replicas
        .iter_mut()
        .filter(|a| a.hostname != node && !a.leaving)
    {
        a.outdated = true;
    }
    next.version += 1;
    FenceVerdict::Fence(next)
}

/// Whether a node whose heartbeat has not changed for `silent_ms` (a renewal declared valid
/// for `valid_ms`) counts as lost: silent for longer than its validity plus `grace_ms`.
pub fn heartbeat_lost(silent_ms: i64, valid_ms: i64, grace_ms: i64) -> bool {
    silent_ms > valid_ms.saturating_add(grace_ms)
}

/// Why a failover does not happen (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoFailover {
    /// Nothing to do: the primary's node is there, or no replica is primary.
    NotNeeded,
    /// The primary's node is lost but no survivor may take over; the reason says why (its
    /// data is not up to date, it is fenced, its node is lost too).
    Blocked(String),
}

impl fmt::Display for NoFailover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoFailover::NotNeeded => f.write_str("no failover needed"),
            NoFailover::Blocked(why) => f.write_str(why),
        }
    }
}

/// The config after failing over from a lost primary: the old primary recorded outdated
/// (fenced) and the survivor allowed to be primary. `lost(node)` says whether a node is
/// lost (not ready for longer than the grace period).
pub fn failover(
    config: &VolumeConfig,
    replicas: &[LocalVolumeReplica],
    lost: impl Fn(&str) -> bool,
) -> Result<VolumeConfig, NoFailover> {
    if !is_ha(config) {
        return Err(NoFailover::NotNeeded);
    }
    let Some(old) = config.replicas.iter().find(|a| a.primary) else {
        return Err(NoFailover::NotNeeded);
    };
    if !lost(&old.hostname) {
        return Err(NoFailover::NotNeeded);
    }
    let mut why = Vec::new();
    let survivor = config.replicas.iter().find(|a| {
        if a.hostname == old.hostname {
            return false;
        }
        if a.leaving {
            why.push(format!(
                "the replica on {} is being replaced by a migration (its resource is down)",
                a.hostname
            ));
            return false;
        }
        if a.outdated {
            why.push(format!(
                "the replica on {} is outdated (the primary fenced it and went on writing)",
                a.hostname
            ));
            return false;
        }
        if lost(&a.hostname) {
            why.push(format!("node {} is lost too", a.hostname));
            return false;
        }
        if !up_to_date(replica_on(replicas, &a.hostname)) {
            why.push(format!(
                "the replica on {} does not report up-to-date data",
                a.hostname
            ));
            return false;
        }
        true
    });
    let Some(survivor) = survivor.map(|a| a.hostname.clone()) else {
        if why.is_empty() {
            why.push("the volume has no other replica".into());
        }
        return Err(NoFailover::Blocked(format!(
            "primary node {} is lost; no failover: {}",
            old.hostname,
            why.join("; ")
        )));
    };
    let old = old.hostname.clone();
    let mut next = config.clone();
    for a in &mut next.replicas {
        if a.hostname == old {
            a.primary = false;
            a.outdated = true;
        } else if a.hostname == survivor {
            a.primary = true;
        }
    }
    next.version += 1;
    Ok(next)
}

/// The config that lets `to`'s replica be primary, for a volume being published on `to`.
/// `Ok(None)` when it may be primary already.
pub fn switch_primary(
    config: &VolumeConfig,
    replicas: &[LocalVolumeReplica],
    to: &str,
) -> Result<Option<VolumeConfig>, String> {
    let Some(me) = assignment(config, to) else {
        return Err(format!("node {to} holds no replica of this volume"));
    };
    if me.leaving {
        return Err(format!(
            "the replica on {to} is being moved off {to} by a migration; the volume serves from its other nodes"
        ));
    }
    if me.outdated {
        return Err(format!(
            "the replica on {to} is outdated (fenced); it serves again once it has resynced from its peer"
        ));
    }
    if me.primary {
        return Ok(None);
    }
    if !up_to_date(replica_on(replicas, to)) {
        return Err(format!(
            "the replica on {to} does not hold up-to-date data yet (initial sync or resync running)"
        ));
    }
    if let Some(cur) = config.replicas.iter().find(|a| a.primary) {
        if is_primary(replica_on(replicas, &cur.hostname)) {
            return Err(format!(
                "the replica on {} is still primary (in use there); it must be unstaged first",
                cur.hostname
            ));
        }
    }
    let mut next = config.clone();
    for a in &mut next.replicas {
        a.primary = a.hostname == to;
    }
    next.version += 1;
    Ok(Some(next))
}

/// Whether replica `r`'s report was made after its node saw `config` (its spec carries
/// the config's version and its status observed that spec): what it says holds for the
/// placement as it is now, not for one before.
pub fn reported_after(config: &VolumeConfig, r: &LocalVolumeReplica) -> bool {
    r.spec
        .replication
        .as_ref()
        .is_some_and(|s| s.config_version == config.version)
        && r.metadata.generation.is_some()
        && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
}

/// The config with what the replicas' reports settled: `initial` cleared once a replica
/// holds up-to-date data, and `outdated` cleared from a replica that resynced (connected
/// and UpToDate). `None` when nothing changes.
pub fn settle(config: &VolumeConfig, replicas: &[LocalVolumeReplica]) -> Option<VolumeConfig> {
    if !is_ha(config) {
        return None;
    }
    let mut next = config.clone();
    if next.initial && active(config).any(|a| up_to_date(replica_on(replicas, &a.hostname))) {
        next.initial = false;
    }
    // A fence is lifted only on fresh reports from both sides: the fenced replica connected
    // and UpToDate, and its peer (the side that went on writing) connected to it and seeing
    // it UpToDate. The fenced side alone is not enough: right after a cut it may still
    // believe itself connected, its DRBD not having noticed yet what its peer already acted
    // on; and the last report of a node that died says "Connected" forever.
    let fresh = |r: &LocalVolumeReplica| reported_after(config, r);
    let connected_with_up_to_date_peer = |r: &LocalVolumeReplica| {
        replication_status(Some(r)).is_some_and(|s| {
            !s.split_brain
                && drbd::ConnState::parse(&s.connection_state).is_some_and(|c| c.connected())
                && s.peer_disk_state.as_deref() == Some(drbd::DiskState::UpToDate.as_str())
        })
    };
    for a in &mut next.replicas {
        if !a.outdated || a.primary || a.leaving {
            continue;
        }
        let me = replica_on(replicas, &a.hostname);
        let peer = active_peer(config, &a.hostname).and_then(|p| replica_on(replicas, &p.hostname));
        let resynced = me
            .is_some_and(|r| fresh(r) && up_to_date(Some(r)) && connected_with_up_to_date_peer(r))
            && peer.is_some_and(|p| fresh(p) && connected_with_up_to_date_peer(p));
        if resynced {
            a.outdated = false;
        }
    }
    if next == *config {
        return None;
    }
    next.version += 1;
    Some(next)
}

/// Whether either replica reports a split brain.
pub fn split_brain(replicas: &[LocalVolumeReplica]) -> bool {
    replicas
        .iter()
        .any(|r| replication_status(Some(r)).is_some_and(|s| s.split_brain))
}

/// How an HA volume's copies stand.
pub fn ha_state(config: &VolumeConfig, replicas: &[LocalVolumeReplica]) -> Option<HaState> {
    // One copy, by design (a convertible volume not converted yet): nothing to be healthy
    // or degraded about.
    if !is_ha(config) || alone(config) {
        return None;
    }
    if split_brain(replicas) {
        return Some(HaState::SplitBrain);
    }
    let mut syncing = false;
    for a in active(config) {
        let Some(s) = replication_status(replica_on(replicas, &a.hostname)) else {
            return Some(HaState::Degraded);
        };
        let conn = drbd::ConnState::parse(&s.connection_state);
        if a.outdated || !conn.is_some_and(|c| c.connected()) {
            return Some(HaState::Degraded);
        }
        if conn.is_some_and(|c| c.syncing()) || s.disk_state != drbd::DiskState::UpToDate.as_str() {
            syncing = true;
        }
    }
    Some(if syncing {
        HaState::Syncing
    } else {
        HaState::Healthy
    })
}

/// The message that tells the operator how to resolve a split brain of `volume`.
pub fn split_brain_message(volume: &str, nodes: &[String]) -> String {
    format!(
        "both replicas ({}) were primary while disconnected and hold different data; nothing was discarded. Choose the node whose data to keep: kubectl hwameistor volume resolve-split-brain {volume} --keep <{}>",
        nodes.join(", "),
        nodes.join("|")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{
        LocalVolumeReplicaSpec, LocalVolumeReplicaStatus, LocalVolumeSpec, SplitBrainResolution,
    };

    fn config() -> VolumeConfig {
        VolumeConfig {
            version: 3,
            required_capacity_bytes: 1 << 30,
            resource_id: 5,
            replicas: vec![
                ReplicaAssignment {
                    id: 1,
                    hostname: "a".into(),
                    ip: Some("10.0.0.1".into()),
                    primary: true,
                    outdated: false,
                    copy_from: None,
                    leaving: false,
                },
                ReplicaAssignment {
                    id: 2,
                    hostname: "b".into(),
                    ip: Some("10.0.0.2".into()),
                    primary: false,
                    outdated: false,
                    copy_from: None,
                    leaving: false,
                },
            ],
            initial: false,
        }
    }

    fn replica(node: &str, role: &str, disk: &str, conn: &str) -> LocalVolumeReplica {
        let mut r = LocalVolumeReplica::new(
            &format!("v-{node}"),
            LocalVolumeReplicaSpec {
                volume_name: "v".into(),
                pool_name: "LocalStorage_PoolHDD".into(),
                node_name: node.into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 1 << 30,
                replication: None,
                copy_from: None,
                thin: false,
            },
        );
        r.status = Some(LocalVolumeReplicaStatus {
            replication: Some(ReplicationStatus {
                role: role.into(),
                disk_state: disk.into(),
                connection_state: conn.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        r
    }

    fn volume(config: VolumeConfig) -> LocalVolume {
        let mut v = LocalVolume::new(
            "v",
            LocalVolumeSpec {
                pool_name: "LocalStorage_PoolHDD".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 1 << 30,
                replica_number: 2,
                convertible: false,
                accessibility: Default::default(),
                pvc_namespace: None,
                pvc_name: None,
                fs_type: Some("xfs".into()),
                config: Some(config),
                split_brain_resolution: None,
                operation: None,
                thin: false,
                data_source: None,
            },
        );
        v.metadata.uid = Some("u".into());
        v
    }

    fn lost<'a>(nodes: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |n| nodes.contains(&n)
    }

    #[test]
    fn a_node_is_lost_only_after_validity_and_grace() {
        assert!(!heartbeat_lost(10_000, 10_000, 5_000));
        assert!(!heartbeat_lost(15_000, 10_000, 5_000));
        assert!(heartbeat_lost(15_001, 10_000, 5_000));
        assert!(!heartbeat_lost(i64::MAX, i64::MAX, 10), "no overflow");
    }

    #[test]
    fn resource_ids_come_from_a_free_list_of_existing_volumes() {
        let mut c1 = config();
        c1.resource_id = 0;
        let mut c2 = config();
        c2.resource_id = 2;
        let mut plain = config();
        plain.resource_id = -1;
        let vols = [volume(c1), volume(c2), volume(plain)];
        assert_eq!(allocate_resource_id(&vols), Some(1));
        assert_eq!(allocate_resource_id(&[]), Some(0));
    }

    #[test]
    fn each_replica_gets_its_peer_port_minor_and_role() {
        let v = volume(config());
        let c = v.spec.config.clone().unwrap();
        let a = replication_spec(&v, &c, "a", 43001).unwrap();
        assert_eq!(a.minor, 5);
        assert_eq!(a.port, 43006);
        assert_eq!(a.address, "10.0.0.1");
        assert_eq!(
            a.peer,
            Some(ReplicationPeer {
                node: "b".into(),
                address: "10.0.0.2".into()
            })
        );
        assert!(a.primary && !a.outdated && !a.discard_my_data);
        let b = replication_spec(&v, &c, "b", 43001).unwrap();
        assert!(!b.primary);
        assert_eq!(b.resource, a.resource);
        assert!(replication_spec(&v, &c, "zz", 43001).is_none());
        let mut plain = c.clone();
        plain.resource_id = -1;
        assert!(replication_spec(&v, &plain, "a", 43001).is_none());
        let mut no_ip = c.clone();
        no_ip.replicas[0].ip = None;
        assert!(replication_spec(&v, &no_ip, "a", 43001).is_none());
        assert!(replication_spec(&v, &no_ip, "b", 43001)
            .unwrap()
            .peer
            .is_none());
    }

    #[test]
    fn split_brain_resolution_discards_only_the_other_side() {
        let mut v = volume(config());
        v.spec.split_brain_resolution = Some(SplitBrainResolution { keep: "b".into() });
        let c = v.spec.config.clone().unwrap();
        assert!(replication_spec(&v, &c, "a", 1).unwrap().discard_my_data);
        assert!(!replication_spec(&v, &c, "b", 1).unwrap().discard_my_data);
        assert!(replication_spec(&v, &c, "b", 1).unwrap().keep_my_data);
        assert!(!replication_spec(&v, &c, "a", 1).unwrap().keep_my_data);
        // A node that holds no replica discards nothing anywhere.
        v.spec.split_brain_resolution = Some(SplitBrainResolution { keep: "zz".into() });
        assert!(!replication_spec(&v, &c, "a", 1).unwrap().discard_my_data);
        assert!(!replication_spec(&v, &c, "b", 1).unwrap().discard_my_data);
    }

    #[test]
    fn the_primary_fences_its_peer_once() {
        let c = config();
        let FenceVerdict::Fence(next) = fence_peer(&c, "a") else {
            panic!("expected a fence")
        };
        assert!(next.replicas[1].outdated && !next.replicas[0].outdated);
        assert_eq!(next.version, c.version + 1);
        assert_eq!(fence_peer(&next, "a"), FenceVerdict::AlreadyFenced);
    }

    #[test]
    fn a_fenced_or_secondary_replica_never_resumes() {
        let c = config();
        assert!(matches!(fence_peer(&c, "b"), FenceVerdict::Refuse(_)));
        assert!(matches!(fence_peer(&c, "zz"), FenceVerdict::Refuse(_)));
        let failed_over = failover(
            &c,
            &[replica("b", "Secondary", "UpToDate", "WFConnection")],
            lost(&["a"]),
        )
        .unwrap();
        // The old primary comes back and its handler runs: it was fenced, it stays frozen.
        assert!(
            matches!(fence_peer(&failed_over, "a"), FenceVerdict::Refuse(m) if m.contains("outdated"))
        );
    }

    #[test]
    fn failover_fences_the_lost_primary_and_promotes_an_up_to_date_survivor() {
        let c = config();
        let rs = [replica("b", "Secondary", "UpToDate", "WFConnection")];
        let next = failover(&c, &rs, lost(&["a"])).unwrap();
        assert!(!next.replicas[0].primary && next.replicas[0].outdated);
        assert!(next.replicas[1].primary && !next.replicas[1].outdated);
        assert_eq!(next.version, c.version + 1);
        // Nothing lost, nothing to do.
        assert_eq!(failover(&c, &rs, lost(&[])), Err(NoFailover::NotNeeded));
        // The secondary lost: not a failover.
        assert_eq!(failover(&c, &rs, lost(&["b"])), Err(NoFailover::NotNeeded));
    }

    #[test]
    fn failover_never_promotes_what_may_lack_acknowledged_writes() {
        // The primary fenced the survivor first: the fence won the race.
        let c = config();
        let FenceVerdict::Fence(fenced) = fence_peer(&c, "a") else {
            panic!()
        };
        let rs = [replica("b", "Secondary", "UpToDate", "WFConnection")];
        let Err(NoFailover::Blocked(why)) = failover(&fenced, &rs, lost(&["a"])) else {
            panic!("expected blocked")
        };
        assert!(why.contains("outdated"), "{why}");
        // A survivor mid-resync (Inconsistent), or silent.
        for rs in [
            vec![replica("b", "Secondary", "Inconsistent", "WFConnection")],
            vec![replica("b", "Secondary", "Outdated", "WFConnection")],
            vec![],
        ] {
            assert!(matches!(
                failover(&c, &rs, lost(&["a"])),
                Err(NoFailover::Blocked(_))
            ));
        }
        // Both nodes lost.
        assert!(matches!(
            failover(&c, &rs, lost(&["a", "b"])),
            Err(NoFailover::Blocked(w)) if w.contains("lost too")
        ));
        // Once failed over, a second loss of the same node changes nothing.
        let next = failover(&c, &rs, lost(&["a"])).unwrap();
        assert_eq!(
            failover(&next, &rs, lost(&["a"])),
            Err(NoFailover::NotNeeded)
        );
    }

    #[test]
    fn switchover_needs_up_to_date_data_and_a_demoted_primary() {
        let c = config();
        let demoted = [
            replica("a", "Secondary", "UpToDate", "Connected"),
            replica("b", "Secondary", "UpToDate", "Connected"),
        ];
        let next = switch_primary(&c, &demoted, "b").unwrap().unwrap();
        assert!(next.replicas[1].primary && !next.replicas[0].primary);
        assert_eq!(switch_primary(&c, &demoted, "a"), Ok(None));
        let in_use = [
            replica("a", "Primary", "UpToDate", "Connected"),
            replica("b", "Secondary", "UpToDate", "Connected"),
        ];
        assert!(switch_primary(&c, &in_use, "b")
            .unwrap_err()
            .contains("still primary"));
        let syncing = [
            replica("a", "Secondary", "UpToDate", "SyncSource"),
            replica("b", "Secondary", "Inconsistent", "SyncTarget"),
        ];
        assert!(switch_primary(&c, &syncing, "b")
            .unwrap_err()
            .contains("up-to-date"));
        let mut fenced = c.clone();
        fenced.replicas[1].outdated = true;
        assert!(switch_primary(&fenced, &demoted, "b")
            .unwrap_err()
            .contains("outdated"));
        assert!(switch_primary(&c, &demoted, "zz").is_err());
    }

    #[test]
    fn settle_clears_initial_and_outdated_only_when_data_says_so() {
        let mut c = config();
        c.initial = true;
        c.replicas[1].outdated = true;
        let syncing = [
            replica("a", "Primary", "UpToDate", "SyncSource"),
            replica("b", "Secondary", "Inconsistent", "SyncTarget"),
        ];
        let next = settle(&c, &syncing).unwrap();
        assert!(!next.initial);
        assert!(next.replicas[1].outdated, "still resyncing");
        // Reports as seen by each side, made after it saw config version `seen` (the
        // generation of the object `gen`, observed at `observed`).
        let report =
            |node: &str, role: &str, conn: &str, peer_disk: &str, seen: i64, observed: i64| {
                let mut r = replica(node, role, "UpToDate", conn);
                r.spec.replication = Some(ReplicationSpec {
                    outdated: node == "b",
                    config_version: seen,
                    ..Default::default()
                });
                r.metadata.generation = Some(3);
                let st = r.status.as_mut().unwrap();
                st.observed_generation = Some(observed);
                st.replication.as_mut().unwrap().peer_disk_state = Some(peer_disk.into());
                r
            };
        let v = next.version;
        let resynced = [
            report("a", "Primary", "Connected", "UpToDate", v, 3),
            report("b", "Secondary", "Connected", "UpToDate", v, 3),
        ];
        let next2 = settle(&next, &resynced).unwrap();
        assert!(!next2.replicas[1].outdated);
        // Stale on either side, the fence stays: the last word of a node that died, a report
        // made before the replica saw the fence, or a config version not yet propagated.
        for stale in [
            [
                report("a", "Primary", "Connected", "UpToDate", v, 3),
                report("b", "Secondary", "Connected", "UpToDate", v, 2),
            ],
            [
                report("a", "Primary", "Connected", "UpToDate", v - 1, 3),
                report("b", "Secondary", "Connected", "UpToDate", v, 3),
            ],
        ] {
            assert_eq!(settle(&next, &stale), None);
        }
        // Right after a cut the fenced side may still believe itself connected: the
        // primary's fresh word (it lost the link) keeps the fence.
        let cut = [
            report("a", "Primary", "WFConnection", "Outdated", v, 3),
            report("b", "Secondary", "Connected", "UpToDate", v, 3),
        ];
        assert_eq!(settle(&next, &cut), None);
        // The peer alone is not enough.
        assert_eq!(settle(&next, &resynced[1..]), None);
        // UpToDate but disconnected is not resynced.
        let mut c3 = config();
        c3.replicas[1].outdated = true;
        let mut alone = [replica("b", "Secondary", "UpToDate", "StandAlone")];
        alone[0].spec.replication = Some(ReplicationSpec {
            outdated: true,
            ..Default::default()
        });
        assert_eq!(settle(&c3, &alone), None);
        // Nobody up to date yet: initial stays.
        let mut c4 = config();
        c4.initial = true;
        let fresh = [replica("a", "Secondary", "Inconsistent", "Connected")];
        assert_eq!(settle(&c4, &fresh), None);
    }

    #[test]
    fn ha_state_sums_up_the_replicas() {
        let c = config();
        let healthy = [
            replica("a", "Primary", "UpToDate", "Connected"),
            replica("b", "Secondary", "UpToDate", "Connected"),
        ];
        assert_eq!(ha_state(&c, &healthy), Some(HaState::Healthy));
        let syncing = [
            replica("a", "Primary", "UpToDate", "SyncSource"),
            replica("b", "Secondary", "Inconsistent", "SyncTarget"),
        ];
        assert_eq!(ha_state(&c, &syncing), Some(HaState::Syncing));
        let degraded = [
            replica("a", "Primary", "UpToDate", "WFConnection"),
            replica("b", "Secondary", "UpToDate", "WFConnection"),
        ];
        assert_eq!(ha_state(&c, &degraded), Some(HaState::Degraded));
        assert_eq!(ha_state(&c, &healthy[..1]), Some(HaState::Degraded));
        let mut sb = healthy.clone();
        for r in &mut sb {
            let s = r.status.as_mut().unwrap().replication.as_mut().unwrap();
            s.connection_state = "StandAlone".into();
            s.split_brain = true;
        }
        assert_eq!(ha_state(&c, &sb), Some(HaState::SplitBrain));
        let mut plain = c.clone();
        plain.resource_id = -1;
        assert_eq!(ha_state(&plain, &healthy), None);
        let msg = split_brain_message("v", &["a".into(), "b".into()]);
        assert!(msg.contains("resolve-split-brain v --keep <a|b>"), "{msg}");
    }

    /// `a` (primary) stays, `b` is being replaced by `c`.
    fn moving_b_to_c() -> VolumeConfig {
        let mut c = config();
        c.replicas[1].leaving = true;
        c.replicas.push(ReplicaAssignment {
            id: 3,
            hostname: "c".into(),
            ip: Some("10.0.0.3".into()),
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_leaving_replica_is_out_of_the_replication_and_never_serves() {
        let c = moving_b_to_c();
        let v = volume(c.clone());
        let b = replication_spec(&v, &c, "b", 43001).expect("b keeps its spec");
        assert!(b.leaving && b.peer.is_none() && !b.primary);
        let a = replication_spec(&v, &c, "a", 43001).expect("a");
        assert_eq!(a.peer.map(|p| p.node).as_deref(), Some("c"));
        let new = replication_spec(&v, &c, "c", 43001).expect("c");
        assert_eq!(new.peer.map(|p| p.node).as_deref(), Some("a"));
        assert!(!new.leaving && !new.primary);

        // Fencing marks the active peer only.
        let FenceVerdict::Fence(f) = fence_peer(&c, "a") else {
            panic!("fence expected")
        };
        assert!(f.replicas[2].outdated && !f.replicas[1].outdated);
        // A leaving replica cannot fence, be switched to, or survive a failover.
        let mut b_primary = c.clone();
        b_primary.replicas[0].primary = false;
        b_primary.replicas[1].primary = true;
        assert!(matches!(
            fence_peer(&b_primary, "b"),
            FenceVerdict::Refuse(_)
        ));
        let up = [
            replica("a", "Secondary", "UpToDate", "StandAlone"),
            replica("b", "Unknown", "UpToDate", "StandAlone"),
        ];
        let err = switch_primary(&c, &up, "b").expect_err("refused");
        assert!(err.contains("migration"), "{err}");
        let Err(NoFailover::Blocked(why)) = failover(&c, &up, lost(&["a"])) else {
            panic!("no survivor")
        };
        assert!(why.contains("being replaced"), "{why}");
        // Health counts the active replicas only.
        let pair = [
            replica("a", "Primary", "UpToDate", "Connected"),
            replica("c", "Secondary", "UpToDate", "Connected"),
        ];
        assert_eq!(ha_state(&c, &pair), Some(HaState::Healthy));
    }
}
