//! The extender against an API server: real watches fill its caches; 1,000 pods with two
//! new claims each arrive at once at nodes whose pools fit 600 of them: exactly 600 get a
//! node, no node is promised more than it has, the others are told why on every node. Then
//! the volume binder's hand-over (the claims' selected-node annotation) is what a restarted
//! extender rebuilds its held room from: a pod arriving after the restart finds no room
//! either.
//!
//! The same for raw-disk claims: pods whose claims want whole disks are never promised a
//! disk twice, nor one too small, and a restarted extender holds the handed-over disks
//! again.
//!
//! Runs against a real cluster with HWAMEISTOR_TEST_KUBECONFIG: every object has a name of
//! its own and goes at the end (no pod is created: the filter reads the pod from the
//! request, as kube-scheduler sends it).

mod common;

use common::*;
use futures::{stream, StreamExt};
use hwameistor_api::{DiskType, LocalDisk, LocalStorageNode};
use hwameistor_core::scheduling::Hold;
use hwameistor_scheduler_plugin::cache::{spawn_watches, Caches};
use hwameistor_scheduler_plugin::claims::SELECTED_NODE;
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use hwameistor_scheduler_plugin::protocol::ExtenderArgs;
use hwameistor_testapi::{unique_name, TestCluster};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 10;
const PODS: usize = 1000;
/// Each pod: two claims of 1 GiB; each node: room for 60 pods.
const FREE_PER_NODE: i64 = 120 * GI;

async fn extender(client: &kube::Client) -> Arc<Extender> {
    let caches = Caches::new();
    spawn_watches(client.clone(), caches.clone());
    tokio::time::timeout(Duration::from_secs(60), caches.wait_ready())
        .await
        .expect("caches synced");
    let ext = Arc::new(Extender::new(caches, Settings::default(), None));
    ext.set_ready();
    ext
}

/// The cluster with HwameiStor's CRDs, a namespace of the test's own (prefix `ns`) and
/// StorageClass `class`, both removed by the returned cleanup.
async fn setup(
    ns: &str,
    class: StorageClass,
) -> (
    TestCluster,
    kube::Client,
    hwameistor_testapi::Cleanup,
    String,
) {
    let cluster = TestCluster::start().await.expect("cluster");
    let client = cluster.client().await.expect("client");
    hwameistor_sandbox::install_crds(&client)
        .await
        .expect("CRDs");
    let cleanup = cluster.cleanup();
    let ns = unique_name(ns);
    own_namespace(&client, &cleanup, &ns).await;
    let name = class.metadata.name.clone().expect("class name");
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("class");
    cleanup.object(format!("/apis/storage.k8s.io/v1/storageclasses/{name}"));
    (cluster, client, cleanup, ns)
}

/// Creates storage node `n` with its status (as its agent would report it), removed by
/// `cleanup`.
async fn create_node(
    client: &kube::Client,
    cleanup: &hwameistor_testapi::Cleanup,
    n: LocalStorageNode,
) {
    let lsns: Api<LocalStorageNode> = Api::all(client.clone());
    let name = n.metadata.name.clone().expect("name");
    lsns.create(&PostParams::default(), &n).await.expect("node");
    cleanup.object(format!(
        "/apis/hwameistor.io/v1alpha1/localstoragenodes/{name}"
    ));
    lsns.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": n.status })),
    )
    .await
    .expect("node status");
}

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pods_is_never_promised_room_that_is_not_there() {
    let class = unique_name("burst-local");
    let (_cluster, client, cleanup, ns) = setup("burst", storage_class(&class, 1)).await;
    let node_names: Vec<String> = (0..NODES)
        .map(|i| unique_name(&format!("burst-n{i}")))
        .collect();
    for name in &node_names {
        create_node(&client, &cleanup, storage_node(name, FREE_PER_NODE)).await;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..PODS * 2)
        .for_each_concurrent(16, |i| {
            let pvcs = pvcs.clone();
            let class = class.clone();
            let ns = ns.clone();
            async move {
                let mut c = claim(&ns, &format!("c{i}"), &class, GI);
                c.metadata.uid = None;
                pvcs.create(&PostParams::default(), &c)
                    .await
                    .expect("claim");
            }
        })
        .await;
    eprintln!("{} claims created in {:?}", PODS * 2, started.elapsed());

    let ext = extender(&client).await;
    // The caches hold every claim once the last one scores (a missing claim scores 0).
    // Prioritize holds nothing, unlike filter.
    let probe = pod(&ns, "probe", &[&format!("c{}", PODS * 2 - 1)]);
    eventually("the caches hold every claim", || async {
        let scores = ext
            .prioritize(&ExtenderArgs {
                pod: Some(probe.clone()),
                nodenames: Some(vec![node_names[0].clone()]),
                nodes: None,
            })
            .expect("prioritize");
        (scores[0].score > 0).then_some(())
    })
    .await;

    // The burst: every pod filtered at once over all the nodes.
    let started = Instant::now();
    let results: Vec<(usize, Option<String>, BTreeMap<String, String>)> = stream::iter(0..PODS)
        .map(|i| {
            let ext = ext.clone();
            let p = pod(
                &ns,
                &format!("p{i}"),
                &[&format!("c{}", 2 * i), &format!("c{}", 2 * i + 1)],
            );
            let nodes = node_names.clone();
            tokio::spawn(async move {
                let r = ext.filter(&ExtenderArgs {
                    pod: Some(p),
                    nodenames: Some(nodes),
                    nodes: None,
                });
                let given = r.nodenames.unwrap_or_default();
                assert!(
                    given.len() <= 1,
                    "one node per pod with new volumes: {given:?}"
                );
                (i, given.into_iter().next(), r.failed_and_unresolvable_nodes)
            })
        })
        .buffer_unordered(64)
        .map(|r| r.expect("task"))
        .collect()
        .await;
    eprintln!("{PODS} pods filtered in {:?}", started.elapsed());
    let mut per_node: BTreeMap<String, i64> = BTreeMap::new();
    let mut refused = 0;
    for (i, node, failed) in &results {
        match node {
            Some(n) => *per_node.entry(n.clone()).or_default() += 2 * GI,
            None => {
                refused += 1;
                assert_eq!(failed.len(), NODES, "pod {i}: every node says why");
                assert!(
                    failed
                        .values()
                        .all(|w| w.contains("the pod's new volumes there need 2Gi")),
                    "pod {i}: {failed:?}"
                );
            }
        }
    }
    let given: usize = results.iter().filter(|r| r.1.is_some()).count();
    assert_eq!(given, 600, "exactly the pods that fit");
    assert_eq!(refused, 400);
    for (n, used) in &per_node {
        assert!(
            *used <= FREE_PER_NODE,
            "{n} promised {used} of {FREE_PER_NODE}"
        );
    }

    // The volume binder hands each placed pod's claims to its node.
    let started = Instant::now();
    stream::iter(
        results
            .iter()
            .filter_map(|(i, n, _)| n.clone().map(|n| (*i, n))),
    )
    .for_each_concurrent(16, |(i, node)| {
        let pvcs = pvcs.clone();
        async move {
            for c in [2 * i, 2 * i + 1] {
                pvcs.patch(
                    &format!("c{c}"),
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
                    ),
                )
                .await
                .expect("annotate");
            }
        }
    })
    .await;
    eprintln!(
        "1200 claims handed to their nodes in {:?}",
        started.elapsed()
    );

    // A restarted extender holds the same room, from the claims alone.
    drop(ext);
    let again = extender(&client).await;
    let held = eventually("the handed-over claims held again", || async {
        let held: Vec<_> = again
            .reservations()
            .into_iter()
            .filter(|r| r.pvc.starts_with(&format!("{ns}/")))
            .collect();
        (held.len() == 1200).then_some(held)
    })
    .await;
    assert!(held.iter().all(|r| node_names.contains(&r.node)));
    let mut fresh = claim(&ns, "late-a", &class, GI);
    fresh.metadata.uid = None;
    pvcs.create(&PostParams::default(), &fresh)
        .await
        .expect("claim");
    let late = pod(&ns, "late", &["late-a"]);
    let r = eventually("the late claim seen", || async {
        let r = again.filter(&ExtenderArgs {
            pod: Some(late.clone()),
            nodenames: Some(node_names.clone()),
            nodes: None,
        });
        (!r.failed_and_unresolvable_nodes
            .values()
            .any(|w| w.contains("does not exist")))
        .then_some(r)
    })
    .await;
    assert_eq!(r.nodenames, Some(vec![]), "no room left anywhere: {r:?}");
}

const DISK_NODES: usize = 6;
const DISK_PODS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_disk_claims_never_promises_a_disk_twice() {
    let class = unique_name("dburst-ssd");
    let (_cluster, client, cleanup, ns) = setup("dburst", disk_class(&class, "SSD")).await;
    // Each node: SSD disks of 1, 2, 3 and 4 GiB, and an HDD disk of 8 GiB no claim fits.
    let node_names: Vec<String> = (0..DISK_NODES)
        .map(|i| unique_name(&format!("dburst-n{i}")))
        .collect();
    let disks: Api<LocalDisk> = Api::all(client.clone());
    let mut sizes: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for name in &node_names {
        create_node(&client, &cleanup, poolless_node(name)).await;
        for (k, (t, size)) in [
            (DiskType::Ssd, GI),
            (DiskType::Ssd, 2 * GI),
            (DiskType::Ssd, 3 * GI),
            (DiskType::Ssd, 4 * GI),
            (DiskType::Hdd, 8 * GI),
        ]
        .into_iter()
        .enumerate()
        {
            let d = free_disk(&format!("{name}-d{k}"), name, t, size);
            let dn = d.metadata.name.clone().expect("name");
            disks
                .create(&PostParams::default(), &d)
                .await
                .expect("disk");
            cleanup.object(format!("/apis/hwameistor.io/v1alpha1/localdisks/{dn}"));
            disks
                .patch_status(
                    &dn,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": d.status })),
                )
                .await
                .expect("disk status");
            if t == DiskType::Ssd {
                sizes.entry(name.clone()).or_default().push(size);
            }
        }
    }
    // Pod i: a claim of (i % 4 + 1) GiB, and every third pod one of 1 GiB more.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let mut pods = Vec::new();
    for i in 0..DISK_PODS {
        let mut names = vec![(format!("d{i}"), (i as i64 % 4 + 1) * GI)];
        if i % 3 == 0 {
            names.push((format!("e{i}"), GI));
        }
        for (c, bytes) in &names {
            let mut pvc = claim(&ns, c, &class, *bytes);
            pvc.metadata.uid = None;
            pvcs.create(&PostParams::default(), &pvc)
                .await
                .expect("claim");
        }
        let claim_names: Vec<&str> = names.iter().map(|(c, _)| c.as_str()).collect();
        pods.push(pod(&ns, &format!("p{i}"), &claim_names));
    }
    let ext = extender(&client).await;
    let last = pods.last().cloned().expect("pods");
    eventually("the caches hold every disk and claim", || async {
        let scores = ext
            .prioritize(&ExtenderArgs {
                pod: Some(last.clone()),
                nodenames: Some(node_names.clone()),
                nodes: None,
            })
            .expect("prioritize");
        (scores.iter().filter(|s| s.score > 0).count() == DISK_NODES).then_some(())
    })
    .await;

    let results: Vec<(Pod, Option<String>, BTreeMap<String, String>)> = stream::iter(pods)
        .map(|p| {
            let ext = ext.clone();
            let nodes = node_names.clone();
            tokio::spawn(async move {
                let r = ext.filter(&ExtenderArgs {
                    pod: Some(p.clone()),
                    nodenames: Some(nodes),
                    nodes: None,
                });
                let given = r.nodenames.unwrap_or_default();
                assert!(given.len() <= 1, "{given:?}");
                (p, given.into_iter().next(), r.failed_and_unresolvable_nodes)
            })
        })
        .buffer_unordered(16)
        .map(|r| r.expect("task"))
        .collect()
        .await;
    let held: Vec<_> = ext
        .reservations()
        .into_iter()
        .filter(|r| r.pvc.starts_with(&format!("{ns}/")))
        .collect();
    // Per node, the disks held fit its SSD disks one each, largest to largest.
    let mut needs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &held {
        let Hold::Disk {
            disk_type: DiskType::Ssd,
            need,
        } = r.hold
        else {
            panic!("not an SSD disk hold: {r:?}");
        };
        needs.entry(r.node.clone()).or_default().push(need.required);
    }
    for (node, mut wanted) in needs {
        let mut have = sizes[&node].clone();
        wanted.sort_unstable_by(|a, b| b.cmp(a));
        have.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            wanted.len() <= have.len() && wanted.iter().zip(&have).all(|(w, h)| w <= h),
            "{node} promised {wanted:?} of its disks {have:?}"
        );
    }
    let given = results.iter().filter(|r| r.1.is_some()).count();
    let claims_given: usize = results
        .iter()
        .filter(|r| r.1.is_some())
        .map(|r| hwameistor_core::pod::claim_names(&r.0).len())
        .sum();
    assert_eq!(held.len(), claims_given);
    eprintln!("{given} of {DISK_PODS} pods given a node, {claims_given} disks held");
    // 24 SSD disks: most of them promised, and the pods left out told why on every node.
    assert!(
        claims_given >= 18 && given < DISK_PODS,
        "given {given} pods"
    );
    for (p, node, failed) in &results {
        if node.is_none() {
            assert_eq!(
                failed.len(),
                DISK_NODES,
                "{:?}: {failed:?}",
                p.metadata.name
            );
            assert!(
                failed.values().all(|w| w.contains("SSD disk")),
                "{failed:?}"
            );
        }
    }

    // The volume binder hands the claims to their nodes; a restarted extender holds them
    // again from the claims alone.
    for (p, node, _) in &results {
        let Some(node) = node else { continue };
        for c in hwameistor_core::pod::claim_names(p) {
            pvcs.patch(
                &c,
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
                ),
            )
            .await
            .expect("annotate");
        }
    }
    drop(ext);
    let again = extender(&client).await;
    let rebuilt = eventually("the handed-over disk claims held again", || async {
        let held: Vec<_> = again
            .reservations()
            .into_iter()
            .filter(|r| r.pvc.starts_with(&format!("{ns}/")))
            .collect();
        (held.len() == claims_given).then_some(held)
    })
    .await;
    assert!(rebuilt
        .iter()
        .all(|r| node_names.contains(&r.node) && matches!(r.hold, Hold::Disk { .. })));
}
