//! The `hwameistor-controller` binary as deployed, against the test cluster (the project's
//! in-process API server, or a shared real cluster): it takes its Lease, serves /healthz,
//! /readyz and /metrics, serves CSI on its socket (a volume is created and deleted through
//! it, with the fake node agent of `common`), and on SIGTERM releases the Lease and exits
//! cleanly. On a shared cluster it runs with a lease of its own and scoped to this test's
//! node (`--scope-selector`). An API outage shows in readiness, never in liveness.

mod common;

use common::{connect_bare, ensure_namespace, install_crds, LEASE_NAMESPACE, SCOPE_LABEL};
use common::{Cluster, GI};
use hwameistor_csi::csi::controller_client::ControllerClient;
use hwameistor_csi::csi::identity_client::IdentityClient;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, MountVolume,
};
use hwameistor_csi::csi::{
    CapacityRange, CreateVolumeRequest, DeleteVolumeRequest, GetPluginCapabilitiesRequest,
    GetPluginInfoRequest, ProbeRequest, VolumeCapability,
};
use hwameistor_csi::topology;
use hwameistor_testapi::{ServerOptions, TestApiServer, TestCluster};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint, Uri};

/// Kills the process if the test fails before it exits.
struct Process(Child);
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Sends SIGTERM and waits (at most 15 s) for the exit.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success());
        self.wait(Duration::from_secs(15)).await
    }

    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return s;
            }
            assert!(t.elapsed() < limit, "the controller did not exit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut c = tokio::net::TcpStream::connect(addr).await.ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).await.ok()?;
    Some(body)
}

async fn status_of(addr: &str, path: &str) -> Option<u16> {
    let body = http_get(addr, path).await?;
    body.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out: {what}");
}

async fn channel(sock: PathBuf) -> Channel {
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            tokio::net::UnixStream::connect(sock.clone())
        }))
        .await
        .expect("connect")
}

fn free_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// Starts the binary with short lease timings: lease 3 s, renew deadline 2 s, retry 500 ms.
fn start_binary(
    kubeconfig: &Path,
    sock: &Path,
    metrics: &str,
    lease: &str,
    identity: &str,
    extra: &[String],
) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_hwameistor-controller"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg(format!("--csi-endpoint=unix://{}", sock.display()))
        .arg(format!("--metrics-addr={metrics}"))
        .arg(format!("--namespace={LEASE_NAMESPACE}"))
        .arg(format!("--lease-name={lease}"))
        .arg(format!("--identity={identity}"))
        .args([
            "--lease-duration=3s",
            "--renew-deadline=2s",
            "--retry-period=500ms",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start controller");
    Process(child)
}

async fn holder(leases: &Api<Lease>, lease: &str) -> Option<String> {
    leases
        .get_opt(lease)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "xfs".into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_leads_serves_csi_and_metrics_and_releases_on_sigterm() {
    let mut cluster: Cluster = connect_bare().await;
    let client = cluster.client.clone();
    ensure_namespace(&client, LEASE_NAMESPACE).await;
    let n1 = cluster.add_node("n1", 10 * GI, 10 * GI).await;
    cluster.spawn_fake_agent();

    let dir = tempfile::tempdir().expect("tempdir");
    // A real cluster's kubeconfig is used where it is: it may name certificate files by
    // paths relative to itself.
    let kubeconfig = match &cluster.server {
        TestCluster::Real { kubeconfig } => kubeconfig.clone(),
        TestCluster::Local(server) => {
            let path = dir.path().join("kubeconfig");
            server
                .write_kubeconfig(&path, "127.0.0.1")
                .expect("kubeconfig");
            path
        }
    };
    let sock = dir.path().join("csi/csi.sock");
    let metrics = free_port();
    let (lease, identity) = (cluster.name("lease"), cluster.name("controller"));
    let scope = format!("--scope-selector={SCOPE_LABEL}={}", cluster.id);
    let mut proc = start_binary(&kubeconfig, &sock, &metrics, &lease, &identity, &[scope]);

    wait_until("healthz", || async {
        status_of(&metrics, "/healthz").await == Some(200)
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    wait_until("the lease", || async {
        holder(&leases, &lease).await.as_deref() == Some(identity.as_str())
    })
    .await;
    wait_until("leading and ready", || async {
        http_get(&metrics, "/metrics").await.is_some_and(|b| {
            b.contains("hwameistor_controller_leader 1\n")
                && b.contains("hwameistor_controller_live 1\n")
                && b.contains("hwameistor_controller_ready 1\n")
        })
    })
    .await;
    assert_eq!(status_of(&metrics, "/readyz").await, Some(200));
    // The pools' gauges, from the nodes' reports (this test's node's HDD pool).
    let free = format!(
        "hwameistor_pool_free_bytes{{node=\"{n1}\",pool=\"LocalStorage_PoolHDD\"}} {}\n",
        10 * GI
    );
    wait_until("pool gauges", || async {
        http_get(&metrics, "/metrics")
            .await
            .is_some_and(|b| b.contains(&free))
    })
    .await;

    wait_until("CSI socket", || async { sock.exists() }).await;
    let ch = channel(sock.clone()).await;
    let info = IdentityClient::new(ch.clone())
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.name, "lvm.hwameistor.io");
    let caps = IdentityClient::new(ch.clone())
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner();
    assert_eq!(
        caps.capabilities.len(),
        3,
        "controller service, accessibility constraints, online expansion"
    );
    // Leading means the API server answers and the election loop runs: Probe says ready.
    let probe = IdentityClient::new(ch.clone())
        .probe(ProbeRequest {})
        .await
        .expect("probe")
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    let pvc = cluster.name("pvc-bin");
    let created = ControllerClient::new(ch.clone())
        .create_volume(CreateVolumeRequest {
            name: pvc.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: GI,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_cap()],
            // Pinned to this test's node: the binary acts on this test's scope only.
            accessibility_requirements: Some(hwameistor_csi::csi::TopologyRequirement {
                requisite: vec![topology::of_node(&n1)],
                preferred: vec![topology::of_node(&n1)],
            }),
            ..Default::default()
        })
        .await
        .expect("create through the binary")
        .into_inner();
    assert_eq!(
        created.volume.map(|v| (v.volume_id, v.capacity_bytes)),
        Some((pvc.clone(), GI))
    );
    // The reconcile that made it Ready finishes (and is counted) just after the answer.
    wait_until("reconcile counted", || async {
        http_get(&metrics, "/metrics")
            .await
            .is_some_and(|t| t.contains("hwameistor_controller_reconcile_total{resource=\"localvolume\",result=\"success\"}"))
    })
    .await;
    ControllerClient::new(ch)
        .delete_volume(DeleteVolumeRequest {
            volume_id: pvc,
            ..Default::default()
        })
        .await
        .expect("delete through the binary");

    // SIGTERM: clean exit, lease released for the standby.
    let status = proc.terminate().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        holder(&leases, &lease).await,
        None,
        "the lease was released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    real_cluster,
    ignore = "stops the in-process API server to make it unreachable"
)]
async fn an_api_outage_shows_in_readiness_not_liveness_and_sigterm_still_exits_cleanly() {
    let server = TestApiServer::start(ServerOptions::default())
        .await
        .expect("test API server");
    let client = server.client().await.expect("client");
    install_crds(&client).await;
    ensure_namespace(&client, LEASE_NAMESPACE).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "127.0.0.1")
        .expect("kubeconfig");
    let sock = dir.path().join("csi.sock");
    let metrics = free_port();
    let mut proc = start_binary(&kubeconfig, &sock, &metrics, "lease", "controller-0", &[]);
    wait_until("leading and ready", || async {
        http_get(&metrics, "/metrics").await.is_some_and(|b| {
            b.contains("hwameistor_controller_leader 1\n")
                && b.contains("hwameistor_controller_ready 1\n")
        })
    })
    .await;
    wait_until("CSI socket", || async { sock.exists() }).await;
    let ch = channel(sock.clone()).await;

    // The API server goes away. Within the renew deadline the controller steps down; once
    // no request has succeeded for a lease duration (3 s) it is not ready, and Probe (the
    // readiness probe, through the sidecar) says why. Liveness stays ok all along: a
    // restart would not bring the API server back.
    server.shutdown().await;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            status_of(&metrics, "/healthz").await,
            Some(200),
            "liveness failed {:?} into the outage",
            down.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = http_get(&metrics, "/readyz").await.expect("readyz");
    assert!(
        body.starts_with("HTTP/1.1 503") && body.contains("no API request has succeeded for"),
        "{body}"
    );
    let text = http_get(&metrics, "/metrics").await.expect("metrics");
    for line in [
        "hwameistor_controller_leader 0\n",
        "hwameistor_controller_live 1\n",
        "hwameistor_controller_ready 0\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let err = IdentityClient::new(ch)
        .probe(ProbeRequest {})
        .await
        .expect_err("not ready without the API server");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    // SIGTERM still ends it cleanly: the release fails (logged) within its bound.
    let status = proc.terminate().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn durations_that_could_overlap_two_leaders_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_hwameistor-controller"))
        .arg("--kubeconfig")
        .arg(dir.path().join("none"))
        .args(["--lease-duration=3s", "--renew-deadline=5s"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must be shorter than the lease duration"),
        "{stderr}"
    );
}
