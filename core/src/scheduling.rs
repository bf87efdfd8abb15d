//! Where a pod with HwameiStor volumes may run, how well each node suits it, and what is
//! held for it until its volumes exist: the scheduler extender's decisions. Pure.
//!
//! A pod's claims are of two kinds. A **bound** claim names a volume that exists: the pod
//! may run only on a node holding one of its replicas that may serve it (HA: either; never
//! a replica a migration is replacing or still filling). **New** claims (WaitForFirstConsumer,
//! not provisioned yet) need, on the pod's node, room in the pool of each claim's class for
//! all of them together (and DRBD's metadata for replicated ones), and for HA claims a
//! second node with room for their second replicas. Room is the placement's own rule
//! ([`Tally`]), less what is reserved for other pods whose volumes do not exist yet.
//!
//! New **disk** claims (`disk.hwameistor.io`: a whole disk each) need, on the pod's node,
//! one free disk of the claim's type per claim, each as large as its claim asks (and no
//! larger than its limit), none shared, counting the disks already held for other pods.
//!
//! A [`Reservation`] holds a new claim's room (or disk) on the node chosen for its pod (and
//! on the second node of an HA claim) from the moment the node is chosen until the volume
//! is placed, or its disk bound (it then counts as placed, or the disk is no longer free),
//! or it expires.

use crate::drbd;
use crate::lvm::round_up_to_extent;
use crate::placement::{NodeView, Placed, Policy, PoolView, Tally};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{DiskType, PoolClass};
use std::collections::{BTreeMap, HashMap};

/// The highest score an extender gives (the scheduler scales it by the extender's weight).
pub const MAX_SCORE: i64 = 10;

/// A claim whose volume exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundClaim {
    /// `namespace/name` of the claim.
    pub pvc: String,
    pub volume: String,
    /// The nodes whose replica may serve the volume.
    pub nodes: Vec<String>,
}

/// A claim whose volume is still to be created on the pod's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewClaim {
    /// `namespace/name` of the claim.
    pub pvc: String,
    pub class: PoolClass,
    /// The volume's size (the CSI size rule applied).
    pub bytes: i64,
    /// Runs DRBD (HA or convertible): metadata beside it, and its nodes need a replication
    /// address.
    pub replicated: bool,
    /// HA: a second replica on another node.
    pub second: bool,
    /// Thin: it takes its share of a thin pool ([`PoolView::footprint`]).
    pub thin: bool,
    /// The nodes holding the data it is restored or cloned from (a VolumeSnapshot's, a
    /// PVC's volume's): made there, a thin restore is one LVM step and a thick one needs no
    /// network. Empty when it has no data source, or its node is not known.
    pub data_nodes: Vec<String>,
}

impl NewClaim {
    fn meta(&self) -> i64 {
        if self.replicated {
            drbd::meta_bytes(self.bytes)
        } else {
            0
        }
    }
}

/// A claim for a whole disk (`disk.hwameistor.io`) whose volume is still to be created on
/// the pod's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDiskClaim {
    /// `namespace/name` of the claim.
    pub pvc: String,
    pub disk_type: DiskType,
    pub need: DiskNeed,
}

/// The size a disk volume asks of its disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskNeed {
    pub required: i64,
    /// The claim's limit: a larger disk does not do.
    pub max: Option<i64>,
}

/// A disk a new disk volume may take (free by the one eligibility rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeDisk {
    pub node: String,
    pub disk_type: DiskType,
    pub capacity: i64,
}

/// What one pod asks of storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodClaims {
    pub uid: String,
    pub bound: Vec<BoundClaim>,
    pub new: Vec<NewClaim>,
    pub disks: Vec<NewDiskClaim>,
    /// Why the pod can run nowhere now (a claim that does not exist, a volume with no
    /// replica that can serve it, a StorageClass that is gone).
    pub blocked: Vec<String>,
}

impl PodClaims {
    /// Whether the pod uses HwameiStor volumes at all.
    pub fn uses_storage(&self) -> bool {
        !self.bound.is_empty()
            || !self.new.is_empty()
            || !self.disks.is_empty()
            || !self.blocked.is_empty()
    }

    /// Whether the pod has claims to be provisioned (room or disks to hold).
    pub fn has_new(&self) -> bool {
        !self.new.is_empty() || !self.disks.is_empty()
    }
}

/// What a reservation holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Room in the node's pool of `class` (and, for an HA claim, in the `second` node's).
    Pool {
        class: PoolClass,
        bytes: i64,
        /// DRBD metadata beside the data.
        meta: i64,
        /// A thin volume: its share of the pool is held, not its size.
        thin: bool,
        second: Option<String>,
    },
    /// One free disk of the type on the node, of the size asked.
    Disk { disk_type: DiskType, need: DiskNeed },
}

/// Room (or a disk) held for a new claim until its volume is placed (its disk bound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub pvc: String,
    /// The pod it was made for; empty when rebuilt from the claim alone.
    pub pod_uid: String,
    pub node: String,
    pub hold: Hold,
    /// Unix seconds after which it no longer holds.
    pub expires: i64,
}

impl Reservation {
    /// The same hold for a pod that runs on `node` after all (its second replica, if any,
    /// elsewhere).
    pub fn moved_to(mut self, node: &str) -> Reservation {
        self.node = node.to_string();
        if let Hold::Pool { second, .. } = &mut self.hold {
            if second.as_deref() == Some(node) {
                *second = None;
            }
        }
        self
    }
}

#[derive(Clone, Debug)]
struct PoolRoom {
    pool: PoolView,
    tally: Tally,
    /// Bytes and volumes reserved for pods, rounded to the pool's extent.
    reserved: i64,
    reserved_volumes: i64,
}

#[derive(Clone, Debug)]
struct NodeCap {
    ready: bool,
    has_ip: bool,
    pools: BTreeMap<PoolClass, PoolRoom>,
    /// The free disks per type (by their pool class, which orders), sizes ascending.
    disks: BTreeMap<PoolClass, Vec<i64>>,
    /// What is held of them for other pods' disk claims.
    disk_holds: BTreeMap<PoolClass, Vec<DiskNeed>>,
}

/// The room of every storage node's pools with what is placed and reserved counted: built
/// once from the caches, then reserved into as pods are given nodes.
#[derive(Clone, Debug, Default)]
pub struct Capacity {
    nodes: HashMap<String, NodeCap>,
    policy: Policy,
    reservations: Vec<Reservation>,
}

/// What the pod needs from one node: per class, volumes' bytes with whether they are thin
/// (each counted by the node's pool later) and volumes; per disk type, disks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Demand {
    per_class: BTreeMap<PoolClass, (Vec<(i64, bool)>, i64)>,
    needs_ip: bool,
    disks: BTreeMap<PoolClass, Vec<DiskNeed>>,
}

impl Demand {
    fn is_empty(&self) -> bool {
        self.per_class.is_empty() && self.disks.is_empty()
    }

    fn add(&mut self, c: &NewClaim, replicated: bool) {
        let e = self.per_class.entry(c.class).or_default();
        e.0.push((c.bytes, c.thin));
        let meta = c.meta();
        if meta > 0 {
            e.0.push((meta, false));
        }
        e.1 += 1;
        self.needs_ip |= replicated;
    }

    /// Bytes of `pool`'s group the parts take: each volume rounded up, as LVM allocates, a
    /// thin one by its share ([`PoolView::footprint`]).
    fn bytes(parts: &[(i64, bool)], pool: &PoolView) -> i64 {
        parts
            .iter()
            .map(|(b, thin)| pool.footprint(*b, *thin))
            .fold(0i64, i64::saturating_add)
    }
}

fn primary_demand(claims: &PodClaims) -> Demand {
    let mut d = Demand::default();
    for c in &claims.new {
        d.add(c, c.replicated);
    }
    for c in &claims.disks {
        d.disks
            .entry(c.disk_type.pool_class())
            .or_default()
            .push(c.need);
    }
    d
}

/// Whether every one of `needs` can have its own disk among `free` (sizes ascending), each
/// of the size it asks ([`crate::disk_volume::size_fits`], which the tests hold this to):
/// the smallest disk first, to the fitting need whose limit is the
/// lowest (a need without a limit last), which finds an assignment whenever one exists.
/// The share (0 to 1) of the pod's new claims with a data source whose data is on `node`;
/// `None` when no new claim has one (or its node is not known).
pub fn data_locality(claims: &PodClaims, node: &str) -> Option<f64> {
    let with_data: Vec<&NewClaim> = claims
        .new
        .iter()
        .filter(|c| !c.data_nodes.is_empty())
        .collect();
    if with_data.is_empty() {
        return None;
    }
    let here = with_data
        .iter()
        .filter(|c| c.data_nodes.iter().any(|n| n == node))
        .count();
    Some(here as f64 / with_data.len() as f64)
}

/// A node's score from the room `share` (0 to 1) its pools keep after the pod's new volumes
/// and, when some of them restore or clone data, the share of that data on it: 6 points of
/// [`MAX_SCORE`] for locality, 4 for room, so a node holding all the data (6 to 10) scores
/// above every node holding none (0 to 4), whatever their room.
pub fn score(share: f64, locality: Option<f64>) -> i64 {
    let max = MAX_SCORE as f64;
    let s = match locality {
        None => (share * max).round(),
        Some(l) => (l * max * 0.6).round() + (share * max * 0.4).round(),
    };
    (s as i64).clamp(0, MAX_SCORE)
}

pub fn disks_suffice(free: &[i64], needs: &[DiskNeed]) -> bool {
    if needs.len() > free.len() {
        return false;
    }
    let mut waiting: Vec<DiskNeed> = needs.to_vec();
    // By required size, so the needs a disk may serve are a growing prefix.
    waiting.sort_by_key(|n| n.required);
    let mut next = 0;
    let mut open: std::collections::BinaryHeap<std::cmp::Reverse<i64>> = Default::default();
    for &cap in free {
        while next < waiting.len() && waiting[next].required <= cap {
            open.push(std::cmp::Reverse(waiting[next].max.unwrap_or(i64::MAX)));
            next += 1;
        }
        // A need whose limit this disk (and every larger one) passes is left without one.
        if open.peek().is_some_and(|m| m.0 < cap) {
            return false;
        }
        open.pop();
    }
    next == waiting.len() && open.is_empty()
}

fn second_demand(claims: &PodClaims) -> Demand {
    let mut d = Demand::default();
    for c in claims.new.iter().filter(|c| c.second) {
        d.add(c, true);
    }
    d
}

impl Capacity {
    /// The index of `nodes` with `placed` replicas and the `reservations` that still hold at
    /// `now` counted.
    pub fn new(
        nodes: &[NodeView],
        placed: &[Placed],
        disks: &[FreeDisk],
        reservations: &[Reservation],
        now: i64,
        policy: Policy,
    ) -> Capacity {
        let mut c = Capacity {
            nodes: nodes
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        NodeCap {
                            ready: n.ready,
                            has_ip: n.storage_ip.is_some(),
                            pools: n
                                .pools
                                .iter()
                                .map(|(class, pool)| {
                                    (
                                        *class,
                                        PoolRoom {
                                            pool: pool.clone(),
                                            tally: Tally::default(),
                                            reserved: 0,
                                            reserved_volumes: 0,
                                        },
                                    )
                                })
                                .collect(),
                            disks: BTreeMap::new(),
                            disk_holds: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            policy,
            reservations: Vec::new(),
        };
        for d in disks {
            if let Some(n) = c.nodes.get_mut(&d.node) {
                n.disks
                    .entry(d.disk_type.pool_class())
                    .or_default()
                    .push(d.capacity);
            }
        }
        for n in c.nodes.values_mut() {
            for sizes in n.disks.values_mut() {
                sizes.sort_unstable();
            }
        }
        for p in placed {
            if let Some(pr) = c
                .nodes
                .get_mut(&p.node)
                .and_then(|n| n.pools.get_mut(&p.class))
            {
                pr.tally.add(p, &pr.pool);
            }
        }
        for r in reservations.iter().filter(|r| r.expires > now) {
            c.hold(r.clone());
        }
        c
    }

    /// The reservations that hold.
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    fn count(
        &mut self,
        node: &str,
        class: PoolClass,
        (bytes, thin): (i64, bool),
        meta: i64,
        sign: i64,
    ) {
        if let Some(pr) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.pools.get_mut(&class))
        {
            let extent = pr.pool.extent;
            let b = pr.pool.footprint(bytes, thin)
                + if meta > 0 {
                    round_up_to_extent(meta, extent)
                } else {
                    0
                };
            pr.reserved += sign * b;
            pr.reserved_volumes += sign;
        }
    }

    /// Counts `r`'s hold in (`sign` 1) or out (-1).
    fn count_hold(&mut self, r: &Reservation, sign: i64) {
        match &r.hold {
            Hold::Pool {
                class,
                bytes,
                meta,
                thin,
                second,
            } => {
                self.count(&r.node, *class, (*bytes, *thin), *meta, sign);
                if let Some(s) = second {
                    self.count(s, *class, (*bytes, *thin), *meta, sign);
                }
            }
            Hold::Disk { disk_type, need } => {
                let Some(n) = self.nodes.get_mut(&r.node) else {
                    return;
                };
                let held = n.disk_holds.entry(disk_type.pool_class()).or_default();
                if sign > 0 {
                    held.push(*need);
                } else if let Some(i) = held.iter().position(|h| h == need) {
                    held.swap_remove(i);
                }
            }
        }
    }

    fn hold(&mut self, r: Reservation) {
        self.count_hold(&r, 1);
        self.reservations.push(r);
    }

    /// Drops the reservations made for pod `uid` (it is being scheduled again, or is gone);
    /// the ones dropped.
    pub fn release_pod(&mut self, uid: &str) -> Vec<Reservation> {
        self.release_where(|r| !uid.is_empty() && r.pod_uid == uid)
    }

    /// Holds `reservations` again (after a look at the room without them).
    pub fn restore(&mut self, reservations: Vec<Reservation>) {
        for r in reservations {
            self.hold(r);
        }
    }

    /// Drops the reservations of claim `pvc` (its volume exists now, or it is gone).
    pub fn release_claim(&mut self, pvc: &str) -> Vec<Reservation> {
        self.release_where(|r| r.pvc == pvc)
    }

    /// Drops the reservations expired at `now`.
    pub fn expire(&mut self, now: i64) {
        self.release_where(|r| r.expires <= now);
    }

    fn release_where(&mut self, drop: impl Fn(&Reservation) -> bool) -> Vec<Reservation> {
        if !self.reservations.iter().any(&drop) {
            return Vec::new();
        }
        let (gone, kept): (Vec<Reservation>, Vec<Reservation>) =
            std::mem::take(&mut self.reservations)
                .into_iter()
                .partition(|r| drop(r));
        self.reservations = kept;
        for r in &gone {
            self.count_hold(r, -1);
        }
        gone
    }

    /// Bytes and volumes left in `node`'s pool of `class`, and the pool.
    fn room<'a>(&self, node: &'a NodeCap, class: PoolClass) -> Option<(i64, i64, &'a PoolView)> {
        let pr = node.pools.get(&class)?;
        let r = pr.tally.room(&pr.pool);
        Some((
            (r.bytes - pr.reserved).max(0),
            r.volumes + pr.reserved_volumes,
            &pr.pool,
        ))
    }

    /// Why `node` cannot take `demand`; `Ok` with the smallest share of room left (0..1,
    /// as a fraction of the pool's free bytes) when it can.
    fn fits(&self, name: &str, demand: &Demand) -> Result<f64, String> {
        let Some(node) = self.nodes.get(name) else {
            return Err(format!(
                "{name} runs no HwameiStor agent (no LocalStorageNode)"
            ));
        };
        if !node.ready {
            return Err(format!("{name}'s HwameiStor agent is not Ready"));
        }
        if demand.needs_ip && !node.has_ip {
            return Err(format!(
                "{name} has no replication address (storageIP) for replicated volumes"
            ));
        }
        let mut share = 1.0f64;
        for (class, (parts, count)) in &demand.per_class {
            let Some((bytes, volumes, pool)) = self.room(node, *class) else {
                return Err(format!("{name} has no {class} pool"));
            };
            let need = Demand::bytes(parts, pool);
            if need > bytes {
                return Err(format!(
                    "{name} has {} free in its {class} pool, the pod's new volumes there need {}",
                    format_size(bytes),
                    format_size(need)
                ));
            }
            if let Some(max) = self.policy.max_volumes_per_pool {
                if volumes + count > max {
                    return Err(format!(
                        "{name}'s {class} pool holds {volumes} volumes (at most {max})"
                    ));
                }
            }
            if bytes > 0 {
                share = share.min((bytes - need) as f64 / bytes as f64);
            }
        }
        for (class, wanted) in &demand.disks {
            let free = node.disks.get(class).map(Vec::as_slice).unwrap_or_default();
            let held = node
                .disk_holds
                .get(class)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let all: Vec<DiskNeed> = held.iter().chain(wanted).copied().collect();
            if !disks_suffice(free, &all) {
                return Err(disk_shortage(name, *class, free, held, wanted));
            }
            share = share.min((free.len() - all.len()) as f64 / free.len() as f64);
        }
        Ok(share)
    }

    /// The two nodes with most room (first by the smallest share left) that can take the
    /// second replicas of the pod's HA claims.
    fn second_candidates(&self, demand: &Demand) -> Vec<(String, f64)> {
        let mut best: Vec<(String, f64)> = Vec::with_capacity(3);
        for name in self.nodes.keys() {
            if let Ok(share) = self.fits(name, demand) {
                best.push((name.clone(), share));
                best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                best.truncate(2);
            }
        }
        best
    }

    /// Whether the pod may run on `name` as far as storage goes: `Ok` with its score.
    fn check(
        &self,
        claims: &PodClaims,
        name: &str,
        primary: &Demand,
        seconds: &[(String, f64)],
        wants_second: bool,
    ) -> Result<i64, String> {
        if let Some(why) = claims.blocked.first() {
            return Err(why.clone());
        }
        for b in &claims.bound {
            if !b.nodes.iter().any(|n| n == name) {
                return Err(if b.nodes.is_empty() {
                    format!(
                        "volume {} ({}) has no replica that can serve it now",
                        b.volume, b.pvc
                    )
                } else {
                    format!(
                        "volume {} ({}) is on {}, not on {name}",
                        b.volume,
                        b.pvc,
                        b.nodes.join(", ")
                    )
                });
            }
        }
        if primary.is_empty() {
            if !claims.bound.is_empty() && !self.nodes.contains_key(name) {
                // Bound replicas can only be on storage nodes; say so plainly anyway.
                return Err(format!(
                    "{name} runs no HwameiStor agent (no LocalStorageNode)"
                ));
            }
            return Ok(MAX_SCORE);
        }
        let share = self.fits(name, primary)?;
        if wants_second && !seconds.iter().any(|(n, _)| n != name) {
            return Err(format!(
                "no node other than {name} has room for the second replica of the pod's HA volumes"
            ));
        }
        Ok(score(share, data_locality(claims, name)))
    }

    /// The candidates the pod may run on (with their scores), and why each other one may
    /// not.
    pub fn filter(
        &self,
        claims: &PodClaims,
        candidates: &[String],
    ) -> (Vec<(String, i64)>, BTreeMap<String, String>) {
        let primary = primary_demand(claims);
        let second = second_demand(claims);
        let seconds = if second.is_empty() {
            Vec::new()
        } else {
            self.second_candidates(&second)
        };
        let mut ok = Vec::new();
        let mut failed = BTreeMap::new();
        for name in candidates {
            match self.check(claims, name, &primary, &seconds, !second.is_empty()) {
                Ok(score) => ok.push((name.clone(), score)),
                Err(why) => {
                    failed.insert(name.clone(), why);
                }
            }
        }
        (ok, failed)
    }

    /// The node among `passed` (with scores) the pod is given: the highest score, then the
    /// name (stable).
    pub fn best(passed: &[(String, i64)]) -> Option<&str> {
        passed
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(n, _)| n.as_str())
    }

    /// Holds the room of the pod's new claims on `node` (and a second node for HA claims)
    /// until `expires`; the reservations made.
    pub fn reserve(
        &mut self,
        claims: &PodClaims,
        node: &str,
        expires: i64,
    ) -> Result<Vec<Reservation>, String> {
        if !claims.has_new() {
            return Ok(Vec::new());
        }
        let primary = primary_demand(claims);
        self.fits(node, &primary)?;
        let second = second_demand(claims);
        let second_node = if second.is_empty() {
            None
        } else {
            let s = self
                .second_candidates(&second)
                .into_iter()
                .find(|(n, _)| n != node)
                .map(|(n, _)| n)
                .ok_or_else(|| {
                    format!(
                        "no node other than {node} has room for the second replica of the pod's HA volumes"
                    )
                })?;
            Some(s)
        };
        let held = |pvc: &str, hold| Reservation {
            pvc: pvc.to_string(),
            pod_uid: claims.uid.clone(),
            node: node.to_string(),
            hold,
            expires,
        };
        let made: Vec<Reservation> = claims
            .new
            .iter()
            .map(|c| {
                held(
                    &c.pvc,
                    Hold::Pool {
                        class: c.class,
                        bytes: c.bytes,
                        meta: c.meta(),
                        thin: c.thin,
                        second: if c.second { second_node.clone() } else { None },
                    },
                )
            })
            .chain(claims.disks.iter().map(|c| {
                held(
                    &c.pvc,
                    Hold::Disk {
                        disk_type: c.disk_type,
                        need: c.need,
                    },
                )
            }))
            .collect();
        for r in &made {
            self.hold(r.clone());
        }
        Ok(made)
    }
}

/// Why `node` has not the disks the pod's disk claims (`wanted`) of `class` need.
fn disk_shortage(
    node: &str,
    class: PoolClass,
    free: &[i64],
    held: &[DiskNeed],
    wanted: &[DiskNeed],
) -> String {
    let sizes = |v: &[i64]| {
        v.iter()
            .map(|b| format_size(*b))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let asks = |v: &[DiskNeed]| {
        v.iter()
            .map(|n| match n.max {
                Some(m) if m != i64::MAX => {
                    format!("{}..{}", format_size(n.required), format_size(m))
                }
                _ => format!("at least {}", format_size(n.required)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let have = if free.is_empty() {
        format!("{node} has no free {class} disk")
    } else {
        format!("{node}'s free {class} disks: {}", sizes(free))
    };
    let others = if held.is_empty() {
        String::new()
    } else {
        format!(" ({} held for other pods: {})", held.len(), asks(held))
    };
    format!(
        "{have}{others}; the pod's new disk volumes need {} of them ({})",
        wanted.len(),
        asks(wanted)
    )
}

#[cfg(test)]
mod tests;
