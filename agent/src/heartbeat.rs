//! The agent's heartbeat: a coordination.k8s.io Lease per node, renewed every few seconds.
//!
//! The controller fails an HA volume over when its primary's node stopped renewing for
//! longer than a grace period. The heartbeat only decides *when* a failover is tried;
//! whether it is safe is decided by fencing (the old primary's I/O stays frozen unless the
//! survivor was recorded outdated), so a heartbeat lost while the node still runs never
//! puts two writers on a volume.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::time::Duration;

/// Prefix of the agents' Lease names; the node's name follows.
pub const LEASE_PREFIX: &str = "hwameistor-node-";

/// The Lease name of `node`'s agent.
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

/// Renews `node`'s Lease in `namespace` every `every`, declaring it valid for `valid`.
/// Never returns; failures are logged and retried on the next beat.
pub async fn run(
    client: Client,
    namespace: String,
    node: String,
    every: Duration,
    valid: Duration,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let name = lease_name(&node);
    let seconds = valid.as_secs().clamp(1, i32::MAX as u64) as i32;
    loop {
        let now = MicroTime(jiff::Timestamp::now());
        let patch = serde_json::json!({
            "spec": { "holderIdentity": node, "leaseDurationSeconds": seconds, "renewTime": now }
        });
        let r = match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(node.clone()),
                        lease_duration_seconds: Some(seconds),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                api.create(&PostParams::default(), &lease).await.map(drop)
            }
            r => r.map(drop),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, lease = %name, "renewing the node heartbeat failed");
        }
        tokio::time::sleep(every).await;
    }
}
