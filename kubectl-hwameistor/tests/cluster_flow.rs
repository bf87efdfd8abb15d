//! The plugin against the project's test API server: install/upgrade/uninstall, the list
//! commands, diagnose, disk claim and volume expand, and their errors. Commands run
//! in-process through the same entry point as the binary, with a kubeconfig file.

mod common;

use common::*;
use hwameistor_api::{
    DiskPhase, DiskType, LocalDisk, LocalDiskClaim, LocalVolume, NodeState, PoolClass,
    ReplicaState, VolumeState,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::storage::v1::CSINode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubectl_hwameistor::admin::apply::ApplyAction;
use kubectl_hwameistor::admin::claims::{self, ClaimRequest};
use kubectl_hwameistor::admin::customize::Customization;
use kubectl_hwameistor::admin::install::{self, InstallOptions};
use kubectl_hwameistor::admin::manifests::{install_rank, Bundle};
use kubectl_hwameistor::admin::uninstall::{self, DeleteResult, UninstallOptions};
use kubectl_hwameistor::admin::{disks, pools, volumes};
use kubectl_hwameistor::confirm::Confirmation;
use kubectl_hwameistor::errors::AdminError;
use kubectl_hwameistor::progress::Progress;
use serde_json::{json, Value};
use std::time::Duration;

fn install_opts() -> InstallOptions {
    InstallOptions {
        customization: Customization {
            namespace: NS.into(),
            ..Default::default()
        },
        dry_run: false,
        wait: true,
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn install_applies_in_dependency_order_waits_for_readiness_and_is_idempotent() {
    let env = Env::start().await;
    let double = spawn_workload_readiness_double(env.client(), NS, 2);
    let (progress, lines) = Progress::recording();
    let report = install::install(&env.cluster, full_bundle(), &install_opts(), &progress)
        .await
        .expect("install");

    let kinds: Vec<&str> = report.objects.iter().map(|o| o.key.kind.as_str()).collect();
    assert_eq!(kinds[0], "Namespace");
    assert_eq!(&kinds[1..6], ["CustomResourceDefinition"; 5]);
    assert_eq!(
        &kinds[6..],
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "CSIDriver",
            "ConfigMap",
            "Service",
            "DaemonSet",
            "Deployment",
            "StorageClass"
        ]
    );
    assert!(kinds
        .windows(2)
        .all(|w| install_rank(w[0]) <= install_rank(w[1])));
    assert!(
        report
            .objects
            .iter()
            .all(|o| o.action == ApplyAction::Created),
        "{report:?}"
    );
    // Every task reported progress, in order.
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines[0], "[1/15] created Namespace hwameistor");
    assert!(
        lines.contains(&"[15/15] created StorageClass hwameistor-storage-lvm-hdd".to_string()),
        "{lines:?}"
    );
    // The CRDs were Established before anything after them was applied, and are usable.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(kubectl_hwameistor::admin::readiness::crd_established(
        &crds.get("localdisks.hwameistor.io").await.unwrap()
    ));
    Api::<LocalDisk>::all(env.client())
        .list(&ListParams::default())
        .await
        .expect("LocalDisks are served");
    // It waited for the workloads.
    assert_eq!(report.workloads.len(), 2);
    assert!(
        report.workloads.iter().all(|w| w.is_ready()),
        "{:?}",
        report.workloads
    );
    let ds = Api::<DaemonSet>::namespaced(env.client(), NS)
        .get("hwameistor-node")
        .await
        .unwrap();
    assert_eq!(ds.status.map(|s| s.number_ready), Some(2));

    // Again: nothing to create or change.
    let again = install::install(
        &env.cluster,
        full_bundle(),
        &install_opts(),
        &Progress::quiet(),
    )
    .await
    .expect("re-install");
    assert_eq!(again.objects.len(), report.objects.len());
    assert!(
        again
            .objects
            .iter()
            .all(|o| o.action == ApplyAction::Unchanged),
        "{:?}",
        again.objects
    );
    assert_eq!(
        again.summary(),
        "install: 0 created, 0 configured, 15 unchanged"
    );
    double.abort();
}

#[tokio::test]
async fn the_embedded_manifests_install_through_the_cli_and_reinstall_unchanged() {
    let env = Env::start().await;
    let double = spawn_workload_readiness_double(env.client(), NS, 1);
    let embedded = Bundle::embedded().unwrap();
    let (code, out) = env
        .cli(&["install", "--timeout", "30s", "-o", "json"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), embedded.objects.len());
    assert!(objects.iter().all(|o| o["action"] == "Created"), "{out}");
    let ranks: Vec<u8> = objects
        .iter()
        .map(|o| install_rank(o["kind"].as_str().unwrap()))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    assert!(
        report["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["ready"] == w["desired"]),
        "{out}"
    );

    let (code, out) = env
        .cli(&["install", "--timeout", "30s", "-o", "json"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let again: Value = serde_json::from_str(&out).unwrap();
    let changed: Vec<&Value> = again["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] != "Unchanged")
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
    double.abort();
}

#[tokio::test]
async fn install_times_out_naming_what_is_not_ready() {
    let env = Env::start().await;
    let opts = InstallOptions {
        timeout: Duration::from_secs(2),
        ..install_opts()
    };
    let e = install::install(&env.cluster, full_bundle(), &opts, &Progress::quiet())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("timed out after"), "{e}");
    assert!(
        e.contains("Deployment hwameistor/hwameistor-controller 0/1 ready"),
        "{e}"
    );
    assert!(e.contains("kubectl hwameistor diagnose"), "{e}");
}

#[tokio::test]
async fn upgrade_shows_what_changes_and_customizes_images_and_placement() {
    let env = Env::start().await;
    let double = spawn_workload_readiness_double(env.client(), NS, 1);
    install::install(
        &env.cluster,
        full_bundle(),
        &install_opts(),
        &Progress::quiet(),
    )
    .await
    .expect("install");
    let mut opts = install_opts();
    opts.customization.registry = Some("mirror.local:5000".into());
    opts.customization.image_tag = Some("v0.2.0".into());
    opts.customization.node_selector = [("storage".to_string(), "true".to_string())].into();

    // Dry run first: the diff, and nothing changed.
    let dry = install::upgrade(
        &env.cluster,
        full_bundle(),
        &InstallOptions {
            dry_run: true,
            ..opts.clone()
        },
        &Progress::quiet(),
    )
    .await
    .expect("dry-run upgrade");
    let ds = dry
        .objects
        .iter()
        .find(|o| o.key.kind == "DaemonSet")
        .unwrap();
    assert_eq!(ds.action, ApplyAction::Configured);
    assert_eq!(
        ds.changes,
        [
            "spec.template.spec.containers[0].image",
            "spec.template.spec.containers[1].image",
            "spec.template.spec.nodeSelector"
        ]
    );
    let live = Api::<DaemonSet>::namespaced(env.client(), NS)
        .get("hwameistor-node")
        .await
        .unwrap();
    let image = |d: &DaemonSet, i: usize| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[i]
            .image
            .clone()
    };
    assert_eq!(
        image(&live, 0).as_deref(),
        Some("ghcr.io/hwameistor/agent:v0.1.0")
    );

    let report = install::upgrade(&env.cluster, full_bundle(), &opts, &Progress::quiet())
        .await
        .expect("upgrade");
    assert_eq!(
        report.summary(),
        "upgrade: 0 created, 2 configured, 13 unchanged"
    );
    let live = Api::<DaemonSet>::namespaced(env.client(), NS)
        .get("hwameistor-node")
        .await
        .unwrap();
    assert_eq!(
        image(&live, 0).as_deref(),
        Some("mirror.local:5000/hwameistor/agent:v0.2.0")
    );
    // Sidecars keep their own tag; only the registry moves.
    assert_eq!(
        image(&live, 1).as_deref(),
        Some("mirror.local:5000/sig-storage/csi-node-driver-registrar:v2.13.0")
    );
    double.abort();
}

#[tokio::test]
async fn upgrade_of_a_cluster_without_hwameistor_says_to_install() {
    let env = Env::start().await;
    let e = install::upgrade(
        &env.cluster,
        full_bundle(),
        &install_opts(),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "HwameiStor is not installed in this cluster: run `kubectl hwameistor install`"
    );
}

#[tokio::test]
async fn install_dry_run_yaml_prints_every_object_and_creates_nothing() {
    let env = Env::start().await;
    let (code, out) = env
        .cli(&[
            "install",
            "--dry-run",
            "-o",
            "yaml",
            "--registry",
            "mirror.local",
        ])
        .await;
    assert_eq!(code, Ok(0));
    let docs: Vec<Value> = out
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml_ng::from_str(d).expect("each document parses"))
        .collect();
    let embedded = Bundle::embedded().unwrap();
    assert_eq!(docs.len(), embedded.objects.len());
    assert_eq!(
        docs.iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .count(),
        5
    );
    // Also as one JSON List.
    let (code, out) = env.cli(&["install", "--dry-run", "-o", "json"]).await;
    assert_eq!(code, Ok(0));
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(embedded.objects.len())
    );
    // A server-side dry run validates and reports, and creates nothing either.
    let (code, out) = env.cli(&["install", "--dry-run"]).await;
    assert_eq!(code, Ok(0));
    assert!(out.lines().next().unwrap().starts_with("KIND"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec![
            "CustomResourceDefinition",
            "-",
            "localdisks.hwameistor.io",
            "created",
            "-"
        ]),
        "{out}"
    );
    assert_eq!(rows.len(), embedded.objects.len() + 1, "{out}");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(crds
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(Api::<Namespace>::all(env.client())
        .get_opt(NS)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn server_side_dry_run_of_the_full_bundle_reports_creations_without_creating() {
    let env = Env::start().await;
    let opts = InstallOptions {
        dry_run: true,
        ..install_opts()
    };
    let report = install::install(&env.cluster, full_bundle(), &opts, &Progress::quiet())
        .await
        .expect("dry run");
    assert_eq!(report.objects.len(), 15);
    assert!(report
        .objects
        .iter()
        .all(|o| o.action == ApplyAction::Created));
    assert!(Api::<Namespace>::all(env.client())
        .get_opt(NS)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn uninstall_protects_volumes_asks_and_keeps_crds_unless_told() {
    let env = Env::start().await;
    let double = spawn_workload_readiness_double(env.client(), NS, 1);
    install::install(
        &env.cluster,
        full_bundle(),
        &install_opts(),
        &Progress::quiet(),
    )
    .await
    .expect("install");
    double.abort();
    populate(&env.client()).await;
    let opts = |force, crds, confirmation| UninstallOptions {
        customization: Customization {
            namespace: NS.into(),
            ..Default::default()
        },
        force_with_volumes: force,
        delete_crds: crds,
        dry_run: false,
        confirmation,
    };
    let e = uninstall::uninstall(
        &env.cluster,
        full_bundle(),
        &opts(false, false, Confirmation::AssumeYes),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "refusing to uninstall: 1 LocalVolume(s) exist (pvc-1); delete their PVCs first, or pass --force-with-volumes to leave them without a controller"
    );
    // Forced, but nobody at a terminal to confirm: refused, naming the flag.
    let e = uninstall::uninstall(
        &env.cluster,
        full_bundle(),
        &opts(true, false, Confirmation::Refuse),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AdminError::ConfirmationRequired { .. }), "{e}");
    assert!(e.to_string().ends_with("pass --yes to proceed"));

    let report = uninstall::uninstall(
        &env.cluster,
        full_bundle(),
        &opts(true, false, Confirmation::Answer(true)),
        &Progress::quiet(),
    )
    .await
    .expect("uninstall");
    assert_eq!(report.objects[0].key.kind, "StorageClass");
    assert!(report
        .objects
        .iter()
        .filter(|o| o.key.kind == "CustomResourceDefinition")
        .all(|o| o.result == DeleteResult::Kept));
    assert!(report.notes[0].starts_with("Pools and data on the nodes were not touched"));
    assert!(Api::<DaemonSet>::namespaced(env.client(), NS)
        .get_opt("hwameistor-node")
        .await
        .unwrap()
        .is_none());
    // Records survive: the CRDs were kept.
    assert_eq!(
        Api::<LocalDisk>::all(env.client())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );

    // --delete-crds also asks; declined, nothing is deleted.
    let e = uninstall::uninstall(
        &env.cluster,
        full_bundle(),
        &opts(true, true, Confirmation::Answer(false)),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AdminError::NotConfirmed { .. }), "{e}");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert_eq!(
        crds.list(&ListParams::default()).await.unwrap().items.len(),
        5
    );
}

#[tokio::test]
async fn uninstall_with_delete_crds_removes_them_last() {
    let env = Env::start().await;
    env.install_crds().await;
    let opts = UninstallOptions {
        customization: Customization {
            namespace: NS.into(),
            ..Default::default()
        },
        force_with_volumes: false,
        delete_crds: true,
        dry_run: false,
        confirmation: Confirmation::AssumeYes,
    };
    let report = uninstall::uninstall(&env.cluster, full_bundle(), &opts, &Progress::quiet())
        .await
        .expect("uninstall");
    let last = report.objects.last().unwrap();
    assert_eq!(
        (last.key.kind.as_str(), last.result),
        ("CustomResourceDefinition", DeleteResult::Deleted)
    );
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(crds
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn lists_show_disks_pools_nodes_and_volumes() {
    let env = Env::start().await;
    env.install_crds().await;
    populate(&env.client()).await;

    let list = disks::list_disks(&env.cluster, Some("node-a"))
        .await
        .unwrap();
    let names: Vec<&str> = list.items.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["node-a-sdb", "node-a-sdc", "node-a-sdd"]);
    assert_eq!(
        list.items[2].reason.as_deref(),
        Some("has a filesystem (xfs)")
    );
    let (code, out) = env.cli(&["disk", "list", "--node", "node-a"]).await;
    assert_eq!(code, Ok(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "NODE     NAME         DEVICE     TYPE   CAPACITY   STATE    PHASE         CLAIM   REASON"
    );
    assert_eq!(lines[3], "node-a   node-a-sdd   /dev/sdd   HDD    100Gi      Active   Unavailable   -       has a filesystem (xfs)");
    let (_, json) = env.cli(&["disk", "list", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(4));

    let p = pools::list_pools(&env.cluster, None).await.unwrap();
    assert_eq!(p.items.len(), 2);
    let (code, out) = env
        .cli(&["pool", "list", "--node", "node-b", "--no-headers"])
        .await;
    assert_eq!(code, Ok(0));
    assert_eq!(out, "node-b   HDD   100Gi   10Gi   90Gi   10%   1   1\n");

    let (code, out) = env.cli(&["node", "list"]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "NAME     STATE   POOLS (FREE/TOTAL)   VOLUMES   DISKS",
            "node-a   Ready   HDD:180Gi/200Gi      1         3",
            "node-b   Ready   HDD:90Gi/100Gi       1         1",
        ]
    );
    let (code, out) = env.cli(&["node", "get", "node-a"]).await;
    assert_eq!(code, Ok(0));
    assert!(
        out.contains("\nPools:\n") && out.contains("\nDisks:\n"),
        "{out}"
    );

    let v = volumes::list_volumes(&env.cluster).await.unwrap();
    assert_eq!(v.items[0].ready_replicas(), 2);
    let (code, out) = env.cli(&["volume", "list"]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        out.lines().nth(1),
        Some("pvc-1   LocalStorage_PoolHDD   10Gi       2/2        node-a:Ready,node-b:Ready   Ready   node-a      default/data-pvc-1")
    );
    // By PVC as well as by name.
    let (code, out) = env
        .cli(&["volume", "get", "default/data-pvc-1", "-o", "yaml"])
        .await;
    assert_eq!(code, Ok(0));
    assert!(out.starts_with("volume:\n  name: pvc-1\n"), "{out}");
}

#[tokio::test]
async fn errors_name_what_exists() {
    let env = Env::start().await;
    // No CRDs: every read says to install.
    let (code, _) = env.cli(&["disk", "list"]).await;
    assert_eq!(
        code,
        Err("HwameiStor is not installed in this cluster: run `kubectl hwameistor install`".into())
    );
    let (code, _) = env.cli(&["volume", "get", "pvc-x"]).await;
    assert_eq!(
        code,
        Err("HwameiStor is not installed in this cluster: run `kubectl hwameistor install`".into())
    );

    env.install_crds().await;
    populate(&env.client()).await;
    let (code, _) = env.cli(&["disk", "list", "--node", "x"]).await;
    assert_eq!(
        code,
        Err("node \"x\" not found; known nodes: node-a, node-b".into())
    );
    let (code, _) = env.cli(&["disk", "claim", "x", "--yes"]).await;
    assert_eq!(
        code,
        Err("node \"x\" not found; known nodes: node-a, node-b".into())
    );
    let (code, _) = env.cli(&["volume", "get", "pvc-x"]).await;
    assert_eq!(
        code,
        Err("volume \"pvc-x\" not found; known volumes: pvc-1".into())
    );
    let (code, _) = env.cli(&["disk", "reserve", "nope"]).await;
    assert_eq!(
        code,
        Err(
            "disk \"nope\" not found; known disks: node-a-sdb, node-a-sdc, node-a-sdd, node-b-sdb"
                .into()
        )
    );
    let (code, _) = env
        .cli(&["disk", "claim", "node-a", "--disk", "node-b-sdb", "--yes"])
        .await;
    assert_eq!(code, Err("disk \"node-b-sdb\" not found on node \"node-a\"; known disks: node-a-sdb, node-a-sdc, node-a-sdd".into()));
    // A size that does not parse: parse_size's own message.
    let (code, _) = env.cli(&["volume", "expand", "pvc-1", "ten"]).await;
    let e = code.unwrap_err();
    assert!(
        e.contains("invalid size: size \"ten\" is not a number with an optional unit"),
        "{e}"
    );
    let (code, _) = env.cli(&["volume", "expand", "pvc-1", "5Gi"]).await;
    assert_eq!(
        code,
        Err("refusing to shrink volume \"pvc-1\" from 10Gi to 5Gi: volumes can only grow".into())
    );
    // A kubeconfig that cannot be loaded.
    let mut out = Vec::new();
    let e = kubectl_hwameistor::cli::run_args(
        [
            "kubectl-hwameistor",
            "--kubeconfig",
            "/nonexistent/kc",
            "disk",
            "list",
        ],
        &mut out,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("cannot load kubeconfig /nonexistent/kc: "),
        "{e}"
    );
}

#[tokio::test]
async fn claim_plan_explains_every_rejected_disk() {
    let env = Env::start().await;
    env.install_crds().await;
    populate(&env.client()).await;
    let req = ClaimRequest {
        node: "node-a".into(),
        min_size_bytes: Some(200 * GI),
        ..Default::default()
    };
    let e = claims::plan(&env.cluster, &req).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "no disk of node \"node-a\" can be claimed:\n  \
         - node-a-sdb: capacity 100Gi is below the minimum 200Gi\n  \
         - node-a-sdc: capacity 50Gi is below the minimum 200Gi\n  \
         - node-a-sdd: has a filesystem (xfs)"
    );
    let req = ClaimRequest {
        node: "node-a".into(),
        disk_type: Some(DiskType::Ssd),
        ..Default::default()
    };
    let plan = claims::plan(&env.cluster, &req).await.unwrap();
    assert_eq!(plan.spec.description.local_disk_names, ["node-a-sdc"]);
    assert_eq!(
        plan.disks[0].reason.as_deref(),
        Some("type HDD, claim wants SSD")
    );
    assert_eq!(plan.total_bytes, 50 * GI);
    assert_eq!(plan.pools[0].pool, PoolClass::Ssd.pool_name());
    // Named disks are all-or-nothing, like the agent.
    let req = ClaimRequest {
        node: "node-a".into(),
        disks: vec!["node-a-sdb".into(), "node-a-sdd".into()],
        ..Default::default()
    };
    let e = claims::plan(&env.cluster, &req)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(a claim binds all of them or none):\n  - node-a-sdd: has a filesystem (xfs)"),
        "{e}"
    );
}

#[tokio::test]
async fn disk_claim_creates_the_claim_and_follows_it_until_bound() {
    let env = Env::start().await;
    env.install_crds().await;
    populate(&env.client()).await;
    // Dry run: the plan, validated by the server, nothing created.
    let (code, out) = env
        .cli(&[
            "disk",
            "claim",
            "node-a",
            "--type",
            "hdd",
            "--dry-run",
            "--name",
            "c1",
        ])
        .await;
    assert_eq!(code, Ok(0));
    assert!(
        out.starts_with("Plan for claim c1 on node node-a: 1 disk(s), +100Gi\n"),
        "{out}"
    );
    assert!(
        out.contains("node-a-sdb   /dev/sdb   HDD    100Gi      LocalStorage_PoolHDD   claim"),
        "{out}"
    );
    let claims_api: Api<LocalDiskClaim> = Api::all(env.client());
    assert!(claims_api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    let agent = spawn_agent_claim_double(env.client(), "node-a");
    let (code, out) = env
        .cli(&[
            "disk",
            "claim",
            "node-a",
            "--type",
            "HDD",
            "--min-size",
            "50Gi",
            "--yes",
            "--timeout",
            "30s",
            "-o",
            "json",
        ])
        .await;
    agent.abort();
    assert_eq!(code, Ok(0), "{out}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["phase"], "Bound");
    assert_eq!(result["boundDisks"], json!(["node-a-sdb"]));
    assert_eq!(
        result["pools"][0],
        json!({"pool": "LocalStorage_PoolHDD", "beforeBytes": 200 * GI, "addedBytes": 100 * GI, "afterBytes": 300 * GI})
    );
    let created = claims_api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(created.len(), 1);
    assert!(created[0].name_any().starts_with("node-a-"));
    assert_eq!(created[0].spec.description.local_disk_names, ["node-a-sdb"]);

    // The bound disk can no longer be reserved; another can, and be released.
    let (code, _) = env.cli(&["disk", "reserve", "node-a-sdb"]).await;
    assert_eq!(
        code,
        Err(format!(
            "disk \"node-a-sdb\" is Bound to claim {:?}; a disk in a pool cannot be reserved",
            created[0].name_any()
        ))
    );
    let (code, out) = env.cli(&["disk", "reserve", "node-a-sdc"]).await;
    assert_eq!(
        (code, out.lines().nth(1)),
        (Ok(0), Some("node-a-sdc   node-a   true       changed"))
    );
    let d = Api::<LocalDisk>::all(env.client())
        .get("node-a-sdc")
        .await
        .unwrap();
    assert!(d.spec.reserved);
    let (code, _) = env.cli(&["disk", "release", "node-a-sdc"]).await;
    assert_eq!(code, Ok(0));
    assert!(
        !Api::<LocalDisk>::all(env.client())
            .get("node-a-sdc")
            .await
            .unwrap()
            .spec
            .reserved
    );
}

#[tokio::test]
async fn disk_claim_refuses_without_a_terminal_and_times_out_with_the_claim_message() {
    let env = Env::start().await;
    env.install_crds().await;
    populate(&env.client()).await;
    let plan = claims::plan(
        &env.cluster,
        &ClaimRequest {
            node: "node-b".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = Confirmation::Refuse
        .confirm(&plan.confirmation_action(), "")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "claim 1 disk(s) of node node-b (+100Gi); anything on them is lost needs confirmation, but stdin is not a terminal: pass --yes to proceed"
    );
    // No agent runs: the follow gives up with the claim's last status.
    claims::create(&env.cluster, &plan, false).await.unwrap();
    let e = claims::follow_claim(
        &env.cluster,
        &plan,
        Duration::from_secs(1),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AdminError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("waiting for claim"), "{e}");
}

#[tokio::test]
async fn volume_expand_patches_the_spec_and_follows_until_allocated() {
    let env = Env::start().await;
    env.install_crds().await;
    populate(&env.client()).await;
    let api: Api<LocalVolume> = Api::all(env.client());
    // Dry run changes nothing.
    let (code, _) = env
        .cli(&["volume", "expand", "pvc-1", "20Gi", "--dry-run"])
        .await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        api.get("pvc-1").await.unwrap().spec.required_capacity_bytes,
        10 * GI
    );

    // TEST DOUBLE for the controller and agents: once the spec asks for more, report it allocated.
    let client = env.client();
    let double = tokio::spawn(async move {
        let api: Api<LocalVolume> = Api::all(client);
        loop {
            if let Ok(v) = api.get("pvc-1").await {
                let want = v.spec.required_capacity_bytes;
                if v.status.as_ref().and_then(|s| s.allocated_capacity_bytes) < Some(want) {
                    let patch = json!({"status": {"allocatedCapacityBytes": want, "state": VolumeState::Ready}});
                    let _ = api
                        .patch_status("pvc-1", &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (code, out) = env
        .cli(&[
            "volume",
            "expand",
            "pvc-1",
            "20Gi",
            "--timeout",
            "20s",
            "-o",
            "json",
        ])
        .await;
    double.abort();
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            r["fromBytes"].as_i64(),
            r["toBytes"].as_i64(),
            r["allocatedBytes"].as_i64()
        ),
        (Some(10 * GI), Some(20 * GI), Some(20 * GI))
    );
    assert_eq!(r["complete"], true);
    assert_eq!(
        api.get("pvc-1").await.unwrap().spec.required_capacity_bytes,
        20 * GI
    );
}

async fn make_healthy(env: &Env) {
    let c = env.client();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "hwameistor-node", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "n"}}, "template": {"metadata": {"labels": {"app": "n"}},
                 "spec": {"containers": [{"name": "a", "image": "x"}]}}}
    }))
    .unwrap();
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(c.clone(), NS)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    let status = json!({"status": {"desiredNumberScheduled": 2, "numberReady": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0}});
    Api::<DaemonSet>::namespaced(c.clone(), NS)
        .patch_status(
            "hwameistor-node",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    let now = jiff::Timestamp::now().to_string();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "hwameistor-controller", "namespace": NS},
        "spec": {"holderIdentity": "controller-0", "leaseDurationSeconds": 15, "renewTime": now}
    }))
    .unwrap();
    Api::<Lease>::namespaced(c.clone(), NS)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let driver =
        serde_json::from_value(json!({"metadata": {"name": "lvm.hwameistor.io"}, "spec": {}}))
            .unwrap();
    Api::<k8s_openapi::api::storage::v1::CSIDriver>::all(c.clone())
        .create(&PostParams::default(), &driver)
        .await
        .unwrap();
    for n in ["node-a", "node-b"] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        Api::<Node>::all(c.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        let csi: CSINode = serde_json::from_value(json!({"metadata": {"name": n},
            "spec": {"drivers": [{"name": "lvm.hwameistor.io", "nodeID": n}]}}))
        .unwrap();
        Api::<CSINode>::all(c.clone())
            .create(&PostParams::default(), &csi)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn diagnose_finds_problems_and_sets_the_exit_code() {
    let env = Env::start().await;
    // Nothing installed: errors, exit 1.
    let (code, out) = env.cli(&["diagnose", "-o", "json"]).await;
    assert_eq!(code, Ok(1));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "crds" && f["severity"] == "error"));

    env.install_crds().await;
    populate(&env.client()).await;
    make_healthy(&env).await;
    let (code, out) = env.cli(&["diagnose"]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.lines().skip(1).all(|l| l.starts_with("ok ")), "{out}");

    // A nearly full pool is a warning: exit 0, but 1 with --strict.
    create_with_status(
        &env.client(),
        storage_node(
            "node-c",
            NodeState::Ready,
            &[(PoolClass::Hdd, 100 * GI, 95 * GI, 3)],
        ),
    )
    .await;
    let csi: CSINode = serde_json::from_value(json!({"metadata": {"name": "node-c"},
        "spec": {"drivers": [{"name": "lvm.hwameistor.io", "nodeID": "node-c"}]}}))
    .unwrap();
    Api::<CSINode>::all(env.client())
        .create(&PostParams::default(), &csi)
        .await
        .unwrap();
    let (code, out) = env.cli(&["diagnose"]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(
        out.contains("warning   pools        pool HDD on node node-c"),
        "{out}"
    );
    let (code, _) = env.cli(&["diagnose", "--strict"]).await;
    assert_eq!(code, Ok(1));

    // A stale lease, a NotReady replica, a missing bound disk and a failed claim: errors.
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600)).to_string();
    let patch = json!({"spec": {"renewTime": old}});
    Api::<Lease>::namespaced(env.client(), NS)
        .patch(
            "hwameistor-controller",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    create_with_status(
        &env.client(),
        replica("pvc-2", "node-a", GI, ReplicaState::NotReady),
    )
    .await;
    let mut gone = disk("node-b-sdc", "node-b", DiskType::Hdd, GI, DiskPhase::Bound);
    gone.spec.claim_ref = Some(hwameistor_api::ObjectRef {
        name: "old".into(),
        uid: String::new(),
    });
    if let Some(st) = gone.status.as_mut() {
        st.state = Some(hwameistor_api::DiskPresence::Inactive);
    }
    create_with_status(&env.client(), gone).await;
    let mut claim = LocalDiskClaim::new(
        "stuck",
        hwameistor_api::LocalDiskClaimSpec {
            node_name: "node-a".into(),
            description: Default::default(),
        },
    );
    claim.status = Some(hwameistor_api::LocalDiskClaimStatus {
        phase: Some(hwameistor_api::ClaimPhase::Failed),
        message: Some("vgextend failed".into()),
        ..Default::default()
    });
    create_with_status(&env.client(), claim).await;
    let (code, out) = env.cli(&["diagnose", "-o", "json"]).await;
    assert_eq!(code, Ok(1));
    let r: Value = serde_json::from_str(&out).unwrap();
    let errors: Vec<(String, String)> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let checks: Vec<&str> = errors.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        checks,
        ["controller", "replicas", "disks", "claims"],
        "{errors:?}"
    );
    assert!(
        errors[0].1.contains("controller-0 last renewed its lease"),
        "{errors:?}"
    );
    assert_eq!(errors[3].1, "Failed: vgextend failed");
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["hint"].is_string() || f["severity"] == "ok"));
}
