//! Watch semantics through a real kube client: replay from a
//! resourceVersion, synthetic ADDED, selector transitions, bookmarks, 410
//! after compaction, streaming lists, timeouts, and kube-runtime's watcher.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use hwameistor_testapi::ServerOptions;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// (type, name) of a watch event; bookmarks and errors are described too.
fn describe(ev: &WatchEvent<ConfigMap>) -> (String, String) {
    match ev {
        WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => (
            "MODIFIED".into(),
            o.metadata.name.clone().unwrap_or_default(),
        ),
        WatchEvent::Deleted(o) => (
            "DELETED".into(),
            o.metadata.name.clone().unwrap_or_default(),
        ),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(s) => ("ERROR".into(), format!("{} {}", s.code, s.reason)),
    }
}

async fn next_n<S>(stream: &mut S, n: usize) -> Vec<(String, String)>
where
    S: futures::Stream<Item = Result<WatchEvent<ConfigMap>, kube::Error>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event decodes");
        let d = describe(&ev);
        if d.0 != "BOOKMARK" {
            out.push(d);
        }
    }
    out
}

fn ev(t: &str, n: &str) -> (String, String) {
    (t.to_string(), n.to_string())
}

#[tokio::test]
async fn watch_replays_from_resource_version_then_streams() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    api.create(&pp, &cm("a", &[])).await.unwrap();
    let rv0 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&pp, &cm("b", &[])).await.unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();

    let wp = WatchParams::default().disable_bookmarks();
    let mut s = api.watch(&wp, &rv0).await.unwrap().boxed();
    assert_eq!(
        next_n(&mut s, 3).await,
        vec![ev("ADDED", "b"), ev("MODIFIED", "a"), ev("DELETED", "b")]
    );
    api.create(&pp, &cm("c", &[])).await.unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "c")]);

    // Events of other namespaces are not delivered to a namespaced watch.
    let kube_system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    kube_system
        .create(&pp, &cm("elsewhere", &[]))
        .await
        .unwrap();
    api.create(&pp, &cm("d", &[])).await.unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "d")]);

    // resourceVersion "0" starts with synthetic ADDED for what exists.
    let mut s0 = api.watch(&wp, "0").await.unwrap().boxed();
    let mut initial = next_n(&mut s0, 3).await;
    initial.sort();
    assert_eq!(
        initial,
        vec![ev("ADDED", "a"), ev("ADDED", "c"), ev("ADDED", "d")]
    );
}

#[tokio::test]
async fn selectors_apply_to_watches_with_transitions() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    api.create(&pp, &cm("x", &[])).await.unwrap();
    api.create(&pp, &cm("y", &[("app", "web")])).await.unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams::default().labels("app=web").disable_bookmarks(),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let mut by_name = api
        .watch(
            &WatchParams::default()
                .fields("metadata.name=x")
                .disable_bookmarks(),
            &rv,
        )
        .await
        .unwrap()
        .boxed();

    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
    api.patch("x", &PatchParams::default(), &label(Some("web")))
        .await
        .unwrap();
    api.patch("x", &PatchParams::default(), &label(Some("db")))
        .await
        .unwrap();
    api.patch("y", &PatchParams::default(), &label(None))
        .await
        .unwrap();
    assert_eq!(
        next_n(&mut s, 3).await,
        vec![ev("ADDED", "x"), ev("DELETED", "x"), ev("DELETED", "y")]
    );
    assert_eq!(
        next_n(&mut by_name, 2).await,
        vec![ev("MODIFIED", "x"), ev("MODIFIED", "x")]
    );
}

#[tokio::test]
async fn bookmarks_are_sent_periodically() {
    let opts = ServerOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let (server, client) = start_with(opts).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = api
        .create(&PostParams::default(), &cm("b1", &[]))
        .await
        .unwrap();
    let created_rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    let mut s = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut saw_added = false;
    let bookmark_rv = loop {
        let e = tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match e {
            WatchEvent::Added(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("b1"));
                saw_added = true;
            }
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.types.kind, "ConfigMap");
                assert_eq!(b.types.api_version, "v1");
                break b.metadata.resource_version.parse::<u64>().unwrap();
            }
            other => panic!("unexpected {:?}", describe(&other)),
        }
    };
    assert!(saw_added, "initial ADDED precedes the bookmark");
    assert!(bookmark_rv >= created_rv);
    assert_eq!(bookmark_rv, server.resource_version());
}

#[tokio::test]
async fn compacted_history_is_410_gone() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    for i in 0..3 {
        api.create(&pp, &cm(&format!("g{i}"), &[])).await.unwrap();
    }
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let old_rv = page.metadata.resource_version.clone().unwrap();
    let token = page.metadata.continue_.clone().unwrap();
    api.create(&pp, &cm("after", &[])).await.unwrap();
    server.compact();

    let mut s = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match s.next().await.unwrap().unwrap() {
        WatchEvent::Error(st) => {
            assert_eq!(st.code, 410);
            assert_eq!(st.reason, "Expired");
            assert!(
                st.message.starts_with("too old resource version"),
                "{}",
                st.message
            );
        }
        other => panic!("expected an ERROR event, got {:?}", describe(&other)),
    }
    assert!(s.next().await.is_none(), "the watch ends after the error");

    let err = api_err(
        api.list(&ListParams::default().limit(1).continue_token(&token))
            .await,
    );
    assert_eq!(err.code, 410);

    // Watching from the current revision still works.
    let now = server.resource_version().to_string();
    let mut s = api
        .watch(&WatchParams::default().disable_bookmarks(), &now)
        .await
        .unwrap()
        .boxed();
    api.create(&pp, &cm("fresh", &[])).await.unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "fresh")]);
}

#[tokio::test]
async fn history_limit_expires_old_revisions() {
    let opts = ServerOptions {
        history: 5,
        ..Default::default()
    };
    let (_server, client) = start_with(opts).await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..8 {
        api.create(&PostParams::default(), &cm(&format!("h{i}"), &[]))
            .await
            .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let first = s.next().await.unwrap().unwrap();
    assert_eq!(describe(&first), ev("ERROR", "410 Expired"));
}

#[tokio::test]
async fn streaming_list_sends_initial_events_then_marker_bookmark() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for n in ["s1", "s2", "s3"] {
        api.create(&PostParams::default(), &cm(n, &[]))
            .await
            .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => added.push(o.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                assert_eq!(
                    b.metadata.resource_version,
                    server.resource_version().to_string()
                );
                break;
            }
            other => panic!("unexpected {:?}", describe(&other)),
        }
    }
    assert_eq!(added, ["s1", "s2", "s3"]);
    api.create(&PostParams::default(), &cm("s4", &[]))
        .await
        .unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "s4")]);

    // sendInitialEvents without resourceVersionMatch=NotOlderThan is invalid.
    let req = http::Request::get("/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true")
        .body(vec![])
        .unwrap();
    assert_eq!(
        api_err(client.request::<serde_json::Value>(req).await).code,
        422
    );
}

#[tokio::test]
async fn watch_honours_timeout_seconds() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let started = std::time::Instant::now();
    let s = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
        .await
        .expect("watch ends by itself");
    assert!(events.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn runtime_watcher_and_reflector_work_end_to_end() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    api.create(&pp, &cm("pre", &[("app", "r")])).await.unwrap();

    for streaming in [false, true] {
        let cfg = if streaming {
            watcher::Config::default().streaming_lists()
        } else {
            watcher::Config::default().page_size(1)
        };
        let (reader, writer) = reflector::store::<ConfigMap>();
        let stream = reflector(writer, watcher(api.clone(), cfg.labels("app=r")))
            .applied_objects()
            .try_for_each(|_| async { Ok(()) });
        let task = tokio::spawn(stream);
        let names = |r: &reflector::Store<ConfigMap>| {
            let mut n: Vec<String> = r
                .state()
                .iter()
                .map(|o| o.metadata.name.clone().unwrap())
                .collect();
            n.sort();
            n
        };
        eventually("initial list in the reflector", || async {
            names(&reader) == ["pre"]
        })
        .await;
        let name = format!("live-{streaming}");
        api.create(&pp, &cm(&name, &[("app", "r")])).await.unwrap();
        api.create(&pp, &cm(&format!("unselected-{streaming}"), &[]))
            .await
            .unwrap();
        eventually("live object in the reflector", || async {
            names(&reader).contains(&name)
        })
        .await;
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        eventually("deletion seen", || async { names(&reader) == ["pre"] }).await;
        task.abort();
    }
}

#[tokio::test]
async fn runtime_watcher_relists_after_410() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    api.create(&pp, &cm("w1", &[("app", "w")])).await.unwrap();
    // Short server-side timeouts make the watcher re-watch from its last
    // resourceVersion; without bookmarks that revision stays old.
    let cfg = watcher::Config::default()
        .labels("app=w")
        .timeout(1)
        .disable_bookmarks();
    let mut events = watcher(api.clone(), cfg).boxed();
    let mut inits = 0;
    let mut saw_410 = false;
    let mut saw_w2 = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut compacted = false;
    while tokio::time::Instant::now() < deadline && !(saw_410 && saw_w2) {
        let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(3), events.next()).await
        else {
            continue;
        };
        match item {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitDone) => {
                if !compacted {
                    // Move the revision on without the watcher seeing it, then compact.
                    for i in 0..3 {
                        api.create(&pp, &cm(&format!("other{i}"), &[]))
                            .await
                            .unwrap();
                    }
                    server.compact();
                    compacted = true;
                } else if !saw_w2 {
                    api.create(&pp, &cm("w2", &[("app", "w")])).await.unwrap();
                }
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))
                if o.metadata.name.as_deref() == Some("w2") =>
            {
                saw_w2 = true
            }
            Ok(_) => {}
            Err(e) => {
                if e.to_string().contains("410") || format!("{e:?}").contains("410") {
                    saw_410 = true;
                }
            }
        }
    }
    assert!(saw_410, "the re-watch hit 410 Gone");
    assert!(inits >= 2, "the watcher relisted (inits = {inits})");
    assert!(saw_w2, "the watcher kept streaming after relisting");
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let (server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut s = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown completes");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = s.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the watch stream ended");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        api.list(&ListParams::default()).await.is_err(),
        "server no longer answers"
    );
}

#[tokio::test]
async fn finalizer_flow_is_visible_to_watchers() {
    let (_server, client) = start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let created = api.create(&PostParams::default(), &held).await.unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut s = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();

    api.delete("held", &DeleteParams::default()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(3), s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match e {
        WatchEvent::Modified(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        other => panic!(
            "expected MODIFIED with deletionTimestamp, got {:?}",
            describe(&other)
        ),
    }
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    // Removing the last finalizer is one MODIFIED (the update) and the DELETED.
    let evs = next_n(&mut s, 2).await;
    assert_eq!(evs, vec![ev("MODIFIED", "held"), ev("DELETED", "held")]);
}
