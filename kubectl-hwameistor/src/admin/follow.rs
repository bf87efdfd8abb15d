//! Following one object with a watch until it reaches a final state, reporting progress,
//! with a deadline; optionally with the objects a second watch reports beside it (a
//! volume's replicas carry the progress of its resync).

use crate::client::Cluster;
use crate::errors::AdminError;
use crate::progress::Progress;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// What the judge of a followed object decided.
pub enum Step<T> {
    /// Not there yet; the text is shown as the current status.
    Wait(String),
    Done(T),
    Fail(AdminError),
}

/// Watches the object `name` and hands every version (None once deleted) to `judge` until
/// it returns Done or Fail, or `timeout` passes. Watch errors are retried with backoff:
/// a dropped connection is not a reason to give up on a claim that is progressing.
pub async fn follow<K, T>(
    cluster: &Cluster,
    api: Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    progress: &Progress,
    mut judge: impl FnMut(Option<&K>) -> Step<T>,
) -> Result<T, AdminError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(cluster.watch_timeout_secs());
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let start = Instant::now();
    let mut last = String::from("no status yet");
    // Whether the current (re)list saw the object: a list that ends without it means the
    // object is gone, which only the judge can say is fine or fatal.
    let mut seen = false;
    loop {
        let remaining = timeout.saturating_sub(start.elapsed());
        let event = match tokio::time::timeout(remaining, stream.next()).await {
            Err(_) => {
                progress.finish();
                return Err(AdminError::Timeout {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    detail: last,
                });
            }
            Ok(None) => {
                return Err(AdminError::Timeout {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    detail: format!("the watch ended; last status: {last}"),
                })
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "watch error, retrying");
                continue;
            }
            Ok(Some(Ok(ev))) => ev,
        };
        let step = match &event {
            Event::Apply(o) | Event::InitApply(o) => {
                seen = true;
                judge(Some(o))
            }
            Event::Delete(_) => judge(None),
            Event::Init => {
                seen = false;
                continue;
            }
            Event::InitDone if !seen => judge(None),
            Event::InitDone => continue,
        };
        match step {
            Step::Wait(status) => {
                progress.status(&status);
                last = status;
            }
            Step::Done(t) => {
                progress.finish();
                return Ok(t);
            }
            Step::Fail(e) => {
                progress.finish();
                return Err(e);
            }
        }
    }
}

/// Like [`follow`], with the objects of `related` that carry `related_labels` beside the
/// followed one: `judge` sees the object (None once deleted) and the related objects as
/// they are now, and runs again whenever either changes, so progress the related objects
/// report shows while the followed one stays the same.
#[allow(clippy::too_many_arguments)] // follow's parameters plus the second watch
pub async fn follow_related<K, R, T>(
    cluster: &Cluster,
    api: Api<K>,
    name: &str,
    related: Api<R>,
    related_labels: &str,
    what: &str,
    timeout: Duration,
    progress: &Progress,
    mut judge: impl FnMut(Option<&K>, &[R]) -> Step<T>,
) -> Result<T, AdminError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    R: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(cluster.watch_timeout_secs());
    let mut main = watcher::watcher(api, config).default_backoff().boxed();
    let config = watcher::Config::default()
        .labels(related_labels)
        .timeout(cluster.watch_timeout_secs());
    let mut side = watcher::watcher(related, config).default_backoff().boxed();
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no status yet");
    let mut current: Option<K> = None;
    // Whether the followed object's state is known yet (listed, seen, or seen gone), and
    // whether the current (re)list saw it, as in `follow`.
    let (mut known, mut seen) = (false, false);
    let mut objects: BTreeMap<String, R> = BTreeMap::new();
    // A relist of the related objects being collected; it replaces them once complete.
    let mut relist: Option<BTreeMap<String, R>> = None;
    let ended = |last: &str| AdminError::Timeout {
        what: what.to_string(),
        waited: start.elapsed(),
        detail: format!("the watch ended; last status: {last}"),
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                progress.finish();
                return Err(AdminError::Timeout {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    detail: last,
                });
            }
            event = main.next() => match event {
                None => return Err(ended(&last)),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watch error, retrying");
                    continue;
                }
                Some(Ok(Event::Apply(o) | Event::InitApply(o))) => {
                    (known, seen) = (true, true);
                    current = Some(o);
                }
                Some(Ok(Event::Delete(_))) => {
                    known = true;
                    current = None;
                }
                Some(Ok(Event::Init)) => {
                    seen = false;
                    continue;
                }
                Some(Ok(Event::InitDone)) if !seen => {
                    known = true;
                    current = None;
                }
                Some(Ok(Event::InitDone)) => continue,
            },
            event = side.next() => match event {
                None => return Err(ended(&last)),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watch error, retrying");
                    continue;
                }
                Some(Ok(Event::Apply(o))) => {
                    objects.insert(o.name_any(), o);
                }
                Some(Ok(Event::Delete(o))) => {
                    objects.remove(&o.name_any());
                }
                Some(Ok(Event::Init)) => {
                    relist = Some(BTreeMap::new());
                    continue;
                }
                Some(Ok(Event::InitApply(o))) => {
                    relist.get_or_insert_with(BTreeMap::new).insert(o.name_any(), o);
                    continue;
                }
                Some(Ok(Event::InitDone)) => {
                    objects = relist.take().unwrap_or_default();
                }
            },
        }
        if !known {
            continue;
        }
        let now: Vec<R> = objects.values().cloned().collect();
        match judge(current.as_ref(), &now) {
            Step::Wait(status) => {
                progress.status(&status);
                last = status;
            }
            Step::Done(t) => {
                progress.finish();
                return Ok(t);
            }
            Step::Fail(e) => {
                progress.finish();
                return Err(e);
            }
        }
    }
}
