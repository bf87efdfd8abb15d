//! CreateVolume-to-Ready overhead: the CSI controller service, the LocalVolume reconciler
//! and the project's in-process API server, with a fake node agent that marks replicas
//! Ready at once (so the figures are the control path only, no LVM).
//!
//!     cargo run --release -p hwameistor-controller --example bench_create [volumes]

#[path = "../tests/common/mod.rs"]
mod common;

use hwameistor_csi::controller::{ControllerService, Timeouts};
use hwameistor_csi::csi::controller_server::Controller;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, MountVolume,
};
use hwameistor_csi::csi::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, VolumeCapability,
};
use std::time::{Duration, Instant};
use tonic::Request;

fn request(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: common::GI,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: String::new(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            })),
        }],
        ..Default::default()
    }
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    println!(
        "{what}: n={} p50={:.1}ms p99={:.1}ms mean={:.1}ms max={:.1}ms",
        d.len(),
        hwameistor_sandbox::bench::percentile(&d, 0.50).as_secs_f64() * 1e3,
        hwameistor_sandbox::bench::percentile(&d, 0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        d.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let cluster = common::start().await;
    for node in ["n1", "n2", "n3"] {
        common::add_node(&cluster.client, node, 1 << 40, 1 << 40).await;
    }
    let t = Duration::from_secs(30);
    let csi = ControllerService::new(
        cluster.client.clone(),
        Timeouts {
            create: t,
            delete: t,
            expand: t,
        },
    );

    // Baseline: one API round trip (a GET) and one watch event (a create seen by a watch).
    let nodes: kube::Api<hwameistor_api::LocalStorageNode> = kube::Api::all(cluster.client.clone());
    let mut get = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        nodes.get("n1").await.expect("get");
        get.push(t.elapsed());
    }
    report("baseline GET round trip", get);
    let mut seen = Vec::with_capacity(n);
    for i in 0..n {
        let api = nodes.clone();
        let waiter = tokio::spawn(async move {
            let want = format!("{i}");
            kube::runtime::wait::await_condition(
                api,
                "n1",
                move |o: Option<&hwameistor_api::LocalStorageNode>| {
                    o.and_then(|n| n.metadata.annotations.as_ref())
                        .and_then(|a| a.get("bench"))
                        .is_some_and(|v| *v == want)
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let patch =
            serde_json::json!({ "metadata": { "annotations": { "bench": format!("{i}") } } });
        nodes
            .patch(
                "n1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("patch");
        waiter.await.expect("join").expect("watch");
        seen.push(t.elapsed());
    }
    report("baseline write -> seen by a watch", seen);

    let mut create = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        csi.create_volume(Request::new(request(&format!("seq-{i:03}"))))
            .await
            .expect("create");
        create.push(started.elapsed());
    }
    report("sequential CreateVolume -> Ready", create);

    let mut delete = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: format!("seq-{i:03}"),
            ..Default::default()
        }))
        .await
        .expect("delete");
        delete.push(started.elapsed());
    }
    report("sequential DeleteVolume -> gone", delete);

    let started = Instant::now();
    let calls = (0..n).map(|i| {
        let csi = &csi;
        async move {
            let t = Instant::now();
            csi.create_volume(Request::new(request(&format!("par-{i:03}"))))
                .await
                .expect("create");
            t.elapsed()
        }
    });
    let burst = futures::future::join_all(calls).await;
    let wall = started.elapsed();
    report(&format!("{n} concurrent CreateVolume -> Ready"), burst);
    println!(
        "burst wall time {:.1}ms ({:.0} volumes/s)",
        wall.as_secs_f64() * 1e3,
        n as f64 / wall.as_secs_f64()
    );
}
