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
//! absence of information, only on a heartbeat that stopped.

use crate::volume_reconciler::Context;
use hwameistor_api::{LocalVolume, LocalVolumeReplica, LABEL_VOLUME};
use hwameistor_core::ha::{self, NoFailover};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

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

/// Each node's last heartbeat: (renewed, valid for), in milliseconds.
fn heartbeats(leases: &[Lease]) -> BTreeMap<String, (i64, i64)> {
    leases
        .iter()
        .filter_map(|l| {
            let node = l.name_any().strip_prefix(NODE_LEASE_PREFIX)?.to_string();
            let spec = l.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0.as_millisecond();
            let valid = i64::from(spec.lease_duration_seconds?) * 1000;
            Some((node, (renewed, valid)))
        })
        .collect()
}

/// One pass over the HA volumes. Returns the volumes failed over.
pub async fn check_once(
    ctx: &Context,
    cfg: &FailoverConfig,
    reported: &mut HashMap<String, String>,
) -> Result<Vec<String>, kube::Error> {
    let leases = Api::<Lease>::namespaced(ctx.client.clone(), &cfg.namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let beats = heartbeats(&leases);
    let now = jiff::Timestamp::now().as_millisecond();
    let grace = i64::try_from(cfg.grace.as_millis()).unwrap_or(i64::MAX);
    let lost = |node: &str| {
        beats
            .get(node)
            .is_some_and(|&(renewed, valid)| ha::heartbeat_lost(renewed, valid, now, grace))
    };
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
    loop {
        if let Err(e) = check_once(&ctx, &cfg, &mut reported).await {
            tracing::warn!(error = %e, "failover check failed; retrying");
        }
        tokio::time::sleep(cfg.tick).await;
    }
}
