//! The API-server part of Probe's readiness against a real (in-process) API server and
//! against an address where nothing answers.

use hwameistor_csi::readiness::{ApiReachability, Readiness, ReadinessSource};
use std::time::Duration;

#[tokio::test]
async fn reachability_follows_the_api_server() {
    let cluster = hwameistor_testapi::TestCluster::start()
        .await
        .expect("test API server");
    let client = cluster.client().await.expect("client");
    let api = ApiReachability::new(Duration::from_secs(30));
    assert!(matches!(api.readiness(), Readiness::Starting(_)));
    api.check(&client).await;
    assert_eq!(api.readiness(), Readiness::Ready);

    // Nothing listens on port 1 of the loopback address: never reached, so not ready.
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
    let dead = kube::Client::try_from(config).expect("client");
    let unreached = ApiReachability::new(Duration::from_secs(30));
    unreached.check(&dead).await;
    match unreached.readiness() {
        Readiness::Starting(m) => assert!(m.contains("last error"), "{m}"),
        other => panic!("{other:?}"),
    }
}
