//! The admission webhook, served by the extender's process (it reads the same caches).
//!
//! - **Mutating, pods**: a pod that uses a HwameiStor volume (a claim on a HwameiStor
//!   StorageClass, bound to a HwameiStor PersistentVolume, or a generic ephemeral volume of
//!   such a class) gets `schedulerName: hwameistor-scheduler` (configurable). Registered
//!   with `failurePolicy: Ignore` and without kube-system and HwameiStor's own namespace: a
//!   webhook that is down never stops a pod from being created (`diagnose` says it is down).
//! - **Validating**: the cross-field checks a CRD schema cannot express, for LocalVolume,
//!   LocalDiskClaim, LocalDiskVolume and the volume operations, each refusal saying what to do instead.
//!   Also fail-open: the controller and the operations' own state machines refuse the same
//!   things later, with the same reasons.

use crate::cache::Caches;
use crate::claims::{is_ours, our_class};
use base64::Engine;
use hwameistor_api::quantity::format_size;
use hwameistor_api::{
    LocalDiskClaim, LocalDiskVolume, LocalVolume, LocalVolumeConvert, LocalVolumeExpand,
    LocalVolumeMigrate,
};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// What the webhook is told at start.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The scheduler pods with HwameiStor volumes are given.
    pub scheduler_name: String,
    /// Namespaces whose pods are never changed (also left out by the registration).
    pub ignored_namespaces: BTreeSet<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            scheduler_name: "hwameistor-scheduler".into(),
            ignored_namespaces: [
                "kube-system".to_string(),
                hwameistor_api::SYSTEM_NAMESPACE.to_string(),
            ]
            .into(),
        }
    }
}

/// Whether `pod` uses a HwameiStor volume, by the caches (claims, their classes and
/// volumes) and its own spec (a generic ephemeral volume names its class).
pub fn uses_hwameistor(caches: &Caches, pod: &Pod) -> bool {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            if let Some(e) = &v.ephemeral {
                return our_class(
                    caches,
                    e.volume_claim_template
                        .as_ref()
                        .and_then(|t| t.spec.storage_class_name.as_deref()),
                )
                .is_some();
            }
            v.persistent_volume_claim
                .as_ref()
                .and_then(|c| caches.claims.get(&format!("{ns}/{}", c.claim_name)))
                .is_some_and(|claim| is_ours(caches, &claim))
        })
}

fn object<K: DeserializeOwned>(o: &Option<DynamicObject>) -> Result<Option<K>, String> {
    match o {
        None => Ok(None),
        Some(o) => serde_json::to_value(o)
            .and_then(serde_json::from_value)
            .map(Some)
            .map_err(|e| format!("the object does not parse: {e}")),
    }
}

/// The patch that gives `pod` the scheduler, if it needs one.
fn mutate_pod(
    caches: &Caches,
    s: &WebhookSettings,
    pod: &Pod,
    ns: &str,
) -> Option<serde_json::Value> {
    if s.ignored_namespaces.contains(ns) || !uses_hwameistor(caches, pod) {
        return None;
    }
    let current = pod.spec.as_ref().and_then(|p| p.scheduler_name.as_deref());
    if current == Some(s.scheduler_name.as_str()) {
        return None;
    }
    // `add` replaces a member that exists (RFC 6902), so this also overrides
    // `default-scheduler`, which the API server fills in before admission.
    Some(serde_json::json!([
        {"op": "add", "path": "/spec/schedulerName", "value": s.scheduler_name}
    ]))
}

fn check_volume(v: &LocalVolume, old: Option<&LocalVolume>) -> Result<(), String> {
    let spec = &v.spec;
    if spec.convertible && spec.replica_number > 1 {
        return Err(format!(
            "convertible applies to single-replica volumes; this one has replicaNumber {} and is replicated already: drop convertible",
            spec.replica_number
        ));
    }
    if hwameistor_core::ha::thin_replicated(spec) {
        return Err(format!(
            "{}: set replicaNumber 1 and convertible false, or thin false",
            hwameistor_core::ha::THIN_NOT_REPLICATED
        ));
    }
    if spec.data_source.is_some() {
        hwameistor_core::restore::check_spec(spec)?;
    }
    if spec.replica_number > 2 {
        return Err(format!(
            "replicaNumber {} is not supported: DRBD 8.4 replicates between two nodes; use 1 or 2",
            spec.replica_number
        ));
    }
    let mut seen = BTreeSet::new();
    for n in &spec.accessibility.nodes {
        if !seen.insert(n) {
            return Err(format!(
                "spec.accessibility.nodes names {n} twice; name each node once"
            ));
        }
    }
    if let Some(old) = old {
        if spec.required_capacity_bytes < old.spec.required_capacity_bytes {
            return Err(format!(
                "volumes never shrink: requiredCapacityBytes {} is below the volume's {}; to grow it use `kubectl hwameistor volume expand`",
                format_size(spec.required_capacity_bytes),
                format_size(old.spec.required_capacity_bytes)
            ));
        }
        if spec.thin != old.spec.thin {
            return Err(format!(
                "a volume stays {}: thin is fixed when it is created; create a volume of the other kind and copy the data instead",
                if old.spec.thin { "thin" } else { "thick" }
            ));
        }
        if spec.data_source != old.spec.data_source {
            return Err(
                "a volume's dataSource is fixed when it is created (it says where its data came from); create another volume from the other source instead".to_string(),
            );
        }
        if spec.pool_name != old.spec.pool_name {
            return Err(format!(
                "a volume stays in its pool ({}); create a volume in {} and copy the data instead",
                old.spec.pool_name, spec.pool_name
            ));
        }
    }
    Ok(())
}

fn check_claim(caches: &Caches, c: &LocalDiskClaim) -> Result<Vec<String>, String> {
    let mut seen = BTreeSet::new();
    for d in &c.spec.description.local_disk_names {
        if !seen.insert(d) {
            return Err(format!(
                "spec.description.localDiskNames names {d} twice; name each disk once"
            ));
        }
    }
    let mut warnings = Vec::new();
    if caches.nodes.get(&c.spec.node_name).is_none() {
        warnings.push(format!(
            "node {} runs no HwameiStor agent (no LocalStorageNode) yet: the claim waits for it",
            c.spec.node_name
        ));
    }
    Ok(warnings)
}

/// A raw-disk volume: its size limits agree, and its node, type and size stay as created
/// (the disk was chosen for them).
fn check_disk_volume(
    caches: &Caches,
    v: &LocalDiskVolume,
    old: Option<&LocalDiskVolume>,
) -> Result<Vec<String>, String> {
    let s = &v.spec;
    if let Some(max) = s
        .max_capacity_bytes
        .filter(|m| *m < s.required_capacity_bytes)
    {
        return Err(format!(
            "maxCapacityBytes {} is below requiredCapacityBytes {}: raise it or leave it out",
            format_size(max),
            format_size(s.required_capacity_bytes)
        ));
    }
    if let Some(o) = old {
        let o = &o.spec;
        if o.node_name != s.node_name
            || o.disk_type != s.disk_type
            || o.required_capacity_bytes != s.required_capacity_bytes
            || o.max_capacity_bytes != s.max_capacity_bytes
        {
            return Err("a disk volume's node, disk type and size are fixed once created (its disk was chosen for them); create another volume instead".into());
        }
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    if caches.nodes.get(&s.node_name).is_none() {
        warnings.push(format!(
            "node {} runs no HwameiStor agent (no LocalStorageNode) yet: the volume waits for a disk there",
            s.node_name
        ));
    }
    Ok(warnings)
}

/// The nodes holding a replica of `volume`, or why it cannot be operated on.
fn volume_nodes(caches: &Caches, volume: &str) -> Result<Vec<String>, String> {
    let Some(v) = caches.volumes.get(volume) else {
        return Err(format!(
            "there is no LocalVolume {volume}; `kubectl hwameistor volume list` shows the volumes (by PVC too)"
        ));
    };
    let Some(c) = &v.config else {
        return Err(format!(
            "volume {volume} is not placed yet; retry once it is (kubectl hwameistor volume get {volume})"
        ));
    };
    Ok(c.replicas.iter().map(|a| a.hostname.clone()).collect())
}

fn check_migrate(caches: &Caches, m: &LocalVolumeMigrate) -> Result<(), String> {
    let s = &m.spec;
    let nodes = volume_nodes(caches, &s.volume_name)?;
    if !nodes.contains(&s.source_node) {
        return Err(format!(
            "volume {} has no replica on {}; its replicas are on {}: set sourceNode to one of them",
            s.volume_name,
            s.source_node,
            nodes.join(", ")
        ));
    }
    if s.target_nodes.contains(&s.source_node) {
        return Err(format!(
            "targetNodes includes the source node {}; a replica moves to another node",
            s.source_node
        ));
    }
    if let Some(t) = s.target_nodes.iter().find(|t| nodes.contains(t)) {
        return Err(format!(
            "targetNodes includes {t}, which holds a replica of {} already; name another node or none (the controller chooses)",
            s.volume_name
        ));
    }
    Ok(())
}

fn check_convert(caches: &Caches, c: &LocalVolumeConvert) -> Result<(), String> {
    let nodes = volume_nodes(caches, &c.spec.volume_name)?;
    if caches
        .volumes
        .get(&c.spec.volume_name)
        .is_some_and(|v| v.thin)
    {
        return Err(format!(
            "volume {} is thin and cannot be converted: {}",
            c.spec.volume_name,
            hwameistor_core::ha::THIN_NOT_REPLICATED
        ));
    }
    if let Some(t) = c
        .spec
        .target_node
        .as_deref()
        .filter(|t| nodes.iter().any(|n| n == t))
    {
        return Err(format!(
            "targetNode {t} holds the volume's replica already; the second replica goes to another node (or leave targetNode out)"
        ));
    }
    Ok(())
}

fn check_expand(caches: &Caches, e: &LocalVolumeExpand) -> Result<(), String> {
    let Some(v) = caches.volumes.get(&e.spec.volume_name) else {
        return Err(format!(
            "there is no LocalVolume {}; `kubectl hwameistor volume list` shows the volumes",
            e.spec.volume_name
        ));
    };
    if e.spec.required_capacity_bytes < v.required {
        return Err(format!(
            "volumes never shrink: {} is below the volume's {}",
            format_size(e.spec.required_capacity_bytes),
            format_size(v.required)
        ));
    }
    Ok(())
}

/// The answer to one AdmissionReview request.
pub fn respond(
    caches: &Caches,
    settings: &WebhookSettings,
    req: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    let allow = AdmissionResponse::from(req);
    let deny = |why: String| {
        tracing::info!(kind = %req.kind.kind, name = %req.name, reason = %why, "admission denied");
        AdmissionResponse::from(req).deny(why)
    };
    if req.operation == Operation::Delete {
        return allow;
    }
    let checked: Result<Vec<String>, String> =
        match (req.kind.group.as_str(), req.kind.kind.as_str()) {
            ("", "Pod") => {
                return match object::<Pod>(&req.object) {
                    Ok(Some(pod)) => {
                        let ns = req
                            .namespace
                            .clone()
                            .or_else(|| pod.metadata.namespace.clone())
                            .unwrap_or_default();
                        let mut pod = pod;
                        pod.metadata.namespace = Some(ns.clone());
                        match mutate_pod(caches, settings, &pod, &ns) {
                            None => allow,
                            Some(patch) => match serde_json::from_value::<json_patch::Patch>(patch)
                                .map_err(|e| e.to_string())
                                .and_then(|p| {
                                    allow.clone().with_patch(p).map_err(|e| e.to_string())
                                }) {
                                Ok(r) => r,
                                // Never block a pod over our own patch: let it through unchanged.
                                Err(e) => {
                                    tracing::warn!(error = %e, "building the pod patch failed");
                                    allow
                                }
                            },
                        }
                    }
                    _ => allow,
                };
            }
            ("hwameistor.io", "LocalVolume") => object::<LocalVolume>(&req.object).and_then(|v| {
                let old = object::<LocalVolume>(&req.old_object)?;
                match v {
                    Some(v) => check_volume(&v, old.as_ref()).map(|_| Vec::new()),
                    None => Ok(Vec::new()),
                }
            }),
            ("hwameistor.io", "LocalDiskClaim") => object::<LocalDiskClaim>(&req.object)
                .and_then(|c| c.map_or(Ok(Vec::new()), |c| check_claim(caches, &c))),
            ("hwameistor.io", "LocalDiskVolume") => object::<LocalDiskVolume>(&req.object)
                .and_then(|v| {
                    let old = object::<LocalDiskVolume>(&req.old_object)?;
                    v.map_or(Ok(Vec::new()), |v| {
                        check_disk_volume(caches, &v, old.as_ref())
                    })
                }),
            ("hwameistor.io", "LocalVolumeMigrate") if req.operation == Operation::Create => {
                object::<LocalVolumeMigrate>(&req.object).and_then(|m| {
                    m.map_or(Ok(()), |m| check_migrate(caches, &m))
                        .map(|_| Vec::new())
                })
            }
            ("hwameistor.io", "LocalVolumeConvert") if req.operation == Operation::Create => {
                object::<LocalVolumeConvert>(&req.object).and_then(|c| {
                    c.map_or(Ok(()), |c| check_convert(caches, &c))
                        .map(|_| Vec::new())
                })
            }
            ("hwameistor.io", "LocalVolumeExpand") if req.operation == Operation::Create => {
                object::<LocalVolumeExpand>(&req.object).and_then(|e| {
                    e.map_or(Ok(()), |e| check_expand(caches, &e))
                        .map(|_| Vec::new())
                })
            }
            _ => Ok(Vec::new()),
        };
    match checked {
        Ok(warnings) if warnings.is_empty() => allow,
        Ok(warnings) => {
            let mut r = allow;
            r.warnings = Some(warnings);
            r
        }
        Err(why) => deny(why),
    }
}

/// The AdmissionReview answering `review` (an unreadable one is answered as invalid), as
/// the API server reads it: the patch base64-encoded, as Go encodes bytes.
pub fn review(
    caches: &Caches,
    settings: &WebhookSettings,
    review: AdmissionReview<DynamicObject>,
) -> serde_json::Value {
    let req: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let answer = match req {
        Ok(req) => respond(caches, settings, &req).into_review(),
        Err(e) => AdmissionResponse::invalid(e.to_string()).into_review(),
    };
    let mut v = serde_json::to_value(&answer).unwrap_or_else(|e| {
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": false, "status": {"message": e.to_string()}}})
    });
    if let Some(patch) = v.pointer_mut("/response/patch") {
        if let Some(bytes) = patch.as_array().map(|a| {
            a.iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Vec<u8>>()
        }) {
            *patch =
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    v
}
