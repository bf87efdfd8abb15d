//! Thin provisioning decisions: one thin pool per volume group ([`THIN_POOL_LV`]), sized by
//! what is provisioned in it (the sum of its thin volumes' sizes is at most
//! `overprovision_ratio` times its data size) and grown before what is written fills it;
//! and the operations that bring a thin volume to what a replica asks. Pure.
//!
//! The failure users of thin pools fear is a full pool: every thin volume in it stops
//! taking writes. So the pool is grown from the group's free space at `grow_at_percent`
//! of data or metadata usage, a new volume that would push the provisioned sum past the
//! ratio is refused (the pool grows with provisioning while the group has room), and
//! usage past `warn_at_percent` is reported.

use crate::lvm::{round_up_to_extent, validate_lv_name, InvalidLvName, LvmState};
use hwameistor_api::quantity::format_size;
use thiserror::Error;

/// The thin pool's logical volume in each volume group.
pub const THIN_POOL_LV: &str = "hwameistor-thin";

/// How thin pools are sized and watched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThinPolicy {
    /// The sum of a pool's thin volume sizes is at most this many times its data size.
    pub overprovision_ratio: f64,
    /// A new pool's data size is at least this (the group allowing), so the first volumes
    /// do not grow it one by one.
    pub min_data_bytes: i64,
    /// Metadata is the data size divided by this (at least [`MIN_METADATA_BYTES`]).
    pub metadata_divisor: i64,
    /// The pool grows once its data or metadata use reaches this percent...
    pub grow_at_percent: f64,
    /// ...by this percent of its size (at least).
    pub grow_by_percent: f64,
    /// Use from this percent is warned about.
    pub warn_at_percent: f64,
}

/// The smallest metadata a pool gets (LVM's own minimum is 2 MiB).
pub const MIN_METADATA_BYTES: i64 = 8 << 20;

impl Default for ThinPolicy {
    fn default() -> Self {
        ThinPolicy {
            overprovision_ratio: 2.0,
            min_data_bytes: 1 << 30,
            metadata_divisor: 1024,
            grow_at_percent: 70.0,
            grow_by_percent: 25.0,
            warn_at_percent: 80.0,
        }
    }
}

impl ThinPolicy {
    /// The over-provisioning ratio in whole percent, as a LocalStorageNode reports it
    /// (never below 100: a pool is not under-provisioned by rule).
    pub fn overprovision_percent(&self) -> i64 {
        (self.overprovision_ratio * 100.0).round().max(100.0) as i64
    }
}

/// A thin pool as LVM reports it, with what is provisioned in it.
#[derive(Clone, Debug, PartialEq)]
pub struct ThinPoolView {
    pub vg: String,
    pub data_bytes: i64,
    pub metadata_bytes: i64,
    /// Percent of data and metadata in use (0 when LVM did not say).
    pub data_percent: f64,
    pub metadata_percent: f64,
    /// The sum of its thin volumes' sizes.
    pub provisioned_bytes: i64,
    pub volumes: i64,
}

impl ThinPoolView {
    /// Provisioned bytes per data byte.
    pub fn ratio(&self) -> f64 {
        if self.data_bytes > 0 {
            self.provisioned_bytes as f64 / self.data_bytes as f64
        } else {
            0.0
        }
    }
}

/// The thin pool of `vg`, if it has one. Its thin snapshots are not counted as provisioned:
/// they promise no room of their own (they share the blocks of their volume, and take pool
/// space only as the two diverge, which the pool's growth with its use covers); counting
/// them would let a few snapshots refuse new volumes, which placement (counting volumes
/// only) would not foresee.
pub fn thin_pool(state: &LvmState, vg: &str) -> Option<ThinPoolView> {
    let pool = state.lv(vg, THIN_POOL_LV).filter(|l| l.is_thin_pool())?;
    let thins = state.lvs.iter().filter(|l| {
        l.vg_name == vg && l.pool_lv.as_deref() == Some(THIN_POOL_LV) && l.origin.is_none()
    });
    let usage = pool.thin.unwrap_or_default();
    Some(ThinPoolView {
        vg: vg.to_string(),
        data_bytes: pool.size,
        metadata_bytes: usage.metadata_bytes,
        data_percent: usage.data_bp as f64 / 100.0,
        metadata_percent: usage.metadata_bp as f64 / 100.0,
        provisioned_bytes: thins.clone().map(|l| l.size).sum(),
        volumes: thins.count() as i64,
    })
}

/// The metadata a pool of `data` bytes gets under `policy`, in whole extents.
pub fn metadata_for(data: i64, policy: &ThinPolicy, extent: i64) -> i64 {
    round_up_to_extent(
        (data / policy.metadata_divisor.max(1)).max(MIN_METADATA_BYTES),
        extent,
    )
}

/// One LVM operation for a thin volume or its pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThinOp {
    /// Create the group's pool (LVM keeps a spare of the metadata beside it).
    CreatePool {
        data_bytes: i64,
        metadata_bytes: i64,
    },
    /// Grow the pool's data and metadata to these sizes.
    ExtendPool {
        data_bytes: i64,
        metadata_bytes: i64,
    },
    /// Create the thin volume with this virtual size.
    CreateThin { bytes: i64 },
    /// Grow the thin volume to this virtual size.
    ExtendThin { bytes: i64 },
    /// Activate the thin volume.
    Activate,
    /// Create the thin volume as a writable thin snapshot of thin volume `source` (its
    /// size; blocks shared until written).
    CloneFrom { source: String },
}

/// Why a thin volume cannot be brought to what is asked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ThinPlanError {
    #[error(transparent)]
    InvalidName(#[from] InvalidLvName),
    #[error("volume group {0} does not exist on this node")]
    NoSuchVg(String),
    #[error("logical volume {vg}/{lv} exists and is not a thin volume of {vg}/{THIN_POOL_LV}")]
    NotThin { vg: String, lv: String },
    #[error("{vg}/{lv} is not a thin volume of {vg}/{THIN_POOL_LV} on this node: nothing to restore from")]
    NoThinSource { vg: String, lv: String },
    #[error(
        "thin pool {vg}/{THIN_POOL_LV} cannot take {} more: {} are provisioned in it, at most {ratio} times its data may be, and the group has {} free to grow it (it needs {}); free space in the group (a disk claimed into it, a thick volume removed) or delete thin volumes",
        format_size(*want), format_size(*provisioned), format_size(*free), format_size(*need)
    )]
    Overprovisioned {
        vg: String,
        want: i64,
        provisioned: i64,
        ratio: String,
        free: i64,
        need: i64,
    },
}

/// The operations, in order, that make `vg/name` an active thin volume of at least
/// `bytes` (whole extents) in the group's pool, creating or growing the pool as the
/// provisioned sum requires; none when it already is one. A larger volume is left alone.
pub fn plan_ensure_thin_lv(
    state: &LvmState,
    vg: &str,
    name: &str,
    bytes: i64,
    policy: &ThinPolicy,
) -> Result<Vec<ThinOp>, ThinPlanError> {
    validate_lv_name(name)?;
    let group = state
        .vg(vg)
        .ok_or_else(|| ThinPlanError::NoSuchVg(vg.to_string()))?;
    let extent = group.extent_size;
    let want = round_up_to_extent(bytes, extent);
    let existing = state.lv(vg, name);
    if let Some(lv) = existing {
        if lv.pool_lv.as_deref() != Some(THIN_POOL_LV) {
            return Err(ThinPlanError::NotThin {
                vg: vg.to_string(),
                lv: name.to_string(),
            });
        }
    }
    let have = existing.map(|l| l.size).unwrap_or(0);
    let grow = (want - have).max(0);
    let mut ops = Vec::new();
    if grow > 0 {
        let pool = thin_pool(state, vg);
        let provisioned = pool.as_ref().map(|p| p.provisioned_bytes).unwrap_or(0);
        let ratio = policy.overprovision_ratio.max(1.0);
        // The data size that lets the provisioned sum, this volume's growth included, stay
        // within the ratio.
        let needed =
            round_up_to_extent(((provisioned + grow) as f64 / ratio).ceil() as i64, extent);
        let refuse = |need: i64| ThinPlanError::Overprovisioned {
            vg: vg.to_string(),
            want: grow,
            provisioned,
            ratio: format!("{ratio}"),
            free: group.free,
            need,
        };
        match pool {
            None => {
                // At least the policy's minimum when the group allows it, else what is needed.
                let floor = round_up_to_extent(policy.min_data_bytes, extent);
                let cost = |data: i64| data + 2 * metadata_for(data, policy, extent);
                let data = if cost(needed.max(floor)) <= group.free {
                    needed.max(floor)
                } else if cost(needed) <= group.free {
                    needed
                } else {
                    return Err(refuse(cost(needed)));
                };
                ops.push(ThinOp::CreatePool {
                    data_bytes: data,
                    metadata_bytes: metadata_for(data, policy, extent),
                });
            }
            Some(p) if p.data_bytes < needed => {
                let meta = metadata_for(needed, policy, extent).max(p.metadata_bytes);
                // The metadata spare grows with the metadata.
                let cost = (needed - p.data_bytes) + 2 * (meta - p.metadata_bytes);
                if cost > group.free {
                    return Err(refuse(cost));
                }
                ops.push(ThinOp::ExtendPool {
                    data_bytes: needed,
                    metadata_bytes: meta,
                });
            }
            Some(_) => {}
        }
        ops.push(if existing.is_some() {
            ThinOp::ExtendThin { bytes: want }
        } else {
            ThinOp::CreateThin { bytes: want }
        });
    }
    if existing.is_some_and(|l| !l.active()) {
        ops.push(ThinOp::Activate);
    }
    Ok(ops)
}

/// The operations, in order, that make `vg/name` an active thin volume of at least `bytes`
/// holding thin volume `source`'s data (a restore from a thin snapshot): a clone of it,
/// grown when asked larger. The pool's ratio rule counts the whole new volume, as for any
/// thin volume. An existing `name` is only grown and activated.
pub fn plan_ensure_thin_clone(
    state: &LvmState,
    vg: &str,
    name: &str,
    source: &str,
    bytes: i64,
    policy: &ThinPolicy,
) -> Result<Vec<ThinOp>, ThinPlanError> {
    let mut ops = plan_ensure_thin_lv(state, vg, name, bytes, policy)?;
    if state.lv(vg, name).is_none() {
        let src = state
            .lv(vg, source)
            .filter(|l| l.pool_lv.as_deref() == Some(THIN_POOL_LV))
            .ok_or_else(|| ThinPlanError::NoThinSource {
                vg: vg.to_string(),
                lv: source.to_string(),
            })?;
        let src_size = src.size;
        ops = ops
            .into_iter()
            .flat_map(|op| match op {
                ThinOp::CreateThin { bytes } if bytes > src_size => vec![
                    ThinOp::CloneFrom {
                        source: source.to_string(),
                    },
                    ThinOp::ExtendThin { bytes },
                ],
                ThinOp::CreateThin { .. } => vec![ThinOp::CloneFrom {
                    source: source.to_string(),
                }],
                other => vec![other],
            })
            .collect();
    }
    Ok(ops)
}

/// The growth `vg`'s pool needs now because of what is written: when its data or metadata
/// use reached `grow_at_percent`, by `grow_by_percent` (as far as the group's free space
/// allows); `None` when it needs none or the group has no room (then it is warned about).
pub fn plan_grow_pool(state: &LvmState, vg: &str, policy: &ThinPolicy) -> Option<ThinOp> {
    let group = state.vg(vg)?;
    let p = thin_pool(state, vg)?;
    let extent = group.extent_size;
    let data_full = p.data_percent >= policy.grow_at_percent;
    let meta_full = p.metadata_percent >= policy.grow_at_percent;
    if !data_full && !meta_full {
        return None;
    }
    let step = |size: i64| {
        round_up_to_extent(
            (size as f64 * (1.0 + policy.grow_by_percent / 100.0)).ceil() as i64,
            extent,
        )
    };
    let mut data = if data_full {
        step(p.data_bytes)
    } else {
        p.data_bytes
    };
    let mut meta = metadata_for(data, policy, extent).max(p.metadata_bytes);
    if meta_full {
        meta = meta.max(step(p.metadata_bytes));
    }
    // As far as the group allows, metadata first (a full metadata device is the worse
    // failure), then data with what is left (the spare doubles the metadata's cost).
    let floor = |b: i64| (b / extent) * extent;
    let meta_cost = 2 * (meta - p.metadata_bytes);
    if meta_cost > group.free {
        meta = p.metadata_bytes + floor(group.free / 2);
        data = p.data_bytes;
    } else {
        data = data.min(p.data_bytes + floor(group.free - meta_cost));
    }
    (data > p.data_bytes || meta > p.metadata_bytes).then_some(ThinOp::ExtendPool {
        data_bytes: data,
        metadata_bytes: meta,
    })
}

/// What is worth a warning about `p` under `policy`: data or metadata use at or past
/// `warn_at_percent` (a full pool stops every thin volume in it).
pub fn pool_warnings(p: &ThinPoolView, policy: &ThinPolicy) -> Vec<String> {
    usage_warnings(
        &p.vg,
        p.data_percent,
        p.metadata_percent,
        policy.warn_at_percent,
    )
}

/// The warnings of [`pool_warnings`] from the use alone (as a LocalStorageNode reports it).
pub fn usage_warnings(
    vg: &str,
    data_percent: f64,
    metadata_percent: f64,
    warn_at_percent: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    for (what, percent) in [("data", data_percent), ("metadata", metadata_percent)] {
        if percent >= warn_at_percent {
            out.push(format!(
                "thin pool {vg}/{THIN_POOL_LV} {what} is {percent:.1}% used; when it is full every thin volume in it stops taking writes"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::{Lv, ThinUsage, Vg};

    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;
    const VG: &str = "LocalStorage_PoolHDD";

    fn group(free: i64) -> Vg {
        Vg {
            name: VG.into(),
            size: 100 * GI,
            free,
            extent_size: 4 * MI,
            lv_count: 0,
            pv_count: 1,
        }
    }

    fn pool(data: i64, meta: i64, data_bp: i64, meta_bp: i64) -> Lv {
        Lv {
            name: THIN_POOL_LV.into(),
            vg_name: VG.into(),
            size: data,
            attr: "twi-aotz--".into(),
            path: String::new(),
            devices: vec![],
            pool_lv: None,
            thin: Some(ThinUsage {
                data_bp,
                metadata_bp: meta_bp,
                metadata_bytes: meta,
            }),
            cow_used_bp: None,
            origin: None,
        }
    }

    fn thin(name: &str, size: i64, attr: &str) -> Lv {
        Lv {
            name: name.into(),
            vg_name: VG.into(),
            size,
            attr: attr.into(),
            path: format!("/dev/{VG}/{name}"),
            devices: vec![],
            pool_lv: Some(THIN_POOL_LV.into()),
            thin: Some(ThinUsage::default()),
            cow_used_bp: None,
            origin: None,
        }
    }

    fn state(free: i64, lvs: Vec<Lv>) -> LvmState {
        LvmState {
            vgs: vec![group(free)],
            lvs,
            ..Default::default()
        }
    }

    #[test]
    fn a_thin_restore_clones_the_snapshot_grows_it_when_asked_larger_and_counts_it_provisioned() {
        let p = ThinPolicy::default();
        let lvs = vec![
            pool(GI, 8 * MI, 1000, 100),
            thin("v1", 512 * MI, "Vwi-a-tz--"),
            Lv {
                origin: Some("v1".into()),
                ..thin("snap_s1", 512 * MI, "Vri-a-tz--")
            },
        ];
        let s = state(50 * GI, lvs.clone());
        let clone = ThinOp::CloneFrom {
            source: "snap_s1".into(),
        };
        // Same size: one clone. Larger: the clone, then grown.
        assert_eq!(
            plan_ensure_thin_clone(&s, VG, "v2", "snap_s1", 512 * MI, &p),
            Ok(vec![clone.clone()])
        );
        assert_eq!(
            plan_ensure_thin_clone(&s, VG, "v2", "snap_s1", 600 * MI, &p),
            Ok(vec![clone.clone(), ThinOp::ExtendThin { bytes: 600 * MI }])
        );
        // 512Mi provisioned (the snapshot is not counted) + 2Gi more needs 1280Mi of data
        // at a ratio of 2: the pool grows first.
        let got = plan_ensure_thin_clone(&s, VG, "v2", "snap_s1", 2 * GI, &p).unwrap();
        assert!(
            matches!(got[0], ThinOp::ExtendPool { data_bytes, .. } if data_bytes == 1280 * MI),
            "{got:?}"
        );
        assert_eq!(
            got[1..],
            [clone.clone(), ThinOp::ExtendThin { bytes: 2 * GI }]
        );
        // Made already, smaller (a crash before it was grown): only grown.
        let mut made = lvs.clone();
        made.push(Lv {
            origin: Some("snap_s1".into()),
            ..thin("v2", 512 * MI, "Vwi-a-tz--")
        });
        assert_eq!(
            plan_ensure_thin_clone(&state(50 * GI, made), VG, "v2", "snap_s1", 600 * MI, &p),
            Ok(vec![ThinOp::ExtendThin { bytes: 600 * MI }])
        );
        // No such thin snapshot: refused, saying so.
        let e = plan_ensure_thin_clone(&s, VG, "v2", "snap_nope", 512 * MI, &p).unwrap_err();
        assert!(e.to_string().contains("nothing to restore from"), "{e}");
    }

    #[test]
    fn the_first_thin_volume_makes_the_pool_of_at_least_the_minimum() {
        let p = ThinPolicy::default();
        let s = state(50 * GI, vec![]);
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "v1", 5 * MI, &p),
            Ok(vec![
                ThinOp::CreatePool {
                    data_bytes: GI,
                    // 1 GiB / 1024 is below the floor of 8 MiB.
                    metadata_bytes: 8 * MI
                },
                ThinOp::CreateThin { bytes: 8 * MI }
            ])
        );
        // A volume larger than the minimum times the ratio: the pool holds it at the ratio.
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "v1", 10 * GI, &p).unwrap()[0],
            ThinOp::CreatePool {
                data_bytes: 5 * GI,
                metadata_bytes: 8 * MI
            }
        );
        // A group too small for the minimum: what the volume needs.
        let small = state(600 * MI, vec![]);
        assert_eq!(
            plan_ensure_thin_lv(&small, VG, "v1", 800 * MI, &p).unwrap()[0],
            ThinOp::CreatePool {
                data_bytes: 400 * MI,
                metadata_bytes: 8 * MI
            }
        );
        // Too small for that too: refused, saying why.
        let e = plan_ensure_thin_lv(&state(100 * MI, vec![]), VG, "v1", 800 * MI, &p).unwrap_err();
        assert!(
            e.to_string()
                .contains("the group has 100Mi free to grow it (it needs 416Mi)"),
            "{e}"
        );
        assert!(matches!(
            plan_ensure_thin_lv(&s, "nope", "v1", GI, &p),
            Err(ThinPlanError::NoSuchVg(_))
        ));
    }

    #[test]
    fn the_pool_grows_with_what_is_provisioned_and_refuses_past_the_group() {
        let p = ThinPolicy::default();
        // A 1 GiB pool with 1.5 GiB provisioned: 0.5 GiB more fits the ratio of 2.
        let lvs = vec![pool(GI, 8 * MI, 0, 0), thin("a", 3 * GI / 2, "Vwi-a-tz--")];
        let s = state(10 * GI, lvs.clone());
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "b", GI / 2, &p),
            Ok(vec![ThinOp::CreateThin { bytes: GI / 2 }])
        );
        // 1.5 + 1.5 = 3 GiB provisioned needs 1.5 GiB of data.
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "b", 3 * GI / 2, &p),
            Ok(vec![
                ThinOp::ExtendPool {
                    data_bytes: 3 * GI / 2,
                    metadata_bytes: 8 * MI
                },
                ThinOp::CreateThin { bytes: 3 * GI / 2 }
            ])
        );
        // The group cannot give the pool what 40 GiB more needs.
        let e = plan_ensure_thin_lv(&s, VG, "b", 40 * GI, &p).unwrap_err();
        assert!(matches!(e, ThinPlanError::Overprovisioned { .. }), "{e}");
        // Growing a thin volume counts only its growth; inactive ones are activated.
        let s = state(
            10 * GI,
            vec![pool(GI, 8 * MI, 0, 0), thin("a", GI, "Vwi---tz--")],
        );
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "a", 2 * GI, &p),
            Ok(vec![ThinOp::ExtendThin { bytes: 2 * GI }, ThinOp::Activate])
        );
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "a", GI, &p),
            Ok(vec![ThinOp::Activate])
        );
        // A thick volume of that name is not taken for a thin one.
        let mut thick = thin("t", GI, "-wi-a-----");
        thick.pool_lv = None;
        let s = state(10 * GI, vec![thick]);
        assert!(matches!(
            plan_ensure_thin_lv(&s, VG, "t", GI, &p),
            Err(ThinPlanError::NotThin { .. })
        ));
    }

    #[test]
    fn thin_snapshots_are_not_provisioned_volumes() {
        let p = ThinPolicy::default();
        let snap = Lv {
            origin: Some("v1".into()),
            ..thin("snap_s1", 2 * GI, "Vri-a-tz--")
        };
        let s = state(
            10 * GI,
            vec![
                pool(GI, 8 * MI, 0, 0),
                thin("v1", 2 * GI, "Vwi-a-tz--"),
                snap,
            ],
        );
        let v = thin_pool(&s, VG).expect("pool");
        assert_eq!((v.provisioned_bytes, v.volumes), (2 * GI, 1));
        // Another 2 GiB thin volume needs the pool at 2 GiB (4 GiB at ratio 2), not 3.
        assert_eq!(
            plan_ensure_thin_lv(&s, VG, "v2", 2 * GI, &p).unwrap()[0],
            ThinOp::ExtendPool {
                data_bytes: 2 * GI,
                metadata_bytes: 8 * MI
            }
        );
    }

    #[test]
    fn a_pool_filling_up_grows_as_far_as_the_group_allows() {
        let p = ThinPolicy::default();
        let at = |free, data_bp, meta_bp| {
            let s = state(free, vec![pool(4 * GI, 8 * MI, data_bp, meta_bp)]);
            plan_grow_pool(&s, VG, &p)
        };
        assert_eq!(at(10 * GI, 6_999, 1_000), None, "below 70%");
        assert_eq!(
            at(10 * GI, 7_500, 1_000),
            Some(ThinOp::ExtendPool {
                data_bytes: 5 * GI,
                metadata_bytes: 8 * MI
            })
        );
        // Metadata filling: it grows, the data does not.
        assert_eq!(
            at(10 * GI, 1_000, 9_000),
            Some(ThinOp::ExtendPool {
                data_bytes: 4 * GI,
                metadata_bytes: 12 * MI
            })
        );
        // The group has 512 MiB: the data grows by that much only; none: nothing to do.
        assert_eq!(
            at(512 * MI, 9_000, 1_000),
            Some(ThinOp::ExtendPool {
                data_bytes: 4 * GI + 512 * MI,
                metadata_bytes: 8 * MI
            })
        );
        assert_eq!(at(0, 9_900, 1_000), None);
        let view =
            thin_pool(&state(0, vec![pool(4 * GI, 8 * MI, 9_900, 1_000)]), VG).expect("pool");
        let w = pool_warnings(&view, &p);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("data is 99.0% used"), "{w:?}");
    }
}
