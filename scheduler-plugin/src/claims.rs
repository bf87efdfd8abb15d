//! What a pod asks of storage, read from the caches: each of its claims either bound to a
//! LocalVolume (the pod goes where a replica can serve it), new on a HwameiStor
//! StorageClass (the pod goes where it fits), or not HwameiStor's (ignored).

use crate::cache::{Caches, ClaimView, VolumeView};
use hwameistor_api::quantity::parse_size;
use hwameistor_api::CSI_DRIVER_NAME;
use hwameistor_core::scheduling::{BoundClaim, NewClaim, PodClaims};
use hwameistor_core::sizing::{self, FsType, VolumeAccess};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::StorageClass;
use std::sync::Arc;

pub use crate::cache::SELECTED_NODE;

pub use hwameistor_core::pod::claim_names;

/// StorageClass `class`, when it provisions HwameiStor volumes (as far as the caches know).
pub fn our_class(caches: &Caches, class: Option<&str>) -> Option<Arc<StorageClass>> {
    class
        .and_then(|c| caches.classes.get(c))
        .filter(|c| c.provisioner == CSI_DRIVER_NAME)
}

/// Whether claim `c` is, or will be, a HwameiStor volume: bound to one, or not bound yet
/// on a HwameiStor class.
pub fn is_ours(caches: &Caches, c: &ClaimView) -> bool {
    match provisioned(caches, c) {
        Ok(Provisioned::Ours(_)) => true,
        Ok(Provisioned::Elsewhere) => false,
        // Not provisioned, or bound to a volume the caches do not know: by its class.
        Ok(Provisioned::No) | Err(_) => our_class(caches, c.class.as_deref()).is_some(),
    }
}

/// What became of a claim: bound to a HwameiStor volume, bound elsewhere, or not yet.
enum Provisioned {
    Ours(Arc<VolumeView>),
    Elsewhere,
    No,
}

/// The LocalVolume a claim was provisioned as, if it was: through its bound
/// PersistentVolume, or (bound not yet) by the name the provisioner gives it.
fn provisioned(caches: &Caches, c: &ClaimView) -> Result<Provisioned, String> {
    if let Some(pv_name) = &c.volume {
        let Some(pv) = caches.pvs.get(pv_name) else {
            return Err(format!(
                "PersistentVolume {pv_name} of claim {} is not known (yet)",
                c.key
            ));
        };
        if pv.driver.as_deref() != Some(CSI_DRIVER_NAME) {
            return Ok(Provisioned::Elsewhere);
        }
        return match caches.volumes.get(&pv.handle) {
            Some(v) => Ok(Provisioned::Ours(v)),
            None => Err(format!(
                "LocalVolume {} of claim {} does not exist",
                pv.handle, c.key
            )),
        };
    }
    // The external-provisioner names a volume `pvc-<claim uid>`: created, PV not bound yet.
    Ok(match caches.volumes.get(&format!("pvc-{}", c.uid)) {
        Some(v) => Provisioned::Ours(v),
        None => Provisioned::No,
    })
}

/// Whether claim `c` is provisioned as a LocalVolume that is placed (its replicas counted
/// by the placement).
pub fn placed(caches: &Caches, c: &ClaimView) -> bool {
    matches!(provisioned(caches, c), Ok(Provisioned::Ours(v)) if v.config.is_some())
}

/// The new claim `c` is, when its StorageClass is HwameiStor's; `Err` when it is but
/// cannot be provisioned as asked.
pub fn new_claim(caches: &Caches, c: &ClaimView) -> Result<Option<NewClaim>, String> {
    let Some(class) = our_class(caches, c.class.as_deref()) else {
        return Ok(None);
    };
    let class_name = class.metadata.name.as_deref().unwrap_or_default();
    let key = &c.key;
    let params = hwameistor_csi::params::parse(class.parameters.iter().flatten())
        .map_err(|e| format!("claim {key}: StorageClass {class_name}: {e}"))?;
    let size = |q: &Option<String>| {
        q.as_deref()
            .map(|q| parse_size(q).map_err(|e| format!("claim {key}: {e}")))
            .transpose()
    };
    let required = size(&c.request)?.unwrap_or(0);
    let limit = size(&c.limit)?.unwrap_or(0);
    let access = if c.block {
        VolumeAccess::Block
    } else {
        VolumeAccess::Filesystem(params.fs_type.unwrap_or(FsType::Xfs))
    };
    let bytes =
        sizing::volume_size(required, limit, access).map_err(|e| format!("claim {key}: {e}"))?;
    let replicas = params.replicas.get();
    Ok(Some(NewClaim {
        pvc: key.clone(),
        class: params.pool_class,
        bytes,
        replicated: replicas > 1 || params.convertible,
        second: replicas > 1,
    }))
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
            Ok(Provisioned::Elsewhere) => {}
            Ok(Provisioned::No) => match new_claim(caches, &c) {
                Ok(Some(n)) => out.new.push(n),
                Ok(None) => {}
                Err(why) => out.blocked.push(why),
            },
        }
    }
    out
}
