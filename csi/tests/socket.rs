//! The services over a real Unix socket, as the kubelet and the sidecars reach them.

use hwameistor_api::{CSI_DRIVER_NAME, TOPOLOGY_NODE_KEY};
use hwameistor_csi::csi::identity_client::IdentityClient;
use hwameistor_csi::csi::node_client::NodeClient;
use hwameistor_csi::csi::{
    node_service_capability, plugin_capability, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    NodeGetCapabilitiesRequest, NodeGetInfoRequest, ProbeRequest,
};
use hwameistor_csi::exec::HostExecutor;
use hwameistor_csi::identity::IdentityService;
use hwameistor_csi::node::host::Host;
use hwameistor_csi::node::NodeService;
use hwameistor_csi::readiness::Readiness;
use hwameistor_csi::server::{serve, Services};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Endpoint, Uri};

#[tokio::test]
async fn identity_and_node_services_answer_on_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("plugin/csi.sock");
    // A stale socket file from an earlier run must not stop the server.
    std::fs::create_dir_all(sock.parent().expect("parent")).expect("mkdir");
    std::fs::write(&sock, b"stale").expect("stale file");
    let endpoint = format!("unix://{}", sock.display());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Not ready until the test says so: Probe must answer what the binary's source says.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = {
        let ready = ready.clone();
        move || {
            if ready.load(std::sync::atomic::Ordering::SeqCst) {
                Readiness::Ready
            } else {
                Readiness::Starting("warming up".into())
            }
        }
    };
    let services = Services {
        identity: IdentityService::new(false, Arc::new(source)),
        controller: None,
        node: Some(NodeService::new(
            "node-7".into(),
            Host::new(Arc::new(HostExecutor::direct(Duration::from_secs(5)))),
            42,
        )),
    };
    let server = tokio::spawn(async move {
        serve(&endpoint, services, async {
            let _ = stop_rx.await;
        })
        .await
    });

    let path = sock.clone();
    let mut channel = None;
    for _ in 0..50 {
        let p = path.clone();
        let attempt = Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                tokio::net::UnixStream::connect(p.clone())
            }))
            .await;
        if let Ok(c) = attempt {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = channel.expect("connect to the socket");
    let mut identity = IdentityClient::new(channel.clone());
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.name, CSI_DRIVER_NAME);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        identity
            .probe(ProbeRequest {})
            .await
            .expect("probe")
            .into_inner()
            .ready,
        Some(false)
    );
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        identity
            .probe(ProbeRequest {})
            .await
            .expect("probe")
            .into_inner()
            .ready,
        Some(true)
    );
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner()
        .capabilities;
    let services: Vec<i32> = caps
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    use plugin_capability::service::Type as S;
    assert_eq!(
        services,
        vec![S::VolumeAccessibilityConstraints as i32],
        "the node plugin does not claim the controller service"
    );

    let mut node = NodeClient::new(channel);
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .expect("node info")
        .into_inner();
    assert_eq!(
        (info.node_id.as_str(), info.max_volumes_per_node),
        ("node-7", 42)
    );
    assert_eq!(
        info.accessible_topology
            .map(|t| t.segments.get(TOPOLOGY_NODE_KEY).cloned()),
        Some(Some("node-7".to_string()))
    );
    let caps = node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .expect("node caps")
        .into_inner()
        .capabilities;
    let mut rpcs: Vec<i32> = caps
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(node_service_capability::Type::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    rpcs.sort();
    use node_service_capability::rpc::Type as R;
    let mut want = vec![
        R::StageUnstageVolume as i32,
        R::ExpandVolume as i32,
        R::GetVolumeStats as i32,
        R::VolumeCondition as i32,
    ];
    want.sort();
    assert_eq!(rpcs, want);

    stop_tx.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .expect("join")
        .expect("serve ok");
}
