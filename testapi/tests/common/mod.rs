//! Shared fixtures for the integration tests: a test context on the
//! in-process server or on the real cluster HWAMEISTOR_TEST_KUBECONFIG names,
//! with names of its own, and a LocalVolume-like CRD exercising the schema
//! features.
//!
//! Every test works in namespaces it creates and on CRDs of a group of its
//! own (`<id>.testapi.hwameistor.io`), so tests can run in parallel on one
//! shared cluster, twice in a row, and never touch the project's real CRDs.
//! What a test creates is deleted when its context is dropped (on a real
//! cluster; the in-process server goes with the test).

#![allow(dead_code)]

use std::time::Duration;

use hwameistor_testapi::{unique_name, Cleanup, ServerOptions, TestApiServer, TestCluster};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::Client;
use serde_json::{json, Value};

/// One test's view of its cluster. Field order matters: the cleanup guard is
/// dropped first, while the in-process server (if any) still runs.
pub struct Ctx {
    pub cleanup: Cleanup,
    pub client: Client,
    /// This test's own suffix: its CRD group and namespaces carry it.
    pub id: String,
    pub cluster: TestCluster,
}

/// A context on the cluster the environment selects.
pub async fn start() -> Ctx {
    let cluster = TestCluster::start().await.expect("cluster starts");
    ctx(cluster).await
}

/// A context on a fresh in-process server with these options (tests that
/// need the server's knobs are ignored on a real cluster).
pub async fn start_local(opts: ServerOptions) -> Ctx {
    let server = TestApiServer::start(opts).await.expect("server starts");
    ctx(TestCluster::Local(server)).await
}

async fn ctx(cluster: TestCluster) -> Ctx {
    let client = cluster.client().await.expect("client builds");
    Ctx {
        cleanup: cluster.cleanup(),
        client,
        id: unique_name("t"),
        cluster,
    }
}

/// Who applies the tests' CRDs.
pub const FIELD_MANAGER: &str = "hwameistor-testapi-tests";

impl Ctx {
    pub fn is_real(&self) -> bool {
        self.cluster.is_real()
    }

    /// The in-process server, for tests that are ignored on a real cluster.
    pub fn server(&self) -> &TestApiServer {
        self.cluster
            .local()
            .expect("this test runs on the in-process server only")
    }

    /// This test's API group for custom resources.
    pub fn group(&self) -> String {
        format!("{}.testapi.hwameistor.io", self.id)
    }

    pub fn ar(&self, kind: &str, plural: &str, version: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&self.group(), version, kind),
            plural,
        )
    }

    pub fn lv_ar(&self) -> ApiResource {
        self.ar("LocalVolume", "localvolumes", "v1alpha1")
    }

    /// `LocalVolume.<group>` as the server names the kind in messages.
    pub fn lv_kind(&self) -> String {
        format!("LocalVolume.{}", self.group())
    }

    pub fn lv_crd_name(&self) -> String {
        format!("localvolumes.{}", self.group())
    }

    /// A namespace of this test's own, deleted at the end.
    pub async fn namespace(&self) -> String {
        let name = unique_name(&self.id);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.cleanup.namespace(&name);
        api.create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        name
    }

    /// A namespace the controller manager has finished setting up, on a real
    /// cluster: the `default` ServiceAccount exists (the ServiceAccount
    /// admission refuses pods before) and so does the `kube-root-ca.crt`
    /// ConfigMap (which would otherwise appear in the middle of a test).
    pub async fn settled_namespace(&self) -> String {
        let ns = self.namespace().await;
        if self.is_real() {
            let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
            let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
            eventually(
                "the namespace's default ServiceAccount and root CA",
                || async {
                    sas.get_opt("default").await.ok().flatten().is_some()
                        && cms
                            .get_opt("kube-root-ca.crt")
                            .await
                            .ok()
                            .flatten()
                            .is_some()
                },
            )
            .await;
        }
        ns
    }

    /// Apply a CRD (server-side apply: idempotent), wait until it is
    /// Established and its resource served, and delete it at the end.
    pub async fn install_crd(&self, crd: Value) -> CustomResourceDefinition {
        let crd: CustomResourceDefinition =
            serde_json::from_value(crd).expect("CRD fixture parses");
        let name = crd.metadata.name.clone().expect("CRD fixture has a name");
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        self.cleanup.crd(&name);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD applied");
        eventually("the CRD to be Established", || async {
            api.get(&name).await.is_ok_and(|c| established(&c))
        })
        .await;
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.served)
            .map(|v| v.name.clone())
            .expect("a served version");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&crd.spec.group, &version, &crd.spec.names.kind),
            &crd.spec.names.plural,
        );
        let objects: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        eventually("the custom resource to be served", || async {
            objects.list(&ListParams::default().limit(1)).await.is_ok()
        })
        .await;
        api.get(&name).await.expect("CRD readable")
    }

    /// Install this test's LocalVolume CRD and return an API for it.
    pub async fn local_volumes(&self) -> Api<DynamicObject> {
        self.install_crd(local_volume_crd(&self.group())).await;
        Api::all_with(self.client.clone(), &self.lv_ar())
    }

    /// A LocalVolume object of this test's group.
    pub fn lv(&self, name: &str, spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("{}/v1alpha1", self.group()),
            "kind": "LocalVolume",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("object parses")
    }

    /// Creates a minimal valid LocalVolume named `name` through `api`.
    pub async fn create_lv(&self, api: &Api<DynamicObject>, name: &str) -> DynamicObject {
        api.create(
            &PostParams::default(),
            &self.lv(
                name,
                json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 5}),
            ),
        )
        .await
        .expect("create LocalVolume")
    }
}

pub fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Cluster-scoped LocalVolume in `group`, served at v1alpha1 (storage) and v1beta1.
pub fn local_volume_crd(group: &str) -> Value {
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
                    "nodeName": {"type": "string"},
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
            "selectableFields": [{"jsonPath": ".spec.poolName"}, {"jsonPath": ".spec.nodeName"}],
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
        "metadata": {"name": format!("localvolumes.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "LocalVolume", "plural": "localvolumes", "shortNames": ["lv"], "categories": ["hwameistor"]},
            "scope": "Cluster",
            "versions": [version("v1alpha1", true), version("v1beta1", false)]
        }
    })
}

/// Namespaced LocalDisk in `group`, without a status subresource.
pub fn local_disk_crd(group: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("localdisks.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "LocalDisk", "plural": "localdisks", "shortNames": ["ld"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}

/// The Status of a failed call, or a panic naming what happened instead.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Wait (bounded) for a condition on the server. The in-process server is
/// synchronous; on a real cluster controllers (garbage collector, namespace
/// and CRD finalizers) and caches need a moment, so the bound is generous.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
