//! The plugin against a cluster: install/upgrade/uninstall, the list commands, diagnose,
//! disk claim and volume expand, and their errors. Commands run in-process through the same
//! entry point as the binary, with a kubeconfig file.
//!
//! Every test holds on the project's test API server and on a real, shared cluster
//! (HWAMEISTOR_TEST_KUBECONFIG): it installs into a namespace of its own, uses names of its
//! own (see `common`), and never assumes it is alone. Tests that only make sense on the
//! in-process server are ignored on a real cluster, with the reason.

mod common;

use common::*;
use hwameistor_api::{
    DiskPhase, DiskType, LocalDisk, LocalDiskClaim, LocalVolume, LocalVolumeExpand, NodeState,
    PoolClass, ReplicaState, VolumeState,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubectl_hwameistor::admin::apply::{Applier, ApplyAction};
use kubectl_hwameistor::admin::claims::{self, ClaimRequest};
use kubectl_hwameistor::admin::customize::Customization;
use kubectl_hwameistor::admin::install::{self, prepare, InstallOptions};
use kubectl_hwameistor::admin::manifests::{install_rank, Bundle, ObjectKey};
use kubectl_hwameistor::admin::uninstall::{self, DeleteResult, UninstallOptions};
use kubectl_hwameistor::admin::{disks, pools, volumes};
use kubectl_hwameistor::confirm::Confirmation;
use kubectl_hwameistor::errors::AdminError;
use kubectl_hwameistor::output::{render, OutputOptions};
use kubectl_hwameistor::progress::Progress;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The embedded manifests name cluster-scoped objects (ClusterRoles, the CSIDriver,
/// StorageClasses) with fixed names: the tests applying them take turns, and each keeps the
/// lock until its cleanup has run (declare it before the `Env`).
static EMBEDDED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every CRD of the system, as the bundle carries them.
fn crds() -> usize {
    hwameistor_api::crds::all().len()
}

/// Every object of the deploy fixture bundle: the CRDs and the fixture's objects.
fn total() -> usize {
    crds() + FIXTURE_KINDS.len()
}

/// The 10 objects of the deploy fixture, after the CRDs.
const FIXTURE_KINDS: [&str; 10] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "CSIDriver",
    "ConfigMap",
    "Service",
    "DaemonSet",
    "Deployment",
    "StorageClass",
];

fn kinds_of(objects: &[kubectl_hwameistor::admin::apply::AppliedObject]) -> Vec<&str> {
    objects.iter().map(|o| o.key.kind.as_str()).collect()
}

#[tokio::test]
async fn install_applies_in_dependency_order_and_is_idempotent() {
    let env = Env::start().await;
    let (progress, lines) = Progress::recording();
    let report = install::install(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(false),
        &progress,
    )
    .await
    .expect("install");

    let kinds = kinds_of(&report.objects);
    assert_eq!(kinds[0], "Namespace");
    let n = crds();
    assert!(kinds[1..1 + n]
        .iter()
        .all(|k| *k == "CustomResourceDefinition"));
    assert_eq!(&kinds[1 + n..], &FIXTURE_KINDS[1..]);
    assert!(kinds
        .windows(2)
        .all(|w| install_rank(w[0]) <= install_rank(w[1])));
    for o in &report.objects {
        // The CRDs were applied when the test started (as on any cluster where HwameiStor
        // was installed before); everything else is new.
        let want = if o.key.kind == "CustomResourceDefinition" {
            ApplyAction::Unchanged
        } else {
            ApplyAction::Created
        };
        assert_eq!(o.action, want, "{o:?}");
    }
    // Every task reported progress, in order (between them: what is being waited for).
    let lines: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with('['))
        .cloned()
        .collect();
    let n = total();
    assert_eq!(lines.len(), n, "{lines:?}");
    assert_eq!(lines[0], format!("[1/{n}] created Namespace {}", env.ns));
    assert_eq!(
        lines[n - 1],
        format!(
            "[{n}/{n}] created StorageClass hwameistor-storage-lvm-hdd-{}",
            env.id
        )
    );
    // The CRDs are Established and usable.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(kubectl_hwameistor::admin::readiness::crd_established(
        &crds.get("localdisks.hwameistor.io").await.unwrap()
    ));
    Api::<LocalDisk>::all(env.client())
        .list(&ListParams::default().limit(1))
        .await
        .expect("LocalDisks are served");
    // Without waiting, the workloads are reported as they are.
    let workloads: Vec<&str> = report
        .workloads
        .iter()
        .map(|w| w.key.kind.as_str())
        .collect();
    assert_eq!(workloads, ["DaemonSet", "Deployment"]);

    // Again: nothing to create or change.
    let again = install::install(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(false),
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
        format!("install: 0 created, 0 configured, {} unchanged", total())
    );
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "marks workloads ready through a test double; on a real cluster kube-controller-manager owns workload status and no pod can run without nodes"
)]
async fn install_waits_for_the_workloads_to_be_ready() {
    let env = Env::start().await;
    let double = spawn_workload_readiness_double(env.client(), &env.ns, 2);
    let (progress, lines) = Progress::recording();
    let report = install::install(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(true),
        &progress,
    )
    .await
    .expect("install");
    double.abort();
    assert_eq!(report.workloads.len(), 2);
    assert!(
        report.workloads.iter().all(|w| w.is_ready()),
        "{:?}",
        report.workloads
    );
    let ds = Api::<DaemonSet>::namespaced(env.client(), &env.ns)
        .get("hwameistor-node")
        .await
        .unwrap();
    assert_eq!(ds.status.map(|s| s.number_ready), Some(2));
    let lines = lines.lock().unwrap().clone();
    for kind in ["DaemonSet", "Deployment"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("ready: {kind} {}/", env.ns))),
            "each workload is reported ready: {lines:?}"
        );
    }
}

/// Whether each object of the embedded bundle (customized for the test's namespace)
/// exists, in install order; cluster-scoped objects the test will create are registered
/// for cleanup. CRDs are never cleaned up.
/// Whether the cluster serves VolumeSnapshotClasses (a real cluster may; the test API server
/// does not).
async fn serves_snapshot_classes(env: &Env) -> bool {
    Api::<CustomResourceDefinition>::all(env.client())
        .get_opt(install::SNAPSHOT_CLASS_CRD)
        .await
        .expect("read CRD")
        .is_some()
}

async fn embedded_prestate(env: &Env) -> Vec<(ObjectKey, bool)> {
    let (mut bundle, _) = prepare(
        Bundle::embedded().unwrap(),
        &env.customization(),
        &BTreeMap::new(),
    )
    .unwrap();
    // Left out by install where the cluster lacks the VolumeSnapshot CRDs.
    if !serves_snapshot_classes(env).await {
        bundle.objects.retain(|o| o.kind() != "VolumeSnapshotClass");
    }
    let mut applier = Applier::new(&env.cluster);
    let mut out = Vec::new();
    for obj in &bundle.objects {
        let key = applier.key_of(obj);
        let exists = applier.get(obj).await.unwrap().is_some();
        // A namespaced object outside the test's namespace (the scheduler's RoleBinding in
        // kube-system) goes at the end too, unless it was there before.
        if let Some(ns) = key
            .namespace
            .as_deref()
            .filter(|ns| *ns != env.ns && !exists)
        {
            let collection = match obj.kind() {
                "RoleBinding" => "/apis/rbac.authorization.k8s.io/v1",
                "Role" => "/apis/rbac.authorization.k8s.io/v1",
                other => panic!(
                    "the embedded manifests have a {other} in {ns} the test does not clean up"
                ),
            };
            let plural = if obj.kind() == "Role" {
                "roles"
            } else {
                "rolebindings"
            };
            env.cleanup.object(format!(
                "{collection}/namespaces/{ns}/{plural}/{}",
                obj.name()
            ));
        }
        if !exists && key.namespace.is_none() {
            let collection = match obj.kind() {
                "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                "ClusterRoleBinding" => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                "CSIDriver" => "/apis/storage.k8s.io/v1/csidrivers",
                "StorageClass" => "/apis/storage.k8s.io/v1/storageclasses",
                "VolumeSnapshotClass" => "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses",
                "Namespace" => "/api/v1/namespaces",
                "MutatingWebhookConfiguration" => {
                    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
                }
                "ValidatingWebhookConfiguration" => {
                    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
                }
                "CustomResourceDefinition" => "",
                other => panic!("the embedded manifests have a {other} the test does not clean up"),
            };
            if !collection.is_empty() {
                env.cleanup.object(format!("{collection}/{}", obj.name()));
            }
        }
        out.push((key, exists));
    }
    out
}

#[tokio::test]
async fn the_embedded_manifests_install_through_the_cli_and_reinstall_unchanged() {
    let _embedded = EMBEDDED.lock().await;
    let env = Env::start().await;
    let before = embedded_prestate(&env).await;
    let (code, out) = env
        .cli(&["install", "--no-wait", "--timeout", "60s", "-o", "json"])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), before.len());
    // Without the VolumeSnapshot CRDs the class is left out, and the report says how to
    // get them.
    let notes = report["notes"].as_array().cloned().unwrap_or_default();
    if serves_snapshot_classes(&env).await {
        assert!(notes.is_empty(), "{notes:?}");
    } else {
        assert_eq!(notes.len(), 1, "{notes:?}");
        let note = notes[0].as_str().unwrap_or_default();
        assert!(
            note.contains("no VolumeSnapshot CRDs") && note.contains("external-snapshotter"),
            "{note}"
        );
    }
    for (o, (key, existed)) in objects.iter().zip(&before) {
        assert_eq!(o["kind"], key.kind.as_str());
        assert_eq!(o["name"], key.name.as_str());
        // What did not exist is created; what did (the CRDs, and on a shared cluster maybe
        // objects another run left) is not.
        assert_eq!(o["action"] == "Created", !existed, "{o}");
    }
    let ranks: Vec<u8> = objects
        .iter()
        .map(|o| install_rank(o["kind"].as_str().unwrap()))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    let mut workloads: Vec<&str> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    workloads.sort();
    assert_eq!(
        workloads,
        ["DaemonSet", "Deployment", "Deployment", "Deployment"],
        "{out}"
    );

    let (code, out) = env
        .cli(&["install", "--no-wait", "--timeout", "60s", "-o", "json"])
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
}

#[tokio::test]
async fn install_times_out_naming_what_is_not_ready() {
    let env = Env::start().await;
    let opts = InstallOptions {
        timeout: Duration::from_secs(5),
        ..env.install_opts(true)
    };
    let e = install::install(&env.cluster, env.full_bundle(), &opts, &Progress::quiet())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("timed out after"), "{e}");
    assert!(
        e.contains(&format!(
            "Deployment {}/hwameistor-controller 0/1 ready",
            env.ns
        )),
        "{e}"
    );
    assert!(e.contains("kubectl hwameistor diagnose"), "{e}");
}

fn image(d: &DaemonSet, i: usize) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers[i]
        .image
        .clone()
}

#[tokio::test]
async fn upgrade_shows_what_changes_and_customizes_images_and_placement() {
    let env = Env::start().await;
    install::install(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(false),
        &Progress::quiet(),
    )
    .await
    .expect("install");
    let mut opts = env.install_opts(false);
    opts.customization.registry = Some("mirror.local:5000".into());
    opts.customization.image_tag = Some("v0.2.0".into());
    opts.customization.node_selector = [("storage".to_string(), "true".to_string())].into();

    // Dry run first: the diff, and nothing changed.
    let dry = install::upgrade(
        &env.cluster,
        env.full_bundle(),
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
    let sets = Api::<DaemonSet>::namespaced(env.client(), &env.ns);
    let live = sets.get("hwameistor-node").await.unwrap();
    assert_eq!(
        image(&live, 0).as_deref(),
        Some("ghcr.io/hwameistor/agent:v0.1.0")
    );

    let report = install::upgrade(&env.cluster, env.full_bundle(), &opts, &Progress::quiet())
        .await
        .expect("upgrade");
    assert_eq!(
        report.summary(),
        format!(
            "upgrade: 0 created, 2 configured, {} unchanged",
            total() - 2
        )
    );
    let live = sets.get("hwameistor-node").await.unwrap();
    assert_eq!(
        image(&live, 0).as_deref(),
        Some("mirror.local:5000/hwameistor/agent:v0.2.0")
    );
    // Sidecars keep their own tag; only the registry moves.
    assert_eq!(
        image(&live, 1).as_deref(),
        Some("mirror.local:5000/sig-storage/csi-node-driver-registrar:v2.13.0")
    );
}

#[tokio::test]
async fn upgrade_replaces_objects_whose_changed_fields_are_immutable() {
    let env = Env::start().await;
    install::install(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(false),
        &Progress::quiet(),
    )
    .await
    .expect("install");
    let driver_name = format!("lvm-{}.hwameistor.io", env.id);
    let class_name = format!("hwameistor-storage-lvm-hdd-{}", env.id);
    let drivers: Api<CSIDriver> = Api::all(env.client());
    let classes: Api<StorageClass> = Api::all(env.client());
    let sets: Api<DaemonSet> = Api::namespaced(env.client(), &env.ns);
    let old_ds = sets.get("hwameistor-node").await.unwrap();

    // A pod of the node DaemonSet that is slow to go (a finalizer holds it). Its labels do
    // not match the selector and it has no scheduler, so no controller touches it but the
    // garbage collector.
    env.wait_for_default_service_account().await;
    let pods: Api<Pod> = Api::namespaced(env.client(), &env.ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "old-agent",
            "labels": {"test": "old-agent"},
            "finalizers": ["hwameistor.io/test-hold"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "hwameistor-node",
                "uid": old_ds.uid().unwrap(), "blockOwnerDeletion": true}]
        },
        "spec": {"schedulerName": "hwameistor-tests-no-scheduler",
                 "containers": [{"name": "agent", "image": "ghcr.io/hwameistor/agent:v0.1.0"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // The next version: attach required, SSD pools, and a new selector for the agents.
    let fixture = deploy_fixture(&env.id)
        .replace(
            "spec: {attachRequired: false, podInfoOnMount: true}",
            "spec: {attachRequired: true, podInfoOnMount: true}",
        )
        .replace(
            "parameters: {poolClass: HDD}",
            "parameters: {poolClass: SSD}",
        )
        .replace(
            "{app: hwameistor-node}",
            "{app: hwameistor-node, generation: \"2\"}",
        );
    assert_ne!(fixture, deploy_fixture(&env.id));
    let next = || full_bundle_with(&fixture);
    let replaced = |report: &install::ApplyReport| -> Vec<(String, String)> {
        report
            .objects
            .iter()
            .filter(|o| o.action == ApplyAction::Replaced)
            .map(|o| (o.key.kind.clone(), o.action_text()))
            .collect()
    };
    let want = vec![
        (
            "CSIDriver".to_string(),
            "replaced (spec.attachRequired is immutable)".to_string(),
        ),
        (
            "DaemonSet".to_string(),
            "replaced (spec.selector is immutable)".to_string(),
        ),
        (
            "StorageClass".to_string(),
            "replaced (parameters is immutable)".to_string(),
        ),
    ];

    // A dry run shows the replacements in the plan and changes nothing.
    let dry = install::upgrade(
        &env.cluster,
        next(),
        &InstallOptions {
            dry_run: true,
            ..env.install_opts(false)
        },
        &Progress::quiet(),
    )
    .await
    .expect("dry-run upgrade");
    assert_eq!(replaced(&dry), want);
    assert_eq!(
        dry.summary(),
        format!(
            "upgrade (dry run, nothing changed): 0 created, 0 configured, 3 replaced, {} unchanged",
            total() - 3
        )
    );
    let plan = render(&dry, OutputOptions::default()).unwrap();
    let driver_row = plan
        .lines()
        .find(|l| l.starts_with("CSIDriver"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        driver_row.contains("replaced (spec.attachRequired is immutable)"),
        "{plan}"
    );
    assert_eq!(
        drivers
            .get(&driver_name)
            .await
            .unwrap()
            .spec
            .attach_required,
        Some(false)
    );
    assert_eq!(
        sets.get("hwameistor-node").await.unwrap().uid(),
        old_ds.uid()
    );
    assert!(pods
        .get("old-agent")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());

    // The upgrade deletes the DaemonSet in the foreground: it stays until its pod is gone,
    // and only then is the new one created.
    let (cluster, opts, bundle) = (env.cluster.clone(), env.install_opts(false), next());
    let (progress, lines) = Progress::recording();
    let upgrade =
        tokio::spawn(async move { install::upgrade(&cluster, bundle, &opts, &progress).await });
    eventually("the old DaemonSet deleting in the foreground", || async {
        sets.get_opt("hwameistor-node")
            .await
            .unwrap()
            .is_some_and(|d| {
                d.uid() == old_ds.uid()
                    && d.metadata.deletion_timestamp.is_some()
                    && d.finalizers().iter().any(|f| f == "foregroundDeletion")
            })
    })
    .await;
    eventually("its pod being deleted", || async {
        pods.get("old-agent")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    assert!(!upgrade.is_finished(), "the upgrade waits for the old pods");
    pods.patch(
        "old-agent",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(90), upgrade)
        .await
        .expect("the upgrade finishes once the old pod is gone")
        .unwrap()
        .expect("upgrade");
    assert_eq!(replaced(&report), want);
    assert_eq!(
        report.summary(),
        format!(
            "upgrade: 0 created, 0 configured, 3 replaced, {} unchanged",
            total() - 3
        )
    );
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.contains(&format!(
            "[{}/{}] replaced (spec.attachRequired is immutable) CSIDriver {driver_name}",
            crds() + 5,
            total()
        )),
        "{lines:?}"
    );

    assert!(pods.get_opt("old-agent").await.unwrap().is_none());
    let new_ds = sets.get("hwameistor-node").await.unwrap();
    assert_ne!(new_ds.uid(), old_ds.uid());
    assert_eq!(
        new_ds.spec.unwrap().selector.match_labels.unwrap(),
        BTreeMap::from([
            ("app".to_string(), "hwameistor-node".to_string()),
            ("generation".to_string(), "2".to_string())
        ])
    );
    assert_eq!(
        drivers
            .get(&driver_name)
            .await
            .unwrap()
            .spec
            .attach_required,
        Some(true)
    );
    assert_eq!(
        classes.get(&class_name).await.unwrap().parameters,
        Some(BTreeMap::from([(
            "poolClass".to_string(),
            "SSD".to_string()
        )]))
    );
    // Applying the same version again changes nothing.
    let again = install::upgrade(
        &env.cluster,
        full_bundle_with(&fixture),
        &env.install_opts(false),
        &Progress::quiet(),
    )
    .await
    .expect("re-upgrade");
    assert_eq!(
        again.summary(),
        format!("upgrade: 0 created, 0 configured, {} unchanged", total())
    );
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "needs a cluster without the HwameiStor CRDs; on a shared cluster other tests install them"
)]
async fn upgrade_of_a_cluster_without_hwameistor_says_to_install() {
    let env = Env::start_without_crds().await;
    let e = install::upgrade(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(false),
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
    let _embedded = EMBEDDED.lock().await;
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
    // Every object, and the extender's generated serving certificate.
    assert_eq!(docs.len(), embedded.objects.len() + 1);
    assert!(docs
        .iter()
        .any(|d| d["kind"] == "Secret"
            && d["metadata"]["name"] == "hwameistor-scheduler-extender-tls"));
    assert_eq!(
        docs.iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .count(),
        crds()
    );
    assert!(
        docs.iter()
            .filter(|d| d["kind"] == "Namespace")
            .all(|d| d["metadata"]["name"] == env.ns.as_str()),
        "the namespace is customized"
    );
    // Also as one JSON List.
    let (code, out) = env.cli(&["install", "--dry-run", "-o", "json"]).await;
    assert_eq!(code, Ok(0));
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(embedded.objects.len() + 1)
    );

    // A server-side dry run validates and reports, and creates nothing either.
    let before = embedded_prestate(&env).await;
    let (code, out) = env.cli(&["install", "--dry-run"]).await;
    assert_eq!(code, Ok(0));
    assert!(out.lines().next().unwrap().starts_with("KIND"), "{out}");
    let rows = cells(&out);
    assert_eq!(rows.len(), before.len() + 1, "{out}");
    for (row, (key, existed)) in rows[1..].iter().zip(&before) {
        assert_eq!(row[0], key.kind, "{out}");
        assert_eq!(row[2], key.name, "{out}");
        let want = match (key.kind.as_str(), existed) {
            ("CustomResourceDefinition", _) => "unchanged",
            (_, false) => "created",
            // Left by another run on a shared cluster: whatever it takes, not a creation.
            (_, true) => row[3].as_str(),
        };
        assert_eq!(row[3], want, "{out}");
        assert_ne!((row[3].as_str(), *existed), ("created", true), "{out}");
    }
    let after = embedded_prestate(&env).await;
    assert_eq!(after, before, "a dry run creates nothing");
    assert!(Api::<Namespace>::all(env.client())
        .get_opt(&env.ns)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn server_side_dry_run_of_the_full_bundle_reports_creations_without_creating() {
    let env = Env::start().await;
    let opts = InstallOptions {
        dry_run: true,
        ..env.install_opts(true)
    };
    let report = install::install(&env.cluster, env.full_bundle(), &opts, &Progress::quiet())
        .await
        .expect("dry run");
    assert_eq!(report.objects.len(), crds() + FIXTURE_KINDS.len());
    for o in &report.objects {
        let want = if o.key.kind == "CustomResourceDefinition" {
            ApplyAction::Unchanged
        } else {
            ApplyAction::Created
        };
        assert_eq!(o.action, want, "{o:?}");
    }
    assert!(Api::<Namespace>::all(env.client())
        .get_opt(&env.ns)
        .await
        .unwrap()
        .is_none());
    assert!(Api::<CSIDriver>::all(env.client())
        .get_opt(&format!("lvm-{}.hwameistor.io", env.id))
        .await
        .unwrap()
        .is_none());
}

fn uninstall_opts(env: &Env, force: bool, crds: bool, c: Confirmation) -> UninstallOptions {
    UninstallOptions {
        customization: Customization {
            namespace: env.ns.clone(),
            ..Default::default()
        },
        force_with_volumes: force,
        delete_crds: crds,
        dry_run: false,
        confirmation: c,
    }
}

/// LocalDisks of this test's fixture nodes.
async fn my_disks(env: &Env) -> Vec<LocalDisk> {
    let fx = env.fx();
    Api::<LocalDisk>::all(env.client())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.spec.node_name == fx.node_a || d.spec.node_name == fx.node_b)
        .collect()
}

#[tokio::test]
async fn uninstall_protects_volumes_asks_and_keeps_crds_unless_told() {
    let env = Env::start().await;
    install::install(
        &env.cluster,
        env.full_bundle(),
        &env.install_opts(false),
        &Progress::quiet(),
    )
    .await
    .expect("install");
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let e = uninstall::uninstall(
        &env.cluster,
        env.full_bundle(),
        &uninstall_opts(&env, false, false, Confirmation::AssumeYes),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    // The refusal counts every LocalVolume of the cluster (other tests' too on a shared one).
    match &e {
        AdminError::VolumesExist { names } => assert!(names.contains(&fx.volume), "{names:?}"),
        other => panic!("expected VolumesExist, got {other}"),
    }
    assert!(
        e.to_string().starts_with("refusing to uninstall: ")
            && e.to_string().ends_with("delete their PVCs first, or pass --force-with-volumes to leave them without a controller"),
        "{e}"
    );
    // Forced, but nobody at a terminal to confirm: refused, naming the flag.
    let e = uninstall::uninstall(
        &env.cluster,
        env.full_bundle(),
        &uninstall_opts(&env, true, false, Confirmation::Refuse),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AdminError::ConfirmationRequired { .. }), "{e}");
    assert!(e.to_string().ends_with("pass --yes to proceed"));

    let report = uninstall::uninstall(
        &env.cluster,
        env.full_bundle(),
        &uninstall_opts(&env, true, false, Confirmation::Answer(true)),
        &Progress::quiet(),
    )
    .await
    .expect("uninstall");
    assert_eq!(report.objects[0].key.kind, "StorageClass");
    assert!(report
        .objects
        .iter()
        .filter(|o| o.key.kind != "CustomResourceDefinition")
        .all(|o| o.result == DeleteResult::Deleted));
    assert!(report
        .objects
        .iter()
        .filter(|o| o.key.kind == "CustomResourceDefinition")
        .all(|o| o.result == DeleteResult::Kept));
    assert!(report.notes[0].starts_with("Pools and data on the nodes were not touched"));
    assert!(Api::<DaemonSet>::namespaced(env.client(), &env.ns)
        .get_opt("hwameistor-node")
        .await
        .unwrap()
        .is_none());
    // Records survive: the CRDs were kept.
    assert_eq!(my_disks(&env).await.len(), 4);

    // --delete-crds also asks; declined, nothing is deleted.
    let e = uninstall::uninstall(
        &env.cluster,
        env.full_bundle(),
        &uninstall_opts(&env, true, true, Confirmation::Answer(false)),
        &Progress::quiet(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AdminError::NotConfirmed { .. }), "{e}");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    for name in hwameistor_api::crds::all()
        .into_iter()
        .filter_map(|c| c.metadata.name)
    {
        assert!(crds.get_opt(&name).await.unwrap().is_some(), "{name} kept");
    }
    assert_eq!(my_disks(&env).await.len(), 4);
}

#[tokio::test]
async fn uninstall_with_delete_crds_removes_them_last() {
    // The CRDs of this test's bundle are a test CRD of its own: deleting the HwameiStor
    // CRDs would delete every other test's records on a shared cluster.
    let env = Env::start().await;
    let group = format!("{}.test.hwameistor.io", env.id);
    let crd_name = format!("widgets.{group}");
    env.cleanup.object(format!(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}"
    ));
    let crd = format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {crd_name}}}
spec:
  group: {group}
  names: {{kind: Widget, plural: widgets}}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"#
    );
    let fixture = deploy_fixture(&env.id);
    let bundle = || {
        Bundle::parse([
            ("crds/widgets.yaml", crd.as_str()),
            ("deploy/fixture.yaml", fixture.as_str()),
        ])
        .unwrap()
    };
    install::install(
        &env.cluster,
        bundle(),
        &env.install_opts(false),
        &Progress::quiet(),
    )
    .await
    .expect("install");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    assert!(crds.get_opt(&crd_name).await.unwrap().is_some());

    // Forced: on a shared cluster other tests' LocalVolumes may exist.
    let report = uninstall::uninstall(
        &env.cluster,
        bundle(),
        &uninstall_opts(&env, true, true, Confirmation::AssumeYes),
        &Progress::quiet(),
    )
    .await
    .expect("uninstall");
    let last = report.objects.last().unwrap();
    assert_eq!(
        (last.key.kind.as_str(), last.key.name.as_str(), last.result),
        (
            "CustomResourceDefinition",
            crd_name.as_str(),
            DeleteResult::Deleted
        )
    );
    assert_eq!(report.objects.len(), 1 + FIXTURE_KINDS.len());
    eventually("the CRD gone", || async {
        crds.get_opt(&crd_name).await.unwrap().is_none()
    })
    .await;
    assert!(
        crds.get_opt("localdisks.hwameistor.io")
            .await
            .unwrap()
            .is_some(),
        "CRDs not in the bundle are untouched"
    );
}

#[tokio::test]
async fn lists_show_disks_pools_nodes_and_volumes() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let (a, b) = (fx.node_a.as_str(), fx.node_b.as_str());

    let list = disks::list_disks(&env.cluster, Some(a)).await.unwrap();
    let names: Vec<&str> = list.items.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [fx.disk(a, "sdb"), fx.disk(a, "sdc"), fx.disk(a, "sdd")]
    );
    assert_eq!(
        list.items[2].reason.as_deref(),
        Some("has a filesystem (xfs)")
    );
    let (code, out) = env.cli(&["disk", "list", "--node", a]).await;
    assert_eq!(code, Ok(0));
    let rows = cells(&out);
    assert_eq!(
        rows[0],
        ["NODE", "NAME", "DEVICE", "TYPE", "CAPACITY", "STATE", "PHASE", "OWNER", "REASON"]
    );
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(
        rows[3],
        [
            a,
            &fx.disk(a, "sdd"),
            "/dev/sdd",
            "HDD",
            "100Gi",
            "Active",
            "Unavailable",
            "-",
            "has",
            "a",
            "filesystem",
            "(xfs)"
        ]
    );
    let (_, json) = env.cli(&["disk", "list", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&json).unwrap();
    let mine = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["node"] == a || d["node"] == b)
        .count();
    assert_eq!(mine, 4, "{json}");

    let p = pools::list_pools(&env.cluster, None).await.unwrap();
    let mine: Vec<&str> = p
        .items
        .iter()
        .filter(|r| r.node == a || r.node == b)
        .map(|r| r.node.as_str())
        .collect();
    assert_eq!(mine, [a, b]);
    let (code, out) = env
        .cli(&["pool", "list", "--node", b, "--no-headers"])
        .await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        cells(&out),
        [[b, "HDD", "100Gi", "10Gi", "90Gi", "10%", "1", "1"]]
    );

    let (code, out) = env.cli(&["node", "list"]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        cells(&out)[0],
        ["NAME", "STATE", "POOLS", "(FREE/TOTAL)", "VOLUMES", "DISKS"]
    );
    assert_eq!(row(&out, a), [a, "Ready", "HDD:180Gi/200Gi", "1", "3"]);
    assert_eq!(row(&out, b), [b, "Ready", "HDD:90Gi/100Gi", "1", "1"]);
    let (code, out) = env.cli(&["node", "get", a]).await;
    assert_eq!(code, Ok(0));
    assert!(
        out.contains("\nPools:\n") && out.contains("\nDisks:\n"),
        "{out}"
    );

    let v = volumes::list_volumes(&env.cluster).await.unwrap();
    let mine = v
        .items
        .iter()
        .find(|r| r.name == fx.volume)
        .expect("the volume is listed");
    assert_eq!(mine.ready_replicas(), 2);
    let (code, out) = env.cli(&["volume", "list"]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(
        row(&out, &fx.volume),
        [
            fx.volume.as_str(),
            "LVM",
            "LocalStorage_PoolHDD",
            "10Gi",
            "2/2",
            &format!("{a}:Ready,{b}:Ready"),
            "Ready",
            "-",
            a,
            &fx.pvc(),
            "-"
        ]
    );
    // By PVC as well as by name.
    let (code, out) = env.cli(&["volume", "get", &fx.pvc(), "-o", "yaml"]).await;
    assert_eq!(code, Ok(0));
    assert!(
        out.starts_with(&format!("volume:\n  name: {}\n", fx.volume)),
        "{out}"
    );

    // A raw-disk volume is listed beside it (KIND Disk) and shown by name or by its PVC.
    let ldvs: Api<hwameistor_api::LocalDiskVolume> = Api::all(env.client());
    let disk_vol = format!("{}-disk", fx.volume);
    let mut d = hwameistor_api::LocalDiskVolume::new(
        &disk_vol,
        hwameistor_api::LocalDiskVolumeSpec {
            node_name: a.to_string(),
            disk_type: hwameistor_api::DiskType::Hdd,
            required_capacity_bytes: 1 << 30,
            max_capacity_bytes: None,
            pvc_namespace: Some("kafka".into()),
            pvc_name: Some(disk_vol.clone()),
            wipe: hwameistor_api::WipePolicy::Signatures,
        },
    );
    d = ldvs.create(&PostParams::default(), &d).await.expect("ldv");
    d.status = Some(hwameistor_api::LocalDiskVolumeStatus {
        state: Some(hwameistor_api::DiskVolumeState::Ready),
        local_disk_name: Some(fx.disk(a, "sdd")),
        device_path: Some("/dev/disk/by-id/wwn-0x1".into()),
        capacity_bytes: Some(2 << 30),
        ..Default::default()
    });
    ldvs.replace_status(&disk_vol, &PostParams::default(), &d)
        .await
        .expect("ldv status");
    let (code, out) = env.cli(&["volume", "list"]).await;
    assert_eq!(code, Ok(0));
    let r = row(&out, &disk_vol);
    assert_eq!(r[1..4], ["Disk", "LocalDisk_PoolHDD", "1Gi"], "{out}");
    assert_eq!(r[5], format!("{a}:Ready"), "{out}");
    for key in [disk_vol.clone(), format!("kafka/{disk_vol}")] {
        let (code, out) = env.cli(&["volume", "get", &key]).await;
        assert_eq!(code, Ok(0), "{out}");
        assert!(out.contains("/dev/disk/by-id/wwn-0x1"), "{out}");
    }
    let (code, _) = env.cli(&["volume", "get", "no-such-volume"]).await;
    assert!(
        code.as_ref().is_err_and(|e| e.contains("no-such-volume")),
        "{code:?}"
    );
    ldvs.delete(&disk_vol, &Default::default())
        .await
        .expect("delete ldv");
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "needs a cluster without the HwameiStor CRDs; on a shared cluster other tests install them"
)]
async fn reads_of_a_cluster_without_hwameistor_say_to_install() {
    let env = Env::start_without_crds().await;
    let not_installed =
        "HwameiStor is not installed in this cluster: run `kubectl hwameistor install`";
    for args in [
        &["disk", "list"][..],
        &["volume", "get", "pvc-x"],
        &["node", "list"],
        &["pool", "list"],
    ] {
        let (code, _) = env.cli(args).await;
        assert_eq!(code, Err(not_installed.into()), "{args:?}");
    }
    // diagnose reports it as an error finding, exit 1.
    let (code, out) = env.cli(&["diagnose", "-o", "json"]).await;
    assert_eq!(code, Ok(1));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "crds" && f["severity"] == "error"));
}

#[tokio::test]
async fn errors_name_what_exists() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let (a, b) = (fx.node_a.as_str(), fx.node_b.as_str());
    let x = env.name("x");

    // Unknown names: the error lists what exists (everything of the cluster, so on a shared
    // one the typed error is checked for this test's names, the message for its form).
    match disks::list_disks(&env.cluster, Some(&x)).await {
        Err(AdminError::UnknownNode { name, known }) => {
            assert_eq!(name, x);
            assert!(
                known.contains(&a.to_string()) && known.contains(&b.to_string()),
                "{known:?}"
            );
        }
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    let node_prefix = format!("node {x:?} not found; known nodes: ");
    for args in [
        &["disk", "list", "--node", x.as_str()][..],
        &["disk", "claim", x.as_str(), "--yes"],
    ] {
        let (code, _) = env.cli(args).await;
        let e = code.unwrap_err();
        assert!(e.starts_with(&node_prefix), "{e}");
    }
    let missing_volume = env.name("pvc-x");
    match volumes::get_volume(&env.cluster, &missing_volume).await {
        Err(AdminError::UnknownVolume { known, .. }) => {
            assert!(known.contains(&fx.volume), "{known:?}")
        }
        other => panic!("expected UnknownVolume, got {:?}", other.map(|_| ())),
    }
    let (code, _) = env.cli(&["volume", "get", &missing_volume]).await;
    let e = code.unwrap_err();
    assert!(
        e.starts_with(&format!(
            "volume {missing_volume:?} not found; known volumes: "
        )),
        "{e}"
    );
    let nope = env.name("nope");
    match disks::set_reserved(&env.cluster, std::slice::from_ref(&nope), true, true).await {
        Err(AdminError::UnknownDisk { known, node, .. }) => {
            assert_eq!(node, None);
            assert!(known.contains(&fx.disk(a, "sdb")), "{known:?}");
        }
        other => panic!("expected UnknownDisk, got {:?}", other.map(|_| ())),
    }
    let (code, _) = env.cli(&["disk", "reserve", &nope]).await;
    let e = code.unwrap_err();
    assert!(
        e.starts_with(&format!("disk {nope:?} not found; known disks: ")),
        "{e}"
    );
    // On one node, the known disks are that node's: exactly this test's.
    let (code, _) = env
        .cli(&["disk", "claim", a, "--disk", &fx.disk(b, "sdb"), "--yes"])
        .await;
    assert_eq!(
        code,
        Err(format!(
            "disk {:?} not found on node {a:?}; known disks: {}, {}, {}",
            fx.disk(b, "sdb"),
            fx.disk(a, "sdb"),
            fx.disk(a, "sdc"),
            fx.disk(a, "sdd")
        ))
    );
    // A size that does not parse: parse_size's own message.
    let (code, _) = env.cli(&["volume", "expand", &fx.volume, "ten"]).await;
    let e = code.unwrap_err();
    assert!(
        e.contains("invalid size: size \"ten\" is not a number with an optional unit"),
        "{e}"
    );
    let (code, _) = env.cli(&["volume", "expand", &fx.volume, "5Gi"]).await;
    assert_eq!(
        code,
        Err(format!(
            "refusing to shrink volume {:?} from 10Gi to 5Gi: volumes can only grow",
            fx.volume
        ))
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
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let a = fx.node_a.as_str();
    let req = ClaimRequest {
        node: a.into(),
        min_size_bytes: Some(200 * GI),
        ..Default::default()
    };
    let e = claims::plan(&env.cluster, &req).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no disk of node {a:?} can be claimed:\n  \
             - {}: capacity 100Gi is below the minimum 200Gi\n  \
             - {}: capacity 50Gi is below the minimum 200Gi\n  \
             - {}: has a filesystem (xfs)",
            fx.disk(a, "sdb"),
            fx.disk(a, "sdc"),
            fx.disk(a, "sdd")
        )
    );
    let req = ClaimRequest {
        node: a.into(),
        disk_type: Some(DiskType::Ssd),
        ..Default::default()
    };
    let plan = claims::plan(&env.cluster, &req).await.unwrap();
    assert_eq!(plan.spec.description.local_disk_names, [fx.disk(a, "sdc")]);
    assert_eq!(
        plan.disks[0].reason.as_deref(),
        Some("type HDD, claim wants SSD")
    );
    assert_eq!(plan.total_bytes, 50 * GI);
    assert_eq!(plan.pools[0].pool, PoolClass::Ssd.pool_name());
    // Named disks are all-or-nothing, like the agent.
    let req = ClaimRequest {
        node: a.into(),
        disks: vec![fx.disk(a, "sdb"), fx.disk(a, "sdd")],
        ..Default::default()
    };
    let e = claims::plan(&env.cluster, &req)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "(a claim binds all of them or none):\n  - {}: has a filesystem (xfs)",
            fx.disk(a, "sdd")
        )),
        "{e}"
    );
}

/// The LocalDiskClaims of one node.
async fn claims_of(env: &Env, node: &str) -> Vec<LocalDiskClaim> {
    Api::<LocalDiskClaim>::all(env.client())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.node_name == node)
        .collect()
}

#[tokio::test]
async fn disk_claim_creates_the_claim_and_follows_it_until_bound() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let a = fx.node_a.as_str();
    let (sdb, sdc) = (fx.disk(a, "sdb"), fx.disk(a, "sdc"));
    // Dry run: the plan, validated by the server, nothing created.
    let claim = env.name("c1");
    let (code, out) = env
        .cli(&[
            "disk",
            "claim",
            a,
            "--type",
            "hdd",
            "--dry-run",
            "--name",
            &claim,
        ])
        .await;
    assert_eq!(code, Ok(0));
    assert!(
        out.starts_with(&format!(
            "Plan for claim {claim} on node {a}: 1 disk(s), +100Gi\n"
        )),
        "{out}"
    );
    assert_eq!(
        row(&out, &sdb),
        [
            sdb.as_str(),
            "/dev/sdb",
            "HDD",
            "100Gi",
            "LocalStorage_PoolHDD",
            "claim"
        ]
    );
    assert!(claims_of(&env, a).await.is_empty());

    let agent = spawn_agent_claim_double(env.client(), a);
    let (code, out) = env
        .cli(&[
            "disk",
            "claim",
            a,
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
    assert_eq!(result["boundDisks"], json!([sdb]));
    assert_eq!(
        result["pools"][0],
        json!({"pool": "LocalStorage_PoolHDD", "beforeBytes": 200 * GI, "addedBytes": 100 * GI, "afterBytes": 300 * GI})
    );
    let created = claims_of(&env, a).await;
    assert_eq!(created.len(), 1);
    assert!(created[0].name_any().starts_with(&format!("{a}-")));
    assert_eq!(
        created[0].spec.description.local_disk_names,
        std::slice::from_ref(&sdb)
    );

    // The bound disk can no longer be reserved; another can, and be released.
    let (code, _) = env.cli(&["disk", "reserve", &sdb]).await;
    assert_eq!(
        code,
        Err(format!(
            "disk {sdb:?} is Bound to claim {:?}; a disk in a pool or serving a volume cannot be reserved",
            created[0].name_any()
        ))
    );
    let (code, out) = env.cli(&["disk", "reserve", &sdc]).await;
    assert_eq!(code, Ok(0));
    assert_eq!(row(&out, &sdc), [sdc.as_str(), a, "true", "changed"]);
    let disks: Api<LocalDisk> = Api::all(env.client());
    assert!(disks.get(&sdc).await.unwrap().spec.reserved);
    let (code, _) = env.cli(&["disk", "release", &sdc]).await;
    assert_eq!(code, Ok(0));
    assert!(!disks.get(&sdc).await.unwrap().spec.reserved);
}

#[tokio::test]
async fn disk_claim_refuses_without_a_terminal_and_times_out_with_the_claim_message() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let b = fx.node_b.as_str();
    let plan = claims::plan(
        &env.cluster,
        &ClaimRequest {
            node: b.into(),
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
        format!("claim 1 disk(s) of node {b} (+100Gi); anything on them is lost needs confirmation, but stdin is not a terminal: pass --yes to proceed")
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
async fn volume_expand_creates_an_expansion_and_follows_it_until_allocated() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    let api: Api<LocalVolume> = Api::all(env.client());
    let expands: Api<LocalVolumeExpand> = Api::all(env.client());
    let mine = || async {
        expands
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.spec.volume_name == fx.volume)
            .collect::<Vec<_>>()
    };
    // Dry run changes nothing and creates nothing.
    let (code, out) = env
        .cli(&[
            "volume",
            "expand",
            &fx.volume,
            "20Gi",
            "--dry-run",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(code, Ok(0), "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["dryRun"], true);
    assert!(r["operation"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}-expand-", fx.volume)));
    assert_eq!(
        api.get(&fx.volume)
            .await
            .unwrap()
            .spec
            .required_capacity_bytes,
        10 * GI
    );
    assert!(mine().await.is_empty());

    // TEST DOUBLE for the controller and agents: an expansion of the volume grows it (the
    // controller's Grow step), the volume reports it allocated, and the expansion succeeds.
    let (client, name) = (env.client(), fx.volume.clone());
    let double = tokio::spawn(async move {
        let api: Api<LocalVolume> = Api::all(client.clone());
        let expands: Api<LocalVolumeExpand> = Api::all(client);
        loop {
            for e in expands
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                if e.spec.volume_name != name || e.status.as_ref().and_then(|s| s.phase).is_some() {
                    continue;
                }
                let want = e.spec.required_capacity_bytes;
                let spec = json!({"spec": {"requiredCapacityBytes": want}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
                    .await;
                let status = json!({"status": {"allocatedCapacityBytes": want, "state": VolumeState::Ready}});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                let done = json!({"status": {"phase": "Succeeded", "step": "WaitForReplicas",
                    "originalCapacityBytes": 10 * GI, "allocatedCapacityBytes": want,
                    "message": "grown to 20Gi"}});
                let _ = expands
                    .patch_status(&e.name_any(), &PatchParams::default(), &Patch::Merge(&done))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (code, out) = env
        .cli(&[
            "volume",
            "expand",
            &fx.volume,
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
    assert_eq!(r["phase"], "Succeeded");
    let created = mine().await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].spec.required_capacity_bytes, 20 * GI);
    assert_eq!(r["operation"], created[0].name_any());
    // Asking for the size it has now changes nothing and creates nothing more.
    let (code, out) = env.cli(&["volume", "expand", &fx.volume, "20Gi"]).await;
    assert_eq!(code, Ok(0));
    assert!(
        out.contains("already requires 20Gi; nothing to change"),
        "{out}"
    );
    assert_eq!(mine().await.len(), 1);
}

/// A healthy installation as diagnose sees it: node agents ready on both nodes (a
/// DaemonSet status written by hand), a fresh controller lease, the CSI driver registered
/// on every node.
async fn make_healthy(env: &Env, fx: &Fixture) {
    let c = env.client();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "hwameistor-node", "namespace": env.ns},
        "spec": {"selector": {"matchLabels": {"app": "n"}}, "template": {"metadata": {"labels": {"app": "n"}},
                 "spec": {"containers": [{"name": "a", "image": "x"}]}}}
    }))
    .unwrap();
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": env.ns}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(c.clone(), &env.ns)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    let status = json!({"status": {"desiredNumberScheduled": 2, "numberReady": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0}});
    Api::<DaemonSet>::namespaced(c.clone(), &env.ns)
        .patch_status(
            "hwameistor-node",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    let now = jiff::Timestamp::now().to_string();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "hwameistor-controller", "namespace": env.ns},
        "spec": {"holderIdentity": "controller-0", "leaseDurationSeconds": 15, "renewTime": now}
    }))
    .unwrap();
    Api::<Lease>::namespaced(c.clone(), &env.ns)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    for name in ["lvm.hwameistor.io", "disk.hwameistor.io"] {
        let driver =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {}})).unwrap();
        Api::<CSIDriver>::all(c.clone())
            .create(&PostParams::default(), &driver)
            .await
            .unwrap();
    }
    for n in [&fx.node_a, &fx.node_b] {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        Api::<Node>::all(c.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        let csi: CSINode = serde_json::from_value(json!({"metadata": {"name": n},
            "spec": {"drivers": [{"name": "lvm.hwameistor.io", "nodeID": n},
                                 {"name": "disk.hwameistor.io", "nodeID": n}]}}))
        .unwrap();
        Api::<CSINode>::all(c.clone())
            .create(&PostParams::default(), &csi)
            .await
            .unwrap();
    }
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "writes DaemonSet status (kube-controller-manager overwrites it), creates Nodes and the fixed-name CSIDriver, and needs HwameiStor's only objects to be this test's"
)]
async fn diagnose_finds_problems_and_sets_the_exit_code() {
    let env = Env::start().await;
    let fx = env.fx();
    populate(&env.client(), &fx).await;
    make_healthy(&env, &fx).await;
    let (code, out) = env.cli(&["diagnose"]).await;
    assert_eq!(code, Ok(0), "{out}");
    assert!(out.lines().skip(1).all(|l| l.starts_with("ok ")), "{out}");

    // A nearly full pool is a warning: exit 0, but 1 with --strict.
    let node_c = env.name("node-c");
    create_with_status(
        &env.client(),
        storage_node(
            &node_c,
            NodeState::Ready,
            &[(PoolClass::Hdd, 100 * GI, 95 * GI, 3)],
        ),
    )
    .await;
    let csi: CSINode = serde_json::from_value(json!({"metadata": {"name": node_c},
        "spec": {"drivers": [{"name": "lvm.hwameistor.io", "nodeID": node_c},
                             {"name": "disk.hwameistor.io", "nodeID": node_c}]}}))
    .unwrap();
    Api::<CSINode>::all(env.client())
        .create(&PostParams::default(), &csi)
        .await
        .unwrap();
    let (code, out) = env.cli(&["diagnose"]).await;
    assert_eq!(code, Ok(0), "{out}");
    let warning = row(&out, "warning");
    assert_eq!(
        &warning[..6],
        ["warning", "pools", "pool", "HDD", "on", "node"]
    );
    assert_eq!(warning[6], node_c, "{out}");
    let (code, _) = env.cli(&["diagnose", "--strict"]).await;
    assert_eq!(code, Ok(1));

    // A stale lease, a NotReady replica, a missing bound disk and a failed claim: errors.
    let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600)).to_string();
    let patch = json!({"spec": {"renewTime": old}});
    Api::<Lease>::namespaced(env.client(), &env.ns)
        .patch(
            "hwameistor-controller",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    create_with_status(
        &env.client(),
        replica(&env.name("pvc-2"), &fx.node_a, GI, ReplicaState::NotReady),
    )
    .await;
    let mut gone = disk(
        &fx.disk(&fx.node_b, "sdc"),
        &fx.node_b,
        DiskType::Hdd,
        GI,
        DiskPhase::Bound,
    );
    gone.spec.claim_ref = Some(hwameistor_api::ObjectRef {
        name: "old".into(),
        uid: String::new(),
    });
    if let Some(st) = gone.status.as_mut() {
        st.state = Some(hwameistor_api::DiskPresence::Inactive);
    }
    create_with_status(&env.client(), gone).await;
    let mut claim = LocalDiskClaim::new(
        &env.name("stuck"),
        hwameistor_api::LocalDiskClaimSpec {
            node_name: fx.node_a.clone(),
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
