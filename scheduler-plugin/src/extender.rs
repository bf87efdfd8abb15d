//! The extender's answers: `filter`, `prioritize` and `bind`, from the caches and the
//! capacity index (see [`hwameistor_core::scheduling`]).
//!
//! A pod with new HwameiStor claims is given one node by `filter`: the one with most room
//! for them among the candidates the scheduler's own filters left, and that room is held
//! for it at once (a [`Reservation`]), so the pods filtered next see it taken. The
//! scheduler has no storage choice left to make, which is what makes the reservation exact:
//! its volume binder then hands the claims to the provisioner on that node, and extenders
//! are not called at the point where an in-tree plugin would reserve. A pod whose claims
//! all exist gets every node holding them, scored alike.
//!
//! Reservations survive a restart of the extender without being written anywhere: those
//! whose claim the volume binder already handed to a node (the claim's
//! `volume.kubernetes.io/selected-node` annotation) are rebuilt from the claims; only the
//! few made in the moments before that annotation is written are lost.

use crate::admission::WebhookSettings;
use crate::cache::Caches;
use crate::claims::{new_claim, placed as placed_claim, pod_claims, New};
use crate::protocol::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult, HostPriority,
    NodeList,
};
use hwameistor_core::placement::{self, NodeView, Policy};
use hwameistor_core::scheduling::{Capacity, FreeDisk, Hold, PodClaims, Reservation};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the extender decides.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long room stays held for a pod whose claims were not provisioned yet.
    pub reservation_ttl: Duration,
    /// The capacity index is rebuilt from the caches at most this often (it changes with
    /// every volume created; reservations made meanwhile are counted in place).
    pub rebuild_every: Duration,
    pub policy: Policy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            reservation_ttl: Duration::from_secs(600),
            // At 100,000 volumes a rebuild takes ~0.2 s of CPU; the room this extender holds
            // is counted at once, so only changes made elsewhere wait for the next rebuild
            // (and the controller's placement checks room again in any case).
            rebuild_every: Duration::from_secs(1),
            policy: Policy::default(),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub filter_requests: AtomicU64,
    pub filter_errors: AtomicU64,
    pub prioritize_requests: AtomicU64,
    pub bind_requests: AtomicU64,
    pub bind_errors: AtomicU64,
    pub pods_without_node: AtomicU64,
    pub rebuilds: AtomicU64,
    pub last_rebuild_micros: AtomicU64,
    pub reservations: AtomicU64,
    pub bad_requests: AtomicU64,
    pub admission_requests: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut s = String::new();
        for (name, help, kind, v) in [
            (
                "hwameistor_extender_filter_requests_total",
                "Filter calls answered.",
                "counter",
                g(&self.filter_requests),
            ),
            (
                "hwameistor_extender_filter_errors_total",
                "Filter calls answered with an error.",
                "counter",
                g(&self.filter_errors),
            ),
            (
                "hwameistor_extender_prioritize_requests_total",
                "Prioritize calls answered.",
                "counter",
                g(&self.prioritize_requests),
            ),
            (
                "hwameistor_extender_bind_requests_total",
                "Bind calls answered.",
                "counter",
                g(&self.bind_requests),
            ),
            (
                "hwameistor_extender_bind_errors_total",
                "Bind calls that failed.",
                "counter",
                g(&self.bind_errors),
            ),
            (
                "hwameistor_extender_pods_without_node_total",
                "Filter calls that left a pod no node.",
                "counter",
                g(&self.pods_without_node),
            ),
            (
                "hwameistor_extender_bad_requests_total",
                "Requests refused as malformed or too large.",
                "counter",
                g(&self.bad_requests),
            ),
            (
                "hwameistor_admission_requests_total",
                "Admission reviews answered.",
                "counter",
                g(&self.admission_requests),
            ),
            (
                "hwameistor_extender_capacity_rebuilds_total",
                "Times the capacity index was rebuilt from the caches.",
                "counter",
                g(&self.rebuilds),
            ),
            (
                "hwameistor_extender_capacity_rebuild_seconds",
                "Duration of the last capacity index rebuild.",
                "gauge",
                g(&self.last_rebuild_micros) / 1e6,
            ),
            (
                "hwameistor_extender_reservations",
                "Claims whose room is held for their pod.",
                "gauge",
                g(&self.reservations),
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        s
    }
}

struct State {
    capacity: Capacity,
    /// The caches' generation the index was built from; `None` before the first build.
    built: Option<u64>,
    built_at: Instant,
}

/// The expiry of a hold rebuilt from a claim the volume binder handed to a node: it lasts
/// until the claim is provisioned (the binder gives up on its own). Holds made by `filter`
/// expire after the TTL; the index holds both, and this tells them apart.
const UNTIL_PROVISIONED: i64 = i64::MAX;

pub struct Extender {
    caches: Arc<Caches>,
    webhook: WebhookSettings,
    settings: Settings,
    client: Option<Client>,
    state: Mutex<State>,
    pub metrics: Metrics,
    ready: std::sync::atomic::AtomicBool,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Why a request could not be answered at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request names no pod")]
    NoPod,
}

impl Extender {
    /// An extender over `caches`; `client` binds pods (`None`: `bind` answers an error).
    pub fn new(caches: Arc<Caches>, settings: Settings, client: Option<Client>) -> Extender {
        Extender {
            caches,
            webhook: WebhookSettings::default(),
            settings,
            client,
            state: Mutex::new(State {
                capacity: Capacity::default(),
                built: None,
                built_at: Instant::now(),
            }),
            metrics: Metrics::default(),
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same extender answering admission with `webhook`.
    pub fn with_webhook(mut self, webhook: WebhookSettings) -> Extender {
        self.webhook = webhook;
        self
    }

    /// The answer to an AdmissionReview (see [`crate::admission`]).
    pub async fn admit(
        &self,
        review: kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
    ) -> serde_json::Value {
        self.metrics
            .admission_requests
            .fetch_add(1, Ordering::Relaxed);
        self.fetch_missing_claims(&review).await;
        crate::admission::review(&self.caches, &self.webhook, review)
    }

    /// A pod's claims its caches do not hold yet, read from the API server: a StatefulSet
    /// creates a pod right after its claims, sooner than a watch may deliver them, and a pod
    /// let through without its scheduler would be placed blind. Best effort, bounded.
    async fn fetch_missing_claims(
        &self,
        review: &kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
    ) {
        let (Some(client), Some(req)) = (&self.client, &review.request) else {
            return;
        };
        if req.kind.kind != "Pod" || !req.kind.group.is_empty() {
            return;
        }
        let Some(pod) = req
            .object
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| serde_json::from_value::<Pod>(v).ok())
        else {
            return;
        };
        let ns = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        if self.webhook.ignored_namespaces.contains(&ns) {
            return;
        }
        let missing: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .filter(|c| self.caches.claims.get(&format!("{ns}/{c}")).is_none())
            .collect();
        let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(client.clone(), &ns);
        let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
        for c in missing {
            match tokio::time::timeout(Duration::from_secs(2), api.get_opt(&c)).await {
                Ok(Ok(Some(pvc))) => {
                    let class = pvc
                        .spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.clone())
                        .filter(|c| self.caches.classes.get(c).is_none());
                    self.caches.apply(pvc);
                    if let Some(class) = class {
                        if let Ok(Ok(Some(sc))) =
                            tokio::time::timeout(Duration::from_secs(2), classes.get_opt(&class))
                                .await
                        {
                            self.caches.apply(sc);
                        }
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(claim = %c, error = %e, "reading a pod's claim failed")
                }
                Err(_) => tracing::debug!(claim = %c, "reading a pod's claim timed out"),
            }
        }
    }

    /// Marks the caches synced (answers before that are errors, so no pod is placed on an
    /// empty view).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reservations that hold now, for diagnosis and tests.
    pub fn reservations(&self) -> Vec<Reservation> {
        let mut st = self.lock();
        self.refresh(&mut st, unix_now());
        st.capacity.reservations().to_vec()
    }

    /// Rebuilds the index when the caches moved and the last build is old enough; drops
    /// expired reservations in any case.
    fn refresh(&self, st: &mut State, now: i64) {
        let generation = self.caches.generation();
        let stale = st.built != Some(generation)
            && (st.built.is_none() || st.built_at.elapsed() >= self.settings.rebuild_every);
        if stale {
            let started = Instant::now();
            let made: Vec<Reservation> = st
                .capacity
                .reservations()
                .iter()
                .filter(|r| r.expires != UNTIL_PROVISIONED && r.expires > now)
                .cloned()
                .collect();
            st.capacity = self.build(&made, now);
            st.built = Some(generation);
            st.built_at = Instant::now();
            self.metrics.rebuilds.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .last_rebuild_micros
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        } else {
            st.capacity.expire(now);
        }
        self.metrics
            .reservations
            .store(st.capacity.reservations().len() as u64, Ordering::Relaxed);
    }

    /// The index from the caches: nodes, placed replicas, free disks, the holds `made` by
    /// filter whose claims are not provisioned yet, and those rebuilt from claims the volume
    /// binder handed to a node.
    fn build(&self, made: &[Reservation], now: i64) -> Capacity {
        let nodes: Vec<NodeView> = self
            .caches
            .nodes
            .all()
            .iter()
            .map(|n| (**n).clone())
            .collect();
        let replicas = self.caches.replicas.all();
        let allocated: HashMap<(&str, &str), Option<i64>> = replicas
            .iter()
            .map(|r| ((r.volume.as_str(), r.node.as_str()), r.allocated))
            .collect();
        let mut placed = Vec::new();
        for v in self.caches.volumes.all() {
            let (Some(config), Some(class)) = (v.config.as_ref(), v.class) else {
                continue;
            };
            placed.extend(placement::volume_placed(
                &v.name,
                class,
                v.required,
                v.thin,
                config,
                |node| allocated.get(&(v.name.as_str(), node)).copied().flatten(),
            ));
        }
        let disks: Vec<FreeDisk> = self
            .caches
            .disks
            .all()
            .iter()
            .filter(|d| d.free)
            .filter_map(|d| {
                Some(FreeDisk {
                    node: d.node.clone(),
                    disk_type: d.disk_type?,
                    capacity: d.capacity,
                })
            })
            .collect();
        // A claim is provisioned once its LocalVolume is placed (the placement counts it),
        // or its LocalDiskVolume has its disk (no longer free).
        let mut pending: HashSet<String> = HashSet::new();
        let mut rebuilt = Vec::new();
        for c in self.caches.claims.all() {
            if c.volume.is_some() || placed_claim(&self.caches, &c) {
                continue;
            }
            pending.insert(c.key.clone());
            let Some(node) = c.selected_node.clone() else {
                continue;
            };
            if made.iter().any(|r| r.pvc == c.key) {
                continue;
            }
            let hold = match new_claim(&self.caches, &c) {
                Ok(Some(New::Pool(n))) => Hold::Pool {
                    class: n.class,
                    bytes: n.bytes,
                    meta: if n.replicated {
                        hwameistor_core::drbd::meta_bytes(n.bytes)
                    } else {
                        0
                    },
                    second: None,
                    thin: n.thin,
                },
                Ok(Some(New::Disk(n))) => Hold::Disk {
                    disk_type: n.disk_type,
                    need: n.need,
                },
                _ => continue,
            };
            rebuilt.push(Reservation {
                pvc: c.key.clone(),
                pod_uid: String::new(),
                node,
                hold,
                expires: UNTIL_PROVISIONED,
            });
        }
        let all: Vec<Reservation> = made
            .iter()
            .filter(|r| pending.contains(&r.pvc))
            .cloned()
            .chain(rebuilt)
            .collect();
        Capacity::new(
            &nodes,
            &placed,
            &disks,
            &all,
            now,
            self.settings.policy.clone(),
        )
    }

    fn claims(&self, args: &ExtenderArgs) -> Result<(Pod, PodClaims), RequestError> {
        let pod = args.pod.clone().ok_or(RequestError::NoPod)?;
        let claims = pod_claims(&self.caches, &pod);
        Ok((pod, claims))
    }

    /// The answer to `filter`.
    pub fn filter(&self, args: &ExtenderArgs) -> ExtenderFilterResult {
        self.metrics.filter_requests.fetch_add(1, Ordering::Relaxed);
        let candidates = args.candidate_names();
        let answer = |names: Vec<String>, failed| {
            let (nodes, nodenames) = match &args.nodes {
                Some(list) if args.nodenames.is_none() => (
                    Some(NodeList {
                        items: list
                            .items
                            .iter()
                            .filter(|n| n.metadata.name.as_ref().is_some_and(|x| names.contains(x)))
                            .cloned()
                            .collect(),
                        ..list.clone()
                    }),
                    None,
                ),
                _ => (None, Some(names)),
            };
            ExtenderFilterResult {
                nodes,
                nodenames,
                failed_and_unresolvable_nodes: failed,
                ..Default::default()
            }
        };
        if !self.is_ready() {
            self.metrics.filter_errors.fetch_add(1, Ordering::Relaxed);
            return ExtenderFilterResult {
                error: "the HwameiStor extender's caches are not synced yet; retry".into(),
                ..Default::default()
            };
        }
        let (pod, claims) = match self.claims(args) {
            Ok(x) => x,
            Err(e) => {
                self.metrics.filter_errors.fetch_add(1, Ordering::Relaxed);
                return ExtenderFilterResult {
                    error: e.to_string(),
                    ..Default::default()
                };
            }
        };
        if !claims.uses_storage() {
            return answer(candidates, Default::default());
        }
        let now = unix_now();
        let mut st = self.lock();
        self.refresh(&mut st, now);
        // Filtered again (its last node did not work out, or after a restart of this
        // extender): what was held for it, or for its claims, goes.
        release_own(&mut st.capacity, &claims);
        let (ok, mut failed) = st.capacity.filter(&claims, &candidates);
        if !claims.has_new() {
            return answer(ok.into_iter().map(|(n, _)| n).collect(), failed);
        }
        let Some(best) = Capacity::best(&ok).map(str::to_string) else {
            self.metrics
                .pods_without_node
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                pod = %pod_key(&pod),
                reasons = ?failed,
                "no node has room for the pod's new volumes"
            );
            return answer(Vec::new(), failed);
        };
        let expires = now.saturating_add(self.settings.reservation_ttl.as_secs() as i64);
        match st.capacity.reserve(&claims, &best, expires) {
            Ok(made) => {
                tracing::info!(pod = %pod_key(&pod), node = %best, claims = made.len(), "room held for the pod's new volumes");
            }
            Err(why) => {
                failed.insert(best.clone(), why);
                return answer(Vec::new(), failed);
            }
        }
        // The other nodes that would do are left out without a reason: the pod runs on
        // `best`, and a reason per node costs a line per node of the cluster in every answer.
        self.metrics
            .reservations
            .store(st.capacity.reservations().len() as u64, Ordering::Relaxed);
        answer(vec![best], failed)
    }

    /// The answer to `prioritize`: every candidate scored 0..10 (0 where the pod cannot run).
    pub fn prioritize(&self, args: &ExtenderArgs) -> Result<Vec<HostPriority>, RequestError> {
        self.metrics
            .prioritize_requests
            .fetch_add(1, Ordering::Relaxed);
        let candidates = args.candidate_names();
        let (_, claims) = self.claims(args)?;
        if !claims.uses_storage() || !self.is_ready() {
            return Ok(candidates
                .into_iter()
                .map(|host| HostPriority { host, score: 0 })
                .collect());
        }
        let mut st = self.lock();
        self.refresh(&mut st, unix_now());
        // The pod's own reservation is its room: scored as if it were free.
        let own = release_own(&mut st.capacity, &claims);
        let (ok, _) = st.capacity.filter(&claims, &candidates);
        st.capacity.restore(own);
        let scores: HashMap<String, i64> = ok.into_iter().collect();
        Ok(candidates
            .into_iter()
            .map(|host| {
                let score = scores.get(&host).copied().unwrap_or(0);
                HostPriority { host, score }
            })
            .collect())
    }

    /// The answer to `bind`: the pod bound to the node (a Binding, as the scheduler would).
    pub async fn bind(&self, args: &ExtenderBindingArgs) -> ExtenderBindingResult {
        self.metrics.bind_requests.fetch_add(1, Ordering::Relaxed);
        let fail = |error: String| {
            self.metrics.bind_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pod = %format!("{}/{}", args.pod_namespace, args.pod_name), node = %args.node, %error, "bind failed");
            ExtenderBindingResult { error }
        };
        let Some(client) = &self.client else {
            return fail("this extender has no API client to bind with".into());
        };
        if args.pod_name.is_empty() || args.pod_namespace.is_empty() || args.node.is_empty() {
            return fail("podName, podNamespace and node are required".into());
        }
        let binding = Binding {
            metadata: kube::api::ObjectMeta {
                name: Some(args.pod_name.clone()),
                namespace: Some(args.pod_namespace.clone()),
                uid: Some(args.pod_uid.clone()).filter(|u| !u.is_empty()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(args.node.clone()),
                ..Default::default()
            },
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), &args.pod_namespace);
        match pods
            .create_subresource::<Binding, serde_json::Value>(
                "binding",
                &args.pod_name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                // Bound elsewhere than held (a pod without new claims, or a scheduler that
                // chose on its own): the room follows the pod.
                let mut st = self.lock();
                let moved: Vec<Reservation> = st
                    .capacity
                    .release_pod(&args.pod_uid)
                    .into_iter()
                    .map(|r| r.moved_to(&args.node))
                    .collect();
                st.capacity.restore(moved);
                ExtenderBindingResult::default()
            }
            Err(e) => fail(e.to_string()),
        }
    }
}

/// Releases what is held for the pod or any of its new claims (a hold rebuilt from a claim
/// names no pod); the holds released.
fn release_own(capacity: &mut Capacity, claims: &PodClaims) -> Vec<Reservation> {
    let mut own = capacity.release_pod(&claims.uid);
    let pvcs = claims.new.iter().map(|c| &c.pvc);
    for pvc in pvcs.chain(claims.disks.iter().map(|c| &c.pvc)) {
        own.extend(capacity.release_claim(pvc));
    }
    own
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default()
    )
}
