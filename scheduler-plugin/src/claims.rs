//! What a pod asks of storage, read from the caches: each of its claims either bound to a
//! LocalVolume (the pod goes where a replica can serve it), new on a HwameiStor
//! StorageClass (the pod goes where it fits), or not HwameiStor's (ignored).

use crate::cache::Caches;
use hwameistor_api::quantity::parse_size;
use hwameistor_api::{LocalVolume, CSI_DRIVER_NAME};
use hwameistor_core::scheduling::{BoundClaim, NewClaim, PodClaims};
use hwameistor_core::sizing::{self, FsType, VolumeAccess};
use hwameistor_core::volume::serving_nodes;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;

/// The annotation the scheduler's volume binder puts on a WaitForFirstConsumer claim once it
/// chose the pod's node (the provisioner then creates the volume there).
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The name of the claim behind each persistent or generic ephemeral volume of `pod`.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                // A generic ephemeral volume's claim is named after the pod and the volume.
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// The LocalVolume a claim was provisioned as, if it was: through its bound
/// PersistentVolume, or (bound not yet) by the name the provisioner gives it.
fn volume_of(
    caches: &Caches,
    pvc: &PersistentVolumeClaim,
) -> Result<Option<Arc<LocalVolume>>, String> {
    let key = key(pvc);
    let bound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty());
    if let Some(pv_name) = bound {
        let Some(pv) = caches.pvs.get(&ObjectRef::new(&pv_name)) else {
            return Err(format!(
                "PersistentVolume {pv_name} of claim {key} is not known (yet)"
            ));
        };
        let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
            return Ok(None);
        };
        if csi.driver != CSI_DRIVER_NAME {
            return Ok(None);
        }
        return match caches.volumes.get(&ObjectRef::new(&csi.volume_handle)) {
            Some(v) => Ok(Some(v)),
            None => Err(format!(
                "LocalVolume {} of claim {key} does not exist",
                csi.volume_handle
            )),
        };
    }
    // The external-provisioner names a volume `pvc-<claim uid>`: created, PV not bound yet.
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    Ok(caches.volumes.get(&ObjectRef::new(&format!("pvc-{uid}"))))
}

fn key(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        pvc.metadata.namespace.clone().unwrap_or_default(),
        pvc.metadata.name.clone().unwrap_or_default()
    )
}

/// The new claim `pvc` is, when its StorageClass is HwameiStor's; `Err` when it is but
/// cannot be provisioned as asked.
pub fn new_claim(caches: &Caches, pvc: &PersistentVolumeClaim) -> Result<Option<NewClaim>, String> {
    let key = key(pvc);
    let Some(spec) = pvc.spec.as_ref() else {
        return Ok(None);
    };
    let Some(class_name) = spec.storage_class_name.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let Some(class) = caches.classes.get(&ObjectRef::new(class_name)) else {
        return Ok(None);
    };
    if class.provisioner != CSI_DRIVER_NAME {
        return Ok(None);
    }
    let params = hwameistor_csi::params::parse(class.parameters.iter().flatten())
        .map_err(|e| format!("claim {key}: StorageClass {class_name}: {e}"))?;
    let resources = spec.resources.as_ref();
    let size = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        m.and_then(|m| m.get("storage"))
            .map(|q| parse_size(&q.0).map_err(|e| format!("claim {key}: {e}")))
            .transpose()
    };
    let required = size(resources.and_then(|r| r.requests.as_ref()))?.unwrap_or(0);
    let limit = size(resources.and_then(|r| r.limits.as_ref()))?.unwrap_or(0);
    let access = if spec.volume_mode.as_deref() == Some("Block") {
        VolumeAccess::Block
    } else {
        VolumeAccess::Filesystem(params.fs_type.unwrap_or(FsType::Xfs))
    };
    let bytes =
        sizing::volume_size(required, limit, access).map_err(|e| format!("claim {key}: {e}"))?;
    let replicas = params.replicas.get();
    Ok(Some(NewClaim {
        pvc: key,
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
        let Some(pvc) = caches.pvcs.get(&ObjectRef::new(&name).within(&ns)) else {
            out.blocked.push(format!(
                "PersistentVolumeClaim {ns}/{name} does not exist (yet)"
            ));
            continue;
        };
        match volume_of(caches, &pvc) {
            Err(why) => out.blocked.push(why),
            Ok(Some(v)) => out.bound.push(BoundClaim {
                pvc: key(&pvc),
                volume: v.metadata.name.clone().unwrap_or_default(),
                nodes: serving_nodes(&v),
            }),
            Ok(None)
                if pvc
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_deref())
                    .is_some_and(|n| !n.is_empty()) =>
            {
                // Bound to a volume of another driver.
            }
            Ok(None) => match new_claim(caches, &pvc) {
                Ok(Some(c)) => out.new.push(c),
                Ok(None) => {}
                Err(why) => out.blocked.push(why),
            },
        }
    }
    out
}
