//! LocalVolumeReplica decisions on the replica's node. Pure.
//!
//! The finalizer is added before the logical volume is created and removed only after it
//! is gone, so no logical volume ever exists without an object that accounts for it.
//!
//! A logical volume is created only for a replica that never had one. If the volume of a
//! replica that was Ready disappears (removed by hand, its disk lost), the replica is marked
//! Failed and the volume is not recreated: an empty volume in place of the data would look
//! healthy to the application and lose everything silently.

use crate::lvm::{Lv, LvmState};
use hwameistor_api::{
    CopySource, LocalVolumeReplica, LocalVolumeReplicaStatus, ReplicaState, FINALIZER_REPLICA,
};

#[derive(Clone, Debug, PartialEq)]
pub enum ReplicaStep {
    /// Not ours, or nothing to change.
    Nothing,
    AddFinalizer,
    /// Create, grow or activate the logical volume (a thin one in the group's thin pool
    /// when `thin`).
    EnsureVolume {
        vg: String,
        lv: String,
        bytes: i64,
        thin: bool,
    },
    RemoveVolume {
        vg: String,
        lv: String,
    },
    RemoveFinalizer,
    /// Publish what the volume looks like now.
    Status(Box<LocalVolumeReplicaStatus>),
    /// The logical volume exists and must be filled by the block mover from this source
    /// (a copy task runs until its end-to-end digest is verified, reporting in
    /// `status.copy`; the replica is not Ready before).
    Copy(Box<CopySource>),
    /// A restore that LVM alone serves: make `vg/lv` a writable thin snapshot of the
    /// snapshot's logical volume `snapshot_lv` (blocks shared, nothing copied), grown to
    /// `bytes`, then record the fill as done for `src`.
    CloneThin {
        vg: String,
        lv: String,
        snapshot_lv: String,
        bytes: i64,
        src: Box<CopySource>,
    },
}

/// The snapshot logical volume a restored replica is made from by LVM alone: a thin
/// snapshot on this node in the replica's own group, restored into a thin volume (a thin
/// snapshot of it is a complete, independent thin volume). `None`: the block mover fills
/// the replica.
pub fn thin_clone_source(node: &str, r: &LocalVolumeReplica, lvm: &LvmState) -> Option<String> {
    let src = r.spec.copy_from.as_ref()?;
    let snapshot = src.snapshot.as_deref()?;
    if src.node != node || !r.spec.thin {
        return None;
    }
    let lv = crate::snapshot::lv_name(snapshot);
    lvm.lv(&r.spec.pool_name, &lv)
        .filter(|l| l.pool_lv.is_some())
        .map(|_| lv)
}

/// Whether the replica's block copy (if it is one) is verified for its current operation.
pub fn copy_done(r: &LocalVolumeReplica) -> bool {
    match &r.spec.copy_from {
        None => true,
        Some(src) => r
            .status
            .as_ref()
            .and_then(|s| s.copy.as_ref())
            .is_some_and(|c| c.verified && c.operation_uid == src.operation_uid),
    }
}

fn has_finalizer(r: &LocalVolumeReplica) -> bool {
    r.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER_REPLICA))
}

/// The status a replica whose logical volume is `lv` should have. A replica being filled by
/// a block copy is not Ready until the copy is verified: its volume holds no data before.
pub fn ready_status(r: &LocalVolumeReplica, lv: &Lv) -> LocalVolumeReplicaStatus {
    let copying = r.spec.copy_from.as_ref().filter(|_| !copy_done(r));
    LocalVolumeReplicaStatus {
        state: Some(if copying.is_some() {
            ReplicaState::NotReady
        } else {
            ReplicaState::Ready
        }),
        // One replica, no replication: nothing to be in sync with.
        synced: None,
        device_path: Some(lv.path.clone()),
        allocated_capacity_bytes: Some(lv.size),
        disks: lv.devices.clone(),
        replication: None,
        // A copy's report stays with the replica it filled (history of how it got its data).
        copy: r.status.as_ref().and_then(|s| s.copy.clone()),
        message: copying.map(|src| match &src.snapshot {
            Some(snap) => format!(
                "being restored from snapshot {snap} on {}; not usable before its data is all there (verified)",
                src.node
            ),
            None => format!(
                "being filled by a block copy from {} (operation {}); not usable before the copy is verified",
                src.node, src.operation
            ),
        }),
        observed_generation: r.metadata.generation,
        conditions: r
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    }
}

/// Whether the replica had its logical volume made at some point (its status says so).
fn held_data(r: &LocalVolumeReplica) -> bool {
    r.status
        .as_ref()
        .is_some_and(|s| s.device_path.is_some() || s.allocated_capacity_bytes.is_some())
}

/// The status of a replica whose logical volume vanished after it held data.
pub fn lost_status(r: &LocalVolumeReplica) -> LocalVolumeReplicaStatus {
    let mut st = r.status.clone().unwrap_or_default();
    st.state = Some(ReplicaState::Failed);
    st.message = Some(format!(
        "logical volume {}/{} is missing from the node; it held this replica's data, so it is not recreated empty (restore it, or delete the replica)",
        r.spec.pool_name, r.spec.volume_name
    ));
    st.observed_generation = r.metadata.generation;
    st
}

pub fn next_step(node: &str, r: &LocalVolumeReplica, lvm: &LvmState) -> ReplicaStep {
    if r.spec.node_name != node {
        return ReplicaStep::Nothing;
    }
    let vg = r.spec.pool_name.clone();
    let name = r.spec.volume_name.clone();
    let lv = lvm.lv(&vg, &name);
    if r.metadata.deletion_timestamp.is_some() {
        return match (lv, has_finalizer(r)) {
            (Some(_), true) => ReplicaStep::RemoveVolume { vg, lv: name },
            (None, true) => ReplicaStep::RemoveFinalizer,
            (_, false) => ReplicaStep::Nothing,
        };
    }
    if !has_finalizer(r) {
        return ReplicaStep::AddFinalizer;
    }
    // A thin restore on the snapshot's node: LVM makes (or finishes making) the volume from
    // the snapshot. Only a volume it made from it counts: anything else there is filled by
    // the block mover like any target.
    let clone = r
        .spec
        .copy_from
        .as_ref()
        .filter(|_| !copy_done(r))
        .and_then(|src| thin_clone_source(node, r, lvm).map(|snap| (src, snap)))
        .filter(|(_, snap)| lv.is_none_or(|l| l.origin.as_deref() == Some(snap.as_str())))
        .filter(|_| lv.is_some() || !held_data(r));
    let clone_step = |(src, snapshot_lv): (&CopySource, String)| ReplicaStep::CloneThin {
        vg: vg.clone(),
        lv: name.clone(),
        snapshot_lv,
        bytes: r.spec.required_capacity_bytes,
        src: Box::new(src.clone()),
    };
    match lv {
        Some(lv) if lv.size >= r.spec.required_capacity_bytes && lv.active() => {
            let want = ready_status(r, lv);
            if r.status.as_ref() != Some(&want) {
                ReplicaStep::Status(Box::new(want))
            } else if let Some(c) = clone {
                clone_step(c)
            } else if let Some(src) = r.spec.copy_from.as_ref().filter(|_| !copy_done(r)) {
                ReplicaStep::Copy(Box::new(src.clone()))
            } else {
                ReplicaStep::Nothing
            }
        }
        _ if clone.is_some() => clone.map(clone_step).unwrap_or(ReplicaStep::Nothing),
        None if held_data(r) => {
            let want = lost_status(r);
            if r.status.as_ref() == Some(&want) {
                ReplicaStep::Nothing
            } else {
                ReplicaStep::Status(Box::new(want))
            }
        }
        _ => ReplicaStep::EnsureVolume {
            vg,
            lv: name,
            bytes: r.spec.required_capacity_bytes,
            thin: r.spec.thin,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::LocalVolumeReplicaSpec;

    fn replica() -> LocalVolumeReplica {
        LocalVolumeReplica::new(
            "v1-n1",
            LocalVolumeReplicaSpec {
                volume_name: "v1".into(),
                pool_name: "LocalStorage_PoolHDD".into(),
                node_name: "n1".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 8 << 20,
                replication: None,
                copy_from: None,
                thin: false,
            },
        )
    }

    fn lvm_with(size: i64, attr: &str) -> LvmState {
        LvmState {
            lvs: vec![Lv {
                name: "v1".into(),
                vg_name: "LocalStorage_PoolHDD".into(),
                size,
                attr: attr.into(),
                path: "/dev/LocalStorage_PoolHDD/v1".into(),
                devices: vec!["/dev/vdb".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn create_path_adds_finalizer_first() {
        let mut r = replica();
        assert_eq!(
            next_step("n2", &r, &LvmState::default()),
            ReplicaStep::Nothing
        );
        assert_eq!(
            next_step("n1", &r, &LvmState::default()),
            ReplicaStep::AddFinalizer
        );
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        assert_eq!(
            next_step("n1", &r, &LvmState::default()),
            ReplicaStep::EnsureVolume {
                vg: "LocalStorage_PoolHDD".into(),
                lv: "v1".into(),
                bytes: 8 << 20,
                thin: false
            }
        );
        match next_step("n1", &r, &lvm_with(8 << 20, "-wi-a-----")) {
            ReplicaStep::Status(s) => {
                assert_eq!(s.state, Some(ReplicaState::Ready));
                assert_eq!(
                    s.device_path.as_deref(),
                    Some("/dev/LocalStorage_PoolHDD/v1")
                );
            }
            other => panic!("{other:?}"),
        }
        r.status = Some(ready_status(&r, &lvm_with(8 << 20, "-wi-a-----").lvs[0]));
        assert_eq!(
            next_step("n1", &r, &lvm_with(8 << 20, "-wi-a-----")),
            ReplicaStep::Nothing
        );
    }

    #[test]
    fn a_copy_target_is_not_ready_until_its_copy_is_verified() {
        let mut r = replica();
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        let src = CopySource {
            node: "n0".into(),
            operation: "mig".into(),
            operation_uid: "u1".into(),
            bandwidth_limit_bytes_per_second: None,
            snapshot: None,
        };
        r.spec.copy_from = Some(src.clone());
        let lvm = lvm_with(8 << 20, "-wi-a-----");
        let ReplicaStep::Status(s) = next_step("n1", &r, &lvm) else {
            panic!("status first")
        };
        assert_eq!(s.state, Some(ReplicaState::NotReady));
        assert!(s
            .message
            .as_deref()
            .is_some_and(|m| m.contains("block copy from n0")));
        r.status = Some(*s);
        assert_eq!(next_step("n1", &r, &lvm), ReplicaStep::Copy(Box::new(src)));
        // A verified copy of another (older) operation does not count.
        let mut st = r.status.clone().expect("status");
        st.copy = Some(hwameistor_api::CopyStatus {
            operation_uid: "u0".into(),
            verified: true,
            ..Default::default()
        });
        r.status = Some(st.clone());
        assert!(matches!(next_step("n1", &r, &lvm), ReplicaStep::Copy(_)));
        st.copy.as_mut().expect("copy").operation_uid = "u1".into();
        r.status = Some(st);
        let ReplicaStep::Status(s) = next_step("n1", &r, &lvm) else {
            panic!("Ready once verified")
        };
        assert_eq!((s.state, s.message), (Some(ReplicaState::Ready), None));
    }

    #[test]
    fn grows_and_activates() {
        let mut r = replica();
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        r.spec.required_capacity_bytes = 16 << 20;
        assert!(matches!(
            next_step("n1", &r, &lvm_with(8 << 20, "-wi-a-----")),
            ReplicaStep::EnsureVolume { .. }
        ));
        r.spec.required_capacity_bytes = 8 << 20;
        assert!(matches!(
            next_step("n1", &r, &lvm_with(8 << 20, "-wi-------")),
            ReplicaStep::EnsureVolume { .. }
        ));
    }

    #[test]
    fn delete_path_removes_volume_before_finalizer() {
        let mut r = replica();
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert!(matches!(
            next_step("n1", &r, &lvm_with(8 << 20, "-wi-a-----")),
            ReplicaStep::RemoveVolume { .. }
        ));
        assert_eq!(
            next_step("n1", &r, &LvmState::default()),
            ReplicaStep::RemoveFinalizer
        );
    }

    #[test]
    fn a_vanished_volume_that_held_data_is_never_recreated() {
        let mut r = replica();
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        r.status = Some(ready_status(&r, &lvm_with(8 << 20, "-wi-a-----").lvs[0]));
        let step = next_step("n1", &r, &LvmState::default());
        let ReplicaStep::Status(st) = step else {
            panic!("expected a Failed status, got {step:?}")
        };
        assert_eq!(st.state, Some(ReplicaState::Failed));
        assert!(
            st.message
                .as_deref()
                .unwrap_or_default()
                .contains("not recreated empty"),
            "{st:?}"
        );
        r.status = Some(*st);
        assert_eq!(
            next_step("n1", &r, &LvmState::default()),
            ReplicaStep::Nothing
        );
        // Restored by an administrator: Ready again.
        assert!(matches!(
            next_step("n1", &r, &lvm_with(8 << 20, "-wi-a-----")),
            ReplicaStep::Status(s) if s.state == Some(ReplicaState::Ready)
        ));
    }

    /// A restored thin replica on node n1 and n1's LVM with thin snapshot `snap_s1` (and,
    /// when `made` is given, the replica's volume of that size, cloned from it).
    fn thin_restore(made: Option<i64>) -> (LocalVolumeReplica, LvmState) {
        let mut r = replica();
        r.metadata.finalizers = Some(vec![FINALIZER_REPLICA.into()]);
        r.spec.thin = true;
        r.spec.copy_from = Some(CopySource {
            node: "n1".into(),
            operation: "s1".into(),
            operation_uid: "uid-s1".into(),
            bandwidth_limit_bytes_per_second: None,
            snapshot: Some("s1".into()),
        });
        let thin = |name: &str, size: i64, origin: &str| Lv {
            name: name.into(),
            vg_name: "LocalStorage_PoolHDD".into(),
            size,
            attr: "Vwi-a-tz--".into(),
            path: format!("/dev/LocalStorage_PoolHDD/{name}"),
            pool_lv: Some("thinpool".into()),
            origin: Some(origin.into()),
            ..Default::default()
        };
        let mut lvm = LvmState {
            lvs: vec![thin("snap_s1", 4 << 20, "v0")],
            ..Default::default()
        };
        if let Some(size) = made {
            lvm.lvs.push(thin("v1", size, "snap_s1"));
        }
        (r, lvm)
    }

    #[test]
    fn a_thin_restore_on_the_snapshots_node_is_cloned_by_lvm_until_recorded_filled() {
        let (mut r, lvm) = thin_restore(None);
        let clone = |bytes| ReplicaStep::CloneThin {
            vg: "LocalStorage_PoolHDD".into(),
            lv: "v1".into(),
            snapshot_lv: "snap_s1".into(),
            bytes,
            src: Box::new(r.spec.copy_from.clone().expect("source")),
        };
        assert_eq!(next_step("n1", &r, &lvm), clone(8 << 20));
        // Cloned but not grown yet (a crash between): the same step finishes it.
        let (_, small) = thin_restore(Some(4 << 20));
        assert_eq!(next_step("n1", &r, &small), clone(8 << 20));
        // Made and grown, its status not written yet: the status first (not Ready), then
        // the same step records it filled.
        let (_, made) = thin_restore(Some(8 << 20));
        let step = next_step("n1", &r, &made);
        let ReplicaStep::Status(st) = step else {
            panic!("expected a status, got {step:?}")
        };
        assert_eq!(st.state, Some(ReplicaState::NotReady));
        assert!(st
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("restored from snapshot s1"));
        r.status = Some(*st);
        assert_eq!(next_step("n1", &r, &made), clone(8 << 20));
        // Recorded filled: Ready, and nothing more.
        if let Some(st) = r.status.as_mut() {
            st.copy = Some(hwameistor_api::CopyStatus {
                operation_uid: "uid-s1".into(),
                verified: true,
                lvm_clone: true,
                ..Default::default()
            });
        }
        let step = next_step("n1", &r, &made);
        assert!(
            matches!(&step, ReplicaStep::Status(s) if s.state == Some(ReplicaState::Ready)),
            "{step:?}"
        );
    }

    #[test]
    fn a_restore_lvm_cannot_serve_is_filled_by_the_block_mover() {
        // Another node's snapshot, a thick target, or a snapshot LVM does not have as thin.
        let (mut r, lvm) = thin_restore(None);
        r.spec.copy_from.as_mut().expect("source").node = "n0".into();
        assert!(matches!(
            next_step("n1", &r, &lvm),
            ReplicaStep::EnsureVolume { thin: true, .. }
        ));
        let (mut r, lvm) = thin_restore(None);
        r.spec.thin = false;
        assert!(matches!(
            next_step("n1", &r, &lvm),
            ReplicaStep::EnsureVolume { thin: false, .. }
        ));
        let (r, mut lvm) = thin_restore(None);
        lvm.lvs[0].pool_lv = None;
        assert!(matches!(
            next_step("n1", &r, &lvm),
            ReplicaStep::EnsureVolume { .. }
        ));
        // A volume there not made from the snapshot: copied over, never cloned.
        let (mut r, mut lvm) = thin_restore(Some(8 << 20));
        lvm.lvs[1].origin = None;
        r.status = Some(ready_status(&r, &lvm.lvs[1]));
        assert!(matches!(next_step("n1", &r, &lvm), ReplicaStep::Copy(_)));
        // A clone that vanished after it was made is not made again.
        let (mut r, made) = thin_restore(Some(8 << 20));
        r.status = Some(ready_status(&r, &made.lvs[1]));
        let (_, gone) = thin_restore(None);
        assert!(
            matches!(next_step("n1", &r, &gone), ReplicaStep::Status(s) if s.state == Some(ReplicaState::Failed))
        );
    }
}
