//! HA volumes in the middle layer: two node agents (real reconcilers, fake LVM and a fake
//! DRBD that behaves like 8.4 in what the logic depends on) and the controller's volume
//! reconciler and failover loop, on the test API server (or a real cluster). Creation and
//! the initial sync, staging on the allowed node only, failover after the primary's node
//! is lost (and only after fencing), a partition with both nodes on the API, a split brain
//! kept until the operator resolves it, crashes of the agent at each HA step, and removal
//! without leftovers. Seconds per test, no VM.

mod fake_node;

use fake_node::*;
use hwameistor_agent::crash::CrashPoint;
use hwameistor_agent::ha;
use hwameistor_api::*;
use hwameistor_controller::failover::{self, FailoverConfig};
use hwameistor_controller::metrics::Metrics;
use hwameistor_controller::volume_reconciler::{self, Scope};
use hwameistor_core::placement::Policy;
use hwameistor_hostexec::drbd::Drbd;
use hwameistor_testkit::FakeDrbdNet;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCOPE_LABEL: &str = "hwameistor.io/test-scope";
const HA_POINTS: [CrashPoint; 3] = [
    CrashPoint::HaAfterMetadata,
    CrashPoint::HaAfterUp,
    CrashPoint::HaAfterForcedPrimary,
];
const TEARDOWN_POINTS: [CrashPoint; 2] = [CrashPoint::HaAfterDown, CrashPoint::HaAfterWipe];
/// Tested one each below.
const OTHER_POINTS: [CrashPoint; 2] = [CrashPoint::HaAfterFence, CrashPoint::HaAfterResize];

/// Two DRBD nodes with a pool each, their agents, and a controller acting on them only.
struct Pair {
    client: Client,
    net: FakeDrbdNet,
    a: FakeNode,
    b: FakeNode,
    controller: Vec<tokio::task::JoinHandle<()>>,
    scope: String,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for t in &self.controller {
            t.abort();
        }
    }
}

async fn scoped_node(client: &Client, node: &FakeNode, scope: &str) {
    // Created before the agent starts, with the label the test's controller acts on.
    let mut lsn = LocalStorageNode::new(
        &node.name,
        LocalStorageNodeSpec {
            hostname: node.name.clone(),
            storage_ip: node.storage_ip.clone(),
        },
    );
    lsn.metadata.labels = Some(
        [
            (SCOPE_LABEL.to_string(), scope.to_string()),
            (LABEL_NODE.to_string(), node.name.clone()),
        ]
        .into(),
    );
    Api::<LocalStorageNode>::all(client.clone())
        .create(&PostParams::default(), &lsn)
        .await
        .expect("create node");
}

impl Pair {
    async fn new(client: &Client) -> Pair {
        let net = FakeDrbdNet::new();
        let scope = unique("ha");
        let a = FakeNode::with_drbd(client, &net, "10.77.0.1");
        let b = FakeNode::with_drbd(client, &net, "10.77.0.2");
        for n in [&a, &b] {
            n.add_disk("/dev/vdb", 2 * GI, true);
            n.pool(HDD, &["/dev/vdb"]).await;
            scoped_node(client, n, &scope).await;
        }
        Pair {
            client: client.clone(),
            net,
            a,
            b,
            controller: vec![],
            scope,
        }
    }

    async fn start(&mut self) {
        self.a.start();
        self.b.start();
        for n in [&self.a, &self.b] {
            eventually(&format!("{} Ready with a pool", n.name), || async {
                let l = n.lsn().await?;
                let st = l.status?;
                (st.state == Some(NodeState::Ready)
                    && st.pools.contains_key(HDD)
                    && l.spec.storage_ip.is_some())
                .then_some(())
            })
            .await;
        }
        self.start_controller();
    }

    fn start_controller(&mut self) {
        let scope = Scope::from_str(&format!("{SCOPE_LABEL}={}", self.scope)).expect("scope");
        let ctx = volume_reconciler::Context::new_scoped(
            self.client.clone(),
            &unique("controller"),
            Arc::new(Metrics::default()),
            Policy::default(),
            Some(scope),
        );
        let cfg = FailoverConfig {
            namespace: LEASE_NAMESPACE.into(),
            grace: Duration::from_millis(500),
            tick: Duration::from_millis(100),
        };
        self.controller = vec![
            tokio::spawn(volume_reconciler::run(ctx.clone())),
            tokio::spawn(hwameistor_controller::operations::run(
                ctx.clone(),
                Default::default(),
            )),
            tokio::spawn(failover::run(ctx, cfg)),
        ];
    }

    fn node(&self, name: &str) -> &FakeNode {
        if self.a.name == name {
            &self.a
        } else {
            &self.b
        }
    }

    /// A started pair with a healthy HA volume of `bytes`: the pair, the volume and its
    /// DRBD resource.
    async fn with_healthy_volume(client: &Client, bytes: i64) -> (Pair, String, String) {
        let mut p = Pair::new(client).await;
        p.start().await;
        let vol = p.create_volume(bytes).await;
        let v = p.wait_healthy(&vol).await;
        let res = Pair::resource(&v);
        (p, vol, res)
    }

    /// Closes the device on `node` and unstages the volume there (as a pod going away).
    async fn unstage(&self, node: &FakeNode, vol: &str, res: &str) {
        self.net.set_open(&node.name, res, false);
        ha::unstage(&node.ctx(), &node.replication(), vol)
            .await
            .expect("unstage");
    }

    /// Deletes the volume, checks nothing is left on either node, and removes the nodes.
    async fn finish(mut self, vol: &str, res: &str) {
        self.delete_and_check_nothing_left(vol, res).await;
        self.a.cleanup().await;
        self.b.cleanup().await;
    }

    async fn create_volume(&self, bytes: i64) -> String {
        let name = unique("pvc-ha");
        let v = LocalVolume::new(
            &name,
            volume_spec(
                bytes,
                2,
                vec![self.a.name.clone(), self.b.name.clone()],
                Some("xfs"),
            ),
        );
        self.volumes()
            .create(&PostParams::default(), &v)
            .await
            .expect("create volume");
        name
    }

    fn volumes(&self) -> Api<LocalVolume> {
        Api::all(self.client.clone())
    }

    /// The replica of `vol` on `node`, if it exists.
    async fn replica_on(&self, vol: &str, node: &str) -> Option<LocalVolumeReplica> {
        Api::<LocalVolumeReplica>::all(self.client.clone())
            .get_opt(&hwameistor_api::replica::replica_name(vol, node))
            .await
            .ok()
            .flatten()
    }

    async fn volume(&self, name: &str) -> LocalVolume {
        self.volumes().get(name).await.expect("get volume")
    }

    async fn wait_volume(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&LocalVolume) -> bool,
    ) -> LocalVolume {
        eventually(&format!("volume {name}: {what}"), || async {
            self.volumes()
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .filter(|v| check(v))
        })
        .await
    }

    async fn wait_healthy(&self, name: &str) -> LocalVolume {
        self.wait_volume(name, "Ready and Healthy", |v| {
            let st = v.status.clone().unwrap_or_default();
            st.state == Some(VolumeState::Ready) && st.ha_state == Some(HaState::Healthy)
        })
        .await
    }

    fn resource(v: &LocalVolume) -> String {
        let c = v.spec.config.as_ref().expect("placed");
        hwameistor_core::drbd::resource_name(
            &v.metadata.name.clone().unwrap_or_default(),
            c.resource_id,
        )
    }

    fn primary(v: &LocalVolume) -> Option<String> {
        v.spec
            .config
            .as_ref()?
            .replicas
            .iter()
            .find(|a| a.primary)
            .map(|a| a.hostname.clone())
    }

    fn outdated(v: &LocalVolume, node: &str) -> bool {
        v.spec
            .config
            .as_ref()
            .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == node && a.outdated))
    }

    async fn delete_and_check_nothing_left(&self, name: &str, res: &str) {
        self.volumes()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete volume");
        self.check_gone_and_nothing_left(name, res).await;
    }

    async fn check_gone_and_nothing_left(&self, name: &str, res: &str) {
        eventually(&format!("volume {name} gone"), || async {
            self.volumes()
                .get_opt(name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        for n in [&self.a, &self.b] {
            nothing_left_on(self, n, name, res);
        }
    }
}

/// The spec of a test volume of `bytes` with `replicas`, allowed on `nodes`.
fn volume_spec(bytes: i64, replicas: i64, nodes: Vec<String>, fs: Option<&str>) -> LocalVolumeSpec {
    LocalVolumeSpec {
        pool_name: HDD.into(),
        volume_kind: VolumeKind::Lvm,
        required_capacity_bytes: bytes,
        replica_number: replicas,
        convertible: false,
        accessibility: Accessibility { nodes },
        pvc_namespace: None,
        pvc_name: None,
        fs_type: fs.map(str::to_string),
        config: None,
        split_brain_resolution: None,
        operation: None,
        thin: false,
        data_source: None,
    }
}

async fn stage(n: &FakeNode, volume: &str) -> Result<String, ha::StageError> {
    ha::stage(&n.ctx(), &n.replication(), volume).await
}

/// Stages as the kubelet does: retried until the controller's decision reached the node.
async fn stage_retried(n: &FakeNode, volume: &str) -> String {
    eventually(&format!("{volume} staged on {}", n.name), || async {
        stage(n, volume).await.ok()
    })
    .await
}

#[test]
fn every_ha_crash_point_is_exercised_below() {
    let mut all: Vec<&str> = CrashPoint::ALL
        .iter()
        .map(|p| p.name())
        .filter(|n| n.starts_with("ha-"))
        .collect();
    let mut tested: Vec<&str> = HA_POINTS
        .iter()
        .chain(TEARDOWN_POINTS.iter())
        .chain(OTHER_POINTS.iter())
        .map(|p| p.name())
        .collect();
    all.sort();
    tested.sort();
    assert_eq!(tested, all, "an HA crash point without a test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_volume_is_synced_on_two_nodes_served_by_the_allowed_one_and_removed_cleanly() {
    let (_server, client) = cluster().await;
    let (p, vol, res) = Pair::with_healthy_volume(&client, 256 * MI).await;
    let v = p.volume(&vol).await;
    let config = v.spec.config.clone().expect("config");
    assert!(config.resource_id >= 0);
    assert!(
        !config.initial,
        "initial is cleared once a replica is UpToDate"
    );
    assert_eq!(Pair::primary(&v).as_deref(), Some(p.a.name.as_str()));
    // What each node was told, and what it reports.
    for (n, peer) in [(&p.a, &p.b), (&p.b, &p.a)] {
        let r = n
            .get_replica(&replica::replica_name(&vol, &n.name))
            .await
            .expect("replica");
        let spec = r.spec.replication.clone().expect("replication spec");
        assert_eq!(
            spec.peer.as_ref().map(|x| x.node.as_str()),
            Some(peer.name.as_str())
        );
        assert_eq!(
            spec.peer.as_ref().map(|x| x.address.clone()),
            peer.storage_ip.clone()
        );
        assert_eq!(spec.minor, config.resource_id);
        let st = r.status.clone().expect("status");
        assert_eq!(st.synced, Some(true));
        assert_eq!(
            st.device_path.as_deref(),
            Some(format!("/dev/drbd{}", spec.minor).as_str())
        );
        let rs = st.replication.expect("replication status");
        assert_eq!(
            (rs.role.as_str(), rs.disk_state.as_str()),
            ("Secondary", "UpToDate")
        );
        // The data volume is untouched by DRBD: its metadata has a volume of its own.
        let lvs = n.lvm.snapshot().lvs;
        assert!(lvs.iter().any(|l| l.name == vol));
        assert!(lvs.iter().any(|l| l.name == format!("{vol}_drbdmeta")));
    }
    // One forced promotion in all (the initial one, on the allowed node), never again.
    let forced = |n: &FakeNode| {
        n.drbd
            .as_ref()
            .expect("drbd")
            .calls()
            .iter()
            .filter(|c| c.op == hwameistor_testkit::DrbdOp::Primary && c.force)
            .count()
    };
    assert_eq!((forced(&p.a), forced(&p.b)), (1, 0));

    // Only the replica the controller allows is promoted for staging.
    let refused = stage(&p.b, &vol).await.expect_err("b is not allowed");
    assert!(refused.to_string().contains("not allowed"), "{refused}");
    let dev = stage(&p.a, &vol).await.expect("stage on a");
    assert_eq!(dev, format!("/dev/drbd{}", config.resource_id));
    p.net.set_open(&p.a.name, &res, true);
    p.net
        .write(&p.a.name, &res, 4096)
        .expect("write on the primary");
    assert_eq!(
        p.net.data(&p.a.name, &res),
        p.net.data(&p.b.name, &res),
        "protocol C"
    );
    // The staged primary is not demoted by the reconciler; unstaging an open device fails.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.net.resource(&p.a.name, &res).map(|s| s.role),
        Some(hwameistor_core::drbd::Role::Primary)
    );
    assert!(ha::unstage(&p.a.ctx(), &p.a.replication(), &vol)
        .await
        .is_err());
    p.net.set_open(&p.a.name, &res, false);
    ha::unstage(&p.a.ctx(), &p.a.replication(), &vol)
        .await
        .expect("unstage");

    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_primary_is_fenced_then_the_survivor_serves_and_the_returning_node_resyncs() {
    let (_server, client) = cluster().await;
    let (mut p, vol, res) = Pair::with_healthy_volume(&client, 128 * MI).await;
    stage(&p.a, &vol).await.expect("stage on a");
    p.net.set_open(&p.a.name, &res, true);
    for _ in 0..3 {
        p.net.write(&p.a.name, &res, 4096).expect("write");
    }
    let acknowledged = p.net.data(&p.a.name, &res);

    // The primary's node dies: agent, kernel and heartbeat at once.
    let (a_name, b_name) = (p.a.name.clone(), p.b.name.clone());
    p.a.stop();
    p.net.crash(&a_name);
    let lost_at = Instant::now();
    let v = p
        .wait_volume(&vol, "failed over to b", |v| {
            Pair::primary(v).as_deref() == Some(b_name.as_str()) && Pair::outdated(v, &a_name)
        })
        .await;
    assert!(!Pair::outdated(&v, &b_name));
    // The survivor is promoted (DRBD asks to fence the unreachable peer: already recorded).
    let dev = stage_retried(&p.b, &vol).await;
    let usable = lost_at.elapsed();
    eprintln!("failover: node lost -> usable on the survivor in {usable:?} (heartbeat valid {HEARTBEAT_VALID:?} + grace 500ms)");
    assert!(dev.starts_with("/dev/drbd"));
    assert_eq!(
        p.net.data(&b_name, &res),
        acknowledged,
        "every acknowledged write is there"
    );
    p.net.set_open(&b_name, &res, true);
    p.net
        .write(&b_name, &res, 4096)
        .expect("write on the survivor");
    let survivor_data = p.net.data(&b_name, &res);

    // The lost node comes back: it rejoins as a secondary, resyncs, and is cleared.
    p.net.boot(&a_name);
    p.a.start();
    let v = p
        .wait_volume(&vol, "healthy again with a no longer outdated", |v| {
            let st = v.status.clone().unwrap_or_default();
            st.ha_state == Some(HaState::Healthy) && !Pair::outdated(v, &a_name)
        })
        .await;
    assert_eq!(Pair::primary(&v).as_deref(), Some(b_name.as_str()));
    assert_eq!(
        p.net.data(&a_name, &res),
        survivor_data,
        "a resynced from b"
    );
    assert_eq!(
        p.net.resource(&a_name, &res).map(|s| s.role),
        Some(hwameistor_core::drbd::Role::Secondary)
    );
    // The old primary may not be staged while b serves.
    assert!(stage(&p.a, &vol).await.is_err());

    p.unstage(&p.b, &vol, &res).await;
    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leaves_exactly_one_writer_and_heals_without_split_brain() {
    let (_server, client) = cluster().await;
    let (p, vol, res) = Pair::with_healthy_volume(&client, 128 * MI).await;
    let (a_name, b_name) = (p.a.name.clone(), p.b.name.clone());
    stage(&p.a, &vol).await.expect("stage on a");
    p.net.set_open(&a_name, &res, true);

    p.net.cut(&a_name, &b_name);
    p.net.settle().await;
    // The primary fenced its peer through the API, and writes on.
    let v = p
        .wait_volume(&vol, "b recorded outdated", |v| Pair::outdated(v, &b_name))
        .await;
    assert_eq!(Pair::primary(&v).as_deref(), Some(a_name.as_str()));
    let a_status = p.net.resource(&a_name, &res).expect("up on a");
    assert!(
        !a_status.suspended,
        "I/O resumed once the peer was recorded outdated"
    );
    p.net.write(&a_name, &res, 8192).expect("a writes on");
    // b can never serve meanwhile, and the controller does not fail over (a is alive).
    assert!(stage(&p.b, &vol).await.is_err());
    tokio::time::sleep(HEARTBEAT_VALID + Duration::from_millis(700)).await;
    assert_eq!(
        Pair::primary(&p.volume(&vol).await).as_deref(),
        Some(a_name.as_str())
    );

    p.net.heal(&a_name, &b_name);
    p.wait_volume(&vol, "healthy with b resynced", |v| {
        let st = v.status.clone().unwrap_or_default();
        st.ha_state == Some(HaState::Healthy) && !Pair::outdated(v, &b_name)
    })
    .await;
    assert_eq!(p.net.data(&a_name, &res), p.net.data(&b_name, &res));
    assert!(
        !p.net
            .helper_calls()
            .iter()
            .any(|c| c.command == "split-brain"),
        "no split brain"
    );
    p.unstage(&p.a, &vol, &res).await;
    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_brain_keeps_both_copies_until_the_operator_chooses_one() {
    let (_server, client) = cluster().await;
    let (p, vol, res) = Pair::with_healthy_volume(&client, 128 * MI).await;
    let (a_name, b_name) = (p.a.name.clone(), p.b.name.clone());

    // Test-only path to a split brain: both sides forced primary while apart, both written.
    p.net.cut(&a_name, &b_name);
    p.net.settle().await;
    for n in [&p.a, &p.b] {
        n.replication().set_staged(&vol, true);
        n.drbd
            .as_ref()
            .expect("drbd")
            .primary(&res, true)
            .await
            .expect("forced primary");
        p.net.set_open(&n.name, &res, true);
    }
    p.net.settle().await;
    p.net.write(&a_name, &res, 4096).expect("write on a");
    p.net.write(&b_name, &res, 4096).expect("write on b");
    p.net.write(&b_name, &res, 4096).expect("write on b");
    let (data_a, data_b) = (p.net.data(&a_name, &res), p.net.data(&b_name, &res));
    assert_ne!(data_a, data_b);
    p.net.heal(&a_name, &b_name);
    p.net.settle().await;

    let v = p
        .wait_volume(&vol, "split brain surfaced", |v| {
            v.status.as_ref().and_then(|s| s.ha_state) == Some(HaState::SplitBrain)
        })
        .await;
    let st = v.status.clone().expect("status");
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains(&format!("resolve-split-brain {vol} --keep")),
        "{:?}",
        st.message
    );
    assert!(st
        .conditions
        .iter()
        .any(|c| c.type_ == volume::CONDITION_SPLIT_BRAIN && c.status == "True"));
    for n in [&p.a, &p.b] {
        n.wait_replica(
            &replica::replica_name(&vol, &n.name),
            "split brain reported",
            |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.replication.as_ref())
                    .is_some_and(|x| x.split_brain)
            },
        )
        .await;
    }
    // Nothing is discarded while nobody chose.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (p.net.data(&a_name, &res), p.net.data(&b_name, &res)),
        (data_a, data_b)
    );

    // The applications stop; the operator keeps b's data.
    for n in [&p.a, &p.b] {
        p.net.set_open(&n.name, &res, false);
        n.replication().set_staged(&vol, false);
    }
    p.volumes()
        .patch(
            &vol,
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({ "spec": { "splitBrainResolution": { "keep": b_name } } }),
            ),
        )
        .await
        .expect("resolve");
    let v = p
        .wait_volume(&vol, "resolved and healthy", |v| {
            let st = v.status.clone().unwrap_or_default();
            st.ha_state == Some(HaState::Healthy) && v.spec.split_brain_resolution.is_none()
        })
        .await;
    assert!(v
        .status
        .expect("status")
        .conditions
        .iter()
        .any(|c| c.type_ == volume::CONDITION_SPLIT_BRAIN && c.status == "False"));
    assert_eq!(p.net.data(&a_name, &res), data_b, "a took b's data");
    assert_eq!(p.net.data(&b_name, &res), data_b);
    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_replica_converges_after_the_agent_dies_at_each_step() {
    let (_server, client) = cluster().await;
    for point in HA_POINTS {
        let mut p = Pair::new(&client).await;
        p.a.start_crashing_at(point);
        p.b.start();
        for n in [&p.a, &p.b] {
            eventually(&format!("{} Ready", n.name), || async {
                let st = n.lsn().await?.status?;
                (st.state == Some(NodeState::Ready) && st.pools.contains_key(HDD)).then_some(())
            })
            .await;
        }
        p.start_controller();
        let vol = p.create_volume(64 * MI).await;
        assert_eq!(p.a.crash().await, point);
        p.a.start();
        let v = p.wait_healthy(&vol).await;
        let res = Pair::resource(&v);
        let forced: usize = [&p.a, &p.b]
            .iter()
            .map(|n| {
                n.drbd
                    .as_ref()
                    .expect("drbd")
                    .calls()
                    .iter()
                    .filter(|c| c.op == hwameistor_testkit::DrbdOp::Primary && c.force)
                    .count()
            })
            .sum();
        assert_eq!(
            forced, 1,
            "{point:?}: the initial promotion is forced once only"
        );
        p.delete_and_check_nothing_left(&vol, &res).await;
        p.a.cleanup().await;
        p.b.cleanup().await;
        let _ = p.node("");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_volume_grows_both_volumes_then_its_device_in_use_or_not() {
    let (_server, client) = cluster().await;
    let (p, vol, res) = Pair::with_healthy_volume(&client, 128 * MI).await;
    let grow = |bytes: i64| {
        let api = p.volumes();
        let vol = vol.clone();
        async move {
            api.patch(
                &vol,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({ "spec": { "requiredCapacityBytes": bytes } })),
            )
            .await
            .expect("grow")
        }
    };
    let grown_to = |bytes: i64| {
        move |v: &LocalVolume| {
            let st = v.status.clone().unwrap_or_default();
            st.state == Some(VolumeState::Ready) && st.allocated_capacity_bytes == Some(bytes)
        }
    };

    // In use on a: a resizes its device once both volumes grew; the data stays.
    stage(&p.a, &vol).await.expect("stage on a");
    p.net.set_open(&p.a.name, &res, true);
    p.net.write(&p.a.name, &res, 4096).expect("write");
    let before = p.net.data(&p.a.name, &res);
    grow(192 * MI).await;
    p.wait_volume(&vol, "grown to 192 MiB in use", grown_to(192 * MI))
        .await;
    for n in [&p.a, &p.b] {
        assert_eq!(
            p.net.device_size(&n.name, &res),
            Some(192 << 20),
            "on {}",
            n.name
        );
        let lv = n
            .lvm
            .snapshot()
            .lvs
            .into_iter()
            .find(|l| l.name == vol)
            .expect("lv");
        assert_eq!(lv.size, 192 * MI);
    }
    assert_eq!(p.net.data(&p.b.name, &res), before, "nothing lost");
    p.net.set_open(&p.a.name, &res, false);
    ha::unstage(&p.a.ctx(), &p.a.replication(), &vol)
        .await
        .expect("unstage");

    // Unused: the allowed replica promotes itself for the resize and demotes after.
    grow(256 * MI).await;
    p.wait_volume(&vol, "grown to 256 MiB unused", grown_to(256 * MI))
        .await;
    for n in [&p.a, &p.b] {
        let st = p.net.resource(&n.name, &res).expect("up");
        assert_eq!(st.size_bytes, 256 << 20);
        assert_eq!(
            st.role,
            hwameistor_core::drbd::Role::Secondary,
            "demoted after"
        );
    }
    p.wait_healthy(&vol).await;
    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_replica_is_removed_completely_after_the_agent_dies_at_each_teardown_step() {
    let (_server, client) = cluster().await;
    for point in TEARDOWN_POINTS {
        let mut p = Pair::new(&client).await;
        p.start().await;
        let vol = p.create_volume(64 * MI).await;
        let v = p.wait_healthy(&vol).await;
        let res = Pair::resource(&v);
        p.a.stop();
        p.a.start_crashing_at(point);
        p.volumes()
            .delete(&vol, &DeleteParams::default())
            .await
            .expect("delete volume");
        assert_eq!(p.a.crash().await, point);
        p.a.start();
        p.check_gone_and_nothing_left(&vol, &res).await;
        p.a.cleanup().await;
        p.b.cleanup().await;
    }
}

/// Found by the VM test: after the metadata was wiped and the resource file removed, the
/// metadata volume's removal failed once; the agent then asked DRBD whether metadata was
/// there, which needs the file, and waited for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teardown_whose_metadata_volume_removal_failed_once_still_completes() {
    let (_server, client) = cluster().await;
    let (p, vol, res) = Pair::with_healthy_volume(&client, 64 * MI).await;
    p.a.lvm.fail(
        hwameistor_testkit::lvm::OpKind::RemoveLv,
        &hwameistor_core::drbd::meta_lv_name(&vol),
        hwameistor_hostexec::lvm::LvmError::LvInUse {
            vg: HDD.into(),
            lv: hwameistor_core::drbd::meta_lv_name(&vol),
        },
        Some(1),
    );
    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_by_the_reconciler_resumes_io_even_across_an_agent_crash() {
    let (_server, client) = cluster().await;
    let (mut p, vol, res) = Pair::with_healthy_volume(&client, 64 * MI).await;
    let (a_name, b_name) = (p.a.name.clone(), p.b.name.clone());
    stage(&p.a, &vol).await.expect("stage on a");
    p.net.set_open(&a_name, &res, true);
    // DRBD's handler cannot reach the agent: the reconciler's Fence step is the only path.
    p.a.stop();
    p.a.start_crashing_at(CrashPoint::HaAfterFence);
    p.net.clear_helper(&a_name);
    p.net.cut(&a_name, &b_name);
    p.net.settle().await;
    assert_eq!(p.a.crash().await, CrashPoint::HaAfterFence);
    // Recorded, not yet resumed: the agent died between the two.
    assert!(Pair::outdated(&p.volume(&vol).await, &b_name));
    assert!(p.net.resource(&a_name, &res).expect("up").suspended);
    assert!(p.net.write(&a_name, &res, 4096).is_err(), "frozen");
    p.a.start();
    p.net.clear_helper(&a_name);
    eventually("I/O resumed on a", || async {
        p.net
            .resource(&a_name, &res)
            .filter(|s| !s.suspended)
            .map(|_| ())
    })
    .await;
    p.net.write(&a_name, &res, 4096).expect("a writes on");
    // Still primary and in use (the restarted agent learned it from the refused demote).
    assert_eq!(
        p.net.resource(&a_name, &res).map(|s| s.role),
        Some(hwameistor_core::drbd::Role::Primary)
    );
    p.net.heal(&a_name, &b_name);
    p.wait_volume(&vol, "healthy with b resynced", |v| {
        let st = v.status.clone().unwrap_or_default();
        st.ha_state == Some(HaState::Healthy) && !Pair::outdated(v, &b_name)
    })
    .await;
    assert_eq!(p.net.data(&a_name, &res), p.net.data(&b_name, &res));
    p.unstage(&p.a, &vol, &res).await;
    p.finish(&vol, &res).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_volume_grown_while_the_agent_dies_mid_resize_ends_grown_and_demoted() {
    let (_server, client) = cluster().await;
    let (mut p, vol, res) = Pair::with_healthy_volume(&client, 64 * MI).await;
    p.a.stop();
    p.a.start_crashing_at(CrashPoint::HaAfterResize);
    p.volumes()
        .patch(
            &vol,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "spec": { "requiredCapacityBytes": 128 * MI } })),
        )
        .await
        .expect("grow");
    assert_eq!(p.a.crash().await, CrashPoint::HaAfterResize);
    assert_eq!(
        p.net.resource(&p.a.name, &res).map(|s| s.role),
        Some(hwameistor_core::drbd::Role::Primary),
        "promoted for the resize when the agent died"
    );
    p.a.start();
    p.wait_volume(&vol, "grown and healthy", |v| {
        let st = v.status.clone().unwrap_or_default();
        st.ha_state == Some(HaState::Healthy) && st.allocated_capacity_bytes == Some(128 * MI)
    })
    .await;
    eventually("a demoted again", || async {
        (p.net.resource(&p.a.name, &res).map(|s| s.role)
            == Some(hwameistor_core::drbd::Role::Secondary))
        .then_some(())
    })
    .await;
    p.finish(&vol, &res).await;
}

/// A third DRBD node in the pair's scope, started.
async fn third_node(p: &Pair, ip: &str) -> FakeNode {
    let mut c = FakeNode::with_drbd(&p.client, &p.net, ip);
    c.add_disk("/dev/vdb", 2 * GI, true);
    c.pool(HDD, &["/dev/vdb"]).await;
    scoped_node(&p.client, &c, &p.scope).await;
    c.start();
    eventually(&format!("{} Ready with a pool", c.name), || async {
        let st = c.lsn().await?.status?;
        (st.state == Some(NodeState::Ready) && st.pools.contains_key(HDD)).then_some(())
    })
    .await;
    c
}

async fn wait_op_phase<K>(client: &Client, name: &str, phase: OperationPhase) -> OperationStatus
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K: serde::Serialize,
{
    eventually(&format!("{name} {phase:?}"), || async {
        let o = Api::<K>::all(client.clone()).get(name).await.ok()?;
        let st: OperationStatus =
            serde_json::from_value(serde_json::to_value(&o).ok()?.get("status")?.clone()).ok()?;
        (st.phase == Some(phase)).then_some(st)
    })
    .await
}

/// Checks nothing of `res` or `vol` is left on `n`.
fn nothing_left_on(p: &Pair, n: &FakeNode, vol: &str, res: &str) {
    assert!(
        p.net.resource(&n.name, res).is_none(),
        "{res} up on {}",
        n.name
    );
    assert!(
        p.net.config(&n.name, res).is_none(),
        "{res}'s file on {}",
        n.name
    );
    let lvs: Vec<String> = n
        .lvm
        .snapshot()
        .lvs
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert!(
        !lvs.iter().any(|l| l.starts_with(vol)),
        "volumes left on {}: {lvs:?}",
        n.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_replica_moves_to_a_third_node_while_the_volume_is_in_use() {
    let (_server, client) = cluster().await;
    let (p, vol, res) = Pair::with_healthy_volume(&client, 128 * MI).await;
    // In use on a, written to.
    stage(&p.a, &vol).await.expect("stage on a");
    p.net.set_open(&p.a.name, &res, true);
    p.net.write(&p.a.name, &res, 4096).expect("write");
    let mut c = third_node(&p, "10.77.0.3").await;
    // The new replica's resync is held, to see the move mid-way.
    p.net.hold_sync(&res);

    let m = LocalVolumeMigrate::new(
        &unique("mig"),
        LocalVolumeMigrateSpec {
            volume_name: vol.clone(),
            source_node: p.b.name.clone(),
            target_nodes: vec![c.name.clone()],
            migrate_all_volumes: true,
            bandwidth_limit_bytes_per_second: None,
            abort: false,
            ttl_seconds_after_finished: None,
        },
    );
    let ops: Api<LocalVolumeMigrate> = Api::all(client.clone());
    ops.create(&PostParams::default(), &m)
        .await
        .expect("create migrate");
    let name = m.metadata.name.clone().expect("name");
    eventually("the new replica syncing from a", || async {
        let st = p.net.resource(&c.name, &res)?;
        (st.connection == hwameistor_core::drbd::ConnState::SyncTarget).then_some(())
    })
    .await;
    // Mid-way: b is down with its data and metadata kept (its agent takes it down on its
    // own pace, possibly after c connected); a goes on writing (single copy).
    eventually("b's resource down", || async {
        p.net.resource(&p.b.name, &res).is_none().then_some(())
    })
    .await;
    assert!(p.net.data(&p.b.name, &res).is_some(), "b's metadata kept");
    assert!(
        p.b.lvm.snapshot().lvs.iter().any(|l| l.name == vol),
        "b's data kept"
    );
    p.net
        .write(&p.a.name, &res, 4096)
        .expect("a writes during the move");
    let st = Api::<LocalVolumeMigrate>::all(client.clone())
        .get(&name)
        .await
        .expect("op")
        .status
        .expect("status");
    assert_eq!(st.step.as_deref(), Some("Sync"));
    assert!(
        p.replica_on(&vol, &p.b.name).await.is_some(),
        "b's replica still exists"
    );

    p.net.release_sync(&res);
    let st = wait_op_phase::<LocalVolumeMigrate>(&client, &name, OperationPhase::Succeeded).await;
    assert_eq!(st.target_node.as_deref(), Some(c.name.as_str()));
    // The new copy has what a acknowledged, b is gone completely, a still serves.
    assert_eq!(p.net.data(&c.name, &res), p.net.data(&p.a.name, &res));
    let s = p.net.resource(&c.name, &res).expect("up on c");
    assert_eq!(
        (s.connection, s.disk),
        (
            hwameistor_core::drbd::ConnState::Connected,
            hwameistor_core::drbd::DiskState::UpToDate
        )
    );
    eventually("b cleaned up", || async {
        (p.net.config(&p.b.name, &res).is_none()
            && !p
                .b
                .lvm
                .snapshot()
                .lvs
                .iter()
                .any(|l| l.name.starts_with(&vol)))
        .then_some(())
    })
    .await;
    nothing_left_on(&p, &p.b, &vol, &res);
    let v = p.wait_healthy(&vol).await;
    assert_eq!(Pair::primary(&v).as_deref(), Some(p.a.name.as_str()));
    let mut nodes: Vec<String> = v
        .spec
        .config
        .expect("config")
        .replicas
        .into_iter()
        .map(|a| a.hostname)
        .collect();
    nodes.sort();
    let mut want = vec![p.a.name.clone(), c.name.clone()];
    want.sort();
    assert_eq!(nodes, want);

    // Removal leaves nothing on the nodes it lives on now.
    p.unstage(&p.a, &vol, &res).await;
    p.volumes()
        .delete(&vol, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("volume gone", || async {
        p.volumes()
            .get_opt(&vol)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    nothing_left_on(&p, &p.a, &vol, &res);
    nothing_left_on(&p, &c, &vol, &res);
    c.cleanup().await;
    let mut p = p;
    p.a.cleanup().await;
    p.b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_volume_converts_to_ha_keeping_its_data_volume_after_an_aborted_try() {
    let (_server, client) = cluster().await;
    let mut p = Pair::new(&client).await;
    p.start().await;
    let vol = unique("pvc-conv");
    let v = LocalVolume::new(
        &vol,
        volume_spec(64 * MI, 1, vec![p.a.name.clone()], Some("xfs")),
    );
    p.volumes()
        .create(&PostParams::default(), &v)
        .await
        .expect("create");
    p.wait_volume(&vol, "Ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    let lv_before =
        p.a.lvm
            .snapshot()
            .lvs
            .into_iter()
            .find(|l| l.name == vol)
            .expect("data LV");

    let convert = |name: &str| {
        LocalVolumeConvert::new(
            name,
            LocalVolumeConvertSpec {
                volume_name: vol.clone(),
                replica_number: 2,
                convert_all_volumes: true,
                target_node: Some(p.b.name.clone()),
                abort: false,
                ttl_seconds_after_finished: None,
            },
        )
    };
    let ops: Api<LocalVolumeConvert> = Api::all(client.clone());

    // A first conversion aborted mid-sync, once DRBD is under the volume: b's replica goes,
    // a keeps the DRBD layer (alone, StandAlone, its data volume as it was): convertible.
    let gate =
        p.b.drbd
            .as_ref()
            .expect("drbd")
            .gate(hwameistor_testkit::DrbdOp::Up, &vol);
    let first = unique("conv");
    ops.create(&PostParams::default(), &convert(&first))
        .await
        .expect("create convert");
    let v = p
        .wait_volume(&vol, "DRBD under it", |v| {
            v.spec
                .config
                .as_ref()
                .is_some_and(hwameistor_core::ha::is_ha)
        })
        .await;
    let res = Pair::resource(&v);
    p.net.hold_sync(&res);
    gate.release();
    eventually("b syncing from a", || async {
        let st = p.net.resource(&p.b.name, &res)?;
        (st.connection == hwameistor_core::drbd::ConnState::SyncTarget).then_some(())
    })
    .await;
    ops.patch(
        &first,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"abort": true}})),
    )
    .await
    .expect("abort");
    wait_op_phase::<LocalVolumeConvert>(&client, &first, OperationPhase::Aborted).await;
    p.net.release_sync(&res);
    eventually("b's replica gone", || async {
        (p.replica_on(&vol, &p.b.name).await.is_none() && p.net.config(&p.b.name, &res).is_none())
            .then_some(())
    })
    .await;
    nothing_left_on(&p, &p.b, &vol, &res);
    let v = p.volume(&vol).await;
    assert!(v.spec.convertible && v.spec.replica_number == 1);
    eventually("a alone", || async {
        let s = p.net.resource(&p.a.name, &res)?;
        (s.connection == hwameistor_core::drbd::ConnState::StandAlone
            && s.disk == hwameistor_core::drbd::DiskState::UpToDate)
            .then_some(())
    })
    .await;

    // The next conversion completes (online now).
    let name = unique("conv");
    ops.create(&PostParams::default(), &convert(&name))
        .await
        .expect("create convert");
    wait_op_phase::<LocalVolumeConvert>(&client, &name, OperationPhase::Succeeded).await;
    let v = p.wait_healthy(&vol).await;
    assert_eq!(Pair::resource(&v), res);
    // The data volume on a is the one it had (DRBD's metadata lives beside it), and it was
    // the source of the sync: b holds the same data.
    let lv_after =
        p.a.lvm
            .snapshot()
            .lvs
            .into_iter()
            .find(|l| l.name == vol)
            .expect("data LV");
    assert_eq!(
        (lv_after.size, lv_after.devices.clone()),
        (lv_before.size, lv_before.devices.clone())
    );
    assert_eq!(p.net.data(&p.b.name, &res), p.net.data(&p.a.name, &res));
    assert_eq!(Pair::primary(&v).as_deref(), Some(p.a.name.as_str()));
    let a_rep = p.replica_on(&vol, &p.a.name).await.expect("a's replica");
    assert_eq!(
        a_rep.status.and_then(|s| s.device_path),
        Some(hwameistor_core::drbd::device_path(
            v.spec.config.expect("c").resource_id as u32
        ))
    );
    p.finish(&vol, &res).await;
}

/// A volume created convertible runs DRBD on its one node (StandAlone, no peer), serves and
/// grows there, then converts online while in use and written: an aborted conversion
/// removes its new replica and leaves the volume serving alone; the next one completes
/// with the same data on both nodes and the same resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convertible_volume_serves_alone_then_converts_online_after_an_aborted_try() {
    use hwameistor_core::drbd::{ConnState, DiskState, Role};
    let (_server, client) = cluster().await;
    let mut p = Pair::new(&client).await;
    p.start().await;
    let vol = unique("pvc-cv");
    let mut spec = volume_spec(64 * MI, 1, vec![p.a.name.clone()], Some("xfs"));
    spec.convertible = true;
    p.volumes()
        .create(&PostParams::default(), &LocalVolume::new(&vol, spec))
        .await
        .expect("create");
    let v = p
        .wait_volume(&vol, "Ready", |v| {
            v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
        })
        .await;
    let res = Pair::resource(&v);
    assert_eq!(v.status.as_ref().and_then(|s| s.ha_state), None, "one copy");
    let s = p.net.resource(&p.a.name, &res).expect("up on a");
    assert_eq!(
        (s.connection, s.disk),
        (ConnState::StandAlone, DiskState::UpToDate)
    );
    assert!(p.replica_on(&vol, &p.b.name).await.is_none());
    assert!(p.net.config(&p.b.name, &res).is_none());

    // In use on a, written, grown while in use.
    let dev = stage_retried(&p.a, &vol).await;
    assert_eq!(
        dev,
        hwameistor_core::drbd::device_path(v.spec.config.as_ref().expect("c").resource_id as u32)
    );
    p.net.set_open(&p.a.name, &res, true);
    p.net.write(&p.a.name, &res, 4096).expect("write alone");
    p.volumes()
        .patch(
            &vol,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"requiredCapacityBytes": 96 * MI}})),
        )
        .await
        .expect("grow");
    eventually("the device grown alone", || async {
        let s = p.net.resource(&p.a.name, &res)?;
        (s.size_bytes >= 96 * MI as u64).then_some(())
    })
    .await;

    // A conversion aborted mid-sync: b joins and syncs, then goes again.
    p.net.hold_sync(&res);
    let convert = |name: &str| {
        LocalVolumeConvert::new(
            name,
            LocalVolumeConvertSpec {
                volume_name: vol.clone(),
                replica_number: 2,
                convert_all_volumes: true,
                target_node: Some(p.b.name.clone()),
                abort: false,
                ttl_seconds_after_finished: None,
            },
        )
    };
    let ops: Api<LocalVolumeConvert> = Api::all(client.clone());
    let first = unique("conv");
    ops.create(&PostParams::default(), &convert(&first))
        .await
        .expect("create convert");
    eventually("b syncing from a", || async {
        let st = p.net.resource(&p.b.name, &res)?;
        (st.connection == ConnState::SyncTarget).then_some(())
    })
    .await;
    p.net
        .write(&p.a.name, &res, 4096)
        .expect("a writes during the sync");
    ops.patch(
        &first,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"abort": true}})),
    )
    .await
    .expect("abort");
    wait_op_phase::<LocalVolumeConvert>(&client, &first, OperationPhase::Aborted).await;
    p.net.release_sync(&res);
    eventually("b's replica gone", || async {
        (p.replica_on(&vol, &p.b.name).await.is_none() && p.net.config(&p.b.name, &res).is_none())
            .then_some(())
    })
    .await;
    nothing_left_on(&p, &p.b, &vol, &res);
    let v = p.volume(&vol).await;
    assert_eq!(v.spec.replica_number, 1);
    assert_eq!(
        v.spec.config.as_ref().map(|c| c.replicas.len()),
        Some(1),
        "alone again"
    );
    eventually("a alone again", || async {
        let s = p.net.resource(&p.a.name, &res)?;
        (s.connection == ConnState::StandAlone && s.role == Role::Primary && !s.suspended)
            .then_some(())
    })
    .await;
    p.net
        .write(&p.a.name, &res, 4096)
        .expect("a writes after the abort");

    // The next conversion completes, in use all along.
    let second = unique("conv");
    ops.create(&PostParams::default(), &convert(&second))
        .await
        .expect("create convert");
    wait_op_phase::<LocalVolumeConvert>(&client, &second, OperationPhase::Succeeded).await;
    let v = p.wait_healthy(&vol).await;
    assert_eq!(Pair::resource(&v), res, "the same resource");
    assert_eq!(Pair::primary(&v).as_deref(), Some(p.a.name.as_str()));
    assert_eq!(v.spec.replica_number, 2);
    assert_eq!(p.net.data(&p.b.name, &res), p.net.data(&p.a.name, &res));
    let s = p.net.resource(&p.a.name, &res).expect("a");
    assert_eq!(
        (s.role, s.connection),
        (Role::Primary, ConnState::Connected)
    );
    p.unstage(&p.a, &vol, &res).await;
    p.finish(&vol, &res).await;
}

/// A block mover for fake node `n` on 127.0.0.1 (`port` 0: any), its devices files under
/// `dir`; returns its server task and port.
async fn start_mover(
    n: &FakeNode,
    dir: &std::path::Path,
    port: u16,
    fault: hwameistor_mover::FaultInjection,
) -> (tokio::task::JoinHandle<()>, u16) {
    use hwameistor_agent::mover::{self, Mover, MoverSettings};
    let devices = dir.join("dev");
    let key = hwameistor_mover::NodeKey::load_or_generate(&dir.join("node.key")).expect("key");
    let m = Mover::new(MoverSettings {
        key: Arc::new(key),
        state_dir: dir.join("state"),
        device: Arc::new(move |pool: &str, vol: &str| devices.join(pool).join(vol)),
        retry: Duration::from_millis(200),
    });
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    // The agent's copies use the first mover it was given (a restarted server reuses the key).
    let _ = n.ctx().mover.set(m.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let ctx = n.ctx();
    let task = tokio::spawn(async move {
        mover::serve(ctx, m, listener, format!("127.0.0.1:{port}"), fault)
            .await
            .expect("mover serves");
    });
    (task, port)
}

fn device_file(dir: &std::path::Path, vol: &str) -> std::path::PathBuf {
    dir.join("dev").join(HDD).join(vol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_volume_moves_by_block_copy_resuming_after_the_source_dies_mid_copy() {
    let (_server, client) = cluster().await;
    let mut p = Pair::new(&client).await;
    p.start().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let vol = unique("pvc-move");
    let bytes = 64 * MI;
    let v = LocalVolume::new(&vol, volume_spec(bytes, 1, vec![p.a.name.clone()], None));
    p.volumes()
        .create(&PostParams::default(), &v)
        .await
        .expect("create");
    p.wait_volume(&vol, "Ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    // The source: data at both ends, zeros between; the target's volume holds garbage
    // (a thick logical volume is not zeroed), which must not survive.
    let src = device_file(dir_a.path(), &vol);
    std::fs::create_dir_all(src.parent().expect("dir")).expect("dirs");
    let mut data = vec![0u8; bytes as usize];
    let mut x: u32 = 12345;
    for (i, b) in data.iter_mut().enumerate() {
        if i < (12 * MI) as usize || i >= (56 * MI) as usize {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
    }
    std::fs::write(&src, &data).expect("source");
    let dst = device_file(dir_b.path(), &vol);
    std::fs::create_dir_all(dst.parent().expect("dir")).expect("dirs");
    std::fs::write(&dst, vec![0xABu8; bytes as usize]).expect("target");

    let (server_a, port_a) = start_mover(&p.a, dir_a.path(), 0, Default::default()).await;
    let (_server_b, _) = start_mover(&p.b, dir_b.path(), 0, Default::default()).await;
    movers_published(&p).await;

    let m = LocalVolumeMigrate::new(
        &unique("mig"),
        LocalVolumeMigrateSpec {
            volume_name: vol.clone(),
            source_node: p.a.name.clone(),
            target_nodes: vec![p.b.name.clone()],
            migrate_all_volumes: true,
            // Slow enough to be caught mid-way.
            bandwidth_limit_bytes_per_second: Some(4 * MI),
            abort: false,
            ttl_seconds_after_finished: None,
        },
    );
    Api::<LocalVolumeMigrate>::all(client.clone())
        .create(&PostParams::default(), &m)
        .await
        .expect("create migrate");
    let name = m.metadata.name.clone().expect("name");
    let on_b = hwameistor_api::replica::replica_name(&vol, &p.b.name);
    eventually("copy under way", || async {
        let r = p.replica_on(&vol, &p.b.name).await?;
        let c = r.status?.copy?;
        (c.bytes_done >= 4 * MI && !c.verified).then_some(())
    })
    .await;
    // Not usable before the copy is verified.
    let r = p.replica_on(&vol, &p.b.name).await.expect("replica on b");
    assert_eq!(r.status.and_then(|s| s.state), Some(ReplicaState::NotReady));

    // The source's agent dies mid-copy, and comes back (same key, same port) damaging a
    // chunk once: the copy resumes from its checkpoint and has that chunk sent again.
    server_a.abort();
    let _ = server_a.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_server_a, _) = start_mover(
        &p.a,
        dir_a.path(),
        port_a,
        hwameistor_mover::FaultInjection {
            corrupt_chunk: Some(14),
            corrupt_times: 0,
        },
    )
    .await;

    let st = wait_op_phase::<LocalVolumeMigrate>(&client, &name, OperationPhase::Succeeded).await;
    assert_eq!(st.target_node.as_deref(), Some(p.b.name.as_str()));
    assert!(
        std::fs::read(&dst).expect("target") == data,
        "the copy equals the source"
    );
    let r = Api::<LocalVolumeReplica>::all(client.clone())
        .get(&on_b)
        .await
        .expect("replica on b");
    let copy = r.status.clone().and_then(|s| s.copy).expect("copy status");
    assert!(copy.verified && copy.digest.is_some(), "{copy:?}");
    assert!(copy.resumes >= 1, "resumed after the source died: {copy:?}");
    assert!(
        copy.resends >= 1,
        "the damaged chunk was sent again: {copy:?}"
    );
    assert!(
        r.spec.copy_from.is_none(),
        "the copy source is cleared once done"
    );
    assert_eq!(r.status.and_then(|s| s.state), Some(ReplicaState::Ready));
    eventually("the source replica removed", || async {
        p.replica_on(&vol, &p.a.name).await.is_none().then_some(())
    })
    .await;
    assert!(!p.a.lvm.snapshot().lvs.iter().any(|l| l.name == vol));
    p.volumes()
        .delete(&vol, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("volume gone", || async {
        p.volumes()
            .get_opt(&vol)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    p.a.cleanup().await;
    p.b.cleanup().await;
}

/// Creates volume `name` of `spec`, waits until it is Ready, and takes a snapshot of it
/// through CSI: the snapshot's id.
async fn ready_volume_with_snapshot(
    p: &Pair,
    csi: &hwameistor_csi::controller::ControllerService,
    name: &str,
    spec: LocalVolumeSpec,
) -> String {
    use hwameistor_csi::csi::controller_server::Controller;
    p.volumes()
        .create(&PostParams::default(), &LocalVolume::new(name, spec))
        .await
        .expect("create");
    p.wait_volume(name, "Ready", |v| {
        v.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
    })
    .await;
    csi.create_snapshot(tonic::Request::new(
        hwameistor_csi::csi::CreateSnapshotRequest {
            name: unique("snap"),
            source_volume_id: name.to_string(),
            ..Default::default()
        },
    ))
    .await
    .expect("snapshot")
    .into_inner()
    .snapshot
    .expect("snapshot")
    .snapshot_id
}

/// Waits until both nodes' block movers are published.
async fn movers_published(p: &Pair) {
    eventually("both movers published", || async {
        let a = p.a.lsn().await?.status?.mover?;
        let b = p.b.lsn().await?.status?.mover?;
        (!a.public_key.is_empty() && !b.public_key.is_empty()).then_some(())
    })
    .await;
}

/// The CSI controller service on the test's API server.
fn csi_service(client: &Client) -> hwameistor_csi::controller::ControllerService {
    let t = Duration::from_secs(30);
    hwameistor_csi::controller::ControllerService::new(
        client.clone(),
        hwameistor_csi::controller::Timeouts {
            create: t,
            delete: t,
            expand: t,
        },
    )
}

/// A CreateVolume of a raw block volume of `bytes` on `node` (strict topology), from
/// `source`, with the StorageClass `params`.
fn create_from(
    name: &str,
    bytes: i64,
    node: &str,
    source: hwameistor_csi::csi::volume_content_source::Type,
    params: &[(&str, &str)],
) -> tonic::Request<hwameistor_csi::csi::CreateVolumeRequest> {
    use hwameistor_csi::csi::*;
    let topology = vec![hwameistor_csi::topology::of_node(node)];
    tonic::Request::new(CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(volume_capability::AccessType::Block(
                volume_capability::BlockVolume {},
            )),
        }],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: topology.clone(),
            preferred: topology,
        }),
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(source),
        }),
        ..Default::default()
    })
}

/// Bytes of a reproducible pattern (`seed`), zeros in the middle third.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|i| {
            if i >= len / 3 && i < 2 * len / 3 {
                return 0;
            }
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn write_device(path: &std::path::Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dirs");
    std::fs::write(path, data).expect("device file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_and_a_volume_clones_onto_another_node_through_the_block_mover() {
    use hwameistor_csi::csi::controller_server::Controller;
    use hwameistor_csi::csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
    use hwameistor_csi::csi::*;
    let (_server, client) = cluster().await;
    let mut p = Pair::new(&client).await;
    p.start().await;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (_mover_a, _) = start_mover(&p.a, dir_a.path(), 0, Default::default()).await;
    let (_mover_b, _) = start_mover(&p.b, dir_b.path(), 0, Default::default()).await;
    movers_published(&p).await;
    let csi = csi_service(&client);

    // A plain volume on a, and a snapshot of it (what the snapshot holds is its device).
    let bytes = 24 * MI;
    let vol = unique("pvc-src");
    let snap_id = ready_volume_with_snapshot(
        &p,
        &csi,
        &vol,
        volume_spec(bytes, 1, vec![p.a.name.clone()], None),
    )
    .await;
    let at_snapshot = pattern(bytes as usize, 7);
    let snap_lv = hwameistor_core::snapshot::lv_name(&snap_id);
    write_device(&device_file(dir_a.path(), &snap_lv), &at_snapshot);
    // The restored volume is larger; its new logical volume holds garbage past the data.
    let restored = unique("pvc-restored");
    write_device(
        &device_file(dir_b.path(), &restored),
        &vec![0xAB; (32 * MI) as usize],
    );

    // Too small: refused before anything is made.
    let err = csi
        .create_volume(create_from(
            &unique("pvc-small"),
            16 * MI,
            &p.b.name,
            Type::Snapshot(SnapshotSource {
                snapshot_id: snap_id.clone(),
            }),
            &[],
        ))
        .await
        .expect_err("smaller than the snapshot");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    // An unknown snapshot: NOT_FOUND.
    let err = csi
        .create_volume(create_from(
            &unique("pvc-none"),
            bytes,
            &p.b.name,
            Type::Snapshot(SnapshotSource {
                snapshot_id: "nope".into(),
            }),
            &[],
        ))
        .await
        .expect_err("no such snapshot");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // Restored on b: copied by the block mover from a's snapshot, verified, then Ready.
    let from_snapshot = Type::Snapshot(SnapshotSource {
        snapshot_id: snap_id.clone(),
    });
    let made = csi
        .create_volume(create_from(
            &restored,
            32 * MI,
            &p.b.name,
            from_snapshot.clone(),
            &[],
        ))
        .await
        .expect("restore")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(made.volume_id, restored);
    assert_eq!(
        made.content_source.and_then(|c| c.r#type),
        Some(from_snapshot.clone()),
        "the answer names its content source"
    );
    let target = std::fs::read(device_file(dir_b.path(), &restored)).expect("target");
    assert!(
        target[..bytes as usize] == at_snapshot[..],
        "the restored volume holds the snapshot's data"
    );
    let r = p.replica_on(&restored, &p.b.name).await.expect("replica");
    let copy = r.status.clone().and_then(|s| s.copy).expect("copy status");
    assert!(
        copy.verified && copy.digest.is_some() && !copy.lvm_clone,
        "{copy:?}"
    );
    assert_eq!(copy.bytes_done, bytes);
    let v = p
        .wait_volume(&restored, "the copy source cleared", |v| {
            v.spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().all(|a| a.copy_from.is_none()))
        })
        .await;
    assert_eq!(
        v.spec.data_source.as_ref().map(|d| d.node.as_str()),
        Some(p.a.name.as_str())
    );
    eventually("the replica's copy source cleared", || async {
        p.replica_on(&restored, &p.b.name)
            .await?
            .spec
            .copy_from
            .is_none()
            .then_some(())
    })
    .await;
    // Asked again: the same volume; with another source: a conflict.
    let again = csi
        .create_volume(create_from(
            &restored,
            32 * MI,
            &p.b.name,
            from_snapshot,
            &[],
        ))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again.volume.map(|v| v.volume_id), Some(restored.clone()));
    let err = csi
        .create_volume(create_from(
            &restored,
            32 * MI,
            &p.b.name,
            Type::Volume(VolumeSource {
                volume_id: vol.clone(),
            }),
            &[],
        ))
        .await
        .expect_err("another source");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    // A clone of the source volume on b: a snapshot is taken for it, copied, then removed.
    let clone = unique("pvc-clone");
    let clone_snap = hwameistor_core::restore::clone_snapshot_name(&clone);
    let now = pattern(bytes as usize, 99);
    write_device(
        &device_file(
            dir_a.path(),
            &hwameistor_core::snapshot::lv_name(&clone_snap),
        ),
        &now,
    );
    write_device(
        &device_file(dir_b.path(), &clone),
        &vec![0xCD; bytes as usize],
    );
    let made = csi
        .create_volume(create_from(
            &clone,
            bytes,
            &p.b.name,
            Type::Volume(VolumeSource {
                volume_id: vol.clone(),
            }),
            &[],
        ))
        .await
        .expect("clone")
        .into_inner()
        .volume
        .expect("volume");
    assert!(
        matches!(made.content_source.and_then(|c| c.r#type), Some(Type::Volume(v)) if v.volume_id == vol)
    );
    assert!(std::fs::read(device_file(dir_b.path(), &clone)).expect("clone") == now);
    eventually("the clone's snapshot removed", || async {
        Api::<LocalVolumeSnapshot>::all(client.clone())
            .get_opt(&clone_snap)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!p
        .a
        .lvm
        .snapshot()
        .lvs
        .iter()
        .any(|l| l.name == hwameistor_core::snapshot::lv_name(&clone_snap)));

    // Clean up: the restored volumes, the snapshot, then its volume.
    for v in [&restored, &clone] {
        csi.delete_volume(tonic::Request::new(DeleteVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        }))
        .await
        .expect("delete restored");
    }
    csi.delete_snapshot(tonic::Request::new(DeleteSnapshotRequest {
        snapshot_id: snap_id.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete snapshot");
    csi.delete_volume(tonic::Request::new(DeleteVolumeRequest {
        volume_id: vol.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete source");
    p.a.cleanup().await;
    p.b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_snapshot_restores_on_its_node_by_lvm_alone_even_across_a_crash() {
    use hwameistor_csi::csi::controller_server::Controller;
    use hwameistor_csi::csi::volume_content_source::{SnapshotSource, Type};
    use hwameistor_csi::csi::*;
    let (_server, client) = cluster().await;
    let mut p = Pair::new(&client).await;
    p.start().await;
    let csi = csi_service(&client);
    let bytes = 64 * MI;
    let vol = unique("pvc-thin");
    let snap_id = ready_volume_with_snapshot(
        &p,
        &csi,
        &vol,
        LocalVolumeSpec {
            thin: true,
            ..volume_spec(bytes, 1, vec![p.a.name.clone()], None)
        },
    )
    .await;

    // a's agent dies right after LVM cloned the snapshot (before growing the clone and
    // recording it); restarted, it finishes the same clone.
    p.a.stop();
    p.a.start_crashing_at(CrashPoint::RestoreAfterClone);
    let restored = unique("pvc-restored");
    let csi_call = {
        let client = client.clone();
        let req = create_from(
            &restored,
            2 * bytes,
            &p.a.name,
            Type::Snapshot(SnapshotSource {
                snapshot_id: snap_id.clone(),
            }),
            &[("thin", "true")],
        );
        tokio::spawn(async move { csi_service(&client).create_volume(req).await })
    };
    assert_eq!(p.a.crash().await, CrashPoint::RestoreAfterClone);
    let lv =
        p.a.lvm
            .snapshot()
            .lv(HDD, &restored)
            .cloned()
            .expect("cloned");
    assert_eq!(lv.size, bytes, "cloned, not grown yet");
    p.a.start();
    let made = csi_call
        .await
        .expect("join")
        .expect("restored")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(made.capacity_bytes, 2 * bytes);
    assert_eq!(
        p.a.lvm.count(hwameistor_testkit::OpKind::CloneThin),
        1,
        "cloned once"
    );
    let lv =
        p.a.lvm
            .snapshot()
            .lvs
            .into_iter()
            .find(|l| l.name == restored)
            .expect("the restored volume");
    assert_eq!(lv.size, 2 * bytes, "grown to the size asked");
    assert_eq!(
        lv.origin.as_deref(),
        Some(hwameistor_core::snapshot::lv_name(&snap_id).as_str())
    );
    let r = p.replica_on(&restored, &p.a.name).await.expect("replica");
    let copy = r.status.clone().and_then(|s| s.copy).expect("copy status");
    assert!(
        copy.verified && copy.lvm_clone && copy.digest.is_none(),
        "{copy:?}"
    );
    assert_eq!(r.status.and_then(|s| s.state), Some(ReplicaState::Ready));

    // A volume still to be filled from the snapshot holds it: its deletion waits, saying
    // why, until that volume no longer needs it.
    let ds = p
        .volume(&restored)
        .await
        .spec
        .data_source
        .expect("data source");
    let waiting = unique("pvc-waiting");
    p.volumes()
        .create(
            &PostParams::default(),
            &LocalVolume::new(
                &waiting,
                LocalVolumeSpec {
                    thin: true,
                    data_source: Some(ds),
                    ..volume_spec(bytes, 1, vec![unique("nowhere")], None)
                },
            ),
        )
        .await
        .expect("create");
    let snapshots = Api::<LocalVolumeSnapshot>::all(client.clone());
    snapshots
        .delete(&snap_id, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the snapshot held", || async {
        let m = snapshots.get(&snap_id).await.ok()?.status?.message?;
        m.contains(&format!("held: volume {waiting}")).then_some(())
    })
    .await;
    p.volumes()
        .delete(&waiting, &DeleteParams::default())
        .await
        .expect("delete");
    // Then it goes, before the volume restored from it (a thin clone is independent).
    eventually("the snapshot removed", || async {
        snapshots
            .get_opt(&snap_id)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    csi.delete_snapshot(tonic::Request::new(DeleteSnapshotRequest {
        snapshot_id: snap_id.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete snapshot");
    for v in [&restored, &vol] {
        csi.delete_volume(tonic::Request::new(DeleteVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    }
    p.a.cleanup().await;
    p.b.cleanup().await;
}
