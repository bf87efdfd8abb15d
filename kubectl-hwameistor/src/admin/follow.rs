//! Following one object with a watch until it reaches a final state, reporting progress,
//! with a deadline.

use crate::client::Cluster;
use crate::errors::AdminError;
use crate::progress::Progress;
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
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
