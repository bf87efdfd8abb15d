//! A PersistentVolume's node affinity, moved with its volume.
//!
//! Kubernetes keeps `spec.nodeAffinity` of a PersistentVolume immutable, and the scheduler
//! places a pod only on the nodes it names: after a migration the pod could never start on
//! the volume's new node. The PV is therefore re-created with the new affinity, keeping its
//! name, its claim reference (the PVC is bound again by the PV controller: a claim whose
//! volume reappears with its claimRef goes from Lost back to Bound) and everything else.
//!
//! Crash-safe, each step idempotent and decided from what exists:
//!
//! 1. the PV as it must be re-created is saved on the LocalVolume (an annotation), before
//!    anything happens to the PV;
//! 2. its reclaim policy is set to Retain, so deleting the object can never delete the
//!    volume (with HonorPVReclaimPolicy the provisioner deletes the storage of a deleted
//!    PV whose policy is Delete);
//! 3. the PV is deleted (by uid) and its finalizers removed (a bound PV is otherwise kept
//!    by `kubernetes.io/pv-protection`);
//! 4. once it is gone, it is created from the saved copy, with its original reclaim policy;
//! 5. the saved copy is removed.
//!
//! A controller that dies anywhere finds the saved copy and finishes: a PV missing while
//! the copy exists is created from it, never from anything else.

use hwameistor_api::{LocalVolume, CSI_DRIVER_NAME, TOPOLOGY_NODE_KEY};
use hwameistor_core::operation::PvView;
use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, VolumeNodeAffinity,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

/// Annotation on a LocalVolume holding its PersistentVolume as it is being re-created.
pub const ANNOTATION_PV_REWRITE: &str = "hwameistor.io/pv-rewrite";

#[derive(Debug, thiserror::Error)]
pub enum PvError {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the saved PersistentVolume on LocalVolume {volume} is not readable: {error}")]
    Saved { volume: String, error: String },
}

/// The nodes a PV's required node affinity allows through the CSI topology key (all
/// terms), sorted; empty when it has none.
pub fn affinity_nodes(pv: &PersistentVolume) -> Vec<String> {
    let mut out: Vec<String> = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| {
            r.node_selector_terms
                .iter()
                .flat_map(|t| t.match_expressions.iter().flatten())
                .filter(|e| e.key == TOPOLOGY_NODE_KEY && e.operator == "In")
                .flat_map(|e| e.values.iter().flatten().cloned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

fn is_ours(pv: &PersistentVolume, volume: &str) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .is_some_and(|c| c.driver == CSI_DRIVER_NAME && c.volume_handle == volume)
}

/// The PersistentVolume of LocalVolume `v`: the one named by the CSI name it was created
/// for (the external-provisioner names a PV by that name) and pointing at this volume. Read
/// by name only: operations look on every pass, and a list of every PV would cost the API
/// server on each.
pub async fn find(
    client: &Client,
    v: &LocalVolume,
) -> Result<Option<PersistentVolume>, kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let name = v.name_any();
    let csi_name = v
        .annotations()
        .get(hwameistor_api::volume::ANNOTATION_CSI_NAME)
        .cloned()
        .unwrap_or_else(|| name.clone());
    Ok(api
        .get_opt(&csi_name)
        .await?
        .filter(|pv| is_ours(pv, &name)))
}

/// What the operations see of the PV (or of the saved copy while it is re-created).
pub fn view(v: &LocalVolume, pv: Option<&PersistentVolume>) -> Option<PvView> {
    let saved: Option<PersistentVolume> = v
        .annotations()
        .get(ANNOTATION_PV_REWRITE)
        .and_then(|s| serde_json::from_str(s).ok());
    if let Some(pv) = pv {
        // Past the point of no return (being deleted, or re-created with the saved copy
        // still to drop) it must be finished whatever else holds; a rewrite only prepared
        // (copy saved, policy set) waits like a new one.
        let recreating = saved.as_ref().is_some_and(|s| {
            pv.metadata.deletion_timestamp.is_some() || affinity_nodes(pv) == affinity_nodes(s)
        });
        return Some(PvView {
            name: pv.name_any(),
            nodes: affinity_nodes(pv),
            recreating,
        });
    }
    // Between delete and create: the saved copy stands for it (it must still be finished).
    let saved = saved?;
    Some(PvView {
        name: saved.name_any(),
        nodes: affinity_nodes(&saved),
        recreating: true,
    })
}

/// `pv` as it must be re-created: the same object with its node affinity naming `nodes`,
/// without what the server owns.
fn rewritten(pv: &PersistentVolume, nodes: &[String]) -> PersistentVolume {
    let mut new = pv.clone();
    let meta = &mut new.metadata;
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.managed_fields = None;
    meta.generation = None;
    new.status = None;
    if let Some(spec) = new.spec.as_mut() {
        spec.node_affinity = Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: TOPOLOGY_NODE_KEY.into(),
                        operator: "In".into(),
                        values: Some(nodes.to_vec()),
                    }]),
                    match_fields: None,
                }],
            }),
        });
    }
    new
}

/// One step of moving the PV of `v` to `nodes`. `Ok(true)` when the PV names exactly these
/// nodes (done), `Ok(false)` when a step was taken (call again).
pub async fn rewrite(client: &Client, v: &LocalVolume, nodes: &[String]) -> Result<bool, PvError> {
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let name = v.name_any();
    let mut want: Vec<String> = nodes.to_vec();
    want.sort();
    let saved: Option<PersistentVolume> = match v.annotations().get(ANNOTATION_PV_REWRITE) {
        Some(s) => Some(serde_json::from_str(s).map_err(|e| PvError::Saved {
            volume: name.clone(),
            error: e.to_string(),
        })?),
        None => None,
    };
    let current = find(client, v).await?;
    match (current, saved) {
        (Some(pv), saved) if affinity_nodes(&pv) == want => {
            // Re-created (or already right): forget the saved copy.
            if saved.is_some() {
                let patch = serde_json::json!({ "metadata": { "annotations": { ANNOTATION_PV_REWRITE: null } } });
                volumes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Ok(true)
        }
        (Some(pv), None) => {
            let new = rewritten(&pv, &want);
            let text = serde_json::to_string(&new).map_err(|e| PvError::Saved {
                volume: name.clone(),
                error: e.to_string(),
            })?;
            let patch = serde_json::json!({ "metadata": { "annotations": { ANNOTATION_PV_REWRITE: text } } });
            volumes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(volume = %name, pv = %pv.name_any(), nodes = ?want, "re-creating the PersistentVolume with the volume's new nodes");
            Ok(false)
        }
        (Some(pv), Some(_)) => {
            let pv_name = pv.name_any();
            let policy = pv
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone());
            if policy.as_deref() != Some("Retain") {
                let patch =
                    serde_json::json!({ "spec": { "persistentVolumeReclaimPolicy": "Retain" } });
                pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                return Ok(false);
            }
            if pv.metadata.deletion_timestamp.is_none() {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pv.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pvs.delete(&pv_name, &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if pv.finalizers().iter().len() > 0 {
                let patch = serde_json::json!({ "metadata": { "finalizers": null, "resourceVersion": pv.metadata.resource_version } });
                match pvs
                    .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(false)
        }
        (None, Some(saved)) => {
            match pvs.create(&PostParams::default(), &saved).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(volume = %name, pv = %saved.name_any(), nodes = ?want, "PersistentVolume re-created with the volume's new nodes");
            Ok(false)
        }
        // No PV at all (a volume made without CSI): nothing to move.
        (None, None) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolumeSpec};

    fn pv(nodes: &[&str]) -> PersistentVolume {
        let mut pv = PersistentVolume::default();
        pv.metadata.name = Some("pvc-1".into());
        pv.metadata.uid = Some("uid".into());
        pv.metadata.resource_version = Some("7".into());
        pv.spec = Some(PersistentVolumeSpec {
            csi: Some(CSIPersistentVolumeSource {
                driver: CSI_DRIVER_NAME.into(),
                volume_handle: "pvc-1".into(),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            ..Default::default()
        });
        let mut p = rewritten(
            &pv,
            &nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        );
        p.metadata.uid = Some("uid".into());
        p
    }

    #[test]
    fn affinity_is_read_and_rewritten_keeping_the_rest() {
        let old = pv(&["b", "a"]);
        assert_eq!(affinity_nodes(&old), ["a", "b"]);
        let new = rewritten(&old, &["c".to_string()]);
        assert_eq!(affinity_nodes(&new), ["c"]);
        assert_eq!(
            new.metadata.uid, None,
            "the server gives the new object its uid"
        );
        assert_eq!(new.metadata.name.as_deref(), Some("pvc-1"));
        assert_eq!(
            new.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
            Some("Delete"),
            "re-created with its own policy"
        );
        assert!(is_ours(&new, "pvc-1") && !is_ours(&new, "pvc-2"));
    }

    #[test]
    fn a_rewrite_past_the_delete_is_finished_first_one_only_prepared_is_not() {
        let old = pv(&["a"]);
        let new = rewritten(&old, &["b".to_string()]);
        let mut v = LocalVolume::new("pvc-1", serde_json::from_value(serde_json::json!({
            "poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 4194304, "replicaNumber": 1
        })).expect("spec"));
        assert_eq!(view(&v, Some(&old)).map(|p| p.recreating), Some(false));
        assert_eq!(
            view(&v, None),
            None,
            "no PV, nothing saved: nothing to move"
        );
        v.metadata.annotations = Some(std::collections::BTreeMap::from([(
            ANNOTATION_PV_REWRITE.to_string(),
            serde_json::to_string(&new).expect("json"),
        )]));
        assert_eq!(
            view(&v, Some(&old)).map(|p| p.recreating),
            Some(false),
            "only prepared"
        );
        let mut going = old.clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(view(&v, Some(&going)).map(|p| p.recreating), Some(true));
        let gone = view(&v, None).expect("the saved copy stands for it");
        assert!(gone.recreating && gone.name == "pvc-1" && gone.nodes == ["b"]);
        assert_eq!(
            view(&v, Some(&new)).map(|p| p.recreating),
            Some(true),
            "annotation left"
        );
    }
}
