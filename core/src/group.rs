//! Volume groups: the volumes pods use together, kept on the same nodes. Pure.
//!
//! Two volumes are in one group when a pod uses both (and, through pods sharing volumes,
//! transitively). A group exists for two volumes or more (one volume has no one to be kept
//! with); it is named after its first volume (`lvg-<volume>`), so the same volumes always
//! make the same group. Its state says whether its volumes are placed on the same nodes.

use crate::ha;
use crate::pod::claim_names;
use hwameistor_api::{
    GroupMember, GroupState, LocalVolume, LocalVolumeGroup, LocalVolumeGroupSpec,
    LocalVolumeGroupStatus, LABEL_VOLUME_GROUP,
};
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, BTreeSet};

/// The name of the group whose first volume (in name order) is `first`.
pub fn group_name(first: &str) -> String {
    let mut n = format!("lvg-{first}");
    n.truncate(253);
    n
}

fn find(parent: &mut BTreeMap<String, String>, x: &str) -> String {
    let mut root = x.to_string();
    while let Some(p) = parent.get(&root).filter(|p| **p != root) {
        root = p.clone();
    }
    // Path compression keeps later finds short.
    let mut cur = x.to_string();
    while cur != root {
        let next = parent.get(&cur).cloned().unwrap_or_else(|| root.clone());
        parent.insert(cur, root.clone());
        cur = next;
    }
    root
}

fn live(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The nodes volume `v` is placed on (its replicas a migration is not replacing); `None`
/// when it is not placed.
fn placed_nodes(v: &LocalVolume) -> Option<Vec<String>> {
    let c = v.spec.config.as_ref()?;
    let mut n: Vec<String> = if ha::is_ha(c) {
        ha::active(c).map(|a| a.hostname.clone()).collect()
    } else {
        c.replicas.iter().map(|a| a.hostname.clone()).collect()
    };
    n.sort();
    Some(n)
}

/// How group `spec`'s volumes stand among `volumes`.
pub fn group_status(
    spec: &LocalVolumeGroupSpec,
    volumes: &[&LocalVolume],
) -> LocalVolumeGroupStatus {
    let mut by_nodes: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for m in &spec.volumes {
        let v = volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(m.local_volume.as_str()));
        match v.and_then(|v| placed_nodes(v)) {
            Some(nodes) => by_nodes
                .entry(nodes)
                .or_default()
                .push(m.local_volume.clone()),
            None => unplaced.push(m.local_volume.clone()),
        }
    }
    let nodes: Vec<String> = by_nodes
        .keys()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unplaced.is_empty() {
        return LocalVolumeGroupStatus {
            state: Some(GroupState::Pending),
            nodes,
            message: Some(format!("not placed yet: {}", unplaced.join(", "))),
        };
    }
    if by_nodes.len() > 1 {
        let parts: Vec<String> = by_nodes
            .iter()
            .map(|(n, vs)| format!("{} on {}", vs.join(", "), n.join("+")))
            .collect();
        return LocalVolumeGroupStatus {
            state: Some(GroupState::Apart),
            nodes,
            message: Some(format!(
                "the volumes are on different nodes ({}): a pod using them all can run on none of them; migrate the odd ones to the others' nodes",
                parts.join("; ")
            )),
        };
    }
    LocalVolumeGroupStatus {
        state: Some(GroupState::Together),
        nodes,
        message: None,
    }
}

/// The groups `pods` make of `volumes` (by their claims), with their status.
pub fn desired_groups(pods: &[Pod], volumes: &[LocalVolume]) -> Vec<LocalVolumeGroup> {
    // Claim (namespace/name) → volume.
    let by_claim: BTreeMap<String, &LocalVolume> = volumes
        .iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter_map(|v| {
            let ns = v.spec.pvc_namespace.as_deref()?;
            let name = v.spec.pvc_name.as_deref()?;
            Some((format!("{ns}/{name}"), v))
        })
        .collect();
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut pods_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut claim_of: BTreeMap<String, String> = BTreeMap::new();
    for p in pods.iter().filter(|p| live(p)) {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let pod_key = format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default());
        let vols: Vec<String> = claim_names(p)
            .into_iter()
            .filter_map(|c| {
                let key = format!("{ns}/{c}");
                let v = by_claim.get(&key)?;
                let name = v.metadata.name.clone()?;
                claim_of.insert(name.clone(), key);
                Some(name)
            })
            .collect();
        if vols.len() < 2 {
            continue;
        }
        for v in &vols {
            parent.entry(v.clone()).or_insert_with(|| v.clone());
            pods_of
                .entry(v.clone())
                .or_default()
                .insert(pod_key.clone());
        }
        let root = find(&mut parent, &vols[0]);
        for v in &vols[1..] {
            let r = find(&mut parent, v);
            if r != root {
                parent.insert(r, root.clone());
            }
        }
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let names: Vec<String> = parent.keys().cloned().collect();
    for v in names {
        let root = find(&mut parent, &v);
        members.entry(root).or_default().push(v);
    }
    let mut out = Vec::new();
    for (_, mut vols) in members {
        vols.sort();
        let pods: BTreeSet<String> = vols
            .iter()
            .flat_map(|v| pods_of.get(v).into_iter().flatten().cloned())
            .collect();
        let spec = LocalVolumeGroupSpec {
            volumes: vols
                .iter()
                .map(|v| GroupMember {
                    local_volume: v.clone(),
                    pvc: claim_of.get(v).cloned().unwrap_or_default(),
                })
                .collect(),
            pods: pods.into_iter().collect(),
        };
        let refs: Vec<&LocalVolume> = volumes.iter().collect();
        let mut g = LocalVolumeGroup::new(&group_name(&vols[0]), spec);
        g.status = Some(group_status(&g.spec, &refs));
        out.push(g);
    }
    out
}

/// The group label each volume should carry (`None`: no group), where it differs from what
/// it carries: (volume, label).
pub fn label_changes(
    volumes: &[LocalVolume],
    groups: &[LocalVolumeGroup],
) -> Vec<(String, Option<String>)> {
    let want: BTreeMap<&str, String> = groups
        .iter()
        .flat_map(|g| {
            let name = g.metadata.name.clone().unwrap_or_default();
            g.spec
                .volumes
                .iter()
                .map(move |m| (m.local_volume.as_str(), name.clone()))
        })
        .collect();
    volumes
        .iter()
        .filter_map(|v| {
            let name = v.metadata.name.as_deref()?;
            let has = v
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_VOLUME_GROUP))
                .cloned();
            let should = want.get(name).cloned();
            (has != should).then(|| (name.to_string(), should))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwameistor_api::{LocalVolumeSpec, ReplicaAssignment, VolumeConfig};
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume,
    };

    fn volume(name: &str, claim: &str, nodes: Option<&[&str]>) -> LocalVolume {
        LocalVolume::new(
            name,
            LocalVolumeSpec {
                pool_name: "LocalStorage_PoolHDD".into(),
                volume_kind: Default::default(),
                required_capacity_bytes: 1 << 30,
                replica_number: nodes.map_or(1, |n| n.len() as i64),
                convertible: false,
                accessibility: Default::default(),
                pvc_namespace: Some("apps".into()),
                pvc_name: Some(claim.into()),
                fs_type: None,
                config: nodes.map(|n| VolumeConfig {
                    version: 1,
                    required_capacity_bytes: 1 << 30,
                    resource_id: if n.len() > 1 { 3 } else { -1 },
                    replicas: n
                        .iter()
                        .map(|h| ReplicaAssignment {
                            hostname: h.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    initial: false,
                }),
                split_brain_resolution: None,
                operation: None,
                thin: false,
                data_source: None,
            },
        )
    }

    fn pod(name: &str, claims: &[&str], phase: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("apps".into());
        p.spec = Some(PodSpec {
            volumes: Some(
                claims
                    .iter()
                    .map(|c| Volume {
                        name: c.to_string(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: c.to_string(),
                            read_only: None,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn pods_sharing_volumes_make_one_group_named_after_its_first_volume() {
        let vols = [
            volume("pvc-b", "data", Some(&["n1", "n2"])),
            volume("pvc-a", "wal", Some(&["n1", "n2"])),
            volume("pvc-c", "logs", Some(&["n1", "n2"])),
            volume("pvc-d", "alone", Some(&["n3"])),
            volume("pvc-e", "other", Some(&["n3"])),
        ];
        let pods = [
            pod("db-0", &["data", "wal"], "Running"),
            pod("tail", &["logs", "data"], "Pending"),
            pod("solo", &["alone"], "Running"),
            pod("done", &["alone", "other"], "Succeeded"),
        ];
        let groups = desired_groups(&pods, &vols);
        assert_eq!(groups.len(), 1, "{groups:?}");
        let g = &groups[0];
        assert_eq!(g.metadata.name.as_deref(), Some("lvg-pvc-a"));
        let members: Vec<(&str, &str)> = g
            .spec
            .volumes
            .iter()
            .map(|m| (m.local_volume.as_str(), m.pvc.as_str()))
            .collect();
        assert_eq!(
            members,
            [
                ("pvc-a", "apps/wal"),
                ("pvc-b", "apps/data"),
                ("pvc-c", "apps/logs")
            ]
        );
        assert_eq!(g.spec.pods, ["apps/db-0", "apps/tail"]);
        let st = g.status.clone().expect("status");
        assert_eq!(st.state, Some(GroupState::Together));
        assert_eq!(st.nodes, ["n1", "n2"]);
        // Labels: the three members get the group, the others none.
        let changes = label_changes(&vols, &groups);
        assert_eq!(changes.len(), 3);
        assert!(changes
            .iter()
            .all(|(_, l)| l.as_deref() == Some("lvg-pvc-a")));
    }

    #[test]
    fn volumes_apart_or_unplaced_are_reported() {
        let vols = [
            volume("pvc-a", "wal", Some(&["n1", "n2"])),
            volume("pvc-b", "data", Some(&["n1", "n3"])),
            volume("pvc-c", "new", None),
        ];
        let apart = desired_groups(&[pod("db-0", &["data", "wal"], "Running")], &vols);
        let st = apart[0].status.clone().expect("status");
        assert_eq!(st.state, Some(GroupState::Apart));
        assert_eq!(st.nodes, ["n1", "n2", "n3"]);
        assert!(st
            .message
            .as_deref()
            .is_some_and(|m| m.contains("pvc-a on n1+n2; pvc-b on n1+n3")));
        let pending = desired_groups(&[pod("db-0", &["data", "new"], "Running")], &vols);
        assert_eq!(
            pending[0].status.as_ref().and_then(|s| s.state),
            Some(GroupState::Pending)
        );
        // A volume that left its group loses the label.
        let mut labelled = vols[0].clone();
        labelled.metadata.labels =
            Some([(LABEL_VOLUME_GROUP.to_string(), "lvg-pvc-a".to_string())].into());
        assert_eq!(
            label_changes(&[labelled], &[]),
            [("pvc-a".to_string(), None)]
        );
    }
}
