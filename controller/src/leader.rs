//! Leader election on a coordination.k8s.io/v1 Lease.
//!
//! Expiry is judged by the local clock only: a candidate notes when it last saw the lease
//! record change and takes over once it has not changed for a whole lease duration. The
//! holder's timestamps are written for people and other tools but never compared with
//! this machine's clock, so clock skew between nodes cannot cause two leaders. The leader
//! gives up (stops its work) when it could not renew for `renew_deadline`, which is shorter
//! than the lease duration, so it stops before anyone else may start.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::future::Future;
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
}

pub struct Elector {
    api: Api<Lease>,
    config: ElectorConfig,
    observed: Observation,
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(client: Client, config: ElectorConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observation::default(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// One attempt to acquire or renew; `Ok(true)` when we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, ElectionError> {
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
                return Ok(false);
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
            Ok(()) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
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

    /// Runs `lead()` while holding the lease, until `shutdown` completes. Leadership lost
    /// (no renewal within the renew deadline) stops the work and campaigns again; shutdown
    /// stops the work and releases the lease.
    pub async fn run<F, Fut>(mut self, mut lead: F, shutdown: impl Future<Output = ()>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            // Campaign.
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.retry_period) => {}
                    _ = &mut shutdown => return,
                }
            }
            tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
            let work = lead();
            let (retry, deadline) = (self.config.retry_period, self.config.renew_deadline);
            let renew = async {
                let mut last_ok = Instant::now();
                loop {
                    tokio::time::sleep(retry).await;
                    match self.try_acquire_or_renew().await {
                        Ok(true) => last_ok = Instant::now(),
                        Ok(false) => tracing::warn!("lease renewal refused"),
                        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                    }
                    if last_ok.elapsed() > deadline {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = work => {
                    tracing::info!("leader work ended; stepping down");
                    break;
                }
                _ = renew => {
                    tracing::warn!("could not renew the lease in time; stepped down");
                    continue;
                }
                _ = &mut shutdown => break,
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the lease");
        } else {
            tracing::info!("lease released");
        }
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
}
