//! The `hwameistor-controller` binary as deployed: against the project's test API server,
//! it takes the Lease, serves /healthz and /metrics, serves CSI on its socket (a volume is
//! created through it, with the fake node agent of `common`), and on SIGTERM releases the
//! Lease and exits cleanly.

mod common;

use common::{add_node, fake_node_agent, install_crds, GI};
use hwameistor_csi::csi::controller_client::ControllerClient;
use hwameistor_csi::csi::identity_client::IdentityClient;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, MountVolume,
};
use hwameistor_csi::csi::{
    CapacityRange, CreateVolumeRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    ProbeRequest, VolumeCapability,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use std::process::{Child, Command};
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

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut c = tokio::net::TcpStream::connect(addr).await.ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).await.ok()?;
    Some(body)
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

async fn channel(sock: std::path::PathBuf) -> Channel {
    Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            tokio::net::UnixStream::connect(sock.clone())
        }))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_leads_serves_csi_and_metrics_and_releases_on_sigterm() {
    let cluster = hwameistor_testapi::TestCluster::start()
        .await
        .expect("test API server");
    let server = cluster
        .local()
        .expect("in-process server (this test needs to write its kubeconfig)");
    let client = cluster.client().await.expect("client");
    install_crds(&client).await;
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("hwameistor".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    add_node(&client, "n1", 10 * GI, 10 * GI).await;
    let fake = tokio::spawn(fake_node_agent(client.clone()));

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "127.0.0.1")
        .expect("kubeconfig");
    let sock = dir.path().join("csi/csi.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_hwameistor-controller"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg(format!("--csi-endpoint=unix://{}", sock.display()))
        .arg(format!("--metrics-addr={metrics}"))
        .args([
            "--identity=controller-0",
            "--lease-duration=3s",
            "--renew-deadline=2s",
            "--retry-period=500ms",
        ])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start controller");
    let mut proc = Process(child);

    wait_until("healthz", || async {
        http_get(&metrics, "/healthz")
            .await
            .is_some_and(|b| b.starts_with("HTTP/1.1 200"))
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "hwameistor");
    wait_until("the lease", || async {
        leases
            .get_opt("hwameistor-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .as_deref()
            == Some("controller-0")
    })
    .await;
    wait_until("leader gauge", || async {
        http_get(&metrics, "/metrics")
            .await
            .is_some_and(|b| b.contains("hwameistor_controller_leader 1"))
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
    let created = ControllerClient::new(ch)
        .create_volume(CreateVolumeRequest {
            name: "pvc-bin".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: GI,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![VolumeCapability {
                access_mode: Some(AccessMode {
                    mode: Mode::SingleNodeWriter as i32,
                }),
                access_type: Some(AccessType::Mount(MountVolume {
                    fs_type: "xfs".into(),
                    mount_flags: vec![],
                    volume_mount_group: String::new(),
                })),
            }],
            ..Default::default()
        })
        .await
        .expect("create through the binary")
        .into_inner();
    assert_eq!(
        created.volume.map(|v| (v.volume_id, v.capacity_bytes)),
        Some(("pvc-bin".to_string(), GI))
    );
    // The reconcile that made it Ready finishes (and is counted) just after the answer.
    wait_until("reconcile counted", || async {
        http_get(&metrics, "/metrics")
            .await
            .is_some_and(|t| t.contains("hwameistor_controller_reconcile_total{resource=\"localvolume\",result=\"success\"}"))
    })
    .await;

    // SIGTERM: clean exit, lease released for the standby.
    let pid = proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = proc.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "controller did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    let holder = leases
        .get("hwameistor-controller")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the lease was released");
    fake.abort();
}
