//! What the server serves: resource definitions (group, versions, names,
//! scope, subresources, schemas) for the built-in types and for the custom
//! resources that CustomResourceDefinitions declare.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::errors::Cause;

/// Identifies stored objects of one resource, independent of the version
/// they are read at (versions of one resource share storage, as in etcd).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

impl ResKey {
    pub fn new(group: &str, plural: &str) -> Self {
        ResKey {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }
}

/// An `additionalPrinterColumns` entry (used for Table output).
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One version of a resource.
#[derive(Debug, Clone)]
pub struct VersionDef {
    pub name: String,
    pub served: bool,
    /// openAPIV3Schema of a custom resource version; built-ins have none
    /// (they are served without schema validation).
    pub schema: Option<Value>,
    /// Whether the version has a `status` subresource.
    pub has_status: bool,
    pub printer_columns: Vec<PrinterColumn>,
    /// `selectableFields` JSON paths (without the leading dot) usable in field selectors.
    pub selectable_fields: Vec<String>,
}

/// How `metadata.name` is validated for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// Any path segment (RBAC names such as `system:controller:x`).
    PathSegment,
}

/// A served resource.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionDef>,
    pub storage_version: String,
    /// Name of the CustomResourceDefinition that declares it (None for built-ins).
    pub crd_name: Option<String>,
    pub name_rule: NameRule,
}

impl ResourceDef {
    pub fn key(&self) -> ResKey {
        ResKey::new(&self.group, &self.plural)
    }

    pub fn is_custom(&self) -> bool {
        self.crd_name.is_some()
    }

    /// A served version by name.
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v && x.served)
    }

    pub fn served_versions(&self) -> impl Iterator<Item = &VersionDef> {
        self.versions.iter().filter(|v| v.served)
    }

    /// `apiVersion` for a version: `group/version`, or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn storage_api_version(&self) -> String {
        self.api_version(&self.storage_version)
    }

    /// Whether objects read or written at `version` have a status subresource.
    pub fn has_status(&self, version: &str) -> bool {
        self.versions
            .iter()
            .find(|v| v.name == version)
            .map(|v| v.has_status)
            .unwrap_or(false)
    }

    pub fn verbs() -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first,
/// then anything else alphabetically. Used for the preferred version.
pub fn version_priority(v: &str) -> (u8, u64, u64, std::cmp::Reverse<String>) {
    let other = (0, 0, 0, std::cmp::Reverse(v.to_string()));
    let Some(rest) = v.strip_prefix('v') else {
        return other;
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return other;
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0, std::cmp::Reverse(String::new()));
    }
    for (prefix, tier) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix) {
            if let Ok(minor) = n.parse::<u64>() {
                return (tier, major, minor, std::cmp::Reverse(String::new()));
            }
        }
    }
    other
}

/// Sort versions most-preferred first.
pub fn sort_versions(versions: &mut [String]) {
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
}

// A positional constructor keeps the table below one line per resource.
#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        plural,
        kind,
        namespaced,
        short_names,
        categories,
        status,
    }
}

/// Built-in resources, in the order discovery lists their groups.
const BUILTINS: &[Builtin] = &[
    b(
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        &[],
        true,
    ),
    b("", "v1", "nodes", "Node", false, &["no"], &[], true),
    b("", "v1", "pods", "Pod", true, &["po"], &["all"], true),
    b(
        "",
        "v1",
        "services",
        "Service",
        true,
        &["svc"],
        &["all"],
        true,
    ),
    b(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        false,
    ),
    b(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        false,
    ),
    b("", "v1", "secrets", "Secret", true, &[], &[], false),
    b("", "v1", "events", "Event", true, &["ev"], &[], false),
    b(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        &[],
        true,
    ),
    b(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &[],
        true,
    ),
    b(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        &[],
        false,
    ),
    b(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
        true,
    ),
    b(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        &["all"],
        true,
    ),
    b(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        &["all"],
        true,
    ),
    b(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        &["all"],
        true,
    ),
    b(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        &[],
        false,
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        &[],
        false,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        &[],
        false,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        false,
        &[],
        &[],
        false,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "csinodes",
        "CSINode",
        false,
        &[],
        &[],
        false,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
        &[],
        &[],
        true,
    ),
    b(
        "storage.k8s.io",
        "v1",
        "csistoragecapacities",
        "CSIStorageCapacity",
        true,
        &[],
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        &[],
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        &["api-extensions"],
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        &["api-extensions"],
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        true,
    ),
    b(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[],
        true,
    ),
];

/// The CRD resource key, which several places special-case.
pub fn crd_key() -> ResKey {
    ResKey::new("apiextensions.k8s.io", "customresourcedefinitions")
}

/// The namespace resource key.
pub fn namespace_key() -> ResKey {
    ResKey::new("", "namespaces")
}

/// All served resources. Discovery order follows insertion of groups.
#[derive(Debug, Clone)]
pub struct Registry {
    defs: BTreeMap<ResKey, Arc<ResourceDef>>,
    /// Built-in group order (for /apis); CRD groups follow, sorted.
    builtin_group_order: Vec<String>,
}

impl Registry {
    pub fn builtin() -> Self {
        let mut defs = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for bi in BUILTINS {
            let group = bi.group.to_string();
            if !group.is_empty() && !order.contains(&group) {
                order.push(group.clone());
            }
            let name_rule = if bi.plural == "namespaces" {
                NameRule::Label
            } else if bi.group == "rbac.authorization.k8s.io" {
                NameRule::PathSegment
            } else {
                NameRule::Subdomain
            };
            let def = ResourceDef {
                group,
                plural: bi.plural.to_string(),
                singular: bi.kind.to_lowercase(),
                kind: bi.kind.to_string(),
                list_kind: format!("{}List", bi.kind),
                namespaced: bi.namespaced,
                short_names: bi.short_names.iter().map(|s| s.to_string()).collect(),
                categories: bi.categories.iter().map(|s| s.to_string()).collect(),
                versions: vec![VersionDef {
                    name: bi.version.to_string(),
                    served: true,
                    schema: None,
                    has_status: bi.status,
                    printer_columns: Vec::new(),
                    selectable_fields: Vec::new(),
                }],
                storage_version: bi.version.to_string(),
                crd_name: None,
                name_rule,
            };
            defs.insert(def.key(), Arc::new(def));
        }
        Registry {
            defs,
            builtin_group_order: order,
        }
    }

    pub fn get(&self, key: &ResKey) -> Option<Arc<ResourceDef>> {
        self.defs.get(key).cloned()
    }

    /// The resource served at `/apis/{group}/{version}/{plural}` (or `/api/v1`).
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let def = self.defs.get(&ResKey::new(group, plural))?;
        def.version(version)?;
        Some(def.clone())
    }

    pub fn insert(&mut self, def: ResourceDef) {
        self.defs.insert(def.key(), Arc::new(def));
    }

    pub fn remove(&mut self, key: &ResKey) -> Option<Arc<ResourceDef>> {
        self.defs.remove(key)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceDef>> {
        self.defs.values()
    }

    /// Non-core groups with their served versions, most preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for def in self.defs.values() {
            if def.group.is_empty() {
                continue;
            }
            let entry = by_group.entry(def.group.clone()).or_default();
            for v in def.served_versions() {
                if !entry.contains(&v.name) {
                    entry.push(v.name.clone());
                }
            }
        }
        let mut out = Vec::new();
        for g in &self.builtin_group_order {
            if let Some(mut vs) = by_group.remove(g) {
                sort_versions(&mut vs);
                out.push((g.clone(), vs));
            }
        }
        for (g, mut vs) in by_group {
            if vs.is_empty() {
                continue;
            }
            sort_versions(&mut vs);
            out.push((g, vs));
        }
        out
    }

    /// Resources served at one group/version.
    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.defs
            .values()
            .filter(|d| d.group == group && d.version(version).is_some())
            .cloned()
            .collect()
    }

    /// A custom resource that is already served under the same group and plural
    /// by a different CRD (a name conflict).
    pub fn conflicts_with(&self, def: &ResourceDef) -> bool {
        match self.defs.get(&def.key()) {
            Some(existing) => existing.crd_name != def.crd_name,
            None => false,
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Fill the defaults the real server applies to a CRD spec (singular,
/// listKind, conversion strategy).
pub fn default_crd_spec(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if names
            .get("singular")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && !kind.is_empty()
        {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if names
            .get("listKind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            && !kind.is_empty()
        {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if !spec.contains_key("conversion") {
        spec.insert("conversion".into(), json!({"strategy": "None"}));
    }
}

/// Validate a CustomResourceDefinition and derive the resource it serves.
/// Errors are field causes for a 422 Invalid.
pub fn crd_to_def(crd: &Value) -> Result<ResourceDef, Vec<Cause>> {
    let mut causes = Vec::new();
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default();
    let group = str_at(crd, &["spec", "group"])
        .unwrap_or_default()
        .to_string();
    let plural = str_at(crd, &["spec", "names", "plural"])
        .unwrap_or_default()
        .to_string();
    let kind = str_at(crd, &["spec", "names", "kind"])
        .unwrap_or_default()
        .to_string();
    let scope = str_at(crd, &["spec", "scope"]).unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.group",
            "Required value",
        ));
    } else if !group.contains('.') {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.group",
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    } else if plural != plural.to_lowercase() {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.names.plural",
            format!("Invalid value: \"{plural}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"),
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        "" => {
            causes.push(Cause::new(
                "FieldValueRequired",
                "spec.scope",
                "Required value",
            ));
            true
        }
        other => {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                "spec.scope",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
            true
        }
    };
    let mut versions = Vec::new();
    let mut storage = Vec::new();
    let raw_versions = crd
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if raw_versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in raw_versions.iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if vname.is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                &format!("spec.versions[{i}].name"),
                "Required value",
            ));
            continue;
        }
        let served = v.get("served").and_then(Value::as_bool).unwrap_or(false);
        if v.get("storage").and_then(Value::as_bool).unwrap_or(false) {
            storage.push(vname.to_string());
        }
        let schema = v
            .get("schema")
            .and_then(|s| s.get("openAPIV3Schema"))
            .cloned();
        if schema.is_none() {
            causes.push(Cause::new(
                "FieldValueRequired",
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required",
            ));
        }
        let has_status = v
            .get("subresources")
            .and_then(|s| s.get("status"))
            .is_some();
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_string(),
                        format: c
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let raw_selectable = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        causes.extend(validate_selectable_fields(
            &raw_selectable,
            schema.as_ref(),
            &format!("spec.versions[{i}].selectableFields"),
        ));
        let selectable_fields = raw_selectable
            .iter()
            .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
            .map(|p| p.trim_start_matches('.').to_string())
            .collect();
        versions.push(VersionDef {
            name: vname.to_string(),
            served,
            schema,
            has_status,
            printer_columns,
            selectable_fields,
        });
    }
    if !raw_versions.is_empty() && storage.len() != 1 {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                serde_json::to_string(&storage).unwrap_or_default()
            ),
        ));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let singular = str_at(crd, &["spec", "names", "singular"])
        .map(str::to_string)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(crd, &["spec", "names", "listKind"])
        .map(str::to_string)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{kind}List"));
    Ok(ResourceDef {
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names: strings_at(crd, &["spec", "names", "shortNames"]),
        categories: strings_at(crd, &["spec", "names", "categories"]),
        versions,
        storage_version: storage.remove(0),
        crd_name: Some(name.to_string()),
        name_rule: NameRule::Subdomain,
    })
}

/// At most this many selectable fields per version.
const MAX_SELECTABLE_FIELDS: usize = 8;

/// The schema a simple JSON path (`.spec.nodeName`) names, or why it names none.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Result<&'a Value, String> {
    let Some(rest) = path.strip_prefix('.') else {
        return Err("must start with a '.'".into());
    };
    if rest.contains('[') {
        return Err("array notation is not allowed".into());
    }
    let mut cur = schema;
    for seg in rest.split('.') {
        if seg.is_empty() {
            return Err("has an empty part".into());
        }
        cur = match (
            cur.get("properties").and_then(|p| p.get(seg)),
            cur.get("additionalProperties").filter(|a| a.is_object()),
        ) {
            (Some(s), _) => s,
            (None, Some(map_values)) => map_values,
            (None, None) => {
                return Err(format!(
                    "does not refer to a valid field: {seg:?} is not declared"
                ))
            }
        };
    }
    Ok(cur)
}

/// The checks a real server makes on a version's `selectableFields`: a
/// simple path to a field of the version's schema, of type string, boolean or
/// integer, not under metadata, each once, at most eight.
fn validate_selectable_fields(fields: &[Value], schema: Option<&Value>, at: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if fields.is_empty() {
        return causes;
    }
    let Some(schema) = schema else {
        causes.push(Cause::new(
            "FieldValueInvalid",
            at,
            "Invalid value: \"\": selectableFields may only be set when version.schema.openAPIV3Schema is not included",
        ));
        return causes;
    };
    let mut unique: Vec<String> = Vec::new();
    for (j, f) in fields.iter().enumerate() {
        let field = format!("{at}[{j}].jsonPath");
        let path = f
            .get("jsonPath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if path.is_empty() {
            causes.push(Cause::new("FieldValueRequired", &field, "Required value"));
            continue;
        }
        let quoted = serde_json::to_string(path).unwrap_or_default();
        let invalid = |why: &str| {
            Cause::new(
                "FieldValueInvalid",
                &field,
                format!("Invalid value: {quoted}: {why}"),
            )
        };
        match schema_at(schema, path) {
            Err(why) => {
                causes.push(invalid(&format!("is an invalid path: {why}")));
                continue;
            }
            Ok(found) => {
                if path.trim_start_matches('.').split('.').next() == Some("metadata") {
                    causes.push(invalid("must not point to fields in metadata"));
                }
                if !matches!(
                    found.get("type").and_then(Value::as_str),
                    Some("string" | "boolean" | "integer")
                ) {
                    causes.push(invalid("must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed."));
                }
            }
        }
        if unique.iter().any(|u| u == path) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                &field,
                format!("Duplicate value: {quoted}"),
            ));
        } else {
            unique.push(path.to_string());
        }
    }
    if unique.len() > MAX_SELECTABLE_FIELDS {
        causes.push(Cause::new(
            "FieldValueTooMany",
            at,
            format!(
                "Too many: {}: must have at most {MAX_SELECTABLE_FIELDS} items",
                unique.len()
            ),
        ));
    }
    causes
}

/// The status the server maintains on an accepted CRD.
pub fn crd_status(crd: &Value, def: &ResourceDef, now: &str, previous: Option<&Value>) -> Value {
    let mut accepted = crd
        .get("spec")
        .and_then(|s| s.get("names"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(a) = accepted.as_object_mut() {
        a.insert("singular".into(), json!(def.singular));
        a.insert("listKind".into(), json!(def.list_kind));
    }
    // Keep the original transition times so updates don't look like flaps.
    let prev_time = |t: &str| -> String {
        previous
            .and_then(|p| p.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
            })
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .unwrap_or(now)
            .to_string()
    };
    let mut stored: Vec<String> = previous
        .and_then(|p| p.get("storedVersions"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !stored.contains(&def.storage_version) {
        stored.push(def.storage_version.clone());
    }
    json!({
        "acceptedNames": accepted,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": prev_time("NamesAccepted"),
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": prev_time("Established"),
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            }
        ],
        "storedVersions": stored,
    })
}
