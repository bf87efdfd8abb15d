//! Which pods use which HwameiStor volumes: pod → PersistentVolumeClaim (by name, or the
//! claim of a generic ephemeral volume) → PersistentVolume → its CSI volume handle, which
//! is the LocalVolume's name (or maps to it, see `hwameistor_core::naming`). A claim whose
//! PV is not read (yet) still maps through the LocalVolume's own record of its PVC.

use crate::client::Cluster;
use crate::errors::AdminError;
use hwameistor_api::{LocalVolume, CSI_DRIVER_NAME};
use hwameistor_core::naming::volume_object_name;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A pod using a HwameiStor volume.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUse {
    pub namespace: String,
    pub name: String,
    /// The node it is bound to; None while unscheduled.
    pub node: Option<String>,
    /// The claim it uses the volume through.
    pub pvc: String,
    pub volume: String,
    /// `Kind/name` of the object that re-creates it; None for a bare pod, which nothing
    /// brings back once it is evicted.
    pub owner: Option<String>,
    /// Being deleted already (it still holds the volume until it is gone).
    #[serde(default)]
    pub terminating: bool,
}

impl PodUse {
    /// `namespace/name`.
    pub fn pod(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The LocalVolume a PersistentVolume is, when it is one of HwameiStor's (`volumes`: the
/// names of the LocalVolumes that exist).
pub fn volume_of_pv(pv: &PersistentVolume, volumes: &BTreeSet<String>) -> Option<String> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    if csi.driver != CSI_DRIVER_NAME {
        return None;
    }
    let handle = csi.volume_handle.as_str();
    if volumes.contains(handle) {
        return Some(handle.to_string());
    }
    let mapped = volume_object_name(handle);
    volumes.contains(&mapped).then_some(mapped)
}

/// The claims a pod names: `persistentVolumeClaim.claimName`, and the claim Kubernetes
/// makes for a generic ephemeral volume (`<pod>-<volume>`).
fn pod_claims(p: &Pod) -> Vec<String> {
    let name = p.name_any();
    p.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|vols| {
            vols.iter()
                .filter_map(|v| {
                    if let Some(c) = &v.persistent_volume_claim {
                        Some(c.claim_name.clone())
                    } else {
                        v.ephemeral.as_ref().map(|_| format!("{name}-{}", v.name))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a pod still holds its volumes: ended pods (Succeeded, Failed) do not.
fn is_active(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Every active pod among `pods` using one of `volumes`, sorted. Pure.
pub fn pods_using(
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    pvs: &[PersistentVolume],
    volumes: &[LocalVolume],
) -> Vec<PodUse> {
    let names: BTreeSet<String> = volumes.iter().map(|v| v.name_any()).collect();
    let pv_volume: BTreeMap<String, String> = pvs
        .iter()
        .filter_map(|pv| volume_of_pv(pv, &names).map(|v| (pv.name_any(), v)))
        .collect();
    let mut claim_volume: BTreeMap<(String, String), String> = BTreeMap::new();
    // The volume's own record first; the bound PV, when read, has the last word.
    for v in volumes {
        if let (Some(ns), Some(n)) = (&v.spec.pvc_namespace, &v.spec.pvc_name) {
            claim_volume.insert((ns.clone(), n.clone()), v.name_any());
        }
    }
    for c in pvcs {
        let bound = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .and_then(|pv| pv_volume.get(pv));
        if let Some(v) = bound {
            claim_volume.insert((c.namespace().unwrap_or_default(), c.name_any()), v.clone());
        }
    }
    let mut out: Vec<PodUse> = Vec::new();
    for p in pods.iter().filter(|p| is_active(p)) {
        let ns = p.namespace().unwrap_or_default();
        for claim in pod_claims(p) {
            if let Some(volume) = claim_volume.get(&(ns.clone(), claim.clone())) {
                let owner = p
                    .metadata
                    .owner_references
                    .as_ref()
                    .and_then(|o| o.iter().find(|r| r.controller == Some(true)).or(o.first()))
                    .map(|r| format!("{}/{}", r.kind, r.name));
                out.push(PodUse {
                    namespace: ns.clone(),
                    name: p.name_any(),
                    node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    pvc: claim,
                    volume: volume.clone(),
                    owner,
                    terminating: p.metadata.deletion_timestamp.is_some(),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Reads pods (only those bound to `node`, when given), claims and PersistentVolumes, and
/// says which pods use `volumes`.
pub async fn read_pods_using(
    cluster: &Cluster,
    node: Option<&str>,
    volumes: &[LocalVolume],
) -> Result<Vec<PodUse>, AdminError> {
    if volumes.is_empty() {
        return Ok(Vec::new());
    }
    let mut lp = ListParams::default();
    if let Some(n) = node {
        lp = lp.fields(&format!("spec.nodeName={n}"));
    }
    let pods = Api::<Pod>::all(cluster.client.clone())
        .list(&lp)
        .await
        .map_err(|e| AdminError::api("listing pods", e))?
        .items;
    let pvcs = Api::<PersistentVolumeClaim>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| AdminError::api("listing PersistentVolumeClaims", e))?
        .items;
    let pvs = Api::<PersistentVolume>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| AdminError::api("listing PersistentVolumes", e))?
        .items;
    Ok(pods_using(&pods, &pvcs, &pvs, volumes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(name: &str, pvc: Option<(&str, &str)>) -> LocalVolume {
        let mut spec = json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1073741824, "replicaNumber": 1});
        if let Some((ns, n)) = pvc {
            spec["pvcNamespace"] = json!(ns);
            spec["pvcName"] = json!(n);
        }
        serde_json::from_value(
            json!({"apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume",
            "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    }

    fn pod(ns: &str, name: &str, node: &str, vols: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c"}], "volumes": vols},
            "status": {"phase": phase}}))
        .unwrap()
    }

    #[test]
    fn pods_map_through_claim_pv_and_handle() {
        let volumes = [
            volume("pvc-1", None),
            volume("pvc-2", Some(("db", "data-db-0"))),
        ];
        let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "pv-1"},
            "spec": {"csi": {"driver": CSI_DRIVER_NAME, "volumeHandle": "pvc-1"}}}))
        .unwrap();
        let foreign: PersistentVolume =
            serde_json::from_value(json!({"metadata": {"name": "pv-x"},
            "spec": {"csi": {"driver": "other.csi", "volumeHandle": "pvc-1"}}}))
            .unwrap();
        let claim: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": {"name": "data-web-0", "namespace": "web"}, "spec": {"volumeName": "pv-1"}}),
        )
        .unwrap();
        let other: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": {"name": "x", "namespace": "web"}, "spec": {"volumeName": "pv-x"}}),
        )
        .unwrap();
        let pods = [
            pod(
                "web",
                "web-0",
                "a",
                json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data-web-0"}}]),
                "Running",
            ),
            pod(
                "web",
                "web-1",
                "a",
                json!([{"name": "d", "persistentVolumeClaim": {"claimName": "x"}}]),
                "Running",
            ),
            // Through the volume's record of its PVC, as a generic ephemeral volume.
            pod(
                "db",
                "data",
                "b",
                json!([{"name": "db-0", "ephemeral": {}}]),
                "Pending",
            ),
            // Ended pods hold nothing.
            pod(
                "web",
                "job",
                "a",
                json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data-web-0"}}]),
                "Succeeded",
            ),
        ];
        let got = pods_using(&pods, &[claim, other], &[pv, foreign], &volumes);
        let short: Vec<(String, String, String)> = got
            .iter()
            .map(|u| {
                (
                    u.pod(),
                    u.volume.clone(),
                    u.owner.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            short,
            [
                (
                    "db/data".to_string(),
                    "pvc-2".to_string(),
                    "StatefulSet/web".to_string()
                ),
                (
                    "web/web-0".to_string(),
                    "pvc-1".to_string(),
                    "StatefulSet/web".to_string()
                ),
            ]
        );
        assert_eq!(got[0].pvc, "data-db-0");
        assert_eq!(got[1].node.as_deref(), Some("a"));
    }
}
