//! Removing what a test created on a real, shared cluster, also when the test
//! fails: a [`Cleanup`] guard collects what to delete and deletes it when it
//! is dropped (at the end of the test, or while a panic unwinds).
//!
//! On the in-process server the guard does nothing: that server and all its
//! objects go with the test. On a real cluster deletion is best effort; a
//! failure is reported on stderr and never fails the test, because every
//! test uses names of its own ([`unique_name`]) and a leftover cannot
//! disturb the next run.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{json, Value};

use crate::util::generate_name_suffix;

/// `prefix-xxxxx` with a random suffix from the alphabet the API server uses
/// for `generateName`: a valid DNS label when `prefix` is one of at most 57
/// characters. Tests name what they create with it, so runs on one shared
/// cluster (in parallel, or one after another over leftovers) never collide.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", generate_name_suffix())
}

/// How long the deletions of one guard may take in all.
const CLEANUP_BUDGET: Duration = Duration::from_secs(60);

/// Finalizers a test may leave on objects it created; removed before the
/// objects are deleted so that nothing stays Terminating.
const FINALIZED_KINDS: &[&str] = &["configmaps", "secrets", "pods"];

#[derive(Debug, Clone)]
enum Item {
    /// One object, by its URL path (`/api/v1/namespaces/ns/configmaps/x`).
    Object(String),
    /// Every cluster-scoped object of a collection (URL path) whose name
    /// contains a marker, for objects named by the code under test.
    Matching { collection: String, marker: String },
    /// A namespace and everything in it.
    Namespace(String),
    /// A CustomResourceDefinition and every custom resource it serves.
    Crd(String),
}

#[derive(Debug, thiserror::Error)]
enum CleanupError {
    #[error("cannot start a runtime for the cleanup: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build a client: {0}")]
    Client(#[from] kube::Error),
    #[error("cannot build the request for {path}: {source}")]
    Request { path: String, source: http::Error },
    #[error("the cleanup took longer than {CLEANUP_BUDGET:?}")]
    Timeout,
}

/// Deletes, when dropped, what was registered with it (on a real cluster only).
#[derive(Debug)]
pub struct Cleanup {
    kubeconfig: Option<PathBuf>,
    items: Mutex<Vec<Item>>,
}

impl Cleanup {
    /// A guard for the cluster named by `kubeconfig`; None for the in-process
    /// server, where there is nothing to clean up.
    pub fn new(kubeconfig: Option<PathBuf>) -> Self {
        Cleanup {
            kubeconfig,
            items: Mutex::new(Vec::new()),
        }
    }

    /// Whether drops delete anything (a real cluster).
    pub fn is_active(&self) -> bool {
        self.kubeconfig.is_some()
    }

    fn push(&self, item: Item) {
        if self.is_active() {
            self.items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(item);
        }
    }

    /// Delete one object by its URL path (its finalizers are removed first).
    pub fn object(&self, path: impl Into<String>) {
        self.push(Item::Object(path.into()));
    }

    /// Delete every cluster-scoped object of `collection` (a URL path such as
    /// `/apis/hwameistor.io/v1alpha1/localdisks`) whose name contains `marker`.
    pub fn matching(&self, collection: impl Into<String>, marker: impl Into<String>) {
        self.push(Item::Matching {
            collection: collection.into(),
            marker: marker.into(),
        });
    }

    /// Delete a namespace (and so everything in it).
    pub fn namespace(&self, name: impl Into<String>) {
        self.push(Item::Namespace(name.into()));
    }

    /// Delete a CustomResourceDefinition (and so every object it serves).
    pub fn crd(&self, name: impl Into<String>) {
        self.push(Item::Crd(name.into()));
    }

    fn run(kubeconfig: PathBuf, items: Vec<Item>) -> Result<(), CleanupError> {
        // A runtime of its own: the test's runtime is blocked in drop(), and
        // the test's client runs on that runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let kc =
                Kubeconfig::read_from(&kubeconfig).map_err(|source| CleanupError::Kubeconfig {
                    path: kubeconfig.clone(),
                    source,
                })?;
            let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| CleanupError::Kubeconfig {
                    path: kubeconfig.clone(),
                    source,
                })?;
            let client = kube::Client::try_from(config)?;
            let work = async {
                // Last registered first: what was made inside something goes
                // before the thing it was made in.
                for item in items.iter().rev() {
                    if let Err(e) = delete_item(&client, item).await {
                        eprintln!("cleanup of {item:?} failed: {e}");
                    }
                }
            };
            tokio::time::timeout(CLEANUP_BUDGET, work)
                .await
                .map_err(|_| CleanupError::Timeout)
        })
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(kubeconfig) = self.kubeconfig.clone() else {
            return;
        };
        let items = std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()));
        if items.is_empty() {
            return;
        }
        let joined = std::thread::spawn(move || Cleanup::run(kubeconfig, items)).join();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup failed: {e}"),
            Err(_) => eprintln!("cleanup panicked"),
        }
    }
}

fn request(
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<http::Request<Vec<u8>>, CleanupError> {
    let mut b = http::Request::builder().method(method).uri(path);
    if body.is_some() {
        b = b.header("Content-Type", "application/merge-patch+json");
    }
    b.body(body.map(Value::to_string).unwrap_or_default().into_bytes())
        .map_err(|source| CleanupError::Request {
            path: path.to_string(),
            source,
        })
}

/// Send a request; a 404 (already gone) counts as success.
async fn send(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
) -> Result<Option<Value>, CleanupError> {
    match client.request::<Value>(req).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn strip_finalizers(client: &kube::Client, path: &str) -> Result<(), CleanupError> {
    let patch = json!({"metadata": {"finalizers": null}});
    send(client, request(http::Method::PATCH, path, Some(&patch))?).await?;
    Ok(())
}

async fn delete(client: &kube::Client, path: &str) -> Result<(), CleanupError> {
    let path = format!("{path}?propagationPolicy=Background");
    send(client, request(http::Method::DELETE, &path, None)?).await?;
    Ok(())
}

fn has_finalizers(o: &Value) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn name_of(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The items of a list at `collection`, empty when it is not served.
async fn list(client: &kube::Client, collection: &str) -> Result<Vec<Value>, CleanupError> {
    let list = send(client, request(http::Method::GET, collection, None)?).await?;
    Ok(list
        .and_then(|l| l.get("items").and_then(Value::as_array).cloned())
        .unwrap_or_default())
}

async fn delete_item(client: &kube::Client, item: &Item) -> Result<(), CleanupError> {
    match item {
        Item::Object(path) => {
            strip_finalizers(client, path).await?;
            delete(client, path).await
        }
        Item::Matching { collection, marker } => {
            for o in list(client, collection).await? {
                let name = name_of(&o);
                if name.contains(marker.as_str()) {
                    let path = format!("{collection}/{name}");
                    if has_finalizers(&o) {
                        strip_finalizers(client, &path).await?;
                    }
                    delete(client, &path).await?;
                }
            }
            Ok(())
        }
        Item::Namespace(ns) => {
            for plural in FINALIZED_KINDS {
                let collection = format!("/api/v1/namespaces/{ns}/{plural}");
                for o in list(client, &collection).await? {
                    if has_finalizers(&o) {
                        strip_finalizers(client, &format!("{collection}/{}", name_of(&o))).await?;
                    }
                }
            }
            delete(client, &format!("/api/v1/namespaces/{ns}")).await
        }
        Item::Crd(name) => {
            let crd_path =
                format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
            if let Some(crd) = send(client, request(http::Method::GET, &crd_path, None)?).await? {
                let group = crd
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let plural = crd
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let version = crd
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .and_then(|vs| {
                        vs.iter()
                            .find(|v| v.get("served").and_then(Value::as_bool) == Some(true))
                    })
                    .and_then(|v| v.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let base = format!("/apis/{group}/{version}");
                for o in list(client, &format!("{base}/{plural}")).await? {
                    if !has_finalizers(&o) {
                        continue;
                    }
                    let path = match o.pointer("/metadata/namespace").and_then(Value::as_str) {
                        Some(ns) if !ns.is_empty() => {
                            format!("{base}/namespaces/{ns}/{plural}/{}", name_of(&o))
                        }
                        _ => format!("{base}/{plural}/{}", name_of(&o)),
                    };
                    strip_finalizers(client, &path).await?;
                }
            }
            delete(client, &crd_path).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels_and_differ() {
        let a = unique_name("test");
        let b = unique_name("test");
        assert_ne!(a, b);
        assert!(a.starts_with("test-") && a.len() == 10, "{a}");
        assert!(crate::validation::is_dns_subdomain(&a) && !a.contains('.'));
    }

    #[test]
    fn a_guard_for_the_local_server_keeps_nothing() {
        let c = Cleanup::new(None);
        c.namespace("x");
        assert!(!c.is_active());
        assert!(c.items.lock().unwrap().is_empty());
    }
}
