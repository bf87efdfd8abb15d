//! A node's pools as LocalStorageNode reports them, derived from LVM. Pure.

use crate::lvm::LvmState;
use crate::thin::ThinPolicy;
use hwameistor_api::{LocalDisk, PoolClass, PoolDisk, PoolStatus, ThinPoolStatus};
use std::collections::BTreeMap;

/// Pool status for every HwameiStor volume group on the node, with the agent's thin policy
/// (`None` when it makes no thin volumes). Volume groups of other owners are left out: they
/// are not ours to report or use.
pub fn pool_status(
    lvm: &LvmState,
    disks: &[LocalDisk],
    thin: Option<&ThinPolicy>,
) -> BTreeMap<String, PoolStatus> {
    let lvs = lvm.lvs_by_vg();
    let mut out = BTreeMap::new();
    for vg in &lvm.vgs {
        let Some(class) = PoolClass::from_pool_name(&vg.name) else {
            continue;
        };
        let mut pool_disks: Vec<PoolDisk> = lvm
            .pvs
            .iter()
            .filter(|pv| pv.vg_name == vg.name)
            .map(|pv| PoolDisk {
                local_disk: disks
                    .iter()
                    .find(|d| {
                        d.status.as_ref().and_then(|s| s.device_path.as_deref())
                            == Some(pv.name.as_str())
                    })
                    .and_then(|d| d.metadata.name.clone()),
                device_path: pv.name.clone(),
                capacity_bytes: pv.size,
                free_bytes: pv.free,
            })
            .collect();
        pool_disks.sort_by(|a, b| a.device_path.cmp(&b.device_path));
        out.insert(
            vg.name.clone(),
            PoolStatus {
                name: vg.name.clone(),
                class,
                total_capacity_bytes: vg.size,
                used_capacity_bytes: vg.size - vg.free,
                free_capacity_bytes: vg.free,
                extent_size_bytes: vg.extent_size,
                // A replicated volume's metadata volume is part of that volume, the thin
                // pool holds volumes rather than being one, and snapshots are not volumes.
                volume_count: lvs
                    .get(vg.name.as_str())
                    .map(|l| {
                        l.iter()
                            .filter(|lv| !lv.name.ends_with(crate::drbd::META_LV_SUFFIX))
                            .filter(|lv| !lv.is_thin_pool())
                            // A snapshot is part of its volume's history, not a volume.
                            .filter(|lv| lv.origin.is_none())
                            .count() as i64
                    })
                    .unwrap_or(0),
                disks: pool_disks,
                thin: crate::thin::thin_pool(lvm, &vg.name).map(|p| ThinPoolStatus {
                    data_bytes: p.data_bytes,
                    metadata_bytes: p.metadata_bytes,
                    data_used_percent: p.data_percent.floor() as i64,
                    metadata_used_percent: p.metadata_percent.floor() as i64,
                    provisioned_bytes: p.provisioned_bytes,
                    volume_count: p.volumes,
                }),
                thin_overprovision_percent: thin.map(|t| t.overprovision_percent()),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvm::{Lv, Pv, ThinUsage, Vg};

    #[test]
    fn reports_only_our_pools_with_accurate_numbers() {
        let lvm = LvmState {
            pvs: vec![
                Pv {
                    name: "/dev/vdb".into(),
                    vg_name: "LocalStorage_PoolHDD".into(),
                    size: 100,
                    free: 60,
                },
                Pv {
                    name: "/dev/vdc".into(),
                    vg_name: "LocalStorage_PoolHDD".into(),
                    size: 200,
                    free: 200,
                },
                Pv {
                    name: "/dev/sda3".into(),
                    vg_name: "system".into(),
                    size: 50,
                    free: 0,
                },
            ],
            vgs: vec![
                Vg {
                    name: "LocalStorage_PoolHDD".into(),
                    size: 300,
                    free: 260,
                    extent_size: 4,
                    lv_count: 1,
                    pv_count: 2,
                },
                Vg {
                    name: "system".into(),
                    size: 50,
                    free: 0,
                    extent_size: 4,
                    lv_count: 3,
                    pv_count: 1,
                },
            ],
            lvs: vec![
                Lv {
                    name: "pvc-1".into(),
                    vg_name: "LocalStorage_PoolHDD".into(),
                    size: 36,
                    attr: "-wi-a-----".into(),
                    path: "/dev/LocalStorage_PoolHDD/pvc-1".into(),
                    devices: vec!["/dev/vdb".into()],
                    ..Default::default()
                },
                // An HA volume's metadata: space used, not a volume of its own.
                Lv {
                    name: "pvc-1_drbdmeta".into(),
                    vg_name: "LocalStorage_PoolHDD".into(),
                    size: 4,
                    attr: "-wi-a-----".into(),
                    path: "/dev/LocalStorage_PoolHDD/pvc-1_drbdmeta".into(),
                    devices: vec!["/dev/vdb".into()],
                    ..Default::default()
                },
            ],
        };
        let pools = pool_status(&lvm, &[], None);
        assert_eq!(pools.len(), 1);
        let p = &pools["LocalStorage_PoolHDD"];
        assert_eq!(
            (
                p.total_capacity_bytes,
                p.used_capacity_bytes,
                p.free_capacity_bytes
            ),
            (300, 40, 260)
        );
        assert_eq!(p.volume_count, 1);
        assert_eq!(p.disks.len(), 2);
        assert_eq!(p.class, PoolClass::Hdd);
        assert_eq!(p.thin, None);

        // A thin pool: reported with its use, and not counted as a volume (its thin
        // volumes are).
        let mut lvm = lvm;
        lvm.lvs.push(Lv {
            name: crate::thin::THIN_POOL_LV.into(),
            vg_name: "LocalStorage_PoolHDD".into(),
            size: 100,
            attr: "twi-aotz--".into(),
            thin: Some(ThinUsage {
                data_bp: 8_159,
                metadata_bp: 1_203,
                metadata_bytes: 8,
            }),
            ..Default::default()
        });
        lvm.lvs.push(Lv {
            name: "pvc-2".into(),
            vg_name: "LocalStorage_PoolHDD".into(),
            size: 150,
            attr: "Vwi-aotz--".into(),
            pool_lv: Some(crate::thin::THIN_POOL_LV.into()),
            ..Default::default()
        });
        // Its snapshot is neither a volume nor provisioned.
        lvm.lvs.push(Lv {
            name: "snap_s1".into(),
            vg_name: "LocalStorage_PoolHDD".into(),
            size: 150,
            attr: "Vri-a-tz--".into(),
            pool_lv: Some(crate::thin::THIN_POOL_LV.into()),
            origin: Some("pvc-2".into()),
            ..Default::default()
        });
        let p = pool_status(&lvm, &[], None)["LocalStorage_PoolHDD"].clone();
        assert_eq!(p.volume_count, 2);
        assert_eq!(
            p.thin,
            Some(ThinPoolStatus {
                data_bytes: 100,
                metadata_bytes: 8,
                data_used_percent: 81,
                metadata_used_percent: 12,
                provisioned_bytes: 150,
                volume_count: 1,
            })
        );
    }
}
