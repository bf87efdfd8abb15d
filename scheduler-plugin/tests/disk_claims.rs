//! Pods with raw-disk claims (`disk.hwameistor.io`) through the extender, its caches filled
//! by hand as watches would fill them: a new claim needs a free disk of its type on the
//! pod's node, one per claim, none promised twice; a provisioned one keeps the pod on its
//! disk's node; what is held is let go once the disk is bound, and rebuilt after a restart
//! from the claims the volume binder handed to a node.

mod common;

use common::*;
use hwameistor_api::{
    DiskType, LocalDiskVolume, LocalDiskVolumeSpec, LocalDiskVolumeStatus, ObjectRef, WipePolicy,
};
use hwameistor_core::scheduling::Hold;
use hwameistor_scheduler_plugin::admission::uses_hwameistor;
use hwameistor_scheduler_plugin::cache::Caches;
use hwameistor_scheduler_plugin::claims::SELECTED_NODE;
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use hwameistor_scheduler_plugin::protocol::{ExtenderArgs, ExtenderFilterResult};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, PersistentVolume, PersistentVolumeSpec, Pod,
};
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "db";

/// Nodes a (SSD disks of 2 and 4 GiB), b (an SSD disk of 4 GiB, an HDD disk of 8 GiB) and
/// c (an SSD pool, no disk); disk StorageClasses of SSD and HDD disks.
fn caches() -> Arc<Caches> {
    let caches = Caches::new();
    caches.apply(poolless_node("a"));
    caches.apply(poolless_node("b"));
    caches.apply(storage_node("c", 100 * GI));
    for d in [
        free_disk("a-sdb", "a", DiskType::Ssd, 2 * GI),
        free_disk("a-sdc", "a", DiskType::Ssd, 4 * GI),
        free_disk("b-sdb", "b", DiskType::Ssd, 4 * GI),
        free_disk("b-sdc", "b", DiskType::Hdd, 8 * GI),
    ] {
        caches.apply(d);
    }
    caches.apply(disk_class("disk-ssd", "SSD"));
    caches.apply(disk_class("disk-hdd", "HDD"));
    caches
}

fn extender(caches: Arc<Caches>) -> Extender {
    caches.mark_ready();
    let ext = Extender::new(
        caches,
        Settings {
            // Every change of the caches seen at once.
            rebuild_every: Duration::ZERO,
            ..Default::default()
        },
        None,
    );
    ext.set_ready();
    ext
}

fn filter(ext: &Extender, p: &Pod, nodes: &[&str]) -> ExtenderFilterResult {
    ext.filter(&ExtenderArgs {
        pod: Some(p.clone()),
        nodenames: Some(nodes.iter().map(|n| n.to_string()).collect()),
        nodes: None,
    })
}

fn given(r: &ExtenderFilterResult) -> Vec<String> {
    r.nodenames.clone().unwrap_or_default()
}

/// The LocalDiskVolume the disk provisioner makes for claim `name` on `node`, bound to
/// `disk` when given.
fn disk_volume(name: &str, node: &str, disk: Option<&str>) -> LocalDiskVolume {
    let mut v = LocalDiskVolume::new(
        &format!("pvc-uid-{NS}-{name}"),
        LocalDiskVolumeSpec {
            node_name: node.into(),
            disk_type: DiskType::Ssd,
            required_capacity_bytes: GI,
            max_capacity_bytes: None,
            pvc_namespace: Some(NS.into()),
            pvc_name: Some(name.into()),
            wipe: WipePolicy::Signatures,
        },
    );
    v.status = Some(LocalDiskVolumeStatus {
        local_disk_name: disk.map(str::to_string),
        ..Default::default()
    });
    v
}

#[test]
fn new_disk_claims_go_where_a_free_disk_of_their_type_fits_each_and_are_held() {
    let caches = caches();
    for (name, class, bytes) in [
        ("x", "disk-ssd", 3 * GI),
        ("y", "disk-ssd", GI),
        ("z", "disk-ssd", 3 * GI),
        ("w", "disk-ssd", GI),
        ("h", "disk-hdd", 5 * GI),
    ] {
        caches.apply(claim(NS, name, class, bytes));
    }
    let ext = extender(caches.clone());
    let all = ["a", "b", "c"];

    // Two SSD disks (3 GiB, 1 GiB): only a has two, of the sizes asked.
    let p1 = pod(NS, "p1", &["x", "y"]);
    assert!(
        uses_hwameistor(&caches, &p1),
        "the webhook gives it our scheduler"
    );
    let r = filter(&ext, &p1, &all);
    assert_eq!(given(&r), ["a"], "{r:?}");
    assert_eq!(
        r.failed_and_unresolvable_nodes["b"],
        "b's free SSD disks: 4Gi; the pod's new disk volumes need 2 of them (at least 3Gi, at least 1Gi)"
    );
    assert_eq!(
        r.failed_and_unresolvable_nodes["c"],
        "c has no free SSD disk; the pod's new disk volumes need 2 of them (at least 3Gi, at least 1Gi)"
    );
    let held = ext.reservations();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|r| r.node == "a"
        && matches!(
            r.hold,
            Hold::Disk {
                disk_type: DiskType::Ssd,
                ..
            }
        )));

    // a's disks are both held for p1: another 3 GiB SSD claim goes to b.
    let p2 = pod(NS, "p2", &["z"]);
    assert_eq!(given(&filter(&ext, &p2, &all)), ["b"]);
    // Nothing left for a third SSD claim anywhere, and each node says why.
    let r = filter(&ext, &pod(NS, "p3", &["w"]), &all);
    assert_eq!(given(&r), Vec::<String>::new());
    assert!(
        r.failed_and_unresolvable_nodes["a"].contains("(2 held for other pods:"),
        "{r:?}"
    );
    assert!(
        r.failed_and_unresolvable_nodes["b"].contains("(1 held for other pods: at least 3Gi)"),
        "{r:?}"
    );
    // An HDD claim is not served by SSD disks; b's HDD disk is its.
    assert_eq!(given(&filter(&ext, &pod(NS, "p4", &["h"]), &all)), ["b"]);

    // p1 filtered again (its node did not work out): its own disks do not count against it.
    assert_eq!(given(&filter(&ext, &p1, &all)), ["a"]);
    assert_eq!(ext.reservations().len(), 4);

    // The provisioner made x's volume on a and bound a's 4 GiB disk: x is placed (its hold
    // goes, the disk is no longer free) and p1 may run only on a.
    caches.apply(disk_volume("x", "a", Some("a-sdc")));
    let mut bound = free_disk("a-sdc", "a", DiskType::Ssd, 4 * GI);
    bound.spec.volume_ref = Some(ObjectRef {
        name: format!("pvc-uid-{NS}-x"),
        ..Default::default()
    });
    caches.apply(bound);
    let held = ext.reservations();
    assert!(!held.iter().any(|r| r.pvc == format!("{NS}/x")), "{held:?}");
    assert_eq!(held.len(), 3);
    let r = filter(&ext, &p1, &all);
    assert_eq!(given(&r), ["a"], "{r:?}");
    assert_eq!(
        r.failed_and_unresolvable_nodes["b"],
        format!("volume pvc-uid-{NS}-x ({NS}/x) is on a, not on b")
    );
    // Still p3's 1 GiB has no disk: a's 2 GiB is y's.
    assert!(given(&filter(&ext, &pod(NS, "p3", &["w"]), &all)).is_empty());
}

#[test]
fn a_provisioned_disk_claim_keeps_its_pod_on_the_disks_node() {
    let caches = caches();
    // Bound through its PersistentVolume to a disk volume on b.
    let mut c = claim(NS, "bound", "disk-ssd", GI);
    c.spec.as_mut().expect("spec").volume_name = Some("pv-bound".into());
    caches.apply(c);
    caches.apply(disk_volume("bound", "b", Some("b-sdb")));
    let pv = |name: &str, handle: &str| PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            csi: Some(CSIPersistentVolumeSource {
                driver: hwameistor_csi::disk_controller::DISK_DRIVER_NAME.into(),
                volume_handle: handle.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    caches.apply(pv("pv-bound", &format!("pvc-uid-{NS}-bound")));
    // Its volume made but not bound to a disk yet (the claim not bound to its PV yet).
    caches.apply(claim(NS, "made", "disk-ssd", GI));
    caches.apply(disk_volume("made", "a", None));
    // A PV naming a disk volume that is gone.
    let mut lost = claim(NS, "lost", "disk-ssd", GI);
    lost.spec.as_mut().expect("spec").volume_name = Some("pv-lost".into());
    caches.apply(lost);
    caches.apply(pv("pv-lost", "pvc-gone"));
    let ext = extender(caches);
    let all = ["a", "b", "c"];

    assert_eq!(
        given(&filter(&ext, &pod(NS, "u1", &["bound"]), &all)),
        ["b"]
    );
    assert_eq!(given(&filter(&ext, &pod(NS, "u2", &["made"]), &all)), ["a"]);
    // Nothing is held for claims that exist.
    assert!(ext.reservations().is_empty());
    let r = filter(&ext, &pod(NS, "u3", &["bound", "made"]), &all);
    assert!(given(&r).is_empty(), "on two nodes: nowhere");
    let r = filter(&ext, &pod(NS, "u4", &["lost"]), &all);
    assert!(given(&r).is_empty());
    assert_eq!(
        r.failed_and_unresolvable_nodes["a"],
        format!("LocalDiskVolume pvc-gone of claim {NS}/lost does not exist")
    );
}

/// After a restart, the disks the volume binder handed to a node (the claims'
/// selected-node annotation) are held again from the claims alone.
#[test]
fn held_disks_are_rebuilt_from_claims_handed_to_a_node() {
    let caches = caches();
    for name in ["one", "two"] {
        let mut c = claim(NS, name, "disk-ssd", GI);
        c.metadata.annotations = Some([(SELECTED_NODE.to_string(), "a".to_string())].into());
        caches.apply(c);
    }
    caches.apply(claim(NS, "three", "disk-ssd", GI));
    let ext = extender(caches);
    let held = ext.reservations();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|r| r.pod_uid.is_empty() && r.node == "a"));
    // Both of a's SSD disks are spoken for; b's is free.
    assert_eq!(
        given(&filter(&ext, &pod(NS, "late", &["three"]), &["a", "b"])),
        ["b"]
    );
    // The pod of claim one, filtered again, is not refused its own disk.
    assert_eq!(
        given(&filter(&ext, &pod(NS, "owner", &["one"]), &["a"])),
        ["a"]
    );
}

/// A disk that is not free (reserved, in a pool, missing) is not counted.
#[test]
fn only_free_disks_count() {
    let caches = caches();
    let mut reserved = free_disk("b-sdb", "b", DiskType::Ssd, 4 * GI);
    reserved.spec.reserved = true;
    caches.apply(reserved);
    caches.apply(claim(NS, "q", "disk-ssd", 3 * GI));
    let ext = extender(caches.clone());
    let p = pod(NS, "q", &["q"]);
    assert_eq!(given(&filter(&ext, &p, &["b"])), Vec::<String>::new());
    caches.apply(free_disk("b-sdb", "b", DiskType::Ssd, 4 * GI));
    assert_eq!(given(&filter(&ext, &p, &["b"])), ["b"]);
}
