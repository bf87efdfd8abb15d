//! Volume groups, maintained from the pods and the volumes' claims (see
//! [`hwameistor_core::group`]): one LocalVolumeGroup per set of volumes pods use together,
//! its members labelled with it, its state saying whether they are placed together.
//!
//! While this controller leads, watches keep what a pass needs of pods (those with two
//! claims or more: only they join volumes) and of volumes (claim, placement, group label;
//! not their status), slimmed; a pass runs shortly after one of those changed, and every
//! `--group-interval` besides (a retry after a failed pass). No pass lists the cluster's
//! pods or volumes.

use crate::volume_reconciler::Context;
use futures::StreamExt;
use hwameistor_api::{LocalVolume, LocalVolumeGroup, LABEL_VOLUME_GROUP};
use hwameistor_core::group::{desired_groups, label_changes};
use hwameistor_core::pod::claim_names;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use kube::{Api, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Label on the groups this controller maintains (with the scope's value when scoped), so a
/// controller removes only groups it made.
pub const LABEL_MANAGED: &str = "hwameistor.io/group-managed-by";

fn managed_value(ctx: &Context) -> String {
    ctx.scope
        .as_ref()
        .map(|s| s.selector())
        .map(|s| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(63)
                .collect::<String>()
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "controller".into())
}

/// What one pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub relabelled: usize,
}

/// One pass from pods and volumes listed now: groups created, updated and removed, volumes
/// (re)labelled.
pub async fn reconcile_once(ctx: &Context) -> Result<Pass, kube::Error> {
    let client = ctx.client.clone();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let volumes = Api::<LocalVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    reconcile_with(ctx, &pods, volumes).await
}

/// One pass from `pods` and `volumes` (as listed, or as the watches keep them).
pub async fn reconcile_with(
    ctx: &Context,
    pods: &[Pod],
    mut volumes: Vec<LocalVolume>,
) -> Result<Pass, kube::Error> {
    let client = ctx.client.clone();
    if let Some(nodes) = ctx.scoped_nodes().await? {
        // A scoped controller groups only volumes on its own nodes.
        volumes.retain(|v| {
            v.spec.accessibility.nodes.iter().any(|n| nodes.contains(n))
                || v.spec
                    .config
                    .iter()
                    .flat_map(|c| c.replicas.iter())
                    .any(|a| nodes.contains(&a.hostname))
        });
    }
    let managed = managed_value(ctx);
    let mut want = desired_groups(pods, &volumes);
    for g in &mut want {
        g.metadata.labels = Some([(LABEL_MANAGED.to_string(), managed.clone())].into());
    }
    let api: Api<LocalVolumeGroup> = Api::all(client.clone());
    let have = api
        .list(&ListParams::default().labels(&format!("{LABEL_MANAGED}={managed}")))
        .await?
        .items;
    let mut pass = Pass::default();
    let wanted: BTreeSet<String> = want.iter().map(|g| g.name_any()).collect();
    for g in &want {
        let name = g.name_any();
        match have.iter().find(|h| h.name_any() == name) {
            None => {
                api.create(&PostParams::default(), g).await?;
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": g.status })),
                )
                .await?;
                tracing::info!(group = %name, volumes = g.spec.volumes.len(), "volume group created");
                pass.created += 1;
            }
            Some(h) => {
                let mut changed = false;
                if h.spec != g.spec {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "spec": g.spec })),
                    )
                    .await?;
                    changed = true;
                }
                if h.status != g.status {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "status": g.status })),
                    )
                    .await?;
                    changed = true;
                }
                pass.updated += usize::from(changed);
            }
        }
    }
    for h in have.iter().filter(|h| !wanted.contains(&h.name_any())) {
        match api.delete(&h.name_any(), &DeleteParams::default()).await {
            Ok(_) => pass.deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let volumes_api: Api<LocalVolume> = Api::all(client);
    for (volume, label) in label_changes(&volumes, &want) {
        let patch = serde_json::json!({ "metadata": { "labels": { LABEL_VOLUME_GROUP: label } } });
        match volumes_api
            .patch(&volume, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => pass.relabelled += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pass)
}

/// What a pass needs of a pod: its claims, phase and deletion; `None` for a pod with fewer
/// than two claims (it joins no volumes).
pub fn slim_pod(p: &Pod) -> Option<Pod> {
    if claim_names(p).len() < 2 {
        return None;
    }
    let mut out = Pod::default();
    out.metadata.name = p.metadata.name.clone();
    out.metadata.namespace = p.metadata.namespace.clone();
    out.metadata.deletion_timestamp = p.metadata.deletion_timestamp.clone();
    out.spec = p.spec.as_ref().map(|s| PodSpec {
        volumes: s.volumes.clone(),
        ..Default::default()
    });
    out.status = p.status.as_ref().map(|s| PodStatus {
        phase: s.phase.clone(),
        ..Default::default()
    });
    Some(out)
}

/// What a pass needs of a volume: its spec (claim, placement), group label and deletion;
/// not its status, which changes far more often.
pub fn slim_volume(v: &LocalVolume) -> Option<LocalVolume> {
    let mut out = LocalVolume::new(&v.name_any(), v.spec.clone());
    out.metadata.deletion_timestamp = v.metadata.deletion_timestamp.clone();
    out.metadata.labels = v
        .labels()
        .get(LABEL_VOLUME_GROUP)
        .map(|g| [(LABEL_VOLUME_GROUP.to_string(), g.clone())].into());
    Some(out)
}

/// One watched kind, slimmed, keyed by namespace/name; a relist replaces it whole.
struct Table<K> {
    map: BTreeMap<String, K>,
    relist: Option<BTreeMap<String, K>>,
    ready: bool,
}

impl<K: Resource + Clone + PartialEq> Table<K> {
    fn new() -> Self {
        Table {
            map: BTreeMap::new(),
            relist: None,
            ready: false,
        }
    }

    fn key(o: &K) -> String {
        format!(
            "{}/{}",
            o.meta().namespace.as_deref().unwrap_or_default(),
            o.meta().name.as_deref().unwrap_or_default()
        )
    }

    /// Takes in one event; whether what a pass sees changed.
    fn event(&mut self, ev: watcher::Event<K>, slim: fn(&K) -> Option<K>) -> bool {
        match ev {
            watcher::Event::Apply(o) => {
                let k = Self::key(&o);
                match slim(&o) {
                    Some(s) if self.map.get(&k) == Some(&s) => false,
                    Some(s) => {
                        self.map.insert(k, s);
                        true
                    }
                    None => self.map.remove(&k).is_some(),
                }
            }
            watcher::Event::Delete(o) => self.map.remove(&Self::key(&o)).is_some(),
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let Some(s) = slim(&o) {
                    self.relist
                        .get_or_insert_with(BTreeMap::new)
                        .insert(Self::key(&o), s);
                }
                false
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = !self.ready || fresh != self.map;
                self.map = fresh;
                self.ready = true;
                changed
            }
        }
    }
}

/// Feeds `table` from a watch of `api` until the future is dropped, waking `changed` when
/// what a pass sees changed.
async fn watch<K>(
    api: Api<K>,
    table: Arc<Mutex<Table<K>>>,
    slim: fn(&K) -> Option<K>,
    changed: Arc<Notify>,
) where
    K: Resource + Clone + PartialEq + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                let moved = table
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .event(ev, slim);
                if moved {
                    changed.notify_one();
                }
            }
            Err(e) => tracing::debug!(error = %e, "volume groups watch; retrying"),
        }
    }
}

/// How long a pass waits after a change, so a burst of changes (a StatefulSet scaling up)
/// makes one pass.
const SETTLE: Duration = Duration::from_millis(500);

/// Keeps the groups up to date: a pass shortly after pods or volumes changed, and every
/// `every` besides, for as long as it runs.
pub async fn run(ctx: Arc<Context>, every: Duration) {
    let pods = Arc::new(Mutex::new(Table::<Pod>::new()));
    let volumes = Arc::new(Mutex::new(Table::<LocalVolume>::new()));
    let changed = Arc::new(Notify::new());
    let pod_watch = tokio::spawn(watch(
        Api::all(ctx.client.clone()),
        pods.clone(),
        slim_pod,
        changed.clone(),
    ));
    let volume_watch = tokio::spawn(watch(
        Api::all(ctx.client.clone()),
        volumes.clone(),
        slim_volume,
        changed.clone(),
    ));
    // The watches stop with this future (it is dropped when leadership ends).
    let _stop = (AbortOnDrop(pod_watch), AbortOnDrop(volume_watch));
    loop {
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(every) => {}
        }
        let snapshot = {
            let p = pods.lock().unwrap_or_else(|e| e.into_inner());
            let v = volumes.lock().unwrap_or_else(|e| e.into_inner());
            (p.ready && v.ready).then(|| {
                (
                    p.map.values().cloned().collect::<Vec<_>>(),
                    v.map.values().cloned().collect::<Vec<_>>(),
                )
            })
        };
        let Some((pod_list, volume_list)) = snapshot else {
            continue;
        };
        match reconcile_with(&ctx, &pod_list, volume_list).await {
            Ok(p) if p != Pass::default() => tracing::debug!(?p, "volume groups updated"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "volume groups pass failed; retrying"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};

    fn pod(name: &str, claims: &[&str], phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.resource_version = Some("7".into());
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            volumes: Some(
                claims
                    .iter()
                    .map(|c| Volume {
                        name: c.to_string(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: c.to_string(),
                            read_only: None,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            pod_ip: Some("10.0.0.1".into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn only_what_joins_volumes_is_kept_and_only_its_changes_count() {
        let mut t = Table::<Pod>::new();
        assert!(!t.event(watcher::Event::Init, slim_pod));
        assert!(!t.event(
            watcher::Event::InitApply(pod("one", &["a"], "Running")),
            slim_pod
        ));
        assert!(!t.event(
            watcher::Event::InitApply(pod("two", &["a", "b"], "Running")),
            slim_pod
        ));
        // The first relist counts as a change: the first pass may run.
        assert!(t.event(watcher::Event::InitDone, slim_pod));
        assert!(t.ready);
        assert_eq!(t.map.len(), 1, "a pod with one claim joins nothing");
        // A status change other than the phase (an IP, conditions) is no change to a pass.
        let mut moved = pod("two", &["a", "b"], "Running");
        moved.status.as_mut().unwrap().pod_ip = Some("10.0.0.2".into());
        moved.metadata.resource_version = Some("8".into());
        assert!(!t.event(watcher::Event::Apply(moved), slim_pod));
        // A pod ending is.
        assert!(t.event(
            watcher::Event::Apply(pod("two", &["a", "b"], "Succeeded")),
            slim_pod
        ));
        assert!(t.event(
            watcher::Event::Delete(pod("two", &["a", "b"], "Succeeded")),
            slim_pod
        ));
        assert!(t.map.is_empty());
        // A relist that finds what it had changes nothing.
        t.event(
            watcher::Event::Apply(pod("three", &["a", "c"], "Running")),
            slim_pod,
        );
        t.event(watcher::Event::Init, slim_pod);
        t.event(
            watcher::Event::InitApply(pod("three", &["a", "c"], "Running")),
            slim_pod,
        );
        assert!(!t.event(watcher::Event::InitDone, slim_pod));
    }
}
