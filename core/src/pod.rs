//! What a pod says about storage: the claims behind its volumes. Pure.

use k8s_openapi::api::core::v1::Pod;

/// The name of the claim behind each persistent or generic ephemeral volume of `pod` (a
/// generic ephemeral volume's claim is named after the pod and the volume).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// The other claims used together with claim `claim` by any of `pods` (all in one
/// namespace): the claims whose volumes should share its nodes.
pub fn sibling_claims(pods: &[Pod], claim: &str) -> Vec<String> {
    let mut out: Vec<String> = pods
        .iter()
        .map(claim_names)
        .filter(|names| names.iter().any(|n| n == claim))
        .flatten()
        .filter(|n| n != claim)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, PodSpec, Volume,
    };

    fn pod(name: &str, claims: &[&str], ephemeral: &[&str]) -> Pod {
        let mut volumes: Vec<Volume> = claims
            .iter()
            .map(|c| Volume {
                name: format!("v-{c}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: c.to_string(),
                    read_only: None,
                }),
                ..Default::default()
            })
            .collect();
        volumes.extend(ephemeral.iter().map(|e| Volume {
            name: e.to_string(),
            ephemeral: Some(EphemeralVolumeSource::default()),
            ..Default::default()
        }));
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.spec = Some(PodSpec {
            volumes: Some(volumes),
            ..Default::default()
        });
        p
    }

    #[test]
    fn claims_of_pods_and_the_ones_used_together() {
        let a = pod("db-0", &["data", "wal"], &["scratch"]);
        assert_eq!(claim_names(&a), ["data", "wal", "db-0-scratch"]);
        let b = pod("other", &["logs", "data"], &[]);
        let c = pod("alone", &["x"], &[]);
        assert_eq!(
            sibling_claims(&[a, b, c], "data"),
            ["db-0-scratch", "logs", "wal"]
        );
    }
}
