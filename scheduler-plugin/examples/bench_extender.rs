//! A measurement, not a test: `cargo run --release -p hwameistor-scheduler-plugin --example
//! bench_extender`.
//!
//! 1. Caches with 5,000 storage nodes and 100,000 placed volumes (each with its replica,
//!    claim and PersistentVolume), and 20,000 free disks (4 per node): the process's memory
//!    before and after, and the time to build the capacity index from them.
//! 2. Filter + prioritize of pods with 3 new claims each over all 5,000 nodes (names only,
//!    as a `nodeCacheCapable` extender is called), through the HTTP endpoint on loopback:
//!    latency p50/p99 (the index is not rebuilt meanwhile: no watch event arrives); then
//!    pods of 2 new pool claims and 1 new whole-disk claim the same way.
//! 3. The 1,000-pod burst against the in-process API server (real watches): 2 claims each,
//!    room for 600; pods scheduled one after another as kube-scheduler does (filter,
//!    prioritize, then the volume binder's hand-over of the claims to the node): time until
//!    every pod is placed or refused.

use futures::{stream, StreamExt};
use hwameistor_api::*;
use hwameistor_sandbox::bench::{percentile, rss_mib};
use hwameistor_scheduler_plugin::cache::{spawn_watches, Caches};
use hwameistor_scheduler_plugin::claims::SELECTED_NODE;
use hwameistor_scheduler_plugin::extender::{Extender, Settings};
use hwameistor_scheduler_plugin::protocol::{ExtenderArgs, ExtenderFilterResult, HostPriority};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, Namespace, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../tests/common/mod.rs"]
mod common;

const GI: i64 = 1 << 30;
const NODES: usize = 5_000;
const VOLUMES: usize = 100_000;

/// One HTTP/1.1 POST on a kept-alive connection; returns the body.
async fn post(
    conn: &mut tokio::net::TcpStream,
    path: &str,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = conn.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf[end + 4..end + 4 + len].to_vec());
            }
        }
    }
}

/// A claim of `bytes` on `class`, bound to `volume` when given.
fn pvc(
    ns: &str,
    name: &str,
    class: &str,
    bytes: i64,
    volume: Option<&str>,
) -> PersistentVolumeClaim {
    let mut c = common::claim(ns, name, class, bytes);
    if let (Some(v), Some(spec)) = (volume, c.spec.as_mut()) {
        spec.volume_name = Some(v.to_string());
    }
    c
}

fn pod(ns: &str, name: &str, claims: &[String]) -> Pod {
    let refs: Vec<&str> = claims.iter().map(String::as_str).collect();
    common::pod(ns, name, &refs)
}

/// Filter over `names`, then prioritize over the nodes that passed, as kube-scheduler
/// does for one pod: the nodes passed, the filter's time and the whole time.
async fn schedule(
    conn: &mut tokio::net::TcpStream,
    p: &Pod,
    names: &[String],
) -> anyhow::Result<(Vec<String>, Duration, Duration)> {
    let args = |nodes: Vec<String>| {
        serde_json::to_vec(&ExtenderArgs {
            pod: Some(p.clone()),
            nodenames: Some(nodes),
            nodes: None,
        })
    };
    let body = args(names.to_vec())?;
    let t = Instant::now();
    let f: ExtenderFilterResult = serde_json::from_slice(&post(conn, "/filter", &body).await?)?;
    let tf = t.elapsed();
    let passed = f.nodenames.unwrap_or_default();
    let body = args(passed.clone())?;
    let pr: Vec<HostPriority> = serde_json::from_slice(&post(conn, "/prioritize", &body).await?)?;
    let total = t.elapsed();
    anyhow::ensure!(pr.len() == passed.len(), "a score per node");
    Ok((passed, tf, total))
}

async fn big_caches() -> anyhow::Result<()> {
    let before = rss_mib("self");
    let caches = Caches::new();
    let t = Instant::now();
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:05}")).collect();
    for n in &names {
        caches.apply(common::storage_node_sized(n, 4 << 40, 2 << 40));
    }
    caches.apply(common::storage_class("local", 1));
    for i in 0..VOLUMES {
        let vol = format!("pvc-vol-{i:06}");
        let node = &names[i % NODES];
        let bytes = (1 + (i % 8) as i64) * GI;
        let mut v = LocalVolume::new(
            &vol,
            LocalVolumeSpec {
                pool_name: PoolClass::Hdd.pool_name().into(),
                volume_kind: Default::default(),
                required_capacity_bytes: bytes,
                replica_number: 1,
                convertible: false,
                accessibility: Accessibility {
                    nodes: vec![node.clone()],
                },
                pvc_namespace: Some("apps".into()),
                pvc_name: Some(format!("data-{i}")),
                fs_type: Some("ext4".into()),
                config: Some(VolumeConfig {
                    version: 1,
                    required_capacity_bytes: bytes,
                    resource_id: -1,
                    replicas: vec![ReplicaAssignment {
                        id: 1,
                        hostname: node.clone(),
                        ..Default::default()
                    }],
                    initial: false,
                }),
                split_brain_resolution: None,
                operation: None,
                thin: false,
                data_source: None,
            },
        );
        v.status = Some(LocalVolumeStatus {
            state: Some(VolumeState::Ready),
            published_node: Some(node.clone()),
            ..Default::default()
        });
        caches.apply(v);
        let mut r = LocalVolumeReplica::new(
            &format!("{vol}-{node}"),
            LocalVolumeReplicaSpec {
                volume_name: vol.clone(),
                pool_name: PoolClass::Hdd.pool_name().into(),
                node_name: node.clone(),
                volume_kind: Default::default(),
                required_capacity_bytes: bytes,
                replication: None,
                copy_from: None,
                thin: false,
            },
        );
        r.status = Some(LocalVolumeReplicaStatus {
            state: Some(ReplicaState::Ready),
            allocated_capacity_bytes: Some(bytes),
            device_path: Some(format!("/dev/LocalStorage_PoolHDD/{vol}")),
            ..Default::default()
        });
        caches.apply(r);
        caches.apply(pvc(
            "apps",
            &format!("data-{i}"),
            "local",
            bytes,
            Some(&vol),
        ));
        caches.apply(PersistentVolume {
            metadata: ObjectMeta {
                name: Some(vol.clone()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                csi: Some(CSIPersistentVolumeSource {
                    driver: CSI_DRIVER_NAME.into(),
                    volume_handle: vol.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // New claims for the pods measured below: 3 per pod.
    const PODS: usize = 2_000;
    for i in 0..PODS * 3 {
        caches.apply(pvc(
            "bench",
            &format!("new-{i}"),
            "local",
            (1 + (i % 4) as i64) * GI,
            None,
        ));
    }
    // Every node's four free SSD disks (1 to 4 TiB), and the mixed pods' claims: two on the
    // pool, one for a whole disk.
    for (k, n) in names.iter().enumerate() {
        for d in 0..4 {
            caches.apply(common::free_disk(
                &format!("{n}-d{d}"),
                n,
                DiskType::Ssd,
                (1 + ((k + d) % 4) as i64) << 40,
            ));
        }
    }
    caches.apply(common::disk_class("disk-ssd", "SSD"));
    const MIXED: usize = 1_000;
    for i in 0..MIXED {
        for k in 0..2 {
            caches.apply(pvc("bench", &format!("mix-{i}-{k}"), "local", GI, None));
        }
        caches.apply(pvc(
            "bench",
            &format!("disk-{i}"),
            "disk-ssd",
            (1 + (i % 4) as i64) << 40,
            None,
        ));
    }
    let filled = t.elapsed();
    let after = rss_mib("self");
    let ext = Arc::new(Extender::new(caches.clone(), Settings::default(), None));
    ext.set_ready();
    // The first call builds the index.
    let t = Instant::now();
    let _ = ext.reservations();
    let build = t.elapsed();
    let with_index = rss_mib("self");
    println!(
        "caches: {NODES} nodes, {VOLUMES} volumes (+ replicas, claims, PVs), {} disks and {} new claims filled in {:.1}s",
        NODES * 4,
        PODS * 3 + MIXED * 3,
        filled.as_secs_f64()
    );
    println!(
        "memory: {before:.0} MiB before, {after:.0} MiB with the caches (+{:.0} MiB), {with_index:.0} MiB with the capacity index",
        after - before
    );
    println!(
        "capacity index built from the caches in {:.1} ms",
        build.as_secs_f64() * 1e3
    );

    let (addr, _stop) = common::serve_local(ext.clone(), None, 64 << 20).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    let (mut filter, mut prio, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut given = 0;
    for p in 0..PODS {
        let claims: Vec<String> = (0..3).map(|k| format!("new-{}", 3 * p + k)).collect();
        let (passed, tf, total) =
            schedule(&mut conn, &pod("bench", &format!("p{p}"), &claims), &names).await?;
        if passed.len() == 1 {
            given += 1;
        }
        filter.push(tf);
        prio.push(total - tf);
        both.push(total);
    }
    // The worst case of prioritize: every node of the cluster as candidates (what the
    // scheduler sends only when no filter narrowed them).
    let mut wide = Vec::new();
    for p in 0..200 {
        let claims: Vec<String> = (0..3).map(|k| format!("new-{}", 3 * p + k)).collect();
        let body = serde_json::to_vec(&ExtenderArgs {
            pod: Some(pod("bench", &format!("p{p}"), &claims)),
            nodenames: Some(names.clone()),
            nodes: None,
        })?;
        let t = Instant::now();
        let pr: Vec<HostPriority> =
            serde_json::from_slice(&post(&mut conn, "/prioritize", &body).await?)?;
        wide.push(t.elapsed());
        anyhow::ensure!(pr.len() == NODES, "a score per node");
    }
    wide.sort();
    for d in [&mut filter, &mut prio, &mut both] {
        d.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{PODS} pods of 3 new claims over {NODES} nodes (HTTP on loopback, {given} placed): filter p50 {:.2} ms p99 {:.2} ms; prioritize p50 {:.2} ms p99 {:.2} ms; filter+prioritize p50 {:.2} ms p99 {:.2} ms",
        ms(percentile(&filter, 0.5)),
        ms(percentile(&filter, 0.99)),
        ms(percentile(&prio, 0.5)),
        ms(percentile(&prio, 0.99)),
        ms(percentile(&both, 0.5)),
        ms(percentile(&both, 0.99)),
    );
    println!(
        "prioritize over all {NODES} nodes (worst case, 200 pods): p50 {:.2} ms p99 {:.2} ms",
        ms(percentile(&wide, 0.5)),
        ms(percentile(&wide, 0.99))
    );
    // Pods with a whole-disk claim beside two pool claims.
    let mut mixed = Vec::new();
    let mut placed = 0;
    for p in 0..MIXED {
        let claims = vec![
            format!("mix-{p}-0"),
            format!("mix-{p}-1"),
            format!("disk-{p}"),
        ];
        let (passed, _, total) =
            schedule(&mut conn, &pod("bench", &format!("m{p}"), &claims), &names).await?;
        mixed.push(total);
        if passed.len() == 1 {
            placed += 1;
        }
    }
    mixed.sort();
    println!(
        "{MIXED} pods of 2 new pool claims + 1 new whole-disk claim over {NODES} nodes ({placed} placed): filter+prioritize p50 {:.2} ms p99 {:.2} ms",
        ms(percentile(&mixed, 0.5)),
        ms(percentile(&mixed, 0.99)),
    );
    println!("memory after the requests: {:.0} MiB", rss_mib("self"));
    Ok(())
}

async fn burst() -> anyhow::Result<()> {
    let server = hwameistor_testapi::TestCluster::start().await?;
    let client = server.client().await?;
    hwameistor_sandbox::install_crds(&client).await?;
    let ns = "burst";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &common::storage_class("local", 1))
        .await?;
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let lsns: Api<LocalStorageNode> = Api::all(client.clone());
    for n in &names {
        let node = common::storage_node_sized(n, 1 << 40, 120 * GI);
        lsns.create(&PostParams::default(), &node).await?;
        lsns.patch_status(
            n,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": node.status})),
        )
        .await?;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    stream::iter(0..2000)
        .for_each_concurrent(16, |i| {
            let pvcs = pvcs.clone();
            async move {
                let mut c = pvc(ns, &format!("c{i}"), "local", GI, None);
                c.metadata.uid = None;
                let _ = pvcs.create(&PostParams::default(), &c).await;
            }
        })
        .await;
    let caches = Caches::new();
    spawn_watches(client.clone(), caches.clone());
    caches.wait_ready().await;
    let ext = Arc::new(Extender::new(caches, Settings::default(), None));
    ext.set_ready();
    // Wait until the watch delivered every claim.
    let probe = pod(ns, "probe", &["c1999".to_string()]);
    loop {
        let s = ext.prioritize(&ExtenderArgs {
            pod: Some(probe.clone()),
            nodenames: Some(vec![names[0].clone()]),
            nodes: None,
        })?;
        if s[0].score > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (addr, _stop) = common::serve_local(ext.clone(), None, 64 << 20).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    let t = Instant::now();
    let (mut placed, mut refused) = (0, 0);
    for p in 0..1000 {
        let claims = vec![format!("c{}", 2 * p), format!("c{}", 2 * p + 1)];
        let body = serde_json::to_vec(&ExtenderArgs {
            pod: Some(pod(ns, &format!("p{p}"), &claims)),
            nodenames: Some(names.clone()),
            nodes: None,
        })?;
        let f: ExtenderFilterResult =
            serde_json::from_slice(&post(&mut conn, "/filter", &body).await?)?;
        match f.nodenames.unwrap_or_default().into_iter().next() {
            Some(node) => {
                let _: Vec<HostPriority> =
                    serde_json::from_slice(&post(&mut conn, "/prioritize", &body).await?)?;
                // The volume binder hands the claims to the node.
                for c in &claims {
                    pvcs.patch(
                        c,
                        &PatchParams::default(),
                        &Patch::Merge(
                            serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
                        ),
                    )
                    .await?;
                }
                placed += 1;
            }
            None => refused += 1,
        }
    }
    println!(
        "burst: 1,000 pods of 2 claims, room for 600, one after another as kube-scheduler does: {placed} placed, {refused} refused with reasons, all decided in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    big_caches().await?;
    burst().await?;
    Ok(())
}
