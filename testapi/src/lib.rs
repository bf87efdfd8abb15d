//! An in-process Kubernetes API server with real semantics, for tests.
//!
//! [`TestApiServer`] serves HTTPS with bearer-token auth and behaves like a
//! real API server for the parts HwameiStor's agents, CLI and `kubectl` use:
//! discovery (legacy and aggregated), CRDs with structural-schema
//! validation/pruning/defaulting, resourceVersion concurrency, watch
//! (history replay, bookmarks, 410 Gone, streaming lists), patches (merge,
//! JSON, strategic, server-side apply), status subresources, finalizers,
//! garbage collection, namespace lifecycle and dry-run. [`TestCluster`]
//! switches tests to a real cluster when `HWAMEISTOR_TEST_KUBECONFIG` is set.
//!
//! Known approximations (documented where they live):
//! - strategic merge patch on built-ins merges lists by key only for the
//!   common fields in `patch::merge_key` (conditions, containers, env, ...)
//!   and merges `finalizers` as a set; other lists are replaced. On custom
//!   resources it is accepted and applied as a merge patch (a real server
//!   answers 415 there);
//! - server-side apply is "create if absent, else deep merge" (merge-patch
//!   semantics); field ownership, managedFields and apply conflicts are not
//!   modelled, `force` is accepted and ignored;
//! - built-in types are not schema-validated and get no type-specific
//!   defaulting (except Secret.type and Namespace status/finalizers); field
//!   selectors on built-ins accept any path; core/v1 and events.k8s.io/v1
//!   events are stored apart;
//! - lists with a continue token read the current state, not a snapshot;
//!   `resourceVersionMatch=Exact` reads the current state unless expired;
//! - CEL rules (`x-kubernetes-validations`), list-type/map-keys uniqueness
//!   and string formats other than int32/int64 are not validated;
//! - protobuf request bodies are decoded only for v1 Namespace, ConfigMap,
//!   Secret and ServiceAccount (what `kubectl create ...` sends); responses
//!   are always JSON; no `/scale`, `/log`, `/exec`, no admission webhooks.

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

pub use cluster::TestCluster;
pub use errors::{ApiError, Error};
pub use test_server::{ServerOptions, TestApiServer};
