//! `bench-scale`: does a node agent's footprint follow its node or the cluster?
//!
//! Fills the in-process test API server with the objects of many other nodes (their
//! LocalStorageNode, disks, a claim and replicas), starts the real agent binary for one more
//! node (no disks: an empty sysfs; LVM is the host's, with no volume groups), and measures,
//! once it has synced and then while the other nodes' objects churn:
//! - the agent's resident memory;
//! - the bytes the API server sent it (a counting TCP proxy sits between them);
//! - the watch events the API server delivered (the server counts them; only the agent
//!   watches).
//!
//! Runs for each `--nodes` value (default 50 and 5000) against a fresh server, so the
//! figures can be compared: an agent that watches only its node's objects stays flat.

use clap::Parser;
use futures::{stream, StreamExt, TryStreamExt};
use hwameistor_api::*;
use hwameistor_sandbox::{eventually, install_crds, workspace_binary, Error};
use hwameistor_testapi::{ServerOptions, TestApiServer};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "bench-scale",
    about = "Agent memory and watch traffic vs cluster size"
)]
struct Args {
    /// Cluster sizes (other nodes) to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50,5000")]
    nodes: Vec<usize>,
    /// Replicas per other node.
    #[arg(long, default_value_t = 4)]
    replicas_per_node: usize,
    /// Objects of other nodes changed during the churn phase.
    #[arg(long, default_value_t = 2000)]
    churn: usize,
}

/// Bytes sent by the server to the agent, through the proxy.
#[derive(Default)]
struct Traffic {
    to_agent: AtomicU64,
}

/// A TCP proxy from `listener` to `upstream` counting the bytes going back to the client.
async fn proxy(listener: TcpListener, upstream: std::net::SocketAddr, traffic: Arc<Traffic>) {
    while let Ok((mut client, _)) = listener.accept().await {
        let traffic = traffic.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let up = tokio::io::copy(&mut cr, &mut sw);
            let down = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = sr.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                    traffic.to_agent.fetch_add(n as u64, Ordering::Relaxed);
                    cw.write_all(&buf[..n]).await?;
                }
            };
            let _ = tokio::join!(up, down);
        });
    }
}

fn labels(node: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(LABEL_NODE.to_string(), node.to_string())]))
}

/// The objects of one other node.
async fn populate_node(client: Client, node: String, replicas: usize) -> Result<(), Error> {
    let mut lsn = LocalStorageNode::new(
        &node,
        LocalStorageNodeSpec {
            hostname: node.clone(),
            storage_ip: None,
        },
    );
    lsn.metadata.labels = labels(&node);
    Api::<LocalStorageNode>::all(client.clone())
        .create(&PostParams::default(), &lsn)
        .await?;
    for i in 0..2 {
        let mut d = LocalDisk::new(
            &format!("ld-{node}-{i}"),
            LocalDiskSpec {
                node_name: node.clone(),
                reserved: false,
                claim_ref: None,
                volume_ref: None,
            },
        );
        d.metadata.labels = labels(&node);
        Api::<LocalDisk>::all(client.clone())
            .create(&PostParams::default(), &d)
            .await?;
    }
    Api::<LocalDiskClaim>::all(client.clone())
        .create(
            &PostParams::default(),
            &LocalDiskClaim::new(
                &format!("claim-{node}"),
                LocalDiskClaimSpec {
                    node_name: node.clone(),
                    description: DiskSelector::default(),
                },
            ),
        )
        .await?;
    for i in 0..replicas {
        let volume = format!("pvc-{node}-{i}");
        let mut r = LocalVolumeReplica::new(
            &replica::replica_name(&volume, &node),
            LocalVolumeReplicaSpec {
                volume_name: volume.clone(),
                pool_name: PoolClass::Hdd.pool_name().into(),
                node_name: node.clone(),
                volume_kind: VolumeKind::Lvm,
                required_capacity_bytes: 1 << 30,
                replication: None,
                copy_from: None,
                thin: false,
            },
        );
        r.metadata.labels = Some(BTreeMap::from([
            (LABEL_NODE.to_string(), node.clone()),
            (LABEL_VOLUME.to_string(), volume),
        ]));
        Api::<LocalVolumeReplica>::all(client.clone())
            .create(&PostParams::default(), &r)
            .await?;
    }
    Ok(())
}

struct Figures {
    nodes: usize,
    objects: usize,
    populate_s: f64,
    sync_s: f64,
    rss_synced: f64,
    rss_after_churn: f64,
    bytes_sync: u64,
    bytes_churn: u64,
    events_sync: u64,
    events_churn: u64,
}

async fn measure(args: &Args, nodes: usize) -> anyhow::Result<Figures> {
    let server = TestApiServer::start(ServerOptions::default()).await?;
    let client = server.client().await?;
    install_crds(&client).await?;
    let t0 = Instant::now();
    let others: Vec<String> = (0..nodes).map(|i| format!("other-{i:05}")).collect();
    stream::iter(others.iter().cloned())
        .map(|n| populate_node(client.clone(), n, args.replicas_per_node))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    let populate_s = t0.elapsed().as_secs_f64();
    let objects = nodes * (4 + args.replicas_per_node);

    let traffic = Arc::new(Traffic::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_port = listener.local_addr()?.port();
    tokio::spawn(proxy(listener, server.addr(), traffic.clone()));
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let yaml = server.kubeconfig_yaml("127.0.0.1").replace(
        &format!(":{}", server.addr().port()),
        &format!(":{proxy_port}"),
    );
    std::fs::write(&kubeconfig, yaml)?;
    // An empty sysfs: this node has no disks, so what the agent holds is what it watches.
    std::fs::create_dir_all(dir.path().join("sys/block"))?;
    let agent_bin = workspace_binary("hwameistor-agent", "HWAMEISTOR_AGENT_BIN")?;
    let node = "bench-scale-node";
    let events_before = server.watch_events_sent();
    let t1 = Instant::now();
    let mut agent = tokio::process::Command::new(&agent_bin)
        .arg("--node-name")
        .arg(node)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--sys-root")
        .arg(dir.path().join("sys"))
        .args(["--resync", "3600s"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = agent.id().unwrap_or(0);
    let lsns: Api<LocalStorageNode> = Api::all(client.clone());
    eventually(
        Duration::from_secs(120),
        "the agent's LocalStorageNode",
        || async { Ok(lsns.get_opt(node).await?.filter(|n| n.status.is_some())) },
    )
    .await?;
    let sync_s = t1.elapsed().as_secs_f64();
    // Let the initial lists and watches settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bytes_sync = traffic.to_agent.load(Ordering::Relaxed);
    let events_sync = server.watch_events_sent() - events_before;
    let rss_synced = hwameistor_sandbox::bench::rss_mib(&pid.to_string());

    // Churn: other nodes' replicas, claims and disks change (a third each); none of it is
    // this agent's business.
    stream::iter(0..args.churn)
        .map(|i| {
            let client = client.clone();
            let n = others[i % others.len()].clone();
            let replicas_per_node = args.replicas_per_node;
            async move {
                let pp = PatchParams::default();
                match i % 3 {
                    0 => {
                        let name = replica::replica_name(
                            &format!("pvc-{n}-{}", i % replicas_per_node),
                            &n,
                        );
                        let patch = serde_json::json!({ "status": { "state": "Ready", "allocatedCapacityBytes": 1_i64 << 30, "message": format!("churn {i}") } });
                        Api::<LocalVolumeReplica>::all(client)
                            .patch_status(&name, &pp, &Patch::Merge(&patch))
                            .await
                            .map(drop)
                    }
                    1 => {
                        let patch = serde_json::json!({ "status": { "phase": "Pending", "message": format!("churn {i}") } });
                        Api::<LocalDiskClaim>::all(client)
                            .patch_status(&format!("claim-{n}"), &pp, &Patch::Merge(&patch))
                            .await
                            .map(drop)
                    }
                    _ => {
                        let patch = serde_json::json!({ "status": { "state": "Active", "phase": "Available", "reason": format!("churn {i}") } });
                        Api::<LocalDisk>::all(client)
                            .patch_status(&format!("ld-{n}-{}", i % 2), &pp, &Patch::Merge(&patch))
                            .await
                            .map(drop)
                    }
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bytes_churn = traffic.to_agent.load(Ordering::Relaxed) - bytes_sync;
    let events_churn = server.watch_events_sent() - events_before - events_sync;
    let rss_after_churn = hwameistor_sandbox::bench::rss_mib(&pid.to_string());
    agent.kill().await.ok();
    server.shutdown().await;
    Ok(Figures {
        nodes,
        objects,
        populate_s,
        sync_s,
        rss_synced,
        rss_after_churn,
        bytes_sync,
        bytes_churn,
        events_sync,
        events_churn,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut all = Vec::new();
    for &n in &args.nodes {
        eprintln!("measuring with {n} other nodes...");
        all.push(measure(&args, n).await?);
    }
    println!("\n== one agent (no disks) while the cluster holds other nodes' objects");
    println!(
        "{:>7} {:>8} {:>10} {:>8} {:>10} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "nodes",
        "objects",
        "populate",
        "sync",
        "rss",
        "rss-churn",
        "bytes-sync",
        "bytes-churn",
        "ev-sync",
        "ev-churn"
    );
    for f in &all {
        println!(
            "{:>7} {:>8} {:>9.1}s {:>7.2}s {:>7.1}MiB {:>7.1}MiB {:>12} {:>12} {:>10} {:>10}",
            f.nodes,
            f.objects,
            f.populate_s,
            f.sync_s,
            f.rss_synced,
            f.rss_after_churn,
            f.bytes_sync,
            f.bytes_churn,
            f.events_sync,
            f.events_churn
        );
    }
    println!(
        "(churn: {} status changes of other nodes' replicas, claims and disks; events: watch events the API server delivered to the agent)",
        args.churn
    );
    Ok(())
}
