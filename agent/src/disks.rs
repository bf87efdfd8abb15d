//! From observed disks to LocalDisk objects: identity, naming, classification and the plan
//! of API changes. Pure functions: state in, decisions out.

use crate::discovery::ObservedDisk;
use crate::lvm::LvmState;
use hwameistor_api::{
    DiskPhase, DiskPresence, DiskType, IdentitySource, LocalDisk, LocalDiskSpec, LocalDiskStatus,
    PartitionInfo, LABEL_NODE, POOL_PREFIX,
};
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// Disks smaller than this are not worth a physical volume (LVM metadata alone takes 1 MiB
/// and an extent 4 MiB).
pub const MIN_DISK_BYTES: i64 = 16 << 20;

/// The stable identity of a disk and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub source: IdentitySource,
    pub key: String,
}

/// The identity of a disk: its WWN if it has one, else vendor/model/serial, else (with a
/// warning in its status) its bus path. Never the kernel name, which changes across boots.
pub fn identity(d: &ObservedDisk) -> Identity {
    if let Some(wwn) = d.wwn.as_deref().filter(|w| !w.is_empty()) {
        return Identity {
            source: IdentitySource::Wwn,
            key: format!("wwn:{wwn}"),
        };
    }
    if let Some(serial) = d.serial.as_deref().filter(|s| !s.is_empty()) {
        let vendor = d.vendor.as_deref().unwrap_or("");
        let model = d.model.as_deref().unwrap_or("");
        return Identity {
            source: IdentitySource::Serial,
            key: format!("serial:{vendor}|{model}|{serial}"),
        };
    }
    let by_path = d
        .dev_links
        .iter()
        .find(|l| l.contains("/by-path/"))
        .cloned();
    Identity {
        source: IdentitySource::Path,
        key: format!(
            "path:{}",
            by_path.unwrap_or_else(|| format!("devnum:{}:{}", d.major, d.minor))
        ),
    }
}

/// The object name for a disk on a node. The node is part of the hash because LocalDisks
/// are cluster-wide and virtual disks on different nodes often share serial numbers.
pub fn local_disk_name(node: &str, identity_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"hwameistor-localdisk-v1\0");
    h.update(node.as_bytes());
    h.update(b"\0");
    h.update(identity_key.as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("ld-{hex}")
}

/// Names for every observed disk. Two disks of one node that report the same identity
/// (cheap enclosures copy serials) get their bus path added, so neither is confused with
/// the other.
pub fn names_for(node: &str, disks: &[ObservedDisk]) -> Vec<(String, Identity)> {
    let ids: Vec<Identity> = disks.iter().map(identity).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *count.entry(id.key.as_str()).or_default() += 1;
    }
    disks
        .iter()
        .zip(ids.iter())
        .map(|(d, id)| {
            let mut id = id.clone();
            if count.get(id.key.as_str()).copied().unwrap_or(0) > 1 {
                let path = d
                    .dev_links
                    .iter()
                    .find(|l| l.contains("/by-path/"))
                    .cloned();
                id.key = format!(
                    "{}|{}",
                    id.key,
                    path.unwrap_or_else(|| d.device_path.clone())
                );
            }
            (local_disk_name(node, &id.key), id)
        })
        .collect()
}

pub fn disk_type(d: &ObservedDisk) -> DiskType {
    if d.nvme {
        DiskType::Nvme
    } else if d.rotational {
        DiskType::Hdd
    } else {
        DiskType::Ssd
    }
}

/// Why a disk may not be used, and whether it already belongs to one of our pools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub phase: DiskPhase,
    pub reasons: Vec<String>,
    pub pool: Option<String>,
}

/// Decides a disk's phase from what is on it and what was decided about it.
pub fn classify(d: &ObservedDisk, lvm: &LvmState, spec: Option<&LocalDiskSpec>) -> Classification {
    let pv = lvm.pv(&d.device_path);
    if let Some(pv) = pv.filter(|p| p.vg_name.starts_with(POOL_PREFIX)) {
        return Classification {
            phase: DiskPhase::Bound,
            reasons: vec![],
            pool: Some(pv.vg_name.clone()),
        };
    }
    // A disk serving a raw-disk volume carries the volume's data (a filesystem, mounts):
    // that is its use, not a reason it is unavailable.
    if spec.is_some_and(|s| s.volume_ref.is_some()) {
        return Classification {
            phase: DiskPhase::Bound,
            reasons: vec![],
            pool: None,
        };
    }
    let claimed = spec.is_some_and(|s| s.claim_ref.is_some());
    let mut reasons = Vec::new();
    match pv {
        Some(pv) if !pv.vg_name.is_empty() => reasons.push(format!(
            "LVM physical volume of foreign volume group {}",
            pv.vg_name
        )),
        // A bare PV on a claimed disk is a claim interrupted between pvcreate and
        // vgextend: ours, to be finished.
        Some(_) if claimed => {}
        Some(_) => reasons.push("LVM physical volume not in any volume group".to_string()),
        None => {
            if let Some(sig) = &d.signature {
                reasons.push(format!("carries a {sig} signature"));
            }
        }
    }
    if let Some(pt) = &d.partition_table {
        reasons.push(format!(
            "has a {pt} partition table with {} partition(s)",
            d.partitions.len()
        ));
    } else if !d.partitions.is_empty() {
        reasons.push(format!("has {} partition(s)", d.partitions.len()));
    }
    for m in d
        .mount_points
        .iter()
        .chain(d.partitions.iter().flat_map(|p| p.mount_points.iter()))
    {
        reasons.push(format!("mounted at {m}"));
    }
    for h in d
        .holders
        .iter()
        .chain(d.partitions.iter().flat_map(|p| p.holders.iter()))
    {
        reasons.push(format!("held by {h}"));
    }
    if d.read_only {
        reasons.push("read-only device".to_string());
    }
    if d.size_bytes < MIN_DISK_BYTES {
        reasons.push(format!(
            "smaller than {}",
            hwameistor_api::quantity::format_size(MIN_DISK_BYTES)
        ));
    }
    let phase = if !reasons.is_empty() {
        DiskPhase::Unavailable
    } else if claimed {
        DiskPhase::Bound
    } else if spec.is_some_and(|s| s.reserved) {
        reasons.push("reserved (spec.reserved is true)".to_string());
        DiskPhase::Reserved
    } else {
        DiskPhase::Available
    };
    Classification {
        phase,
        reasons,
        pool: None,
    }
}

/// The status the agent wants a disk's LocalDisk to have.
pub fn observed_status(d: &ObservedDisk, id: &Identity, c: &Classification) -> LocalDiskStatus {
    LocalDiskStatus {
        state: Some(DiskPresence::Active),
        phase: Some(c.phase),
        reason: c.reasons.first().cloned(),
        reasons: c.reasons.clone(),
        device_path: Some(d.device_path.clone()),
        dev_links: d.dev_links.clone(),
        disk_type: Some(disk_type(d)),
        capacity_bytes: Some(d.size_bytes),
        serial: d.serial.clone(),
        wwn: d.wwn.clone(),
        model: d.model.clone(),
        vendor: d.vendor.clone(),
        identity_source: Some(id.source),
        dev_num: Some(format!("{}:{}", d.major, d.minor)),
        rotational: Some(d.rotational),
        partition_table: d.partition_table.clone(),
        partitions: d
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                name: p.name.clone(),
                size_bytes: p.size_bytes,
                filesystem: p.signature.clone(),
                mount_points: p.mount_points.clone(),
            })
            .collect(),
        filesystem: d.signature.clone(),
        holders: d.holders.clone(),
        mount_points: d.mount_points.clone(),
        pool: c.pool.clone(),
    }
}

/// One change to the API.
#[derive(Clone, Debug)]
pub enum DiskAction {
    /// A disk seen for the first time: create its object (then set its status).
    Create(Box<LocalDisk>),
    /// A known disk whose observed status changed.
    UpdateStatus {
        name: String,
        status: Box<LocalDiskStatus>,
    },
}

/// Compares a scan with the node's LocalDisks and returns the changes to make. Disks no
/// longer seen become Inactive; nothing is ever deleted.
pub fn plan(
    node: &str,
    observed: &[ObservedDisk],
    lvm: &LvmState,
    existing: &[LocalDisk],
) -> Vec<DiskAction> {
    let by_name: BTreeMap<&str, &LocalDisk> = existing
        .iter()
        .filter_map(|d| d.metadata.name.as_deref().map(|n| (n, d)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut actions = Vec::new();
    for (d, (name, id)) in observed.iter().zip(names_for(node, observed)) {
        seen.insert(name.clone());
        let current = by_name.get(name.as_str()).copied();
        let c = classify(d, lvm, current.map(|ld| &ld.spec));
        let status = observed_status(d, &id, &c);
        match current {
            None => {
                let mut ld = LocalDisk::new(
                    &name,
                    LocalDiskSpec {
                        node_name: node.to_string(),
                        reserved: false,
                        claim_ref: None,
                        volume_ref: None,
                    },
                );
                ld.metadata = ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([(LABEL_NODE.to_string(), node.to_string())])),
                    ..ObjectMeta::default()
                };
                ld.status = Some(status);
                actions.push(DiskAction::Create(Box::new(ld)));
            }
            Some(ld) if ld.status.as_ref() != Some(&status) => {
                actions.push(DiskAction::UpdateStatus {
                    name,
                    status: Box::new(status),
                })
            }
            Some(_) => {}
        }
    }
    for ld in existing {
        let Some(name) = ld.metadata.name.as_deref() else {
            continue;
        };
        if seen.contains(name) || ld.spec.node_name != node {
            continue;
        }
        let mut status = ld.status.clone().unwrap_or_default();
        if status.state != Some(DiskPresence::Inactive) {
            status.state = Some(DiskPresence::Inactive);
            // A missing disk cannot be used; keep its last pool so nobody forgets it.
            if status.phase == Some(DiskPhase::Available) {
                status.phase = Some(DiskPhase::Unavailable);
            }
            status.reason = Some("disk not found on the node".to_string());
            status.reasons = vec!["disk not found on the node".to_string()];
            actions.push(DiskAction::UpdateStatus {
                name: name.to_string(),
                status: Box::new(status),
            });
        }
    }
    actions
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::discovery::ObservedPartition;
    use crate::lvm::Pv;
    use hwameistor_api::ObjectRef;

    pub fn disk(name: &str, serial: Option<&str>, size: i64) -> ObservedDisk {
        ObservedDisk {
            kernel_name: name.into(),
            device_path: format!("/dev/{name}"),
            major: 252,
            minor: 16,
            size_bytes: size,
            rotational: true,
            nvme: false,
            removable: false,
            read_only: false,
            serial: serial.map(Into::into),
            wwn: None,
            model: None,
            vendor: Some("0x1af4".into()),
            dev_links: serial
                .map(|s| vec![format!("/dev/disk/by-id/virtio-{s}")])
                .unwrap_or_default(),
            signature: None,
            partition_table: None,
            partitions: vec![],
            holders: vec![],
            mount_points: vec![],
        }
    }

    #[test]
    fn names_follow_serials_not_kernel_names() {
        let a = disk("vdb", Some("S1"), 1 << 30);
        let mut moved = disk("vdd", Some("S1"), 1 << 30);
        moved.minor = 48;
        assert_eq!(
            names_for("n1", std::slice::from_ref(&a))[0].0,
            names_for("n1", &[moved])[0].0
        );
        assert_ne!(
            names_for("n1", std::slice::from_ref(&a))[0].0,
            names_for("n2", std::slice::from_ref(&a))[0].0
        );
        let name = &names_for("n1", &[a])[0].0;
        assert!(name.starts_with("ld-") && name.len() == 23, "{name}");
    }

    #[test]
    fn wwn_beats_serial_and_path_is_the_last_resort() {
        let mut d = disk("sda", Some("S"), 1 << 30);
        d.wwn = Some("0x5000c500a1b2c3d4".into());
        assert_eq!(identity(&d).source, IdentitySource::Wwn);
        let mut p = disk("sdb", None, 1 << 30);
        p.dev_links = vec!["/dev/disk/by-path/pci-0000:00:05.0".into()];
        assert_eq!(
            identity(&p),
            Identity {
                source: IdentitySource::Path,
                key: "path:/dev/disk/by-path/pci-0000:00:05.0".into()
            }
        );
    }

    #[test]
    fn duplicate_serials_on_one_node_get_distinct_names() {
        let mut a = disk("sdb", Some("DUP"), 1 << 30);
        a.dev_links.push("/dev/disk/by-path/usb-1".into());
        let mut b = disk("sdc", Some("DUP"), 1 << 30);
        b.dev_links.push("/dev/disk/by-path/usb-2".into());
        let names = names_for("n", &[a, b]);
        assert_ne!(names[0].0, names[1].0);
    }

    #[test]
    fn disks_in_use_are_unavailable_with_every_reason() {
        let lvm = LvmState::default();
        let mut d = disk("vdb", Some("S"), 1 << 30);
        assert_eq!(classify(&d, &lvm, None).phase, DiskPhase::Available);
        d.signature = Some("xfs".into());
        d.mount_points = vec!["/data".into()];
        let c = classify(&d, &lvm, None);
        assert_eq!(c.phase, DiskPhase::Unavailable);
        assert_eq!(c.reasons, ["carries a xfs signature", "mounted at /data"]);

        let mut p = disk("vdc", Some("T"), 1 << 30);
        p.partition_table = Some("gpt".into());
        p.partitions = vec![ObservedPartition {
            name: "vdc1".into(),
            size_bytes: 1 << 20,
            signature: Some("ext4".into()),
            mount_points: vec![],
            holders: vec!["dm-0".into()],
        }];
        let c = classify(&p, &lvm, None);
        assert_eq!(
            c.reasons,
            [
                "has a gpt partition table with 1 partition(s)",
                "held by dm-0"
            ]
        );

        let tiny = disk("vdd", Some("U"), 8 << 20);
        assert_eq!(classify(&tiny, &lvm, None).reasons, ["smaller than 16Mi"]);
    }

    #[test]
    fn lvm_membership_decides_ownership() {
        let d = disk("vdb", Some("S"), 1 << 30);
        let ours = LvmState {
            pvs: vec![Pv {
                name: "/dev/vdb".into(),
                vg_name: "LocalStorage_PoolHDD".into(),
                size: 1,
                free: 1,
            }],
            ..LvmState::default()
        };
        let c = classify(&d, &ours, None);
        assert_eq!(
            (c.phase, c.pool.as_deref()),
            (DiskPhase::Bound, Some("LocalStorage_PoolHDD"))
        );

        let foreign = LvmState {
            pvs: vec![Pv {
                name: "/dev/vdb".into(),
                vg_name: "ubuntu-vg".into(),
                size: 1,
                free: 1,
            }],
            ..LvmState::default()
        };
        assert_eq!(
            classify(&d, &foreign, None).reasons,
            ["LVM physical volume of foreign volume group ubuntu-vg"]
        );

        let bare = LvmState {
            pvs: vec![Pv {
                name: "/dev/vdb".into(),
                vg_name: String::new(),
                size: 1,
                free: 1,
            }],
            ..LvmState::default()
        };
        let claimed = LocalDiskSpec {
            node_name: "n".into(),
            reserved: false,
            claim_ref: Some(ObjectRef {
                name: "c".into(),
                uid: "u".into(),
            }),
            volume_ref: None,
        };
        assert_eq!(classify(&d, &bare, Some(&claimed)).phase, DiskPhase::Bound);
        assert_eq!(classify(&d, &bare, None).phase, DiskPhase::Unavailable);
    }

    #[test]
    fn a_disk_serving_a_raw_disk_volume_is_bound_whatever_it_carries() {
        let mut d = disk("vdb", Some("S"), 1 << 30);
        d.signature = Some("xfs".into());
        d.mount_points = vec!["/var/lib/kubelet/plugins/x".into()];
        let spec = LocalDiskSpec {
            node_name: "n".into(),
            reserved: false,
            claim_ref: None,
            volume_ref: Some(ObjectRef {
                name: "ldv-1".into(),
                uid: "u".into(),
            }),
        };
        let c = classify(&d, &LvmState::default(), Some(&spec));
        assert_eq!((c.phase, c.reasons.len()), (DiskPhase::Bound, 0));
        // Without the binding, the same disk is somebody's: Unavailable.
        assert_eq!(
            classify(&d, &LvmState::default(), None).phase,
            DiskPhase::Unavailable
        );
    }

    #[test]
    fn reserved_disks_are_kept_out() {
        let spec = LocalDiskSpec {
            node_name: "n".into(),
            reserved: true,
            claim_ref: None,
            volume_ref: None,
        };
        let c = classify(
            &disk("vdb", Some("S"), 1 << 30),
            &LvmState::default(),
            Some(&spec),
        );
        assert_eq!(c.phase, DiskPhase::Reserved);
    }

    #[test]
    fn plan_creates_updates_and_marks_missing_disks_inactive() {
        let lvm = LvmState::default();
        let a = disk("vdb", Some("A"), 1 << 30);
        let b = disk("vdc", Some("B"), 2 << 30);
        let first = plan("n", &[a.clone(), b.clone()], &lvm, &[]);
        assert_eq!(first.len(), 2);
        let existing: Vec<LocalDisk> = first
            .into_iter()
            .map(|a| match a {
                DiskAction::Create(ld) => *ld,
                other => panic!("{other:?}"),
            })
            .collect();
        // Same scan again: nothing to do.
        assert!(plan("n", &[a.clone(), b.clone()], &lvm, &existing).is_empty());
        // Disk B removed: it becomes Inactive, not deleted.
        let after = plan("n", std::slice::from_ref(&a), &lvm, &existing);
        match &after[..] {
            [DiskAction::UpdateStatus { status, .. }] => {
                assert_eq!(status.state, Some(DiskPresence::Inactive));
                assert_eq!(status.phase, Some(DiskPhase::Unavailable));
            }
            other => panic!("{other:?}"),
        }
        // Disk A renamed by the kernel: same object, new device path.
        let mut a2 = a;
        a2.device_path = "/dev/vdd".into();
        a2.kernel_name = "vdd".into();
        match &plan("n", &[a2, b], &lvm, &existing)[..] {
            [DiskAction::UpdateStatus { name, status }] => {
                assert_eq!(Some(name.as_str()), existing[0].metadata.name.as_deref());
                assert_eq!(status.device_path.as_deref(), Some("/dev/vdd"));
            }
            other => panic!("{other:?}"),
        }
    }
}
