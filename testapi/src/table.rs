//! Server-side printing (`meta.k8s.io/v1` Table) for `kubectl get`: a Name
//! column, the CRD's additionalPrinterColumns (or a few fixed columns for
//! built-ins), and Age. Cells come from a small JSONPath subset.

use serde_json::{json, Value};

use crate::store::Target;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.replace(' ', "").contains("as=Table"))
}

struct Column {
    name: &'static str,
    type_: &'static str,
    path: &'static str,
    priority: i64,
}

const fn col(name: &'static str, type_: &'static str, path: &'static str, priority: i64) -> Column {
    Column {
        name,
        type_,
        path,
        priority,
    }
}

fn builtin_columns(plural: &str) -> Vec<Column> {
    let mut cols = match plural {
        "namespaces" => vec![col("Status", "string", ".status.phase", 0)],
        "pods" => vec![
            col("Status", "string", ".status.phase", 0),
            col("Node", "string", ".spec.nodeName", 1),
        ],
        "persistentvolumeclaims" => vec![
            col("Status", "string", ".status.phase", 0),
            col("Volume", "string", ".spec.volumeName", 0),
        ],
        "persistentvolumes" => vec![
            col("Status", "string", ".status.phase", 0),
            col("Claim", "string", ".spec.claimRef.name", 0),
        ],
        "storageclasses" => vec![col("Provisioner", "string", ".provisioner", 0)],
        _ => vec![],
    };
    cols.push(col("Age", "date", ".metadata.creationTimestamp", 0));
    cols
}

/// Evaluate a JSONPath subset: `.a.b`, `.a[0]`, `.a[*]` (first), `{.a}`,
/// and `.a[?(@.k=="v")].b`.
pub fn jsonpath<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut cur = obj;
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            // A filter expression may contain ']' only inside quotes; the
            // printer-column filters we support never do.
            let inner = &r[..end];
            rest = &r[end + 1..];
            let arr = cur.as_array()?;
            if let Some(f) = inner.strip_prefix("?(@.").and_then(|x| x.strip_suffix(')')) {
                let (k, v) = f.split_once("==")?;
                let want = v.trim().trim_matches('"').trim_matches('\'');
                cur = arr.iter().find(|e| {
                    e.get(k.trim()).is_some_and(|x| match x {
                        Value::String(s) => s == want,
                        other => serde_json::from_str::<Value>(want).ok().as_ref() == Some(other),
                    })
                })?;
            } else if inner == "*" {
                cur = arr.first()?;
            } else {
                let i: usize = inner.parse().ok()?;
                cur = arr.get(i)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Kubernetes' short human durations ("5s", "3m2s", "2h", "4d").
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 600 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s < 3 * 3600 {
        format!("{}m", s / 60)
    } else if s < 8 * 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else if s < 8 * 86400 {
        format!("{}d{}h", s / 86400, (s % 86400) / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

fn cell(obj: &Value, type_: &str, path: &str) -> Value {
    let Some(v) = jsonpath(obj, path) else {
        return Value::Null;
    };
    match type_ {
        "date" => match v
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            Some(t) => json!(human_duration(
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
            )),
            None => Value::Null,
        },
        "integer" | "number" | "boolean" => v.clone(),
        _ => match v {
            Value::String(_) => v.clone(),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// Render objects as a Table. `include_object` is the `includeObject`
/// parameter (None, Metadata (default), Object).
pub fn render(t: &Target, items: &[Value], list_meta: Value, include_object: &str) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    let mut cols: Vec<(String, String, i64)> = Vec::new();
    let printer = t
        .def
        .version(&t.version)
        .map(|v| v.printer_columns.clone())
        .unwrap_or_default();
    if t.def.is_custom() {
        if printer.is_empty() {
            cols.push((".metadata.creationTimestamp".into(), "date".into(), 0));
            defs.push(json!({"name": "Age", "type": "date", "format": "", "priority": 0, "description": "Creation timestamp"}));
        } else {
            for c in &printer {
                defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}));
                cols.push((c.json_path.clone(), c.type_.clone(), c.priority));
            }
        }
    } else {
        for c in builtin_columns(&t.def.plural) {
            defs.push(json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_ }, "format": "", "description": c.name, "priority": c.priority}));
            cols.push((c.path.to_string(), c.type_.to_string(), c.priority));
        }
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .cloned()
                .unwrap_or(Value::Null)];
            for (path, type_, _) in &cols {
                cells.push(cell(obj, type_, path));
            }
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = obj.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"spec": {"nodeName": "n1", "l": [{"a": 1}]}, "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(jsonpath(&o, ".spec.nodeName"), Some(&json!("n1")));
        assert_eq!(jsonpath(&o, "{.spec.l[0].a}"), Some(&json!(1)));
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(jsonpath(&o, ".spec.missing"), None);
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3 * 86400), "3d0h");
    }
}
