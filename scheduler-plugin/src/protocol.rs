//! The scheduler-extender wire types, shaped exactly as kube-scheduler serializes them
//! (`k8s.io/kube-scheduler/extender/v1`): field names, optional fields left out when
//! empty, `nodenames` in lower case.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Nodes as the scheduler sends them when the extender is not `nodeCacheCapable`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        default,
        rename = "apiVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default)]
    pub items: Vec<Node>,
}

/// The body of `filter` and `prioritize`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtenderArgs {
    pub pod: Option<Pod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// With `nodeCacheCapable: true`, the candidate nodes by name only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodenames: Option<Vec<String>>,
}

impl ExtenderArgs {
    /// The candidate nodes' names, from whichever form was sent.
    pub fn candidate_names(&self) -> Vec<String> {
        if let Some(n) = &self.nodenames {
            return n.clone();
        }
        self.nodes
            .iter()
            .flat_map(|l| l.items.iter())
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }
}

/// Node name → why the pod cannot run there.
pub type FailedNodesMap = BTreeMap<String, String>;

/// The answer to `filter`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtenderFilterResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodenames: Option<Vec<String>>,
    #[serde(
        default,
        rename = "failedNodes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub failed_nodes: FailedNodesMap,
    /// Nodes preemption cannot help (evicting pods frees no storage).
    #[serde(
        default,
        rename = "failedAndUnresolvableNodes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub failed_and_unresolvable_nodes: FailedNodesMap,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One node's score in the answer to `prioritize` (a `HostPriorityList` is a JSON array of
/// these).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority {
    pub host: String,
    pub score: i64,
}

/// The body of `bind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtenderBindingArgs {
    #[serde(rename = "podName")]
    pub pod_name: String,
    #[serde(rename = "podNamespace")]
    pub pod_namespace: String,
    #[serde(rename = "podUID")]
    pub pod_uid: String,
    pub node: String,
}

/// The answer to `bind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtenderBindingResult {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_read_both_node_forms_as_the_scheduler_sends_them() {
        // nodeCacheCapable: names only.
        let a: ExtenderArgs = serde_json::from_value(json!({
            "pod": {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"containers": []}},
            "nodenames": ["a", "b"]
        }))
        .expect("names");
        assert_eq!(a.candidate_names(), ["a", "b"]);
        // Full nodes.
        let a: ExtenderArgs = serde_json::from_value(json!({
            "pod": {"metadata": {"name": "p"}, "spec": {"containers": []}},
            "nodes": {"metadata": {}, "items": [{"metadata": {"name": "c"}}]}
        }))
        .expect("nodes");
        assert_eq!(a.candidate_names(), ["c"]);
    }

    #[test]
    fn results_leave_out_what_is_empty_and_use_the_upstream_names() {
        let r = ExtenderFilterResult {
            nodenames: Some(vec!["a".into()]),
            failed_and_unresolvable_nodes: [("b".to_string(), "full".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            json!({"nodenames": ["a"], "failedAndUnresolvableNodes": {"b": "full"}})
        );
        let err = ExtenderFilterResult {
            error: "caches not synced".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&err).expect("json"),
            json!({"error": "caches not synced"})
        );
        let list = vec![HostPriority {
            host: "a".into(),
            score: 7,
        }];
        assert_eq!(
            serde_json::to_value(&list).expect("json"),
            json!([{"host": "a", "score": 7}])
        );
        let b: ExtenderBindingArgs = serde_json::from_value(
            json!({"podName": "p", "podNamespace": "ns", "podUID": "u", "node": "a"}),
        )
        .expect("binding");
        assert_eq!(b.pod_uid, "u");
        assert_eq!(
            serde_json::to_value(ExtenderBindingResult::default()).expect("json"),
            json!({})
        );
    }
}
