//! Shared fixtures for the integration tests: a started server, a kube
//! client, and a LocalVolume-like CRD exercising the schema features.

#![allow(dead_code)]

use std::time::Duration;

use hwameistor_testapi::{ServerOptions, TestApiServer};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use serde_json::{json, Value};

pub async fn start() -> (TestApiServer, Client) {
    start_with(ServerOptions::default()).await
}

pub async fn start_with(opts: ServerOptions) -> (TestApiServer, Client) {
    let server = TestApiServer::start(opts).await.expect("server starts");
    let client = server.client().await.expect("client builds");
    (server, client)
}

pub const GROUP: &str = "hwameistor.io";

/// Cluster-scoped LocalVolume, served at v1alpha1 (storage) and v1beta1.
pub fn local_volume_crd() -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["poolName", "requiredCapacityBytes"],
                "properties": {
                    "poolName": {"type": "string", "enum": ["LocalStorage_PoolHDD", "LocalStorage_PoolSSD"]},
                    "replicaNumber": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 4, "default": 1},
                    "requiredCapacityBytes": {"type": "integer", "format": "int64", "minimum": 0, "exclusiveMinimum": true},
                    "volumeGroup": {"type": "string", "maxLength": 16, "pattern": "^[a-z0-9-]*$"},
                    "accessibility": {
                        "type": "object",
                        "properties": {"nodes": {"type": "array", "maxItems": 2, "items": {"type": "string", "minLength": 1}}}
                    },
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "size": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "note": {"type": "string", "nullable": true},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                    "ratio": {"type": "number", "minimum": 0.5}
                }
            },
            "status": {
                "type": "object",
                "properties": {
                    "state": {"type": "string", "enum": ["Creating", "Ready", "NotReady"]},
                    "allocatedCapacityBytes": {"type": "integer", "format": "int64"}
                }
            }
        }
    });
    let version = |name: &str, storage: bool| {
        json!({
            "name": name,
            "served": true,
            "storage": storage,
            "schema": {"openAPIV3Schema": schema.clone()},
            "subresources": {"status": {}},
            "selectableFields": [{"jsonPath": ".spec.poolName"}],
            "additionalPrinterColumns": [
                {"name": "Pool", "type": "string", "jsonPath": ".spec.poolName"},
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicaNumber"},
                {"name": "State", "type": "string", "jsonPath": ".status.state"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "localvolumes.hwameistor.io"},
        "spec": {
            "group": GROUP,
            "names": {"kind": "LocalVolume", "plural": "localvolumes", "shortNames": ["lv"], "categories": ["hwameistor"]},
            "scope": "Cluster",
            "versions": [version("v1alpha1", true), version("v1beta1", false)]
        }
    })
}

/// Namespaced LocalDisk without a status subresource.
pub fn local_disk_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "localdisks.hwameistor.io"},
        "spec": {
            "group": GROUP,
            "names": {"kind": "LocalDisk", "plural": "localdisks", "shortNames": ["ld"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}

pub fn ar(kind: &str, plural: &str, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, version, kind), plural)
}

pub fn lv_ar() -> ApiResource {
    ar("LocalVolume", "localvolumes", "v1alpha1")
}

pub async fn install_crd(client: &Client, crd: Value) -> CustomResourceDefinition {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("CRD fixture parses");
    api.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created")
}

/// Install the LocalVolume CRD and return an API for it.
pub async fn local_volumes(client: &Client) -> Api<DynamicObject> {
    install_crd(client, local_volume_crd()).await;
    Api::all_with(client.clone(), &lv_ar())
}

pub fn lv(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1",
        "kind": "LocalVolume",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("object parses")
}

/// The Status of a failed call, or a panic naming what happened instead.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Wait (bounded) for a condition on the server.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn rv_of(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("numeric resourceVersion")
}

/// PATCH with an explicit content type (for patch types kube's features here
/// do not cover, and for malformed requests).
pub async fn raw_patch(
    client: &Client,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Result<Value, kube::Error> {
    let req = http::Request::patch(path)
        .header("Content-Type", content_type)
        .body(serde_json::to_vec(body).expect("serializable"))
        .expect("request builds");
    client.request::<Value>(req).await
}
