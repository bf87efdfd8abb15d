//! `node drain` against a cluster: the plan names every volume with a replica on the node,
//! where each would go, the pods that must stop and what cannot move; a dry run changes
//! nothing; a drain creates one labelled migration per volume, cordons the node, evicts the
//! pods (retrying a refusal by a PodDisruptionBudget), follows the migrations and reports
//! what moved, what failed and what was not attempted; run again, it follows the migrations
//! it made instead of creating more.
//!
//! Evictions: the in-process test API server does not serve the Eviction subresource
//! (pods/eviction answers 404). The drain evicts through the `Evictor` trait: these tests
//! give it a recording evictor to observe the calls and play a PodDisruptionBudget's
//! refusal; the CLI's `--disable-eviction` (plain deletes) runs against the server; and
//! `the_api_evictor_*` checks the real evictor: on a real cluster the pod is evicted, on the
//! in-process server it stops with the error saying the server does not serve evictions.
//!
//! The controller does not run here: a TEST DOUBLE plays its migration reconciler.

mod common;

use common::ops::*;
use common::*;
use futures::future::BoxFuture;
use hwameistor_api::LocalVolumeMigrate;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client, ResourceExt};
use kubectl_hwameistor::admin::drain::{
    self, ApiEvictor, DrainAction, DrainOptions, Eviction, Evictor, Outcome,
};
use kubectl_hwameistor::errors::AdminError;
use kubectl_hwameistor::progress::Progress;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The drained node `a`, two others, and the volumes:
/// - `p1`: plain, 10Gi on a, used by pod web-0 on a (claim → PV → volume handle);
/// - `h1`: HA on a and b, used on b by db-0 (stays: it need not stop);
/// - `h2`: HA on a and c, used on a by the bare pod api-0 (claim known from the volume);
/// - `stuck`: HA on a and b, Degraded: cannot move;
/// - `other`: plain on b: not part of the drain.
struct Scenario {
    a: String,
    p1: String,
    h1: String,
    h2: String,
    stuck: String,
    other: String,
}

async fn scenario(env: &Env) -> Scenario {
    let c = env.client();
    ensure_namespace(env).await;
    let (a, b, cc) = (env.name("node-a"), env.name("node-b"), env.name("node-c"));
    for (n, free) in [(&a, 50 * GI), (&b, 80 * GI), (&cc, 60 * GI)] {
        create_with_status(&c, mover_node(n, free)).await;
    }
    create_node(&c, &a).await;
    let ns = env.ns.as_str();
    let s = Scenario {
        p1: env.name("p1"),
        h1: env.name("h1"),
        h2: env.name("h2"),
        stuck: env.name("stuck"),
        other: env.name("other"),
        a: a.clone(),
    };
    create_volume(
        &c,
        placed_volume(&s.p1, 10 * GI, &[&a], Some(&a), (ns, "data-p1")),
    )
    .await;
    create_claim(&c, ns, "data-p1", &s.p1).await;
    create_pod(&c, ns, "web-0", &a, "data-p1", Some("web")).await;
    create_volume(
        &c,
        placed_volume(&s.h1, GI, &[&a, &b], Some(&b), (ns, "data-h1")),
    )
    .await;
    create_pod(&c, ns, "db-0", &b, "data-h1", Some("db")).await;
    create_volume(
        &c,
        placed_volume(&s.h2, GI, &[&a, &cc], Some(&a), (ns, "data-h2")),
    )
    .await;
    create_pod(&c, ns, "api-0", &a, "data-h2", None).await;
    let mut stuck = placed_volume(&s.stuck, GI, &[&a, &b], None, (ns, "data-stuck"));
    if let Some(st) = stuck.status.as_mut() {
        st.ha_state = Some(hwameistor_api::HaState::Degraded);
    }
    create_volume(&c, stuck).await;
    create_volume(
        &c,
        placed_volume(&s.other, GI, &[&b], None, (ns, "data-other")),
    )
    .await;
    s
}

/// The migrations of the drained node, per volume.
async fn migrations(c: &Client, s: &Scenario) -> BTreeMap<String, Vec<LocalVolumeMigrate>> {
    let mut m: BTreeMap<String, Vec<LocalVolumeMigrate>> = BTreeMap::new();
    for o in Api::<LocalVolumeMigrate>::all(c.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items
    {
        if [&s.p1, &s.h1, &s.h2, &s.stuck, &s.other].contains(&&o.spec.volume_name) {
            m.entry(o.spec.volume_name.clone()).or_default().push(o);
        }
    }
    m
}

async fn cordoned(c: &Client, node: &str) -> bool {
    Api::<Node>::all(c.clone())
        .get(node)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// Gone, or being deleted (on a real cluster nothing runs on the test's nodes to confirm).
async fn stopping(c: &Client, ns: &str, pod: &str) -> bool {
    match Api::<Pod>::namespaced(c.clone(), ns)
        .get_opt(pod)
        .await
        .unwrap()
    {
        None => true,
        Some(p) => p.metadata.deletion_timestamp.is_some(),
    }
}

#[tokio::test]
async fn the_plan_names_every_move_and_a_dry_run_changes_nothing() {
    let env = Env::start().await;
    let c = env.client();
    let s = scenario(&env).await;
    let plan = drain::plan(&env.cluster, &s.a).await.unwrap();
    let vols: Vec<&str> = plan.items.iter().map(|i| i.volume.as_str()).collect();
    assert_eq!(
        vols,
        [s.h1.as_str(), &s.h2, &s.p1, &s.stuck],
        "sorted, `other` not in it"
    );
    let by = |v: &str| plan.items.iter().find(|i| i.volume == v).unwrap();
    let (b, cc) = (env.name("node-b"), env.name("node-c"));
    if env.is_real() {
        // A shared cluster has other tests' nodes, maybe with more room: any node but the
        // volume's own.
        for (v, own) in [
            (&s.h1, vec![&s.a, &b]),
            (&s.h2, vec![&s.a, &cc]),
            (&s.p1, vec![&s.a]),
        ] {
            let t = by(v).predicted_target.clone().expect("a target");
            assert!(!own.contains(&&t), "{v} -> {t}");
        }
    } else {
        // h1 can only go to c; h2 only to b; p1 then finds b roomiest (c took h1).
        assert_eq!(by(&s.h1).predicted_target.as_deref(), Some(cc.as_str()));
        assert_eq!(by(&s.h2).predicted_target.as_deref(), Some(b.as_str()));
        assert_eq!(by(&s.p1).predicted_target.as_deref(), Some(b.as_str()));
    }
    assert!(by(&s.h1).ha && !by(&s.p1).ha);
    assert_eq!(by(&s.p1).pods, [format!("{}/web-0", env.ns)]);
    assert!(
        by(&s.h1).pods.is_empty(),
        "db-0 runs on b: it need not stop"
    );
    assert_eq!(by(&s.h2).pods, [format!("{}/api-0", env.ns)]);
    match &by(&s.stuck).action {
        DrainAction::Skip { reason } => {
            assert!(reason.contains("is not healthy (HA Degraded)"), "{reason}")
        }
        a => panic!("stuck must not move: {a:?}"),
    }
    let pods: Vec<String> = plan.pods.iter().map(|p| p.pod()).collect();
    assert_eq!(
        pods,
        [format!("{}/api-0", env.ns), format!("{}/web-0", env.ns)]
    );
    let notes = plan.notes.join("\n");
    assert!(
        notes.contains(&format!("{} (HA): single copy during its move", s.h1)),
        "{notes}"
    );
    assert!(notes.contains("is a bare pod (no controller)"), "{notes}");
    assert_eq!(
        plan.confirmation_action(),
        format!(
            "drain node {}: cordon it, evict 2 pod(s), move 3 volume(s) off it",
            s.a
        )
    );

    let (code, out) = env
        .cli(&["node", "drain", &s.a, "--dry-run", "-o", "json"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["dryRun"], true);
    assert_eq!(r["cordoned"], false);
    let outcome = |v: &str| {
        r["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["volume"] == v)
            .map(|x| x["outcome"].clone())
            .unwrap()
    };
    for v in [&s.h1, &s.h2, &s.p1] {
        assert_eq!(outcome(v), "Planned", "{v}");
    }
    assert_eq!(outcome(&s.stuck), "NotAttempted");
    assert!(
        migrations(&c, &s).await.is_empty(),
        "a dry run creates nothing"
    );
    assert!(!cordoned(&c, &s.a).await);
    for p in ["web-0", "api-0"] {
        assert!(!stopping(&c, &env.ns, p).await, "{p} is left alone");
    }
}

/// TEST DOUBLE for the Eviction API (the in-process server does not serve it): records
/// every call; a pod named in `refusals` is refused (as by a PodDisruptionBudget) that many
/// times before it is evicted.
struct RecordingEvictor {
    calls: Mutex<Vec<String>>,
    refusals: Mutex<BTreeMap<String, usize>>,
}

impl Evictor for RecordingEvictor {
    fn evict<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Eviction, AdminError>> {
        Box::pin(async move {
            let pod = format!("{namespace}/{name}");
            self.calls.lock().unwrap().push(pod);
            let mut r = self.refusals.lock().unwrap();
            match r.get_mut(name) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Ok(Eviction::Blocked(
                        "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    ))
                }
                _ => Ok(Eviction::Evicted),
            }
        })
    }
}

#[tokio::test]
async fn a_drain_creates_the_migrations_cordons_evicts_and_reports_each_volume() {
    let env = Env::start().await;
    let c = env.client();
    let s = scenario(&env).await;
    let done = |msg: &str| {
        vec![
            at(0, json!({"phase": "Running", "step": "Copy"})),
            at(
                100,
                json!({"phase": "Succeeded", "step": "Prune", "message": msg}),
            ),
        ]
    };
    let double = spawn_operation_double::<LocalVolumeMigrate>(
        c.clone(),
        BTreeMap::from([
            (s.p1.clone(), done("moved")),
            (s.h2.clone(), done("moved")),
            (
                s.h1.clone(),
                vec![at(
                    100,
                    json!({"phase": "Failed", "step": "Sync",
                           "message": "the new replica did not sync: its node lost its disk"}),
                )],
            ),
        ]),
    );
    let evictor = RecordingEvictor {
        calls: Mutex::new(Vec::new()),
        refusals: Mutex::new(BTreeMap::from([("web-0".to_string(), 2)])),
    };
    let plan = drain::plan(&env.cluster, &s.a).await.unwrap();
    let (progress, lines) = Progress::recording();
    let opts = DrainOptions {
        dry_run: false,
        timeout: Duration::from_secs(30),
        follow: true,
        evict_retry: Duration::from_millis(50),
    };
    let report = drain::drain(&env.cluster, &plan, &opts, &evictor, &progress)
        .await
        .unwrap();
    double.abort();

    assert!(cordoned(&c, &s.a).await);
    assert!(report.cordoned);
    let ms = migrations(&c, &s).await;
    assert_eq!(
        ms.keys().collect::<Vec<_>>(),
        [&s.h1, &s.h2, &s.p1],
        "one per volume that can move"
    );
    for (v, list) in &ms {
        assert_eq!(list.len(), 1, "{v}");
        let m = &list[0];
        assert_eq!(m.spec.source_node, s.a);
        assert!(m.spec.target_nodes.is_empty(), "the controller chooses");
        assert_eq!(m.labels().get("hwameistor.io/drain"), Some(&s.a));
    }
    let ns = &env.ns;
    let calls = evictor.calls.lock().unwrap().clone();
    assert_eq!(
        calls
            .iter()
            .filter(|c| **c == format!("{ns}/web-0"))
            .count(),
        3,
        "refused twice, then evicted: {calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| **c == format!("{ns}/api-0"))
            .count(),
        1
    );
    assert!(!calls.iter().any(|c| c.ends_with("/db-0")), "{calls:?}");
    assert_eq!(report.evicted.len(), 2);
    assert!(report.not_evicted.is_empty());

    let result = |v: &str| report.volumes.iter().find(|r| r.volume == v).unwrap();
    assert_eq!(result(&s.p1).outcome, Outcome::Moved);
    assert_eq!(result(&s.h2).outcome, Outcome::Moved);
    assert_eq!(result(&s.h1).outcome, Outcome::Failed);
    assert!(
        result(&s.h1)
            .message
            .as_deref()
            .unwrap()
            .contains("the new replica did not sync: its node lost its disk"),
        "{:?}",
        result(&s.h1)
    );
    assert_eq!(result(&s.stuck).outcome, Outcome::NotAttempted);
    assert_eq!(report.exit_code(), 1, "the node still holds replicas");
    assert_eq!(
        report.summary(),
        format!(
            "node {}: 2 moved, 1 failed, 0 still running, 1 not attempted",
            s.a
        )
    );
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("web-0: eviction refused for now (Cannot evict pod as it would violate the pod's disruption budget.)")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("cordoned node {}", s.a))),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_drain_run_again_follows_its_migrations_instead_of_creating_more() {
    let env = Env::start().await;
    let c = env.client();
    let s = scenario(&env).await;
    // No controller: the migrations stay as created. Pods are deleted (the in-process
    // server serves no evictions).
    let drain_args = [
        "node",
        "drain",
        s.a.as_str(),
        "--yes",
        "--disable-eviction",
        "--no-wait",
        "-o",
        "json",
    ];
    let (code, out) = env.cli(&drain_args).await;
    assert_eq!(code, Ok(1), "stuck cannot move: {out}");
    let first: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(first["cordoned"], true);
    assert!(cordoned(&c, &s.a).await);
    for p in ["web-0", "api-0"] {
        assert!(stopping(&c, &env.ns, p).await, "{p} was deleted");
    }
    assert!(!stopping(&c, &env.ns, "db-0").await);
    let ms = migrations(&c, &s).await;
    assert_eq!(ms.len(), 3);
    let names = |r: &Value| {
        let mut n: Vec<String> = r["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["operation"].as_str().map(str::to_string))
            .collect();
        n.sort();
        n
    };
    let mut created: Vec<String> = ms.values().flatten().map(|m| m.name_any()).collect();
    created.sort();
    assert_eq!(names(&first), created);
    for x in first["volumes"].as_array().unwrap() {
        if x["volume"] != s.stuck.as_str() {
            assert_eq!(x["outcome"], "Running", "{x}");
        }
    }

    // Again: the plan follows them; nothing new is created; the node stays cordoned.
    let plan = drain::plan(&env.cluster, &s.a).await.unwrap();
    for i in plan.items.iter().filter(|i| i.volume != s.stuck) {
        assert!(
            matches!(&i.action, DrainAction::Reuse { operation, .. } if created.contains(operation)),
            "{i:?}"
        );
    }
    assert!(plan.pods.is_empty(), "the pods are gone: {:?}", plan.pods);
    let (code, out) = env.cli(&drain_args).await;
    assert_eq!(code, Ok(1), "{out}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["cordoned"], false, "cordoned already");
    assert_eq!(names(&again), created);
    assert_eq!(migrations(&c, &s).await.values().flatten().count(), 3);
}

#[tokio::test]
async fn the_api_evictor_evicts_where_the_server_serves_evictions() {
    let env = Env::start().await;
    let c = env.client();
    ensure_namespace(&env).await;
    let node = env.name("node-a");
    create_node(&c, &node).await;
    create_pod(&c, &env.ns, "victim", &node, "none", Some("web")).await;
    let evictor = ApiEvictor {
        client: c.clone(),
        delete_instead: false,
    };
    // A pod that does not exist is gone already, on any server.
    assert_eq!(
        evictor.evict(&env.ns, "never-was").await.unwrap(),
        Eviction::Gone
    );
    let r = evictor.evict(&env.ns, "victim").await;
    if env.is_real() {
        assert_eq!(r.unwrap(), Eviction::Evicted);
        assert!(stopping(&c, &env.ns, "victim").await);
    } else {
        // The in-process server answers 404 on pods/eviction for a pod that exists: the
        // drain stops there with the way out, instead of taking the 404 for "gone".
        let e = r.unwrap_err();
        assert!(matches!(e, AdminError::EvictionUnsupported { .. }), "{e}");
        assert!(e.to_string().contains("pass --disable-eviction"), "{e}");
        assert!(!stopping(&c, &env.ns, "victim").await);
    }
}
