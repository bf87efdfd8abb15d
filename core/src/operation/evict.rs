//! The evictor's decisions: a cordoned node's volumes move off it, one migration per volume,
//! and moving stops when the node is uncordoned. Pure.
//!
//! A node opts out with the label `hwameistor.io/eviction=disable`. A migration somebody
//! else started for the same volume off the same node (the plugin's drain) counts: it is
//! never duplicated. The volumes of one group get one migration, which takes the others
//! with it (see [`super::group`]). The evictor's own migrations carry a label naming the node, so it
//! finds them again after a restart.

use hwameistor_api::{
    LocalVolume, LocalVolumeMigrate, LocalVolumeMigrateSpec, OperationPhase, LABEL_VOLUME_GROUP,
};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};

/// Label on a Node: `disable` keeps the evictor away from it.
pub const LABEL_EVICTION: &str = "hwameistor.io/eviction";
/// Label on a migration made to move volumes off a node (by the evictor or a drain): the
/// node's name.
pub const LABEL_DRAIN: &str = "hwameistor.io/drain";
/// Label on a migration the evictor made (so it only ever aborts its own).
pub const LABEL_EVICTOR: &str = "hwameistor.io/evictor";

/// What the evictor sees of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub unschedulable: bool,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EvictStep {
    /// Create this migration.
    Create(Box<LocalVolumeMigrate>),
    /// Abort this (evictor's, unfinished) migration: the node is schedulable again.
    Abort(String),
}

/// The evictor's report on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Volumes with no replica on the node any more.
    pub moved: usize,
    /// Volumes still moving: the migration and where it stands.
    pub moving: Vec<(String, String)>,
    /// Volumes whose migration ended without moving them: the migration and why.
    pub stuck: Vec<(String, String)>,
}

fn ours(v: &LocalVolume, node: &str) -> bool {
    v.metadata.deletion_timestamp.is_none()
        && v.spec
            .config
            .as_ref()
            .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == node))
}

fn ended(m: &LocalVolumeMigrate) -> bool {
    m.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_final())
}

/// The name of the evictor's migration of `volume` off `node` (stable: found again after
/// a restart; a volume name has at most 63 characters, a node name 253).
pub fn migration_name(node: &str, volume: &str) -> String {
    let base = format!("evict-{volume}-{node}");
    if base.len() <= 253 {
        return base;
    }
    let keep: String = base.chars().take(240).collect();
    format!("{}-{:08x}", keep.trim_end_matches(['-', '.']), fnv(&base))
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The steps for `node`, given every volume and every migration.
pub fn plan(
    node: &NodeView,
    volumes: &[LocalVolume],
    migrations: &[LocalVolumeMigrate],
) -> Vec<EvictStep> {
    let opted_out = node.labels.get(LABEL_EVICTION).map(String::as_str) == Some("disable");
    let mine = |m: &&LocalVolumeMigrate| {
        m.labels().get(LABEL_EVICTOR).map(String::as_str) == Some("true")
            && m.labels().get(LABEL_DRAIN) == Some(&node.name)
    };
    if !node.unschedulable || opted_out {
        return migrations
            .iter()
            .filter(mine)
            .filter(|m| !ended(m) && !m.spec.abort)
            .filter_map(|m| m.metadata.name.clone())
            .map(EvictStep::Abort)
            .collect();
    }
    let group_of = |volume: &str| {
        volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(volume))
            .and_then(|v| v.labels().get(LABEL_VOLUME_GROUP).cloned())
    };
    let mut out = Vec::new();
    // Groups a migration made in this pass takes off the node (group-wide, see
    // `operation::group`): one migration per group.
    let mut groups_taken: BTreeSet<String> = BTreeSet::new();
    for v in volumes.iter().filter(|v| ours(v, &node.name)) {
        let name = v.metadata.name.clone().unwrap_or_default();
        let group = v.labels().get(LABEL_VOLUME_GROUP).cloned();
        let covered = migrations.iter().any(|m| {
            m.spec.source_node == node.name
                && !ended(m)
                && (m.spec.volume_name == name
                    || (m.spec.migrate_all_volumes
                        && group.is_some()
                        && group_of(&m.spec.volume_name) == group))
        }) || group.as_ref().is_some_and(|g| groups_taken.contains(g));
        // One that ended without moving it is not retried blindly: it is reported (an
        // operator fixes the cause, then deletes it to have the evictor try again).
        let tried = migrations.iter().any(|m| {
            m.metadata.name.as_deref() == Some(migration_name(&node.name, &name).as_str())
        });
        if covered || tried {
            continue;
        }
        groups_taken.extend(group);
        let mut m = LocalVolumeMigrate::new(
            &migration_name(&node.name, &name),
            LocalVolumeMigrateSpec {
                volume_name: name,
                source_node: node.name.clone(),
                target_nodes: Vec::new(),
                migrate_all_volumes: true,
                bandwidth_limit_bytes_per_second: None,
                abort: false,
                ttl_seconds_after_finished: None,
            },
        );
        m.metadata.labels = Some(BTreeMap::from([
            (LABEL_DRAIN.to_string(), node.name.clone()),
            (LABEL_EVICTOR.to_string(), "true".to_string()),
        ]));
        out.push(EvictStep::Create(Box::new(m)));
    }
    out
}

/// Where moving `node`'s volumes off stands.
pub fn report(node: &str, volumes: &[LocalVolume], migrations: &[LocalVolumeMigrate]) -> Report {
    let mut r = Report::default();
    for m in migrations.iter().filter(|m| m.spec.source_node == node) {
        let still_there = volumes.iter().any(|v| {
            v.metadata.name.as_deref() == Some(m.spec.volume_name.as_str()) && ours(v, node)
        });
        let st = m.status.clone().unwrap_or_default();
        let name = m.metadata.name.clone().unwrap_or_default();
        let why = st.message.clone().unwrap_or_else(|| {
            st.step
                .clone()
                .unwrap_or_else(|| "not started yet".to_string())
        });
        match st.phase {
            Some(OperationPhase::Succeeded) if !still_there => r.moved += 1,
            Some(OperationPhase::Failed) | Some(OperationPhase::Aborted) if still_there => {
                r.stuck.push((name, why))
            }
            Some(p) if p.is_final() => {}
            _ if still_there => r.moving.push((name, why)),
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::testing::volume;
    use hwameistor_api::OperationStatus;

    fn node(unschedulable: bool) -> NodeView {
        NodeView {
            name: "a".into(),
            unschedulable,
            labels: BTreeMap::new(),
        }
    }

    fn named(mut v: LocalVolume, name: &str) -> LocalVolume {
        v.metadata.name = Some(name.into());
        v
    }

    fn with_phase(mut m: LocalVolumeMigrate, p: OperationPhase, msg: &str) -> LocalVolumeMigrate {
        m.status = Some(OperationStatus {
            phase: Some(p),
            message: Some(msg.into()),
            ..Default::default()
        });
        m
    }

    #[test]
    fn a_cordoned_node_gets_one_migration_per_volume_never_two() {
        let vols = [
            named(volume(&["a"]), "v1"),
            named(volume(&["a", "b"]), "v2"),
            named(volume(&["b"]), "v3"),
        ];
        let steps = plan(&node(true), &vols, &[]);
        let made: Vec<LocalVolumeMigrate> = steps
            .into_iter()
            .map(|s| match s {
                EvictStep::Create(m) => *m,
                other => panic!("{other:?}"),
            })
            .collect();
        let names: Vec<&str> = made.iter().map(|m| m.spec.volume_name.as_str()).collect();
        assert_eq!(names, ["v1", "v2"]);
        assert_eq!(made[0].metadata.name.as_deref(), Some("evict-v1-a"));
        assert_eq!(
            made[0].labels().get(LABEL_DRAIN).map(String::as_str),
            Some("a")
        );
        // Made already (or by a drain): nothing more.
        assert_eq!(plan(&node(true), &vols, &made), vec![]);
        let mut drain = made[1].clone();
        drain.metadata.name = Some("drain-v2".into());
        drain.metadata.labels = None;
        assert_eq!(plan(&node(true), &vols, &[made[0].clone(), drain]), vec![]);
        // Opted out, or not cordoned: nothing.
        let mut out = node(true);
        out.labels.insert(LABEL_EVICTION.into(), "disable".into());
        assert!(plan(&out, &vols, &[]).is_empty());
        assert!(plan(&node(false), &vols, &[]).is_empty());
    }

    #[test]
    fn a_group_gets_one_migration_that_takes_its_other_volumes_along() {
        let grouped = |name: &str, group: &str| {
            let mut v = named(volume(&["a"]), name);
            v.metadata.labels = Some(BTreeMap::from([(
                LABEL_VOLUME_GROUP.to_string(),
                group.to_string(),
            )]));
            v
        };
        let vols = [
            grouped("g1-a", "lvg-g1-a"),
            grouped("g1-b", "lvg-g1-a"),
            grouped("g2-a", "lvg-g2-a"),
            named(volume(&["a"]), "solo"),
            grouped("g2-b", "lvg-g2-a"),
        ];
        let made: Vec<LocalVolumeMigrate> = plan(&node(true), &vols, &[])
            .into_iter()
            .filter_map(|s| match s {
                EvictStep::Create(m) => Some(*m),
                _ => None,
            })
            .collect();
        let names: Vec<&str> = made.iter().map(|m| m.spec.volume_name.as_str()).collect();
        assert_eq!(names, ["g1-a", "g2-a", "solo"]);
        assert!(made.iter().all(|m| m.spec.migrate_all_volumes));
        // Found again next pass: nothing more.
        assert!(plan(&node(true), &vols, &made).is_empty());
        // A group's migration that moves only its own volume covers only that one.
        let mut only = made.clone();
        only[0].spec.migrate_all_volumes = false;
        let again: Vec<String> = plan(&node(true), &vols, &only)
            .into_iter()
            .filter_map(|s| match s {
                EvictStep::Create(m) => Some(m.spec.volume_name),
                _ => None,
            })
            .collect();
        assert_eq!(again, ["g1-b"]);
    }

    #[test]
    fn uncordoning_aborts_the_evictors_unfinished_migrations_only() {
        let vols = [named(volume(&["a"]), "v1"), named(volume(&["a"]), "v2")];
        let made: Vec<LocalVolumeMigrate> = plan(&node(true), &vols, &[])
            .into_iter()
            .filter_map(|s| match s {
                EvictStep::Create(m) => Some(*m),
                _ => None,
            })
            .collect();
        let done = with_phase(made[1].clone(), OperationPhase::Succeeded, "moved");
        let mut foreign = made[0].clone();
        foreign.metadata.name = Some("drain-v1".into());
        foreign.metadata.labels = None;
        let steps = plan(&node(false), &vols, &[made[0].clone(), done, foreign]);
        assert_eq!(steps, vec![EvictStep::Abort("evict-v1-a".into())]);
    }

    #[test]
    fn the_report_says_what_moved_what_moves_and_what_is_stuck() {
        let vols = [
            named(volume(&["b"]), "v1"),
            named(volume(&["a"]), "v2"),
            named(volume(&["a"]), "v3"),
        ];
        let m = |v: &str| {
            let mut m = LocalVolumeMigrate::new(
                &migration_name("a", v),
                LocalVolumeMigrateSpec {
                    volume_name: v.into(),
                    source_node: "a".into(),
                    target_nodes: vec![],
                    migrate_all_volumes: true,
                    bandwidth_limit_bytes_per_second: None,
                    abort: false,
                    ttl_seconds_after_finished: None,
                },
            );
            m.metadata.labels = None;
            m
        };
        let ms = [
            with_phase(m("v1"), OperationPhase::Succeeded, "moved"),
            with_phase(m("v2"), OperationPhase::Pending, "in use on a"),
            with_phase(
                m("v3"),
                OperationPhase::Failed,
                "no node can take the replica",
            ),
        ];
        let r = report("a", &vols, &ms);
        assert_eq!(r.moved, 1);
        assert_eq!(r.moving, vec![("evict-v2-a".into(), "in use on a".into())]);
        assert_eq!(
            r.stuck,
            vec![("evict-v3-a".into(), "no node can take the replica".into())]
        );
        // The failed one is not retried blindly.
        assert!(plan(&node(true), &vols, &ms).is_empty());
        assert!(migration_name(&"n".repeat(300), "v").len() <= 253);
    }
}
