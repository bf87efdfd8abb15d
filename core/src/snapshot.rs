//! LocalVolumeSnapshot decisions: which node takes a volume's snapshot, how much
//! copy-on-write space a thick volume's snapshot gets, and, on the node, the next step
//! toward what the object asks. Pure.
//!
//! A snapshot's logical volume is made once. If it disappears after it was made (removed by
//! hand, its disk lost) the object is marked Failed and nothing is re-taken: a new snapshot
//! would hold the volume's data of another moment under the old snapshot's name, and a
//! restore from it would silently bring back the wrong data.

use crate::lvm::{Lv, LvmState};
use hwameistor_api::quantity::{format_size, parse_size};
use hwameistor_api::{
    LocalVolume, LocalVolumeSnapshot, LocalVolumeSnapshotStatus, SnapshotState, FINALIZER_SNAPSHOT,
};

/// The smallest copy-on-write space a snapshot gets (one extent of the default size).
pub const MIN_COW_BYTES: i64 = 4 << 20;

/// The logical volume name of snapshot object `object`. The underscore keeps it apart from
/// every volume's logical volume (volume object names never carry one).
pub fn lv_name(object: &str) -> String {
    format!("snap_{object}")
}

/// The copy-on-write space that holds every block of a volume of `source` bytes and the
/// snapshot's own bookkeeping (an exception record per copied chunk, about 1/256 of the
/// data, and a header): a snapshot this large never overflows. A snapshot exactly the
/// volume's size does, once all of it changed (seen on real LVM).
pub fn full_cow_bytes(source: i64) -> i64 {
    source
        .saturating_add(source / 128)
        .saturating_add(MIN_COW_BYTES)
}

/// The copy-on-write space for a snapshot of a thick volume of `source` bytes, from the
/// VolumeSnapshotClass's `cowSize` (`None`: [`full_cow_bytes`], so it never overflows): a
/// percentage of that (`"25%"`) or a size (`"2Gi"`), at least [`MIN_COW_BYTES`] and at most
/// [`full_cow_bytes`].
pub fn cow_bytes(source: i64, param: Option<&str>) -> Result<i64, String> {
    let full = full_cow_bytes(source);
    let bytes = match param.map(str::trim) {
        None => full,
        Some(p) => match p.strip_suffix('%') {
            Some(pct) => {
                let pct: f64 = pct
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v > 0.0 && *v <= 100.0)
                    .ok_or_else(|| {
                        format!("cowSize {p:?} is not a percentage from 1% to 100% of the volume")
                    })?;
                (full as f64 * pct / 100.0).ceil() as i64
            }
            None => parse_size(p)
                .map_err(|e| format!("cowSize {p:?}: {e}"))
                .and_then(|b| {
                    (b > 0)
                        .then_some(b)
                        .ok_or_else(|| format!("cowSize {p:?} must be more than 0"))
                })?,
        },
    };
    Ok(bytes.clamp(MIN_COW_BYTES, full))
}

/// The node whose replica a snapshot of `v` is taken from: the volume's one replica, or an
/// HA volume's primary (the replica that serves its writes: the snapshot holds what the
/// application last wrote); or why no node can take one now.
pub fn source_node(v: &LocalVolume) -> Result<String, String> {
    let name = v.metadata.name.clone().unwrap_or_default();
    let Some(config) = v.spec.config.as_ref() else {
        return Err(format!("volume {name} is not placed yet"));
    };
    let active: Vec<_> = config
        .replicas
        .iter()
        .filter(|r| !r.leaving && !r.outdated && r.copy_from.is_none())
        .collect();
    let chosen = active
        .iter()
        .find(|r| r.primary)
        .or_else(|| active.first())
        .ok_or_else(|| {
            format!("volume {name} has no replica whose data is current (moving or outdated)")
        })?;
    Ok(chosen.hostname.clone())
}

/// What the agent of the snapshot's node does next.
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotStep {
    /// Not this node's, or nothing to change.
    Nothing,
    AddFinalizer,
    /// Take the snapshot: `lv` of `origin` in `vg`; copy-on-write with `cow` bytes, or thin.
    Create {
        vg: String,
        origin: String,
        lv: String,
        cow: Option<i64>,
    },
    Remove {
        vg: String,
        lv: String,
    },
    RemoveFinalizer,
    /// Publish what the snapshot looks like now.
    Status(Box<LocalVolumeSnapshotStatus>),
}

fn has_finalizer(s: &LocalVolumeSnapshot) -> bool {
    s.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER_SNAPSHOT))
}

/// A status saying the snapshot failed for `why`.
fn failed(s: &LocalVolumeSnapshot, why: String) -> LocalVolumeSnapshotStatus {
    let old = s.status.clone().unwrap_or_default();
    LocalVolumeSnapshotStatus {
        state: Some(SnapshotState::Failed),
        ready_to_use: false,
        message: Some(why),
        observed_generation: s.metadata.generation,
        ..old
    }
}

/// The status of snapshot `s` whose logical volume is `lv`, taken at `now` if its status
/// does not say when yet.
pub fn observed_status(s: &LocalVolumeSnapshot, lv: &Lv, now: &str) -> LocalVolumeSnapshotStatus {
    let old = s.status.clone().unwrap_or_default();
    if lv.snapshot_invalid() {
        let cow = s.spec.cow_capacity_bytes.unwrap_or(lv.size);
        return LocalVolumeSnapshotStatus {
            used_percent: Some(100),
            device_path: Some(lv.path.clone()),
            ..failed(
                s,
                format!(
                    "more of volume {} changed than its {} of copy-on-write space: LVM invalidated the snapshot and its data is lost; delete it, and give later snapshots more room (VolumeSnapshotClass parameter cowSize)",
                    s.spec.source_volume,
                    format_size(cow)
                ),
            )
        };
    }
    LocalVolumeSnapshotStatus {
        state: Some(SnapshotState::Ready),
        ready_to_use: true,
        creation_time: old.creation_time.clone().or_else(|| Some(now.to_string())),
        device_path: Some(lv.path.clone()),
        used_percent: lv.cow_used_bp.map(|bp| (bp / 100).clamp(0, 100)),
        message: None,
        observed_generation: s.metadata.generation,
        conditions: old.conditions,
    }
}

/// Whether the snapshot's logical volume was made at some point (its status says so).
fn was_made(s: &LocalVolumeSnapshot) -> bool {
    s.status
        .as_ref()
        .is_some_and(|st| st.creation_time.is_some() || st.device_path.is_some())
}

fn differs(s: &LocalVolumeSnapshot, want: LocalVolumeSnapshotStatus) -> SnapshotStep {
    if s.status.as_ref() == Some(&want) {
        SnapshotStep::Nothing
    } else {
        SnapshotStep::Status(Box::new(want))
    }
}

/// The next step on node `node` for snapshot `s`, with LVM as `lvm` shows it, at `now`
/// (RFC 3339).
pub fn next_step(node: &str, s: &LocalVolumeSnapshot, lvm: &LvmState, now: &str) -> SnapshotStep {
    if s.spec.node_name != node {
        return SnapshotStep::Nothing;
    }
    let vg = s.spec.pool_name.clone();
    let object = s.metadata.name.clone().unwrap_or_default();
    let name = lv_name(&object);
    let origin = s.spec.source_volume.clone();
    let lv = lvm.lv(&vg, &name);
    if s.metadata.deletion_timestamp.is_some() {
        return match (lv, has_finalizer(s)) {
            (Some(_), true) => SnapshotStep::Remove { vg, lv: name },
            (None, true) => SnapshotStep::RemoveFinalizer,
            (_, false) => SnapshotStep::Nothing,
        };
    }
    if !has_finalizer(s) {
        return SnapshotStep::AddFinalizer;
    }
    if let Some(lv) = lv {
        if lv.origin.as_deref() != Some(origin.as_str()) {
            return differs(
                s,
                failed(
                    s,
                    format!(
                        "logical volume {vg}/{name} exists and is not a snapshot of {origin}; it is left alone"
                    ),
                ),
            );
        }
        return differs(s, observed_status(s, lv, now));
    }
    if was_made(s) {
        return differs(
            s,
            failed(
                s,
                format!(
                    "logical volume {vg}/{name} is missing from {node}; it held this snapshot's data, so it is not taken again (that would be the volume's data of another moment): delete the snapshot"
                ),
            ),
        );
    }
    let Some(source) = lvm.lv(&vg, &origin) else {
        return differs(
            s,
            failed(
                s,
                format!("volume {origin} has no logical volume in {vg} on {node}"),
            ),
        );
    };
    let thin = source.pool_lv.is_some();
    match (thin, s.spec.cow_capacity_bytes) {
        (true, Some(_)) | (false, None) => differs(
            s,
            failed(
                s,
                format!(
                    "volume {origin} is {} on {node} but the snapshot asks for {}",
                    if thin { "thin" } else { "thick" },
                    if thin {
                        "copy-on-write space"
                    } else {
                        "a thin snapshot"
                    }
                ),
            ),
        ),
        (_, cow) => {
            let creating = LocalVolumeSnapshotStatus {
                state: Some(SnapshotState::Creating),
                observed_generation: s.metadata.generation,
                ..Default::default()
            };
            if s.status.as_ref().and_then(|st| st.state) != Some(SnapshotState::Creating) {
                // Said before it is taken: a Creating snapshot that never turns Ready shows
                // where it stopped.
                return SnapshotStep::Status(Box::new(creating));
            }
            SnapshotStep::Create {
                vg,
                origin,
                lv: name,
                cow,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::Vg;
    use hwameistor_api::{
        LocalVolumeSnapshotSpec, LocalVolumeSpec, ReplicaAssignment, VolumeConfig,
    };

    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;
    const VG: &str = "LocalStorage_PoolHDD";
    const NOW: &str = "2026-11-26T17:00:00Z";

    fn snap(cow: Option<i64>) -> LocalVolumeSnapshot {
        let mut s = LocalVolumeSnapshot::new(
            "s1",
            LocalVolumeSnapshotSpec {
                source_volume: "data".into(),
                node_name: "n1".into(),
                pool_name: VG.into(),
                source_capacity_bytes: GI,
                cow_capacity_bytes: cow,
            },
        );
        s.metadata.finalizers = Some(vec![FINALIZER_SNAPSHOT.into()]);
        s
    }

    fn lv(name: &str, size: i64, attr: &str) -> Lv {
        Lv {
            name: name.into(),
            vg_name: VG.into(),
            size,
            attr: attr.into(),
            path: format!("/dev/{VG}/{name}"),
            ..Default::default()
        }
    }

    fn lvm(lvs: Vec<Lv>) -> LvmState {
        LvmState {
            vgs: vec![Vg {
                name: VG.into(),
                size: 10 * GI,
                free: 5 * GI,
                extent_size: 4 * MI,
                lv_count: lvs.len() as i64,
                pv_count: 1,
            }],
            lvs,
            ..Default::default()
        }
    }

    fn with_status(
        mut s: LocalVolumeSnapshot,
        st: LocalVolumeSnapshotStatus,
    ) -> LocalVolumeSnapshot {
        s.status = Some(st);
        s
    }

    #[test]
    fn a_thick_volumes_snapshot_is_said_creating_then_taken_with_its_space_then_ready() {
        let s = snap(Some(256 * MI));
        let state = lvm(vec![lv("data", GI, "-wi-ao----")]);
        let SnapshotStep::Status(st) = next_step("n1", &s, &state, NOW) else {
            panic!("Creating first");
        };
        assert_eq!(st.state, Some(SnapshotState::Creating));
        let s = with_status(s, *st);
        assert_eq!(
            next_step("n1", &s, &state, NOW),
            SnapshotStep::Create {
                vg: VG.into(),
                origin: "data".into(),
                lv: "snap_s1".into(),
                cow: Some(256 * MI)
            }
        );
        // Taken (a crash right after is the same state): Ready, with its time and use.
        let taken = lvm(vec![
            lv("data", GI, "owi-ao----"),
            Lv {
                origin: Some("data".into()),
                cow_used_bp: Some(1234),
                ..lv("snap_s1", 256 * MI, "sri-a-s---")
            },
        ]);
        let SnapshotStep::Status(st) = next_step("n1", &s, &taken, NOW) else {
            panic!("Ready");
        };
        assert_eq!(
            (
                st.state,
                st.ready_to_use,
                st.used_percent,
                st.creation_time.as_deref()
            ),
            (Some(SnapshotState::Ready), true, Some(12), Some(NOW))
        );
        let s = with_status(s, *st);
        // Later: its time stays, nothing to do.
        assert_eq!(
            next_step("n1", &s, &taken, "2026-11-27T00:00:00Z"),
            SnapshotStep::Nothing
        );
        assert_eq!(next_step("n2", &s, &taken, NOW), SnapshotStep::Nothing);
    }

    #[test]
    fn an_overflowed_snapshot_fails_and_a_vanished_one_is_never_retaken() {
        let ready = with_status(
            snap(Some(8 * MI)),
            LocalVolumeSnapshotStatus {
                state: Some(SnapshotState::Ready),
                ready_to_use: true,
                creation_time: Some(NOW.into()),
                device_path: Some(format!("/dev/{VG}/snap_s1")),
                used_percent: Some(90),
                ..Default::default()
            },
        );
        let invalid = lvm(vec![
            lv("data", GI, "owi-ao----"),
            Lv {
                origin: Some("data".into()),
                cow_used_bp: Some(10000),
                ..lv("snap_s1", 8 * MI, "sri-I-s---")
            },
        ]);
        let SnapshotStep::Status(st) = next_step("n1", &ready, &invalid, NOW) else {
            panic!("Failed");
        };
        assert_eq!(
            (st.state, st.ready_to_use),
            (Some(SnapshotState::Failed), false)
        );
        assert!(
            st.message
                .as_deref()
                .is_some_and(|m| m.contains("8Mi of copy-on-write space") && m.contains("cowSize")),
            "{st:?}"
        );
        // Gone from the node after it was made: Failed, never Create.
        let gone = lvm(vec![lv("data", GI, "-wi-ao----")]);
        let SnapshotStep::Status(st) = next_step("n1", &ready, &gone, NOW) else {
            panic!("Failed");
        };
        assert!(st
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not taken again")));
        let failed = with_status(ready.clone(), *st);
        assert_eq!(next_step("n1", &failed, &gone, NOW), SnapshotStep::Nothing);
    }

    #[test]
    fn wrong_kinds_missing_volumes_and_name_clashes_fail_with_the_reason() {
        let creating = |cow| {
            with_status(
                snap(cow),
                LocalVolumeSnapshotStatus {
                    state: Some(SnapshotState::Creating),
                    ..Default::default()
                },
            )
        };
        let thin = lvm(vec![Lv {
            pool_lv: Some("hwameistor-thin".into()),
            ..lv("data", GI, "Vwi-a-tz--")
        }]);
        // A thin volume's snapshot is thin.
        assert_eq!(
            next_step("n1", &creating(None), &thin, NOW),
            SnapshotStep::Create {
                vg: VG.into(),
                origin: "data".into(),
                lv: "snap_s1".into(),
                cow: None
            }
        );
        let msg = |step: SnapshotStep| match step {
            SnapshotStep::Status(st) => st.message.unwrap_or_default(),
            other => panic!("{other:?}"),
        };
        assert!(msg(next_step("n1", &creating(Some(8 * MI)), &thin, NOW)).contains("is thin"));
        let thick = lvm(vec![lv("data", GI, "-wi-a-----")]);
        assert!(msg(next_step("n1", &creating(None), &thick, NOW)).contains("is thick"));
        assert!(msg(next_step("n1", &creating(None), &lvm(vec![]), NOW))
            .contains("volume data has no logical volume"));
        let clash = lvm(vec![
            lv("data", GI, "-wi-a-----"),
            lv("snap_s1", GI, "-wi-a-----"),
        ]);
        assert!(msg(next_step("n1", &creating(Some(GI)), &clash, NOW))
            .contains("is not a snapshot of data"));
    }

    #[test]
    fn the_finalizer_comes_first_and_goes_last() {
        let mut s = snap(Some(8 * MI));
        s.metadata.finalizers = None;
        let state = lvm(vec![lv("data", GI, "-wi-a-----")]);
        assert_eq!(next_step("n1", &s, &state, NOW), SnapshotStep::AddFinalizer);
        let mut deleting = snap(Some(8 * MI));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let taken = lvm(vec![
            lv("data", GI, "owi-a-----"),
            Lv {
                origin: Some("data".into()),
                ..lv("snap_s1", 8 * MI, "sri-a-s---")
            },
        ]);
        assert_eq!(
            next_step("n1", &deleting, &taken, NOW),
            SnapshotStep::Remove {
                vg: VG.into(),
                lv: "snap_s1".into()
            }
        );
        assert_eq!(
            next_step("n1", &deleting, &state, NOW),
            SnapshotStep::RemoveFinalizer
        );
    }

    #[test]
    fn cow_space_is_a_share_or_a_size_within_what_never_overflows() {
        let full = GI + 8 * MI + 4 * MI;
        assert_eq!(full_cow_bytes(GI), full);
        assert_eq!(cow_bytes(GI, None), Ok(full));
        assert_eq!(cow_bytes(GI, Some("100%")), Ok(full));
        assert_eq!(cow_bytes(GI, Some("25%")), Ok(full / 4));
        assert_eq!(cow_bytes(GI, Some("256Mi")), Ok(256 * MI));
        assert_eq!(
            cow_bytes(GI, Some("4Gi")),
            Ok(full),
            "never more than can be used"
        );
        assert_eq!(
            cow_bytes(GI, Some("0.1%")),
            Ok(MIN_COW_BYTES),
            "at least one extent"
        );
        for bad in ["0%", "150%", "x%", "lots", "0"] {
            assert!(cow_bytes(GI, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ha_volume_is_snapshotted_on_its_primary() {
        let replica = |host: &str, primary: bool, outdated: bool| ReplicaAssignment {
            hostname: host.into(),
            primary,
            outdated,
            ..Default::default()
        };
        let mut v = LocalVolume::new(
            "data",
            LocalVolumeSpec {
                replica_number: 2,
                ..LocalVolumeSpec::single(VG, GI)
            },
        );
        assert!(source_node(&v).is_err(), "not placed");
        v.spec.config = Some(VolumeConfig {
            replicas: vec![replica("a", false, false), replica("b", true, false)],
            ..Default::default()
        });
        assert_eq!(source_node(&v), Ok("b".into()));
        // No primary yet: the first current replica; an outdated one never.
        v.spec.config = Some(VolumeConfig {
            replicas: vec![replica("a", false, true), replica("b", false, false)],
            ..Default::default()
        });
        assert_eq!(source_node(&v), Ok("b".into()));
        v.spec.config = Some(VolumeConfig {
            replicas: vec![replica("a", false, true)],
            ..Default::default()
        });
        assert!(source_node(&v)
            .unwrap_err()
            .contains("no replica whose data is current"));
    }
}
