//! The Lease elector against the test cluster (the project's in-process API server, or a real
//! one): every lease has a name of its own, so the tests run side by side and on a shared
//! cluster. API outages are injected by a client that fails on demand in front of the real
//! one, so they work on both too.

mod common;

use common::{connect_bare, ensure_namespace, Cluster, LEASE_NAMESPACE as NS};
use hwameistor_controller::leader::{Elector, ElectorConfig, RunError};
use hwameistor_controller::metrics::{ElectionPhase, Health, HealthLimits, Unhealthy};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn cluster() -> Cluster {
    let c = connect_bare().await;
    ensure_namespace(&c.client, NS).await;
    c
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
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let lease = cluster.name("lease");
    let mut a = Elector::new(client.clone(), config(&lease, "a"));
    let mut b = Elector::new(client.clone(), config(&lease, "b"));
    assert!(
        a.try_acquire_or_renew().await.expect("a"),
        "a creates and takes the lease"
    );
    assert!(!b.try_acquire_or_renew().await.expect("b"), "b must wait");
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    assert_eq!(holder(&client, &lease).await, (Some("a".into()), 0));

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
    assert_eq!(holder(&client, &lease).await, (Some("b".into()), 1));
    // a, back, does not snatch it: it has just seen b renew.
    assert!(!a.try_acquire_or_renew().await.expect("a"));

    // A release hands over at once.
    b.release().await.expect("release");
    assert_eq!(holder(&client, &lease).await.0, None);
    assert!(
        a.try_acquire_or_renew().await.expect("a"),
        "a takes a released lease immediately"
    );
    assert_eq!(holder(&client, &lease).await, (Some("a".into()), 2));
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

impl Work {
    /// A `lead` for [`Elector::run`] whose work runs until it is dropped.
    fn forever(
        self: &Arc<Self>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let w = self.clone();
        move || {
            w.started.fetch_add(1, Ordering::SeqCst);
            w.alive.fetch_add(1, Ordering::SeqCst);
            let guard = Alive(w.clone());
            Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            })
        }
    }

    fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out: {what}");
}

fn stop_signal() -> (
    tokio::sync::watch::Sender<bool>,
    impl std::future::Future<Output = ()>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

/// Writes `intruder` as the lease's holder, as another candidate taking over would.
async fn steal(client: &Client, lease: &str, intruder: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    // The leader renews all the time: retry the compare-and-swap until it wins a round.
    for _ in 0..50 {
        let mut l = leases.get(lease).await.expect("lease");
        if let Some(spec) = l.spec.as_mut() {
            spec.holder_identity = Some(intruder.into());
        }
        match leases.replace(lease, &PostParams::default(), &l).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("steal the lease: {e}"),
        }
    }
    panic!("could not steal the lease in 50 attempts");
}

#[tokio::test]
async fn a_stolen_lease_stops_the_work_at_once_and_the_elector_campaigns_again() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let lease = cluster.name("lease");
    let work = Arc::new(Work::default());
    let (stop, stopped) = stop_signal();
    let mut c = config(&lease, "x");
    // A renew deadline far longer than the step-down the test allows: the work must stop
    // because the lease names someone else, not because renewals ran out of time.
    c.lease_duration = Duration::from_secs(4);
    c.renew_deadline = Duration::from_secs(3);
    c.retry_period = Duration::from_millis(100);
    let run = tokio::spawn(Elector::new(client.clone(), c).run(work.forever(), stopped));
    wait_for("x leads", || work.alive() == 1).await;
    assert_eq!(holder(&client, &lease).await.0.as_deref(), Some("x"));

    steal(&client, &lease, "intruder").await;
    let stolen_at = Instant::now();
    wait_for("x steps down", || work.alive() == 0).await;
    assert!(
        stolen_at.elapsed() < Duration::from_millis(1500),
        "stepped down after {:?}, not at its next renewal",
        stolen_at.elapsed()
    );
    // The intruder stays silent: x campaigns and takes over once the lease expired.
    wait_for("x leads again", || work.started() == 2 && work.alive() == 1).await;
    assert!(
        stolen_at.elapsed() >= Duration::from_secs(4),
        "took the lease back after {:?}, before it expired",
        stolen_at.elapsed()
    );
    assert_eq!(holder(&client, &lease).await.0.as_deref(), Some("x"));

    // Shutdown stops the work and releases the lease.
    stop.send(true).expect("stop");
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run ends")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(work.alive(), 0);
    assert_eq!(holder(&client, &lease).await.0, None);
}

/// A client in front of `inner` that fails every request while `down` is set, as an API
/// server that went away would.
fn flaky_client(inner: Client, down: Arc<AtomicBool>) -> Client {
    let service = tower::service_fn(move |req| {
        let (inner, down) = (inner.clone(), down.load(Ordering::SeqCst));
        async move {
            if down {
                Err(kube::Error::Service(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "injected: the API server is down",
                ))))
            } else {
                inner.send(req).await
            }
        }
    });
    Client::new(service, NS)
}

#[tokio::test]
async fn an_api_outage_steps_down_keeps_campaigning_and_shows_in_readiness_only() {
    let cluster = cluster().await;
    let lease = cluster.name("lease");
    let down = Arc::new(AtomicBool::new(false));
    let client = flaky_client(cluster.client.clone(), down.clone());
    let health = Arc::new(Health::new(HealthLimits {
        api_fresh_for: Duration::from_millis(600),
        election_stale_after: Duration::from_millis(2400),
    }));
    let work = Arc::new(Work::default());
    let (stop, stopped) = stop_signal();
    let elector = Elector::new(client, config(&lease, "x")).with_health(health.clone());
    let run = tokio::spawn(elector.run(work.forever(), stopped));
    wait_for("x leads", || work.alive() == 1).await;
    assert!(health.is_leader());
    assert_eq!(health.readiness(), Ok(()));

    // The API server goes away: within the renew deadline (1 s) and a retry the work stops,
    // before the 2 s lease could expire for anyone else.
    down.store(true, Ordering::SeqCst);
    let down_at = Instant::now();
    wait_for("x steps down", || work.alive() == 0).await;
    assert!(
        down_at.elapsed() < Duration::from_millis(1800),
        "stepped down after {:?}",
        down_at.elapsed()
    );
    // The outage lasts: the elector campaigns (alive, so no restart) and is not ready.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        assert_eq!(health.liveness(), Ok(()), "a restart would not help");
        assert_eq!(health.phase(), ElectionPhase::Campaigning);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match health.readiness() {
        Err(Unhealthy::ApiStale { last_error, .. }) => assert!(
            last_error
                .as_deref()
                .is_some_and(|e| e.contains("injected")),
            "{last_error:?}"
        ),
        other => panic!("ready during the outage: {other:?}"),
    }
    assert_eq!(work.started(), 1);

    // The API server returns: the elector leads again by itself.
    down.store(false, Ordering::SeqCst);
    wait_for("x leads again", || work.started() == 2 && work.alive() == 1).await;
    assert_eq!(health.readiness(), Ok(()));
    assert!(health.is_leader());

    stop.send(true).expect("stop");
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run ends")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(health.phase(), ElectionPhase::Stopped);
    assert_eq!(health.liveness(), Err(Unhealthy::ElectionStopped));
    assert_eq!(holder(&cluster.client, &lease).await.0, None);
}

#[tokio::test]
async fn work_that_ends_or_panics_releases_the_lease_and_fails_the_run() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    for panics in [false, true] {
        let lease = cluster.name(if panics { "panics" } else { "ends" });
        let health = Arc::new(Health::new(HealthLimits {
            api_fresh_for: Duration::from_secs(2),
            election_stale_after: Duration::from_secs(5),
        }));
        let lead = move || async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if panics {
                panic!("boom: the work failed");
            }
        };
        let (_stop, stopped) = stop_signal();
        let elector = Elector::new(client.clone(), config(&lease, "x")).with_health(health.clone());
        // The run returns by itself: the work ended, nobody asked for a shutdown.
        let result = tokio::time::timeout(Duration::from_secs(10), elector.run(lead, stopped))
            .await
            .expect("run returns when the work ends");
        match (panics, result) {
            (false, Err(RunError::WorkEnded)) => {}
            (true, Err(RunError::WorkPanicked(msg))) => {
                assert!(msg.contains("boom"), "{msg}")
            }
            (_, other) => panic!("panics={panics}: {other:?}"),
        }
        // Released on the way out, so a standby takes over at once, and the process
        // reports itself dead until it is restarted.
        assert_eq!(holder(&client, &lease).await.0, None);
        let mut standby = Elector::new(client.clone(), config(&lease, "y"));
        assert!(standby.try_acquire_or_renew().await.expect("y"));
        assert_eq!(health.liveness(), Err(Unhealthy::ElectionStopped));
    }
}
