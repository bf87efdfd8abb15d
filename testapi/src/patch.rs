//! Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! strategic merge patch (merge keys for common built-in lists) and the
//! merge-patch semantics used for server-side apply.

use serde_json::Value;

/// The patch formats the server accepts, selected by the request Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Drop strategic-merge-patch directives (`$patch`, `$retainKeys`,
/// `$setElementOrder/...`, `$deleteFromPrimitiveList/...`) so the rest can be
/// applied as a merge patch. Lists are then replaced rather than merged by key,
/// which is the documented approximation for built-in types.
pub fn strip_strategic_directives(patch: &mut Value) {
    match patch {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for v in m.values_mut() {
                strip_strategic_directives(v);
            }
        }
        Value::Array(a) => {
            // `{"$patch": "delete"}` list entries would otherwise become empty objects.
            a.retain(|v| !v.as_object().is_some_and(|o| o.contains_key("$patch")));
            for v in a.iter_mut() {
                strip_strategic_directives(v);
            }
        }
        _ => {}
    }
}

/// Merge keys of the built-in list fields most often patched, from the
/// `patchMergeKey` tags of the Kubernetes API types. Lists not named here
/// are replaced, as a merge patch would.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "conditions" | "addresses" => "type",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Strategic merge patch for built-in types: like a merge patch, but lists
/// with a known merge key merge element-wise (`$patch: delete` removes an
/// element), `finalizers` merge as a set, and `$patch: replace`,
/// `$deleteFromPrimitiveList/<field>` are honoured. Other directives
/// (`$setElementOrder`, `$retainKeys`) are ignored.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        strip_strategic_directives(&mut p);
        *target = p;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(have)), Some(gone)) = (t.get_mut(field), v.as_array()) {
                have.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(have)), Value::Array(items)) => {
                if let Some(key) = merge_key(k) {
                    merge_list_by_key(have, items, key);
                } else if k == "finalizers" {
                    for f in items {
                        if !have.contains(f) {
                            have.push(f.clone());
                        }
                    }
                } else {
                    let mut p = v.clone();
                    strip_strategic_directives(&mut p);
                    t.insert(k.clone(), p);
                }
            }
            (Some(existing), Value::Object(_)) => strategic_merge_patch(existing, v),
            _ => {
                let mut p = v.clone();
                strip_strategic_directives(&mut p);
                t.insert(k.clone(), p);
            }
        }
    }
}

fn merge_list_by_key(have: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let pos = id.and_then(|id| have.iter().position(|h| h.get(key) == Some(id)));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                have.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge_patch(&mut have[i], item),
            None => {
                let mut p = item.clone();
                strip_strategic_directives(&mut p);
                have.push(p);
            }
        }
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonPatchError {
    /// The patch document itself is malformed (400).
    Malformed(String),
    /// The patch is well-formed but cannot be applied, incl. a failed `test` (422).
    Failed(String),
}

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn parse_pointer(p: &str) -> Result<Vec<String>, JsonPatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(JsonPatchError::Malformed(format!(
            "invalid JSON pointer {p:?}: must start with '/'"
        )));
    };
    Ok(rest.split('/').map(unescape_token).collect())
}

fn array_index(tok: &str, len: usize, allow_end: bool) -> Result<usize, JsonPatchError> {
    if tok == "-" && allow_end {
        return Ok(len);
    }
    let idx: usize = tok
        .parse()
        .map_err(|_| JsonPatchError::Failed(format!("invalid array index {tok:?}")))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if idx > max || (!allow_end && len == 0) {
        return Err(JsonPatchError::Failed(format!(
            "array index {idx} out of bounds"
        )));
    }
    Ok(idx)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let mut cur = doc;
    for tok in path {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(tok)
                .ok_or_else(|| JsonPatchError::Failed(format!("path element {tok:?} not found")))?,
            Value::Array(a) => {
                let i = array_index(tok, a.len(), false)?;
                &mut a[i]
            }
            _ => {
                return Err(JsonPatchError::Failed(format!(
                    "cannot descend into a scalar at {tok:?}"
                )))
            }
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(JsonPatchError::Failed(
            "add: parent is not an object or array".into(),
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let Some((last, parent)) = path.split_last() else {
        return Err(JsonPatchError::Failed(
            "cannot remove the document root".into(),
        ));
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| JsonPatchError::Failed(format!("remove: {last:?} not found"))),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(JsonPatchError::Failed(
            "remove: parent is not an object or array".into(),
        )),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), JsonPatchError> {
    let Some(ops) = ops.as_array() else {
        return Err(JsonPatchError::Malformed(
            "a JSON patch must be an array of operations".into(),
        ));
    };
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::Malformed("operation is missing \"op\"".into()))?;
        let path_str = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::Malformed(format!("{name}: missing \"path\"")))?;
        let path = parse_pointer(path_str)?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| JsonPatchError::Malformed(format!("{name}: missing \"value\"")))
        };
        let from = || -> Result<Vec<String>, JsonPatchError> {
            let f = op
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| JsonPatchError::Malformed(format!("{name}: missing \"from\"")))?;
            parse_pointer(f)
        };
        match name {
            "add" => add(doc, &path, value()?)?,
            "remove" => {
                remove(doc, &path)?;
            }
            "replace" => {
                let v = value()?;
                *get_mut(doc, &path)? = v;
            }
            "move" => {
                let f = from()?;
                let v = remove(doc, &f)?;
                add(doc, &path, v)?;
            }
            "copy" => {
                let f = from()?;
                let v = get_mut(doc, &f)?.clone();
                add(doc, &path, v)?;
            }
            "test" => {
                let want = value()?;
                let have = get_mut(doc, &path)?;
                if *have != want {
                    return Err(JsonPatchError::Failed(format!(
                        "testing value {path_str} failed: expected {want}, found {have}"
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unexpected kind of operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 2},
                {"op": "copy", "from": "/b", "path": "/d"},
                {"op": "move", "from": "/d/c", "path": "/e"},
                {"op": "remove", "path": "/a/0"},
                {"op": "add", "path": "/f~1g", "value": true}
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"a": [2, 3], "b": {"c": 2}, "d": {}, "e": 2, "f/g": true})
        );
        let err = json_patch(&mut t, &json!([{"op": "test", "path": "/e", "value": 9}]));
        assert!(matches!(err, Err(JsonPatchError::Failed(_))));
        let err = json_patch(&mut t, &json!({"op": "add"}));
        assert!(matches!(err, Err(JsonPatchError::Malformed(_))));
    }

    #[test]
    fn strategic_merge_by_key() {
        let mut t = json!({"metadata": {"finalizers": ["a"]}, "status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Other", "status": "True"}], "phase": "x"}});
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"finalizers": ["b"]}, "status": {"$setElementOrder/conditions": [{"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "$patch": "delete"}, {"type": "New", "status": "Unknown"}]}}),
        );
        assert_eq!(
            t,
            json!({"metadata": {"finalizers": ["a", "b"]}, "status": {"phase": "x", "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "New", "status": "Unknown"}]}})
        );
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(t["metadata"]["finalizers"], json!(["b"]));
        strategic_merge_patch(
            &mut t,
            &json!({"status": {"$patch": "replace", "phase": "y"}}),
        );
        assert_eq!(t["status"], json!({"phase": "y"}));
    }

    #[test]
    fn strategic_directives_dropped() {
        let mut p = json!({"$setElementOrder/x": [1], "spec": {"$retainKeys": ["a"], "a": 1, "l": [{"$patch": "delete", "name": "x"}, {"name": "y"}]}});
        strip_strategic_directives(&mut p);
        assert_eq!(p, json!({"spec": {"a": 1, "l": [{"name": "y"}]}}));
    }
}
