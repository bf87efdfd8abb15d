//! A minimal OpenAPI v3 surface. kubectl (apply/create/replace) checks the
//! per-group-version documents for a PATCH operation of the object's GVK
//! with a `fieldValidation` query parameter; when it finds one it leaves
//! validation to the server instead of downloading full schemas. Only
//! operations and parameters are published, no schemas (so `kubectl
//! explain` is not supported).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{json, Map, Value};

use crate::resources::{Registry, ResourceDef};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn params(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect(),
    )
}

fn operation(def: &ResourceDef, version: &str, action: &str, query: &[&str]) -> Value {
    json!({
        "operationId": format!("{action}{}", def.kind),
        "parameters": params(query),
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": def.group, "version": version, "kind": def.kind},
    })
}

/// The OpenAPI v3 document of one group/version (`api/v1`, `apis/g/v`).
pub fn group_version_doc(reg: &Registry, path: &str) -> Option<Value> {
    let parts: Vec<&str> = path.split('/').collect();
    let (group, version) = match parts.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let defs = reg.resources_in(group, version);
    if defs.is_empty() {
        return None;
    }
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let mut paths = Map::new();
    for def in &defs {
        let base = if def.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                def.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), def.plural)
        };
        paths.insert(
            base.clone(),
            json!({
                "get": operation(def, version, "list", &["labelSelector", "fieldSelector", "limit", "continue", "watch"]),
                "post": operation(def, version, "post", &write),
                "delete": operation(def, version, "deletecollection", &["labelSelector", "fieldSelector", "dryRun"]),
            }),
        );
        let item = json!({
            "get": operation(def, version, "get", &[]),
            "put": operation(def, version, "put", &write),
            "patch": operation(def, version, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
            "delete": operation(def, version, "delete", &["dryRun", "propagationPolicy"]),
        });
        paths.insert(format!("{base}/{{name}}"), item);
        if def.has_status(version) {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({
                    "get": operation(def, version, "get", &[]),
                    "put": operation(def, version, "put", &write),
                    "patch": operation(def, version, "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `/openapi/v3`: the group/version documents with content hashes, so
/// kubectl's on-disk cache notices new resources.
pub fn root(reg: &Registry) -> Value {
    let mut gvs = vec![("".to_string(), "v1".to_string())];
    for (g, vs) in reg.groups() {
        for v in vs {
            gvs.push((g.clone(), v));
        }
    }
    let mut paths = Map::new();
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        let Some(doc) = group_version_doc(reg, &p) else {
            continue;
        };
        let mut h = DefaultHasher::new();
        doc.to_string().hash(&mut h);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", h.finish())}),
        );
    }
    json!({"paths": paths})
}
