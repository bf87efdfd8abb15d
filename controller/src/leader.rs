//! Leader election on a coordination.k8s.io/v1 Lease.
//!
//! Expiry is judged by the local clock only: a candidate notes when it last saw the lease
//! record change and takes over once it has not changed for a whole lease duration. The
//! holder's timestamps are written for people and other tools but never compared with
//! this machine's clock, so clock skew between nodes cannot cause two leaders. The leader
//! gives up (stops its work) when it could not renew for `renew_deadline`, which is shorter
//! than the lease duration, so it stops before anyone else may start.

use crate::metrics::{ElectionPhase, Health};
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ElectorConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are (pod name); must differ between candidates.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectorConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        ElectorConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The parts of a lease that show it is alive: any change means the holder renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub transitions: i32,
}

impl Record {
    pub fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No one holds the lease, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and is alive.
    Wait { holder: String },
}

/// What a candidate remembers between attempts.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    last: Option<(Record, Instant)>,
}

impl Observation {
    /// Decides what to do about `lease` seen at `now`. Pure but for updating the memory of
    /// when the record last changed.
    pub fn assess(
        &mut self,
        me: &str,
        lease: Option<&LeaseSpec>,
        duration: Duration,
        now: Instant,
    ) -> Decision {
        let Some(spec) = lease else {
            return Decision::Acquire;
        };
        let record = Record::of(spec);
        let Some(holder) = record.holder.clone() else {
            return Decision::Acquire;
        };
        if holder == me {
            return Decision::Renew;
        }
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(duration);
        match &self.last {
            Some((seen, at)) if *seen == record => {
                if now.duration_since(*at) > duration {
                    Decision::Acquire
                } else {
                    Decision::Wait { holder }
                }
            }
            _ => {
                self.last = Some((record, now));
                Decision::Wait { holder }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("lease request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("lease request got no answer within {0:?}")]
    Timeout(Duration),
}

/// Durations that cannot work together.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?}), or two leaders could overlap")]
    DeadlineNotShorterThanLease {
        renew_deadline: Duration,
        lease_duration: Duration,
    },
    #[error("the retry period ({retry_period:?}) must be shorter than the renew deadline ({renew_deadline:?}), or the leader steps down before its first renewal")]
    RetryNotShorterThanDeadline {
        retry_period: Duration,
        renew_deadline: Duration,
    },
    #[error("the lease duration must be at least one second (leases count whole seconds)")]
    LeaseTooShort,
}

impl ElectorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::LeaseTooShort);
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(ConfigError::DeadlineNotShorterThanLease {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotShorterThanDeadline {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// Why [`Elector::run`] returned other than by shutdown. Both leave the lease released, so
/// a standby takes over at once; the process should exit non-zero and be restarted.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the leader's work ended although it should run until stopped; lease released")]
    WorkEnded,
    #[error("the leader's work panicked: {0}; lease released")]
    WorkPanicked(String),
}

/// The outcome of one attempt to acquire or renew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease.
    Held,
    /// Another candidate holds it and is alive.
    HeldBy(String),
    /// Our write lost a race with another writer; the next attempt decides afresh.
    Conflict,
}

/// Why a leader stopped leading and campaigns again.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lost {
    /// Another candidate holds the lease: stop at once, it believes it leads.
    TakenBy(String),
    /// No renewal within the renew deadline (API errors, timeouts, refused writes).
    Deadline,
}

pub struct Elector {
    api: Api<Lease>,
    config: ElectorConfig,
    observed: Observation,
    health: Option<Arc<Health>>,
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Elector {
    pub fn new(client: Client, config: ElectorConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observation::default(),
            health: None,
        }
    }

    /// Reports the loop's phase and every lease request's outcome to `health`.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn report(&self, phase: ElectionPhase) {
        if let Some(h) = &self.health {
            h.election(phase);
        }
    }

    /// One attempt to acquire or renew.
    pub async fn attempt(&mut self) -> Result<Attempt, ElectionError> {
        let me = self.config.identity.clone();
        let current = self.api.get_opt(&self.config.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.clone());
        let decision = self.observed.assess(
            &me,
            spec.as_ref(),
            self.config.lease_duration,
            Instant::now(),
        );
        let seconds = self.config.lease_duration.as_secs().max(1) as i32;
        let result = match (decision, current) {
            (Decision::Wait { holder }, _) => {
                tracing::debug!(%holder, "lease held by another candidate");
                return Ok(Attempt::HeldBy(holder));
            }
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now_micro()),
                        renew_time: Some(now_micro()),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(drop)
            }
            (d, Some(mut lease)) => {
                // The resourceVersion from the read makes this replace a compare-and-swap.
                let mut spec = lease.spec.take().unwrap_or_default();
                if d == Decision::Acquire {
                    spec.acquire_time = Some(now_micro());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(me.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(now_micro());
                lease.spec = Some(spec);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => Ok(Attempt::Held),
            Err(e) if conflict(&e) => Ok(Attempt::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// One attempt to acquire or renew; `Ok(true)` when we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, ElectionError> {
        Ok(self.attempt().await? == Attempt::Held)
    }

    /// [`Self::attempt`] with an answer within `limit`, reported to the health state. A
    /// request that hangs (an API server that accepts connections but does not answer)
    /// must not keep a leader working past its renew deadline.
    async fn bounded_attempt(&mut self, limit: Duration) -> Result<Attempt, ElectionError> {
        let result = match tokio::time::timeout(limit, self.attempt()).await {
            Ok(r) => r,
            Err(_) => Err(ElectionError::Timeout(limit)),
        };
        if let Some(h) = &self.health {
            match &result {
                // Any answer, a refusal included, shows the API server serves us.
                Ok(_) => h.api_succeeded(),
                Err(e) => h.api_failed(e),
            }
        }
        result
    }

    /// Gives the lease up so another candidate takes over at once instead of waiting for it
    /// to expire.
    pub async fn release(&mut self) -> Result<(), ElectionError> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews every retry period until the lease is lost; the caller drops the work then.
    async fn keep_renewing(&mut self, acquired_at: Instant) -> Lost {
        let (retry, deadline) = (self.config.retry_period, self.config.renew_deadline);
        let mut last_ok = acquired_at;
        loop {
            tokio::time::sleep(retry).await;
            let left = deadline.saturating_sub(last_ok.elapsed());
            if left.is_zero() {
                return Lost::Deadline;
            }
            // Counted from before the request: the server may record it any time after.
            let sent = Instant::now();
            match self.bounded_attempt(left).await {
                Ok(Attempt::Held) => last_ok = sent,
                Ok(Attempt::HeldBy(holder)) => return Lost::TakenBy(holder),
                Ok(Attempt::Conflict) => tracing::warn!("lease renewal lost a race; retrying"),
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            self.report(ElectionPhase::Leading);
            if last_ok.elapsed() >= deadline {
                return Lost::Deadline;
            }
        }
    }

    /// Runs `lead()` while holding the lease, until `shutdown` completes.
    ///
    /// Each way out of leading is decided on its own:
    /// - The lease is taken by another identity: stop the work at once and campaign again.
    /// - No renewal within the renew deadline (API errors, timeouts): stop the work before
    ///   the lease can expire for the others, and campaign again. An unreachable API server
    ///   is not this process's fault and a restart would not cure it; the campaign resumes
    ///   the work as soon as the lease is ours again.
    /// - The work ends or panics: release the lease (a standby takes over at once) and
    ///   return an error so the process exits non-zero. The work is built to run until it
    ///   is dropped (its watches retry forever), so an end is a bug or a state this process
    ///   does not understand; a restart rebuilds every cache and watch, shows in the
    ///   restart count and is backed off by the kubelet, where campaigning again in-process
    ///   could spin as fast as the work fails.
    /// - Shutdown: stop the work, release the lease, return `Ok`.
    ///
    /// Campaign errors are retried every retry period for ever; `health` (if set) shows
    /// whether they succeed.
    pub async fn run<F, Fut>(
        mut self,
        mut lead: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let outcome = 'elect: loop {
            self.report(ElectionPhase::Campaigning);
            let acquired_at = loop {
                let sent = Instant::now();
                match self.bounded_attempt(self.config.renew_deadline).await {
                    Ok(Attempt::Held) => break sent,
                    Ok(Attempt::HeldBy(_)) | Ok(Attempt::Conflict) => {}
                    Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
                }
                self.report(ElectionPhase::Campaigning);
                tokio::select! {
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                    // The lease may still name us from an earlier term: release below.
                    _ = &mut shutdown => break 'elect Ok(()),
                }
            };
            tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
            self.report(ElectionPhase::Leading);
            let work = AssertUnwindSafe(lead()).catch_unwind();
            tokio::select! {
                ended = work => {
                    break match ended {
                        Ok(()) => Err(RunError::WorkEnded),
                        Err(p) => Err(RunError::WorkPanicked(panic_message(p.as_ref()))),
                    };
                }
                lost = self.keep_renewing(acquired_at) => {
                    match lost {
                        Lost::TakenBy(holder) => tracing::warn!(%holder, "lease taken by another candidate; stepped down"),
                        Lost::Deadline => tracing::warn!("could not renew the lease in time; stepped down"),
                    }
                    continue;
                }
                _ = &mut shutdown => break Ok(()),
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "leader work stopped");
        }
        match tokio::time::timeout(self.config.renew_deadline, self.release()).await {
            Ok(Ok(())) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
            Err(_) => tracing::warn!("releasing the lease got no answer in time"),
        }
        self.report(ElectionPhase::Stopped);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renew: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(renew.parse().expect("timestamp"))),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn free_or_missing_leases_are_taken() {
        let mut o = Observation::default();
        let t = Instant::now();
        assert_eq!(
            o.assess("me", None, Duration::from_secs(10), t),
            Decision::Acquire
        );
        assert_eq!(
            o.assess(
                "me",
                Some(&spec(None, "2024-01-01T00:00:00Z", 3)),
                Duration::from_secs(10),
                t
            ),
            Decision::Acquire
        );
        assert_eq!(
            o.assess(
                "me",
                Some(&spec(Some(""), "2024-01-01T00:00:00Z", 3)),
                Duration::from_secs(10),
                t
            ),
            Decision::Acquire
        );
        assert_eq!(
            o.assess(
                "me",
                Some(&spec(Some("me"), "2024-01-01T00:00:00Z", 3)),
                Duration::from_secs(10),
                t
            ),
            Decision::Renew
        );
    }

    #[test]
    fn a_live_holder_is_respected_and_a_silent_one_replaced() {
        let mut o = Observation::default();
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        let other = spec(Some("other"), "2024-01-01T00:00:00Z", 0);
        assert_eq!(
            o.assess("me", Some(&other), d, t0),
            Decision::Wait {
                holder: "other".into()
            }
        );
        // Unchanged for less than the lease duration: still theirs.
        assert_eq!(
            o.assess("me", Some(&other), d, t0 + Duration::from_secs(9)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        // They renewed at 9 s: the clock restarts from that observation.
        let renewed = spec(Some("other"), "2024-01-01T00:00:09Z", 0);
        assert_eq!(
            o.assess("me", Some(&renewed), d, t0 + Duration::from_secs(9)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            o.assess("me", Some(&renewed), d, t0 + Duration::from_secs(18)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        // Silent for longer than the lease duration: take over.
        assert_eq!(
            o.assess("me", Some(&renewed), d, t0 + Duration::from_secs(20)),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holders_clock_is_never_trusted() {
        // A renew time far in the future (a skewed clock) does not keep the lease alive.
        let mut o = Observation::default();
        let t0 = Instant::now();
        let future = spec(Some("other"), "2099-01-01T00:00:00Z", 0);
        assert_eq!(
            o.assess("me", Some(&future), Duration::from_secs(10), t0),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            o.assess(
                "me",
                Some(&future),
                Duration::from_secs(10),
                t0 + Duration::from_secs(11)
            ),
            Decision::Acquire
        );
    }

    #[test]
    fn durations_that_could_overlap_two_leaders_are_refused() {
        let mut c = ElectorConfig::new("ns", "lease", "me");
        assert_eq!(c.validate(), Ok(()));
        c.renew_deadline = c.lease_duration;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DeadlineNotShorterThanLease { .. })
        ));
        c.renew_deadline = Duration::from_secs(2);
        c.retry_period = Duration::from_secs(2);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::RetryNotShorterThanDeadline { .. })
        ));
        c.lease_duration = Duration::from_millis(500);
        assert_eq!(c.validate(), Err(ConfigError::LeaseTooShort));
    }
}
