//! Reconcile metrics in the Prometheus text format, the controller's health, and a tiny HTTP
//! endpoint serving them: `/metrics`, `/healthz` (liveness) and `/readyz` (readiness).
//!
//! Three paths on one port do not justify an HTTP framework; the server reads one request
//! line per connection, answers and closes.
//!
//! Liveness and readiness answer different questions, so they are different endpoints:
//!
//! - `/healthz` (liveness: "restart me?") fails only when this process is broken in a way a
//!   restart fixes: the leader-election loop has stopped or has not reported for too long.
//!   It does not depend on the API server: when the API server is briefly down every
//!   replica would fail the probe at once, the kubelet would restart them all, and the new
//!   processes could not reach the API server either. The election loop keeps trying by
//!   itself and resumes the work as soon as the API server answers.
//! - `/readyz` (readiness: "is this instance able to do its job?") also requires a recent
//!   successful API request. The signal is the election loop's own lease traffic (a request
//!   every retry period, leader or not), so the probe costs no extra request and never
//!   blocks on a slow API server.

use hwameistor_api::PoolStatus;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the duration histogram, in seconds.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    /// (resource, result) → count.
    reconciles: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    /// Each storage node's pools as its agent last reported them.
    pools: BTreeMap<String, BTreeMap<String, PoolStatus>>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn observe(&self, resource: &str, ok: bool, elapsed: Duration) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.reconciles
            .entry((resource.to_string(), if ok { "success" } else { "error" }))
            .or_default() += 1;
        let h = m.durations.entry(resource.to_string()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Records `node`'s pools as its LocalStorageNode reports them (`None`: the node is
    /// gone), for the pool gauges.
    pub fn set_pools(&self, node: &str, pools: Option<&BTreeMap<String, PoolStatus>>) {
        let Ok(mut m) = self.inner.lock() else { return };
        match pools {
            Some(p) => {
                m.pools.insert(node.to_string(), p.clone());
            }
            None => {
                m.pools.remove(node);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else { return out };
        render_pools(&mut out, &m.pools);
        out.push_str(
            "# HELP hwameistor_controller_reconcile_total Reconciles by resource and result.\n",
        );
        out.push_str("# TYPE hwameistor_controller_reconcile_total counter\n");
        for ((resource, result), n) in &m.reconciles {
            let _ = writeln!(out, "hwameistor_controller_reconcile_total{{resource=\"{resource}\",result=\"{result}\"}} {n}");
        }
        out.push_str(
            "# HELP hwameistor_controller_reconcile_duration_seconds Time one reconcile took.\n",
        );
        out.push_str("# TYPE hwameistor_controller_reconcile_duration_seconds histogram\n");
        for (resource, h) in &m.durations {
            for (le, c) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(out, "hwameistor_controller_reconcile_duration_seconds_bucket{{resource=\"{resource}\",le=\"{le}\"}} {c}");
            }
            let _ = writeln!(out, "hwameistor_controller_reconcile_duration_seconds_bucket{{resource=\"{resource}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "hwameistor_controller_reconcile_duration_seconds_sum{{resource=\"{resource}\"}} {}", h.sum);
            let _ = writeln!(out, "hwameistor_controller_reconcile_duration_seconds_count{{resource=\"{resource}\"}} {}", h.count);
        }
        out
    }
}

/// The pool gauges: capacity and free space of every pool, and the use of thin pools (a
/// full thin pool stops every thin volume in it: alert on `data_used_percent`).
fn render_pools(out: &mut String, pools: &BTreeMap<String, BTreeMap<String, PoolStatus>>) {
    type Value = fn(&PoolStatus) -> Option<i64>;
    let gauges: [(&str, &str, Value); 7] = [
        (
            "hwameistor_pool_capacity_bytes",
            "Size of a node's pool (volume group).",
            |p| Some(p.total_capacity_bytes),
        ),
        (
            "hwameistor_pool_free_bytes",
            "Free space of a node's pool.",
            |p| Some(p.free_capacity_bytes),
        ),
        (
            "hwameistor_thin_pool_data_bytes",
            "Data size of a pool's thin pool.",
            |p| p.thin.as_ref().map(|t| t.data_bytes),
        ),
        (
            "hwameistor_thin_pool_data_used_percent",
            "Percent of a thin pool's data in use; every thin volume in it stops taking writes at 100.",
            |p| p.thin.as_ref().map(|t| t.data_used_percent),
        ),
        (
            "hwameistor_thin_pool_metadata_used_percent",
            "Percent of a thin pool's metadata in use.",
            |p| p.thin.as_ref().map(|t| t.metadata_used_percent),
        ),
        (
            "hwameistor_thin_pool_provisioned_bytes",
            "Sum of the sizes of a thin pool's thin volumes.",
            |p| p.thin.as_ref().map(|t| t.provisioned_bytes),
        ),
        (
            "hwameistor_thin_pool_overprovision_percent",
            "How far the node's agent lets thin volumes over-provision its thin pools.",
            |p| p.thin_overprovision_percent,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (node, of_node) in pools {
            for (pool, p) in of_node {
                if let Some(v) = value(p) {
                    let _ = writeln!(out, "{name}{{node=\"{node}\",pool=\"{pool}\"}} {v}");
                }
            }
        }
    }
}

/// What the leader-election loop is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionPhase {
    /// The loop has not reported yet.
    NotStarted,
    /// Trying to take the lease (someone else holds it, or the API server cannot be reached).
    Campaigning,
    /// Holding the lease and running the work.
    Leading,
    /// The loop has returned: nothing will ever lead from this process again.
    Stopped,
}

/// How old the health signals may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthLimits {
    /// Not ready when no API request has succeeded for longer than this.
    pub api_fresh_for: Duration,
    /// Not alive when the election loop has not reported for longer than this. Each of its
    /// rounds is a sleep and one bounded request, so a healthy loop reports far more often.
    pub election_stale_after: Duration,
}

/// Why a probe fails.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("the leader-election loop has stopped")]
    ElectionStopped,
    #[error("the leader-election loop has not reported for {0:?}")]
    ElectionStuck(Duration),
    #[error("no API request has succeeded yet{}", last_error_suffix(.last_error))]
    ApiNeverReached { last_error: Option<String> },
    #[error("no API request has succeeded for {since:?}{}", last_error_suffix(.last_error))]
    ApiStale {
        since: Duration,
        last_error: Option<String>,
    },
}

fn last_error_suffix(e: &Option<String>) -> String {
    e.as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

#[derive(Debug)]
struct HealthState {
    created: Instant,
    phase: ElectionPhase,
    /// When the election loop last reported.
    beat: Option<Instant>,
    api_ok: Option<Instant>,
    api_error: Option<String>,
}

/// The controller's health as its parts report it; read by `/healthz`, `/readyz`, `/metrics`
/// and the CSI identity service's Probe.
#[derive(Debug)]
pub struct Health {
    limits: HealthLimits,
    state: Mutex<HealthState>,
}

impl Health {
    pub fn new(limits: HealthLimits) -> Self {
        Health {
            limits,
            state: Mutex::new(HealthState {
                created: Instant::now(),
                phase: ElectionPhase::NotStarted,
                beat: None,
                api_ok: None,
                api_error: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Plain values only: a panic while the lock was held cannot leave them half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The election loop reports what it is doing; every report is also a heartbeat.
    pub fn election(&self, phase: ElectionPhase) {
        let mut s = self.state();
        s.phase = phase;
        s.beat = Some(Instant::now());
    }

    pub fn api_succeeded(&self) {
        let mut s = self.state();
        s.api_ok = Some(Instant::now());
        s.api_error = None;
    }

    pub fn api_failed(&self, error: &dyn std::fmt::Display) {
        self.state().api_error = Some(error.to_string());
    }

    pub fn phase(&self) -> ElectionPhase {
        self.state().phase
    }

    pub fn is_leader(&self) -> bool {
        self.phase() == ElectionPhase::Leading
    }

    /// Liveness at `now`: the election loop runs and reports.
    pub fn liveness_at(&self, now: Instant) -> Result<(), Unhealthy> {
        let s = self.state();
        if s.phase == ElectionPhase::Stopped {
            return Err(Unhealthy::ElectionStopped);
        }
        // A loop that never reported is judged from when this process started.
        let silent = now.saturating_duration_since(s.beat.unwrap_or(s.created));
        if silent > self.limits.election_stale_after {
            return Err(Unhealthy::ElectionStuck(silent));
        }
        Ok(())
    }

    /// Readiness at `now`: alive, and the API server answered recently.
    pub fn readiness_at(&self, now: Instant) -> Result<(), Unhealthy> {
        self.liveness_at(now)?;
        let s = self.state();
        match s.api_ok {
            None => Err(Unhealthy::ApiNeverReached {
                last_error: s.api_error.clone(),
            }),
            Some(at) => {
                let since = now.saturating_duration_since(at);
                if since > self.limits.api_fresh_for {
                    Err(Unhealthy::ApiStale {
                        since,
                        last_error: s.api_error.clone(),
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    pub fn liveness(&self) -> Result<(), Unhealthy> {
        self.liveness_at(Instant::now())
    }

    pub fn readiness(&self) -> Result<(), Unhealthy> {
        self.readiness_at(Instant::now())
    }

    /// Gauges for `/metrics`.
    pub fn render(&self) -> String {
        let now = Instant::now();
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: bool| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", u8::from(value));
        };
        gauge(
            &mut out,
            "hwameistor_controller_leader",
            "Whether this instance holds the leader lease.",
            self.is_leader(),
        );
        gauge(
            &mut out,
            "hwameistor_controller_live",
            "Whether /healthz answers ok (the leader-election loop runs).",
            self.liveness_at(now).is_ok(),
        );
        gauge(
            &mut out,
            "hwameistor_controller_ready",
            "Whether /readyz answers ok (alive and the API server answered recently).",
            self.readiness_at(now).is_ok(),
        );
        out
    }
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

fn probe(result: Result<(), Unhealthy>) -> String {
    match result {
        Ok(()) => response("200 OK", "text/plain", "ok\n"),
        Err(why) => response(
            "503 Service Unavailable",
            "text/plain",
            &format!("unhealthy: {why}\n"),
        ),
    }
}

/// The answer to one request line such as `GET /metrics HTTP/1.1`.
pub fn answer(request_line: &str, metrics: &Metrics, health: &Health) -> String {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => {
            let body = metrics.render() + &health.render();
            response("200 OK", "text/plain; version=0.0.4", &body)
        }
        ("GET", "/healthz") => probe(health.liveness()),
        ("GET", "/readyz") => probe(health.readiness()),
        ("GET", _) => response("404 Not Found", "text/plain", "not found\n"),
        _ => response("405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning on it.
                tracing::warn!(error = %e, "metrics endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // A slow or silent client gets two seconds, then the connection is dropped.
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                while len < buf.len() {
                    let n = conn.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let text = String::from_utf8_lossy(&buf[..len]);
            let line = text.lines().next().unwrap_or("");
            let _ = conn
                .write_all(answer(line, &metrics, &health).as_bytes())
                .await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HealthLimits = HealthLimits {
        api_fresh_for: Duration::from_secs(15),
        election_stale_after: Duration::from_secs(30),
    };

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe("localvolume", true, Duration::from_millis(20));
        m.observe("localvolume", true, Duration::from_millis(300));
        m.observe("localvolume", false, Duration::from_secs(20));
        let text = m.render();
        assert!(text.contains("hwameistor_controller_reconcile_total{resource=\"localvolume\",result=\"success\"} 2\n"), "{text}");
        assert!(text.contains(
            "hwameistor_controller_reconcile_total{resource=\"localvolume\",result=\"error\"} 1\n"
        ));
        assert!(text.contains("_bucket{resource=\"localvolume\",le=\"0.025\"} 1\n"));
        assert!(text.contains("_bucket{resource=\"localvolume\",le=\"0.5\"} 2\n"));
        assert!(text.contains("_bucket{resource=\"localvolume\",le=\"10\"} 2\n"));
        assert!(text.contains("_bucket{resource=\"localvolume\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("_count{resource=\"localvolume\"} 3\n"));
    }

    #[test]
    fn renders_pool_and_thin_pool_gauges() {
        let m = Metrics::default();
        let pool = |class: hwameistor_api::PoolClass, total: i64, free: i64| PoolStatus {
            name: class.pool_name().into(),
            class,
            total_capacity_bytes: total,
            used_capacity_bytes: total - free,
            free_capacity_bytes: free,
            extent_size_bytes: 4 << 20,
            volume_count: 0,
            disks: Vec::new(),
            thin: None,
            thin_overprovision_percent: None,
        };
        let thick = pool(hwameistor_api::PoolClass::Hdd, 100, 40);
        let thin = PoolStatus {
            thin: Some(hwameistor_api::ThinPoolStatus {
                data_bytes: 64,
                data_used_percent: 83,
                metadata_used_percent: 12,
                provisioned_bytes: 128,
                ..Default::default()
            }),
            thin_overprovision_percent: Some(200),
            ..pool(hwameistor_api::PoolClass::Ssd, 200, 10)
        };
        let pools = BTreeMap::from([
            ("LocalStorage_PoolHDD".to_string(), thick),
            ("LocalStorage_PoolSSD".to_string(), thin),
        ]);
        m.set_pools("n1", Some(&pools));
        let out = m.render();
        for line in [
            "hwameistor_pool_free_bytes{node=\"n1\",pool=\"LocalStorage_PoolHDD\"} 40",
            "hwameistor_pool_capacity_bytes{node=\"n1\",pool=\"LocalStorage_PoolSSD\"} 200",
            "hwameistor_thin_pool_data_used_percent{node=\"n1\",pool=\"LocalStorage_PoolSSD\"} 83",
            "hwameistor_thin_pool_metadata_used_percent{node=\"n1\",pool=\"LocalStorage_PoolSSD\"} 12",
            "hwameistor_thin_pool_provisioned_bytes{node=\"n1\",pool=\"LocalStorage_PoolSSD\"} 128",
            "hwameistor_thin_pool_overprovision_percent{node=\"n1\",pool=\"LocalStorage_PoolSSD\"} 200",
            "# TYPE hwameistor_thin_pool_data_used_percent gauge",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        // A pool without a thin pool has no thin gauges.
        assert!(!out.contains(
            "hwameistor_thin_pool_data_bytes{node=\"n1\",pool=\"LocalStorage_PoolHDD\"}"
        ));
        m.set_pools("n1", None);
        assert!(!m.render().contains("node=\"n1\""));
    }

    #[test]
    fn liveness_follows_the_election_loop_only() {
        let h = Health::new(LIMITS);
        let t0 = Instant::now();
        // Just started: alive (the loop gets its grace from the process start).
        assert_eq!(h.liveness_at(t0), Ok(()));
        h.election(ElectionPhase::Campaigning);
        // The API server has never answered: still alive, a restart would not help.
        h.api_failed(&"connection refused");
        assert_eq!(h.liveness_at(Instant::now()), Ok(()));
        // A loop that stopped reporting is stuck; one that returned is dead.
        let later = Instant::now() + Duration::from_secs(31);
        assert!(matches!(
            h.liveness_at(later),
            Err(Unhealthy::ElectionStuck(d)) if d > Duration::from_secs(30)
        ));
        h.election(ElectionPhase::Stopped);
        assert_eq!(
            h.liveness_at(Instant::now()),
            Err(Unhealthy::ElectionStopped)
        );
    }

    #[test]
    fn readiness_needs_a_recent_api_success() {
        let h = Health::new(LIMITS);
        h.election(ElectionPhase::Campaigning);
        h.api_failed(&"connection refused");
        let err = h.readiness_at(Instant::now()).expect_err("never reached");
        assert_eq!(
            err.to_string(),
            "no API request has succeeded yet (last error: connection refused)"
        );
        h.api_succeeded();
        assert_eq!(h.readiness_at(Instant::now()), Ok(()));
        // A failure after a success does not flip readiness until the success is stale.
        h.api_failed(&"timed out");
        assert_eq!(h.readiness_at(Instant::now()), Ok(()));
        // The loop keeps reporting while the API server stays away.
        let later = Instant::now() + Duration::from_secs(16);
        assert!(matches!(
            h.readiness_at(later),
            Err(Unhealthy::ApiStale { last_error: Some(ref e), .. }) if e == "timed out"
        ));
        // Not alive means not ready, whatever the API server does.
        h.election(ElectionPhase::Stopped);
        assert_eq!(
            h.readiness_at(Instant::now()),
            Err(Unhealthy::ElectionStopped)
        );
    }

    #[test]
    fn routes() {
        let m = Metrics::default();
        let h = Health::new(LIMITS);
        h.election(ElectionPhase::Campaigning);
        assert!(answer("GET /healthz HTTP/1.1", &m, &h).starts_with("HTTP/1.1 200 OK"));
        let not_ready = answer("GET /readyz HTTP/1.1", &m, &h);
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("unhealthy: no API request has succeeded yet\n"));
        h.api_succeeded();
        assert!(answer("GET /readyz HTTP/1.1", &m, &h).starts_with("HTTP/1.1 200 OK"));
        let text = answer("GET /metrics HTTP/1.1", &m, &h);
        for line in [
            "hwameistor_controller_leader 0\n",
            "hwameistor_controller_live 1\n",
            "hwameistor_controller_ready 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        h.election(ElectionPhase::Leading);
        assert!(
            answer("GET /metrics HTTP/1.1", &m, &h).contains("hwameistor_controller_leader 1\n")
        );
        h.election(ElectionPhase::Stopped);
        assert!(answer("GET /healthz HTTP/1.1", &m, &h).starts_with("HTTP/1.1 503"));
        let text = answer("GET /metrics HTTP/1.1", &m, &h);
        assert!(text.contains("hwameistor_controller_live 0\n"), "{text}");
        assert!(answer("GET /nope HTTP/1.1", &m, &h).starts_with("HTTP/1.1 404"));
        assert!(answer("POST /metrics HTTP/1.1", &m, &h).starts_with("HTTP/1.1 405"));
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let m = Arc::new(Metrics::default());
        m.observe("localvolume", true, Duration::from_millis(1));
        let server = tokio::spawn(serve(listener, m, Arc::new(Health::new(LIMITS))));
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut body = String::new();
        c.read_to_string(&mut body).await.expect("read");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("result=\"success\"} 1"), "{body}");
        server.abort();
    }
}
