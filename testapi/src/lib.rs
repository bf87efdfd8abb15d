//! An in-process Kubernetes API server with real semantics, for tests.
//!
//! [`TestApiServer`] serves HTTPS with bearer-token auth and behaves like a
//! real API server for the parts HwameiStor's agents, CLI and `kubectl` use:
//! discovery (legacy and aggregated), CRDs with structural-schema
//! validation/pruning/defaulting, resourceVersion concurrency, watch
//! (history replay, bookmarks, 410 Gone, streaming lists), patches (merge,
//! JSON, strategic, server-side apply), status subresources, finalizers,
//! garbage collection (dangling owner references of surviving dependents
//! removed, as the real collector does), namespace lifecycle and dry-run. [`TestCluster`]
//! switches tests to a real cluster when `HWAMEISTOR_TEST_KUBECONFIG` is set.
//!
//! Like a real server it refuses what real clients trip over: changes to
//! immutable fields of CSIDriver (`spec.attachRequired`, reported as
//! `spec.attachedRequired` as Kubernetes does, and `spec.volumeLifecycleModes`),
//! StorageClass (`provisioner`, `parameters`, `reclaimPolicy`,
//! `volumeBindingMode`) and workloads (`spec.selector`, a StatefulSet's spec
//! beyond its mutable fields), all 422 Invalid naming the field; a PUT
//! without `metadata.resourceVersion` of a custom resource, CRD or Lease
//! (422); a strategic merge patch of a custom resource (415); field selectors
//! on custom resources other than `metadata.name`, `metadata.namespace`
//! (namespaced ones) and the CRD's `selectableFields` (400, for lists and
//! watches); `selectableFields` that name no scalar field of the schema
//! (422). Deletion honours `propagationPolicy` (Background, Foreground
//! with `blockOwnerDeletion`, Orphan), and an update that removes the last
//! finalizer of a deleting object deletes it (one DELETED event, no MODIFIED).
//!
//! Known approximations (documented where they live):
//! - strategic merge patch on built-ins merges lists by key only for the
//!   common fields in `patch::merge_key` (conditions, containers, env, ...)
//!   and merges `finalizers` as a set; other lists are replaced;
//! - server-side apply is "create if absent, else deep merge" (merge-patch
//!   semantics); field ownership, managedFields and apply conflicts are not
//!   modelled (a real server also removes fields a manager stops applying),
//!   `force` is accepted and ignored;
//! - built-in types are not schema-validated; type-specific defaulting and
//!   update rules exist only for CSIDriver, StorageClass, the apps workloads'
//!   immutable fields and DaemonSet template generation (`builtins`),
//!   Secret.type and Namespace status/finalizers; field selectors on
//!   built-ins accept any path; core/v1 and events.k8s.io/v1 events are
//!   stored apart;
//! - controllers do not run: no pods start, workload status changes only
//!   when a client writes it, namespaces get no `default` ServiceAccount or
//!   `kube-root-ca.crt`; garbage collection, namespace and CRD finalization
//!   happen synchronously within the request that allows them;
//! - lists with a continue token read the current state, not a snapshot;
//!   `resourceVersionMatch=Exact` reads the current state unless expired;
//! - CEL rules (`x-kubernetes-validations`), list-type/map-keys uniqueness
//!   and string formats other than int32/int64 are not validated; a CRD's
//!   `selectableFields` are checked (a simple path to a string, boolean or
//!   integer field of the schema, not in metadata, unique, at most eight)
//!   with messages close to but not always the real server's;
//! - protobuf request bodies are decoded only for v1 Namespace, ConfigMap,
//!   Secret and ServiceAccount (what `kubectl create ...` sends); responses
//!   are always JSON; no `/scale`, `/log`, `/exec`, no admission webhooks.

pub mod builtins;
pub mod cleanup;
pub mod cluster;
pub mod discovery;
pub mod errors;
pub mod kubeconfig;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod test_server;
pub mod tls;
pub mod util;
pub mod validation;
pub mod watch;

pub use cleanup::{unique_name, Cleanup};
pub use cluster::TestCluster;
pub use errors::{ApiError, Error};
pub use test_server::{ServerOptions, TestApiServer};
