//! What a pod asks of storage, read from the caches: each of its claims either bound to a
//! LocalVolume or a LocalDiskVolume (the pod goes where a replica, or the disk, can serve
//! it), new on a HwameiStor StorageClass of either driver (the pod goes where it fits), or
//! not HwameiStor's (ignored).

use crate::cache::{Caches, ClaimView, DataSourceRef, DiskVolumeView, VolumeView};
use hwameistor_api::quantity::parse_size;
use hwameistor_api::CSI_DRIVER_NAME;
use hwameistor_core::scheduling::{BoundClaim, DiskNeed, NewClaim, NewDiskClaim, PodClaims};
use hwameistor_core::sizing::{self, FsType, VolumeAccess};
use hwameistor_csi::disk_controller::DISK_DRIVER_NAME;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::StorageClass;
use std::sync::Arc;

pub use crate::cache::SELECTED_NODE;

pub use hwameistor_core::pod::claim_names;

/// StorageClass `class`, when it provisions HwameiStor volumes of either kind (as far as
/// the caches know).
pub fn our_class(caches: &Caches, class: Option<&str>) -> Option<Arc<StorageClass>> {
    class
        .and_then(|c| caches.classes.get(c))
        .filter(|c| c.provisioner == CSI_DRIVER_NAME || c.provisioner == DISK_DRIVER_NAME)
}

/// Whether claim `c` is, or will be, a HwameiStor volume: bound to one, or not bound yet
/// on a HwameiStor class.
pub fn is_ours(caches: &Caches, c: &ClaimView) -> bool {
    match provisioned(caches, c) {
        Ok(Provisioned::Ours(_) | Provisioned::OursDisk(_)) => true,
        Ok(Provisioned::Elsewhere) => false,
        // Not provisioned, or bound to a volume the caches do not know: by its class.
        Ok(Provisioned::No) | Err(_) => our_class(caches, c.class.as_deref()).is_some(),
    }
}

/// What became of a claim: bound to a HwameiStor volume (LVM or whole disk), bound
/// elsewhere, or not yet.
enum Provisioned {
    Ours(Arc<VolumeView>),
    OursDisk(Arc<DiskVolumeView>),
    Elsewhere,
    No,
}

/// The LocalVolume or LocalDiskVolume a claim was provisioned as, if it was: through its
/// bound PersistentVolume, or (bound not yet) by the name the provisioner gives it.
fn provisioned(caches: &Caches, c: &ClaimView) -> Result<Provisioned, String> {
    if let Some(pv_name) = &c.volume {
        let Some(pv) = caches.pvs.get(pv_name) else {
            return Err(format!(
                "PersistentVolume {pv_name} of claim {} is not known (yet)",
                c.key
            ));
        };
        return match pv.driver.as_deref() {
            Some(CSI_DRIVER_NAME) => match caches.volumes.get(&pv.handle) {
                Some(v) => Ok(Provisioned::Ours(v)),
                None => Err(format!(
                    "LocalVolume {} of claim {} does not exist",
                    pv.handle, c.key
                )),
            },
            Some(DISK_DRIVER_NAME) => match caches.disk_volumes.get(&pv.handle) {
                Some(v) => Ok(Provisioned::OursDisk(v)),
                None => Err(format!(
                    "LocalDiskVolume {} of claim {} does not exist",
                    pv.handle, c.key
                )),
            },
            _ => Ok(Provisioned::Elsewhere),
        };
    }
    // The external-provisioner names a volume `pvc-<claim uid>`: created, PV not bound yet.
    let name = format!("pvc-{}", c.uid);
    if let Some(v) = caches.volumes.get(&name) {
        return Ok(Provisioned::Ours(v));
    }
    Ok(match caches.disk_volumes.get(&name) {
        Some(v) => Provisioned::OursDisk(v),
        None => Provisioned::No,
    })
}

/// Whether claim `c` is provisioned as a LocalVolume that is placed (its replicas counted
/// by the placement) or as a LocalDiskVolume with its disk bound (no longer free).
pub fn placed(caches: &Caches, c: &ClaimView) -> bool {
    match provisioned(caches, c) {
        Ok(Provisioned::Ours(v)) => v.config.is_some(),
        Ok(Provisioned::OursDisk(v)) => v.bound,
        _ => false,
    }
}

/// A new claim: for a volume in a pool, or for a whole disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum New {
    Pool(NewClaim),
    Disk(NewDiskClaim),
}

/// The new claim `c` is, when its StorageClass is HwameiStor's; `Err` when it is but
/// cannot be provisioned as asked.
pub fn new_claim(caches: &Caches, c: &ClaimView) -> Result<Option<New>, String> {
    let Some(class) = our_class(caches, c.class.as_deref()) else {
        return Ok(None);
    };
    let class_name = class.metadata.name.as_deref().unwrap_or_default();
    let key = &c.key;
    let size = |q: &Option<String>| {
        q.as_deref()
            .map(|q| parse_size(q).map_err(|e| format!("claim {key}: {e}")))
            .transpose()
    };
    let required = size(&c.request)?.unwrap_or(0);
    let limit = size(&c.limit)?.unwrap_or(0);
    if class.provisioner == DISK_DRIVER_NAME {
        let given: std::collections::HashMap<String, String> = class
            .parameters
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let params = hwameistor_csi::disk_controller::parse_params(&given)
            .map_err(|e| format!("claim {key}: StorageClass {class_name}: {}", e.message()))?;
        if limit > 0 && limit < required {
            return Err(format!(
                "claim {key}: its limit is below its request; a disk volume needs a disk between the two"
            ));
        }
        // The disk driver's own size rule: at least the request, at most the limit.
        return Ok(Some(New::Disk(NewDiskClaim {
            pvc: key.clone(),
            disk_type: params.disk_type,
            need: DiskNeed {
                required: required.max(1),
                max: (limit > 0).then_some(limit),
            },
        })));
    }
    let params = hwameistor_csi::params::parse(class.parameters.iter().flatten())
        .map_err(|e| format!("claim {key}: StorageClass {class_name}: {e}"))?;
    let access = if c.block {
        VolumeAccess::Block
    } else {
        VolumeAccess::Filesystem(params.fs_type.unwrap_or(FsType::Xfs))
    };
    let bytes =
        sizing::volume_size(required, limit, access).map_err(|e| format!("claim {key}: {e}"))?;
    let replicas = params.replicas.get();
    let data_nodes = data_nodes(caches, c);
    Ok(Some(New::Pool(NewClaim {
        pvc: key.clone(),
        class: params.pool_class,
        bytes,
        replicated: replicas > 1 || params.convertible,
        second: replicas > 1,
        thin: params.thin,
        data_nodes,
    })))
}

/// The nodes holding the data claim `c` is restored or cloned from: a VolumeSnapshot's
/// LocalVolumeSnapshot's node, or the nodes serving the cloned claim's volume. Empty when it
/// has no data source or its data is not (yet) known here.
fn data_nodes(caches: &Caches, c: &ClaimView) -> Vec<String> {
    let ns = c.key.split_once('/').map(|(ns, _)| ns).unwrap_or_default();
    match &c.data_source {
        None => Vec::new(),
        Some(DataSourceRef::Snapshot(name)) => {
            let want = format!("{ns}/{name}");
            caches
                .snapshots
                .all()
                .iter()
                .filter(|s| s.volume_snapshot.as_deref() == Some(want.as_str()))
                .map(|s| s.node.clone())
                .collect()
        }
        Some(DataSourceRef::Claim(name)) => caches
            .claims
            .get(&format!("{ns}/{name}"))
            .and_then(|src| match provisioned(caches, &src) {
                Ok(Provisioned::Ours(v)) => Some(v.serving.clone()),
                _ => None,
            })
            .unwrap_or_default(),
    }
}

/// What `pod` asks of HwameiStor storage.
pub fn pod_claims(caches: &Caches, pod: &Pod) -> PodClaims {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = PodClaims {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    for name in claim_names(pod) {
        let Some(c) = caches.claims.get(&format!("{ns}/{name}")) else {
            out.blocked.push(format!(
                "PersistentVolumeClaim {ns}/{name} does not exist (yet)"
            ));
            continue;
        };
        match provisioned(caches, &c) {
            Err(why) => out.blocked.push(why),
            Ok(Provisioned::Ours(v)) => out.bound.push(BoundClaim {
                pvc: c.key.clone(),
                volume: v.name.clone(),
                nodes: v.serving.clone(),
            }),
            // A disk volume is made on its node and stays there, bound to a disk or not yet.
            Ok(Provisioned::OursDisk(v)) => out.bound.push(BoundClaim {
                pvc: c.key.clone(),
                volume: v.name.clone(),
                nodes: vec![v.node.clone()],
            }),
            Ok(Provisioned::Elsewhere) => {}
            Ok(Provisioned::No) => match new_claim(caches, &c) {
                Ok(Some(New::Pool(n))) => out.new.push(n),
                Ok(Some(New::Disk(n))) => out.disks.push(n),
                Ok(None) => {}
                Err(why) => out.blocked.push(why),
            },
        }
    }
    out
}
