//! A small simulation for the operation state machines' tests: the operation's steps
//! applied to an in-memory volume, the volume's own state machine run after each, and
//! agents that report what a healthy node would (unless told to hold a node back).

use super::group::{member_operation_name, Child, Group};
use super::{next_step, Machine, Op, OpStep, PvView, World};
use crate::placement::{NodeView, Placed, Policy, PoolView};
use crate::volume::{self, Step};
use hwameistor_api::{
    CopyStatus, HaState, LocalVolume, LocalVolumeReplica, LocalVolumeReplicaStatus,
    LocalVolumeSpec, LocalVolumeStatus, OperationKind, OperationStatus, PoolClass,
    ReplicaAssignment, ReplicaState, ReplicationStatus, VolumeConfig, VolumeState,
    FINALIZER_VOLUME,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet};

pub const GI: i64 = 1 << 30;

pub fn nodes(names: &[&str], free: i64) -> Vec<NodeView> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| NodeView {
            name: n.to_string(),
            ready: true,
            storage_ip: Some(format!("10.0.0.{}", i + 1)),
            pools: BTreeMap::from([(
                PoolClass::Hdd,
                PoolView {
                    total: 100 * GI,
                    free,
                    extent: 4 << 20,
                    volumes: 0,
                    thin_percent: 100,
                },
            )]),
        })
        .collect()
}

/// A Ready volume of 1 GiB on `on` (HA when two nodes).
pub fn volume(on: &[&str]) -> LocalVolume {
    let ha = on.len() > 1;
    let mut v = LocalVolume::new(
        "vol",
        LocalVolumeSpec {
            pool_name: "LocalStorage_PoolHDD".into(),
            volume_kind: Default::default(),
            required_capacity_bytes: GI,
            replica_number: on.len() as i64,
            convertible: false,
            accessibility: hwameistor_api::Accessibility {
                nodes: on.iter().map(|n| n.to_string()).collect(),
            },
            pvc_namespace: None,
            pvc_name: None,
            fs_type: Some("xfs".into()),
            config: Some(VolumeConfig {
                version: 1,
                required_capacity_bytes: GI,
                resource_id: if ha { 7 } else { -1 },
                replicas: on
                    .iter()
                    .enumerate()
                    .map(|(i, n)| ReplicaAssignment {
                        id: i as i64 + 1,
                        hostname: n.to_string(),
                        ip: ha.then(|| format!("10.0.0.{}", (n.as_bytes()[0] - b'a') + 1)),
                        primary: ha && i == 0,
                        ..Default::default()
                    })
                    .collect(),
                initial: false,
            }),
            split_brain_resolution: None,
            operation: None,
            thin: false,
            data_source: None,
        },
    );
    v.metadata.uid = Some("vol-uid".into());
    v.metadata.finalizers = Some(vec![FINALIZER_VOLUME.into()]);
    v
}

/// A Ready volume of 1 GiB created convertible on `on`: DRBD on that one node (no peer).
pub fn convertible_volume(on: &str) -> LocalVolume {
    let mut v = volume(&[on]);
    v.spec.convertible = true;
    if let Some(c) = v.spec.config.as_mut() {
        c.resource_id = 7;
        for a in &mut c.replicas {
            a.primary = true;
            a.ip = Some(format!("10.0.0.{}", (on.as_bytes()[0] - b'a') + 1));
        }
    }
    v
}

pub struct Sim {
    pub kind: OperationKind,
    pub uid: String,
    pub abort: bool,
    pub deleting: bool,
    pub has_finalizer: bool,
    pub status: OperationStatus,
    pub v: Option<LocalVolume>,
    pub replicas: Vec<LocalVolumeReplica>,
    pub nodes: Vec<NodeView>,
    pub movers: BTreeSet<String>,
    pub pv: Option<PvView>,
    pub slot: Result<(), String>,
    pub free_resource_id: Option<i64>,
    pub now: Timestamp,
    pub deleted: bool,
    /// Nodes whose agent does not finish syncing or copying yet.
    pub held: BTreeSet<String>,
    /// Every step taken, for the tests' invariants.
    pub log: Vec<OpStep>,
    /// The volume's group's other volumes (their operations are the tests' to move on).
    pub members: Vec<LocalVolume>,
    pub children: Vec<Child>,
    /// The volume's snapshots.
    pub snapshots: Vec<hwameistor_api::LocalVolumeSnapshot>,
}

impl Sim {
    pub fn new(kind: OperationKind, v: LocalVolume, node_names: &[&str]) -> Sim {
        let nodes = nodes(node_names, 50 * GI);
        let mut sim = Sim {
            kind,
            uid: "op-uid".into(),
            abort: false,
            deleting: false,
            // Fixtures start with the finalizer on; the finalizer's own test clears it.
            has_finalizer: true,
            status: OperationStatus::default(),
            pv: Some(PvView {
                name: "pv-vol".into(),
                nodes: v.spec.accessibility.nodes.clone(),
                recreating: false,
            }),
            v: Some(v),
            replicas: Vec::new(),
            movers: node_names.iter().map(|n| n.to_string()).collect(),
            nodes,
            slot: Ok(()),
            free_resource_id: Some(3),
            now: Timestamp::from_second(1_800_000_000).expect("time"),
            deleted: false,
            held: BTreeSet::new(),
            log: Vec::new(),
            members: Vec::new(),
            children: Vec::new(),
            snapshots: Vec::new(),
        };
        sim.settle();
        sim
    }

    pub fn volume(&self) -> &LocalVolume {
        self.v.as_ref().expect("volume")
    }

    pub fn config(&self) -> &VolumeConfig {
        self.volume().spec.config.as_ref().expect("config")
    }

    pub fn replica_nodes(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .replicas
            .iter()
            .map(|r| r.spec.node_name.clone())
            .collect();
        n.sort();
        n
    }

    pub fn config_nodes(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .config()
            .replicas
            .iter()
            .map(|a| a.hostname.clone())
            .collect();
        n.sort();
        n
    }

    fn placed(&self) -> Vec<Placed> {
        crate::placement::placed_replicas(
            &self
                .v
                .iter()
                .chain(&self.members)
                .cloned()
                .collect::<Vec<_>>(),
            &self.replicas,
        )
    }

    /// One step of the operation, applied; then the volume and the agents catch up.
    pub fn step(&mut self, m: &dyn Machine) -> OpStep {
        let placed = self.placed();
        let step = {
            let op = Op {
                kind: self.kind,
                name: "op",
                uid: &self.uid,
                generation: Some(1),
                abort: self.abort,
                deleting: self.deleting,
                has_finalizer: self.has_finalizer,
                ttl_seconds: 3600,
                status: &self.status,
            };
            let w = World {
                now: self.now,
                volume: self.v.as_ref(),
                replicas: &self.replicas,
                nodes: &self.nodes,
                placed: &placed,
                policy: Policy::default(),
                movers: &self.movers,
                pv: self.pv.as_ref(),
                slot: self.slot.clone(),
                free_resource_id: self.free_resource_id,
                group: Group {
                    members: &self.members,
                    children: &self.children,
                },
                snapshots: &self.snapshots,
            };
            next_step(&op, &w, m)
        };
        self.apply(&step);
        self.log.push(step.clone());
        self.settle();
        self.now = Timestamp::from_second(self.now.as_second() + 1).expect("time");
        step
    }

    /// Steps until the operation ended and let the volume go (at most `limit` steps).
    pub fn run(&mut self, m: &dyn Machine, limit: usize) {
        for _ in 0..limit {
            self.step(m);
            let holds = self
                .v
                .as_ref()
                .and_then(|v| v.spec.operation.as_ref())
                .is_some_and(|o| o.uid == self.uid);
            if self.status.phase.is_some_and(|p| p.is_final()) && !holds {
                return;
            }
        }
        panic!(
            "operation did not end in {limit} steps: {:?}\nlast steps: {:#?}",
            self.status,
            &self.log[self.log.len().saturating_sub(5)..]
        );
    }

    fn apply(&mut self, step: &OpStep) {
        match step {
            OpStep::Status(st) => self.status = (**st).clone(),
            OpStep::Acquire(r) => {
                let v = self.v.as_mut().expect("volume");
                assert!(v.spec.operation.is_none(), "acquired a held volume");
                v.spec.operation = Some(r.clone());
            }
            OpStep::UpdateVolume(c) => {
                let v = self.v.as_mut().expect("volume");
                if let Some(cfg) = &c.config {
                    let old = v.spec.config.as_ref().map(|c| c.version).unwrap_or(0);
                    assert!(cfg.version > old, "a config change bumps its version");
                    v.spec.config = Some(cfg.clone());
                }
                if let Some(b) = c.required_capacity_bytes {
                    v.spec.required_capacity_bytes = b;
                }
                if let Some(n) = c.replica_number {
                    v.spec.replica_number = n;
                }
                if let Some(a) = &c.accessibility {
                    v.spec.accessibility.nodes = a.clone();
                }
                if let Some(cv) = c.convertible {
                    v.spec.convertible = cv;
                }
            }
            OpStep::DeleteReplica(name) => {
                let r = self
                    .replicas
                    .iter_mut()
                    .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                    .expect("deleted replica exists");
                r.metadata.deletion_timestamp = Some(Time(self.now));
            }
            OpStep::RewritePvAffinity { nodes, .. } => {
                if let Some(pv) = self.pv.as_mut() {
                    pv.nodes = nodes.clone();
                }
            }
            OpStep::Release => {
                if let Some(v) = self.v.as_mut() {
                    v.spec.operation = None;
                }
            }
            OpStep::Delete => self.deleting = true,
            OpStep::AddFinalizer => self.has_finalizer = true,
            OpStep::RemoveFinalizer => {
                self.has_finalizer = false;
                self.deleted = self.deleting;
            }
            OpStep::StartMembers(volumes) => {
                for v in volumes {
                    assert!(
                        !self.children.iter().any(|c| &c.volume == v),
                        "one operation per member"
                    );
                    self.children.push(Child {
                        name: member_operation_name("op", v),
                        volume: v.clone(),
                        ..Default::default()
                    });
                }
            }
            OpStep::AbortMembers(names) => {
                for c in self.children.iter_mut().filter(|c| names.contains(&c.name)) {
                    c.abort = true;
                }
            }
            OpStep::Wait { .. } => {}
        }
    }

    /// The volume reconciler and the agents, until nothing changes.
    pub fn settle(&mut self) {
        for _ in 0..20 {
            let changed_agents = self.agents();
            let changed_volume = self.volume_reconcile();
            if !changed_agents && !changed_volume {
                return;
            }
        }
    }

    fn volume_reconcile(&mut self) -> bool {
        let mut changed = false;
        for _ in 0..30 {
            let Some(v) = self.v.as_mut() else {
                return changed;
            };
            match volume::next_step(v, &self.replicas) {
                Step::Wait => return changed,
                Step::CreateReplica(r) => {
                    let mut r = *r;
                    r.metadata.generation = Some(1);
                    self.replicas.push(r);
                }
                Step::UpdateReplication {
                    name,
                    replication,
                    copy_from,
                } => {
                    let r = self
                        .replicas
                        .iter_mut()
                        .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                        .expect("replica");
                    r.spec.replication = replication.map(|b| *b);
                    r.spec.copy_from = copy_from.map(|b| *b);
                    r.metadata.generation = Some(r.metadata.generation.unwrap_or(0) + 1);
                }
                Step::UpdateConfig(c) => v.spec.config = Some(c),
                Step::ResizeReplica { name, bytes } => {
                    let r = self
                        .replicas
                        .iter_mut()
                        .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                        .expect("replica");
                    r.spec.required_capacity_bytes = bytes;
                    r.metadata.generation = Some(r.metadata.generation.unwrap_or(0) + 1);
                }
                Step::Status(s) => {
                    let old = v.status.clone().unwrap_or_default();
                    v.status = Some(LocalVolumeStatus {
                        state: Some(s.state),
                        replicas: s.replicas,
                        allocated_capacity_bytes: s.allocated,
                        message: s.message,
                        ha_state: s.ha_state,
                        ..old
                    });
                }
                other => panic!("unexpected volume step in a simulation: {other:?}"),
            }
            changed = true;
        }
        panic!("the volume reconciler did not settle");
    }

    /// Each replica's agent: deletes go, others report Ready (HA: connected and UpToDate,
    /// a leaving one down; a copy verified) unless their node is held back.
    fn agents(&mut self) -> bool {
        let before = self.replicas.clone();
        self.replicas
            .retain(|r| r.metadata.deletion_timestamp.is_none());
        let connected_pairs: BTreeSet<String> = self
            .replicas
            .iter()
            .filter(|r| {
                r.spec
                    .replication
                    .as_ref()
                    .is_some_and(|s| !s.leaving && s.peer.is_some())
            })
            .map(|r| r.spec.node_name.clone())
            .collect();
        for r in &mut self.replicas {
            let held = self.held.contains(&r.spec.node_name);
            let mut st = LocalVolumeReplicaStatus {
                state: Some(ReplicaState::Ready),
                allocated_capacity_bytes: Some(r.spec.required_capacity_bytes),
                observed_generation: r.metadata.generation,
                copy: r.status.as_ref().and_then(|s| s.copy.clone()),
                ..Default::default()
            };
            if let Some(rep) = &r.spec.replication {
                let peer_here = rep
                    .peer
                    .as_ref()
                    .is_some_and(|p| connected_pairs.contains(&p.node));
                let (disk, conn, peer_disk, oos) = if rep.leaving || rep.peer.is_none() {
                    ("UpToDate", "StandAlone", "DUnknown", 0)
                } else if !peer_here {
                    ("UpToDate", "WFConnection", "DUnknown", 0)
                } else if held
                    || rep
                        .peer
                        .as_ref()
                        .is_some_and(|p| self.held.contains(&p.node))
                {
                    let target = held;
                    (
                        if target { "Inconsistent" } else { "UpToDate" },
                        if target { "SyncTarget" } else { "SyncSource" },
                        if target { "UpToDate" } else { "Inconsistent" },
                        GI / 2,
                    )
                } else {
                    ("UpToDate", "Connected", "UpToDate", 0)
                };
                st.synced = Some(disk == "UpToDate");
                st.replication = Some(ReplicationStatus {
                    role: "Secondary".into(),
                    disk_state: disk.into(),
                    connection_state: conn.into(),
                    peer_disk_state: Some(peer_disk.into()),
                    out_of_sync_bytes: oos,
                    ..Default::default()
                });
            }
            if let Some(copy) = &r.spec.copy_from {
                let done = !held;
                st.copy = Some(CopyStatus {
                    operation_uid: copy.operation_uid.clone(),
                    bytes_done: if done { GI } else { GI / 4 },
                    bytes_total: GI,
                    bytes_per_second: Some(100 << 20),
                    verified: done,
                    digest: done.then(|| "d1gest".into()),
                    ..Default::default()
                });
                if !done {
                    st.state = Some(ReplicaState::NotReady);
                }
            }
            r.status = Some(st);
        }
        before != self.replicas
    }
}

/// A volume whose status the volume reconciler already wrote Ready (and Healthy).
pub fn ready(mut sim: Sim) -> Sim {
    sim.settle();
    let v = sim.v.as_mut().expect("volume");
    let st = v.status.get_or_insert_with(Default::default);
    assert_eq!(st.state, Some(VolumeState::Ready), "fixture volume Ready");
    if v.spec.replica_number > 1 {
        assert_eq!(
            st.ha_state,
            Some(HaState::Healthy),
            "fixture volume Healthy"
        );
    }
    sim
}
