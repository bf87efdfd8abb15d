//! LocalDiskVolume decisions: which disk serves a volume, and the next step of the
//! controller (binding, giving back) and of the node agent (confirming, wiping). Pure.
//!
//! A disk is bound before the volume records it: `LocalDisk.spec.volumeRef` (set by a
//! compare-and-swap on the disk) is the truth, the volume's status follows it, so a
//! controller stopped between the two finds its own binding again. A bound disk is never
//! bound again silently: a volume whose disk lost its binding fails loudly (the data may be
//! there). A deleted volume's disk is wiped by its agent once nothing holds it, and only
//! then given back.

use crate::scheduling::{disks_suffice, DiskNeed};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    disk_unavailability, DiskPresence, DiskVolumeState, LocalDisk, LocalDiskVolume,
    LocalDiskVolumeStatus, WipePolicy, FINALIZER_DISK_VOLUME,
};

/// Whether a disk of `capacity` bytes may serve a volume asking for `required` bytes, at
/// most `max` (a CSI limit): the size rule of binding and of the scheduler's disk count.
pub fn size_fits(capacity: i64, required: i64, max: Option<i64>) -> bool {
    capacity >= required && max.is_none_or(|m| capacity <= m)
}

/// Whether `v` is still to be given a disk: not deleted, none bound to it, none recorded
/// (a volume whose disk lost its binding fails; it is not given another).
pub fn awaits_disk(v: &LocalDiskVolume, disks: &[LocalDisk]) -> bool {
    v.metadata.deletion_timestamp.is_none()
        && v.status
            .as_ref()
            .is_none_or(|s| s.local_disk_name.is_none())
        && bound_disk(v, disks).is_none()
}

/// What the volumes of `volumes` other than `v` still waiting for a disk of `v`'s node and
/// type ask (not deleted, no disk bound or recorded): what `v`'s choice must leave room for.
pub fn waiting_needs(
    v: &LocalDiskVolume,
    volumes: &[LocalDiskVolume],
    disks: &[LocalDisk],
) -> Vec<DiskNeed> {
    volumes
        .iter()
        .filter(|o| o.metadata.uid != v.metadata.uid)
        .filter(|o| o.spec.node_name == v.spec.node_name && o.spec.disk_type == v.spec.disk_type)
        .filter(|o| awaits_disk(o, disks))
        .map(|o| DiskNeed {
            required: o.spec.required_capacity_bytes,
            max: o.spec.max_capacity_bytes,
        })
        .collect()
}

/// The disk of `disks` for `v`: the smallest one on its node, of its type, free (the one
/// eligibility rule) and at least as large as it asks (ties: by name) that leaves the
/// volumes `waiting` on the node a disk each, as the scheduler counted them (a limit can
/// make the smallest the wrong one: a volume of at most 2 GiB needs the 2 GiB disk more
/// than one of at least 1 GiB does); the smallest when no choice leaves them all one. Or
/// why none fits.
pub fn choose_disk(
    v: &LocalDiskVolume,
    disks: &[LocalDisk],
    waiting: &[DiskNeed],
) -> Result<String, String> {
    let node = &v.spec.node_name;
    let want = v.spec.disk_type;
    let mut fits: Vec<(i64, String)> = Vec::new();
    let mut why: Vec<String> = Vec::new();
    for d in disks.iter().filter(|d| &d.spec.node_name == node) {
        let name = d.metadata.name.clone().unwrap_or_default();
        let st = d.status.clone().unwrap_or_default();
        if st.disk_type != Some(want) {
            continue;
        }
        if let Some(r) = disk_unavailability(d) {
            why.push(format!("{name}: {r}"));
            continue;
        }
        let cap = st.capacity_bytes.unwrap_or(0);
        let (required, max) = (v.spec.required_capacity_bytes, v.spec.max_capacity_bytes);
        if !size_fits(cap, required, max) {
            why.push(if cap < required {
                format!("{name}: {} is too small", format_size(cap))
            } else {
                format!(
                    "{name}: {} is larger than the limit {}",
                    format_size(cap),
                    format_size(max.unwrap_or_default())
                )
            });
            continue;
        }
        fits.push((cap, name));
    }
    fits.sort();
    let mut free: Vec<i64> = fits.iter().map(|(c, _)| *c).collect();
    free.extend(
        disks
            .iter()
            .filter(|d| &d.spec.node_name == node && disk_unavailability(d).is_none())
            .filter_map(|d| d.status.as_ref())
            .filter(|s| s.disk_type == Some(want))
            .filter_map(|s| s.capacity_bytes)
            .filter(|c| {
                !size_fits(
                    *c,
                    v.spec.required_capacity_bytes,
                    v.spec.max_capacity_bytes,
                )
            }),
    );
    free.sort_unstable();
    let leaves_room = |taken: i64| {
        let mut rest = free.clone();
        if let Some(i) = rest.iter().position(|c| *c == taken) {
            rest.remove(i);
        }
        disks_suffice(&rest, waiting)
    };
    let chosen = fits
        .iter()
        .find(|(c, _)| leaves_room(*c))
        .or(fits.first())
        .map(|(_, name)| name.clone());
    match chosen {
        Some(name) => Ok(name),
        None if why.is_empty() => Err(format!("node {node} has no {want} disk (LocalDisk) at all")),
        None => Err(format!(
            "no free {want} disk of at least {} on node {node}: {}",
            format_size(v.spec.required_capacity_bytes),
            why.join("; ")
        )),
    }
}

/// The disk whose `volumeRef` names `v` (by uid), if any.
pub fn bound_disk<'a>(v: &LocalDiskVolume, disks: &'a [LocalDisk]) -> Option<&'a LocalDisk> {
    let uid = v.metadata.uid.as_deref().unwrap_or_default();
    disks.iter().find(|d| {
        d.spec
            .volume_ref
            .as_ref()
            .is_some_and(|r| !uid.is_empty() && r.uid == uid)
    })
}

/// The controller's next step for a disk volume.
#[derive(Clone, Debug, PartialEq)]
pub enum BindStep {
    AddFinalizer,
    /// Point the disk's `spec.volumeRef` at the volume (compare-and-swap on the disk as read).
    Bind(String),
    /// Write the volume's status.
    Status(Box<LocalDiskVolumeStatus>),
    /// Clear the disk's `spec.volumeRef` (compare-and-swap): it is wiped and free again.
    Release(String),
    RemoveFinalizer,
    /// Nothing until something changes (the agent acts next).
    Wait,
}

fn has_finalizer(v: &LocalDiskVolume) -> bool {
    v.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER_DISK_VOLUME)
}

/// `st` as a step, or a wait when the volume has it already.
fn status_step(v: &LocalDiskVolume, st: LocalDiskVolumeStatus) -> BindStep {
    if v.status.as_ref() == Some(&st) {
        BindStep::Wait
    } else {
        BindStep::Status(Box::new(st))
    }
}

/// Decides the controller's next step for `v` among every LocalDisk.
///
/// `waiting`: what the node's other volumes still waiting for a disk ask ([`waiting_needs`]).
pub fn controller_step(v: &LocalDiskVolume, disks: &[LocalDisk], waiting: &[DiskNeed]) -> BindStep {
    let name = v.metadata.name.clone().unwrap_or_default();
    let st = v.status.clone().unwrap_or_default();
    let bound = bound_disk(v, disks);
    if v.metadata.deletion_timestamp.is_some() {
        let Some(d) = bound else {
            return if has_finalizer(v) {
                BindStep::RemoveFinalizer
            } else {
                BindStep::Wait
            };
        };
        let disk = d.metadata.name.clone().unwrap_or_default();
        if st.wiped {
            return BindStep::Release(disk);
        }
        let mut next = st.clone();
        next.state = Some(DiskVolumeState::Releasing);
        next.local_disk_name = Some(disk.clone());
        if next.message.is_none() || st.state != Some(DiskVolumeState::Releasing) {
            next.message = Some(format!(
                "deleted: the node agent on {} wipes disk {disk}, then it is given back",
                v.spec.node_name
            ));
        }
        return status_step(v, next);
    }
    if !has_finalizer(v) {
        return BindStep::AddFinalizer;
    }
    if let Some(d) = bound {
        let disk = d.metadata.name.clone().unwrap_or_default();
        if st.local_disk_name.as_deref() == Some(disk.as_str()) {
            return BindStep::Wait;
        }
        let mut next = st;
        next.state = Some(DiskVolumeState::Bound);
        next.local_disk_name = Some(disk.clone());
        next.capacity_bytes = d.status.as_ref().and_then(|s| s.capacity_bytes);
        next.message = Some(format!(
            "disk {disk} bound; waiting for the node agent on {} to confirm it",
            v.spec.node_name
        ));
        return status_step(v, next);
    }
    if let Some(disk) = st.local_disk_name.as_deref() {
        // It was bound and no longer is: its data may still be on that disk. Never bind
        // another one silently.
        let mut next = st.clone();
        next.state = Some(DiskVolumeState::Failed);
        next.message = Some(format!(
            "disk {disk} no longer names volume {name} (its LocalDisk was deleted or its volumeRef cleared); the volume's data may be on it: check the disk, then delete this volume"
        ));
        return status_step(v, next);
    }
    match choose_disk(v, disks, waiting) {
        Ok(d) => BindStep::Bind(d),
        Err(why) => {
            let mut next = st;
            next.state = Some(DiskVolumeState::Pending);
            next.message = Some(why);
            status_step(v, next)
        }
    }
}

/// The node agent's next step for a disk volume.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeStep {
    /// Not this node's, or nothing to do.
    Nothing,
    /// Report the volume Ready on the disk's stable path.
    Ready { device_path: String, capacity: i64 },
    /// Report why it is not usable (state Failed).
    Failed(String),
    /// Erase the released disk at `device` (its current kernel path) as `policy` says, then
    /// report it wiped.
    Wipe { device: String, policy: WipePolicy },
    /// Not yet; the reason goes into the message.
    Wait(String),
}

/// The disk's most stable path: a `/dev/disk/by-id/` link (WWN first), else by-path, else
/// the kernel name.
pub fn stable_path(d: &LocalDisk) -> Option<String> {
    let st = d.status.as_ref()?;
    let by = |part: &str| {
        st.dev_links
            .iter()
            .filter(|l| l.contains(part))
            .min()
            .cloned()
    };
    st.dev_links
        .iter()
        .find(|l| l.contains("/by-id/wwn-"))
        .cloned()
        .or_else(|| by("/by-id/"))
        .or_else(|| by("/by-path/"))
        .or_else(|| st.device_path.clone())
}

/// What holds disk `d` now (mounts and stacked devices, on it or its partitions).
fn users(d: &LocalDisk) -> Vec<String> {
    let Some(st) = d.status.as_ref() else {
        return Vec::new();
    };
    st.mount_points
        .iter()
        .map(|m| format!("mounted at {m}"))
        .chain(st.holders.iter().map(|h| format!("held by {h}")))
        .chain(st.partitions.iter().flat_map(|p| {
            p.mount_points
                .iter()
                .map(move |m| format!("{} mounted at {m}", p.name))
        }))
        .collect()
}

/// Decides the agent of `node`'s next step for `v`, among the node's disks.
pub fn node_step(node: &str, v: &LocalDiskVolume, disks: &[LocalDisk]) -> NodeStep {
    if v.spec.node_name != node {
        return NodeStep::Nothing;
    }
    let st = v.status.clone().unwrap_or_default();
    let Some(d) = bound_disk(v, disks).filter(|d| d.spec.node_name == node) else {
        return NodeStep::Nothing;
    };
    let disk = d.metadata.name.clone().unwrap_or_default();
    let dst = d.status.clone().unwrap_or_default();
    let present = dst.state == Some(DiskPresence::Active);
    if v.metadata.deletion_timestamp.is_some() {
        if st.wiped {
            return NodeStep::Nothing;
        }
        if !present {
            return NodeStep::Wait(format!(
                "disk {disk} is not present on {node}: it cannot be wiped, so it is not given back; delete its LocalDisk once it is gone for good"
            ));
        }
        if !st.published_targets.is_empty() {
            // A raw block volume bound into a pod shows in no mount table: the record is
            // what says it is in use.
            return NodeStep::Wait(format!(
                "volume is still published at {}; its disk {disk} is wiped once unpublished",
                st.published_targets.join(", ")
            ));
        }
        let held = users(d);
        if !held.is_empty() {
            return NodeStep::Wait(format!(
                "disk {disk} is still in use ({}); it is wiped once unpublished",
                held.join(", ")
            ));
        }
        return match dst.device_path {
            Some(device) => NodeStep::Wipe {
                device,
                policy: v.spec.wipe,
            },
            None => NodeStep::Wait(format!("disk {disk} has no device path yet")),
        };
    }
    if st.local_disk_name.as_deref() != Some(disk.as_str()) {
        // The controller records the binding first.
        return NodeStep::Nothing;
    }
    if !present {
        let msg = format!("disk {disk} is not present on {node}");
        return if st.state == Some(DiskVolumeState::Failed) && st.message.as_deref() == Some(&msg) {
            NodeStep::Nothing
        } else {
            NodeStep::Failed(msg)
        };
    }
    let Some(path) = stable_path(d) else {
        return NodeStep::Wait(format!("disk {disk} has no device path yet"));
    };
    let capacity = dst.capacity_bytes.unwrap_or(0);
    if st.state == Some(DiskVolumeState::Ready)
        && st.device_path.as_deref() == Some(path.as_str())
        && st.capacity_bytes == Some(capacity)
    {
        return NodeStep::Nothing;
    }
    NodeStep::Ready {
        device_path: path,
        capacity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{
        DiskPhase, DiskType, LocalDiskSpec, LocalDiskStatus, LocalDiskVolumeSpec, ObjectRef,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const GI: i64 = 1 << 30;

    fn disk(name: &str, node: &str, t: DiskType, cap: i64) -> LocalDisk {
        let mut d = LocalDisk::new(
            name,
            LocalDiskSpec {
                node_name: node.into(),
                reserved: false,
                claim_ref: None,
                volume_ref: None,
            },
        );
        d.status = Some(LocalDiskStatus {
            state: Some(DiskPresence::Active),
            phase: Some(DiskPhase::Available),
            device_path: Some(format!("/dev/{name}")),
            dev_links: vec![
                format!("/dev/disk/by-path/pci-0000:00:{name}"),
                format!("/dev/disk/by-id/virtio-{name}"),
            ],
            disk_type: Some(t),
            capacity_bytes: Some(cap),
            ..Default::default()
        });
        d
    }

    fn ldv(name: &str, node: &str, t: DiskType, want: i64) -> LocalDiskVolume {
        let mut v = LocalDiskVolume::new(
            name,
            LocalDiskVolumeSpec {
                node_name: node.into(),
                disk_type: t,
                required_capacity_bytes: want,
                max_capacity_bytes: None,
                pvc_namespace: None,
                pvc_name: None,
                wipe: WipePolicy::Signatures,
            },
        );
        v.metadata.uid = Some(format!("{name}-uid"));
        v.metadata.finalizers = Some(vec![FINALIZER_DISK_VOLUME.into()]);
        v
    }

    fn bind(d: &mut LocalDisk, v: &LocalDiskVolume) {
        d.spec.volume_ref = Some(ObjectRef {
            name: v.metadata.name.clone().unwrap_or_default(),
            uid: v.metadata.uid.clone().unwrap_or_default(),
        });
        if let Some(s) = d.status.as_mut() {
            s.phase = Some(DiskPhase::Bound);
        }
    }

    /// Applies the controller's steps until it waits (at most 10).
    fn settle(v: &mut LocalDiskVolume, disks: &mut [LocalDisk]) -> Vec<BindStep> {
        settle_with(v, disks, &[])
    }

    /// The same, with volumes `waiting` on the node.
    fn settle_with(
        v: &mut LocalDiskVolume,
        disks: &mut [LocalDisk],
        waiting: &[DiskNeed],
    ) -> Vec<BindStep> {
        let mut log = Vec::new();
        for _ in 0..10 {
            let step = controller_step(v, disks, waiting);
            log.push(step.clone());
            match step {
                BindStep::Wait => return log,
                BindStep::AddFinalizer => {
                    v.metadata.finalizers = Some(vec![FINALIZER_DISK_VOLUME.into()])
                }
                BindStep::Bind(name) => {
                    let d = disks
                        .iter_mut()
                        .find(|d| d.metadata.name.as_deref() == Some(name.as_str()))
                        .expect("disk");
                    assert!(d.spec.volume_ref.is_none(), "bound twice");
                    bind(d, v);
                }
                BindStep::Status(st) => v.status = Some(*st),
                BindStep::Release(name) => {
                    let d = disks
                        .iter_mut()
                        .find(|d| d.metadata.name.as_deref() == Some(name.as_str()))
                        .expect("disk");
                    d.spec.volume_ref = None;
                }
                BindStep::RemoveFinalizer => {
                    v.metadata.finalizers = None;
                    return log;
                }
            }
        }
        panic!("no rest: {log:?}");
    }

    #[test]
    fn a_choice_leaves_the_volumes_waiting_on_the_node_a_disk_each() {
        let mut disks = vec![
            disk("sdb", "n1", DiskType::Hdd, 2 * GI),
            disk("sdc", "n1", DiskType::Hdd, 5 * GI),
            disk("sdd", "n1", DiskType::Ssd, GI),
        ];
        let any = ldv("any", "n1", DiskType::Hdd, GI);
        let mut capped = ldv("capped", "n1", DiskType::Hdd, GI);
        capped.spec.max_capacity_bytes = Some(2 * GI);
        let ssd = ldv("ssd", "n1", DiskType::Ssd, GI);
        let mut gone = ldv("gone", "n1", DiskType::Hdd, GI);
        gone.spec.max_capacity_bytes = Some(GI);
        gone.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let all = vec![any.clone(), capped.clone(), ssd, gone];
        // Only `capped` waits beside `any` (another type, or deleted, does not count).
        let waiting = waiting_needs(&any, &all, &disks);
        assert_eq!(
            waiting,
            [DiskNeed {
                required: GI,
                max: Some(2 * GI)
            }]
        );
        // The smallest (2 GiB) would leave `capped` only the 5 GiB, above its limit.
        assert_eq!(choose_disk(&any, &disks, &waiting), Ok("sdc".into()));
        assert_eq!(choose_disk(&any, &disks, &[]), Ok("sdb".into()));
        // Bound in either order, both get one.
        let (mut a, mut c) = (any.clone(), capped.clone());
        settle_with(&mut a, &mut disks, &waiting);
        let waiting = waiting_needs(&c, &[a.clone(), c.clone()], &disks);
        assert!(waiting.is_empty(), "any is bound: {waiting:?}");
        settle_with(&mut c, &mut disks, &waiting);
        let of = |v: &LocalDiskVolume| v.status.as_ref().and_then(|s| s.local_disk_name.clone());
        assert_eq!((of(&a), of(&c)), (Some("sdc".into()), Some("sdb".into())));
        // When no choice leaves every waiting volume a disk, the smallest that fits.
        let mut fresh = vec![
            disk("sdb", "n1", DiskType::Hdd, 2 * GI),
            disk("sdc", "n1", DiskType::Hdd, 5 * GI),
        ];
        let impossible = [DiskNeed {
            required: 9 * GI,
            max: None,
        }];
        let mut v = any.clone();
        settle_with(&mut v, &mut fresh, &impossible);
        assert_eq!(of(&v), Some("sdb".into()));
    }

    #[test]
    fn the_smallest_free_disk_of_the_type_that_fits_is_chosen() {
        let mut taken = disk("sdb", "n1", DiskType::Hdd, 100 * GI);
        taken.spec.claim_ref = Some(ObjectRef {
            name: "pool-claim".into(),
            uid: "c".into(),
        });
        let mut reserved = disk("sdc", "n1", DiskType::Hdd, 60 * GI);
        reserved.spec.reserved = true;
        let disks = vec![
            taken,
            reserved,
            disk("sdd", "n1", DiskType::Hdd, 500 * GI),
            disk("sde", "n1", DiskType::Hdd, 200 * GI),
            disk("sdf", "n1", DiskType::Hdd, 20 * GI),
            disk("nvme0n1", "n1", DiskType::Nvme, 80 * GI),
            disk("sdg", "n2", DiskType::Hdd, 60 * GI),
        ];
        let v = ldv("v", "n1", DiskType::Hdd, 50 * GI);
        assert_eq!(choose_disk(&v, &disks, &[]), Ok("sde".into()));
        let big = ldv("v", "n1", DiskType::Hdd, 600 * GI);
        let e = choose_disk(&big, &disks, &[]).unwrap_err();
        assert!(
            e.starts_with("no free HDD disk of at least 600Gi on node n1"),
            "{e}"
        );
        assert!(e.contains("sdb: bound to claim pool-claim"), "{e}");
        assert!(e.contains("sdc: reserved"), "{e}");
        assert!(e.contains("sdd: 500Gi is too small"), "{e}");
        let mut capped = ldv("v", "n1", DiskType::Hdd, 50 * GI);
        capped.spec.max_capacity_bytes = Some(150 * GI);
        let e = choose_disk(&capped, &disks, &[]).unwrap_err();
        assert!(
            e.contains("sde: 200Gi is larger than the limit 150Gi"),
            "{e}"
        );
        capped.spec.max_capacity_bytes = Some(200 * GI);
        assert_eq!(choose_disk(&capped, &disks, &[]), Ok("sde".into()));
        let ssd = ldv("v", "n1", DiskType::Ssd, GI);
        assert_eq!(
            choose_disk(&ssd, &disks, &[]),
            Err("node n1 has no SSD disk (LocalDisk) at all".into())
        );
    }

    #[test]
    fn a_volume_binds_its_disk_before_recording_it_and_finds_it_again_after_a_crash() {
        let mut disks = vec![
            disk("sdb", "n1", DiskType::Hdd, 100 * GI),
            disk("sdc", "n1", DiskType::Hdd, 50 * GI),
        ];
        let mut v = ldv("v", "n1", DiskType::Hdd, 10 * GI);
        v.metadata.finalizers = None;
        let log = settle(&mut v, &mut disks);
        assert_eq!(log[0], BindStep::AddFinalizer);
        assert_eq!(log[1], BindStep::Bind("sdc".into()));
        let st = v.status.clone().expect("status");
        assert_eq!(st.state, Some(DiskVolumeState::Bound));
        assert_eq!(st.local_disk_name.as_deref(), Some("sdc"));
        assert_eq!(st.capacity_bytes, Some(50 * GI));
        // A crash after the bind, before the status: the same disk, never a second one.
        let mut again = ldv("v", "n1", DiskType::Hdd, 10 * GI);
        assert!(matches!(
            controller_step(&again, &disks, &[]),
            BindStep::Status(_)
        ));
        settle(&mut again, &mut disks);
        assert_eq!(
            again.status.and_then(|s| s.local_disk_name).as_deref(),
            Some("sdc")
        );
        // A second volume gets the other disk; a third waits, saying why.
        let mut w = ldv("w", "n1", DiskType::Hdd, 10 * GI);
        settle(&mut w, &mut disks);
        assert_eq!(
            w.status.and_then(|s| s.local_disk_name).as_deref(),
            Some("sdb")
        );
        let mut x = ldv("x", "n1", DiskType::Hdd, 10 * GI);
        settle(&mut x, &mut disks);
        let st = x.status.expect("status");
        assert_eq!(st.state, Some(DiskVolumeState::Pending));
        assert!(st
            .message
            .unwrap_or_default()
            .contains("sdc: used by disk volume v"));
    }

    #[test]
    fn a_disk_that_lost_its_binding_fails_the_volume_and_is_never_replaced_silently() {
        let mut disks = vec![
            disk("sdb", "n1", DiskType::Hdd, 100 * GI),
            disk("sdc", "n1", DiskType::Hdd, 100 * GI),
        ];
        let mut v = ldv("v", "n1", DiskType::Hdd, 10 * GI);
        settle(&mut v, &mut disks);
        disks[0].spec.volume_ref = None;
        let log = settle(&mut v, &mut disks);
        assert!(!log.iter().any(|s| matches!(s, BindStep::Bind(_))));
        let st = v.status.expect("status");
        assert_eq!(st.state, Some(DiskVolumeState::Failed));
        assert!(st
            .message
            .unwrap_or_default()
            .contains("the volume's data may be on it"));
    }

    #[test]
    fn a_deleted_volume_s_disk_is_wiped_by_its_agent_once_unused_then_given_back() {
        let mut disks = vec![disk("sdb", "n1", DiskType::Hdd, 100 * GI)];
        let mut v = ldv("v", "n1", DiskType::Hdd, 10 * GI);
        v.spec.wipe = WipePolicy::Full;
        settle(&mut v, &mut disks);
        // The agent confirms it, on its stable path.
        assert_eq!(node_step("n2", &v, &disks), NodeStep::Nothing);
        assert_eq!(
            node_step("n1", &v, &disks),
            NodeStep::Ready {
                device_path: "/dev/disk/by-id/virtio-sdb".into(),
                capacity: 100 * GI
            }
        );
        let mut st = v.status.clone().unwrap();
        st.state = Some(DiskVolumeState::Ready);
        st.device_path = Some("/dev/disk/by-id/virtio-sdb".into());
        v.status = Some(st);
        assert_eq!(node_step("n1", &v, &disks), NodeStep::Nothing);
        // Deleted while mounted: the agent waits; the controller keeps the disk bound.
        v.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        disks[0].status.as_mut().unwrap().mount_points = vec!["/var/lib/kubelet/x".into()];
        settle(&mut v, &mut disks);
        assert_eq!(
            v.status.as_ref().unwrap().state,
            Some(DiskVolumeState::Releasing)
        );
        assert!(disks[0].spec.volume_ref.is_some());
        assert!(
            matches!(node_step("n1", &v, &disks), NodeStep::Wait(w) if w.contains("mounted at /var/lib/kubelet/x"))
        );
        disks[0].status.as_mut().unwrap().mount_points.clear();
        // Bound into a pod as a raw block device: no mount shows it, the record does.
        let target = "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/v/pod";
        v.status.as_mut().unwrap().published_targets = vec![target.into()];
        assert!(
            matches!(node_step("n1", &v, &disks), NodeStep::Wait(w) if w.contains(target)),
            "{:?}",
            node_step("n1", &v, &disks)
        );
        v.status.as_mut().unwrap().published_targets.clear();
        assert_eq!(
            node_step("n1", &v, &disks),
            NodeStep::Wipe {
                device: "/dev/sdb".into(),
                policy: WipePolicy::Full
            }
        );
        v.status.as_mut().unwrap().wiped = true;
        assert_eq!(node_step("n1", &v, &disks), NodeStep::Nothing);
        let log = settle(&mut v, &mut disks);
        assert_eq!(log[0], BindStep::Release("sdb".into()));
        assert_eq!(log.last(), Some(&BindStep::RemoveFinalizer));
        assert!(disks[0].spec.volume_ref.is_none());
    }

    #[test]
    fn a_missing_disk_fails_the_volume_and_is_not_wiped_or_given_back() {
        let mut disks = vec![disk("sdb", "n1", DiskType::Hdd, 100 * GI)];
        let mut v = ldv("v", "n1", DiskType::Hdd, 10 * GI);
        settle(&mut v, &mut disks);
        disks[0].status.as_mut().unwrap().state = Some(DiskPresence::Inactive);
        assert_eq!(
            node_step("n1", &v, &disks),
            NodeStep::Failed("disk sdb is not present on n1".into())
        );
        v.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert!(
            matches!(node_step("n1", &v, &disks), NodeStep::Wait(w) if w.contains("cannot be wiped"))
        );
        settle(&mut v, &mut disks);
        assert!(disks[0].spec.volume_ref.is_some(), "kept bound");
    }
}
