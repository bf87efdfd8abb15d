//! Figures for the plugin (not a pass/fail test): start-up time of the binary, and the time
//! to render large lists from objects already in memory (no API server involved).
//!
//! `cargo bench -p kubectl-hwameistor --bench cli`

use hwameistor_api::{
    DiskPhase, DiskPresence, DiskType, LocalDisk, LocalDiskSpec, LocalDiskStatus, LocalVolume,
    LocalVolumeReplica, LocalVolumeReplicaStatus, LocalVolumeStatus, ReplicaState, VolumeState,
};
use kubectl_hwameistor::admin::disks::disk_list;
use kubectl_hwameistor::admin::volumes::volume_list;
use kubectl_hwameistor::output::{render, OutputFormat, OutputOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GI: i64 = 1 << 30;

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Stats { samples }
    }
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }
    fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
    fn line(&self, what: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{what:<44} n={:<3} min {:>8.2} ms   median {:>8.2} ms   mean {:>8.2} ms   p95 {:>8.2} ms",
            self.samples.len(),
            ms(self.samples[0]),
            ms(self.pct(0.5)),
            ms(self.mean()),
            ms(self.pct(0.95))
        )
    }
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Stats {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        std::hint::black_box(f());
        samples.push(start.elapsed());
    }
    Stats::of(samples)
}

fn volumes(n: usize) -> (Vec<LocalVolume>, Vec<LocalVolumeReplica>) {
    let mut vols = Vec::with_capacity(n);
    let mut reps = Vec::with_capacity(n * 2);
    for i in 0..n {
        let name = format!("pvc-{i:08x}-5a1e-4c1b-9f0e-{i:012x}");
        let nodes = [
            format!("node-{:04}", i % 1000),
            format!("node-{:04}", (i + 1) % 1000),
        ];
        let mut v: LocalVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolume", "metadata": {"name": name},
            "spec": {"poolName": "LocalStorage_PoolHDD", "requiredCapacityBytes": 10 * GI, "replicaNumber": 2,
                     "accessibility": {"nodes": nodes}, "pvcNamespace": "default", "pvcName": format!("data-{i}")}
        }))
        .expect("volume");
        v.status = Some(LocalVolumeStatus {
            state: Some(VolumeState::Ready),
            allocated_capacity_bytes: Some(10 * GI),
            published_node: Some(nodes[0].clone()),
            ..Default::default()
        });
        for node in &nodes {
            let mut r: LocalVolumeReplica = serde_json::from_value(serde_json::json!({
                "apiVersion": "hwameistor.io/v1alpha1", "kind": "LocalVolumeReplica", "metadata": {"name": format!("{name}-{node}")},
                "spec": {"volumeName": name, "poolName": "LocalStorage_PoolHDD", "nodeName": node, "requiredCapacityBytes": 10 * GI}
            }))
            .expect("replica");
            r.status = Some(LocalVolumeReplicaStatus {
                state: Some(ReplicaState::Ready),
                synced: None,
                ..Default::default()
            });
            reps.push(r);
        }
        vols.push(v);
    }
    (vols, reps)
}

fn disks(nodes: usize, per_node: usize) -> Vec<LocalDisk> {
    let mut out = Vec::with_capacity(nodes * per_node);
    for n in 0..nodes {
        for d in 0..per_node {
            let node = format!("node-{n:04}");
            let mut disk = LocalDisk::new(
                &format!("{node}-wwn-0x5000c500{n:04x}{d:04x}"),
                LocalDiskSpec {
                    node_name: node,
                    reserved: false,
                    claim_ref: None,
                    volume_ref: None,
                },
            );
            let available = d % 3 != 0;
            disk.status = Some(LocalDiskStatus {
                state: Some(DiskPresence::Active),
                phase: Some(if available {
                    DiskPhase::Available
                } else {
                    DiskPhase::Unavailable
                }),
                reason: (!available).then(|| "has a filesystem (xfs)".to_string()),
                device_path: Some(format!("/dev/sd{}", (b'b' + d as u8) as char)),
                dev_links: vec![format!("/dev/disk/by-id/wwn-0x5000c500{n:04x}{d:04x}")],
                disk_type: Some(if d % 2 == 0 {
                    DiskType::Hdd
                } else {
                    DiskType::Ssd
                }),
                capacity_bytes: Some((d as i64 + 1) * 500 * GI),
                serial: Some(format!("ZA{n:04}{d:02}")),
                model: Some("ST4000NM0035".into()),
                ..Default::default()
            });
            out.push(disk);
        }
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let spawns = if quick { 3 } else { 50 };
    let renders = if quick { 1 } else { 10 };
    println!(
        "kubectl-hwameistor figures ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );

    let bin = env!("CARGO_BIN_EXE_kubectl-hwameistor");
    let startup = time(spawns, || {
        let status = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .expect("spawn");
        assert!(status.success());
    });
    println!("{}", startup.line("start-up: kubectl-hwameistor --version"));

    let table = OutputOptions {
        format: OutputFormat::Table,
        no_headers: false,
    };
    let json = OutputOptions {
        format: OutputFormat::Json,
        no_headers: false,
    };

    let (vols, reps) = volumes(10_000);
    let list = volume_list(&vols, &reps);
    let out = render(&list, table).expect("render");
    println!(
        "volume list: 10,000 volumes, 20,000 replicas -> {} lines, {} KiB",
        out.lines().count(),
        out.len() / 1024
    );
    println!(
        "{}",
        time(renders, || volume_list(&vols, &reps)).line("  rows from objects")
    );
    println!("{}", time(renders, || render(&list, table)).line("  table"));
    println!("{}", time(renders, || render(&list, json)).line("  json"));
    println!(
        "{}",
        time(renders, || render(&volume_list(&vols, &reps), table))
            .line("  rows + table (what the command does)")
    );

    let ds = disks(1000, 12);
    let list = disk_list(&ds, None);
    let out = render(&list, table).expect("render");
    println!(
        "disk list: 1,000 nodes x 12 disks -> {} lines, {} KiB",
        out.lines().count(),
        out.len() / 1024
    );
    println!(
        "{}",
        time(renders, || disk_list(&ds, None)).line("  rows from objects")
    );
    println!("{}", time(renders, || render(&list, table)).line("  table"));
    println!(
        "{}",
        time(renders, || render(
            &list,
            OutputOptions {
                format: OutputFormat::Wide,
                no_headers: false
            }
        ))
        .line("  wide table")
    );
    println!("{}", time(renders, || render(&list, json)).line("  json"));
    println!(
        "{}",
        time(renders, || render(&disk_list(&ds, None), table))
            .line("  rows + table (what the command does)")
    );
}
