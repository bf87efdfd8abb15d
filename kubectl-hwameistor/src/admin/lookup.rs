//! Reading HwameiStor resources with the errors users need: a cluster without the CRDs is
//! "not installed", an unknown node or disk comes with the names that do exist.

use crate::client::Cluster;
use crate::errors::{is_not_found, AdminError};
use hwameistor_api::{LocalDisk, LocalStorageNode};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;

/// The CRD whose absence means HwameiStor is not installed (every component needs it).
pub const MARKER_CRD: &str = "localdisks.hwameistor.io";

/// Fails with [`AdminError::NotInstalled`] when the HwameiStor CRDs are missing. A user who
/// may not read CRDs gets the benefit of the doubt: the next request tells.
pub async fn ensure_installed(cluster: &Cluster) -> Result<(), AdminError> {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    match api.get(MARKER_CRD).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(AdminError::NotInstalled),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(AdminError::api(format!("reading CRD {MARKER_CRD}"), e)),
    }
}

/// Lists every object of a cluster-scoped HwameiStor resource. A 404 on the list means the
/// resource type is not served: HwameiStor is not installed.
pub async fn list_all<K>(cluster: &Cluster) -> Result<Vec<K>, AdminError>
where
    K: Resource<Scope = kube::core::ClusterResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(cluster.client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(e) if is_not_found(&e) => Err(AdminError::NotInstalled),
        Err(e) => Err(AdminError::api(
            format!("listing {}", K::plural(&Default::default())),
            e,
        )),
    }
}

/// Reads one object by name; None when it does not exist (and the CRDs do).
pub async fn get_opt<K>(cluster: &Cluster, name: &str) -> Result<Option<K>, AdminError>
where
    K: Resource<Scope = kube::core::ClusterResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(cluster.client.clone());
    match api.get_opt(name).await {
        Ok(Some(o)) => Ok(Some(o)),
        // A 404 for an object and for its whole type look alike: ask which.
        Ok(None) => ensure_installed(cluster).await.map(|_| None),
        Err(e) => Err(AdminError::api(
            format!("reading {} {name}", K::kind(&Default::default())),
            e,
        )),
    }
}

/// Node names HwameiStor knows: those with a LocalStorageNode or with LocalDisks.
pub fn known_nodes(nodes: &[LocalStorageNode], disks: &[LocalDisk]) -> Vec<String> {
    let set: BTreeSet<String> = nodes
        .iter()
        .map(|n| n.name_any())
        .chain(disks.iter().map(|d| d.spec.node_name.clone()))
        .collect();
    set.into_iter().collect()
}

/// What the cluster holds about one node, checked to exist.
pub struct NodeFacts {
    pub name: String,
    pub node: Option<LocalStorageNode>,
    pub disks: Vec<LocalDisk>,
}

/// Picks a node out of already-listed objects, or fails naming the nodes that exist.
pub fn node_facts(
    name: &str,
    nodes: &[LocalStorageNode],
    disks: &[LocalDisk],
) -> Result<NodeFacts, AdminError> {
    let node = nodes.iter().find(|n| n.name_any() == name).cloned();
    let node_disks: Vec<LocalDisk> = disks
        .iter()
        .filter(|d| d.spec.node_name == name)
        .cloned()
        .collect();
    if node.is_none() && node_disks.is_empty() {
        return Err(AdminError::UnknownNode {
            name: name.to_string(),
            known: known_nodes(nodes, disks),
        });
    }
    Ok(NodeFacts {
        name: name.to_string(),
        node,
        disks: node_disks,
    })
}

/// Lists nodes and disks and checks that `name` is a node HwameiStor knows.
pub async fn require_node(cluster: &Cluster, name: &str) -> Result<NodeFacts, AdminError> {
    let disks: Vec<LocalDisk> = list_all(cluster).await?;
    let nodes: Vec<LocalStorageNode> = list_all(cluster).await?;
    node_facts(name, &nodes, &disks)
}
