//! HA volumes through the plugin against a cluster: `volume get|list` and `diagnose` show
//! their replication, and `volume resolve-split-brain` refuses what it must, changes nothing
//! on a dry run, writes the choice only onto the volume as it was read, and follows it to
//! Healthy. The volumes and replicas are written directly with the statuses the controller
//! and the agents would report (status subresource); a TEST DOUBLE stands in for them where
//! a test follows a resolution.
//!
//! Holds on the in-process server and on a shared real cluster: names carry the test's
//! suffix, and the test's objects are deleted afterwards (see `common`).

mod common;

use common::*;
use hwameistor_api::{HaState, LocalVolume, LocalVolumeReplica};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use kubectl_hwameistor::admin::split_brain;
use kubectl_hwameistor::errors::AdminError;
use kubectl_hwameistor::progress::Progress;
use serde_json::{json, Value};
use std::time::Duration;

async fn volume(env: &Env, name: &str) -> LocalVolume {
    Api::<LocalVolume>::all(env.client())
        .get(name)
        .await
        .expect("volume")
}

#[tokio::test]
async fn get_list_and_diagnose_show_an_ha_volume_and_its_split_brain() {
    let env = Env::start().await;
    let fx = env.fx();
    let name = split_brain_volume(&env, "sb").await;
    let (a, b) = (fx.node_a.as_str(), fx.node_b.as_str());

    let (code, out) = env.cli(&["volume", "list"]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert_eq!(
        cells(&out)[0],
        [
            "NAME",
            "KIND",
            "POOL",
            "CAPACITY",
            "REPLICAS",
            "NODES",
            "STATE",
            "HA",
            "PUBLISHED",
            "PVC",
            "GROUP"
        ]
    );
    assert_eq!(row(&out, &name)[7], "SplitBrain", "{out}");

    let (code, out) = env.cli(&["volume", "get", &name]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains("\nReplication (HA SplitBrain):\n"), "{out}");
    let cmd = format!("kubectl hwameistor volume resolve-split-brain {name} --keep <{a}|{b}>");
    assert!(out.contains(&cmd), "{out}");
    assert_eq!(
        row(&out, a),
        [
            a,
            "primary",
            "Primary",
            "UpToDate",
            "StandAlone",
            "-",
            "DUnknown",
            "-",
            "split",
            "brain"
        ]
    );

    let (code, out) = env.cli(&["volume", "get", &name, "-o", "json"]).await;
    assert_eq!(code, Ok(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["volume"]["haState"], "SplitBrain");
    assert_eq!(v["volume"]["replicas"][1]["node"], b);
    assert_eq!(v["volume"]["replicas"][1]["allowedPrimary"], false);
    assert_eq!(v["volume"]["replicas"][1]["splitBrain"], true);
    assert_eq!(v["volume"]["replicas"][1]["connectionState"], "StandAlone");

    // diagnose: an error on this volume whose hint is the command (other findings, and
    // other tests' volumes on a shared cluster, aside).
    let (code, out) = env.cli(&["diagnose", "-o", "json"]).await;
    assert_eq!(code, Ok(1));
    let r: Value = serde_json::from_str(&out).unwrap();
    let mine: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "ha" && f["object"] == format!("volume {name}"))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["severity"], "error");
    assert_eq!(mine[0]["hint"], cmd);
}

#[tokio::test]
async fn resolve_refuses_what_it_cannot_resolve_and_changes_nothing() {
    let env = Env::start().await;
    let fx = env.fx();
    let c = env.client();
    let (a, b) = (fx.node_a.as_str(), fx.node_b.as_str());
    let resolve = |vol: String, keep: &str| {
        let keep = keep.to_string();
        let env = &env;
        async move {
            env.cli(&[
                "volume",
                "resolve-split-brain",
                &vol,
                "--keep",
                &keep,
                "--yes",
            ])
            .await
        }
    };

    // A volume without replication.
    populate(&c, &fx).await;
    let (code, _) = resolve(fx.volume.clone(), a).await;
    assert_eq!(
        code,
        Err(format!("volume {:?} is not replicated (HA): it has a single copy, so there is no split brain to resolve", fx.volume))
    );

    // An HA volume that is Healthy.
    let healthy = env.name("healthy");
    create_with_status(&c, ha_volume(&healthy, a, b, HaState::Healthy)).await;
    for n in [a, b] {
        let rep = json!({"role": if n == a { "Primary" } else { "Secondary" },
                         "diskState": "UpToDate", "connectionState": "Connected", "peerDiskState": "UpToDate"});
        create_with_status(&c, ha_replica(&healthy, n, rep)).await;
    }
    let (code, _) = resolve(healthy.clone(), a).await;
    assert_eq!(
        code,
        Err(format!("volume {healthy:?} is not in split brain (HA state Healthy, and no replica reports one); nothing to resolve"))
    );

    // A node without a replica of the volume.
    let split = split_brain_volume(&env, "sb").await;
    let before = volume(&env, &split).await.resource_version();
    let other = env.name("node-c");
    let (code, _) = resolve(split.clone(), &other).await;
    assert_eq!(
        code,
        Err(format!(
            "node {other:?} holds no replica of volume {split:?}; its replicas are on: {a}, {b}"
        ))
    );
    assert_eq!(volume(&env, &split).await.resource_version(), before);

    // A resolution pending already (written by an earlier run).
    let patch = json!({"spec": {"splitBrainResolution": {"keep": b}}});
    Api::<LocalVolume>::all(c.clone())
        .patch(&split, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let before = volume(&env, &split).await.resource_version();
    let (code, _) = resolve(split.clone(), a).await;
    let e = code.unwrap_err();
    assert!(
        e.starts_with(&format!("a split-brain resolution of volume {split:?} is already pending (the data of {b} is kept)")),
        "{e}"
    );
    let after = volume(&env, &split).await;
    assert_eq!(after.resource_version(), before);
    assert_eq!(after.spec.split_brain_resolution.unwrap().keep, b);
}

#[tokio::test]
async fn a_dry_run_shows_the_plan_and_changes_nothing() {
    let env = Env::start().await;
    let fx = env.fx();
    let name = split_brain_volume(&env, "sb").await;
    let before = volume(&env, &name).await;
    // By PVC, as users have it at hand; no --yes needed: nothing is written.
    let pvc = format!("default/data-{name}");
    let (code, out) = env
        .cli(&[
            "volume",
            "resolve-split-brain",
            &pvc,
            "--keep",
            &fx.node_b,
            "--dry-run",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["dryRun"], true);
    assert_eq!(r["written"], false);
    assert_eq!(r["keep"], fx.node_b.as_str());
    assert_eq!(r["discard"], json!([fx.node_a]));
    assert_eq!(
        r["plan"]["resourceVersion"],
        before.resource_version().unwrap()
    );
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("dry run: nothing was written"),
        "{r}"
    );
    let after = volume(&env, &name).await;
    assert_eq!(after.resource_version(), before.resource_version());
    assert_eq!(after.spec.split_brain_resolution, None);
    // The table says so too.
    let (code, out) = env
        .cli(&[
            "volume",
            "resolve-split-brain",
            &name,
            "--keep",
            &fx.node_b,
            "--dry-run",
        ])
        .await;
    assert_eq!(code, Ok(0));
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!(volume(&env, &name).await.spec.split_brain_resolution, None);
}

#[tokio::test]
async fn the_choice_is_written_only_onto_the_volume_as_it_was_read() {
    let env = Env::start().await;
    let fx = env.fx();
    let c = env.client();
    let name = split_brain_volume(&env, "sb").await;
    let api: Api<LocalVolume> = Api::all(c.clone());
    let before = volume(&env, &name).await;

    // The volume changes between the plan and the write: the write (and its dry run) fail
    // clearly, and nothing is written.
    let plan = split_brain::plan(&env.cluster, &name, &fx.node_a)
        .await
        .unwrap();
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    for dry_run in [true, false] {
        let e = split_brain::write(&env.cluster, &plan, dry_run)
            .await
            .unwrap_err();
        assert!(matches!(e, AdminError::Conflict { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("volume {name:?} changed since it was read (another writer, or the controller): nothing was written; run the command again to see its current state")
        );
    }
    assert_eq!(volume(&env, &name).await.spec.split_brain_resolution, None);

    // Planned again, it is written: the controller's input, nothing else.
    let (code, out) = env
        .cli(&[
            "volume",
            "resolve-split-brain",
            &name,
            "--keep",
            &fx.node_a,
            "--yes",
            "--no-wait",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&r["written"], &r["resolved"]),
        (&json!(true), &json!(false))
    );
    let after = volume(&env, &name).await;
    assert_eq!(
        after.spec.split_brain_resolution.as_ref().unwrap().keep,
        fx.node_a
    );
    assert_eq!(
        after.spec.config, before.spec.config,
        "nothing else changes"
    );

    // Nobody acts on it here: following gives up at the timeout, saying the resolution
    // goes on.
    let plan = split_brain::SplitBrainPlan {
        resource_version: after.resource_version().unwrap(),
        ..plan
    };
    let mut report = split_brain::write(&env.cluster, &plan, true).await.unwrap();
    let e = split_brain::follow_resolution(
        &env.cluster,
        &mut report,
        Duration::from_secs(1),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AdminError::Timeout { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("the resolution is written and goes on without this command"),
        "{e}"
    );
    assert!(
        e.to_string().ends_with(&format!(
            "volume {name}: split brain: waiting for {} to discard its changes and reconnect to {}",
            fx.node_b, fx.node_a
        )),
        "{e}"
    );
}

/// TEST DOUBLE for the controller and the two agents after a resolution keeping `keep`:
/// the discarding side reconnects and resyncs (50%), the controller clears the resolution
/// once they are connected and then reports Syncing, then the resync completes and the
/// volume is Healthy.
fn spawn_resolution_double(
    client: Client,
    name: String,
    keep: String,
    discard: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let volumes: Api<LocalVolume> = Api::all(client.clone());
        let replicas: Api<LocalVolumeReplica> = Api::all(client);
        let status = |r: Value| json!({"status": {"replication": r}});
        let pp = PatchParams::default();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(v) = volumes.get(&name).await else {
                continue;
            };
            if v.spec.split_brain_resolution.is_none() {
                continue;
            }
            // Reconnected; the discarding side resyncs from the kept one.
            let source = json!({"role": "Primary", "diskState": "UpToDate", "connectionState": "SyncSource",
                                "peerDiskState": "Inconsistent", "syncProgress": "50.0%", "splitBrain": false});
            let target = json!({"role": "Secondary", "diskState": "Inconsistent", "connectionState": "SyncTarget",
                                "peerDiskState": "UpToDate", "syncProgress": "50.0%", "outOfSyncBytes": 512 << 20,
                                "splitBrain": false});
            let _ = replicas
                .patch_status(
                    &format!("{name}-{keep}"),
                    &pp,
                    &Patch::Merge(&status(source)),
                )
                .await;
            let _ = replicas
                .patch_status(
                    &format!("{name}-{discard}"),
                    &pp,
                    &Patch::Merge(&status(target)),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            // As the controller does: the resolution is cleared first, the state reported
            // in its next step.
            let clear = json!({"spec": {"splitBrainResolution": null}});
            let _ = volumes.patch(&name, &pp, &Patch::Merge(&clear)).await;
            let syncing = json!({"status": {"haState": HaState::Syncing}});
            let _ = volumes
                .patch_status(&name, &pp, &Patch::Merge(&syncing))
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            for (n, role) in [(&keep, "Primary"), (&discard, "Secondary")] {
                let done = json!({"role": role, "diskState": "UpToDate", "connectionState": "Connected",
                                  "peerDiskState": "UpToDate", "syncProgress": null, "outOfSyncBytes": 0});
                let _ = replicas
                    .patch_status(&format!("{name}-{n}"), &pp, &Patch::Merge(&status(done)))
                    .await;
            }
            let healthy = json!({"status": {"haState": HaState::Healthy}});
            let _ = volumes
                .patch_status(&name, &pp, &Patch::Merge(&healthy))
                .await;
            return;
        }
    })
}

#[tokio::test]
async fn resolving_follows_the_resync_until_the_volume_is_healthy() {
    let env = Env::start().await;
    let fx = env.fx();
    let name = split_brain_volume(&env, "sb").await;
    let double = spawn_resolution_double(
        env.client(),
        name.clone(),
        fx.node_b.clone(),
        fx.node_a.clone(),
    );
    let plan = split_brain::plan(&env.cluster, &name, &fx.node_b)
        .await
        .unwrap();
    let mut report = split_brain::write(&env.cluster, &plan, false)
        .await
        .unwrap();
    let (progress, lines) = Progress::recording();
    split_brain::follow_resolution(
        &env.cluster,
        &mut report,
        Duration::from_secs(30),
        &progress,
    )
    .await
    .expect("resolved");
    double.await.unwrap();
    assert!(report.resolved);
    assert_eq!(report.ha_state, Some(HaState::Healthy));
    let lines = lines.lock().unwrap().clone();
    let want = format!(
        "volume {name}: resyncing {} from {}: 50.0%, 512Mi out of sync",
        fx.node_a, fx.node_b
    );
    assert!(lines.contains(&want), "{lines:?}");
    let v = volume(&env, &name).await;
    assert_eq!(v.spec.split_brain_resolution, None);
    assert_eq!(v.status.unwrap().ha_state, Some(HaState::Healthy));
}
