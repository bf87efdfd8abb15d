//! LVM as the decisions see it: physical volumes, volume groups and logical volumes, and the
//! rules every layer shares (extent rounding, logical volume names).
//!
//! The node agent fills these types from lvm2's reports; the controller and the CSI driver
//! use the same rounding to promise exactly what the node will allocate.

use std::collections::BTreeMap;
use thiserror::Error;

/// lvm2's default extent size, and so the granule of every volume size HwameiStor promises
/// before a node reports its real extent size.
pub const DEFAULT_EXTENT_BYTES: i64 = 4 << 20;

/// `bytes` rounded up to a whole number of `extent`s; `None` on overflow. A non-positive
/// extent (a pool that has not reported one) leaves the size as it is.
pub fn checked_round_up(bytes: i64, extent: i64) -> Option<i64> {
    if extent <= 0 {
        return Some(bytes);
    }
    let rem = bytes.rem_euclid(extent);
    if rem == 0 {
        Some(bytes)
    } else {
        bytes.checked_add(extent - rem)
    }
}

/// `bytes` rounded up to a whole number of `extent`s, saturating at `i64::MAX`.
pub fn round_up_to_extent(bytes: i64, extent: i64) -> i64 {
    checked_round_up(bytes, extent).unwrap_or(i64::MAX)
}

/// A name lvm2 refuses for a logical volume.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0:?} is not a valid logical volume name (1-127 characters of a-z A-Z 0-9 + _ . -, not starting with - or named . or .., not starting with snapshot or pvmove)")]
pub struct InvalidLvName(pub String);

/// lvm2's rules for LV names, checked before any command runs so the error is ours.
pub fn validate_lv_name(name: &str) -> Result<(), InvalidLvName> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
        && !name.starts_with("snapshot")
        && !name.starts_with("pvmove");
    if ok {
        Ok(())
    } else {
        Err(InvalidLvName(name.to_string()))
    }
}

/// A physical volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pv {
    pub name: String,
    /// Empty when the PV belongs to no volume group.
    pub vg_name: String,
    pub size: i64,
    pub free: i64,
}

/// A volume group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vg {
    pub name: String,
    pub size: i64,
    pub free: i64,
    pub extent_size: i64,
    pub lv_count: i64,
    pub pv_count: i64,
}

/// A logical volume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lv {
    pub name: String,
    pub vg_name: String,
    pub size: i64,
    /// lvm2's ten-character attribute string, e.g. `-wi-a-----`.
    pub attr: String,
    pub path: String,
    /// Physical volumes the LV has extents on, each once, in the order LVM lists them.
    pub devices: Vec<String>,
    /// The thin pool a thin volume lives in.
    pub pool_lv: Option<String>,
    /// What LVM says of a thin pool's (or thin volume's) use.
    pub thin: Option<ThinUsage>,
    /// The volume a snapshot was taken of.
    pub origin: Option<String>,
    /// A copy-on-write snapshot's use of its space, in basis points (at 10000 it is full
    /// and LVM marks it invalid).
    pub cow_used_bp: Option<i64>,
}

/// A thin pool's or thin volume's use as LVM reports it; percentages in hundredths of a
/// percent (basis points, 0..=10000), so the state stays comparable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThinUsage {
    pub data_bp: i64,
    pub metadata_bp: i64,
    /// A pool's metadata size (0 for a thin volume).
    pub metadata_bytes: i64,
}

impl Lv {
    /// The LV is a thin pool (`t` in the attributes' first place).
    pub fn is_thin_pool(&self) -> bool {
        self.attr.starts_with('t')
    }

    /// The LV is active (has a device node).
    pub fn active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }

    /// The LV's device is open (mounted or held).
    pub fn open(&self) -> bool {
        self.attr.chars().nth(5) == Some('o')
    }

    /// A copy-on-write (thick) snapshot: `s` (or `S` while merging) in the first place.
    pub fn is_cow_snapshot(&self) -> bool {
        matches!(self.attr.chars().next(), Some('s' | 'S'))
    }

    /// A copy-on-write snapshot that overflowed its space (or failed): LVM marks it invalid
    /// (`I`, or `S` when also suspended, in the state place) and its data is lost.
    pub fn snapshot_invalid(&self) -> bool {
        matches!(self.attr.chars().nth(4), Some('I' | 'S'))
    }
}

/// Everything LVM knows on the node, read in one go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LvmState {
    pub pvs: Vec<Pv>,
    pub vgs: Vec<Vg>,
    pub lvs: Vec<Lv>,
}

impl LvmState {
    pub fn pv(&self, device: &str) -> Option<&Pv> {
        self.pvs.iter().find(|p| p.name == device)
    }

    pub fn vg(&self, name: &str) -> Option<&Vg> {
        self.vgs.iter().find(|v| v.name == name)
    }

    pub fn lv(&self, vg: &str, name: &str) -> Option<&Lv> {
        self.lvs.iter().find(|l| l.vg_name == vg && l.name == name)
    }

    /// LVs per volume group.
    pub fn lvs_by_vg(&self) -> BTreeMap<&str, Vec<&Lv>> {
        let mut m: BTreeMap<&str, Vec<&Lv>> = BTreeMap::new();
        for lv in &self.lvs {
            m.entry(lv.vg_name.as_str()).or_default().push(lv);
        }
        m
    }
}

/// One LVM operation the agent runs to bring a logical volume to what a replica asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LvOp {
    /// Create it with this many bytes (whole extents).
    Create { bytes: i64 },
    /// Grow it to this many bytes (whole extents).
    Extend { bytes: i64 },
    /// Activate it (it exists but has no device node).
    Activate,
}

/// Why a logical volume cannot be brought to what is asked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LvPlanError {
    #[error(transparent)]
    InvalidName(#[from] InvalidLvName),
    #[error("volume group {0} does not exist on this node")]
    NoSuchVg(String),
    #[error("volume group {vg} has {free} bytes free but {need} more are needed")]
    InsufficientSpace { vg: String, free: i64, need: i64 },
    #[error("logical volume {vg}/{lv} is open; refusing to remove it while it is in use")]
    InUse { vg: String, lv: String },
    /// lvremove would take the snapshots with their origin.
    #[error("logical volume {vg}/{lv} has snapshots ({}); refusing to remove it before them", snapshots.join(", "))]
    HasSnapshots {
        vg: String,
        lv: String,
        snapshots: Vec<String>,
    },
}

/// The operations, in order, that make `vg/name` an active volume of at least `bytes`
/// (rounded up to the group's extents) from `state`; none when it already is one. A larger
/// volume is left as it is: shrinking loses data.
pub fn plan_ensure_lv(
    state: &LvmState,
    vg: &str,
    name: &str,
    bytes: i64,
) -> Result<Vec<LvOp>, LvPlanError> {
    validate_lv_name(name)?;
    let group = state
        .vg(vg)
        .ok_or_else(|| LvPlanError::NoSuchVg(vg.to_string()))?;
    let want = round_up_to_extent(bytes, group.extent_size);
    let room = |need: i64| {
        if group.free < need {
            Err(LvPlanError::InsufficientSpace {
                vg: vg.to_string(),
                free: group.free,
                need,
            })
        } else {
            Ok(())
        }
    };
    let Some(lv) = state.lv(vg, name) else {
        room(want)?;
        return Ok(vec![LvOp::Create { bytes: want }]);
    };
    let mut ops = Vec::new();
    if lv.size < want {
        room(want - lv.size)?;
        ops.push(LvOp::Extend { bytes: want });
    }
    if !lv.active() {
        ops.push(LvOp::Activate);
    }
    Ok(ops)
}

/// Whether `vg/name` must be removed (`false`: it is already gone); an open volume is
/// refused, never forced.
pub fn plan_remove_lv(state: &LvmState, vg: &str, name: &str) -> Result<bool, LvPlanError> {
    match state.lv(vg, name) {
        None => Ok(false),
        Some(lv) if lv.open() => Err(LvPlanError::InUse {
            vg: vg.to_string(),
            lv: name.to_string(),
        }),
        Some(_) => {
            // `lvremove --yes` of an origin removes its copy-on-write snapshots too: never by
            // accident. (Thin snapshots are volumes of their own: they stay.)
            let snapshots: Vec<String> = state
                .lvs
                .iter()
                .filter(|l| {
                    l.vg_name == vg && l.origin.as_deref() == Some(name) && l.is_cow_snapshot()
                })
                .map(|l| l.name.clone())
                .collect();
            if snapshots.is_empty() {
                Ok(true)
            } else {
                Err(LvPlanError::HasSnapshots {
                    vg: vg.to_string(),
                    lv: name.to_string(),
                    snapshots,
                })
            }
        }
    }
}

/// The operations that add devices to a pool's volume group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPlan {
    /// Devices to make physical volumes first.
    pub create_pvs: Vec<String>,
    /// Create the group from these physical volumes (it does not exist yet).
    pub create_vg: Vec<String>,
    /// Add these physical volumes to the existing group.
    pub extend_vg: Vec<String>,
}

impl PoolPlan {
    pub fn is_empty(&self) -> bool {
        self.create_pvs.is_empty() && self.create_vg.is_empty() && self.extend_vg.is_empty()
    }
}

/// A device that already belongs to another volume group.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{device} is a physical volume of volume group {vg}; it cannot join {want}")]
pub struct ForeignVg {
    pub device: String,
    pub vg: String,
    pub want: String,
}

/// What it takes for every device of `devices` to be a physical volume of `vg`. Resumes
/// from any intermediate state (a device that is a physical volume of no group is simply
/// added); a device of another group is refused.
pub fn plan_extend_pool(
    state: &LvmState,
    vg: &str,
    devices: &[String],
) -> Result<PoolPlan, ForeignVg> {
    let mut plan = PoolPlan::default();
    let mut join = Vec::new();
    for dev in devices {
        match state.pv(dev) {
            Some(pv) if pv.vg_name == vg => {}
            Some(pv) if !pv.vg_name.is_empty() => {
                return Err(ForeignVg {
                    device: dev.clone(),
                    vg: pv.vg_name.clone(),
                    want: vg.to_string(),
                })
            }
            Some(_) => join.push(dev.clone()),
            None => {
                plan.create_pvs.push(dev.clone());
                join.push(dev.clone());
            }
        }
    }
    if state.vg(vg).is_some() {
        plan.extend_vg = join;
    } else {
        plan.create_vg = join;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    const MI: i64 = 1 << 20;
    const HDD: &str = "LocalStorage_PoolHDD";

    fn pv(name: &str, vg: &str) -> Pv {
        Pv {
            name: name.into(),
            vg_name: vg.into(),
            size: 100 * MI,
            free: 100 * MI,
        }
    }

    fn group(free: i64) -> Vg {
        Vg {
            name: HDD.into(),
            size: 1024 * MI,
            free,
            extent_size: 4 * MI,
            lv_count: 0,
            pv_count: 1,
        }
    }

    fn lv(name: &str, size: i64, attr: &str) -> Lv {
        Lv {
            name: name.into(),
            vg_name: HDD.into(),
            size,
            attr: attr.into(),
            path: format!("/dev/{HDD}/{name}"),
            devices: vec!["/dev/vdb".into()],
            ..Default::default()
        }
    }

    #[test]
    fn ensure_creates_rounded_grows_activates_or_does_nothing() {
        let empty = LvmState {
            vgs: vec![group(100 * MI)],
            ..Default::default()
        };
        assert_eq!(
            plan_ensure_lv(&empty, HDD, "v", 5 * MI),
            Ok(vec![LvOp::Create { bytes: 8 * MI }])
        );
        let have = |size, attr| LvmState {
            vgs: vec![group(100 * MI)],
            lvs: vec![lv("v", size, attr)],
            ..Default::default()
        };
        assert_eq!(
            plan_ensure_lv(&have(8 * MI, "-wi-a-----"), HDD, "v", 5 * MI),
            Ok(vec![])
        );
        assert_eq!(
            plan_ensure_lv(&have(8 * MI, "-wi-a-----"), HDD, "v", 9 * MI),
            Ok(vec![LvOp::Extend { bytes: 12 * MI }])
        );
        assert_eq!(
            plan_ensure_lv(&have(8 * MI, "-wi-------"), HDD, "v", 9 * MI),
            Ok(vec![LvOp::Extend { bytes: 12 * MI }, LvOp::Activate])
        );
        assert_eq!(
            plan_ensure_lv(&have(16 * MI, "-wi-a-----"), HDD, "v", 9 * MI),
            Ok(vec![]),
            "never shrinks"
        );
    }

    #[test]
    fn ensure_refuses_what_lvm_would() {
        let st = LvmState {
            vgs: vec![group(8 * MI)],
            lvs: vec![lv("v", 8 * MI, "-wi-a-----")],
            ..Default::default()
        };
        assert_eq!(
            plan_ensure_lv(&st, HDD, "w", 9 * MI),
            Err(LvPlanError::InsufficientSpace {
                vg: HDD.into(),
                free: 8 * MI,
                need: 12 * MI
            })
        );
        assert!(matches!(
            plan_ensure_lv(&st, HDD, "v", 20 * MI),
            Err(LvPlanError::InsufficientSpace { need, .. }) if need == 12 * MI
        ));
        assert_eq!(
            plan_ensure_lv(&st, "LocalStorage_PoolSSD", "v", 1),
            Err(LvPlanError::NoSuchVg("LocalStorage_PoolSSD".into()))
        );
        assert!(matches!(
            plan_ensure_lv(&st, HDD, "-bad", 1),
            Err(LvPlanError::InvalidName(_))
        ));
    }

    #[test]
    fn remove_is_idempotent_and_refuses_open_volumes() {
        let st = LvmState {
            vgs: vec![group(0)],
            lvs: vec![
                lv("busy", 4 * MI, "-wi-ao----"),
                lv("idle", 4 * MI, "-wi-a-----"),
            ],
            ..Default::default()
        };
        assert_eq!(plan_remove_lv(&st, HDD, "gone"), Ok(false));
        assert_eq!(plan_remove_lv(&st, HDD, "idle"), Ok(true));
        assert!(matches!(
            plan_remove_lv(&st, HDD, "busy"),
            Err(LvPlanError::InUse { .. })
        ));
    }

    #[test]
    fn an_origin_is_not_removed_before_its_snapshots() {
        let snap = |name: &str, attr: &str| Lv {
            origin: Some("data".into()),
            ..lv(name, 4 * MI, attr)
        };
        let st = LvmState {
            vgs: vec![group(0)],
            lvs: vec![
                lv("data", 8 * MI, "-wi-a-----"),
                snap("snap_a", "swi-a-s---"),
                snap("snap_b", "swi-I-s---"),
            ],
            ..Default::default()
        };
        let e = plan_remove_lv(&st, HDD, "data").expect_err("has snapshots");
        assert_eq!(
            e.to_string(),
            format!("logical volume {HDD}/data has snapshots (snap_a, snap_b); refusing to remove it before them")
        );
        assert_eq!(plan_remove_lv(&st, HDD, "snap_a"), Ok(true));
        let (a, b) = (st.lv(HDD, "snap_a").unwrap(), st.lv(HDD, "snap_b").unwrap());
        assert!(a.is_cow_snapshot() && !a.snapshot_invalid());
        assert!(b.is_cow_snapshot() && b.snapshot_invalid(), "overflowed");
        assert!(!st.lv(HDD, "data").unwrap().is_cow_snapshot());
        // A thin snapshot (or a volume restored from one) is a volume of its own: lvremove
        // leaves it, so its origin may go first.
        let thin = LvmState {
            lvs: vec![
                lv("snap_t", 8 * MI, "Vri-a-tz--"),
                Lv {
                    origin: Some("snap_t".into()),
                    ..lv("restored", 8 * MI, "Vwi-a-tz--")
                },
            ],
            ..st
        };
        assert_eq!(plan_remove_lv(&thin, HDD, "snap_t"), Ok(true));
    }

    #[test]
    fn pools_grow_from_any_intermediate_state() {
        let devs = ["/dev/vdb".to_string(), "/dev/vdc".to_string()];
        let nothing = LvmState::default();
        assert_eq!(
            plan_extend_pool(&nothing, HDD, &devs),
            Ok(PoolPlan {
                create_pvs: devs.to_vec(),
                create_vg: devs.to_vec(),
                extend_vg: vec![],
            })
        );
        // Crashed after the first pvcreate.
        let one_pv = LvmState {
            pvs: vec![pv("/dev/vdb", "")],
            ..Default::default()
        };
        assert_eq!(
            plan_extend_pool(&one_pv, HDD, &devs),
            Ok(PoolPlan {
                create_pvs: vec!["/dev/vdc".into()],
                create_vg: devs.to_vec(),
                extend_vg: vec![],
            })
        );
        // The group exists with the first disk; the second is a bare PV.
        let half = LvmState {
            pvs: vec![pv("/dev/vdb", HDD), pv("/dev/vdc", "")],
            vgs: vec![group(0)],
            ..Default::default()
        };
        assert_eq!(
            plan_extend_pool(&half, HDD, &devs),
            Ok(PoolPlan {
                extend_vg: vec!["/dev/vdc".into()],
                ..Default::default()
            })
        );
        let done = LvmState {
            pvs: vec![pv("/dev/vdb", HDD), pv("/dev/vdc", HDD)],
            vgs: vec![group(0)],
            ..Default::default()
        };
        assert!(plan_extend_pool(&done, HDD, &devs)
            .expect("plan")
            .is_empty());
        let foreign = LvmState {
            pvs: vec![pv("/dev/vdb", "data")],
            ..Default::default()
        };
        assert_eq!(
            plan_extend_pool(&foreign, HDD, &devs),
            Err(ForeignVg {
                device: "/dev/vdb".into(),
                vg: "data".into(),
                want: HDD.into()
            })
        );
    }

    #[test]
    fn rounding_is_to_whole_extents_and_never_overflows() {
        assert_eq!(round_up_to_extent(1, 4 * MI), 4 * MI);
        assert_eq!(round_up_to_extent(4 * MI, 4 * MI), 4 * MI);
        assert_eq!(round_up_to_extent(4 * MI + 1, 4 * MI), 8 * MI);
        assert_eq!(round_up_to_extent(0, 4 * MI), 0);
        assert_eq!(round_up_to_extent(5, 0), 5, "no extent reported yet");
        assert_eq!(checked_round_up(i64::MAX, 4 * MI), None);
        assert_eq!(round_up_to_extent(i64::MAX - 1, 4 * MI), i64::MAX);
    }

    #[test]
    fn lv_names_follow_lvm2() {
        assert!(validate_lv_name("pvc-1234").is_ok());
        assert!(validate_lv_name("a.b_c+d").is_ok());
        for bad in [
            "",
            "-x",
            ".",
            "..",
            "a b",
            "snapshot1",
            "pvmove0",
            &"x".repeat(128),
        ] {
            assert!(validate_lv_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attributes_say_active_and_open() {
        let lv = Lv {
            name: "v".into(),
            vg_name: "g".into(),
            size: 1,
            attr: "-wi-ao----".into(),
            path: "/dev/g/v".into(),
            devices: vec![],
            ..Default::default()
        };
        assert!(lv.active() && lv.open());
        let idle = Lv {
            attr: "-wi-------".into(),
            ..lv
        };
        assert!(!idle.active() && !idle.open());
    }
}
