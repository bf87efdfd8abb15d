//! LocalDiskClaim decisions: which disks a claim gets and what to do next. Pure functions.
//!
//! A claim goes Pending → Extending → Bound. The chosen disks are written to the claim's
//! status before any disk is touched, and each step below is recomputed from the current
//! state, so an agent killed at any point resumes exactly where it stopped.
//!
//! A claim that selects disks by type or size waits (Pending) while none fit: a disk may be
//! added later. A claim that names its disks can only complete with exactly those: when one
//! of them cannot be used it ends Failed with the reason, after giving back the disks it
//! holds that are not in a pool yet. Editing a failed claim's spec starts it again.

use crate::lvm::LvmState;
use hwameistor_api::{ClaimPhase, DiskPhase, DiskPresence, LocalDisk, LocalDiskClaim, POOL_PREFIX};
use std::collections::BTreeMap;

/// Why a disk does not fit a claim: the shared rule in the API crate.
pub fn rejection(claim: &LocalDiskClaim, ld: &LocalDisk) -> Option<String> {
    claim.spec.description.rejection(ld)
}

/// The disks of `node_disks` a claim would bind, or a message saying why none fit.
///
/// A claim that names disks gets all of them or none: binding half of an explicit list
/// would surprise whoever wrote it.
pub fn select(claim: &LocalDiskClaim, node_disks: &[LocalDisk]) -> Result<Vec<String>, String> {
    let node = &claim.spec.node_name;
    let names = &claim.spec.description.local_disk_names;
    let on_node: Vec<&LocalDisk> = node_disks
        .iter()
        .filter(|d| &d.spec.node_name == node)
        .collect();
    if !names.is_empty() {
        let mut problems = Vec::new();
        for n in names {
            match on_node
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(n.as_str()))
            {
                None => problems.push(format!("{n}: no such LocalDisk on node {node}")),
                Some(d) => {
                    if let Some(r) = rejection(claim, d) {
                        problems.push(format!("{n}: {r}"));
                    }
                }
            }
        }
        return if problems.is_empty() {
            Ok(names.clone())
        } else {
            Err(problems.join("; "))
        };
    }
    if on_node.is_empty() {
        return Err(format!(
            "node {node} has no LocalDisks yet (is the agent running there?)"
        ));
    }
    let mut chosen = Vec::new();
    let mut problems = Vec::new();
    for d in &on_node {
        let name = d.metadata.name.clone().unwrap_or_default();
        match rejection(claim, d) {
            None => chosen.push(name),
            Some(r) => {
                let dev = d
                    .status
                    .as_ref()
                    .and_then(|s| s.device_path.clone())
                    .unwrap_or_default();
                problems.push(format!("{name} ({dev}): {r}"))
            }
        }
    }
    if chosen.is_empty() {
        Err(format!(
            "no disk on node {node} matches: {}",
            problems.join("; ")
        ))
    } else {
        chosen.sort();
        Ok(chosen)
    }
}

/// The next thing to do for a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimStep {
    /// Not this node's claim, or finished.
    Nothing,
    /// Record the chosen disks (phase Extending).
    Choose(Vec<String>),
    /// Nothing fits yet; say why (phase Pending).
    Wait(String),
    /// Point the disk's spec.claimRef at the claim.
    BindDisk(String),
    /// A chosen disk can no longer be used; give it up.
    DropDisk { disk: String, reason: String },
    /// Add disks to pools: pool name → device paths.
    ExtendPools(BTreeMap<String, Vec<String>>),
    /// Every disk is in its pool.
    Complete { capacity_bytes: i64 },
    /// The claim cannot complete as written. Release (clear the claimRef of) the disks in
    /// `release` first, then record the reason (phase Failed).
    Fail {
        reason: String,
        release: Vec<String>,
    },
    /// The spec of a failed claim changed: forget the old attempt and start again.
    Restart,
}

/// Disks bound to `claim` whose device is not a physical volume of one of our pools yet:
/// the ones a failing claim gives back.
fn releasable(claim_name: &str, disks: &[LocalDisk], lvm: &LvmState) -> Vec<String> {
    let mut out: Vec<String> = disks
        .iter()
        .filter(|d| {
            d.spec
                .claim_ref
                .as_ref()
                .is_some_and(|r| r.name == claim_name)
        })
        .filter(|d| {
            let dev = d.status.as_ref().and_then(|s| s.device_path.as_deref());
            !dev.and_then(|p| lvm.pv(p))
                .is_some_and(|pv| pv.vg_name.starts_with(POOL_PREFIX))
        })
        .filter_map(|d| d.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// Decides the next step of `claim` from the node's disks and LVM state.
pub fn next_step(
    node: &str,
    claim: &LocalDiskClaim,
    disks: &[LocalDisk],
    lvm: &LvmState,
) -> ClaimStep {
    if claim.spec.node_name != node || claim.metadata.deletion_timestamp.is_some() {
        return ClaimStep::Nothing;
    }
    let status = claim.status.clone().unwrap_or_default();
    match status.phase {
        Some(ClaimPhase::Bound) => return ClaimStep::Nothing,
        Some(ClaimPhase::Failed) => {
            return if status.observed_generation.is_some()
                && status.observed_generation != claim.metadata.generation
            {
                ClaimStep::Restart
            } else {
                ClaimStep::Nothing
            }
        }
        _ => {}
    }
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let named = !claim.spec.description.local_disk_names.is_empty();
    if status.bound_disks.is_empty() {
        return match select(claim, disks) {
            Ok(names) => ClaimStep::Choose(names),
            Err(why) if named => ClaimStep::Fail {
                reason: why,
                release: releasable(&claim_name, disks, lvm),
            },
            Err(why) => ClaimStep::Wait(why),
        };
    }
    // A named disk that has to be given up fails the claim: it cannot complete as written.
    let drop = |disk: &str, reason: String| {
        if named {
            ClaimStep::Fail {
                reason: format!("{disk}: {reason}"),
                release: releasable(&claim_name, disks, lvm),
            }
        } else {
            ClaimStep::DropDisk {
                disk: disk.to_string(),
                reason,
            }
        }
    };
    let mut extend: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut capacity = 0;
    for name in &status.bound_disks {
        let Some(ld) = disks
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name.as_str()))
        else {
            return drop(name, "LocalDisk no longer exists".into());
        };
        let st = ld.status.clone().unwrap_or_default();
        match &ld.spec.claim_ref {
            None => {
                return match rejection(claim, ld) {
                    None => ClaimStep::BindDisk(name.clone()),
                    Some(r) => drop(name, r),
                }
            }
            Some(r) if r.name != claim_name => {
                return drop(name, format!("bound to claim {}", r.name))
            }
            Some(_) => {}
        }
        let Some(dev) = st.device_path.clone() else {
            return drop(name, "device path unknown".into());
        };
        if st.state != Some(DiskPresence::Active) {
            return drop(name, "disk not present on the node".into());
        }
        let Some(class) = st.disk_type.map(|t| t.pool_class()) else {
            return drop(name, "disk type unknown".into());
        };
        match lvm.pv(&dev) {
            Some(pv) if pv.vg_name.starts_with(POOL_PREFIX) => capacity += pv.size,
            Some(pv) if !pv.vg_name.is_empty() => {
                return drop(
                    name,
                    format!(
                        "became a physical volume of foreign volume group {}",
                        pv.vg_name
                    ),
                )
            }
            _ => {
                // Bound to us but not in a pool yet. If something was written to it since
                // it was chosen, the scan marks it Unavailable: give it up, never wipe it.
                if st.phase == Some(DiskPhase::Unavailable) {
                    return drop(
                        name,
                        st.reason.unwrap_or_else(|| "no longer Available".into()),
                    );
                }
                extend
                    .entry(class.pool_name().to_string())
                    .or_default()
                    .push(dev)
            }
        }
    }
    if extend.is_empty() {
        ClaimStep::Complete {
            capacity_bytes: capacity,
        }
    } else {
        ClaimStep::ExtendPools(extend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::Pv;
    use hwameistor_api::{
        DiskSelector, DiskType, LocalDiskClaimSpec, LocalDiskClaimStatus, LocalDiskSpec,
        LocalDiskStatus, ObjectRef,
    };

    fn ld(name: &str, dev: &str, t: DiskType, cap: i64, phase: DiskPhase) -> LocalDisk {
        let mut d = LocalDisk::new(
            name,
            LocalDiskSpec {
                node_name: "n1".into(),
                reserved: false,
                claim_ref: None,
                volume_ref: None,
            },
        );
        d.status = Some(LocalDiskStatus {
            state: Some(DiskPresence::Active),
            phase: Some(phase),
            reason: (phase == DiskPhase::Unavailable)
                .then(|| "carries a xfs signature".to_string()),
            device_path: Some(dev.into()),
            disk_type: Some(t),
            capacity_bytes: Some(cap),
            ..Default::default()
        });
        d
    }

    fn claim(sel: DiskSelector) -> LocalDiskClaim {
        LocalDiskClaim::new(
            "c1",
            LocalDiskClaimSpec {
                node_name: "n1".into(),
                description: sel,
            },
        )
    }

    fn disks() -> Vec<LocalDisk> {
        vec![
            ld(
                "a",
                "/dev/vdb",
                DiskType::Hdd,
                1 << 30,
                DiskPhase::Available,
            ),
            ld(
                "b",
                "/dev/vdc",
                DiskType::Hdd,
                2 << 30,
                DiskPhase::Available,
            ),
            ld(
                "c",
                "/dev/vdd",
                DiskType::Hdd,
                3 << 30,
                DiskPhase::Unavailable,
            ),
            ld(
                "d",
                "/dev/vde",
                DiskType::Ssd,
                4 << 30,
                DiskPhase::Available,
            ),
        ]
    }

    #[test]
    fn selects_by_type_and_size() {
        let c = claim(DiskSelector {
            disk_type: Some(DiskType::Hdd),
            ..Default::default()
        });
        assert_eq!(select(&c, &disks()), Ok(vec!["a".into(), "b".into()]));
        let c = claim(DiskSelector {
            disk_type: Some(DiskType::Hdd),
            min_capacity_bytes: Some(3 << 29),
            ..Default::default()
        });
        assert_eq!(select(&c, &disks()), Ok(vec!["b".into()]));
    }

    #[test]
    fn explicit_names_are_all_or_nothing_with_reasons() {
        let c = claim(DiskSelector {
            local_disk_names: vec!["a".into(), "c".into(), "zz".into()],
            ..Default::default()
        });
        let err = select(&c, &disks()).expect_err("c is in use and zz does not exist");
        assert!(err.contains("c: carries a xfs signature"), "{err}");
        assert!(err.contains("zz: no such LocalDisk on node n1"), "{err}");
    }

    #[test]
    fn a_claim_matching_nothing_says_why() {
        let c = claim(DiskSelector {
            disk_type: Some(DiskType::Nvme),
            ..Default::default()
        });
        let err = select(&c, &disks()).expect_err("no nvme");
        assert!(err.contains("type HDD, claim wants NVMe"), "{err}");
        assert!(
            err.contains("c (/dev/vdd): carries a xfs signature"),
            "{err}"
        );
        let mut other = claim(DiskSelector::default());
        other.spec.node_name = "ghost".into();
        assert!(select(&other, &disks())
            .expect_err("none")
            .contains("no LocalDisks"));
    }

    #[test]
    fn steps_walk_from_choice_to_completion() {
        let lvm = LvmState::default();
        let mut c = claim(DiskSelector {
            disk_type: Some(DiskType::Hdd),
            ..Default::default()
        });
        assert_eq!(
            next_step("n1", &c, &disks(), &lvm),
            ClaimStep::Choose(vec!["a".into(), "b".into()])
        );
        assert_eq!(next_step("other", &c, &disks(), &lvm), ClaimStep::Nothing);

        c.status = Some(LocalDiskClaimStatus {
            phase: Some(ClaimPhase::Extending),
            bound_disks: vec!["a".into(), "b".into()],
            ..Default::default()
        });
        let mut ds = disks();
        assert_eq!(
            next_step("n1", &c, &ds, &lvm),
            ClaimStep::BindDisk("a".into())
        );
        for d in ds.iter_mut().take(2) {
            d.spec.claim_ref = Some(ObjectRef {
                name: "c1".into(),
                uid: String::new(),
            });
        }
        let want = BTreeMap::from([(
            "LocalStorage_PoolHDD".to_string(),
            vec!["/dev/vdb".to_string(), "/dev/vdc".to_string()],
        )]);
        assert_eq!(next_step("n1", &c, &ds, &lvm), ClaimStep::ExtendPools(want));

        // Crash after the first disk joined: only the second is left.
        let half = LvmState {
            pvs: vec![Pv {
                name: "/dev/vdb".into(),
                vg_name: "LocalStorage_PoolHDD".into(),
                size: 1 << 30,
                free: 1 << 30,
            }],
            ..Default::default()
        };
        let want = BTreeMap::from([(
            "LocalStorage_PoolHDD".to_string(),
            vec!["/dev/vdc".to_string()],
        )]);
        assert_eq!(
            next_step("n1", &c, &ds, &half),
            ClaimStep::ExtendPools(want)
        );

        let done = LvmState {
            pvs: vec![
                Pv {
                    name: "/dev/vdb".into(),
                    vg_name: "LocalStorage_PoolHDD".into(),
                    size: 1 << 30,
                    free: 0,
                },
                Pv {
                    name: "/dev/vdc".into(),
                    vg_name: "LocalStorage_PoolHDD".into(),
                    size: 2 << 30,
                    free: 0,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            next_step("n1", &c, &ds, &done),
            ClaimStep::Complete {
                capacity_bytes: 3 << 30
            }
        );

        if let Some(s) = c.status.as_mut() {
            s.phase = Some(ClaimPhase::Bound);
        }
        assert_eq!(next_step("n1", &c, &ds, &done), ClaimStep::Nothing);
    }

    #[test]
    fn a_disk_that_gained_data_is_dropped_not_wiped() {
        let mut c = claim(DiskSelector::default());
        c.status = Some(LocalDiskClaimStatus {
            bound_disks: vec!["c".into()],
            ..Default::default()
        });
        let mut ds = disks();
        ds[2].spec.claim_ref = Some(ObjectRef {
            name: "c1".into(),
            uid: String::new(),
        });
        match next_step("n1", &c, &ds, &LvmState::default()) {
            ClaimStep::DropDisk { disk, reason } => {
                assert_eq!(disk, "c");
                assert!(reason.contains("xfs"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_named_disk_that_cannot_be_used_fails_the_claim_and_frees_the_others() {
        let mut c = claim(DiskSelector {
            local_disk_names: vec!["a".into(), "c".into()],
            ..Default::default()
        });
        c.metadata.generation = Some(1);
        // Nothing chosen yet: refused at once with the reason, nothing to give back.
        match next_step("n1", &c, &disks(), &LvmState::default()) {
            ClaimStep::Fail { reason, release } => {
                assert!(reason.contains("c: carries a xfs signature"), "{reason}");
                assert!(release.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Chosen and one disk bound when the other gained data: a is given back.
        c.status = Some(LocalDiskClaimStatus {
            phase: Some(ClaimPhase::Extending),
            bound_disks: vec!["a".into(), "c".into()],
            ..Default::default()
        });
        let mut ds = disks();
        ds[0].spec.claim_ref = Some(ObjectRef {
            name: "c1".into(),
            uid: String::new(),
        });
        match next_step("n1", &c, &ds, &LvmState::default()) {
            ClaimStep::Fail { reason, release } => {
                assert!(reason.starts_with("c: "), "{reason}");
                assert_eq!(release, vec!["a".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        // A disk already in the pool stays there: it is not given back.
        let in_pool = LvmState {
            pvs: vec![Pv {
                name: "/dev/vdb".into(),
                vg_name: "LocalStorage_PoolHDD".into(),
                size: 1 << 30,
                free: 1 << 30,
            }],
            ..Default::default()
        };
        match next_step("n1", &c, &ds, &in_pool) {
            ClaimStep::Fail { release, .. } => assert!(release.is_empty(), "{release:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_claim_waits_for_its_spec_to_change() {
        let mut c = claim(DiskSelector {
            local_disk_names: vec!["c".into()],
            ..Default::default()
        });
        c.metadata.generation = Some(1);
        c.status = Some(LocalDiskClaimStatus {
            phase: Some(ClaimPhase::Failed),
            observed_generation: Some(1),
            message: Some("c: carries a xfs signature".into()),
            ..Default::default()
        });
        assert_eq!(
            next_step("n1", &c, &disks(), &LvmState::default()),
            ClaimStep::Nothing
        );
        c.metadata.generation = Some(2);
        c.spec.description.local_disk_names = vec!["a".into()];
        assert_eq!(
            next_step("n1", &c, &disks(), &LvmState::default()),
            ClaimStep::Restart
        );
    }

    #[test]
    fn a_selector_claim_waits_instead_of_failing() {
        let c = claim(DiskSelector {
            disk_type: Some(DiskType::Nvme),
            ..Default::default()
        });
        assert!(matches!(
            next_step("n1", &c, &disks(), &LvmState::default()),
            ClaimStep::Wait(_)
        ));
    }
}
