//! The next step of an HA replica on its node: its data and metadata logical volumes, its
//! DRBD resource, and the role the volume's config allows. Pure.
//!
//! The order of creation is data volume, metadata volume, DRBD metadata, `up`; of deletion
//! `down`, metadata wiped, configuration removed, metadata volume, data volume, finalizer.
//! Every step is idempotent and decided again from what the node shows, so an agent killed
//! anywhere finishes the job on its next pass.
//!
//! What never happens here: a forced promotion of a disk that may hold data (only the
//! first primary of a brand-new volume, while nothing was ever written), a connection that
//! discards data the operator did not choose to discard, a demotion of a device in use
//! (DRBD refuses, the step is retried), or a resumed I/O after losing the peer (that is
//! [`HaStep::Fence`], which goes through the volume's compare-and-swap in
//! [`crate::ha::fence_peer`]).

use crate::drbd::{self, ConnState, DiskState, ResourceStatus, Role};
use crate::lvm::{Lv, LvmState};
use hwameistor_api::{
    LocalVolumeReplica, LocalVolumeReplicaStatus, ReplicaState, ReplicationSpec, ReplicationStatus,
    FINALIZER_REPLICA,
};

/// What the node shows about the replica's DRBD resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrbdView {
    /// Why DRBD cannot be used on this node (module missing, wrong version); `None` when
    /// it can.
    pub unavailable: Option<String>,
    /// The resource as the kernel reports it; `None` when it is not up.
    pub status: Option<ResourceStatus>,
    /// Whether the metadata device carries DRBD metadata; asked only while the resource
    /// is down (`None` when not known).
    pub has_metadata: Option<bool>,
    /// The volume is staged (in use through CSI) on this node.
    pub staged: bool,
    /// DRBD reported a split brain on this resource and it is not connected since.
    pub split_brain: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HaStep {
    /// Not ours, or nothing to change.
    Nothing,
    AddFinalizer,
    /// Create, grow or activate a logical volume (data or metadata).
    EnsureVolume {
        vg: String,
        lv: String,
        bytes: i64,
    },
    CreateMetadata,
    /// Attach the disks, and connect when the resource file names a peer.
    Up,
    /// Make the running resource follow its file: a resource whose file names no peer any
    /// more (its peer was removed) drops its connection.
    Adjust,
    Connect {
        discard_my_data: bool,
    },
    /// Make the never-written disk of a brand-new volume UpToDate (the initial sync then
    /// runs from it).
    ForcePrimary,
    Demote,
    /// Grow the DRBD device to its (grown) backing volumes. DRBD needs a primary: with
    /// `promote`, nobody uses the volume and this allowed replica is promoted for the
    /// resize and demoted after. `alone`: a resource without a peer, which DRBD grows only
    /// when told to assume a peer (there is none) has the space.
    Resize {
        promote: bool,
        alone: bool,
    },
    /// Mark the local disk Outdated: the controller recorded it fenced.
    Outdate,
    /// I/O is frozen after losing the peer while primary: record the peer outdated (or
    /// learn that this side was fenced) before anything resumes.
    Fence,
    Down,
    WipeMetadata,
    /// Remove the resource's configuration file, then its metadata volume (both retried
    /// until gone, so no file ever names a volume that no longer exists).
    RemoveMetaVolume {
        vg: String,
        lv: String,
    },
    RemoveVolume {
        vg: String,
        lv: String,
    },
    RemoveFinalizer,
    Status(Box<LocalVolumeReplicaStatus>),
}

fn has_finalizer(r: &LocalVolumeReplica) -> bool {
    r.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER_REPLICA))
}

/// Whether this replica held up-to-date data at some point (its reports say so): such a
/// replica is never forced primary again.
fn held_data(r: &LocalVolumeReplica) -> bool {
    r.status
        .as_ref()
        .and_then(|s| s.replication.as_ref())
        .is_some_and(|s| {
            s.disk_state == DiskState::UpToDate.as_str()
                || s.disk_state == DiskState::Outdated.as_str()
                || s.disk_state == DiskState::Consistent.as_str()
        })
}

/// The replication status to report for `st`.
pub fn replication_status(st: &ResourceStatus, split_brain: bool) -> ReplicationStatus {
    ReplicationStatus {
        role: st.role.as_str().into(),
        disk_state: st.disk.as_str().into(),
        connection_state: st.connection.as_str().into(),
        peer_role: st
            .connection
            .connected()
            .then(|| st.peer_role.as_str().to_string()),
        peer_disk_state: Some(st.peer_disk.as_str().to_string()),
        out_of_sync_bytes: i64::try_from(st.out_of_sync_bytes).unwrap_or(i64::MAX),
        sync_progress: st
            .connection
            .syncing()
            .then(|| format!("{:.1}%", st.sync_percent.unwrap_or(0.0))),
        suspended: st.suspended,
        split_brain,
    }
}

fn status_with(
    r: &LocalVolumeReplica,
    state: ReplicaState,
    message: Option<String>,
    data: Option<&Lv>,
    rep: &ReplicationSpec,
    view: &DrbdView,
) -> LocalVolumeReplicaStatus {
    let mut st = r.status.clone().unwrap_or_default();
    st.state = Some(state);
    st.message = message;
    st.observed_generation = r.metadata.generation;
    if let Some(lv) = data {
        st.allocated_capacity_bytes = Some(lv.size);
        st.disks = lv.devices.clone();
    }
    match &view.status {
        Some(s) => {
            // What the application can use is the device, not the volume under it: a
            // grown volume counts once the device grew too.
            if s.size_bytes > 0 {
                st.allocated_capacity_bytes = Some(i64::try_from(s.size_bytes).unwrap_or(i64::MAX));
            }
            st.device_path = Some(drbd::device_path(s.minor));
            st.synced = Some(s.up_to_date());
            st.replication = Some(replication_status(s, view.split_brain));
        }
        None => {
            st.synced = Some(false);
            if let Some(old) = st.replication.as_mut() {
                // What it was is kept for the record (disk state history decides forced
                // promotion); the role and connection are gone with the resource.
                old.role = Role::Unknown.as_str().into();
                old.connection_state = ConnState::StandAlone.as_str().into();
                old.peer_role = None;
                old.sync_progress = None;
                old.suspended = false;
                old.split_brain = view.split_brain;
            }
            st.device_path = Some(drbd::device_path(rep.minor as u32));
        }
    }
    st
}

fn put_status(r: &LocalVolumeReplica, want: LocalVolumeReplicaStatus) -> HaStep {
    if r.status.as_ref() == Some(&want) {
        HaStep::Nothing
    } else {
        HaStep::Status(Box::new(want))
    }
}

/// The next step for HA replica `r` on `node`.
pub fn next_step(node: &str, r: &LocalVolumeReplica, lvm: &LvmState, view: &DrbdView) -> HaStep {
    if r.spec.node_name != node {
        return HaStep::Nothing;
    }
    let Some(rep) = r.spec.replication.as_ref() else {
        return HaStep::Nothing;
    };
    let vg = r.spec.pool_name.clone();
    let data_name = r.spec.volume_name.clone();
    let meta_name = drbd::meta_lv_name(&data_name);
    let data = lvm.lv(&vg, &data_name);
    let meta = lvm.lv(&vg, &meta_name);

    if r.metadata.deletion_timestamp.is_some() {
        if !has_finalizer(r) {
            return HaStep::Nothing;
        }
        if let Some(s) = &view.status {
            if s.role == Role::Primary && view.staged {
                let want = status_with(
                    r,
                    ReplicaState::Deleting,
                    Some("the volume is in use on this node; it is removed once unstaged".into()),
                    data,
                    rep,
                    view,
                );
                return put_status(r, want);
            }
            return HaStep::Down;
        }
        if meta.is_some() {
            if view.has_metadata == Some(true) {
                return HaStep::WipeMetadata;
            }
            if view.has_metadata.is_none() {
                // Unknown: the agent asks before deciding; wiping is harmless either way
                // only when we know what is there.
                return HaStep::Nothing;
            }
        }
        if meta.is_some() {
            return HaStep::RemoveMetaVolume { vg, lv: meta_name };
        }
        if data.is_some() {
            return HaStep::RemoveVolume { vg, lv: data_name };
        }
        return HaStep::RemoveFinalizer;
    }

    if !has_finalizer(r) {
        return HaStep::AddFinalizer;
    }
    if let Some(why) = &view.unavailable {
        let want = status_with(
            r,
            ReplicaState::NotReady,
            Some(format!("replication cannot run on this node: {why}")),
            data,
            rep,
            view,
        );
        return put_status(r, want);
    }
    // A replica a migration replaces: its resource goes down and stays down, its data and
    // metadata kept untouched, until the operation removes it (its replacement is complete)
    // or makes it active again (aborted). Nothing is created for it.
    if rep.leaving {
        if let Some(st) = &view.status {
            if st.role == Role::Primary && view.staged {
                let msg = "being replaced by a migration, but the volume is in use on this node; it leaves once unstaged".to_string();
                return put_status(
                    r,
                    status_with(r, ReplicaState::NotReady, Some(msg), data, rep, view),
                );
            }
            return HaStep::Down;
        }
        let (state, msg) = match data {
            Some(_) => (
                ReplicaState::Ready,
                "being replaced by a migration: its resource is down, its data kept until the new replica is complete",
            ),
            None => (
                ReplicaState::NotReady,
                "being replaced by a migration, and its data volume is missing on this node",
            ),
        };
        return put_status(
            r,
            status_with(r, state, Some(msg.to_string()), data, rep, view),
        );
    }
    // The data volume, by the plain replica's rules (a vanished volume that held data is
    // never recreated empty).
    match data {
        Some(lv) if lv.size >= r.spec.required_capacity_bytes && lv.active() => {}
        None if held_data(r)
            || r.status
                .as_ref()
                .is_some_and(|s| s.allocated_capacity_bytes.is_some()) =>
        {
            let mut want = crate::replica::lost_status(r);
            want.synced = Some(false);
            return put_status(r, want);
        }
        _ => {
            return HaStep::EnsureVolume {
                vg,
                lv: data_name,
                bytes: r.spec.required_capacity_bytes,
            }
        }
    }
    let meta_bytes = drbd::meta_bytes(r.spec.required_capacity_bytes);
    match meta {
        Some(m) if m.size >= meta_bytes && m.active() => {}
        _ => {
            return HaStep::EnsureVolume {
                vg,
                lv: meta_name,
                bytes: meta_bytes,
            }
        }
    }
    let Some(st) = &view.status else {
        return match view.has_metadata {
            Some(false) => HaStep::CreateMetadata,
            Some(true) => HaStep::Up,
            None => HaStep::Nothing,
        };
    };

    // No peer in the replication: DRBD over this node alone, StandAlone by design (a volume
    // created convertible, until a conversion adds its second replica).
    let alone = rep.peer.is_none();

    // Frozen I/O after losing the peer: the fence decision comes first, nothing else
    // (a demotion or an outdate would hang on the frozen device).
    if st.suspended && !st.connection.connected() {
        return HaStep::Fence;
    }
    if alone && st.connection != ConnState::StandAlone {
        return HaStep::Adjust;
    }
    if st.connection == ConnState::StandAlone && !alone {
        if rep.discard_my_data {
            // DRBD discards only a secondary's data: demote first (never under a user).
            if st.role == Role::Primary {
                if view.staged {
                    let msg = "the operator chose to discard this replica's data after the split brain; unstage the volume here (stop its pod) so it can resync".to_string();
                    return put_status(
                        r,
                        status_with(r, ReplicaState::NotReady, Some(msg), data, rep, view),
                    );
                }
                return HaStep::Demote;
            }
            return HaStep::Connect {
                discard_my_data: true,
            };
        }
        // After a split brain only the side whose data the operator keeps reconnects
        // unasked (the other one waits for its discard order): connecting both would meet
        // the split brain again and again.
        if !view.split_brain || rep.keep_my_data {
            return HaStep::Connect {
                discard_my_data: false,
            };
        }
    }
    if st.role == Role::Primary && !rep.primary && !view.staged {
        return HaStep::Demote;
    }
    // Forced only once both sides are connected: both then provably never held data, and
    // the initial sync starts at once (forcing alone would start a generation the peer
    // could later dispute). A resource without a peer (a volume created convertible) has
    // nobody to dispute it: its first primary is forced standalone.
    let connected_or_alone = st.connection.connected() || alone;
    if rep.primary
        && rep.initial
        && st.role != Role::Primary
        && connected_or_alone
        && st.disk == DiskState::Inconsistent
        && st.peer_disk != DiskState::UpToDate
        && !held_data(r)
    {
        return HaStep::ForcePrimary;
    }
    // The initial promotion only made the data UpToDate; nobody uses the volume here.
    if st.role == Role::Primary && !view.staged && rep.primary && st.disk == DiskState::UpToDate {
        return HaStep::Demote;
    }
    if rep.outdated
        && st.role == Role::Secondary
        && st.disk == DiskState::UpToDate
        && !st.connection.connected()
    {
        return HaStep::Outdate;
    }
    // Online growth: both data volumes grow first (each node its own), then the device,
    // from the side that is primary (or may be, when nobody uses the volume), once the
    // link is up and no resync runs; then the filesystem (CSI NodeExpandVolume).
    // Alone, the same from its only disk.
    let required = u64::try_from(r.spec.required_capacity_bytes).unwrap_or(0);
    let in_sync = if alone {
        st.connection == ConnState::StandAlone
    } else {
        st.connection == ConnState::Connected && st.peer_disk == DiskState::UpToDate
    };
    if st.size_bytes < required && in_sync && st.disk == DiskState::UpToDate {
        if st.role == Role::Primary {
            return HaStep::Resize {
                promote: false,
                alone,
            };
        }
        if rep.primary && !view.staged && st.peer_role != Role::Primary {
            return HaStep::Resize {
                promote: true,
                alone,
            };
        }
    }
    let (state, message) = match st.disk {
        DiskState::Diskless | DiskState::Failed => (
            ReplicaState::NotReady,
            Some(format!(
                "DRBD resource {} has no local disk ({}); check the node's disks",
                rep.resource, st.disk
            )),
        ),
        _ => (ReplicaState::Ready, None),
    };
    let message = message.or_else(|| {
        if view.split_brain {
            Some("split brain: this replica and its peer were both primary while disconnected; nothing is discarded until the operator chooses (kubectl hwameistor volume resolve-split-brain)".into())
        } else if st.suspended {
            Some("I/O is frozen until the peer is fenced".into())
        } else {
            None
        }
    });
    put_status(r, status_with(r, state, message, data, rep, view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{LocalVolumeReplicaSpec, ReplicationPeer};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const VG: &str = "LocalStorage_PoolHDD";
    const MI: i64 = 1 << 20;

    fn spec(primary: bool, initial: bool) -> ReplicationSpec {
        ReplicationSpec {
            resource: "v1".into(),
            minor: 3,
            port: 43004,
            address: "10.0.0.1".into(),
            peer: Some(ReplicationPeer {
                node: "n2".into(),
                address: "10.0.0.2".into(),
            }),
            primary,
            outdated: false,
            initial,
            discard_my_data: false,
            keep_my_data: false,
            config_version: 0,
            leaving: false,
        }
    }

    fn replica(rep: ReplicationSpec) -> LocalVolumeReplica {
        let mut r = LocalVolumeReplica::new(
            "v1-n1",
            LocalVolumeReplicaSpec {
                volume_name: "v1".into(),
                pool_name: VG.into(),
                node_name: "n1".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 64 * MI,
                replication: Some(rep),
                copy_from: None,
                thin: false,
            },
        );
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        r
    }

    fn lv(name: &str, size: i64) -> Lv {
        Lv {
            name: name.into(),
            vg_name: VG.into(),
            size,
            attr: "-wi-a-----".into(),
            path: format!("/dev/{VG}/{name}"),
            devices: vec!["/dev/vdb".into()],
            ..Default::default()
        }
    }

    fn lvm_both() -> LvmState {
        LvmState {
            lvs: vec![lv("v1", 64 * MI), lv("v1_drbdmeta", 4 * MI)],
            ..Default::default()
        }
    }

    fn up(role: Role, conn: ConnState, disk: DiskState, peer_disk: DiskState) -> DrbdView {
        DrbdView {
            status: Some(ResourceStatus {
                name: "v1".into(),
                minor: 3,
                role,
                peer_role: Role::Secondary,
                connection: conn,
                disk,
                peer_disk,
                out_of_sync_bytes: 0,
                sync_percent: None,
                suspended: false,
                size_bytes: 64 * MI as u64,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn creation_goes_data_meta_metadata_up() {
        let r = replica(spec(true, true));
        let empty = LvmState::default();
        assert_eq!(
            next_step("n1", &r, &empty, &DrbdView::default()),
            HaStep::EnsureVolume {
                vg: VG.into(),
                lv: "v1".into(),
                bytes: 64 * MI
            }
        );
        let data_only = LvmState {
            lvs: vec![lv("v1", 64 * MI)],
            ..Default::default()
        };
        assert!(matches!(
            next_step("n1", &r, &data_only, &DrbdView::default()),
            HaStep::EnsureVolume { lv, .. } if lv == "v1_drbdmeta"
        ));
        let both = lvm_both();
        assert_eq!(
            next_step("n1", &r, &both, &DrbdView::default()),
            HaStep::Nothing
        );
        let no_md = DrbdView {
            has_metadata: Some(false),
            ..Default::default()
        };
        assert_eq!(next_step("n1", &r, &both, &no_md), HaStep::CreateMetadata);
        let md = DrbdView {
            has_metadata: Some(true),
            ..Default::default()
        };
        assert_eq!(next_step("n1", &r, &both, &md), HaStep::Up);
        assert_eq!(
            next_step("n2", &r, &both, &md),
            HaStep::Nothing,
            "another node's replica"
        );
    }

    #[test]
    fn only_the_initial_primary_of_a_never_written_volume_is_forced() {
        let both = lvm_both();
        let fresh = up(
            Role::Secondary,
            ConnState::Connected,
            DiskState::Inconsistent,
            DiskState::Inconsistent,
        );
        assert_eq!(
            next_step("n1", &replica(spec(true, true)), &both, &fresh),
            HaStep::ForcePrimary
        );
        // Not the designated primary, or not initial any more: never.
        assert!(!matches!(
            next_step("n1", &replica(spec(false, true)), &both, &fresh),
            HaStep::ForcePrimary
        ));
        assert!(!matches!(
            next_step("n1", &replica(spec(true, false)), &both, &fresh),
            HaStep::ForcePrimary
        ));
        // Not before the peer is there.
        let alone = up(
            Role::Secondary,
            ConnState::WFConnection,
            DiskState::Inconsistent,
            DiskState::DUnknown,
        );
        assert!(!matches!(
            next_step("n1", &replica(spec(true, true)), &both, &alone),
            HaStep::ForcePrimary
        ));
        // The peer already has the data (initial not cleared yet): it syncs from there.
        let peer_has = up(
            Role::Secondary,
            ConnState::SyncTarget,
            DiskState::Inconsistent,
            DiskState::UpToDate,
        );
        assert!(!matches!(
            next_step("n1", &replica(spec(true, true)), &both, &peer_has),
            HaStep::ForcePrimary
        ));
        // This replica reported data before (e.g. it was UpToDate, then its resync began).
        let mut r = replica(spec(true, true));
        r.status = Some(LocalVolumeReplicaStatus {
            replication: Some(ReplicationStatus {
                disk_state: "UpToDate".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(!matches!(
            next_step("n1", &r, &both, &fresh),
            HaStep::ForcePrimary
        ));
    }

    #[test]
    fn an_unused_primary_is_demoted_but_a_staged_one_is_not() {
        let both = lvm_both();
        let p = up(
            Role::Primary,
            ConnState::SyncSource,
            DiskState::UpToDate,
            DiskState::Inconsistent,
        );
        assert_eq!(
            next_step("n1", &replica(spec(true, false)), &both, &p),
            HaStep::Demote
        );
        assert_eq!(
            next_step("n1", &replica(spec(false, false)), &both, &p),
            HaStep::Demote
        );
        let staged = DrbdView {
            staged: true,
            ..p.clone()
        };
        assert!(matches!(
            next_step("n1", &replica(spec(true, false)), &both, &staged),
            HaStep::Status(_)
        ));
    }

    #[test]
    fn frozen_io_goes_to_the_fence_decision_first() {
        let both = lvm_both();
        let mut v = up(
            Role::Primary,
            ConnState::WFConnection,
            DiskState::UpToDate,
            DiskState::DUnknown,
        );
        v.staged = true;
        v.status.as_mut().unwrap().suspended = true;
        assert_eq!(
            next_step("n1", &replica(spec(true, false)), &both, &v),
            HaStep::Fence
        );
        // Even when the controller moved the primary away: the fence says so, not a demote
        // (which would hang on the frozen device).
        assert_eq!(
            next_step("n1", &replica(spec(false, false)), &both, &v),
            HaStep::Fence
        );
    }

    #[test]
    fn split_brain_waits_for_the_operator() {
        let both = lvm_both();
        let mut v = up(
            Role::Primary,
            ConnState::StandAlone,
            DiskState::UpToDate,
            DiskState::DUnknown,
        );
        v.split_brain = true;
        v.staged = true;
        let Some(HaStep::Status(st)) =
            Some(next_step("n1", &replica(spec(true, false)), &both, &v))
        else {
            panic!("status expected")
        };
        assert!(st.replication.as_ref().unwrap().split_brain);
        assert!(st.message.unwrap().contains("resolve-split-brain"));
        let mut discard = spec(false, false);
        discard.discard_my_data = true;
        // Still primary and in use: it says what to do, and waits.
        let HaStep::Status(st) = next_step("n1", &replica(discard.clone()), &both, &v) else {
            panic!("status expected")
        };
        assert!(st.message.unwrap().contains("unstage"));
        let mut unused = v.clone();
        unused.staged = false;
        assert_eq!(
            next_step("n1", &replica(discard.clone()), &both, &unused),
            HaStep::Demote
        );
        let mut secondary = unused.clone();
        secondary.status.as_mut().unwrap().role = Role::Secondary;
        assert_eq!(
            next_step("n1", &replica(discard), &both, &secondary),
            HaStep::Connect {
                discard_my_data: true
            }
        );
        let mut keep = spec(true, false);
        keep.keep_my_data = true;
        assert_eq!(
            next_step("n1", &replica(keep), &both, &v),
            HaStep::Connect {
                discard_my_data: false
            }
        );
        // A StandAlone without split brain (someone disconnected it) reconnects.
        v.split_brain = false;
        assert_eq!(
            next_step("n1", &replica(spec(true, false)), &both, &v),
            HaStep::Connect {
                discard_my_data: false
            }
        );
    }

    #[test]
    fn a_fenced_replica_marks_its_disk_outdated() {
        let both = lvm_both();
        let mut s = spec(false, false);
        s.outdated = true;
        let v = up(
            Role::Secondary,
            ConnState::WFConnection,
            DiskState::UpToDate,
            DiskState::DUnknown,
        );
        assert_eq!(
            next_step("n1", &replica(s.clone()), &both, &v),
            HaStep::Outdate
        );
        // Connected: DRBD itself settles who is newer.
        let c = up(
            Role::Secondary,
            ConnState::SyncTarget,
            DiskState::Inconsistent,
            DiskState::UpToDate,
        );
        assert!(matches!(
            next_step("n1", &replica(s), &both, &c),
            HaStep::Status(_)
        ));
    }

    #[test]
    fn ready_reports_the_drbd_device_and_sync() {
        let both = lvm_both();
        let mut v = up(
            Role::Secondary,
            ConnState::SyncTarget,
            DiskState::Inconsistent,
            DiskState::UpToDate,
        );
        v.status.as_mut().unwrap().sync_percent = Some(42.25);
        v.status.as_mut().unwrap().out_of_sync_bytes = 1 << 20;
        let HaStep::Status(st) = next_step("n1", &replica(spec(false, false)), &both, &v) else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::Ready));
        assert_eq!(st.device_path.as_deref(), Some("/dev/drbd3"));
        assert_eq!(st.synced, Some(false));
        let rs = st.replication.unwrap();
        assert_eq!(rs.sync_progress.as_deref(), Some("42.2%"));
        assert_eq!(rs.out_of_sync_bytes, 1 << 20);
        assert_eq!(rs.connection_state, "SyncTarget");
        let done = up(
            Role::Secondary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        let HaStep::Status(st) = next_step("n1", &replica(spec(false, false)), &both, &done) else {
            panic!("status expected")
        };
        assert_eq!(st.synced, Some(true));
        assert_eq!(st.allocated_capacity_bytes, Some(64 * MI));
    }

    #[test]
    fn missing_drbd_is_reported_not_retried_blindly() {
        let both = lvm_both();
        let v = DrbdView {
            unavailable: Some("module drbd not found".into()),
            ..Default::default()
        };
        let HaStep::Status(st) = next_step("n1", &replica(spec(true, true)), &both, &v) else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::NotReady));
        assert!(st.message.unwrap().contains("module drbd not found"));
    }

    #[test]
    fn deletion_goes_down_wipe_meta_data_finalizer() {
        let mut r = replica(spec(false, false));
        r.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let both = lvm_both();
        let v = up(
            Role::Secondary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        assert_eq!(next_step("n1", &r, &both, &v), HaStep::Down);
        let mut staged = up(
            Role::Primary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        staged.staged = true;
        assert!(
            matches!(next_step("n1", &r, &both, &staged), HaStep::Status(s) if s.state == Some(ReplicaState::Deleting))
        );
        let down_md = DrbdView {
            has_metadata: Some(true),
            ..Default::default()
        };
        assert_eq!(next_step("n1", &r, &both, &down_md), HaStep::WipeMetadata);
        let wiped = DrbdView {
            has_metadata: Some(false),
            ..Default::default()
        };
        assert_eq!(
            next_step("n1", &r, &both, &wiped),
            HaStep::RemoveMetaVolume {
                vg: VG.into(),
                lv: "v1_drbdmeta".into()
            }
        );
        let data_only = LvmState {
            lvs: vec![lv("v1", 64 * MI)],
            ..Default::default()
        };
        assert_eq!(
            next_step("n1", &r, &data_only, &wiped),
            HaStep::RemoveVolume {
                vg: VG.into(),
                lv: "v1".into()
            }
        );
        assert_eq!(
            next_step("n1", &r, &LvmState::default(), &wiped),
            HaStep::RemoveFinalizer
        );
    }

    #[test]
    fn a_vanished_data_volume_that_held_data_is_failed_not_recreated() {
        let mut r = replica(spec(false, false));
        r.status = Some(LocalVolumeReplicaStatus {
            allocated_capacity_bytes: Some(64 * MI),
            ..Default::default()
        });
        let HaStep::Status(st) = next_step("n1", &r, &LvmState::default(), &DrbdView::default())
        else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::Failed));
    }

    #[test]
    fn a_grown_volume_grows_its_device_from_the_primary_side_once_in_sync() {
        let mut r = replica(spec(true, false));
        r.spec.required_capacity_bytes = 128 * MI;
        let grown = LvmState {
            lvs: vec![lv("v1", 128 * MI), lv("v1_drbdmeta", 4 * MI)],
            ..Default::default()
        };
        let mut p = up(
            Role::Primary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        p.staged = true;
        assert_eq!(
            next_step("n1", &r, &grown, &p),
            HaStep::Resize {
                promote: false,
                alone: false
            }
        );
        // Unused: the allowed replica promotes itself for the resize.
        let idle = up(
            Role::Secondary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        assert_eq!(
            next_step("n1", &r, &grown, &idle),
            HaStep::Resize {
                promote: true,
                alone: false
            }
        );
        // The other replica never does; nor anyone during a resync or apart.
        let other = replica(spec(false, false));
        let mut other = other;
        other.spec.required_capacity_bytes = 128 * MI;
        assert!(matches!(
            next_step("n1", &other, &grown, &idle),
            HaStep::Status(_)
        ));
        let syncing = up(
            Role::Primary,
            ConnState::SyncSource,
            DiskState::UpToDate,
            DiskState::Inconsistent,
        );
        let mut syncing = syncing;
        syncing.staged = true;
        assert!(matches!(
            next_step("n1", &r, &grown, &syncing),
            HaStep::Status(_)
        ));
        // Its report counts the device, not the volume under it.
        let HaStep::Status(st) = next_step("n1", &other, &grown, &idle) else {
            panic!("status expected")
        };
        assert_eq!(st.allocated_capacity_bytes, Some(64 * MI));
    }

    #[test]
    fn a_leaving_replica_goes_down_and_keeps_its_volumes() {
        let mut rep = spec(false, false);
        rep.leaving = true;
        rep.peer = None;
        let r = replica(rep);
        let running = up(
            Role::Secondary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        assert_eq!(next_step("n1", &r, &lvm_both(), &running), HaStep::Down);
        // Under a user it waits (never a forced down of a mounted device).
        let mut staged = up(
            Role::Primary,
            ConnState::Connected,
            DiskState::UpToDate,
            DiskState::UpToDate,
        );
        staged.staged = true;
        let HaStep::Status(st) = next_step("n1", &r, &lvm_both(), &staged) else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::NotReady));
        // Down: nothing is created, wiped or removed; it reports its data kept.
        let down = DrbdView {
            has_metadata: Some(true),
            ..Default::default()
        };
        let HaStep::Status(st) = next_step("n1", &r, &lvm_both(), &down) else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::Ready));
        assert!(st
            .message
            .as_deref()
            .is_some_and(|m| m.contains("data kept")));
        let HaStep::Status(st) = next_step("n1", &r, &LvmState::default(), &down) else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::NotReady), "never recreated");
    }

    #[test]
    fn a_replica_without_peer_runs_alone_forced_once_never_connecting() {
        let mut rep = spec(true, true);
        rep.peer = None;
        let r = replica(rep.clone());
        let both = lvm_both();
        let md = DrbdView {
            has_metadata: Some(true),
            ..Default::default()
        };
        assert_eq!(next_step("n1", &r, &both, &md), HaStep::Up);
        // Up alone: StandAlone, Inconsistent. Nobody can dispute its generation: forced.
        let fresh = up(
            Role::Secondary,
            ConnState::StandAlone,
            DiskState::Inconsistent,
            DiskState::DUnknown,
        );
        assert_eq!(next_step("n1", &r, &both, &fresh), HaStep::ForcePrimary);
        // Never when it held data, nor when not initial, nor for the other replica.
        let mut held = r.clone();
        held.status = Some(LocalVolumeReplicaStatus {
            replication: Some(ReplicationStatus {
                disk_state: "Outdated".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(!matches!(
            next_step("n1", &held, &both, &fresh),
            HaStep::ForcePrimary
        ));
        let mut not_initial = rep.clone();
        not_initial.initial = false;
        assert!(!matches!(
            next_step("n1", &replica(not_initial.clone()), &both, &fresh),
            HaStep::ForcePrimary
        ));
        // StandAlone with data: reported Ready, no connect attempt.
        let ready = up(
            Role::Secondary,
            ConnState::StandAlone,
            DiskState::UpToDate,
            DiskState::DUnknown,
        );
        let HaStep::Status(st) = next_step("n1", &replica(not_initial.clone()), &both, &ready)
        else {
            panic!("status expected")
        };
        assert_eq!(st.state, Some(ReplicaState::Ready));
        // Its peer was removed (an aborted conversion): it drops the connection.
        for conn in [
            ConnState::WFConnection,
            ConnState::Connected,
            ConnState::SyncSource,
        ] {
            let v = up(
                Role::Primary,
                conn,
                DiskState::UpToDate,
                DiskState::UpToDate,
            );
            assert_eq!(
                next_step("n1", &replica(not_initial.clone()), &both, &v),
                HaStep::Adjust,
                "{conn:?}"
            );
        }
        // Grown: resized alone, promoting itself when unused.
        let mut g = replica(not_initial);
        g.spec.required_capacity_bytes = 128 * MI;
        let grown = LvmState {
            lvs: vec![lv("v1", 128 * MI), lv("v1_drbdmeta", 4 * MI)],
            ..Default::default()
        };
        assert_eq!(
            next_step("n1", &g, &grown, &ready),
            HaStep::Resize {
                promote: true,
                alone: true
            }
        );
        let mut in_use = up(
            Role::Primary,
            ConnState::StandAlone,
            DiskState::UpToDate,
            DiskState::DUnknown,
        );
        in_use.staged = true;
        assert_eq!(
            next_step("n1", &g, &grown, &in_use),
            HaStep::Resize {
                promote: false,
                alone: true
            }
        );
        // A replica with a peer never resizes while StandAlone.
        let mut paired = replica(spec(true, false));
        paired.spec.required_capacity_bytes = 128 * MI;
        assert!(!matches!(
            next_step("n1", &paired, &grown, &in_use),
            HaStep::Resize { .. }
        ));
    }
}
