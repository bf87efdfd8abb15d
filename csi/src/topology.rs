//! Accessibility requirements in and out: a local volume's topology is its node.

use crate::csi::{Topology, TopologyRequirement};
use hwameistor_api::TOPOLOGY_NODE_KEY;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("accessibility requirements name no node: none of their topologies carries the key {TOPOLOGY_NODE_KEY}")]
pub struct NoNodeKey;

impl From<NoNodeKey> for tonic::Status {
    fn from(e: NoNodeKey) -> tonic::Status {
        crate::errors::invalid(e.to_string())
    }
}

/// The topology of one node.
pub fn of_node(node: &str) -> Topology {
    Topology {
        segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), node.to_string())]),
    }
}

/// The node a topology names, if it names one.
pub fn node_of(t: &Topology) -> Option<&str> {
    t.segments
        .get(TOPOLOGY_NODE_KEY)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// Nodes the volume may be placed on, best first: the preferred topologies in their order
/// (with WaitForFirstConsumer the first is the node the pod was scheduled to), then the
/// remaining requisite ones. Empty means "anywhere".
pub fn candidate_nodes(req: Option<&TopologyRequirement>) -> Result<Vec<String>, NoNodeKey> {
    let Some(req) = req else {
        return Ok(Vec::new());
    };
    let mut nodes: Vec<String> = Vec::new();
    for t in req.preferred.iter().chain(req.requisite.iter()) {
        if let Some(n) = node_of(t) {
            if !nodes.iter().any(|x| x == n) {
                nodes.push(n.to_string());
            }
        }
    }
    if nodes.is_empty() && !(req.preferred.is_empty() && req.requisite.is_empty()) {
        return Err(NoNodeKey);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(node: &str) -> Topology {
        of_node(node)
    }

    #[test]
    fn preferred_come_first_then_requisite_without_duplicates() {
        let req = TopologyRequirement {
            requisite: vec![t("a"), t("b"), t("c")],
            preferred: vec![t("c"), t("a")],
        };
        assert_eq!(
            candidate_nodes(Some(&req)),
            Ok(vec!["c".to_string(), "a".into(), "b".into()])
        );
    }

    #[test]
    fn no_requirement_means_anywhere() {
        assert_eq!(candidate_nodes(None), Ok(vec![]));
        assert_eq!(
            candidate_nodes(Some(&TopologyRequirement::default())),
            Ok(vec![])
        );
    }

    #[test]
    fn foreign_keys_are_not_a_node() {
        let other = Topology {
            segments: HashMap::from([("kubernetes.io/hostname".to_string(), "a".to_string())]),
        };
        let req = TopologyRequirement {
            requisite: vec![other.clone()],
            preferred: vec![],
        };
        assert_eq!(candidate_nodes(Some(&req)), Err(NoNodeKey));
        let mixed = TopologyRequirement {
            requisite: vec![other, t("b")],
            preferred: vec![],
        };
        assert_eq!(candidate_nodes(Some(&mixed)), Ok(vec!["b".to_string()]));
        assert_eq!(node_of(&t("n1")), Some("n1"));
    }
}
