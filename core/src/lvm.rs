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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lv {
    pub name: String,
    pub vg_name: String,
    pub size: i64,
    /// lvm2's ten-character attribute string, e.g. `-wi-a-----`.
    pub attr: String,
    pub path: String,
    /// Physical volumes the LV has extents on, each once, in the order LVM lists them.
    pub devices: Vec<String>,
}

impl Lv {
    /// The LV is active (has a device node).
    pub fn active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }

    /// The LV's device is open (mounted or held).
    pub fn open(&self) -> bool {
        self.attr.chars().nth(5) == Some('o')
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

#[cfg(test)]
mod tests {
    use super::*;
    const MI: i64 = 1 << 20;

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
        };
        assert!(lv.active() && lv.open());
        let idle = Lv {
            attr: "-wi-------".into(),
            ..lv
        };
        assert!(!idle.active() && !idle.open());
    }
}
