//! Server-side apply of manifest objects of any kind, with a summary of what each apply
//! changes (from a server-side dry run compared with the live object).

use super::manifests::{known_namespaced, ManifestObject, ObjectKey};
use crate::client::Cluster;
use crate::errors::{is_not_found, AdminError};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// The field manager of everything this tool applies.
pub const FIELD_MANAGER: &str = "kubectl-hwameistor";

/// What an apply did (or, in a dry run, would do) to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
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
}

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
    /// nothing would change or this is a dry run.
    pub async fn apply_with_diff(
        &mut self,
        obj: &ManifestObject,
        dry_run: bool,
    ) -> Result<AppliedObject, AdminError> {
        let key = self.key_of(obj);
        let live = self.get(obj).await?;
        let (action, changes) = match &live {
            None => {
                self.apply(obj, dry_run).await?;
                (ApplyAction::Created, Vec::new())
            }
            Some(live) => {
                let would_be = self.apply(obj, true).await?;
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
        };
        Ok(AppliedObject {
            key,
            action,
            changes,
        })
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
