//! What the CSI Probe answers: the binary's own view of whether it can serve.
//!
//! The spec distinguishes three answers: ready; healthy but still initialising (`ready:
//! false`, the CO retries); and not healthy or missing a dependency (FAILED_PRECONDITION).
//! The identity service cannot know which applies, so the binary that runs it hands it a
//! [`ReadinessSource`]: the controller maps its leader-election and API health onto it, the
//! node agent its LVM and API health. Probe is called often (the livenessprobe sidecar),
//! so a source answers at once from state its binary keeps current; it never does I/O.

use kube::Client;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What Probe answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready to serve the offered services.
    Ready,
    /// Healthy but not ready yet (e.g. a dependency not reached since start): `ready: false`.
    Starting(String),
    /// Not healthy, or a required dependency is missing: FAILED_PRECONDITION.
    Unhealthy(String),
}

impl Readiness {
    /// The verdict of several parts: unhealthy if any is, else starting if any is; the
    /// messages of the deciding parts are joined.
    pub fn all(parts: impl IntoIterator<Item = Readiness>) -> Readiness {
        let (mut starting, mut unhealthy) = (Vec::new(), Vec::new());
        for p in parts {
            match p {
                Readiness::Ready => {}
                Readiness::Starting(m) => starting.push(m),
                Readiness::Unhealthy(m) => unhealthy.push(m),
            }
        }
        if !unhealthy.is_empty() {
            Readiness::Unhealthy(unhealthy.join("; "))
        } else if !starting.is_empty() {
            Readiness::Starting(starting.join("; "))
        } else {
            Readiness::Ready
        }
    }
}

/// Where the identity service learns its readiness. Must answer at once (no I/O).
pub trait ReadinessSource: Send + Sync + 'static {
    fn readiness(&self) -> Readiness;
}

/// Any `Fn() -> Readiness` is a source, so a binary can map its own health state.
impl<F> ReadinessSource for F
where
    F: Fn() -> Readiness + Send + Sync + 'static,
{
    fn readiness(&self) -> Readiness {
        self()
    }
}

#[derive(Debug)]
struct ApiState {
    ok: Option<Instant>,
    error: Option<String>,
}

/// Whether the API server answers, kept current by [`ApiReachability::run`]: starting
/// until it first answers, unhealthy once it has not answered for longer than `stale_after`.
#[derive(Clone, Debug)]
pub struct ApiReachability {
    stale_after: Duration,
    state: Arc<Mutex<ApiState>>,
}

impl ApiReachability {
    pub fn new(stale_after: Duration) -> Self {
        ApiReachability {
            stale_after,
            state: Arc::new(Mutex::new(ApiState {
                ok: None,
                error: None,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        // Plain values: a panic while the lock was held cannot leave them half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an answer (or its absence) of the API server.
    pub fn record(&self, result: Result<(), String>) {
        let mut s = self.state();
        match result {
            Ok(()) => {
                s.ok = Some(Instant::now());
                s.error = None;
            }
            Err(e) => s.error = Some(e),
        }
    }

    /// Asks the API server for its version once and records the outcome.
    pub async fn check(&self, client: &Client) {
        let result = client
            .apiserver_version()
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::debug!(error = %e, "API server check failed");
        }
        self.record(result);
    }

    /// Checks every `period`, for ever.
    pub async fn run(self, client: Client, period: Duration) {
        loop {
            self.check(&client).await;
            tokio::time::sleep(period).await;
        }
    }

    /// The verdict at `now`.
    pub fn readiness_at(&self, now: Instant) -> Readiness {
        let s = self.state();
        let last = s
            .error
            .as_ref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        match s.ok {
            None => Readiness::Starting(format!("the API server has not answered yet{last}")),
            Some(at) if now.saturating_duration_since(at) > self.stale_after => {
                Readiness::Unhealthy(format!(
                    "the API server has not answered for {:?}{last}",
                    now.saturating_duration_since(at)
                ))
            }
            Some(_) => Readiness::Ready,
        }
    }
}

impl ReadinessSource for ApiReachability {
    fn readiness(&self) -> Readiness {
        self.readiness_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_combine_worst_first() {
        use Readiness::*;
        assert_eq!(Readiness::all([]), Ready);
        assert_eq!(Readiness::all([Ready, Ready]), Ready);
        assert_eq!(
            Readiness::all([Ready, Starting("a".into()), Starting("b".into())]),
            Starting("a; b".into())
        );
        assert_eq!(
            Readiness::all([Starting("a".into()), Unhealthy("x".into()), Ready]),
            Unhealthy("x".into())
        );
    }

    #[test]
    fn api_reachability_starts_then_goes_stale() {
        let api = ApiReachability::new(Duration::from_secs(10));
        assert!(matches!(api.readiness(), Readiness::Starting(_)));
        api.record(Err("connection refused".into()));
        match api.readiness() {
            Readiness::Starting(m) => assert!(m.contains("connection refused"), "{m}"),
            other => panic!("{other:?}"),
        }
        api.record(Ok(()));
        assert_eq!(api.readiness(), Readiness::Ready);
        // A failure shortly after a success is tolerated; a long silence is not.
        api.record(Err("timeout".into()));
        assert_eq!(api.readiness(), Readiness::Ready);
        let later = Instant::now() + Duration::from_secs(11);
        match api.readiness_at(later) {
            Readiness::Unhealthy(m) => assert!(m.contains("timeout"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
