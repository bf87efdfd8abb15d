//! The object store: every object keyed by resource/namespace/name, one
//! global revision counter (like etcd's), the write pipeline (admission,
//! validation, generation, finalizers, garbage collection, namespace and
//! CRD lifecycles) and the registration of watchers.
//!
//! All operations are synchronous and run under one mutex; they never await,
//! so a `std::sync::Mutex` is enough and keeps every write atomic with the
//! events it emits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::builtins;
use crate::errors::{ApiError, ApiResult, Cause};
use crate::patch::{self, JsonPatchError, PatchType};
use crate::resources::{
    crd_key, crd_status, crd_to_def, default_crd_spec, namespace_key, Registry, ResKey, ResourceDef,
};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::util::{generate_name_suffix, new_uid, now_rfc3339};
use crate::validation::{check_metadata_shape, validate_labels, validate_name};
use crate::watch::{Event, EventType, Filter, History, WatchSession};

pub type SharedStore = Arc<Mutex<Store>>;

/// What a real server answers a strategic merge patch of a custom resource with.
pub const CUSTOM_RESOURCE_PATCH_TYPES: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// The finalizer that holds an owner deleted with `propagationPolicy=Foreground`
/// until its blocking dependents are gone.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Lock the store. A panic while holding the lock cannot leave a write half
/// done in a way later requests care about more than a dead server would, so
/// poisoning is ignored.
pub fn lock(s: &SharedStore) -> MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The resource, version and namespace a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    /// The URL namespace: Some for namespaced requests, None for cluster-scoped
    /// resources and for lists across all namespaces.
    pub namespace: Option<String>,
}

impl Target {
    pub fn api_version(&self) -> String {
        self.def.api_version(&self.version)
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.def.group, &self.def.plural, name)
    }
}

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    pub field_manager: Option<String>,
    pub force: bool,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// The result of a create/update/patch.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    /// `Warning` headers (e.g. unknown fields that were pruned).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub propagation: Propagation,
}

/// What happens to the dependents (objects whose ownerReferences name the
/// deleted object) of a deleted object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes at once; its dependents are collected after it.
    #[default]
    Background,
    /// The object stays (deleting, with the `foregroundDeletion` finalizer)
    /// until every dependent that blocks it (`blockOwnerDeletion`) is gone.
    Foreground,
    /// Dependents lose their owner reference instead of being collected.
    Orphan,
}

/// The result of a delete.
#[derive(Debug)]
pub struct Deleted {
    pub object: Value,
    /// True when the object is gone; false while finalizers keep it.
    pub finished: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// A page of a list, before rendering (as a List or a Table).
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    /// Items after this page; None when selectors filter the list, as a real
    /// server cannot count those without reading them all.
    pub remaining: Option<usize>,
}

/// One stored object with its (namespace, name) key.
type Entry<'a> = (&'a (String, String), &'a Arc<Value>);

/// A stored object's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ObjRef {
    key: ResKey,
    ns: String,
    name: String,
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Unreachable: the metadata object was just ensured.
        _ => unreachable!("metadata is an object"),
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_deleting(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|v| !v.is_null()))
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|o| o.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The object without the parts that never count as a spec change.
fn spec_part(obj: &Value, ignore_status: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if ignore_status {
            m.remove("status");
        }
    }
    o
}

const SERVER_MANAGED_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

pub struct Store {
    rv: u64,
    registry: Registry,
    objects: HashMap<ResKey, BTreeMap<(String, String), Arc<Value>>>,
    history: HashMap<ResKey, History>,
    watchers: HashMap<ResKey, Vec<mpsc::UnboundedSender<Arc<Event>>>>,
    uids: HashMap<String, ObjRef>,
    /// owner uid → objects whose ownerReferences name it (for GC).
    dependents: HashMap<String, BTreeSet<ObjRef>>,
    history_limit: usize,
    /// Revision of the last `compact()`: older revisions are gone everywhere.
    compacted_floor: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let mut s = Store {
            rv: 0,
            registry: Registry::builtin(),
            objects: HashMap::new(),
            history: HashMap::new(),
            watchers: HashMap::new(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history_limit,
            compacted_floor: 0,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let t = s
                .target("", "v1", "namespaces", None)
                .expect("namespaces are built in");
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            // Creating the initial namespaces cannot fail: names are valid and unique.
            let _ = s.create(&t, body, &WriteOptions::default());
        }
        s
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolve a URL's resource; None when nothing is served there.
    pub fn target(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<String>,
    ) -> Option<Target> {
        let def = self.registry.resolve(group, version, plural)?;
        Some(Target {
            def,
            version: version.to_string(),
            namespace,
        })
    }

    /// Drop all watch history: every older resourceVersion becomes 410 Gone.
    pub fn compact(&mut self) {
        self.compacted_floor = self.rv;
        let rv = self.rv;
        for h in self.history.values_mut() {
            h.compact(rv);
        }
    }

    fn compacted_rv(&self, key: &ResKey) -> u64 {
        let h = self.history.get(key).map(|h| h.compacted_rv).unwrap_or(0);
        h.max(self.compacted_floor)
    }

    fn get_ref(&self, r: &ObjRef) -> Option<Arc<Value>> {
        self.objects
            .get(&r.key)?
            .get(&(r.ns.clone(), r.name.clone()))
            .cloned()
    }

    fn present(t: &Target, obj: &Value) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = json!(t.api_version());
        o["kind"] = json!(t.def.kind);
        o
    }

    fn obj_ref(t: &Target, name: &str) -> ObjRef {
        ObjRef {
            key: t.def.key(),
            ns: t.ns().to_string(),
            name: name.to_string(),
        }
    }

    // ---- storage primitives -------------------------------------------------

    fn index(&mut self, r: &ObjRef, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            self.uids.insert(uid.to_string(), r.clone());
        }
        for owner in owner_uids(obj) {
            self.dependents.entry(owner).or_default().insert(r.clone());
        }
    }

    fn unindex(&mut self, r: &ObjRef, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            if self.uids.get(uid) == Some(r) {
                self.uids.remove(uid);
            }
        }
        for owner in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(r);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    fn emit(&mut self, key: &ResKey, ev: Event) {
        let ev = Arc::new(ev);
        self.history
            .entry(key.clone())
            .or_default()
            .push(ev.clone(), self.history_limit);
        if let Some(ws) = self.watchers.get_mut(key) {
            ws.retain(|tx| tx.send(ev.clone()).is_ok());
        }
    }

    /// Store a new state of an object at the next revision and emit its event.
    fn commit_put(
        &mut self,
        r: &ObjRef,
        mut obj: Value,
        kind: EventType,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        if let Some(def) = self.registry.get(&r.key) {
            obj["apiVersion"] = json!(def.storage_api_version());
            obj["kind"] = json!(def.kind);
        }
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let arc = Arc::new(obj);
        if let Some(o) = &old {
            self.unindex(r, o);
        }
        self.index(r, &arc);
        self.objects
            .entry(r.key.clone())
            .or_default()
            .insert((r.ns.clone(), r.name.clone()), arc.clone());
        let ev = Event {
            kind,
            rv: self.rv,
            namespace: r.ns.clone(),
            object: arc.clone(),
            old,
        };
        self.emit(&r.key, ev);
        arc
    }

    /// Remove an object at the next revision (DELETED event), without cascades.
    fn commit_remove(&mut self, r: &ObjRef) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(&r.key)?
            .remove(&(r.ns.clone(), r.name.clone()))?;
        self.rv += 1;
        self.unindex(r, &old);
        let mut last = (*old).clone();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let arc = Arc::new(last);
        let ev = Event {
            kind: EventType::Deleted,
            rv: self.rv,
            namespace: r.ns.clone(),
            object: arc.clone(),
            old: Some(old),
        };
        self.emit(&r.key, ev);
        Some(arc)
    }

    // ---- lifecycles: removal, finalization, GC, containers ------------------

    /// Remove an object for good, then run what its removal triggers: CRD
    /// unregistration, garbage collection of dependents, and completion of a
    /// terminating namespace or CRD that was waiting for it.
    fn remove_object(&mut self, r: &ObjRef) -> Option<Arc<Value>> {
        let removed = self.commit_remove(r)?;
        if r.key == crd_key() {
            self.unregister_crd(&r.name);
        }
        for owner in owner_uids(&removed) {
            self.release_foreground(&owner);
        }
        if let Some(uid) = meta_str(&removed, "uid") {
            self.collect_garbage(uid);
        }
        if !r.ns.is_empty() {
            self.try_finalize(&ObjRef {
                key: namespace_key(),
                ns: String::new(),
                name: r.ns.clone(),
            });
        }
        if let Some(crd) = self.registry.get(&r.key).and_then(|d| d.crd_name.clone()) {
            self.try_finalize(&ObjRef {
                key: crd_key(),
                ns: String::new(),
                name: crd,
            });
        }
        Some(removed)
    }

    /// Remove a deleting object once nothing holds it any more.
    fn try_finalize(&mut self, r: &ObjRef) -> Option<Arc<Value>> {
        let cur = self.get_ref(r)?;
        if is_deleting(&cur) && finalizers(&cur).is_empty() && !self.has_contents(r) {
            return self.remove_object(r);
        }
        None
    }

    /// Background cascading deletion: dependents with no other live owner go.
    /// A dependent that still has a live owner stays, and loses its reference to
    /// the one that is gone (the real garbage collector patches dangling
    /// references away).
    fn collect_garbage(&mut self, owner_uid: &str) {
        let Some(deps) = self.dependents.remove(owner_uid) else {
            return;
        };
        for d in deps {
            let Some(obj) = self.get_ref(&d) else {
                continue;
            };
            let other_live_owner = owner_uids(&obj)
                .iter()
                .any(|u| u != owner_uid && self.uids.contains_key(u));
            if other_live_owner {
                let mut o = (*obj).clone();
                if let Some(Value::Array(refs)) = meta_mut(&mut o).get_mut("ownerReferences") {
                    refs.retain(|x| x.get("uid").and_then(Value::as_str) != Some(owner_uid));
                }
                self.commit_put(&d, o, EventType::Modified, Some(obj));
            } else {
                self.delete_object(&d);
            }
        }
    }

    /// `propagationPolicy=Orphan`: drop the owner reference from dependents.
    fn orphan_dependents(&mut self, owner_uid: &str) {
        let deps: Vec<ObjRef> = self
            .dependents
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for d in deps {
            let Some(old) = self.get_ref(&d) else {
                continue;
            };
            let mut o = (*old).clone();
            if let Some(Value::Array(refs)) = meta_mut(&mut o).get_mut("ownerReferences") {
                refs.retain(|x| x.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            self.commit_put(&d, o, EventType::Modified, Some(old));
        }
    }

    /// Dependents of `owner_uid` whose reference to it has
    /// `blockOwnerDeletion: true` (those a foreground deletion waits for).
    fn blocking_dependents(&self, owner_uid: &str) -> usize {
        let Some(deps) = self.dependents.get(owner_uid) else {
            return 0;
        };
        deps.iter()
            .filter_map(|d| self.get_ref(d))
            .filter(|o| {
                meta(o)
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter().any(|x| {
                            x.get("uid").and_then(Value::as_str) == Some(owner_uid)
                                && x.get("blockOwnerDeletion").and_then(Value::as_bool)
                                    == Some(true)
                        })
                    })
            })
            .count()
    }

    /// `propagationPolicy=Foreground`: mark the object deleting with the
    /// `foregroundDeletion` finalizer, delete its dependents, and let it go
    /// once no blocking dependent remains (the garbage collector's job on a
    /// real cluster, done synchronously here).
    fn delete_foreground(&mut self, r: &ObjRef) -> Option<(Arc<Value>, bool)> {
        let cur = self.get_ref(r)?;
        let uid = meta_str(&cur, "uid").unwrap_or("").to_string();
        let deps: Vec<ObjRef> = self
            .dependents
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if deps.is_empty() {
            return self.delete_object(r);
        }
        let mut marked = cur.clone();
        if !finalizers(&cur).iter().any(|f| f == FOREGROUND_FINALIZER) {
            let mut o = (*cur).clone();
            let m = meta_mut(&mut o);
            let mut fins = finalizers(&cur);
            fins.push(FOREGROUND_FINALIZER.to_string());
            m.insert("finalizers".into(), json!(fins));
            if !is_deleting(&cur) {
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            marked = self.commit_put(r, o, EventType::Modified, Some(cur));
        }
        for d in deps {
            self.delete_object(&d);
        }
        self.release_foreground(&uid);
        match self.get_ref(r) {
            Some(now) => Some((now, false)),
            None => Some((marked, true)),
        }
    }

    /// Drop the `foregroundDeletion` finalizer of a deleting owner once no
    /// blocking dependent is left, and remove the owner if nothing else holds it.
    fn release_foreground(&mut self, owner_uid: &str) {
        let Some(owner_ref) = self.uids.get(owner_uid).cloned() else {
            return;
        };
        let Some(owner) = self.get_ref(&owner_ref) else {
            return;
        };
        if !is_deleting(&owner)
            || !finalizers(&owner).iter().any(|f| f == FOREGROUND_FINALIZER)
            || self.blocking_dependents(owner_uid) > 0
        {
            return;
        }
        let mut o = (*owner).clone();
        let rest: Vec<String> = finalizers(&owner)
            .into_iter()
            .filter(|f| f != FOREGROUND_FINALIZER)
            .collect();
        if rest.is_empty() && !self.has_contents(&owner_ref) {
            self.remove_object(&owner_ref);
            return;
        }
        meta_mut(&mut o).insert("finalizers".into(), json!(rest));
        self.commit_put(&owner_ref, o, EventType::Modified, Some(owner));
    }

    /// The resource a CRD serves, if registered.
    fn crd_resource(&self, crd_name: &str) -> Option<ResKey> {
        self.registry
            .all()
            .find(|d| d.crd_name.as_deref() == Some(crd_name))
            .map(|d| d.key())
    }

    /// Namespaces and CRDs are containers: they stay (terminating) while
    /// objects in them remain.
    fn has_contents(&self, r: &ObjRef) -> bool {
        if r.key == namespace_key() {
            self.registry.all().filter(|d| d.namespaced).any(|d| {
                self.objects.get(&d.key()).is_some_and(|m| {
                    m.range((r.name.clone(), String::new())..)
                        .next()
                        .is_some_and(|((ns, _), _)| *ns == r.name)
                })
            })
        } else if r.key == crd_key() {
            self.crd_resource(&r.name)
                .and_then(|k| self.objects.get(&k))
                .is_some_and(|m| !m.is_empty())
        } else {
            false
        }
    }

    fn contents(&self, r: &ObjRef) -> Vec<ObjRef> {
        let mut out = Vec::new();
        if r.key == namespace_key() {
            for d in self.registry.all().filter(|d| d.namespaced) {
                let key = d.key();
                if let Some(m) = self.objects.get(&key) {
                    for ((ns, name), _) in m.range((r.name.clone(), String::new())..) {
                        if *ns != r.name {
                            break;
                        }
                        out.push(ObjRef {
                            key: key.clone(),
                            ns: ns.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        } else if r.key == crd_key() {
            if let Some(key) = self.crd_resource(&r.name) {
                if let Some(m) = self.objects.get(&key) {
                    for (ns, name) in m.keys() {
                        out.push(ObjRef {
                            key: key.clone(),
                            ns: ns.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Delete one object: removed at once when nothing holds it, otherwise
    /// marked with deletionTimestamp (and, for containers, its contents
    /// deleted). Returns the last state and whether it is gone.
    fn delete_object(&mut self, r: &ObjRef) -> Option<(Arc<Value>, bool)> {
        let cur = self.get_ref(r)?;
        if finalizers(&cur).is_empty() && !self.has_contents(r) {
            return self.remove_object(r).map(|o| (o, true));
        }
        if is_deleting(&cur) {
            return Some((cur, false));
        }
        let mut o = (*cur).clone();
        let m = meta_mut(&mut o);
        m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        if r.key == namespace_key() {
            o["status"] = json!({"phase": "Terminating"});
        }
        if r.key == crd_key() {
            mark_crd_terminating(&mut o);
        }
        let marked = self.commit_put(r, o, EventType::Modified, Some(cur));
        for c in self.contents(r) {
            self.delete_object(&c);
        }
        match self.get_ref(r) {
            Some(now) => Some((now, false)),
            None => Some((marked, true)),
        }
    }

    fn register_crd(&mut self, crd: &Value) {
        if let Ok(def) = crd_to_def(crd) {
            self.registry.insert(def);
        }
    }

    fn unregister_crd(&mut self, crd_name: &str) {
        let Some(key) = self.crd_resource(crd_name) else {
            return;
        };
        self.registry.remove(&key);
        if let Some(objs) = self.objects.remove(&key) {
            for ((ns, name), obj) in objs {
                let r = ObjRef {
                    key: key.clone(),
                    ns,
                    name,
                };
                self.unindex(&r, &obj);
            }
        }
        self.history.remove(&key);
        // Dropping the senders ends those watch streams, as the real server
        // closes watches of a resource that stops being served.
        self.watchers.remove(&key);
    }

    // ---- admission ----------------------------------------------------------

    /// Check a request body's type and fill apiVersion/kind. A body of another
    /// version of the same group is accepted and read at the URL's version
    /// (CRD conversion strategy None only changes apiVersion).
    fn check_body(t: &Target, body: &mut Value) -> ApiResult<()> {
        let def = &t.def;
        let Some(m) = body.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        };
        if let Some(av) = m
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            if group != def.group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    t.api_version()
                )));
            }
        }
        if let Some(k) = m
            .get("kind")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if k != def.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                    def.kind,
                    t.api_version()
                )));
            }
        }
        m.insert("apiVersion".into(), json!(t.api_version()));
        m.insert("kind".into(), json!(def.kind));
        check_metadata_shape(body).map_err(ApiError::bad_request)?;
        meta_mut(body);
        Ok(())
    }

    /// Resolve the object's namespace against the URL's.
    fn check_namespace(t: &Target, body: &mut Value) -> ApiResult<()> {
        let m = meta_mut(body);
        if t.def.namespaced {
            let url_ns = t.ns().to_string();
            match m.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    m.insert("namespace".into(), json!(url_ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    fn check_namespace_writable(&self, t: &Target, name: &str) -> ApiResult<()> {
        let r = ObjRef {
            key: namespace_key(),
            ns: String::new(),
            name: t.ns().to_string(),
        };
        match self.get_ref(&r) {
            None => Err(ApiError::not_found("", "namespaces", t.ns())),
            Some(ns) if is_deleting(&ns) => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                crate::errors::group_resource(&t.def.group, &t.def.plural),
                name,
                t.ns()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Name, labels, schema (prune/default/validate) and CRD checks.
    /// Returns warnings for pruned unknown fields.
    fn admit(
        &self,
        t: &Target,
        obj: &mut Value,
        name: &str,
        old: Option<&Value>,
        o: &WriteOptions,
    ) -> ApiResult<Vec<String>> {
        let def = &t.def;
        let mut causes = validate_name(name, def.name_rule);
        causes.extend(validate_labels(obj));
        if !def.is_custom() {
            let key = def.key();
            builtins::apply_defaults(&key, obj);
            if let Some(old) = old {
                causes.extend(builtins::immutable_field_errors(&key, old, obj));
            }
            builtins::maintain_generations(&key, old, obj);
        }
        let mut unknown = Vec::new();
        schema::prune_metadata(obj, &mut unknown);
        if let Some(s) = def.version(&t.version).and_then(|v| v.schema.as_ref()) {
            let (errs, pruned) = schema::process(obj, s);
            unknown.extend(pruned);
            causes.extend(errs);
        }
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            match o.field_validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|p| format!("unknown field \"{p}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        if def.key() == crd_key() {
            default_crd_spec(obj);
            match crd_to_def(obj) {
                Err(c) => causes.extend(c),
                Ok(newdef) => {
                    if let Some(old) = old {
                        if let Ok(olddef) = crd_to_def(old) {
                            for (field, a, b) in [
                                ("spec.group", &olddef.group, &newdef.group),
                                ("spec.names.plural", &olddef.plural, &newdef.plural),
                            ] {
                                if a != b {
                                    causes.push(Cause::new(
                                        "FieldValueInvalid",
                                        field,
                                        format!("Invalid value: \"{b}\": field is immutable"),
                                    ));
                                }
                            }
                        }
                    }
                    let status = crd_status(
                        obj,
                        &newdef,
                        &now_rfc3339(),
                        old.and_then(|o| o.get("status")),
                    );
                    obj["status"] = status;
                    if is_deleting(obj) {
                        mark_crd_terminating(obj);
                    }
                }
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&def.group, &def.kind, name, causes));
        }
        Ok(warnings)
    }

    fn check_field_selector(t: &Target, fs: &FieldSelector) -> ApiResult<()> {
        if !t.def.is_custom() {
            // Built-ins: any spec.x/status.x path is accepted (a superset of the
            // per-type fields the real server supports).
            return Ok(());
        }
        let selectable: Vec<String> = t
            .def
            .version(&t.version)
            .map(|v| v.selectable_fields.clone())
            .unwrap_or_default();
        for f in fs.fields() {
            // metadata.namespace is only a field label of namespaced custom
            // resources (the real server's converter refuses it otherwise).
            if f != "metadata.name"
                && !(f == "metadata.namespace" && t.def.namespaced)
                && !selectable.iter().any(|s| s == f)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
        }
        Ok(())
    }

    // ---- verbs ----------------------------------------------------------------

    pub fn get(&self, t: &Target, name: &str) -> ApiResult<Value> {
        self.get_ref(&Self::obj_ref(t, name))
            .map(|o| Self::present(t, &o))
            .ok_or_else(|| t.not_found(name))
    }

    pub fn list(&self, t: &Target, o: &ListOptions) -> ApiResult<ListPage> {
        Self::check_field_selector(t, &o.fields)?;
        let key = t.def.key();
        let filter = Filter {
            namespace: t.namespace.clone(),
            labels: o.labels.clone(),
            fields: o.fields.clone(),
        };
        let (list_rv, start_after) = match o.continue_token.as_deref().filter(|c| !c.is_empty()) {
            Some(tok) => {
                let (rv, ns, name) = decode_continue(tok)?;
                if rv < self.compacted_rv(&key) {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some((ns, name)))
            }
            None => (self.rv, None),
        };
        if o.resource_version_match.as_deref() == Some("Exact") {
            if let Some(rv) = o
                .resource_version
                .as_deref()
                .and_then(|r| r.parse::<u64>().ok())
            {
                if rv < self.compacted_rv(&key) {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        self.compacted_rv(&key)
                    )));
                }
            }
        }
        let mut page = ListPage {
            items: Vec::new(),
            resource_version: list_rv,
            continue_token: None,
            remaining: None,
        };
        let mut remaining = 0usize;
        let Some(map) = self.objects.get(&key) else {
            return Ok(page);
        };
        let limit = o.limit.filter(|l| *l > 0);
        let iter: Box<dyn Iterator<Item = Entry<'_>>> = match (&start_after, &t.namespace) {
            (Some(after), _) => Box::new(
                map.range(after.clone()..)
                    .skip_while(move |(k, _)| *k == after),
            ),
            (None, Some(ns)) => Box::new(map.range((ns.clone(), String::new())..)),
            (None, None) => Box::new(map.iter()),
        };
        let mut last = None;
        for ((ns, name), obj) in iter {
            if let Some(want) = &t.namespace {
                if ns != want {
                    if ns > want {
                        break;
                    }
                    continue;
                }
            }
            if !filter.matches(ns, obj) {
                continue;
            }
            if limit.is_some_and(|l| page.items.len() >= l) {
                remaining += 1;
                continue;
            }
            page.items.push(Self::present(t, obj));
            last = Some((ns.clone(), name.clone()));
        }
        if remaining > 0 {
            if let Some((ns, name)) = last {
                page.continue_token = Some(encode_continue(list_rv, &ns, &name));
            }
            if o.labels.is_empty() && o.fields.is_empty() {
                page.remaining = Some(remaining);
            }
        }
        Ok(page)
    }

    pub fn create(&mut self, t: &Target, mut body: Value, o: &WriteOptions) -> ApiResult<Written> {
        Self::check_body(t, &mut body)?;
        Self::check_namespace(t, &mut body)?;
        let def = t.def.clone();
        let m = meta_mut(&mut body);
        let mut name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            match m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
            {
                Some(prefix) => {
                    name = format!("{prefix}{}", generate_name_suffix());
                    m.insert("name".into(), json!(name));
                }
                None => {
                    return Err(ApiError::invalid(
                        &def.group,
                        &def.kind,
                        "",
                        vec![Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )],
                    ))
                }
            }
        }
        for k in SERVER_MANAGED_META
            .iter()
            .chain(&["resourceVersion", "managedFields", "selfLink"])
        {
            m.remove(*k);
        }
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        // Like the real server, only types with a spec/status split (custom
        // resources and built-ins with a status subresource) track generation.
        if def.is_custom() || def.has_status(&t.version) {
            m.insert("generation".into(), json!(1));
        }
        if def.namespaced {
            self.check_namespace_writable(t, &name)?;
        }
        if let Some(crd) = &def.crd_name {
            let r = ObjRef {
                key: crd_key(),
                ns: String::new(),
                name: crd.clone(),
            };
            if self.get_ref(&r).is_some_and(|c| is_deleting(&c)) {
                return Err(ApiError::method_not_allowed(
                    "create not allowed while custom resource definition is terminating",
                ));
            }
            // Status of a custom resource is written through /status only.
            if def.has_status(&t.version) {
                if let Some(obj) = body.as_object_mut() {
                    obj.remove("status");
                }
            }
        }
        if def.key() == ResKey::new("", "secrets")
            && body
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            body["type"] = json!("Opaque");
        }
        if def.key() == namespace_key() {
            body["status"] = json!({"phase": "Active"});
            if body.get("spec").and_then(|s| s.get("finalizers")).is_none() {
                body["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        let warnings = self.admit(t, &mut body, &name, None, o)?;
        let r = Self::obj_ref(t, &name);
        if self.get_ref(&r).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if o.dry_run {
            return Ok(Written {
                object: Self::present(t, &body),
                created: true,
                warnings,
            });
        }
        let stored = self.commit_put(&r, body, EventType::Added, None);
        if def.key() == crd_key() {
            self.register_crd(&stored);
        }
        Ok(Written {
            object: Self::present(t, &stored),
            created: true,
            warnings,
        })
    }

    /// PUT on the object or its /status.
    pub fn update(
        &mut self,
        t: &Target,
        name: &str,
        mut body: Value,
        sub: Subresource,
        o: &WriteOptions,
    ) -> ApiResult<Written> {
        Self::check_body(t, &mut body)?;
        match meta_str(&body, "name") {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        Self::check_namespace(t, &mut body)?;
        let r = Self::obj_ref(t, name);
        let old = self.get_ref(&r).ok_or_else(|| t.not_found(name))?;
        match meta_str(&body, "resourceVersion").filter(|s| !s.is_empty()) {
            Some(rv) if Some(rv) != meta_str(&old, "resourceVersion") => {
                return Err(ApiError::stale(&t.def.group, &t.def.plural, name));
            }
            Some(_) => {}
            None if !builtins::allows_unconditional_update(&t.def.key(), t.def.is_custom()) => {
                // The real server names the resource (plural) where other
                // Invalid errors name the kind, and prints the missing
                // version as Go's %#v of a zero uint64.
                return Err(ApiError::invalid(
                    &t.def.group,
                    &t.def.plural,
                    name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )],
                ));
            }
            None => {}
        }
        let new = Self::merge_server_fields(t, &old, body, sub);
        self.finish_update(t, &r, old, new, o)
    }

    /// Build the new state of an object from a client's version of it:
    /// main-resource writes keep the old status (when there is a status
    /// subresource), status writes keep everything but status, and
    /// server-managed metadata always comes from the stored object.
    fn merge_server_fields(t: &Target, old: &Value, body: Value, sub: Subresource) -> Value {
        let has_status = t.def.has_status(&t.version);
        let mut new = match sub {
            Subresource::Main => {
                let mut n = body;
                if has_status {
                    match old.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                n
            }
            Subresource::Status => {
                let mut n = old.clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
        };
        let old_meta = meta(old).cloned().unwrap_or_default();
        let m = meta_mut(&mut new);
        for k in SERVER_MANAGED_META
            .iter()
            .chain(&["name", "namespace", "resourceVersion"])
        {
            match old_meta.get(*k) {
                Some(v) => {
                    m.insert(k.to_string(), v.clone());
                }
                None => {
                    m.remove(*k);
                }
            }
        }
        m.remove("managedFields");
        m.remove("selfLink");
        new["apiVersion"] = json!(t.api_version());
        new["kind"] = json!(t.def.kind);
        new
    }

    fn finish_update(
        &mut self,
        t: &Target,
        r: &ObjRef,
        old: Arc<Value>,
        mut new: Value,
        o: &WriteOptions,
    ) -> ApiResult<Written> {
        let def = t.def.clone();
        if is_deleting(&old) {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                let list = added
                    .iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    &r.name,
                    vec![Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
                    )],
                ));
            }
        }
        let warnings = self.admit(t, &mut new, &r.name, Some(&old), o)?;
        new["apiVersion"] = json!(def.storage_api_version());
        let has_status = def.has_status(&t.version);
        let generation = meta(&old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64);
        if let Some(g) = generation {
            if spec_part(&old, has_status) != spec_part(&new, has_status) {
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }
        // A write that changes nothing is a no-op: no new revision, no event.
        if new == *old {
            return Ok(Written {
                object: Self::present(t, &old),
                created: false,
                warnings,
            });
        }
        if o.dry_run {
            return Ok(Written {
                object: Self::present(t, &new),
                created: false,
                warnings,
            });
        }
        // Like the real registry, an update that leaves a deleting object
        // without finalizers is not stored: the object is deleted, so
        // watchers see one DELETED (carrying the last stored state) and no
        // MODIFIED first.
        if is_deleting(&new) && finalizers(&new).is_empty() && !self.has_contents(r) {
            if let Some(removed) = self.remove_object(r) {
                return Ok(Written {
                    object: Self::present(t, &removed),
                    created: false,
                    warnings,
                });
            }
        }
        let stored = self.commit_put(r, new, EventType::Modified, Some(old));
        if def.key() == crd_key() {
            self.register_crd(&stored);
        }
        let object = match self.try_finalize(r) {
            Some(removed) => removed,
            None => stored,
        };
        Ok(Written {
            object: Self::present(t, &object),
            created: false,
            warnings,
        })
    }

    pub fn patch(
        &mut self,
        t: &Target,
        name: &str,
        ptype: PatchType,
        patch_body: &Value,
        sub: Subresource,
        o: &WriteOptions,
    ) -> ApiResult<Written> {
        let def = t.def.clone();
        if ptype == PatchType::Strategic && def.is_custom() {
            // Custom resources have no patch strategies; the real server
            // refuses the media type before looking at anything else.
            return Err(ApiError::unsupported_media_type(
                CUSTOM_RESOURCE_PATCH_TYPES,
            ));
        }
        if ptype == PatchType::Apply && o.field_manager.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                name,
                vec![Cause::new(
                    "FieldValueRequired",
                    "fieldManager",
                    "Required value: is required for apply patch",
                )],
            ));
        }
        let r = Self::obj_ref(t, name);
        let Some(old) = self.get_ref(&r) else {
            if ptype == PatchType::Apply && sub == Subresource::Main {
                // Server-side apply creates what does not exist yet.
                let mut body = patch_body.clone();
                Self::check_body(t, &mut body)?;
                match meta_str(&body, "name") {
                    Some(n) if !n.is_empty() && n != name => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )))
                    }
                    _ => {
                        meta_mut(&mut body).insert("name".into(), json!(name));
                    }
                }
                return self.create(t, body, o);
            }
            return Err(t.not_found(name));
        };
        let mut doc = Self::present(t, &old);
        match ptype {
            PatchType::Merge | PatchType::Apply => {
                if !patch_body.is_object() {
                    return Err(ApiError::bad_request("the patch must be a JSON object"));
                }
                patch::merge_patch(&mut doc, patch_body);
            }
            PatchType::Strategic => {
                if !patch_body.is_object() {
                    return Err(ApiError::bad_request("the patch must be a JSON object"));
                }
                patch::strategic_merge_patch(&mut doc, patch_body);
            }
            PatchType::Json => match patch::json_patch(&mut doc, patch_body) {
                Ok(()) => {}
                Err(JsonPatchError::Malformed(m)) => return Err(ApiError::bad_request(m)),
                Err(JsonPatchError::Failed(m)) => return Err(ApiError::unprocessable(m)),
            },
        }
        // A resourceVersion set by the patch is a precondition.
        if let Some(rv) = meta_str(&doc, "resourceVersion").filter(|s| !s.is_empty()) {
            if Some(rv) != meta_str(&old, "resourceVersion") {
                return Err(ApiError::stale(&def.group, &def.plural, name));
            }
        }
        Self::check_body(t, &mut doc)?;
        let new = Self::merge_server_fields(t, &old, doc, sub);
        self.finish_update(t, &r, old, new, o)
    }

    pub fn delete(&mut self, t: &Target, name: &str, o: &DeleteOptions) -> ApiResult<Deleted> {
        let def = t.def.clone();
        let r = Self::obj_ref(t, name);
        let cur = self.get_ref(&r).ok_or_else(|| t.not_found(name))?;
        let uid = meta_str(&cur, "uid").unwrap_or("").to_string();
        let rv = meta_str(&cur, "resourceVersion").unwrap_or("").to_string();
        if let Some(want) = o.precondition_uid.as_deref().filter(|s| !s.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
                ));
            }
        }
        if let Some(want) = o.precondition_rv.as_deref().filter(|s| !s.is_empty()) {
            if want != rv {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"),
                ));
            }
        }
        if o.dry_run {
            let waits = !finalizers(&cur).is_empty()
                || self.has_contents(&r)
                || (o.propagation == Propagation::Foreground && self.blocking_dependents(&uid) > 0);
            let mut v = (*cur).clone();
            if waits && !is_deleting(&v) {
                let m = meta_mut(&mut v);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            return Ok(Deleted {
                object: Self::present(t, &v),
                finished: !waits,
            });
        }
        let (obj, finished) = match o.propagation {
            Propagation::Orphan => {
                self.orphan_dependents(&uid);
                self.delete_object(&r)
            }
            Propagation::Background => self.delete_object(&r),
            Propagation::Foreground => self.delete_foreground(&r),
        }
        .ok_or_else(|| t.not_found(name))?;
        Ok(Deleted {
            object: Self::present(t, &obj),
            finished,
        })
    }

    /// DELETE on a collection: deletes every selected object, returns them as a list.
    pub fn delete_collection(
        &mut self,
        t: &Target,
        lo: &ListOptions,
        o: &DeleteOptions,
    ) -> ApiResult<Value> {
        let mut all = lo.clone();
        all.limit = None;
        all.continue_token = None;
        let page = self.list(t, &all)?;
        let mut items = Vec::new();
        for item in page.items {
            let name = meta_str(&item, "name").unwrap_or("").to_string();
            let ns = meta_str(&item, "namespace").map(str::to_string);
            let mut tt = t.clone();
            if t.def.namespaced {
                tt.namespace = ns;
            }
            match self.delete(&tt, &name, o) {
                Ok(d) => items.push(d.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": t.def.list_kind,
            "apiVersion": t.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    /// Set up a watch atomically with its initial events (synthetic ADDED
    /// for the current state, or replayed history after `rv`).
    pub fn watch(
        &mut self,
        t: &Target,
        filter: Filter,
        rv: Option<&str>,
        send_initial: bool,
        bookmarks: bool,
    ) -> ApiResult<WatchSession> {
        Self::check_field_selector(t, &filter.fields)?;
        let key = t.def.key();
        let from =
            match rv.filter(|r| !r.is_empty() && *r != "0") {
                None => None,
                Some(r) => Some(r.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {r:?}"))
                })?),
            };
        let mut initial = Vec::new();
        let mut initial_end_rv = None;
        match from {
            Some(from) if !send_initial => {
                let floor = self.compacted_rv(&key);
                if from < floor {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {from} ({floor})"
                    )));
                }
                if let Some(h) = self.history.get(&key) {
                    initial.extend(h.since(from).filter_map(|ev| filter.transform(ev)));
                }
            }
            _ => {
                if let Some(map) = self.objects.get(&key) {
                    for ((ns, _), obj) in map {
                        if filter.matches(ns, obj) {
                            initial.push((EventType::Added, obj.clone()));
                        }
                    }
                }
                if send_initial {
                    initial_end_rv = Some(self.rv);
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers.entry(key).or_default().push(tx);
        Ok(WatchSession {
            initial,
            rx,
            filter,
            api_version: t.api_version(),
            kind: t.def.kind.clone(),
            bookmarks,
            initial_end_rv,
        })
    }
}

/// The condition a real server gives a CRD from the moment it is deleted
/// until its custom resources are gone; creates are refused meanwhile.
fn mark_crd_terminating(crd: &mut Value) {
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    if !crd["status"].get("conditions").is_some_and(Value::is_array) {
        crd["status"]["conditions"] = json!([]);
    }
    if let Some(conds) = crd["status"]["conditions"].as_array_mut() {
        let already = conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Terminating")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
        if already {
            return;
        }
        conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("Terminating"));
        conds.push(json!({
            "type": "Terminating",
            "status": "True",
            "lastTransitionTime": now_rfc3339(),
            "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress",
        }));
    }
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let raw = serde_json::to_vec(&json!([rv, ns, name])).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(tok: &str) -> ApiResult<(u64, String, String)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok.trim_end_matches('='))
        .map_err(|_| bad())?;
    let (rv, ns, name): (u64, String, String) = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((rv, ns, name))
}
