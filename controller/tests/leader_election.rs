//! The Lease elector against the project's in-process API server.

use hwameistor_controller::leader::{Elector, ElectorConfig};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "hwameistor";

async fn cluster() -> (hwameistor_testapi::TestCluster, Client) {
    let server = hwameistor_testapi::TestCluster::start()
        .await
        .expect("test API server");
    let client = server.client().await.expect("client");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    (server, client)
}

fn config(lease: &str, id: &str) -> ElectorConfig {
    let mut c = ElectorConfig::new(NS, lease, id);
    c.lease_duration = Duration::from_secs(2);
    c.renew_deadline = Duration::from_secs(1);
    c.retry_period = Duration::from_millis(200);
    c
}

async fn holder(client: &Client, lease: &str) -> (Option<String>, i32) {
    let l = Api::<Lease>::namespaced(client.clone(), NS)
        .get(lease)
        .await
        .expect("lease");
    let spec = l.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(-1))
}

#[tokio::test]
async fn one_leader_takeover_after_silence_and_release() {
    let (_server, client) = cluster().await;
    let mut a = Elector::new(client.clone(), config("lease-1", "a"));
    let mut b = Elector::new(client.clone(), config("lease-1", "b"));
    assert!(
        a.try_acquire_or_renew().await.expect("a"),
        "a creates and takes the lease"
    );
    assert!(!b.try_acquire_or_renew().await.expect("b"), "b must wait");
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    assert_eq!(holder(&client, "lease-1").await, (Some("a".into()), 0));

    // a goes silent. b takes over only once the record stood still for the lease duration.
    let started = Instant::now();
    let mut took = None;
    while started.elapsed() < Duration::from_secs(6) {
        if b.try_acquire_or_renew().await.expect("b") {
            took = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = took.expect("b never took over");
    assert!(
        took >= Duration::from_secs(2),
        "took over after {took:?}, before the lease expired"
    );
    assert_eq!(holder(&client, "lease-1").await, (Some("b".into()), 1));
    // a, back, does not snatch it: it has just seen b renew.
    assert!(!a.try_acquire_or_renew().await.expect("a"));

    // A release hands over at once.
    b.release().await.expect("release");
    assert_eq!(holder(&client, "lease-1").await.0, None);
    assert!(
        a.try_acquire_or_renew().await.expect("a"),
        "a takes a released lease immediately"
    );
    assert_eq!(holder(&client, "lease-1").await, (Some("a".into()), 2));
}

/// Counts how often leading work started and how many runs are alive.
#[derive(Default)]
struct Work {
    started: AtomicUsize,
    alive: AtomicUsize,
}

struct Alive(Arc<Work>);
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test]
async fn run_leads_steps_down_when_the_lease_is_lost_and_releases_on_shutdown() {
    let (_server, client) = cluster().await;
    let work = Arc::new(Work::default());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let elector = Elector::new(client.clone(), config("lease-2", "x"));
    let w = work.clone();
    let lead = move || {
        w.started.fetch_add(1, Ordering::SeqCst);
        w.alive.fetch_add(1, Ordering::SeqCst);
        let guard = Alive(w.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await
        }
    };
    let run = tokio::spawn(elector.run(lead, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    wait_for("x leads", || work.alive.load(Ordering::SeqCst) == 1).await;
    assert_eq!(holder(&client, "lease-2").await.0.as_deref(), Some("x"));

    // Someone else overwrites the lease: x cannot renew, stops its work within the renew
    // deadline, and campaigns again (taking over once the intruder stays silent).
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let mut l = leases.get("lease-2").await.expect("lease");
    if let Some(spec) = l.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
    }
    leases
        .replace("lease-2", &PostParams::default(), &l)
        .await
        .expect("intrude");
    let lost_at = Instant::now();
    wait_for("x steps down", || work.alive.load(Ordering::SeqCst) == 0).await;
    assert!(
        lost_at.elapsed() < Duration::from_secs(3),
        "stepped down after {:?}",
        lost_at.elapsed()
    );
    wait_for("x leads again", || {
        work.started.load(Ordering::SeqCst) == 2 && work.alive.load(Ordering::SeqCst) == 1
    })
    .await;

    // Shutdown stops the work and releases the lease.
    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run ends")
        .expect("join");
    assert_eq!(work.alive.load(Ordering::SeqCst), 0);
    assert_eq!(holder(&client, "lease-2").await.0, None);
}
