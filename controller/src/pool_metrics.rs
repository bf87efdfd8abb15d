//! Feeds the pool gauges of [`crate::metrics`] from a watch of the LocalStorageNodes: every
//! instance serves them (leader or not), so a scrape of any controller sees the pools' use,
//! thin pools' included (the failure thin provisioning users fear is a full pool).

use crate::metrics::Metrics;
use futures::StreamExt;
use hwameistor_api::LocalStorageNode;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Keeps `metrics`' pools in step with the nodes' reports until the process ends.
pub async fn run(client: Client, metrics: Arc<Metrics>) {
    let api: Api<LocalStorageNode> = Api::all(client);
    // The nodes seen since the last (re)list: the ones not seen again are gone.
    let mut seen = BTreeSet::new();
    let mut known = BTreeSet::new();
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    loop {
        match stream.next().await {
            Some(Ok(event)) => match event {
                Event::Apply(n) | Event::InitApply(n) => {
                    let name = n.name_any();
                    metrics.set_pools(&name, n.status.as_ref().map(|s| &s.pools));
                    seen.insert(name.clone());
                    known.insert(name);
                }
                Event::Delete(n) => {
                    let name = n.name_any();
                    metrics.set_pools(&name, None);
                    known.remove(&name);
                }
                Event::Init => seen.clear(),
                Event::InitDone => {
                    for gone in known.difference(&seen) {
                        metrics.set_pools(gone, None);
                    }
                    known = std::mem::take(&mut seen);
                }
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "node watch for the pool metrics; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            None => return,
        }
    }
}
