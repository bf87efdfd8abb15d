//! Where a volume's replicas go. Pure: state in, decision out.
//!
//! A pool's room is what its node reported, less what the controller has already promised
//! and the node has not reported yet; and never more than its total less everything placed
//! in it. The second bound keeps a burst of placements honest while the node's report lags
//! behind the logical volumes it created.

use crate::lvm::round_up_to_extent;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalStorageNode, LocalVolume, LocalVolumeReplica, NodeState, PoolClass, VolumeConfig,
};
use std::collections::BTreeMap;
use thiserror::Error;

/// One pool of a node, as the placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolView {
    pub total: i64,
    pub free: i64,
    pub extent: i64,
    /// Logical volumes the node reported in the pool.
    pub volumes: i64,
    /// The node's thin over-provisioning, in percent of its thin pool's data (100 when the
    /// node does not say: a thin volume then counts at its full size).
    pub thin_percent: i64,
}

impl PoolView {
    /// The bytes of the group a volume of `bytes` takes, in whole extents: a thick volume
    /// its size; a thin volume its share of the thin pool (size × 100 / `thin_percent`),
    /// which is how much the agent's ratio rule lets the pool grow for it. The pool itself
    /// (already taken from the group's free space) holds the shares of the thin volumes
    /// that exist.
    pub fn footprint(&self, bytes: i64, thin: bool) -> i64 {
        let b = if thin {
            let pct = self.thin_percent.max(100);
            // Rounded up: a share is never smaller than the ratio allows.
            bytes.saturating_mul(100).saturating_add(pct - 1) / pct
        } else {
            bytes
        };
        round_up_to_extent(b, self.extent)
    }

    /// The size of the volume whose footprint is `bytes` (the inverse of [`footprint`],
    /// rounded down): what a room of `bytes` offers a thin or thick volume.
    ///
    /// [`footprint`]: PoolView::footprint
    pub fn offers(&self, bytes: i64, thin: bool) -> i64 {
        if thin {
            bytes.saturating_mul(self.thin_percent.max(100)) / 100
        } else {
            bytes
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub ready: bool,
    /// The node's replication address (LocalStorageNode `storageIP`); HA replicas go only
    /// to nodes that have one.
    pub storage_ip: Option<String>,
    pub pools: BTreeMap<PoolClass, PoolView>,
}

/// A replica already placed (by an earlier decision), whether or not it exists yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub volume: String,
    pub node: String,
    pub class: PoolClass,
    /// What the volume asks for now.
    pub required: i64,
    /// What the node reports the replica has; `None` until its logical volume exists.
    pub allocated: Option<i64>,
    /// Bytes of replication metadata beside the data (its own logical volume); 0 for a
    /// volume without replication.
    pub meta: i64,
    /// A thin volume (see [`PoolView::footprint`]).
    pub thin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub volume: String,
    pub class: PoolClass,
    pub bytes: i64,
    pub replicas: usize,
    /// Replicated (HA): every replica also needs replication metadata and its node a
    /// replication address.
    pub replicated: bool,
    /// A thin volume: it needs its share of a thin pool (see [`PoolView::footprint`]).
    pub thin: bool,
    /// Allowed nodes in order of preference; empty means any node.
    pub accessibility: Vec<String>,
    /// For the replicas beyond the accessibility nodes (an HA volume's second replica):
    /// nodes preferred over the others when they have room, such as the node holding the
    /// second replicas of the other volumes of the same pod.
    pub prefer: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Most volumes one pool may hold (counting placed ones); `None` for no limit.
    pub max_volumes_per_pool: Option<i64>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    #[error("need {need} nodes with {bytes} free in a {class} pool, found {found}: {reasons}")]
    NoRoom {
        need: usize,
        found: usize,
        class: PoolClass,
        bytes: String,
        reasons: String,
    },
}

/// The room left in a pool, after counting what is placed there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    pub bytes: i64,
    pub volumes: i64,
}

/// What the placed replicas (other than `exclude`'s) hold in one pool of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Bytes promised and not yet reported: creations and unfinished expansions.
    pub pending: i64,
    /// Bytes the placed replicas take or will take.
    pub committed: i64,
    /// Replicas placed whose logical volume the node has not reported.
    pub unreported: i64,
}

impl Tally {
    /// Counts placed replica `p` in `pool`.
    pub fn add(&mut self, p: &Placed, pool: &PoolView) {
        let want = pool.footprint(p.required, p.thin);
        let meta = if p.meta > 0 {
            round_up_to_extent(p.meta, pool.extent)
        } else {
            0
        };
        let have = p.allocated.map(|a| pool.footprint(a, p.thin));
        match have {
            None => {
                self.pending = self.pending.saturating_add(want + meta);
                self.unreported += 1;
            }
            // An expansion not done yet still needs its difference.
            Some(have) => self.pending = self.pending.saturating_add((want - have).max(0)),
        }
        self.committed = self
            .committed
            .saturating_add(want.max(have.unwrap_or(0)) + meta);
    }

    /// The room `pool` has left with this tally counted.
    pub fn room(&self, pool: &PoolView) -> Room {
        Room {
            bytes: (pool.free - self.pending)
                .min(pool.total - self.committed)
                .max(0),
            volumes: pool.volumes + self.unreported,
        }
    }
}

fn tally(node: &str, class: PoolClass, pool: &PoolView, placed: &[Placed], exclude: &str) -> Tally {
    let mut t = Tally::default();
    for p in placed
        .iter()
        .filter(|p| p.node == node && p.class == class && p.volume != exclude)
    {
        t.add(p, pool);
    }
    t
}

pub fn room(
    node: &str,
    class: PoolClass,
    pool: &PoolView,
    placed: &[Placed],
    exclude: &str,
) -> Room {
    tally(node, class, pool, placed, exclude).room(pool)
}

/// Room for new volumes of `class`, as GetCapacity reports it: by the same rule as
/// [`place`], so a size it offers is one the controller will place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Available {
    /// The room of every Ready node's pool, summed.
    pub total: i64,
    /// The most one pool has: a volume lives on one node, so no bigger volume fits.
    pub largest: i64,
}

/// The room for new volumes of `class` (thin ones when `thin`: a room offers them its
/// size times the node's over-provisioning) on `only_node`, or on every node when `None`.
/// Nodes that are not Ready, or have no such pool, offer nothing.
pub fn available(
    nodes: &[NodeView],
    class: PoolClass,
    thin: bool,
    placed: &[Placed],
    only_node: Option<&str>,
) -> Available {
    let mut out = Available::default();
    for node in nodes
        .iter()
        .filter(|n| n.ready && only_node.is_none_or(|o| n.name == o))
    {
        let Some(pool) = node.pools.get(&class) else {
            continue;
        };
        // No volume is excluded: every placement counts against new volumes.
        let r = pool.offers(room(&node.name, class, pool, placed, "").bytes, thin);
        out.total = out.total.saturating_add(r);
        out.largest = out.largest.max(r);
    }
    out
}

/// Room for new HA volumes (two replicas) of `class` whose first replica is on `only_node`
/// (or on any node when `None`): on each candidate node, what it has and what the roomiest
/// other candidate has, whichever is less, less the replication metadata. Candidates are
/// Ready nodes with such a pool and a replication address, as [`place`] requires.
pub fn available_replicated(
    nodes: &[NodeView],
    class: PoolClass,
    placed: &[Placed],
    only_node: Option<&str>,
) -> Available {
    let rooms: Vec<(&str, i64, i64)> = nodes
        .iter()
        .filter(|n| n.ready && n.storage_ip.is_some())
        .filter_map(|n| {
            let pool = n.pools.get(&class)?;
            Some((
                n.name.as_str(),
                room(&n.name, class, pool, placed, "").bytes,
                pool.extent,
            ))
        })
        .collect();
    let mut out = Available::default();
    for &(name, own, extent) in rooms
        .iter()
        .filter(|(name, _, _)| only_node.is_none_or(|o| *name == o))
    {
        let Some(other) = rooms
            .iter()
            .filter(|(n, _, _)| *n != name)
            .map(|(_, r, _)| *r)
            .max()
        else {
            continue;
        };
        let both = own.min(other);
        // The metadata volume beside the data, rounded as the agent makes it.
        let usable = (both - round_up_to_extent(crate::drbd::meta_bytes(both), extent)).max(0);
        out.total = out.total.saturating_add(usable);
        out.largest = out.largest.max(usable);
    }
    out
}

/// Why a volume cannot grow on a node.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GrowthError {
    #[error("{node} is not a storage node")]
    UnknownNode { node: String },
    #[error("{node} is not Ready")]
    NotReady { node: String },
    #[error("{node} has no {class} pool")]
    NoPool { node: String, class: PoolClass },
    #[error("{node} can hold {volume} at {max} at most, not {want}")]
    NoRoom {
        node: String,
        volume: String,
        max: String,
        want: String,
    },
}

/// The largest size `volume` may have in its `class` pool on `node`: what the pool has free
/// beyond the others' pending placements, plus what the volume already holds there (the
/// node's free space excludes it), and never more than the total less what the others take.
pub fn max_size(
    node: &str,
    class: PoolClass,
    pool: &PoolView,
    placed: &[Placed],
    volume: &str,
) -> i64 {
    let others = tally(node, class, pool, placed, volume);
    let own = placed
        .iter()
        .find(|p| p.node == node && p.class == class && p.volume == volume)
        .and_then(|p| p.allocated.map(|a| pool.footprint(a, p.thin)))
        .unwrap_or(0);
    (pool.free - others.pending + own)
        .min(pool.total - others.committed)
        .max(0)
}

/// Whether `volume`, placed on `node`, may grow to `bytes` (rounded to the pool's extent).
pub fn check_growth(
    nodes: &[NodeView],
    node: &str,
    class: PoolClass,
    placed: &[Placed],
    volume: &str,
    bytes: i64,
) -> Result<(), GrowthError> {
    let view = nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| GrowthError::UnknownNode { node: node.into() })?;
    if !view.ready {
        return Err(GrowthError::NotReady { node: node.into() });
    }
    let pool = view.pools.get(&class).ok_or_else(|| GrowthError::NoPool {
        node: node.into(),
        class,
    })?;
    let thin = placed
        .iter()
        .any(|p| p.node == node && p.volume == volume && p.thin);
    let want = pool.footprint(bytes, thin);
    let max = max_size(node, class, pool, placed, volume);
    if want > max {
        return Err(GrowthError::NoRoom {
            node: node.into(),
            volume: volume.into(),
            max: format_size(pool.offers(max, thin)),
            want: format_size(round_up_to_extent(bytes, pool.extent)),
        });
    }
    Ok(())
}

/// Picks `req.replicas` distinct nodes. With accessibility the first allowed nodes that fit
/// win, in the given order (the first is where the pod was scheduled). Without, the nodes
/// with most room win; ties go to fewer volumes, then to the name, so the same state always
/// gives the same answer.
pub fn place(
    req: &Request,
    nodes: &[NodeView],
    placed: &[Placed],
    policy: &Policy,
) -> Result<Vec<String>, PlacementError> {
    let mut fitting: Vec<(usize, &NodeView, Room)> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    // An HA volume's accessibility names where it must be usable (with WaitForFirstConsumer
    // and strict topology: the pod's node only); its other replica may go to any node,
    // after the named ones. A single replica (a convertible volume) goes where it is named.
    let preferred = |name: &str| req.prefer.iter().any(|n| n == name);
    let allowed_rank = |name: &str| -> Option<usize> {
        if req.accessibility.is_empty() {
            Some(usize::from(!preferred(name)))
        } else {
            match req.accessibility.iter().position(|n| n == name) {
                Some(i) => Some(i),
                None if req.replicated && req.replicas > 1 => {
                    Some(req.accessibility.len() + usize::from(!preferred(name)))
                }
                None => None,
            }
        }
    };
    for node in nodes {
        let Some(rank) = allowed_rank(&node.name) else {
            continue;
        };
        if !node.ready {
            reasons.push(format!("{} is not Ready", node.name));
            continue;
        }
        if req.replicated && node.storage_ip.is_none() {
            reasons.push(format!(
                "{} has no replication address (storageIP) for HA volumes",
                node.name
            ));
            continue;
        }
        let Some(pool) = node.pools.get(&req.class) else {
            reasons.push(format!("{} has no {} pool", node.name, req.class));
            continue;
        };
        let r = room(&node.name, req.class, pool, placed, &req.volume);
        let mut need = pool.footprint(req.bytes, req.thin);
        if req.replicated {
            need += round_up_to_extent(crate::drbd::meta_bytes(req.bytes), pool.extent);
        }
        if r.bytes < need {
            reasons.push(if req.thin {
                format!(
                    "{} has {} free (room for {} of thin volumes at {}% over-provisioning)",
                    node.name,
                    format_size(r.bytes),
                    format_size(pool.offers(r.bytes, true)),
                    pool.thin_percent.max(100)
                )
            } else {
                format!("{} has {} free", node.name, format_size(r.bytes))
            });
            continue;
        }
        if policy
            .max_volumes_per_pool
            .is_some_and(|max| r.volumes >= max)
        {
            reasons.push(format!("{} holds {} volumes already", node.name, r.volumes));
            continue;
        }
        fitting.push((rank, node, r));
    }
    for name in &req.accessibility {
        if !nodes.iter().any(|n| &n.name == name) {
            reasons.push(format!("{name} is not a storage node"));
        }
    }
    fitting.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.2.bytes.cmp(&a.2.bytes))
            .then(a.2.volumes.cmp(&b.2.volumes))
            .then(a.1.name.cmp(&b.1.name))
    });
    let reaches_accessible = req.accessibility.is_empty()
        || fitting
            .first()
            .is_some_and(|(rank, _, _)| *rank < req.accessibility.len());
    if !reaches_accessible && fitting.len() >= req.replicas {
        reasons.push(format!(
            "none of the nodes it must be usable from ({}) has room",
            req.accessibility.join(", ")
        ));
    }
    if fitting.len() < req.replicas || !reaches_accessible {
        if reasons.is_empty() {
            reasons.push("there are no storage nodes".into());
        }
        return Err(PlacementError::NoRoom {
            need: req.replicas,
            found: fitting.len(),
            class: req.class,
            bytes: format_size(req.bytes),
            reasons: reasons.join("; "),
        });
    }
    Ok(fitting
        .into_iter()
        .take(req.replicas)
        .map(|(_, n, _)| n.name.clone())
        .collect())
}

/// The nodes holding the replicas of `namespace`'s volumes made for `claims` (a pod's other
/// claims) other than `first` (the pod's node): where an HA volume of the same pod should put
/// its second replica, so all of the pod's volumes live on the same nodes.
pub fn partner_nodes(
    volumes: &[LocalVolume],
    namespace: &str,
    claims: &[String],
    first: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = volumes
        .iter()
        .filter(|v| {
            v.spec.pvc_namespace.as_deref() == Some(namespace)
                && v.spec.pvc_name.as_ref().is_some_and(|n| claims.contains(n))
        })
        .filter_map(|v| v.spec.config.as_ref())
        .flat_map(|c| c.replicas.iter())
        .filter(|a| !a.leaving && !first.contains(&a.hostname))
        .map(|a| a.hostname.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The placement's view of the cluster's nodes.
pub fn node_views<'a>(nodes: impl IntoIterator<Item = &'a LocalStorageNode>) -> Vec<NodeView> {
    nodes.into_iter().map(node_view).collect()
}

/// The placement's view of one node.
pub fn node_view(n: &LocalStorageNode) -> NodeView {
    let st = n.status.clone().unwrap_or_default();
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready: st.state == Some(NodeState::Ready),
        storage_ip: n.spec.storage_ip.clone(),
        pools: st
            .pools
            .values()
            .map(|p| {
                (
                    p.class,
                    PoolView {
                        total: p.total_capacity_bytes,
                        free: p.free_capacity_bytes,
                        extent: p.extent_size_bytes,
                        volumes: p.volume_count,
                        thin_percent: p.thin_overprovision_percent.unwrap_or(100),
                    },
                )
            })
            .collect(),
    }
}

/// Every replica placed so far, from the volumes' configs and the replicas' status.
pub fn placed_replicas<'a>(
    volumes: impl IntoIterator<Item = &'a LocalVolume>,
    replicas: impl IntoIterator<Item = &'a LocalVolumeReplica>,
) -> Vec<Placed> {
    // What each replica reports, by volume and node: one pass, not one scan per volume.
    let allocated: std::collections::HashMap<(&str, &str), Option<i64>> = replicas
        .into_iter()
        .map(|x| {
            (
                (x.spec.volume_name.as_str(), x.spec.node_name.as_str()),
                x.status.as_ref().and_then(|s| s.allocated_capacity_bytes),
            )
        })
        .collect();
    let mut out = Vec::new();
    for v in volumes {
        let (Some(config), Some(class)) = (
            v.spec.config.as_ref(),
            PoolClass::from_pool_name(&v.spec.pool_name),
        ) else {
            continue;
        };
        let name = v.metadata.name.clone().unwrap_or_default();
        out.extend(volume_placed(
            &name,
            class,
            v.spec.required_capacity_bytes,
            v.spec.thin,
            config,
            |node| allocated.get(&(name.as_str(), node)).copied().flatten(),
        ));
    }
    out
}

/// The replicas volume `name` of `required` bytes (`thin` or not) in `class` has placed by
/// `config`, with what each node reports allocated (`allocated(node)`).
pub fn volume_placed(
    name: &str,
    class: PoolClass,
    required: i64,
    thin: bool,
    config: &VolumeConfig,
    allocated: impl Fn(&str) -> Option<i64>,
) -> Vec<Placed> {
    let meta = if config.resource_id >= 0 {
        crate::drbd::meta_bytes(required)
    } else {
        0
    };
    config
        .replicas
        .iter()
        .map(|r| Placed {
            volume: name.to_string(),
            node: r.hostname.clone(),
            class,
            required,
            allocated: allocated(&r.hostname),
            meta,
            thin,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;
    const HDD: PoolClass = PoolClass::Hdd;

    fn node(name: &str, total: i64, free: i64, volumes: i64) -> NodeView {
        NodeView {
            name: name.into(),
            ready: true,
            storage_ip: Some(format!("10.0.0.{}", name.len())),
            pools: BTreeMap::from([(
                HDD,
                PoolView {
                    total,
                    free,
                    extent: 4 * MI,
                    volumes,
                    thin_percent: 100,
                },
            )]),
        }
    }

    fn req(bytes: i64, accessibility: &[&str]) -> Request {
        Request {
            volume: "new".into(),
            class: HDD,
            bytes,
            replicas: 1,
            replicated: false,
            accessibility: accessibility.iter().map(|s| s.to_string()).collect(),
            prefer: Vec::new(),
            thin: false,
        }
    }

    fn placed(volume: &str, node: &str, required: i64, allocated: Option<i64>) -> Placed {
        Placed {
            volume: volume.into(),
            node: node.into(),
            class: HDD,
            required,
            allocated,
            meta: 0,
            thin: false,
        }
    }

    #[test]
    fn most_room_wins_then_fewer_volumes_then_name() {
        let p = Policy::default();
        let nodes = [
            node("a", 10 * GI, 2 * GI, 0),
            node("b", 10 * GI, 5 * GI, 3),
            node("c", 10 * GI, 5 * GI, 1),
        ];
        assert_eq!(
            place(&req(GI, &[]), &nodes, &[], &p),
            Ok(vec!["c".to_string()])
        );
        let tie = [node("z", 10 * GI, 5 * GI, 1), node("y", 10 * GI, 5 * GI, 1)];
        assert_eq!(
            place(&req(GI, &[]), &tie, &[], &p),
            Ok(vec!["y".to_string()])
        );
        // Order of the input does not matter.
        let tie_rev = [node("y", 10 * GI, 5 * GI, 1), node("z", 10 * GI, 5 * GI, 1)];
        assert_eq!(
            place(&req(GI, &[]), &tie_rev, &[], &p),
            Ok(vec!["y".to_string()])
        );
    }

    /// `node` with its agent over-provisioning thin pools `percent`.
    fn thin_node(name: &str, total: i64, free: i64, percent: i64) -> NodeView {
        let mut n = node(name, total, free, 0);
        for p in n.pools.values_mut() {
            p.thin_percent = percent;
        }
        n
    }

    fn thin_req(bytes: i64, accessibility: &[&str]) -> Request {
        Request {
            thin: true,
            ..req(bytes, accessibility)
        }
    }

    #[test]
    fn a_thin_volume_takes_its_share_of_the_pool_by_the_nodes_ratio() {
        let p = Policy::default();
        // 2 GiB free at 200%: room for 4 GiB of thin volumes, 2 GiB of thick ones.
        let nodes = [thin_node("a", 10 * GI, 2 * GI, 200)];
        assert!(place(&thin_req(4 * GI, &["a"]), &nodes, &[], &p).is_ok());
        let err =
            place(&thin_req(4 * GI + 4 * MI, &["a"]), &nodes, &[], &p).expect_err("past the ratio");
        assert!(
            err.to_string().contains(
                "a has 2Gi free (room for 4Gi of thin volumes at 200% over-provisioning)"
            ),
            "{err}"
        );
        assert!(place(&req(3 * GI, &["a"]), &nodes, &[], &p).is_err());
        // A node that does not say its ratio counts a thin volume at its full size.
        let silent = [thin_node("b", 10 * GI, 2 * GI, 100)];
        assert!(place(&thin_req(3 * GI, &["b"]), &silent, &[], &p).is_err());
        assert!(place(&thin_req(2 * GI, &["b"]), &silent, &[], &p).is_ok());
    }

    #[test]
    fn placed_thin_volumes_count_by_their_share_until_reported() {
        let p = Policy::default();
        let nodes = [thin_node("a", 10 * GI, 2 * GI, 200)];
        let thin = |v: &str, bytes: i64, allocated: Option<i64>| Placed {
            thin: true,
            ..placed(v, "a", bytes, allocated)
        };
        // 2 GiB of thin volume promised and not made: it takes 1 GiB of the 2 free.
        let earlier = [thin("t1", 2 * GI, None)];
        assert!(place(&thin_req(2 * GI, &["a"]), &nodes, &earlier, &p).is_ok());
        assert!(place(&thin_req(2 * GI + 4 * MI, &["a"]), &nodes, &earlier, &p).is_err());
        assert_eq!(
            available(&nodes, HDD, true, &earlier, None),
            Available {
                total: 2 * GI,
                largest: 2 * GI
            }
        );
        assert_eq!(available(&nodes, HDD, false, &earlier, None).largest, GI);
        // Reported (its pool took the group's space already): only a pending growth counts.
        let made = [thin("t1", 4 * GI, Some(2 * GI))];
        assert_eq!(room("a", HDD, &nodes[0].pools[&HDD], &made, "").bytes, GI);
        // It may grow to what the room offers at the ratio: 2 GiB free → 4 GiB more.
        assert!(check_growth(
            &nodes,
            "a",
            HDD,
            &[thin("t1", 2 * GI, Some(2 * GI))],
            "t1",
            6 * GI
        )
        .is_ok());
        let err = check_growth(
            &nodes,
            "a",
            HDD,
            &[thin("t1", 2 * GI, Some(2 * GI))],
            "t1",
            6 * GI + 4 * MI,
        )
        .expect_err("past the ratio");
        assert!(
            err.to_string().starts_with("a can hold t1 at 6Gi at most"),
            "{err}"
        );
    }

    #[test]
    fn footprints_round_up_to_whole_extents() {
        let pool = thin_node("a", 10 * GI, 2 * GI, 250).pools[&HDD].clone();
        assert_eq!(pool.footprint(10 * MI, false), 12 * MI);
        // 10 MiB at 250% is 4 MiB, one extent.
        assert_eq!(pool.footprint(10 * MI, true), 4 * MI);
        assert_eq!(pool.footprint(10 * MI + 1, true), 8 * MI);
        assert_eq!(pool.offers(4 * MI, true), 10 * MI);
        // A ratio below 100% is read as 100%: never more than the size.
        let mut odd = pool.clone();
        odd.thin_percent = 50;
        assert_eq!(odd.footprint(8 * MI, true), 8 * MI);
    }

    #[test]
    fn accessibility_order_beats_room() {
        let p = Policy::default();
        let nodes = [node("a", 10 * GI, 2 * GI, 0), node("b", 10 * GI, 9 * GI, 0)];
        assert_eq!(
            place(&req(GI, &["a", "b"]), &nodes, &[], &p),
            Ok(vec!["a".to_string()])
        );
        // The preferred node is full: the next allowed one.
        assert_eq!(
            place(&req(3 * GI, &["a", "b"]), &nodes, &[], &p),
            Ok(vec!["b".to_string()])
        );
        // Only a, and a has no room: refused, b is never considered.
        let err = place(&req(3 * GI, &["a"]), &nodes, &[], &p).expect_err("a full");
        assert_eq!(
            err.to_string(),
            "need 1 nodes with 3Gi free in a HDD pool, found 0: a has 2Gi free"
        );
        let err = place(&req(GI, &["ghost"]), &nodes, &[], &p).expect_err("unknown node");
        assert!(
            err.to_string().contains("ghost is not a storage node"),
            "{err}"
        );
    }

    #[test]
    fn placed_but_unreported_volumes_take_room() {
        let p = Policy::default();
        let nodes = [node("a", 10 * GI, 3 * GI, 0), node("b", 10 * GI, 2 * GI, 0)];
        // Two earlier volumes promised to a, their LVs not created yet.
        let earlier = [placed("v1", "a", GI, None), placed("v2", "a", GI + 1, None)];
        assert_eq!(
            room("a", HDD, &nodes[0].pools[&HDD], &earlier, "new"),
            Room {
                bytes: 3 * GI - 2 * GI - 4 * MI,
                volumes: 2
            }
        );
        assert_eq!(
            place(&req(GI, &[]), &nodes, &earlier, &p),
            Ok(vec!["b".to_string()])
        );
        // The volume being placed never counts against itself.
        let itself = [placed("new", "a", 3 * GI, None)];
        assert_eq!(
            place(&req(3 * GI, &["a"]), &nodes, &itself, &p),
            Ok(vec!["a".to_string()])
        );
    }

    #[test]
    fn reported_volumes_count_once_and_pending_growth_counts() {
        let nodes = [node("a", 10 * GI, 3 * GI, 1)];
        let pool = &nodes[0].pools[&HDD];
        // Reported at full size: the node's free already excludes it.
        assert_eq!(
            room(
                "a",
                HDD,
                pool,
                &[placed("v1", "a", 7 * GI, Some(7 * GI))],
                "x"
            )
            .bytes,
            3 * GI
        );
        // Growing from 7 to 8 GiB: one more GiB is spoken for.
        assert_eq!(
            room(
                "a",
                HDD,
                pool,
                &[placed("v1", "a", 8 * GI, Some(7 * GI))],
                "x"
            )
            .bytes,
            2 * GI
        );
    }

    #[test]
    fn a_lagging_report_is_bounded_by_the_total() {
        // The node still reports 10 GiB free though 9 GiB were created since its last scan.
        let nodes = [node("a", 10 * GI, 10 * GI, 0)];
        let since = [placed("v1", "a", 9 * GI, Some(9 * GI))];
        assert_eq!(room("a", HDD, &nodes[0].pools[&HDD], &since, "x").bytes, GI);
        assert!(place(&req(2 * GI, &[]), &nodes, &since, &Policy::default()).is_err());
    }

    #[test]
    fn other_classes_and_nodes_do_not_count() {
        let nodes = [node("a", 10 * GI, 3 * GI, 0)];
        let others = [
            Placed {
                volume: "s".into(),
                node: "a".into(),
                class: PoolClass::Ssd,
                required: 3 * GI,
                allocated: None,
                meta: 0,
                thin: false,
            },
            placed("v", "b", 3 * GI, None),
        ];
        assert_eq!(
            room("a", HDD, &nodes[0].pools[&HDD], &others, "x").bytes,
            3 * GI
        );
    }

    #[test]
    fn unready_nodes_missing_pools_and_full_counts_are_skipped() {
        let mut down = node("down", 10 * GI, 10 * GI, 0);
        down.ready = false;
        let ssd_only = NodeView {
            name: "ssd".into(),
            ready: true,
            storage_ip: None,
            pools: BTreeMap::from([(PoolClass::Ssd, node("x", GI, GI, 0).pools[&HDD].clone())]),
        };
        let busy = node("busy", 10 * GI, 10 * GI, 1);
        let earlier = [placed("v1", "busy", GI, None)];
        let policy = Policy {
            max_volumes_per_pool: Some(2),
        };
        let err = place(&req(GI, &[]), &[down, ssd_only, busy], &earlier, &policy)
            .expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "need 1 nodes with 1Gi free in a HDD pool, found 0: down is not Ready; ssd has no HDD pool; busy holds 2 volumes already"
        );
        assert!(place(&req(GI, &[]), &[], &[], &Policy::default())
            .unwrap_err()
            .to_string()
            .contains("there are no storage nodes"));
    }

    #[test]
    fn several_replicas_go_to_distinct_nodes() {
        let nodes = [
            node("a", 10 * GI, 3 * GI, 0),
            node("b", 10 * GI, 5 * GI, 0),
            node("c", 10 * GI, GI / 2, 0),
        ];
        let mut r = req(GI, &[]);
        r.replicas = 2;
        assert_eq!(
            place(&r, &nodes, &[], &Policy::default()),
            Ok(vec!["b".to_string(), "a".to_string()])
        );
        r.replicas = 3;
        assert!(matches!(
            place(&r, &nodes, &[], &Policy::default()),
            Err(PlacementError::NoRoom {
                need: 3,
                found: 2,
                ..
            })
        ));
    }

    #[test]
    fn sizes_round_to_the_pool_extent() {
        // 1 MiB free but extents are 4 MiB: a 1-byte volume needs a whole extent.
        let nodes = [node("a", 10 * GI, MI, 0)];
        assert!(place(&req(1, &[]), &nodes, &[], &Policy::default()).is_err());
        let nodes = [node("a", 10 * GI, 4 * MI, 0)];
        assert_eq!(
            place(&req(1, &[]), &nodes, &[], &Policy::default()),
            Ok(vec!["a".to_string()])
        );
    }

    #[test]
    fn available_counts_placements_and_skips_what_cannot_take_volumes() {
        let mut down = node("down", 10 * GI, 10 * GI, 0);
        down.ready = false;
        let nodes = [
            node("a", 10 * GI, 6 * GI, 0),
            node("b", 10 * GI, 3 * GI, 0),
            down,
        ];
        // 2 GiB promised to a and not reported yet.
        let earlier = [placed("v1", "a", 2 * GI, None)];
        assert_eq!(
            available(&nodes, HDD, false, &earlier, None),
            Available {
                total: 7 * GI,
                largest: 4 * GI
            }
        );
        assert_eq!(
            available(&nodes, HDD, false, &earlier, Some("b")),
            Available {
                total: 3 * GI,
                largest: 3 * GI
            }
        );
        assert_eq!(
            available(&nodes, HDD, false, &earlier, Some("down")),
            Available::default()
        );
        assert_eq!(
            available(&nodes, HDD, false, &earlier, Some("ghost")),
            Available::default()
        );
        assert_eq!(
            available(&nodes, PoolClass::Ssd, false, &earlier, None),
            Available::default()
        );
        // What available offers on a node, place accepts there, and no more.
        let offered = available(&nodes, HDD, false, &earlier, Some("a")).largest;
        let p = Policy::default();
        assert!(place(&req(offered, &["a"]), &nodes, &earlier, &p).is_ok());
        assert!(place(&req(offered + 1, &["a"]), &nodes, &earlier, &p).is_err());
    }

    #[test]
    fn growth_counts_the_volumes_own_allocation_and_others_pending() {
        // v holds 2 GiB (reported, so free excludes it); w is promised 3 GiB, not created.
        let nodes = [node("a", 10 * GI, 5 * GI, 1)];
        let pool = &nodes[0].pools[&HDD];
        let placed_now = [
            placed("v", "a", 2 * GI, Some(2 * GI)),
            placed("w", "a", 3 * GI, None),
        ];
        // 5 free - 3 pending for w + 2 own = 4 GiB.
        assert_eq!(max_size("a", HDD, pool, &placed_now, "v"), 4 * GI);
        assert_eq!(
            check_growth(&nodes, "a", HDD, &placed_now, "v", 4 * GI),
            Ok(())
        );
        assert_eq!(
            check_growth(&nodes, "a", HDD, &placed_now, "v", 5 * GI),
            Err(GrowthError::NoRoom {
                node: "a".into(),
                volume: "v".into(),
                max: "4Gi".into(),
                want: "5Gi".into(),
            })
        );
        // One byte over is a whole extent over.
        assert!(check_growth(&nodes, "a", HDD, &placed_now, "v", 4 * GI + 1).is_err());
        // A lagging report: the node still shows 10 GiB free though 7 GiB are taken by
        // others; the total bounds v at 3 GiB.
        let lagging = [node("a", 10 * GI, 10 * GI, 0)];
        let others = [
            placed("v", "a", GI, Some(GI)),
            placed("x", "a", 7 * GI, Some(7 * GI)),
        ];
        assert_eq!(
            max_size("a", HDD, &lagging[0].pools[&HDD], &others, "v"),
            3 * GI
        );
        // A volume whose own logical volume is not reported yet holds nothing on the node.
        let unreported = [placed("v", "a", GI, None)];
        assert_eq!(
            max_size("a", HDD, &nodes[0].pools[&HDD], &unreported, "v"),
            5 * GI
        );
    }

    #[test]
    fn growth_needs_a_ready_node_with_the_pool() {
        let mut down = node("down", 10 * GI, 10 * GI, 0);
        down.ready = false;
        let nodes = [down, node("a", 10 * GI, 10 * GI, 0)];
        assert_eq!(
            check_growth(&nodes, "down", HDD, &[], "v", GI),
            Err(GrowthError::NotReady {
                node: "down".into()
            })
        );
        assert_eq!(
            check_growth(&nodes, "ghost", HDD, &[], "v", GI),
            Err(GrowthError::UnknownNode {
                node: "ghost".into()
            })
        );
        assert_eq!(
            check_growth(&nodes, "a", PoolClass::Ssd, &[], "v", GI),
            Err(GrowthError::NoPool {
                node: "a".into(),
                class: PoolClass::Ssd
            })
        );
    }

    #[test]
    fn ha_replicas_need_two_nodes_with_addresses_and_room_for_metadata() {
        let p = Policy::default();
        let mut r = req(GI, &["b", "a", "c"]);
        r.replicas = 2;
        r.replicated = true;
        let mut no_ip = node("c", 10 * GI, 10 * GI, 0);
        no_ip.storage_ip = None;
        // Exactly 1 GiB free: the data fits, its metadata does not.
        let tight = node("b", 10 * GI, GI, 0);
        let roomy = node("a", 10 * GI, 2 * GI, 0);
        let err = place(&r, &[tight.clone(), roomy.clone(), no_ip.clone()], &[], &p)
            .expect_err("only one node fits");
        let msg = err.to_string();
        assert!(msg.contains("c has no replication address"), "{msg}");
        assert!(
            msg.contains("b has 1.0 GiB free") || msg.contains("b has"),
            "{msg}"
        );
        let mut ok = node("b", 10 * GI, GI + 4 * MI, 0);
        ok.storage_ip = Some("10.0.0.2".into());
        let chosen = place(&r, &[ok, roomy, no_ip], &[], &p).expect("fits");
        // The scheduler's node (first in the accessibility) comes first.
        assert_eq!(chosen, vec!["b".to_string(), "a".to_string()]);
        // Placed HA replicas count their metadata.
        let mut ha = placed("v", "a", GI, None);
        ha.meta = crate::drbd::meta_bytes(GI);
        let pool = &node("a", 10 * GI, 2 * GI, 0).pools[&HDD];
        assert_eq!(room("a", HDD, pool, &[ha], "x").bytes, GI - 4 * MI);
    }

    #[test]
    fn a_convertible_volume_stays_on_the_pods_node_with_room_for_its_metadata() {
        let p = Policy::default();
        let mut r = req(GI, &["b"]);
        r.replicas = 1;
        r.replicated = true;
        let roomy = node("a", 10 * GI, 9 * GI, 0);
        // Room for the data, not for the metadata: not b, and never another node instead.
        let tight = node("b", 10 * GI, GI, 0);
        let err = place(&r, &[roomy.clone(), tight], &[], &p).expect_err("b is too full");
        assert!(err.to_string().contains("b has"), "{err}");
        let fits = node("b", 10 * GI, GI + 4 * MI, 0);
        assert_eq!(
            place(&r, &[roomy, fits], &[], &p).expect("fits"),
            vec!["b".to_string()]
        );
    }

    #[test]
    fn a_preferred_node_takes_the_second_replica_when_it_has_room() {
        let p = Policy::default();
        let mut r = req(GI, &["b"]);
        r.replicas = 2;
        r.replicated = true;
        r.prefer = vec!["c".into()];
        let nodes = [
            node("a", 10 * GI, 9 * GI, 0),
            node("b", 10 * GI, 2 * GI, 0),
            node("c", 10 * GI, 3 * GI, 0),
        ];
        // c over the roomier a: the pod's other HA volumes have their second replica there.
        assert_eq!(
            place(&r, &nodes, &[], &p).expect("fits"),
            vec!["b".to_string(), "c".to_string()]
        );
        // Full: the roomiest other node instead, never no placement.
        let full_c = [
            node("a", 10 * GI, 9 * GI, 0),
            node("b", 10 * GI, 2 * GI, 0),
            node("c", 10 * GI, GI / 2, 0),
        ];
        assert_eq!(
            place(&r, &full_c, &[], &p).expect("fits"),
            vec!["b".to_string(), "a".to_string()]
        );
    }

    #[test]
    fn an_ha_volume_pinned_to_the_pods_node_gets_its_second_replica_anywhere() {
        let p = Policy::default();
        let mut r = req(GI, &["b"]);
        r.replicas = 2;
        r.replicated = true;
        let nodes = [
            node("a", 10 * GI, 9 * GI, 0),
            node("b", 10 * GI, 2 * GI, 0),
            node("c", 10 * GI, 5 * GI, 0),
        ];
        // b first (where the pod runs), then the roomiest other node.
        assert_eq!(
            place(&r, &nodes, &[], &p).expect("fits"),
            vec!["b".to_string(), "a".to_string()]
        );
        // The pod's node is full: no placement, even though two other nodes fit.
        let full = [
            node("a", 10 * GI, 9 * GI, 0),
            node("b", 10 * GI, GI / 2, 0),
            node("c", 10 * GI, 5 * GI, 0),
        ];
        let err = place(&r, &full, &[], &p).expect_err("the pod's node has no room");
        assert!(
            err.to_string()
                .contains("none of the nodes it must be usable from (b)"),
            "{err}"
        );
        // A plain volume stays within its accessibility.
        let mut plain = req(GI, &["b"]);
        plain.replicas = 1;
        assert_eq!(
            place(&plain, &nodes, &[], &p).expect("fits"),
            vec!["b".to_string()]
        );
    }

    #[test]
    fn ha_capacity_needs_a_second_node_and_leaves_room_for_metadata() {
        let a = node("a", 10 * GI, 4 * GI, 0);
        let b = node("b", 10 * GI, 2 * GI, 0);
        let mut c = node("c", 10 * GI, 8 * GI, 0);
        c.storage_ip = None;
        // From a: b is the only other candidate (c has no replication address).
        let from_a = available_replicated(&[a.clone(), b.clone(), c.clone()], HDD, &[], Some("a"));
        assert_eq!(from_a.largest, 2 * GI - 4 * MI);
        // From b: a has more than b, so b's own room bounds it.
        let from_b = available_replicated(&[a.clone(), b.clone(), c.clone()], HDD, &[], Some("b"));
        assert_eq!(from_b.largest, 2 * GI - 4 * MI);
        // From c: not a candidate.
        assert_eq!(
            available_replicated(&[a.clone(), b.clone(), c], HDD, &[], Some("c")),
            Available::default()
        );
        // Alone, no HA volume fits anywhere.
        assert_eq!(
            available_replicated(std::slice::from_ref(&a), HDD, &[], None),
            Available::default()
        );
        // Every size offered is one place() accepts.
        let mut r = req(from_a.largest, &["a"]);
        r.replicas = 2;
        r.replicated = true;
        assert!(place(&r, &[a, b], &[], &Policy::default()).is_ok());
    }
}
