//! Reconcile metrics in the Prometheus text format, and a tiny HTTP endpoint serving them
//! with `/healthz`.
//!
//! Two paths on one port do not justify an HTTP framework; the server reads one request
//! line per connection, answers and closes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    leader: AtomicBool,
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

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else { return out };
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
        out.push_str(
            "# HELP hwameistor_controller_leader Whether this instance holds the leader lease.\n",
        );
        out.push_str("# TYPE hwameistor_controller_leader gauge\n");
        let _ = writeln!(
            out,
            "hwameistor_controller_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// The answer to one request line such as `GET /metrics HTTP/1.1`.
pub fn answer(request_line: &str, metrics: &Metrics) -> String {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => response("200 OK", "text/plain; version=0.0.4", &metrics.render()),
        ("GET", "/healthz") => response("200 OK", "text/plain", "ok\n"),
        ("GET", _) => response("404 Not Found", "text/plain", "not found\n"),
        _ => response("405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
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
            let _ = conn.write_all(answer(line, &metrics).as_bytes()).await;
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

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe("localvolume", true, Duration::from_millis(20));
        m.observe("localvolume", true, Duration::from_millis(300));
        m.observe("localvolume", false, Duration::from_secs(20));
        m.set_leader(true);
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
        assert!(text.contains("hwameistor_controller_leader 1\n"));
    }

    #[test]
    fn routes() {
        let m = Metrics::default();
        assert!(answer("GET /healthz HTTP/1.1", &m).starts_with("HTTP/1.1 200 OK"));
        assert!(answer("GET /metrics HTTP/1.1", &m).contains("hwameistor_controller_leader 0"));
        assert!(answer("GET /nope HTTP/1.1", &m).starts_with("HTTP/1.1 404"));
        assert!(answer("POST /metrics HTTP/1.1", &m).starts_with("HTTP/1.1 405"));
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let m = Arc::new(Metrics::default());
        m.observe("localvolume", true, Duration::from_millis(1));
        let server = tokio::spawn(serve(listener, m));
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
