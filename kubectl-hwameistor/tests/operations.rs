//! Volume operations through the plugin against a cluster: `volume migrate|convert` create
//! the right object only after their checks, change nothing on a refusal or a dry run, and
//! follow the operation to its end (exit code 0 when it succeeded, non-zero with its message
//! when not); `operation list|get|abort|delete` read and act on all three kinds.
//!
//! The controller does not run here: a TEST DOUBLE (`common::ops::spawn_operation_double`)
//! plays its operation reconciler by writing the statuses it would report.
//!
//! Holds on the in-process server and on a shared real cluster: names carry the test's
//! suffix, and the test's objects are deleted afterwards (see `common`).

mod common;

use common::ops::*;
use common::*;
use hwameistor_api::{
    LocalVolumeConvert, LocalVolumeExpand, LocalVolumeMigrate, OperationKind, OperationPhase,
};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use kubectl_hwameistor::admin::migrate::{self, MigrateRequest};
use kubectl_hwameistor::admin::operations::{list_operations, OperationList};
use kubectl_hwameistor::progress::Progress;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Three storage nodes with movers: a (50Gi free), b (80Gi), c (30Gi).
async fn three_nodes(env: &Env) -> (String, String, String) {
    let (a, b, c) = (env.name("node-a"), env.name("node-b"), env.name("node-c"));
    for (n, free) in [(&a, 50 * GI), (&b, 80 * GI), (&c, 30 * GI)] {
        create_with_status(&env.client(), mover_node(n, free)).await;
    }
    (a, b, c)
}

/// A plain 10Gi volume on `node`, not in use.
async fn plain_volume(env: &Env, base: &str, node: &str) -> String {
    let v = env.name(base);
    create_volume(
        &env.client(),
        placed_volume(
            &v,
            10 * GI,
            &[node],
            None,
            ("default", &format!("data-{v}")),
        ),
    )
    .await;
    v
}

/// Every operation of kind `K` of volume `v`.
async fn ops_of<K>(c: &Client, v: &str) -> Vec<K>
where
    K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| serde_json::to_value(o).unwrap()["spec"]["volumeName"] == v)
        .collect()
}

/// What the controller reports while copying, half way, then at the end.
fn copy_script(a: &str, b: &str, end: Value) -> Vec<Scripted> {
    vec![
        at(
            0,
            json!({"phase": "Pending", "message": "waiting for a free slot"}),
        ),
        at(
            150,
            json!({"phase": "Running", "step": "Copy", "targetNode": b, "sourceNodes": [a],
                   "startTime": "2025-01-01T00:00:00Z", "message": null,
                   "progress": {"bytesDone": 5 * GI, "bytesTotal": 10 * GI, "percent": 50,
                                "bytesPerSecond": 50 << 20, "etaSeconds": 103}}),
        ),
        at(150, end),
    ]
}

fn succeeded(a: &str, b: &str) -> Value {
    json!({"phase": "Succeeded", "step": "Prune", "message": format!("moved from {a} to {b} (10Gi)"),
           "completionTime": "2025-01-01T00:01:00Z",
           "progress": {"bytesDone": 10 * GI, "bytesTotal": 10 * GI, "percent": 100}})
}

fn failed() -> Value {
    json!({"phase": "Failed", "step": "Copy",
           "message": "the copy's digest differs from the source's; the source replica is kept",
           "completionTime": "2025-01-01T00:01:00Z"})
}

#[tokio::test]
async fn migrate_creates_the_migration_and_follows_it_to_success() {
    let env = Env::start().await;
    let c = env.client();
    let (a, b, _) = three_nodes(&env).await;
    let v = plain_volume(&env, "v", &a).await;
    let double = spawn_operation_double::<LocalVolumeMigrate>(
        c.clone(),
        BTreeMap::from([(v.clone(), copy_script(&a, &b, succeeded(&a, &b)))]),
    );
    let (code, out) = env
        .cli(&[
            "volume",
            "migrate",
            &v,
            "--to",
            &b,
            "--bandwidth",
            "50Mi",
            "--yes",
            "--timeout",
            "30s",
            "-o",
            "json",
        ])
        .await;
    double.abort();
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["created"], true);
    assert_eq!(r["followed"], true);
    assert_eq!(r["operation"]["kind"], "Migrate");
    assert_eq!(r["operation"]["phase"], "Succeeded");
    assert_eq!(r["operation"]["targetNode"], b.as_str());
    assert_eq!(
        r["operation"]["message"],
        format!("moved from {a} to {b} (10Gi)")
    );
    let name = r["operation"]["name"].as_str().unwrap().to_string();
    let prefix = format!("{v}-migrate-");
    assert!(name.starts_with(&prefix), "{name}");
    assert_eq!(name.len(), prefix.len() + 5, "{name}");
    let created: Vec<LocalVolumeMigrate> = ops_of(&c, &v).await;
    assert_eq!(created.len(), 1, "exactly one migration");
    let m = &created[0];
    assert_eq!(m.name_any(), name);
    assert_eq!(m.spec.volume_name, v);
    assert_eq!(m.spec.source_node, a);
    assert_eq!(m.spec.target_nodes, std::slice::from_ref(&b));
    assert_eq!(m.spec.bandwidth_limit_bytes_per_second, Some(50 << 20));
    assert!(!m.spec.abort);
    assert!(m.spec.migrate_all_volumes);
}

#[tokio::test]
async fn a_failed_migration_shows_its_progress_then_its_message_and_exits_non_zero() {
    let env = Env::start().await;
    let c = env.client();
    let (a, b, _) = three_nodes(&env).await;
    let v1 = plain_volume(&env, "v1", &a).await;
    let v2 = plain_volume(&env, "v2", &a).await;
    let double = spawn_operation_double::<LocalVolumeMigrate>(
        c.clone(),
        BTreeMap::from([
            (v1.clone(), copy_script(&a, &b, failed())),
            (v2.clone(), copy_script(&a, &b, failed())),
        ]),
    );
    // Through the library, to read the progress it shows.
    let plan = migrate::plan(
        &env.cluster,
        &MigrateRequest {
            volume: v1.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(plan.from, a);
    if !env.is_real() {
        // A shared cluster has other tests' nodes, maybe with more room.
        assert_eq!(plan.predicted_target, b, "the node with most room");
    }
    let (progress, lines) = Progress::recording();
    let report = migrate::migrate(
        &env.cluster,
        &plan,
        false,
        Some(Duration::from_secs(30)),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.operation.phase, Some(OperationPhase::Failed));
    assert!(
        report.notes.iter().any(|n| n.ends_with(
            "ended Failed: the copy's digest differs from the source's; the source replica is kept"
        )),
        "{:?}",
        report.notes
    );
    let name = report.operation.name.clone();
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.contains(&format!("{name}: Copy 5Gi/10Gi, 50Mi/s, ETA 1m43s")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap(),
        &format!("{name}: Failed: the copy's digest differs from the source's; the source replica is kept")
    );

    // Through the CLI: exit code 1, the message in the table.
    let (code, out) = env
        .cli(&["volume", "migrate", &v2, "--yes", "--timeout", "30s"])
        .await;
    double.abort();
    assert_eq!(code, Ok(1), "{out}");
    let cells = row(&out, "Migrate");
    assert_eq!(cells[2], v2);
    assert_eq!(cells[3], format!("{a}->{b}"));
    assert_eq!(cells[4], "Failed");
    assert!(
        out.contains("the copy's digest differs from the source's"),
        "{out}"
    );
}

#[tokio::test]
async fn refusals_and_dry_runs_create_nothing() {
    let env = Env::start().await;
    let c = env.client();
    let (a, b, cc) = three_nodes(&env).await;
    let v = plain_volume(&env, "v", &a).await;
    let ha = env.name("ha");
    create_volume(
        &c,
        placed_volume(&ha, GI, &[&a, &b], Some(&a), ("default", "data-ha")),
    )
    .await;
    let big = env.name("big");
    create_volume(
        &c,
        // Larger than any node of any test has.
        placed_volume(&big, 1 << 50, &[&cc], None, ("default", "data-big")),
    )
    .await;
    let migrate = |args: Vec<String>| {
        let env = &env;
        async move {
            let mut argv = vec!["volume", "migrate"];
            argv.extend(args.iter().map(String::as_str));
            argv.push("--yes");
            env.cli(&argv).await
        }
    };
    let s = |x: &str| x.to_string();

    let (code, _) = migrate(vec![ha.clone()]).await;
    assert_eq!(
        code,
        Err(format!("volume {ha:?} is replicated (HA) with replicas on {a}, {b}: say which one moves with --from NODE"))
    );
    let (code, _) = migrate(vec![v.clone(), s("--from"), b.clone()]).await;
    assert_eq!(
        code,
        Err(format!(
            "node {b:?} holds no replica of volume {v:?}; its replicas are on: {a}"
        ))
    );
    let (code, _) = migrate(vec![v.clone(), s("--to"), a.clone()]).await;
    assert_eq!(
        code,
        Err(format!("cannot put the replica of volume {v:?} on node {a:?}: it holds a replica of the volume already"))
    );
    let nope = env.name("nope");
    let (code, _) = migrate(vec![v.clone(), s("--to"), nope.clone()]).await;
    assert!(code.unwrap_err().starts_with(&format!(
        "cannot put the replica of volume {v:?} on node {nope:?}: it is not a storage node"
    )));
    let (code, _) = migrate(vec![env.name("missing")]).await;
    assert!(code.unwrap_err().contains("not found; known volumes: "));
    let (code, _) = migrate(vec![big.clone()]).await;
    let e = code.unwrap_err();
    assert!(
        e.starts_with(&format!("no node can take the replica of volume {big:?}")),
        "{e}"
    );
    assert!(e.contains(&format!("{b} has 80Gi free")), "{e}");
    // Convert: an HA volume is replicated already.
    let (code, _) = env.cli(&["volume", "convert", &ha, "--yes"]).await;
    assert_eq!(
        code,
        Err(format!(
            "refusing to convert volume {ha:?}: the volume is replicated already (on {a}, {b})"
        ))
    );
    for vol in [&v, &ha, &big] {
        assert!(ops_of::<LocalVolumeMigrate>(&c, vol).await.is_empty());
        assert!(ops_of::<LocalVolumeConvert>(&c, vol).await.is_empty());
    }

    // A dry run: the server checks the migration, nothing is kept.
    let (code, out) = env
        .cli(&["volume", "migrate", &v, "--dry-run", "-o", "json"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["dryRun"].clone(), r["created"].clone()),
        (json!(true), json!(false))
    );
    assert!(r["operation"]["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{v}-migrate-")));
    assert!(ops_of::<LocalVolumeMigrate>(&c, &v).await.is_empty());
    let (code, _) = env
        .cli(&["volume", "convert", &v, "--dry-run", "--to", &b])
        .await;
    assert_eq!(code, Ok(0));
    assert!(ops_of::<LocalVolumeConvert>(&c, &v).await.is_empty());

    // Another operation on the volume (not started yet): named, and nothing more created.
    let (code, out) = env
        .cli(&["volume", "migrate", &v, "--yes", "--no-wait", "-o", "json"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    let first = r["operation"]["name"].as_str().unwrap().to_string();
    assert_eq!(r["followed"], false);
    assert!(r["notes"][0]
        .as_str()
        .unwrap()
        .contains(&format!("kubectl hwameistor operation get migrate/{first}")));
    let (code, _) = migrate(vec![v.clone()]).await;
    assert_eq!(
        code,
        Err(format!("volume {v:?} is held by Migrate {first} (not started): only one operation changes a volume at a time; wait until it ended, or abort it; see `kubectl hwameistor operation get {first}`"))
    );
    let (code, _) = env.cli(&["volume", "expand", &v, "20Gi"]).await;
    assert!(code
        .unwrap_err()
        .contains(&format!("is held by Migrate {first}")));
    assert_eq!(ops_of::<LocalVolumeMigrate>(&c, &v).await.len(), 1);
    assert!(ops_of::<LocalVolumeExpand>(&c, &v).await.is_empty());
}

#[tokio::test]
async fn convert_creates_a_conversion_to_two_replicas_and_follows_it() {
    let env = Env::start().await;
    let c = env.client();
    let (a, _, cc) = three_nodes(&env).await;
    let v = plain_volume(&env, "v", &a).await;
    let double = spawn_operation_double::<LocalVolumeConvert>(
        c.clone(),
        BTreeMap::from([(
            v.clone(),
            vec![
                at(
                    0,
                    json!({"phase": "Running", "step": "Sync", "targetNode": cc, "sourceNodes": [a],
                             "progress": {"bytesDone": GI, "bytesTotal": 10 * GI, "percent": 10}}),
                ),
                at(
                    150,
                    json!({"phase": "Succeeded", "step": "Accessibility",
                               "message": format!("replicated on {a} and {cc}")}),
                ),
            ],
        )]),
    );
    let (code, out) = env
        .cli(&[
            "volume",
            "convert",
            &v,
            "--to",
            &cc,
            "--yes",
            "--timeout",
            "30s",
            "-o",
            "json",
        ])
        .await;
    double.abort();
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["operation"]["kind"], "Convert");
    assert_eq!(r["operation"]["phase"], "Succeeded");
    let created: Vec<LocalVolumeConvert> = ops_of(&c, &v).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].spec.replica_number, 2);
    assert_eq!(created[0].spec.target_node.as_deref(), Some(cc.as_str()));
    assert!(created[0].name_any().starts_with(&format!("{v}-convert-")));
}

/// Creates an operation object with the given spec and status (status subresource).
async fn make<K>(c: &Client, kind: &str, name: &str, spec: Value, status: Value)
where
    K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(json!({
        "apiVersion": "hwameistor.io/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    let api: Api<K> = Api::all(c.clone());
    api.create(&Default::default(), &obj).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap();
}

async fn abort_flag<K>(c: &Client, name: &str) -> bool
where
    K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let o = Api::<K>::all(c.clone()).get(name).await.unwrap();
    serde_json::to_value(&o).unwrap()["spec"]["abort"] == true
}

#[tokio::test]
async fn operations_are_listed_shown_aborted_and_deleted_across_kinds() {
    let env = Env::start().await;
    let c = env.client();
    let (a, b, _) = three_nodes(&env).await;
    // v1 is moving from a to b (both in its placement); v2's source left the placement.
    let v1 = env.name("v1");
    create_volume(
        &c,
        placed_volume(&v1, 10 * GI, &[&a, &b], None, ("default", "d1")),
    )
    .await;
    let v2 = plain_volume(&env, "v2", &b).await;
    let v3 = env.name("v3");
    let (m1, m2, c1, e1) = (
        format!("{v1}-migrate-aaaaa"),
        format!("{v2}-migrate-bbbbb"),
        format!("{v3}-convert-ccccc"),
        format!("{v1}-expand-ddddd"),
    );
    make::<LocalVolumeMigrate>(
        &c,
        "LocalVolumeMigrate",
        &m1,
        json!({"volumeName": v1, "sourceNode": a}),
        json!({"phase": "Running", "step": "Sync", "targetNode": b, "sourceNodes": [a, b],
               "progress": {"bytesDone": 4 * GI, "bytesTotal": 10 * GI, "percent": 40,
                            "bytesPerSecond": 100 << 20, "etaSeconds": 62}}),
    )
    .await;
    make::<LocalVolumeConvert>(
        &c,
        "LocalVolumeConvert",
        &c1,
        json!({"volumeName": v3, "replicaNumber": 2}),
        json!({"phase": "Pending", "message": "the volume is in use on x",
               "conditions": [{"type": "Waiting", "status": "True", "reason": "Waiting",
                               "message": "the volume is in use on x",
                               "lastTransitionTime": "2025-01-01T00:00:00Z"}]}),
    )
    .await;
    // Created after m1: listed after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    make::<LocalVolumeExpand>(
        &c,
        "LocalVolumeExpand",
        &e1,
        json!({"volumeName": v1, "requiredCapacityBytes": 20 * GI}),
        json!({"phase": "Succeeded", "step": "WaitForReplicas", "message": "grown to 20Gi",
               "originalCapacityBytes": 10 * GI, "allocatedCapacityBytes": 20 * GI,
               "completionTime": "2025-01-01T00:00:00Z"}),
    )
    .await;
    make::<LocalVolumeMigrate>(
        &c,
        "LocalVolumeMigrate",
        &m2,
        json!({"volumeName": v2, "sourceNode": a}),
        json!({"phase": "Running", "step": "Prune", "targetNode": b, "sourceNodes": [a]}),
    )
    .await;

    // The list, one volume's, in table form.
    let (code, out) = env.cli(&["operation", "list", "--volume", &v1]).await;
    assert_eq!(code, Ok(0), "{out}");
    let t = cells(&out);
    assert_eq!(
        t[0],
        ["KIND", "NAME", "VOLUME", "CHANGE", "PHASE", "STEP", "PROGRESS", "AGE"]
    );
    assert_eq!(t.len(), 3, "{out}");
    assert_eq!(
        &t[1][..7],
        [
            "Migrate",
            m1.as_str(),
            v1.as_str(),
            &format!("{a}->{b}"),
            "Running",
            "Sync",
            "40%"
        ]
    );
    assert_eq!(
        &t[2][..7],
        [
            "Expand",
            e1.as_str(),
            v1.as_str(),
            "10Gi->20Gi",
            "Succeeded",
            "WaitForReplicas",
            "-"
        ]
    );
    assert!(t[1][7].ends_with('s'), "an age: {:?}", t[1]);
    // Wide: the abort flag and the message, or what it waits for.
    let (code, out) = env.cli(&["op", "ls", "-o", "wide"]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        cells(&out)[0],
        [
            "KIND", "NAME", "VOLUME", "CHANGE", "PHASE", "STEP", "PROGRESS", "AGE", "ABORT",
            "MESSAGE"
        ]
    );
    // Other tests' operations may be listed too (a shared cluster): this test's row.
    let r = cells(&out)
        .into_iter()
        .find(|r| r.get(1) == Some(&c1))
        .unwrap_or_else(|| panic!("no row for {c1}: {out}"));
    assert_eq!(r[3], "+?");
    assert_eq!(r[4], "Pending");
    assert!(out.contains("the volume is in use on x"), "{out}");

    // JSON round-trips into the library's own type.
    let (code, out) = env.cli(&["operation", "list", "-o", "json"]).await;
    assert_eq!(code, Ok(0));
    let list: OperationList = serde_json::from_str(&out).expect("parses as OperationList");
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        serde_json::from_str::<Value>(&out).unwrap()
    );
    let mine: BTreeMap<String, _> = list
        .items
        .iter()
        .filter(|r| [&m1, &m2, &c1, &e1].contains(&&r.name))
        .map(|r| (r.name.clone(), r.clone()))
        .collect();
    assert_eq!(mine.len(), 4);
    assert_eq!(mine[&m1].kind, OperationKind::Migrate);
    assert_eq!(mine[&m1].progress.as_ref().unwrap().bytes_done, 4 * GI);
    assert_eq!(mine[&e1].required_capacity_bytes, Some(20 * GI));
    assert_eq!(
        mine[&c1].waiting.as_deref(),
        Some("the volume is in use on x")
    );
    let lib = list_operations(&env.cluster, Some(&v1), None)
        .await
        .unwrap();
    assert_eq!(
        lib.items
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [m1.as_str(), e1.as_str()]
    );

    // get: by name, by kind/name; a name two kinds share asks which.
    let (code, out) = env.cli(&["operation", "get", &m1]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains("\nDetails:\n"), "{out}");
    assert!(out.contains("4Gi/10Gi, 100Mi/s, ETA 1m2s"), "{out}");
    assert!(
        out.contains(&format!("kubectl hwameistor operation abort migrate/{m1}")),
        "{out}"
    );
    let (code, out) = env
        .cli(&["op", "get", &format!("expand/{e1}"), "-o", "json"])
        .await;
    assert_eq!(code, Ok(0));
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["operation"]["allocatedCapacityBytes"], 20 * GI);
    let (code, _) = env
        .cli(&["operation", "get", &format!("expand/{m1}")])
        .await;
    assert!(code
        .unwrap_err()
        .starts_with(&format!("operation \"expand/{m1}\" not found")));
    make::<LocalVolumeExpand>(
        &c,
        "LocalVolumeExpand",
        &m1,
        json!({"volumeName": v1, "requiredCapacityBytes": 30 * GI}),
        json!({"phase": "Pending"}),
    )
    .await;
    let (code, _) = env.cli(&["operation", "get", &m1]).await;
    assert_eq!(
        code,
        Err(format!(
            "{m1:?} names more than one operation (Migrate, Expand); say which: migrate/{m1} or expand/{m1}"
        ))
    );

    // abort: written while it can be undone; a dry run writes nothing; an ended one and one
    // past the point of no return are not touched.
    let (code, out) = env
        .cli(&["operation", "abort", &format!("migrate/{m1}")])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains("abort requested"), "{out}");
    assert!(out.contains("stops at the next safe point"), "{out}");
    assert!(abort_flag::<LocalVolumeMigrate>(&c, &m1).await);
    let (code, out) = env.cli(&["operation", "abort", &c1, "--dry-run"]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains("dry run: not changed"), "{out}");
    assert!(!abort_flag::<LocalVolumeConvert>(&c, &c1).await);
    let (code, out) = env.cli(&["operation", "abort", &e1]).await;
    assert_eq!(code, Ok(0));
    assert!(out.contains("already ended (Succeeded"), "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    assert!(!abort_flag::<LocalVolumeExpand>(&c, &e1).await);
    let (code, _) = env.cli(&["operation", "abort", &m2]).await;
    assert_eq!(
        code,
        Err(format!("cannot abort Migrate {m2}: the new replica on {b} was complete and verified and {a} left the placement; the migration completes"))
    );
    assert!(!abort_flag::<LocalVolumeMigrate>(&c, &m2).await);

    // delete: only what ended.
    let (code, _) = env.cli(&["operation", "delete", &m2]).await;
    assert!(code
        .unwrap_err()
        .starts_with(&format!("Migrate {m2} has not ended (Running)")));
    let (code, out) = env.cli(&["operation", "delete", &e1]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(Api::<LocalVolumeExpand>::all(c.clone())
        .get_opt(&e1)
        .await
        .unwrap()
        .is_none());
}

/// The built binary, without a terminal (confirmations must refuse rather than wait).
async fn binary(env: &Env, rest: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--kubeconfig".to_string(),
        env.kubeconfig.to_string_lossy().into_owned(),
        "-n".to_string(),
        env.ns.clone(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-hwameistor"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl-hwameistor")
    })
    .await
    .expect("the binary ran")
}

#[tokio::test]
async fn without_a_terminal_migrate_and_drain_show_the_plan_and_refuse() {
    let env = Env::start().await;
    let c = env.client();
    let (a, b, _) = three_nodes(&env).await;
    let ha = env.name("ha");
    create_volume(
        &c,
        placed_volume(&ha, GI, &[&a, &b], Some(&b), ("default", "data-ha")),
    )
    .await;
    let out = binary(&env, &["volume", "migrate", &ha, "--from", &a]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "Plan: migrate the replica of volume {ha} (PVC default/data-ha) off {a}\n"
        )),
        "{err}"
    );
    assert!(err.contains("single copy during the move"), "{err}");
    assert!(
        err.ends_with("needs confirmation, but stdin is not a terminal: pass --yes to proceed\n"),
        "{err}"
    );
    let out = binary(&env, &["node", "drain", &a]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "Plan: drain node {a} (1 volume(s) with a replica there)\n"
        )),
        "{err}"
    );
    assert!(
        err.ends_with("needs confirmation, but stdin is not a terminal: pass --yes to proceed\n"),
        "{err}"
    );
    assert!(ops_of::<LocalVolumeMigrate>(&c, &ha).await.is_empty());
    // The single-copy warning is in the help too.
    let out = binary(&env, &["volume", "migrate", "--help"]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("VOLUME HAS A SINGLE COMPLETE COPY"), "{help}");
}
