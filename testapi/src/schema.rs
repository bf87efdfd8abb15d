//! Structural-schema handling for custom resources, in the order the real
//! server applies it: prune unknown fields, apply defaults, then validate
//! against the CRD version's openAPIV3Schema. Error texts follow the real
//! server's (kube-openapi messages wrapped in field errors).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::errors::Cause;
use crate::util::fmt_number;

/// Fields of ObjectMeta; anything else under `metadata` is dropped, as the
/// real server's typed decoding of metadata does.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, name: &str) -> bool {
    s.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Drop unknown fields below `metadata`; returns the dropped paths.
pub fn prune_metadata(obj: &mut Value, unknown: &mut Vec<String>) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let drop: Vec<String> = meta
            .keys()
            .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in drop {
            meta.remove(&k);
            unknown.push(format!("metadata.{k}"));
        }
    }
}

/// Remove fields the schema does not declare (unless preserved), recording
/// their paths. `root` marks the object root or an embedded resource, where
/// apiVersion/kind/metadata are always kept.
pub fn prune(v: &mut Value, s: &Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    if flag(s, "x-kubernetes-int-or-string") {
        return;
    }
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(s, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                if (root || embedded) && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    if k == "metadata" && embedded {
                        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                            meta.retain(|mk, _| OBJECT_META_FIELDS.contains(&mk.as_str()));
                        }
                    }
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(&k)) {
                    if let Some(child) = m.get_mut(&k) {
                        prune(child, ps, &child_path, false, unknown);
                    }
                    continue;
                }
                match additional {
                    Some(Value::Object(_)) => {
                        if let (Some(child), Some(a)) = (m.get_mut(&k), additional) {
                            prune(child, a, &child_path, false, unknown);
                        }
                    }
                    Some(Value::Bool(true)) => {}
                    _ if preserve => {}
                    _ => {
                        m.remove(&k);
                        unknown.push(child_path);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, item) in a.iter_mut().enumerate() {
                    prune(item, items, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Apply `default` values top-down. A `null` in a non-nullable field is
/// removed first (and then defaulted if the schema has a default), as the
/// real server does.
pub fn apply_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    let is_null = m.get(k).is_some_and(Value::is_null);
                    if is_null && !flag(ps, "nullable") {
                        m.remove(k);
                    }
                    if !m.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(child, ps);
                    }
                }
            }
            if let Some(a @ Value::Object(_)) = s.get("additionalProperties") {
                let declared = s.get("properties").and_then(Value::as_object);
                for (k, child) in m.iter_mut() {
                    if declared.is_some_and(|d| d.contains_key(k)) {
                        continue;
                    }
                    apply_defaults(child, a);
                }
            }
        }
        Value::Array(arr) => {
            if let Some(items) = s.get("items") {
                for item in arr.iter_mut() {
                    apply_defaults(item, items);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                "integer"
            } else {
                "number"
            }
        }
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How Go prints a value after "Invalid value:" in field errors.
pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "\"null\"".to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn type_ok(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn regex_for(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok())
        .clone()
}

fn invalid(path: &str, v: &Value, detail: String) -> Cause {
    Cause::new(
        "FieldValueInvalid",
        path,
        format!("Invalid value: {}: {}", fmt_value(v), detail),
    )
}

fn num(s: &Value, key: &str) -> Option<f64> {
    s.get(key).and_then(Value::as_f64)
}

fn uint(s: &Value, key: &str) -> Option<u64> {
    s.get(key).and_then(Value::as_u64)
}

/// Validate `v` at `path` against schema `s`, appending field errors.
pub fn validate(v: &Value, s: &Value, path: &str, root: bool, errs: &mut Vec<Cause>) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if flag(s, "nullable") {
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            errs.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"null\": {shown} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            let tn = type_name(v);
            errs.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"{tn}\": {shown} in body must be of type integer,string: \"{tn}\""),
            ));
            return;
        }
    } else if let Some(t) = s.get("type").and_then(Value::as_str) {
        if !type_ok(v, t) {
            let tn = type_name(v);
            errs.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"{tn}\": {shown} in body must be of type {t}: \"{tn}\""),
            ));
            return;
        }
    }

    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            let supported = values.iter().map(fmt_value).collect::<Vec<_>>().join(", ");
            errs.push(Cause::new(
                "FieldValueNotSupported",
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    fmt_value(v),
                    supported
                ),
            ));
        }
    }

    match v {
        Value::Number(n) => validate_number(v, n, s, path, shown, errs),
        Value::String(st) => validate_string(v, st, s, path, shown, errs),
        Value::Array(a) => {
            let len = a.len() as u64;
            if let Some(max) = uint(s, "maxItems") {
                if len > max {
                    errs.push(Cause::new(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {len}: must have at most {max} items"),
                    ));
                }
            }
            if let Some(min) = uint(s, "minItems") {
                if len < min {
                    errs.push(invalid(
                        path,
                        v,
                        format!("{shown} in body should have at least {min} items"),
                    ));
                }
            }
            if flag(s, "uniqueItems") {
                for (i, x) in a.iter().enumerate() {
                    if a[..i].contains(x) {
                        errs.push(Cause::new(
                            "FieldValueDuplicate",
                            &format!("{path}[{i}]"),
                            format!("Duplicate value: {}", fmt_value(x)),
                        ));
                    }
                }
            }
            if let Some(items) = s.get("items") {
                for (i, item) in a.iter().enumerate() {
                    validate(item, items, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        Value::Object(m) => validate_object(m, v, s, path, shown, root, errs),
        _ => {}
    }

    // Combinators: in structural schemas they only add value validations.
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            validate(v, &strip_type_if(sub, int_or_string), path, false, errs);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|sub| {
            let mut e = Vec::new();
            validate(v, &strip_type_if(sub, false), path, false, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body must validate at least one schema (anyOf)"),
            ));
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let passing = one
            .iter()
            .filter(|sub| {
                let mut e = Vec::new();
                validate(v, &strip_type_if(sub, false), path, false, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = s.get("not") {
        let mut e = Vec::new();
        validate(v, not, path, false, &mut e);
        if e.is_empty() {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body should not validate the schema (not)"),
            ));
        }
    }
}

/// Within an int-or-string `allOf` the branch types would conflict with the
/// value's actual type; the int-or-string check already covered the type.
fn strip_type_if(s: &Value, strip: bool) -> Value {
    if strip {
        let mut c = s.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("type");
        }
        c
    } else {
        s.clone()
    }
}

fn validate_number(
    v: &Value,
    n: &serde_json::Number,
    s: &Value,
    path: &str,
    shown: &str,
    errs: &mut Vec<Cause>,
) {
    let Some(x) = n.as_f64() else { return };
    match s.get("format").and_then(Value::as_str) {
        Some("int32") if n.as_i64().is_none_or(|i| i32::try_from(i).is_err()) => {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body must be of type int32: \"{n}\""),
            ));
        }
        Some("int64") if n.as_i64().is_none() && (n.is_u64() || n.is_i64()) => {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body must be of type int64: \"{n}\""),
            ));
        }
        _ => {}
    }
    let exclusive_max = flag(s, "exclusiveMaximum");
    if let Some(max) = num(s, "maximum") {
        if exclusive_max && x >= max {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body should be less than {}", fmt_number(max)),
            ));
        } else if !exclusive_max && x > max {
            errs.push(invalid(
                path,
                v,
                format!(
                    "{shown} in body should be less than or equal to {}",
                    fmt_number(max)
                ),
            ));
        }
    }
    let exclusive_min = flag(s, "exclusiveMinimum");
    if let Some(min) = num(s, "minimum") {
        if exclusive_min && x <= min {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body should be greater than {}", fmt_number(min)),
            ));
        } else if !exclusive_min && x < min {
            errs.push(invalid(
                path,
                v,
                format!(
                    "{shown} in body should be greater than or equal to {}",
                    fmt_number(min)
                ),
            ));
        }
    }
    if let Some(m) = num(s, "multipleOf") {
        if m > 0.0 && (x / m).fract().abs() > 1e-9 {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body should be a multiple of {}", fmt_number(m)),
            ));
        }
    }
}

fn validate_string(v: &Value, st: &str, s: &Value, path: &str, shown: &str, errs: &mut Vec<Cause>) {
    let len = st.chars().count() as u64;
    if let Some(max) = uint(s, "maxLength") {
        if len > max {
            errs.push(Cause::new(
                "FieldValueTooLong",
                path,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
    }
    if let Some(min) = uint(s, "minLength") {
        if len < min {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body should be at least {min} chars long"),
            ));
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        if let Some(re) = regex_for(p) {
            if !re.is_match(st) {
                errs.push(invalid(
                    path,
                    v,
                    format!("{shown} in body should match '{p}'"),
                ));
            }
        }
    }
}

fn validate_object(
    m: &Map<String, Value>,
    v: &Value,
    s: &Value,
    path: &str,
    shown: &str,
    root: bool,
    errs: &mut Vec<Cause>,
) {
    let embedded = flag(s, "x-kubernetes-embedded-resource");
    if embedded {
        for k in ["apiVersion", "kind"] {
            if m.get(k).and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.push(Cause::new(
                    "FieldValueRequired",
                    &join(path, k),
                    "Required value: must not be empty",
                ));
            }
        }
    }
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if root && r == "metadata" {
                continue;
            }
            if !m.contains_key(r) {
                errs.push(Cause::new(
                    "FieldValueRequired",
                    &join(path, r),
                    "Required value",
                ));
            }
        }
    }
    let count = m.len() as u64;
    if let Some(max) = uint(s, "maxProperties") {
        if count > max {
            errs.push(Cause::new(
                "FieldValueTooMany",
                path,
                format!("Too many: {count}: must have at most {max} items"),
            ));
        }
    }
    if let Some(min) = uint(s, "minProperties") {
        if count < min {
            errs.push(invalid(
                path,
                v,
                format!("{shown} in body should have at least {min} properties"),
            ));
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (k, child) in m {
        if (root || embedded) && (k == "metadata" || k == "apiVersion" || k == "kind") {
            // ObjectMeta is validated by the generic metadata checks; the schema
            // may not constrain it beyond that.
            continue;
        }
        let child_path = join(path, k);
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            validate(child, ps, &child_path, false, errs);
        } else if let Some(a @ Value::Object(_)) = s.get("additionalProperties") {
            validate(child, a, &child_path, false, errs);
        }
    }
}

/// The whole pipeline for a custom resource body. Returns field errors and
/// the paths of pruned unknown fields.
pub fn process(obj: &mut Value, schema: &Value) -> (Vec<Cause>, Vec<String>) {
    let mut unknown = Vec::new();
    prune_metadata(obj, &mut unknown);
    prune(obj, schema, "", true, &mut unknown);
    apply_defaults(obj, schema);
    let mut errs = Vec::new();
    validate(obj, schema, "", true, &mut errs);
    (errs, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 4},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                        "q": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "list": {"type": "array", "maxItems": 1, "items": {"type": "string"}}
                    }
                }
            }
        })
    }

    #[test]
    fn prune_default_validate() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n", "bogus": 1},
            "spec": {"size": 2, "junk": 1, "q": "10%", "free": {"any": 1}, "tags": {"a": "b"}}, "top": 1});
        let (errs, unknown) = process(&mut o, &schema());
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(unknown, vec!["metadata.bogus", "spec.junk", "top"]);
        assert_eq!(o["spec"]["mode"], "a");
        assert_eq!(o["spec"]["free"]["any"], 1);
    }

    #[test]
    fn errors_use_real_server_wording() {
        let mut o = json!({"spec": {"size": 5, "mode": "c", "name": "ABCDEFG", "q": true, "tags": {"a": 1}, "list": ["a", "b"]}});
        let (errs, _) = process(&mut o, &schema());
        let msgs: Vec<String> = errs.iter().map(Cause::display).collect();
        assert!(
            msgs.contains(
                &"spec.size: Invalid value: 5: spec.size in body should be less than or equal to 4"
                    .to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(&"spec.name: Too long: may not be more than 5 bytes".to_string()),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'"
                    .to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.q: Invalid value: \"boolean\"")),
            "{msgs:?}"
        );
        assert!(msgs.contains(&"spec.tags.a: Invalid value: \"integer\": spec.tags.a in body must be of type string: \"integer\"".to_string()), "{msgs:?}");
        assert!(
            msgs.contains(&"spec.list: Too many: 2: must have at most 1 items".to_string()),
            "{msgs:?}"
        );
        let mut o = json!({"spec": {}});
        let (errs, _) = process(&mut o, &schema());
        assert_eq!(
            errs,
            vec![Cause::new(
                "FieldValueRequired",
                "spec.size",
                "Required value"
            )]
        );
    }
}
