//! `node list` and `node get`: LocalStorageNodes with their pools, volumes and disks.

use super::disks::{disk_list, DiskRow};
use super::lookup::{list_all, node_facts};
use super::pools::{pool_rows, PoolRow};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{or_dash, Render, TableView};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{LocalDisk, LocalStorageNode, NodeState, PoolClass};
use kube::ResourceExt;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    pub class: String,
    pub free_bytes: i64,
    pub total_bytes: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    /// Ready, NotReady, or None for a node with disks but no LocalStorageNode yet.
    pub state: Option<String>,
    pub storage_ip: Option<String>,
    pub pools: Vec<NodePool>,
    pub volumes: i64,
    pub disks: usize,
    pub available_disks: usize,
    pub agent_version: Option<String>,
}

fn pools_cell(pools: &[NodePool]) -> String {
    if pools.is_empty() {
        return "-".into();
    }
    pools
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p.class,
                format_size(p.free_bytes),
                format_size(p.total_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn node_row(name: &str, node: Option<&LocalStorageNode>, disks: &[&LocalDisk]) -> NodeRow {
    let st = node.and_then(|n| n.status.clone()).unwrap_or_default();
    let mut pools: Vec<NodePool> = st
        .pools
        .values()
        .map(|p| NodePool {
            class: p.class.as_str().into(),
            free_bytes: p.free_capacity_bytes,
            total_bytes: p.total_capacity_bytes,
        })
        .collect();
    pools.sort_by_key(|p| PoolClass::parse(&p.class));
    NodeRow {
        name: name.to_string(),
        state: st.state.map(|s| match s {
            NodeState::Ready => "Ready".to_string(),
            NodeState::NotReady => "NotReady".to_string(),
        }),
        storage_ip: node.and_then(|n| n.spec.storage_ip.clone()),
        pools,
        volumes: st.volume_count,
        disks: disks.len(),
        available_disks: disks
            .iter()
            .filter(|d| super::disks::unavailability(d).is_none())
            .count(),
        agent_version: st.agent_version,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeList {
    pub items: Vec<NodeRow>,
}

/// One row per node known from a LocalStorageNode or from its disks. Pure.
pub fn node_list(nodes: &[LocalStorageNode], disks: &[LocalDisk]) -> NodeList {
    let mut by_node: HashMap<&str, Vec<&LocalDisk>> = HashMap::new();
    for d in disks {
        by_node
            .entry(d.spec.node_name.as_str())
            .or_default()
            .push(d);
    }
    let names = super::lookup::known_nodes(nodes, disks);
    let items = names
        .iter()
        .map(|n| {
            let node = nodes.iter().find(|x| x.name_any() == *n);
            node_row(
                n,
                node,
                by_node.get(n.as_str()).map(Vec::as_slice).unwrap_or(&[]),
            )
        })
        .collect();
    NodeList { items }
}

fn node_table(rows: &[NodeRow], wide: bool) -> TableView {
    let mut headers = vec!["NAME", "STATE", "POOLS (FREE/TOTAL)", "VOLUMES", "DISKS"];
    if wide {
        headers.extend(["AVAILABLE-DISKS", "STORAGE-IP", "AGENT"]);
    }
    let mut t = TableView::new(&headers);
    for r in rows {
        let mut row = vec![
            r.name.clone(),
            r.state.clone().unwrap_or_else(|| "NoAgent".into()),
            pools_cell(&r.pools),
            r.volumes.to_string(),
            r.disks.to_string(),
        ];
        if wide {
            row.extend([
                r.available_disks.to_string(),
                or_dash(r.storage_ip.as_deref()),
                or_dash(r.agent_version.as_deref()),
            ]);
        }
        t.push(row);
    }
    t
}

impl Render for NodeList {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        vec![node_table(&self.items, wide)]
    }

    fn empty_note(&self) -> Option<String> {
        self.items
            .is_empty()
            .then(|| "No nodes found: no node agent has reported yet (try `kubectl hwameistor diagnose`).".to_string())
    }
}

pub async fn list_nodes(cluster: &Cluster) -> Result<NodeList, AdminError> {
    let nodes: Vec<LocalStorageNode> = list_all(cluster).await?;
    let disks: Vec<LocalDisk> = list_all(cluster).await?;
    Ok(node_list(&nodes, &disks))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// `node get NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDetail {
    pub node: NodeRow,
    pub pools: Vec<PoolRow>,
    pub disks: Vec<DiskRow>,
    pub conditions: Vec<ConditionRow>,
}

impl Render for NodeDetail {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let mut out = vec![node_table(std::slice::from_ref(&self.node), wide)];
        let mut pools = super::pools::PoolList {
            items: self.pools.clone(),
        }
        .tables(wide);
        if let Some(p) = pools.pop() {
            out.push(p.titled("Pools:"));
        }
        let mut disks = super::disks::DiskList {
            items: self.disks.clone(),
        }
        .tables(wide);
        if let Some(d) = disks.pop() {
            out.push(d.titled("Disks:"));
        }
        let mut c = TableView::new(&["TYPE", "STATUS", "REASON", "MESSAGE"]).titled("Conditions:");
        for x in &self.conditions {
            c.push(vec![
                x.type_.clone(),
                x.status.clone(),
                or_dash(Some(&x.reason)),
                or_dash(Some(&x.message)),
            ]);
        }
        out.push(c);
        out
    }
}

pub async fn get_node(cluster: &Cluster, name: &str) -> Result<NodeDetail, AdminError> {
    let nodes: Vec<LocalStorageNode> = list_all(cluster).await?;
    let disks: Vec<LocalDisk> = list_all(cluster).await?;
    let facts = node_facts(name, &nodes, &disks)?;
    let disk_refs: Vec<&LocalDisk> = facts.disks.iter().collect();
    let conditions = facts
        .node
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| ConditionRow {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(NodeDetail {
        node: node_row(name, facts.node.as_ref(), &disk_refs),
        pools: pool_rows(facts.node.as_slice()),
        disks: disk_list(&facts.disks, None).items,
        conditions,
    })
}
