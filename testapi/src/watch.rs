//! Watch machinery: the event history kept per resource (for resuming from a
//! resourceVersion), per-watcher filtering (namespace and selectors, with
//! the ADDED/DELETED transitions a selector change implies), and the task
//! that streams newline-delimited JSON events with periodic bookmarks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{lock, SharedStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object, at one revision.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub rv: u64,
    pub namespace: String,
    /// The object after the change (for DELETED: its last state).
    pub object: Arc<Value>,
    /// The object before the change (MODIFIED/DELETED), so watchers with
    /// selectors can tell an object leaving their selection.
    pub old: Option<Arc<Value>>,
}

/// The bounded event history of one resource.
#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Arc<Event>>,
    /// The newest revision no longer replayable: resuming from an older
    /// resourceVersion is 410 Gone.
    pub compacted_rv: u64,
}

impl History {
    pub fn push(&mut self, ev: Arc<Event>, limit: usize) {
        self.events.push_back(ev);
        while self.events.len() > limit.max(1) {
            if let Some(old) = self.events.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    pub fn compact(&mut self, rv: u64) {
        self.events.clear();
        self.compacted_rv = self.compacted_rv.max(rv);
    }

    /// Events strictly after `rv`, oldest first.
    pub fn since(&self, rv: u64) -> impl Iterator<Item = &Arc<Event>> {
        // History is ordered by rv; skip the prefix at or before `rv`.
        let start = self.events.partition_point(|e| e.rv <= rv);
        self.events.range(start..)
    }
}

/// What one watcher (or list) selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    pub fn matches(&self, namespace: &str, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if ns != namespace {
                return false;
            }
        }
        self.selects(obj)
    }

    /// The event this watcher sees for `ev`, if any. An object modified out
    /// of the selection is reported as DELETED, one modified into it as ADDED.
    pub fn transform(&self, ev: &Event) -> Option<(EventType, Arc<Value>)> {
        if let Some(ns) = &self.namespace {
            if *ns != ev.namespace {
                return None;
            }
        }
        let now = self.selects(&ev.object);
        match ev.kind {
            EventType::Added => now.then(|| (EventType::Added, ev.object.clone())),
            EventType::Deleted => {
                let before = ev.old.as_ref().is_none_or(|o| self.selects(o));
                (now || before).then(|| (EventType::Deleted, ev.object.clone()))
            }
            EventType::Modified => {
                let before = ev.old.as_ref().is_none_or(|o| self.selects(o));
                match (before, now) {
                    (true, true) => Some((EventType::Modified, ev.object.clone())),
                    (false, true) => Some((EventType::Added, ev.object.clone())),
                    (true, false) => Some((EventType::Deleted, ev.object.clone())),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Everything a running watch needs once set up under the store lock.
pub struct WatchSession {
    /// Events to send first (synthetic ADDED or replayed history).
    pub initial: Vec<(EventType, Arc<Value>)>,
    /// Live events of the resource, registered atomically with `initial`.
    pub rx: mpsc::UnboundedReceiver<Arc<Event>>,
    pub filter: Filter,
    /// apiVersion and kind the client watches at (objects are rewritten to it).
    pub api_version: String,
    pub kind: String,
    pub bookmarks: bool,
    /// For `sendInitialEvents=true`: the revision for the
    /// `k8s.io/initial-events-end` bookmark sent after the initial events.
    pub initial_end_rv: Option<u64>,
}

/// Watch events (not bookmarks) delivered by every server of this process, for benchmarks
/// that count what a client receives.
pub static EVENTS_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One watch event line.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(api_version: &str, kind: &str, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta})
}

/// The object as seen at the watched version.
fn at_version(obj: &Arc<Value>, api_version: &str) -> Value {
    let mut o = (**obj).clone();
    if o.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
        o["apiVersion"] = json!(api_version);
    }
    o
}

/// Stream a watch session into `out` until the client goes away, the
/// timeout passes, the resource disappears, or the server shuts down.
pub async fn run(
    mut s: WatchSession,
    out: mpsc::Sender<Bytes>,
    store: SharedStore,
    bookmark_interval: Duration,
    timeout: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let send = |kind: EventType, obj: &Arc<Value>, api_version: &str| {
        EVENTS_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        event_line(kind.as_str(), &at_version(obj, api_version))
    };
    for (kind, obj) in std::mem::take(&mut s.initial) {
        if out.send(send(kind, &obj, &s.api_version)).await.is_err() {
            return;
        }
    }
    if let Some(rv) = s.initial_end_rv {
        let b = bookmark(&s.api_version, &s.kind, rv, true);
        if out.send(event_line("BOOKMARK", &b)).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(bookmark_interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            ev = s.rx.recv() => {
                let Some(ev) = ev else { return };
                if let Some((kind, obj)) = s.filter.transform(&ev) {
                    if out.send(send(kind, &obj, &s.api_version)).await.is_err() {
                        return;
                    }
                }
            }
            _ = ticker.tick(), if s.bookmarks => {
                // Read the revision and drain queued events under the lock:
                // writers push events while holding it, so every event up to
                // `rv` is queued by then and goes out before the bookmark.
                let (rv, queued) = {
                    let st = lock(&store);
                    let mut queued = Vec::new();
                    while let Ok(ev) = s.rx.try_recv() {
                        queued.push(ev);
                    }
                    (st.current_rv(), queued)
                };
                for ev in queued {
                    if let Some((kind, obj)) = s.filter.transform(&ev) {
                        if out.send(send(kind, &obj, &s.api_version)).await.is_err() {
                            return;
                        }
                    }
                }
                let b = bookmark(&s.api_version, &s.kind, rv, false);
                if out.send(event_line("BOOKMARK", &b)).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = shutdown.changed() => return,
            _ = out.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventType, new: Value, old: Option<Value>) -> Event {
        Event {
            kind,
            rv: 1,
            namespace: "ns".into(),
            object: Arc::new(new),
            old: old.map(Arc::new),
        }
    }

    #[test]
    fn selector_transitions() {
        let f = Filter {
            namespace: Some("ns".into()),
            labels: LabelSelector::parse("app=a").unwrap(),
            fields: FieldSelector::default(),
        };
        let a = json!({"metadata": {"labels": {"app": "a"}}});
        let b = json!({"metadata": {"labels": {"app": "b"}}});
        let t = |e: Event| f.transform(&e).map(|(k, _)| k);
        assert_eq!(
            t(ev(EventType::Modified, b.clone(), Some(a.clone()))),
            Some(EventType::Deleted)
        );
        assert_eq!(
            t(ev(EventType::Modified, a.clone(), Some(b.clone()))),
            Some(EventType::Added)
        );
        assert_eq!(t(ev(EventType::Modified, b.clone(), Some(b.clone()))), None);
        assert_eq!(
            t(ev(EventType::Added, a.clone(), None)),
            Some(EventType::Added)
        );
    }

    #[test]
    fn history_since_and_compaction() {
        let mut h = History::default();
        for rv in 1..=5 {
            let e = Event {
                kind: EventType::Added,
                rv,
                namespace: String::new(),
                object: Arc::new(json!({})),
                old: None,
            };
            h.push(Arc::new(e), 3);
        }
        assert_eq!(h.compacted_rv, 2);
        assert_eq!(h.since(3).map(|e| e.rv).collect::<Vec<_>>(), vec![4, 5]);
    }
}
