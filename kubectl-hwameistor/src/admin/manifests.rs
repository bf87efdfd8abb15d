//! The objects HwameiStor is installed from: the YAML under manifests/ embedded at build
//! time, parsed into documents and put in the order they must be applied.

use crate::errors::AdminError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_manifests.rs"));
}

/// The manifest files compiled into this binary: (path relative to manifests/, text).
pub fn embedded_files() -> &'static [(&'static str, &'static str)] {
    embedded::EMBEDDED
}

/// Identifies an object for messages and reports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectKey {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One document of a manifest file.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestObject {
    /// `file#index`, for error messages.
    pub source: String,
    pub value: Value,
}

impl ManifestObject {
    fn str_at(&self, path: &[&str]) -> Option<&str> {
        let mut v = &self.value;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
    }

    pub fn api_version(&self) -> &str {
        self.str_at(&["apiVersion"]).unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.str_at(&["kind"]).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.str_at(&["metadata", "name"]).unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.str_at(&["metadata", "namespace"])
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind().to_string(),
            namespace: self.namespace().map(str::to_string),
            name: self.name().to_string(),
        }
    }
}

/// Where a kind goes in the install order. Each step only needs what comes before it:
/// workloads need their ServiceAccounts and RBAC, StorageClasses name the CSI driver the
/// workloads serve, and webhook configurations come last so they never point at a service
/// that does not run yet.
pub fn install_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" => 2,
        "ClusterRole" | "Role" => 3,
        "ClusterRoleBinding" | "RoleBinding" => 4,
        "CSIDriver" | "PriorityClass" => 5,
        "ConfigMap" | "Secret" => 6,
        "Service" => 7,
        "Deployment" | "DaemonSet" | "StatefulSet" => 8,
        "StorageClass" | "VolumeSnapshotClass" => 9,
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => 10,
        _ => 11,
    }
}

/// Whether a kind we know is namespaced; None for kinds only discovery can tell.
pub fn known_namespaced(kind: &str) -> Option<bool> {
    match kind {
        "ServiceAccount"
        | "Role"
        | "RoleBinding"
        | "ConfigMap"
        | "Secret"
        | "Service"
        | "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "Lease"
        | "Job"
        | "PodDisruptionBudget" => Some(true),
        "Namespace"
        | "CustomResourceDefinition"
        | "ClusterRole"
        | "ClusterRoleBinding"
        | "CSIDriver"
        | "PriorityClass"
        | "StorageClass"
        | "VolumeSnapshotClass"
        | "MutatingWebhookConfiguration"
        | "ValidatingWebhookConfiguration" => Some(false),
        _ => None,
    }
}

/// A set of objects to install.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bundle {
    pub objects: Vec<ManifestObject>,
}

impl Bundle {
    /// The manifests compiled into the binary.
    pub fn embedded() -> Result<Self, AdminError> {
        Self::parse(embedded_files().iter().copied())
    }

    /// Parses (name, YAML text) files; each may hold several `---` documents, and a
    /// `kind: List` is flattened into its items.
    pub fn parse<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, AdminError> {
        let mut objects = Vec::new();
        for (file, text) in files {
            for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
                let source = format!("{file}#{index}");
                let value = Value::deserialize(doc).map_err(|e| AdminError::Manifest {
                    source_name: source.clone(),
                    message: e.to_string(),
                })?;
                if value.is_null() {
                    continue; // an empty document, e.g. a trailing `---`
                }
                if value.get("kind").and_then(Value::as_str) == Some("List") {
                    let items = value
                        .get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for (i, item) in items.into_iter().enumerate() {
                        objects.push(checked(ManifestObject {
                            source: format!("{source}.items[{i}]"),
                            value: item,
                        })?);
                    }
                } else {
                    objects.push(checked(ManifestObject { source, value })?);
                }
            }
        }
        Ok(Bundle { objects })
    }

    /// Puts objects in install order; objects of one rank keep their file order.
    pub fn sort_for_install(&mut self) {
        self.objects.sort_by_key(|o| install_rank(o.kind()));
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a ManifestObject> + 'a {
        self.objects.iter().filter(move |o| o.kind() == kind)
    }

    pub fn of_kind_mut<'a>(
        &'a mut self,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a mut ManifestObject> + 'a {
        self.objects.iter_mut().filter(move |o| o.kind() == kind)
    }

    /// All objects as one multi-document YAML stream that `kubectl apply -f -` accepts.
    pub fn to_yaml(&self) -> Result<String, AdminError> {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(
                &serde_yaml_ng::to_string(&o.value)
                    .map_err(|e| AdminError::Encode(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// All objects as a `v1 List`.
    pub fn to_json(&self) -> Result<String, AdminError> {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": self.objects.iter().map(|o| &o.value).collect::<Vec<_>>(),
        });
        let mut s =
            serde_json::to_string_pretty(&list).map_err(|e| AdminError::Encode(e.to_string()))?;
        s.push('\n');
        Ok(s)
    }
}

fn checked(o: ManifestObject) -> Result<ManifestObject, AdminError> {
    let missing = |what: &str| AdminError::Manifest {
        source_name: o.source.clone(),
        message: format!("{what} is missing"),
    };
    if o.api_version().is_empty() {
        return Err(missing("apiVersion"));
    }
    if o.kind().is_empty() {
        return Err(missing("kind"));
    }
    if o.name().is_empty() {
        return Err(missing("metadata.name"));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = "
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: hwameistor-storage-lvm-hdd}
provisioner: lvm.hwameistor.io
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: hwameistor-node, namespace: hwameistor}
---
apiVersion: v1
kind: Namespace
metadata: {name: hwameistor}
---
";

    #[test]
    fn sorts_by_dependency_and_skips_empty_documents() {
        let mut b = Bundle::parse([("deploy/all.yaml", MIXED)]).unwrap();
        b.sort_for_install();
        let kinds: Vec<_> = b.objects.iter().map(|o| o.kind()).collect();
        assert_eq!(kinds, ["Namespace", "DaemonSet", "StorageClass"]);
        assert_eq!(b.objects[0].source, "deploy/all.yaml#2");
    }

    #[test]
    fn a_document_without_a_name_is_an_error_naming_the_file() {
        let e = Bundle::parse([("x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid manifest x.yaml#0: metadata.name is missing"
        );
    }

    #[test]
    fn the_embedded_bundle_has_every_crd() {
        let b = Bundle::embedded().unwrap();
        let mut crds: Vec<_> = b
            .of_kind("CustomResourceDefinition")
            .map(|o| o.name().to_string())
            .collect();
        crds.sort();
        let mut want: Vec<_> = hwameistor_api::crds::all()
            .into_iter()
            .map(|c| c.metadata.name.unwrap_or_default())
            .collect();
        want.sort();
        assert_eq!(crds, want);
    }
}
