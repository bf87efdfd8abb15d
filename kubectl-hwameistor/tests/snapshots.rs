//! Snapshots through the plugin against a cluster: `snapshot list|get|delete` and `volume
//! get`'s snapshot table, with LocalVolumeSnapshots written directly with the status a node
//! agent would report (no agent runs here). Holds on the in-process server and on a shared
//! real cluster: names carry the test's suffix and are deleted afterwards (see `common`).

mod common;

use common::*;
use hwameistor_api::volume::ANNOTATION_CSI_NAME;
use hwameistor_api::{
    LocalVolumeSnapshot, LocalVolumeSnapshotSpec, LocalVolumeSnapshotStatus, SnapshotState,
    VolumeState,
};
use kube::Api;
use serde_json::Value;

fn snapshot(name: &str, volume: &str, cow: Option<i64>, used: Option<i64>) -> LocalVolumeSnapshot {
    let mut s = LocalVolumeSnapshot::new(
        name,
        LocalVolumeSnapshotSpec {
            source_volume: volume.into(),
            node_name: "node-a".into(),
            pool_name: "LocalStorage_PoolHDD".into(),
            source_capacity_bytes: 1 << 30,
            cow_capacity_bytes: cow,
        },
    );
    s.status = Some(LocalVolumeSnapshotStatus {
        state: Some(SnapshotState::Ready),
        ready_to_use: true,
        creation_time: Some("2026-11-26T17:00:00Z".into()),
        used_percent: used,
        ..Default::default()
    });
    s
}

#[tokio::test]
async fn snapshots_are_listed_shown_with_their_volume_and_deleted_after_confirmation() {
    let env = Env::start().await;
    let client = env.client();
    let vol = env.name("db");
    create_with_status(
        &client,
        volume(&vol, 1 << 30, &["node-a"], VolumeState::Ready),
    )
    .await;
    let (nightly, filling) = (env.name("nightly"), env.name("filling"));
    let mut csi = snapshot(&nightly, &vol, None, None);
    csi.metadata.annotations = Some(
        [(
            ANNOTATION_CSI_NAME.to_string(),
            format!("snapshot-{}", env.id),
        )]
        .into(),
    );
    create_with_status(&client, csi).await;
    create_with_status(&client, snapshot(&filling, &vol, Some(256 << 20), Some(91))).await;

    let (code, out) = env.cli(&["snapshot", "list", "--volume", &vol]).await;
    assert_eq!(code, Ok(0), "{out}");
    let r = row(&out, &filling);
    assert_eq!(r[1], vol);
    assert_eq!(r[2], "COW");
    assert!(out.contains("91% (near overflow)"), "{out}");
    assert_eq!(row(&out, &nightly)[2], "Thin");

    let (code, out) = env.cli(&["snapshot", "list", "-o", "json"]).await;
    assert_eq!(code, Ok(0), "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let mine: Vec<&Value> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["volume"] == vol.as_str())
        .collect();
    assert_eq!(mine.len(), 2);

    // By the CSI name too; the notes say what to do about a filling one.
    let (code, out) = env
        .cli(&["snapshot", "get", &format!("snapshot-{}", env.id)])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains(&nightly), "{out}");
    let (code, out) = env.cli(&["snapshot", "get", &filling]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.contains("cowSize"), "{out}");
    let (code, _) = env.cli(&["snapshot", "get", &env.name("nope")]).await;
    assert!(
        code.as_ref().is_err_and(|e| e.contains("not found")),
        "{code:?}"
    );

    // The volume shows its snapshots.
    let (code, out) = env.cli(&["volume", "get", &vol]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(
        out.contains("Snapshots:") && out.contains(&filling),
        "{out}"
    );

    // Deleting asks first (no terminal here: refused without --yes); a dry run deletes
    // nothing; --yes deletes.
    let (code, _) = env.cli(&["snapshot", "delete", &filling]).await;
    assert!(code.is_err(), "refused without confirmation");
    let (code, out) = env
        .cli(&["snapshot", "delete", &filling, "--dry-run"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let api: Api<LocalVolumeSnapshot> = Api::all(client.clone());
    assert!(api.get_opt(&filling).await.expect("get").is_some());
    let (code, out) = env.cli(&["snapshot", "delete", &filling, "--yes"]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(api.get_opt(&filling).await.expect("get").is_none());
}
