//! Server-side apply of manifest objects of any kind, with a summary of what each apply
//! changes (from a server-side dry run compared with the live object). An object whose
//! change the API server refuses because the changed fields are immutable (a CSIDriver's
//! `attachRequired`, a StorageClass's parameters, a workload's selector, ...) is replaced:
//! deleted, waited for until gone, and created again.

use super::manifests::{known_namespaced, ManifestObject, ObjectKey};
use crate::client::Cluster;
use crate::errors::{is_not_found, AdminError};
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The field manager of everything this tool applies.
pub const FIELD_MANAGER: &str = "kubectl-hwameistor";

/// What an apply did (or, in a dry run, would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ApplyAction {
    Created,
    Configured,
    /// Deleted and created again, because fields that changed are immutable.
    Replaced,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Replaced => "replaced",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// One applied object and the fields the apply changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedObject {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub action: ApplyAction,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// For a replaced object: the immutable fields whose change forced the replacement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable: Vec<String>,
}

impl AppliedObject {
    /// The action as the plan and progress show it, with the reason for a replacement:
    /// `replaced (spec.attachRequired is immutable)`.
    pub fn action_text(&self) -> String {
        match (self.action, self.immutable.as_slice()) {
            (ApplyAction::Replaced, []) => "replaced".into(),
            (ApplyAction::Replaced, [one]) => format!("replaced ({one} is immutable)"),
            (ApplyAction::Replaced, many) => {
                format!("replaced ({} are immutable)", many.join(", "))
            }
            (action, _) => action.as_str().into(),
        }
    }
}

/// Fields the API server keeps immutable on the kinds HwameiStor installs, as paths into
/// the object. Used to name, in the plan, what forces a replacement; whether one is needed
/// is the server's call (see [`immutable_refusal`]), so a server that allows a change gets
/// an update instead. Sources: Kubernetes' `ValidateCSIDriverUpdate`,
/// `ValidateStorageClassUpdate`, the apps registry strategies (`spec.selector`) and
/// `ValidateStatefulSetUpdate`.
fn immutable_paths(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "CSIDriver" => &[
            &["spec", "attachRequired"],
            &["spec", "volumeLifecycleModes"],
        ],
        "StorageClass" => &[
            &["provisioner"],
            &["parameters"],
            &["reclaimPolicy"],
            &["volumeBindingMode"],
        ],
        "Deployment" | "DaemonSet" | "ReplicaSet" => &[&["spec", "selector"]],
        "StatefulSet" => &[
            &["spec", "selector"],
            &["spec", "serviceName"],
            &["spec", "podManagementPolicy"],
            &["spec", "volumeClaimTemplates"],
        ],
        _ => &[],
    }
}

fn value_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, p| cur.get(p))
}

/// The immutable fields (of [`immutable_paths`]) the manifest sets to something else than
/// the live object has.
pub fn changed_immutable_fields(kind: &str, live: &Value, desired: &Value) -> Vec<String> {
    immutable_paths(kind)
        .iter()
        .filter(|path| {
            value_at(desired, path).is_some_and(|want| value_at(live, path) != Some(want))
        })
        .map(|path| path.join("."))
        .collect()
}

/// When the server refused an update only because fields it keeps immutable changed
/// (422 Invalid, every cause `field is immutable` or `Forbidden: updates to ... are
/// forbidden`), the fields it named; None for any other error.
pub fn immutable_refusal(e: &kube::Error) -> Option<Vec<String>> {
    let kube::Error::Api(status) = e else {
        return None;
    };
    if status.code != 422 {
        return None;
    }
    let causes = &status.details.as_ref()?.causes;
    let immutable = |c: &kube::core::response::StatusCause| {
        c.message.contains("field is immutable")
            || (c.reason == "FieldValueForbidden"
                && c.message.contains("updates to")
                && c.message.contains("forbidden"))
    };
    (!causes.is_empty() && causes.iter().all(immutable))
        .then(|| causes.iter().map(|c| c.field.clone()).collect())
}

/// Paths the manifest sets to something else than the live object has (the manifest's
/// view of a change, for objects that cannot be dry-run applied).
pub fn manifest_changes(live: &Value, desired: &Value) -> Vec<String> {
    let mut out = Vec::new();
    manifest_diff_into(live, desired, "", &mut out);
    out
}

fn manifest_diff_into(live: &Value, desired: &Value, path: &str, out: &mut Vec<String>) {
    match (live, desired) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, want) in b {
                if (path.is_empty() && matches!(k.as_str(), "status" | "apiVersion" | "kind"))
                    || (path == "metadata" && VOLATILE_METADATA.contains(&k.as_str()))
                {
                    continue;
                }
                let p = join(path, k);
                match a.get(k) {
                    Some(have) => manifest_diff_into(have, want, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                manifest_diff_into(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// How often a replacement checks whether the old object is gone.
const GONE_POLL: Duration = Duration::from_millis(250);

/// Server-maintained fields that differ on every write and say nothing about a change.
const VOLATILE_METADATA: [&str; 7] = [
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
];

/// Annotations the API server or a controller maintains on objects we apply: they change
/// as a consequence of a change (a DaemonSet's template generation goes up when its pod
/// template changes) and are never a change of their own.
const SERVER_MAINTAINED_ANNOTATIONS: [&str; 2] = [
    "deprecated.daemonset.template.generation",
    "deployment.kubernetes.io/revision",
];

/// Paths (like `spec.template.spec.containers[0].image`) where `desired` differs from
/// `live`, ignoring status and server-maintained metadata.
pub fn changed_paths(live: &Value, desired: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into(live, desired, "", &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn diff_into(live: &Value, desired: &Value, path: &str, out: &mut Vec<String>) {
    match (live, desired) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                if (path.is_empty() && k == "status")
                    || (path == "metadata" && VOLATILE_METADATA.contains(&k.as_str()))
                    || (path == "metadata.annotations"
                        && SERVER_MAINTAINED_ANNOTATIONS.contains(&k.as_str()))
                {
                    continue;
                }
                let p = join(path, k);
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_into(x, y, &p, out),
                    _ => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_into(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

fn gvk_of(obj: &ManifestObject) -> GroupVersionKind {
    let (group, version) = match obj.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", obj.api_version()),
    };
    GroupVersionKind::gvk(group, version, obj.kind())
}

/// Applies, reads and deletes manifest objects, resolving their resources through
/// discovery once per kind.
pub struct Applier {
    cluster: Cluster,
    resources: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
}

impl Applier {
    pub fn new(cluster: &Cluster) -> Self {
        Applier {
            cluster: cluster.clone(),
            resources: HashMap::new(),
        }
    }

    async fn api(&mut self, obj: &ManifestObject) -> Result<Api<DynamicObject>, AdminError> {
        let gvk = gvk_of(obj);
        if !self.resources.contains_key(&gvk) {
            let found = kube::discovery::pinned_kind(&self.cluster.client, &gvk)
                .await
                .map_err(|e| {
                    AdminError::api(
                        format!(
                            "the cluster does not serve {} {} (needed by {})",
                            obj.api_version(),
                            obj.kind(),
                            obj.source
                        ),
                        e,
                    )
                })?;
            self.resources.insert(gvk.clone(), found);
        }
        let (ar, caps) = &self.resources[&gvk];
        let namespaced = match caps.scope {
            Scope::Namespaced => true,
            Scope::Cluster => false,
        };
        let client = self.cluster.client.clone();
        Ok(if namespaced {
            let ns = obj.namespace().unwrap_or(&self.cluster.namespace);
            Api::namespaced_with(client, ns, ar)
        } else {
            Api::all_with(client, ar)
        })
    }

    /// The key the object has in the cluster (namespaced objects get the target namespace
    /// when their manifest leaves it out).
    pub fn key_of(&self, obj: &ManifestObject) -> ObjectKey {
        let mut key = obj.key();
        if key.namespace.is_none() && known_namespaced(obj.kind()) == Some(true) {
            key.namespace = Some(self.cluster.namespace.clone());
        }
        key
    }

    /// The live object, if it exists.
    pub async fn get(&mut self, obj: &ManifestObject) -> Result<Option<Value>, AdminError> {
        let api = self.api(obj).await?;
        match api.get_opt(obj.name()).await {
            Ok(Some(live)) => Ok(Some(
                serde_json::to_value(live).map_err(|e| AdminError::Encode(e.to_string()))?,
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(AdminError::api(format!("reading {}", obj.key()), e)),
        }
    }

    /// Server-side apply (forced: this tool owns what it installs). Returns the object as
    /// the server stored it (or would, in a dry run).
    pub async fn apply(
        &mut self,
        obj: &ManifestObject,
        dry_run: bool,
    ) -> Result<Value, AdminError> {
        let api = self.api(obj).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        let out = api
            .patch(obj.name(), &params, &Patch::Apply(&obj.value))
            .await
            .map_err(|e| {
                AdminError::api(format!("applying {} (from {})", obj.key(), obj.source), e)
            })?;
        serde_json::to_value(out).map_err(|e| AdminError::Encode(e.to_string()))
    }

    /// Reads the live object, works out what applying would change, and applies unless
    /// nothing would change or this is a dry run. An object the server refuses to change
    /// because changed fields are immutable is replaced (in a dry run: reported as such);
    /// `timeout` bounds the wait for the old object to be gone.
    pub async fn apply_with_diff(
        &mut self,
        obj: &ManifestObject,
        dry_run: bool,
        timeout: Duration,
    ) -> Result<AppliedObject, AdminError> {
        let key = self.key_of(obj);
        let live = self.get(obj).await?;
        let mut immutable = Vec::new();
        let (action, changes) = match &live {
            None => {
                self.apply(obj, dry_run).await?;
                (ApplyAction::Created, Vec::new())
            }
            Some(live) => match self.try_apply(obj, true).await? {
                Ok(would_be) => {
                    let changes = changed_paths(live, &would_be);
                    if changes.is_empty() {
                        (ApplyAction::Unchanged, changes)
                    } else {
                        if !dry_run {
                            self.apply(obj, false).await?;
                        }
                        (ApplyAction::Configured, changes)
                    }
                }
                Err(refused_fields) => {
                    // Name the fields as the manifest spells them; the server's own paths
                    // (which may be coarser, like a StatefulSet's whole `spec`) otherwise.
                    let known = changed_immutable_fields(obj.kind(), live, &obj.value);
                    immutable = if known.is_empty() {
                        refused_fields
                    } else {
                        known
                    };
                    if !dry_run {
                        self.replace(obj, live, timeout).await?;
                    }
                    (ApplyAction::Replaced, manifest_changes(live, &obj.value))
                }
            },
        };
        Ok(AppliedObject {
            key,
            action,
            changes,
            immutable,
        })
    }

    /// Like [`Applier::apply`], but a refusal because of immutable fields is returned as
    /// `Ok(Err(fields))` instead of an error.
    async fn try_apply(
        &mut self,
        obj: &ManifestObject,
        dry_run: bool,
    ) -> Result<Result<Value, Vec<String>>, AdminError> {
        match self.apply(obj, dry_run).await {
            Ok(v) => Ok(Ok(v)),
            Err(AdminError::Api { source, context }) => match immutable_refusal(&source) {
                Some(fields) => Ok(Err(fields)),
                None => Err(AdminError::Api { source, context }),
            },
            Err(e) => Err(e),
        }
    }

    /// Deletes the live object, waits until it is gone, and creates it from the manifest.
    ///
    /// This is safe for what HwameiStor installs. A StorageClass is only read when a volume
    /// is provisioned: bound claims and their PersistentVolumes keep what they were
    /// provisioned with, so deleting and re-creating the class touches no existing volume.
    /// A CSIDriver object only tells kubelet and the attach/detach controller how to treat
    /// the driver; for the moment it is absent, attach is assumed required. A workload is
    /// deleted in the foreground: the object stays until the garbage collector has deleted
    /// its ReplicaSets and pods, so no pod of the old selector is left behind (the new
    /// object, with its new selector, would neither adopt nor remove them) and two node
    /// agents never run on one node. The precondition on the uid keeps us from deleting an
    /// object someone else re-created meanwhile.
    async fn replace(
        &mut self,
        obj: &ManifestObject,
        live: &Value,
        timeout: Duration,
    ) -> Result<(), AdminError> {
        let api = self.api(obj).await?;
        let uid = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(obj.name(), &params).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(AdminError::api(
                    format!("deleting {} to re-create it", obj.key()),
                    e,
                ))
            }
        }
        let start = Instant::now();
        loop {
            let current = api
                .get_opt(obj.name())
                .await
                .map_err(|e| AdminError::api(format!("reading {}", obj.key()), e))?;
            match current {
                None => break,
                // Someone else created it again; apply over theirs.
                Some(o) if o.metadata.uid != uid => break,
                Some(_) => {}
            }
            if start.elapsed() >= timeout {
                return Err(AdminError::Timeout {
                    what: format!("{} to be deleted so it can be re-created", obj.key()),
                    waited: start.elapsed(),
                    detail: "it is still there (its pods are being deleted, or a finalizer holds it); run the command again once it is gone".into(),
                });
            }
            tokio::time::sleep(GONE_POLL).await;
        }
        self.apply(obj, false).await?;
        Ok(())
    }

    /// Deletes the object; false when it did not exist.
    pub async fn delete(
        &mut self,
        obj: &ManifestObject,
        dry_run: bool,
    ) -> Result<bool, AdminError> {
        let api = match self.api(obj).await {
            Ok(api) => api,
            // The kind itself is gone (its CRD was deleted): so is the object.
            Err(AdminError::Api { source, .. }) if is_not_found(&source) => return Ok(false),
            Err(e) => return Err(e),
        };
        let params = DeleteParams {
            dry_run,
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(obj.name(), &params).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(AdminError::api(format!("deleting {}", obj.key()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_replacements_and_their_immutable_fields() {
        let obj = |action, immutable: &[&str]| AppliedObject {
            key: ObjectKey {
                kind: "CSIDriver".into(),
                namespace: None,
                name: "d".into(),
            },
            action,
            changes: vec![],
            immutable: immutable.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            obj(ApplyAction::Replaced, &["spec.attachRequired"]).action_text(),
            "replaced (spec.attachRequired is immutable)"
        );
        assert_eq!(
            obj(ApplyAction::Replaced, &["parameters", "provisioner"]).action_text(),
            "replaced (parameters, provisioner are immutable)"
        );
        assert_eq!(
            obj(ApplyAction::Configured, &[]).action_text(),
            "configured"
        );

        let live = json!({"provisioner": "a", "parameters": {"x": "1"}, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": false});
        let desired =
            json!({"provisioner": "a", "parameters": {"x": "2"}, "allowVolumeExpansion": true});
        assert_eq!(
            changed_immutable_fields("StorageClass", &live, &desired),
            ["parameters"],
            "fields the manifest leaves out are not changes"
        );
        assert_eq!(
            manifest_changes(&live, &desired),
            ["allowVolumeExpansion", "parameters.x"]
        );
    }

    #[test]
    fn only_immutability_refusals_lead_to_a_replacement() {
        let refusal = |causes: serde_json::Value| {
            let status: kube::core::Status = serde_json::from_value(json!({
                "status": "Failure", "code": 422, "reason": "Invalid", "message": "invalid",
                "details": {"causes": causes}
            }))
            .unwrap();
            kube::Error::Api(Box::new(status))
        };
        let immutable = json!([
            {"reason": "FieldValueInvalid", "field": "spec.attachedRequired", "message": "Invalid value: false: field is immutable"},
            {"reason": "FieldValueForbidden", "field": "parameters", "message": "Forbidden: updates to parameters are forbidden."}
        ]);
        assert_eq!(
            immutable_refusal(&refusal(immutable)),
            Some(vec!["spec.attachedRequired".into(), "parameters".into()])
        );
        let mixed = json!([
            {"reason": "FieldValueInvalid", "field": "spec.selector", "message": "Invalid value: {}: field is immutable"},
            {"reason": "FieldValueRequired", "field": "spec.template", "message": "Required value"}
        ]);
        assert_eq!(immutable_refusal(&refusal(mixed)), None);
        assert_eq!(immutable_refusal(&refusal(json!([]))), None);
    }

    #[test]
    fn reports_changed_paths_and_ignores_server_fields() {
        let live = json!({
            "metadata": {"name": "x", "resourceVersion": "5", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [{"image": "a:1"}, {"image": "b:1"}]}}, "replicas": 1},
            "status": {"ready": 1}
        });
        let desired = json!({
            "metadata": {"name": "x", "resourceVersion": "6", "labels": {"a": "1", "b": "2"}},
            "spec": {"template": {"spec": {"containers": [{"image": "a:2"}, {"image": "b:1"}]}}, "replicas": 1},
            "status": {"ready": 0}
        });
        assert_eq!(
            changed_paths(&live, &desired),
            [
                "metadata.labels.b",
                "spec.template.spec.containers[0].image"
            ]
        );
        assert!(changed_paths(&live, &live).is_empty());
        let ds = |generation: &str| json!({"metadata": {"annotations": {"deprecated.daemonset.template.generation": generation}}});
        assert!(changed_paths(&ds("1"), &ds("2")).is_empty());
        assert_eq!(
            changed_paths(&json!({"l": [1]}), &json!({"l": [1, 2]})),
            ["l"]
        );
    }
}
