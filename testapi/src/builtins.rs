//! Type-specific rules of the few built-in kinds whose real validation the
//! project's tools run into: defaulting of CSIDriver and StorageClass, the
//! fields a real API server refuses to change on update (CSIDriver,
//! StorageClass, workload selectors, StatefulSet spec), and the DaemonSet
//! template generation the server maintains. Each rule mirrors
//! `pkg/apis/storage/validation`, `pkg/apis/apps/validation` and the apps
//! registry strategies of Kubernetes 1.36.

use serde_json::{json, Map, Value};

use crate::errors::Cause;
use crate::resources::ResKey;

/// The annotation through which apps/v1 DaemonSets expose the template
/// generation the server keeps (`spec.templateGeneration` internally).
pub const DAEMONSET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn key(group: &str, plural: &str) -> ResKey {
    ResKey::new(group, plural)
}

fn set_default(obj: &mut Map<String, Value>, field: &str, value: Value) {
    if obj.get(field).is_none_or(Value::is_null) {
        obj.insert(field.to_string(), value);
    }
}

/// Fill the defaults the real server applies on every write of these kinds,
/// so that an update naming a default explicitly is not mistaken for a change.
pub fn apply_defaults(res: &ResKey, obj: &mut Value) {
    if *res == key("storage.k8s.io", "csidrivers") {
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            set_default(spec, "attachRequired", json!(true));
            set_default(spec, "podInfoOnMount", json!(false));
            set_default(spec, "storageCapacity", json!(false));
            set_default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
            set_default(spec, "requiresRepublish", json!(false));
            set_default(spec, "seLinuxMount", json!(false));
            if spec
                .get("volumeLifecycleModes")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                spec.insert("volumeLifecycleModes".into(), json!(["Persistent"]));
            }
        }
    } else if *res == key("storage.k8s.io", "storageclasses") {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "reclaimPolicy", json!("Delete"));
            set_default(o, "volumeBindingMode", json!("Immediate"));
        }
    }
}

fn at<'a>(obj: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = obj;
    for p in path {
        match cur.get(p) {
            Some(v) => cur = v,
            None => return &Value::Null,
        }
    }
    cur
}

/// A JSON rendering of a value for a field error (`Invalid value: ...`).
fn shown(v: &Value) -> String {
    if v.is_null() {
        "null".into()
    } else {
        v.to_string()
    }
}

fn immutable(field: &str, new: &Value) -> Cause {
    Cause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {}: field is immutable", shown(new)),
    )
}

fn forbidden(field: &str, message: &str) -> Cause {
    Cause::new(
        "FieldValueForbidden",
        field,
        format!("Forbidden: {message}"),
    )
}

/// Field errors for an update that changes what the real server keeps
/// immutable. `old` and `new` are whole objects with defaults applied.
pub fn immutable_field_errors(res: &ResKey, old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let changed = |path: &[&str]| at(old, path) != at(new, path);
    if *res == key("storage.k8s.io", "csidrivers") {
        // Kubernetes spells the first path "attachedRequired" in its errors.
        if changed(&["spec", "attachRequired"]) {
            out.push(immutable(
                "spec.attachedRequired",
                at(new, &["spec", "attachRequired"]),
            ));
        }
        if changed(&["spec", "volumeLifecycleModes"]) {
            out.push(immutable(
                "spec.volumeLifecycleModes",
                at(new, &["spec", "volumeLifecycleModes"]),
            ));
        }
    } else if *res == key("storage.k8s.io", "storageclasses") {
        for field in ["parameters", "provisioner", "reclaimPolicy"] {
            if changed(&[field]) {
                out.push(forbidden(
                    field,
                    &format!("updates to {field} are forbidden."),
                ));
            }
        }
        if changed(&["volumeBindingMode"]) {
            out.push(immutable(
                "volumeBindingMode",
                at(new, &["volumeBindingMode"]),
            ));
        }
    } else if [
        key("apps", "deployments"),
        key("apps", "daemonsets"),
        key("apps", "replicasets"),
    ]
    .contains(res)
    {
        if changed(&["spec", "selector"]) {
            out.push(immutable("spec.selector", at(new, &["spec", "selector"])));
        }
    } else if *res == key("apps", "statefulsets") {
        // Everything in a StatefulSet spec but these is fixed at creation.
        let strip = |o: &Value| -> Value {
            let mut spec = at(o, &["spec"]).clone();
            if let Some(m) = spec.as_object_mut() {
                for f in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(f);
                }
            }
            spec
        };
        if strip(old) != strip(new) {
            out.push(forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
    out
}

/// Maintain the DaemonSet template generation: 1 on create, one more on
/// every update that changes the pod template, never set by clients.
pub fn maintain_generations(res: &ResKey, old: Option<&Value>, new: &mut Value) {
    if *res != key("apps", "daemonsets") {
        return;
    }
    let generation = match old {
        None => 1,
        Some(old) => {
            let before = at(
                old,
                &["metadata", "annotations", DAEMONSET_TEMPLATE_GENERATION],
            )
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(1);
            if at(old, &["spec", "template"]) != at(new, &["spec", "template"]) {
                before + 1
            } else {
                before
            }
        }
    };
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    if !at(new, &["metadata", "annotations"]).is_object() {
        new["metadata"]["annotations"] = json!({});
    }
    new["metadata"]["annotations"][DAEMONSET_TEMPLATE_GENERATION] = json!(generation.to_string());
}

/// Whether a PUT without `metadata.resourceVersion` is accepted (the
/// strategy's AllowUnconditionalUpdate): not for custom resources, CRDs and
/// Leases, whose writers must say which version they read.
pub fn allows_unconditional_update(res: &ResKey, custom: bool) -> bool {
    !custom
        && *res != key("apiextensions.k8s.io", "customresourcedefinitions")
        && *res != key("coordination.k8s.io", "leases")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csidriver_defaults_make_explicit_defaults_no_change() {
        let res = key("storage.k8s.io", "csidrivers");
        let mut old = json!({"spec": {}});
        apply_defaults(&res, &mut old);
        let mut new = json!({"spec": {"attachRequired": true, "podInfoOnMount": true}});
        apply_defaults(&res, &mut new);
        assert!(immutable_field_errors(&res, &old, &new).is_empty());
        new["spec"]["attachRequired"] = json!(false);
        new["spec"]["volumeLifecycleModes"] = json!(["Persistent", "Ephemeral"]);
        let causes = immutable_field_errors(&res, &old, &new);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.attachedRequired", "spec.volumeLifecycleModes"]
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: false: field is immutable"
        );
    }

    #[test]
    fn storageclass_fields_are_forbidden_or_immutable() {
        let res = key("storage.k8s.io", "storageclasses");
        let mut old = json!({"provisioner": "a", "parameters": {"x": "1"}});
        apply_defaults(&res, &mut old);
        let mut new = json!({"provisioner": "b", "parameters": {"x": "2"}, "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
        apply_defaults(&res, &mut new);
        let causes = immutable_field_errors(&res, &old, &new);
        let shown: Vec<String> = causes.iter().map(Cause::display).collect();
        assert_eq!(
            shown,
            [
                "parameters: Forbidden: updates to parameters are forbidden.",
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
                "volumeBindingMode: Invalid value: \"WaitForFirstConsumer\": field is immutable",
            ]
        );
    }

    #[test]
    fn workload_selectors_and_statefulset_specs_are_fixed() {
        let old = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "replicas": 1, "serviceName": "s"}});
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        for plural in ["deployments", "daemonsets", "replicasets", "statefulsets"] {
            assert!(immutable_field_errors(&key("apps", plural), &old, &new).is_empty());
        }
        new["spec"]["selector"]["matchLabels"]["a"] = json!("2");
        let d = immutable_field_errors(&key("apps", "deployments"), &old, &new);
        assert_eq!(d[0].field, "spec.selector");
        let s = immutable_field_errors(&key("apps", "statefulsets"), &old, &new);
        assert_eq!(
            (s[0].field.as_str(), s[0].reason.as_str()),
            ("spec", "FieldValueForbidden")
        );
    }

    #[test]
    fn daemonset_template_generation_counts_template_changes() {
        let res = key("apps", "daemonsets");
        let mut created = json!({"spec": {"template": {"x": 1}}});
        maintain_generations(&res, None, &mut created);
        let gen = |o: &Value| {
            at(
                o,
                &["metadata", "annotations", DAEMONSET_TEMPLATE_GENERATION],
            )
            .clone()
        };
        assert_eq!(gen(&created), json!("1"));
        let mut same = created.clone();
        same["spec"]["minReadySeconds"] = json!(5);
        maintain_generations(&res, Some(&created), &mut same);
        assert_eq!(gen(&same), json!("1"));
        let mut changed = created.clone();
        changed["spec"]["template"] = json!({"x": 2});
        // A client cannot set it.
        changed["metadata"]["annotations"][DAEMONSET_TEMPLATE_GENERATION] = json!("9");
        maintain_generations(&res, Some(&created), &mut changed);
        assert_eq!(gen(&changed), json!("2"));
    }
}
