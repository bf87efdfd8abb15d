//! Failover of HA volumes whose primary's node is lost.
//!
//! Every agent renews a Lease (`hwameistor-node-<node>`). When the node holding a volume's
//! primary has been silent for longer than the Lease's validity plus a grace period, the
//! controller moves the right to be primary to the survivor and records the old primary
//! outdated, in one compare-and-swap on the volume ([`hwameistor_core::ha::failover`]):
//! only a survivor that holds up-to-date data and was not fenced itself takes over. The
//! survivor's agent then promotes it; the old primary, should it come back, finds itself
//! outdated and rejoins as a secondary that resyncs.
//!
//! A node without a Lease is not judged lost: the controller never fails over on the
//! absence of information, only on a heartbeat that stopped. "Stopped" is judged on this
//! controller's own clock (when it last saw the Lease change), never by comparing the
//! node's renewTime with the local time: a node whose clock runs ahead would otherwise never
//! look lost, and one whose clock runs behind would look lost while alive.

use crate::volume_reconciler::Context;
use hwameistor_api::{LocalVolume, LocalVolumeReplica, LABEL_VOLUME};
use hwameistor_core::ha::{self, NoFailover};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prefix of the agents' heartbeat Leases (the node name follows), as the agent names them.
pub const NODE_LEASE_PREFIX: &str = "hwameistor-node-";

#[derive(Clone, Debug)]
pub struct FailoverConfig {
    /// Namespace of the agents' heartbeat Leases.
    pub namespace: String,
    /// How long past its Lease's validity a node must stay silent to count as lost.
    pub grace: Duration,
    /// How often volumes are checked.
    pub tick: Duration,
}

/// When this controller last saw each node's heartbeat change, on its own clock.
#[derive(Default)]
pub struct Heartbeats {
    /// Node → (the Lease's renewTime as written, when it was first seen, valid for ms).
    seen: HashMap<String, (Option<String>, Instant, i64)>,
}

impl Heartbeats {
    /// Records the Leases as listed now.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        for l in leases {
            let Some(node) = l
                .name_any()
                .strip_prefix(NODE_LEASE_PREFIX)
                .map(str::to_string)
            else {
                continue;
            };
            let Some(spec) = l.spec.as_ref() else {
                continue;
            };
            let renew = spec.renew_time.as_ref().map(|t| t.0.to_string());
            let valid = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
            match self.seen.get_mut(&node) {
                Some(e) if e.0 == renew => e.2 = valid,
                _ => {
                    self.seen.insert(node, (renew, now, valid));
                }
            }
        }
    }

    /// Whether `node` stopped renewing: unchanged for longer than its validity plus
    /// `grace`, as this controller saw it.
    pub fn lost(&self, node: &str, now: Instant, grace: Duration) -> bool {
        self.seen.get(node).is_some_and(|(_, changed, valid)| {
            let silent =
                i64::try_from(now.duration_since(*changed).as_millis()).unwrap_or(i64::MAX);
            let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
            ha::heartbeat_lost(silent, *valid, grace)
        })
    }
}

/// One pass over the HA volumes. Returns the volumes failed over.
pub async fn check_once(
    ctx: &Context,
    cfg: &FailoverConfig,
    beats: &mut Heartbeats,
    reported: &mut HashMap<String, String>,
) -> Result<Vec<String>, kube::Error> {
    let leases = Api::<Lease>::namespaced(ctx.client.clone(), &cfg.namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let now = Instant::now();
    beats.observe(&leases, now);
    let lost = |node: &str| beats.lost(node, now, cfg.grace);
    let volumes: Api<LocalVolume> = Api::all(ctx.client.clone());
    let replicas_api: Api<LocalVolumeReplica> = Api::all(ctx.client.clone());
    let mut failed_over = Vec::new();
    for v in volumes.list(&ListParams::default()).await?.items {
        let Some(config) = v.spec.config.as_ref() else {
            continue;
        };
        let name = v.name_any();
        let primary_lost = config
            .replicas
            .iter()
            .any(|a| a.primary && !a.outdated && lost(&a.hostname));
        if !ha::is_ha(config) || !primary_lost || v.metadata.deletion_timestamp.is_some() {
            reported.remove(&name);
            continue;
        }
        if !ctx.in_scope(&v).await? {
            continue;
        }
        let replicas = replicas_api
            .list(&ListParams::default().labels(&format!("{LABEL_VOLUME}={name}")))
            .await?
            .items;
        match ha::failover(config, &replicas, lost) {
            Ok(next) => {
                let old = config
                    .replicas
                    .iter()
                    .find(|a| a.primary)
                    .map(|a| a.hostname.clone())
                    .unwrap_or_default();
                let new = next
                    .replicas
                    .iter()
                    .find(|a| a.primary)
                    .map(|a| a.hostname.clone())
                    .unwrap_or_default();
                // The compare-and-swap that either fences the old primary or loses to its
                // own fence of the survivor.
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": v.metadata.resource_version },
                    "spec": { "config": next },
                });
                match volumes
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(volume = %name, from = %old, to = %new, "primary's node lost: failed over");
                        ctx.event(
                            &v,
                            true,
                            "FailedOver",
                            "Failover",
                            format!("node {old} is lost; its replica is recorded outdated and the replica on {new} may serve"),
                        )
                        .await;
                        reported.remove(&name);
                        failed_over.push(name);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            Err(NoFailover::Blocked(why)) => {
                if reported.get(&name) != Some(&why) {
                    tracing::error!(volume = %name, reason = %why, "failover impossible");
                    ctx.event(&v, true, "FailoverBlocked", "Failover", why.clone())
                        .await;
                    reported.insert(name, why);
                }
            }
            Err(NoFailover::NotNeeded) => {
                reported.remove(&name);
            }
        }
    }
    Ok(failed_over)
}

/// Checks every `cfg.tick` for as long as this controller leads.
pub async fn run(ctx: Arc<Context>, cfg: FailoverConfig) {
    let mut reported = HashMap::new();
    let mut beats = Heartbeats::default();
    loop {
        if let Err(e) = check_once(&ctx, &cfg, &mut beats, &mut reported).await {
            tracing::warn!(error = %e, "failover check failed; retrying");
        }
        tokio::time::sleep(cfg.tick).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(node: &str, renew_s: i64) -> Lease {
        let mut l = Lease::default();
        l.metadata.name = Some(format!("{NODE_LEASE_PREFIX}{node}"));
        l.spec = Some(LeaseSpec {
            renew_time: Some(MicroTime(
                jiff::Timestamp::from_second(renew_s).expect("time"),
            )),
            lease_duration_seconds: Some(3),
            ..Default::default()
        });
        l
    }

    #[test]
    fn a_node_is_lost_when_its_lease_stops_changing_whatever_its_clock_says() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let mut b = Heartbeats::default();
        // The node's clock is a day ahead: irrelevant, only changes count.
        let ahead = 86_400 + 1_000_000;
        b.observe(&[lease("n1", ahead)], t0);
        assert!(!b.lost("n1", t0 + Duration::from_secs(4), grace));
        b.observe(&[lease("n1", ahead + 1)], t0 + Duration::from_secs(4));
        assert!(!b.lost("n1", t0 + Duration::from_secs(8), grace));
        // Silent for validity (3 s) plus grace (2 s) since the last change.
        b.observe(&[lease("n1", ahead + 1)], t0 + Duration::from_secs(9));
        assert!(b.lost("n1", t0 + Duration::from_millis(9_001), grace));
        // A node without a Lease is never judged lost.
        assert!(!b.lost("n2", t0 + Duration::from_secs(100), grace));
        // Other Leases are ignored.
        let mut other = lease("x", 1);
        other.metadata.name = Some("hwameistor-controller".into());
        b.observe(&[other], t0);
        assert!(!b.lost(
            "hwameistor-controller",
            t0 + Duration::from_secs(100),
            grace
        ));
    }
}
