//! A node for the middle layer of tests: the agent's real scanner and reconcilers, on the
//! in-process test API server (or a real cluster), with a stateful fake LVM and a fake disk
//! list in place of the host. Seconds per test, no VM.
//!
//! The "host" (the [`FakeLvm`] and the disks) outlives agent processes: [`FakeNode::crash`]
//! drops a running agent at once, as a kill would, and [`FakeNode::start`] runs a fresh one
//! on the same host and API objects.
#![allow(dead_code)]

use async_trait::async_trait;
use hwameistor_agent::claim_controller;
use hwameistor_agent::context::{Context, Tuning};
use hwameistor_agent::crash::{CrashPoint, CrashPoints};
use hwameistor_agent::discovery::{DiscoveryError, DiskSource, ObservedDisk};
use hwameistor_agent::disk_volume_controller::{self, DiskVolumes};
use hwameistor_agent::ha::{self, Replication};
use hwameistor_agent::heartbeat;
use hwameistor_agent::replica_controller;
use hwameistor_agent::scanner;
use hwameistor_agent::snapshot_controller;
use hwameistor_api::*;
use hwameistor_testkit::{FakeDrbd, FakeDrbdNet, FakeLvm, FakeWipe};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub const MI: i64 = 1 << 20;
pub const GI: i64 = 1 << 30;
pub const HDD: &str = "LocalStorage_PoolHDD";
pub const SSD: &str = "LocalStorage_PoolSSD";
/// Longest any state in these tests may take to appear.
pub const WAIT: Duration = Duration::from_secs(20);

/// Short retries so error paths resolve in test time.
pub fn tuning() -> Tuning {
    Tuning {
        retry: Duration::from_millis(300),
        lvm_quiet: Duration::from_millis(200),
        scan_quiet: Duration::from_millis(50),
        thin: Default::default(),
    }
}

#[derive(Clone, Debug)]
struct Disk {
    dev: String,
    size: i64,
    rotational: bool,
}

/// The node's disks as discovery would see them; what a disk carries comes from the fake
/// LVM (a physical volume shows an LVM2_member signature, as a real probe would find).
pub struct FakeDisks {
    node: String,
    lvm: FakeLvm,
    disks: Mutex<Vec<Disk>>,
}

#[async_trait]
impl DiskSource for FakeDisks {
    async fn scan(&self) -> Result<Vec<ObservedDisk>, DiscoveryError> {
        let disks = self.disks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let kernel = d.dev.trim_start_matches("/dev/").to_string();
                ObservedDisk {
                    kernel_name: kernel.clone(),
                    device_path: d.dev.clone(),
                    major: 252,
                    minor: 16 * (i as u32 + 1),
                    size_bytes: d.size,
                    rotational: d.rotational,
                    nvme: false,
                    removable: false,
                    read_only: false,
                    serial: Some(format!("{}-{kernel}", self.node)),
                    wwn: None,
                    model: Some("fake".into()),
                    vendor: None,
                    dev_links: vec![format!("/dev/disk/by-id/virtio-{}-{kernel}", self.node)],
                    signature: self.lvm.signature(&d.dev),
                    partition_table: None,
                    partitions: vec![],
                    holders: vec![],
                    mount_points: vec![],
                }
            })
            .collect())
    }
}

struct Running {
    ctx: Arc<Context>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    crashes: Option<mpsc::UnboundedReceiver<CrashPoint>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct FakeNode {
    pub name: String,
    pub client: Client,
    pub lvm: FakeLvm,
    pub disks: Arc<FakeDisks>,
    /// The node's DRBD, for nodes that hold HA replicas.
    pub drbd: Option<FakeDrbd>,
    /// The node's replication address.
    pub storage_ip: Option<String>,
    /// Wipes of released raw-disk volumes' disks.
    pub wipe: FakeWipe,
    agent: Option<Running>,
}

/// Namespace of the agents' heartbeat Leases in these tests.
pub const LEASE_NAMESPACE: &str = "default";
/// How often a test agent renews its heartbeat, and for how long it declares it valid.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
pub const HEARTBEAT_VALID: Duration = Duration::from_secs(1);
/// The handler program name written into test resource files (the fake runs the test's
/// callback for it).
pub const HELPER: &str = "/usr/local/bin/hwameistor-drbd-helper";

/// A started node whose HDD pool is two disks (100 + 200 MiB of extents).
pub async fn node_with_pool(client: &kube::Client) -> FakeNode {
    let mut node = FakeNode::new(client);
    node.add_disk("/dev/vdb", 101 * MI, true);
    node.add_disk("/dev/vdc", 201 * MI, true);
    node.pool(HDD, &["/dev/vdb", "/dev/vdc"]).await;
    node.start();
    node.disk("/dev/vdb", DiskPhase::Bound).await;
    node
}

/// A random suffix, so tests on one shared cluster never meet each other's objects.
pub fn unique(prefix: &str) -> String {
    hwameistor_testapi::unique_name(prefix)
}

/// A test API server (or the real cluster) with the CRDs installed.
pub async fn cluster() -> (hwameistor_testapi::TestCluster, Client) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = hwameistor_testapi::TestCluster::start()
        .await
        .expect("test API server");
    let client = server.client().await.expect("client");
    hwameistor_sandbox::install_crds(&client)
        .await
        .expect("install CRDs");
    (server, client)
}

impl FakeNode {
    /// A node with a unique name and no disks.
    pub fn new(client: &Client) -> FakeNode {
        let name = unique("node");
        let lvm = FakeLvm::new();
        FakeNode {
            disks: Arc::new(FakeDisks {
                node: name.clone(),
                lvm: lvm.clone(),
                disks: Mutex::new(vec![]),
            }),
            name,
            client: client.clone(),
            lvm,
            drbd: None,
            storage_ip: None,
            wipe: FakeWipe::new(),
            agent: None,
        }
    }

    /// A node with DRBD (on `net`) and the replication address `ip`.
    pub fn with_drbd(client: &Client, net: &FakeDrbdNet, ip: &str) -> FakeNode {
        let mut n = FakeNode::new(client);
        let d = net.node(&n.name);
        net.attach_lvm(&n.name, &n.lvm);
        n.drbd = Some(d);
        n.storage_ip = Some(ip.to_string());
        n
    }

    /// Attaches a disk (hot-plug when the agent runs: call [`FakeNode::rescan`]).
    pub fn add_disk(&self, dev: &str, size: i64, rotational: bool) {
        self.lvm.add_device(dev, size);
        self.disks
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Disk {
                dev: dev.into(),
                size,
                rotational,
            });
    }

    /// Starts an agent with no crash point armed.
    pub fn start(&mut self) {
        self.start_with(CrashPoints::disarmed(), None);
    }

    /// Starts an agent that stops dead at `point`.
    pub fn start_crashing_at(&mut self, point: CrashPoint) {
        let (c, rx) = CrashPoints::for_test(point);
        self.start_with(c, Some(rx));
    }

    fn start_with(
        &mut self,
        crash: CrashPoints,
        crashes: Option<mpsc::UnboundedReceiver<CrashPoint>>,
    ) {
        assert!(
            self.agent.is_none(),
            "an agent already runs on {}",
            self.name
        );
        let replication = self
            .drbd
            .as_ref()
            .map(|d| Replication::new(Arc::new(d.clone()), Some(HELPER.into())));
        let ctx = Context::with_replication(
            self.client.clone(),
            self.name.clone(),
            Arc::new(self.lvm.clone()),
            self.disks.clone(),
            crash,
            tuning(),
            replication.clone(),
            self.storage_ip.clone(),
        );
        let mut tasks = vec![
            tokio::spawn(ctx.lvm.clone().run_refresher()),
            tokio::spawn(scanner::run(ctx.clone(), Duration::from_secs(60), None)),
            tokio::spawn(claim_controller::run(ctx.clone())),
            tokio::spawn(replica_controller::run(ctx.clone())),
            tokio::spawn(snapshot_controller::run(ctx.clone())),
            tokio::spawn(disk_volume_controller::run(Arc::new(DiskVolumes {
                ctx: ctx.clone(),
                wipe: Arc::new(self.wipe.clone()),
            }))),
        ];
        if let (Some(rep), Some(d)) = (replication, self.drbd.as_ref()) {
            tasks.push(tokio::spawn(
                rep.clone().run_monitor(Duration::from_millis(50)),
            ));
            tasks.push(tokio::spawn(heartbeat::run(
                self.client.clone(),
                LEASE_NAMESPACE.into(),
                self.name.clone(),
                HEARTBEAT,
                HEARTBEAT_VALID,
            )));
            // DRBD's handler program reaches this agent (and fails once it is gone).
            let (c, r) = (ctx.clone(), rep.clone());
            d.net().set_helper(&self.name, move |call| {
                let (c, r) = (c.clone(), r.clone());
                async move { ha::on_helper(&c, &r, &call.command, &call.resource).await }
            });
        }
        self.agent = Some(Running {
            ctx,
            tasks,
            crashes,
        });
    }

    pub fn ctx(&self) -> Arc<Context> {
        self.agent.as_ref().expect("agent running").ctx.clone()
    }

    /// Waits until the armed crash point is reached, then kills the agent there.
    pub async fn crash(&mut self) -> CrashPoint {
        let running = self.agent.as_mut().expect("agent running");
        let rx = running.crashes.as_mut().expect("a crash point is armed");
        let p = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("crash point reached in time")
            .expect("crash channel open");
        self.stop();
        p
    }

    /// Stops the agent (as a clean kill would).
    pub fn stop(&mut self) {
        self.agent = None;
        if let Some(d) = &self.drbd {
            d.net().clear_helper(&self.name);
        }
    }

    /// The running agent's replication side.
    pub fn replication(&self) -> Arc<Replication> {
        self.ctx().replication.clone().expect("a node with DRBD")
    }

    /// Asks the running agent to scan its disks now (what a uevent does).
    pub fn rescan(&self) {
        if let Some(a) = &self.agent {
            a.ctx.lvm.invalidate();
            a.ctx.rescan.notify_one();
        }
    }

    pub async fn disks(&self) -> Vec<LocalDisk> {
        Api::<LocalDisk>::all(self.client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.name)))
            .await
            .expect("list disks")
            .items
    }

    /// Waits for the LocalDisk of `dev` to be in `phase`.
    pub async fn disk(&self, dev: &str, phase: DiskPhase) -> LocalDisk {
        eventually(
            &format!("{dev} on {} to be {phase:?}", self.name),
            || async {
                self.disks().await.into_iter().find(|d| {
                    let st = d.status.as_ref();
                    st.and_then(|s| s.device_path.as_deref()) == Some(dev)
                        && st.and_then(|s| s.phase) == Some(phase)
                })
            },
        )
        .await
    }

    pub async fn claim(&self, prefix: &str, sel: DiskSelector) -> String {
        let name = unique(prefix);
        let c = LocalDiskClaim::new(
            &name,
            LocalDiskClaimSpec {
                node_name: self.name.clone(),
                description: sel,
            },
        );
        Api::<LocalDiskClaim>::all(self.client.clone())
            .create(&PostParams::default(), &c)
            .await
            .expect("create claim");
        name
    }

    pub async fn wait_claim(&self, name: &str, phase: ClaimPhase) -> LocalDiskClaim {
        let api = Api::<LocalDiskClaim>::all(self.client.clone());
        eventually(&format!("claim {name} to be {phase:?}"), || async {
            let c = api.get(name).await.ok()?;
            (c.status.as_ref().and_then(|s| s.phase) == Some(phase)).then_some(c)
        })
        .await
    }

    /// A replica as the controller would create it.
    pub async fn replica(&self, volume: &str, pool: &str, bytes: i64) -> String {
        self.make_replica(volume, pool, bytes, false).await
    }

    /// A replica of a thin volume (in the group's thin pool).
    pub async fn thin_replica(&self, volume: &str, pool: &str, bytes: i64) -> String {
        self.make_replica(volume, pool, bytes, true).await
    }

    async fn make_replica(&self, volume: &str, pool: &str, bytes: i64, thin: bool) -> String {
        let name = replica::replica_name(volume, &self.name);
        let mut r = LocalVolumeReplica::new(
            &name,
            LocalVolumeReplicaSpec {
                volume_name: volume.into(),
                pool_name: pool.into(),
                node_name: self.name.clone(),
                volume_kind: VolumeKind::Lvm,
                required_capacity_bytes: bytes,
                replication: None,
                copy_from: None,
                thin,
            },
        );
        r.metadata.labels = Some(BTreeMap::from([
            (LABEL_NODE.to_string(), self.name.clone()),
            (LABEL_VOLUME.to_string(), volume.to_string()),
        ]));
        Api::<LocalVolumeReplica>::all(self.client.clone())
            .create(&PostParams::default(), &r)
            .await
            .expect("create replica");
        name
    }

    pub async fn get_replica(&self, name: &str) -> Option<LocalVolumeReplica> {
        Api::<LocalVolumeReplica>::all(self.client.clone())
            .get_opt(name)
            .await
            .expect("get replica")
    }

    /// Waits until `check` holds for the replica.
    pub async fn wait_replica(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&LocalVolumeReplica) -> bool,
    ) -> LocalVolumeReplica {
        eventually(&format!("replica {name}: {what}"), || async {
            self.get_replica(name).await.filter(|r| check(r))
        })
        .await
    }

    pub async fn wait_ready(&self, name: &str, bytes: i64) -> LocalVolumeReplica {
        self.wait_replica(name, &format!("Ready with {bytes} bytes"), |r| {
            let st = r.status.clone().unwrap_or_default();
            st.state == Some(ReplicaState::Ready) && st.allocated_capacity_bytes == Some(bytes)
        })
        .await
    }

    pub async fn resize_replica(&self, name: &str, bytes: i64) {
        Api::<LocalVolumeReplica>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": { "requiredCapacityBytes": bytes } })),
            )
            .await
            .expect("resize replica");
    }

    pub async fn delete_replica(&self, name: &str) {
        Api::<LocalVolumeReplica>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete replica");
    }

    pub async fn wait_replica_gone(&self, name: &str) {
        eventually(&format!("replica {name} to be gone"), || async {
            self.get_replica(name).await.is_none().then_some(())
        })
        .await
    }

    /// Makes `devs` a pool of class `vg` on the fake host directly, as an earlier claim
    /// would have (for tests about volumes, not claims).
    pub async fn pool(&self, vg: &str, devs: &[&str]) {
        use hwameistor_hostexec::lvm::Lvm;
        let devs: Vec<String> = devs.iter().map(|d| d.to_string()).collect();
        for d in &devs {
            self.lvm.create_pv(d).await.expect("pvcreate");
        }
        self.lvm.create_vg(vg, &devs).await.expect("vgcreate");
    }

    pub async fn lsn(&self) -> Option<LocalStorageNode> {
        Api::<LocalStorageNode>::all(self.client.clone())
            .get_opt(&self.name)
            .await
            .expect("get node")
    }

    /// Removes what the test made in the API (best effort; on the in-process server the
    /// whole server goes away anyway).
    pub async fn cleanup(&mut self) {
        self.stop();
        let fields = format!("spec.nodeName={}", self.name);
        let lp = ListParams::default().fields(&fields);
        let strip = serde_json::json!({ "metadata": { "finalizers": null } });
        let replicas = Api::<LocalVolumeReplica>::all(self.client.clone());
        for r in replicas
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let n = r.metadata.name.clone().unwrap_or_default();
            let _ = replicas
                .patch(&n, &PatchParams::default(), &Patch::Merge(&strip))
                .await;
            let _ = replicas.delete(&n, &DeleteParams::default()).await;
        }
        let snapshots = Api::<LocalVolumeSnapshot>::all(self.client.clone());
        for sn in snapshots
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let n = sn.metadata.name.clone().unwrap_or_default();
            let _ = snapshots
                .patch(&n, &PatchParams::default(), &Patch::Merge(&strip))
                .await;
            let _ = snapshots.delete(&n, &DeleteParams::default()).await;
        }
        let claims = Api::<LocalDiskClaim>::all(self.client.clone());
        for c in claims.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            let _ = claims
                .delete(
                    &c.metadata.name.unwrap_or_default(),
                    &DeleteParams::default(),
                )
                .await;
        }
        let disks = Api::<LocalDisk>::all(self.client.clone());
        for d in disks.list(&lp).await.map(|l| l.items).unwrap_or_default() {
            let _ = disks
                .delete(
                    &d.metadata.name.unwrap_or_default(),
                    &DeleteParams::default(),
                )
                .await;
        }
        let _ = Api::<LocalStorageNode>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// Polls `check` (test assertions about eventual state only) until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
