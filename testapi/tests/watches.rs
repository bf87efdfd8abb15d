//! Watch semantics through a real kube client: replay from a
//! resourceVersion, synthetic ADDED, selector transitions (labels, fields,
//! a CRD's selectableFields), bookmarks, 410 after compaction, streaming
//! lists, timeouts, and kube-runtime's watcher. Tests that need the
//! in-process server's knobs (bookmark interval, history size, compaction,
//! shutdown) are not run on a real cluster.

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
fn describe<K: kube::Resource>(ev: &WatchEvent<K>) -> (String, String) {
    use kube::ResourceExt;
    match ev {
        WatchEvent::Added(o) => ("ADDED".into(), o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(s) => ("ERROR".into(), format!("{} {}", s.code, s.reason)),
    }
}

async fn next_n<S, K>(stream: &mut S, n: usize) -> Vec<(String, String)>
where
    S: futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
    K: kube::Resource,
{
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
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

/// The label every ConfigMap of these tests carries, so that watches from
/// "0" see only them (a real cluster adds a ConfigMap to every namespace).
const MINE: (&str, &str) = ("w", "1");

#[tokio::test]
async fn watch_replays_from_resource_version_then_streams() {
    let ctx = start().await;
    let ns = ctx.settled_namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams::default();
    api.create(&pp, &cm("a", &[MINE])).await.unwrap();
    let rv0 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&pp, &cm("b", &[MINE])).await.unwrap();
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
    api.create(&pp, &cm("c", &[MINE])).await.unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "c")]);

    // Events of other namespaces are not delivered to a namespaced watch.
    let other_ns = ctx.namespace().await;
    let other: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &other_ns);
    other.create(&pp, &cm("elsewhere", &[MINE])).await.unwrap();
    api.create(&pp, &cm("d", &[MINE])).await.unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "d")]);

    // resourceVersion "0" starts with synthetic ADDED for what exists.
    let mut s0 = api
        .watch(&wp.clone().labels("w=1"), "0")
        .await
        .unwrap()
        .boxed();
    let mut initial = next_n(&mut s0, 3).await;
    initial.sort();
    assert_eq!(
        initial,
        vec![ev("ADDED", "a"), ev("ADDED", "c"), ev("ADDED", "d")]
    );
}

#[tokio::test]
async fn selectors_apply_to_watches_with_transitions() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
async fn selectable_fields_select_what_a_node_watches() {
    // What a node agent does: watch only the objects of its node, through
    // the CRD's selectableFields (`fieldSelector=spec.nodeName=<node>`).
    let ctx = start().await;
    let api = ctx.local_volumes().await;
    let pp = PostParams::default();
    let spec = |node: &str| json!({"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 1, "nodeName": node});
    api.create(&pp, &ctx.lv("on-a", spec("node-a")))
        .await
        .unwrap();
    api.create(&pp, &ctx.lv("on-b", spec("node-b")))
        .await
        .unwrap();
    let wp = |sel: &str| WatchParams::default().fields(sel).disable_bookmarks();

    // From "0": the current objects of the node only.
    let mut node_a = api
        .watch(&wp("spec.nodeName=node-a"), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_n(&mut node_a, 1).await, vec![ev("ADDED", "on-a")]);
    let mut not_a = api
        .watch(&wp("spec.nodeName!=node-a"), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_n(&mut not_a, 1).await, vec![ev("ADDED", "on-b")]);
    let mut node_b = api
        .watch(&wp("spec.nodeName==node-b"), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_n(&mut node_b, 1).await, vec![ev("ADDED", "on-b")]);

    // Moving an object between nodes is a DELETED for one watcher and an
    // ADDED for the other; changes of another node's objects are not seen.
    let move_to = |node: &str| Patch::Merge(json!({"spec": {"nodeName": node}}));
    api.patch("on-b", &PatchParams::default(), &move_to("node-a"))
        .await
        .unwrap();
    api.patch(
        "on-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicaNumber": 2}})),
    )
    .await
    .unwrap();
    api.create(&pp, &ctx.lv("on-c", spec("node-c")))
        .await
        .unwrap();
    assert_eq!(
        next_n(&mut node_a, 2).await,
        vec![ev("ADDED", "on-b"), ev("MODIFIED", "on-a")]
    );
    assert_eq!(next_n(&mut node_b, 1).await, vec![ev("DELETED", "on-b")]);
    assert_eq!(
        next_n(&mut not_a, 2).await,
        vec![ev("DELETED", "on-b"), ev("ADDED", "on-c")]
    );

    // A field the CRD does not declare is refused for watches as for lists.
    let err = api_err(api.watch(&wp("spec.poolName2=x"), "0").await.map(|_| ()));
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
    assert_eq!(err.message, "field label not supported: spec.poolName2");
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "sets the in-process server's bookmark interval (a real server sends bookmarks about once a minute)"
)]
async fn bookmarks_are_sent_periodically() {
    let opts = ServerOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let ctx = start_local(opts).await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
    assert_eq!(bookmark_rv, ctx.server().resource_version());
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "compacts the in-process server's history on demand"
)]
async fn compacted_history_is_410_gone() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PostParams::default();
    for i in 0..3 {
        api.create(&pp, &cm(&format!("g{i}"), &[])).await.unwrap();
    }
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let old_rv = page.metadata.resource_version.clone().unwrap();
    let token = page.metadata.continue_.clone().unwrap();
    api.create(&pp, &cm("after", &[])).await.unwrap();
    ctx.server().compact();

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
    let now = ctx.server().resource_version().to_string();
    let mut s = api
        .watch(&WatchParams::default().disable_bookmarks(), &now)
        .await
        .unwrap()
        .boxed();
    api.create(&pp, &cm("fresh", &[])).await.unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "fresh")]);
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "sets the in-process server's watch history size"
)]
async fn history_limit_expires_old_revisions() {
    let opts = ServerOptions {
        history: 5,
        ..Default::default()
    };
    let ctx = start_local(opts).await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mut last_rv = 0u64;
    for n in ["s1", "s2", "s3"] {
        let c = api
            .create(&PostParams::default(), &cm(n, &[MINE]))
            .await
            .unwrap();
        last_rv = c.metadata.resource_version.unwrap().parse().unwrap();
    }
    let mut s = api
        .watch(&WatchParams::streaming_lists().labels("w=1"), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => added.push(o.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                if b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str)
                    != Some("true")
                {
                    // A periodic bookmark before the end of the initial events.
                    continue;
                }
                let rv: u64 = b.metadata.resource_version.parse().unwrap();
                assert!(rv >= last_rv, "{rv} < {last_rv}");
                if let Some(server) = ctx.cluster.local() {
                    assert_eq!(rv, server.resource_version());
                }
                break;
            }
            other => panic!("unexpected {:?}", describe(&other)),
        }
    }
    assert_eq!(added, ["s1", "s2", "s3"]);
    api.create(&PostParams::default(), &cm("s4", &[MINE]))
        .await
        .unwrap();
    assert_eq!(next_n(&mut s, 1).await, vec![ev("ADDED", "s4")]);

    // sendInitialEvents without resourceVersionMatch=NotOlderThan is invalid.
    let req = http::Request::get(format!("/api/v1/namespaces/{ns}/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"))
        .body(vec![])
        .unwrap();
    assert_eq!(
        api_err(ctx.client.request::<serde_json::Value>(req).await).code,
        422
    );
}

#[tokio::test]
async fn watch_honours_timeout_seconds() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let started = std::time::Instant::now();
    let s = api
        .watch(
            &WatchParams::default()
                .labels("w=1")
                .timeout(1)
                .disable_bookmarks(),
            "0",
        )
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
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
#[cfg_attr(
    real_cluster,
    ignore = "compacts the in-process server's history to force a 410"
)]
async fn runtime_watcher_relists_after_410() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
                    ctx.server().compact();
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
#[cfg_attr(real_cluster, ignore = "shuts the in-process server down")]
async fn shutdown_ends_open_watches() {
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mut s = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let started = std::time::Instant::now();
    let Ctx { cluster, .. } = ctx;
    let hwameistor_testapi::TestCluster::Local(server) = cluster else {
        panic!("this test runs on the in-process server only");
    };
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
    let ctx = start().await;
    let ns = ctx.namespace().await;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
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
    let e = tokio::time::timeout(Duration::from_secs(10), s.next())
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
    // Removing the last finalizer of a deleting object is not stored as an
    // update: the object is deleted, so watchers see one DELETED.
    let evs = next_n(&mut s, 1).await;
    assert_eq!(evs, vec![ev("DELETED", "held")]);
    let after = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    assert!(after.is_err(), "no further event: {after:?}");
}
