//! `pool list`: one row per node and pool class, from the LocalStorageNodes.

use super::lookup::{list_all, node_facts};
use crate::client::Cluster;
use crate::errors::AdminError;
use crate::output::{Render, TableView};
use hwameistor_api::quantity::format_size;
use hwameistor_api::{LocalDisk, LocalStorageNode};
use kube::ResourceExt;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRow {
    pub node: String,
    pub class: String,
    pub pool: String,
    pub total_bytes: i64,
    pub used_bytes: i64,
    pub free_bytes: i64,
    pub volumes: i64,
    pub disks: usize,
    pub extent_size_bytes: i64,
}

impl PoolRow {
    /// Used share in percent (0 for an empty pool).
    pub fn use_percent(&self) -> i64 {
        if self.total_bytes <= 0 {
            0
        } else {
            // i128: total × 100 overflows i64 for pools over 92 PB.
            ((self.used_bytes as i128 * 100) / self.total_bytes as i128) as i64
        }
    }
}

/// Rows for the pools of these nodes, by node then class. Pure.
pub fn pool_rows(nodes: &[LocalStorageNode]) -> Vec<PoolRow> {
    let mut rows: Vec<PoolRow> = nodes
        .iter()
        .flat_map(|n| {
            let name = n.name_any();
            n.status
                .iter()
                .flat_map(|s| s.pools.values())
                .map(move |p| PoolRow {
                    node: name.clone(),
                    class: p.class.as_str().into(),
                    pool: p.name.clone(),
                    total_bytes: p.total_capacity_bytes,
                    used_bytes: p.used_capacity_bytes,
                    free_bytes: p.free_capacity_bytes,
                    volumes: p.volume_count,
                    disks: p.disks.len(),
                    extent_size_bytes: p.extent_size_bytes,
                })
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.node, hwameistor_api::PoolClass::parse(&a.class))
            .cmp(&(&b.node, hwameistor_api::PoolClass::parse(&b.class)))
    });
    rows
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolList {
    pub items: Vec<PoolRow>,
}

impl Render for PoolList {
    fn tables(&self, wide: bool) -> Vec<TableView> {
        let mut headers = vec![
            "NODE", "CLASS", "TOTAL", "USED", "FREE", "USE%", "VOLUMES", "DISKS",
        ];
        if wide {
            headers.extend(["POOL", "EXTENT"]);
        }
        let mut t = TableView::new(&headers);
        for p in &self.items {
            let mut row = vec![
                p.node.clone(),
                p.class.clone(),
                format_size(p.total_bytes),
                format_size(p.used_bytes),
                format_size(p.free_bytes),
                format!("{}%", p.use_percent()),
                p.volumes.to_string(),
                p.disks.to_string(),
            ];
            if wide {
                row.extend([p.pool.clone(), format_size(p.extent_size_bytes)]);
            }
            t.push(row);
        }
        vec![t]
    }

    fn empty_note(&self) -> Option<String> {
        self.items.is_empty().then(|| {
            "No pools found: claim disks with `kubectl hwameistor disk claim NODE`.".to_string()
        })
    }
}

/// `pool list [--node N]`.
pub async fn list_pools(cluster: &Cluster, node: Option<&str>) -> Result<PoolList, AdminError> {
    let nodes: Vec<LocalStorageNode> = list_all(cluster).await?;
    let nodes = match node {
        None => nodes,
        Some(n) => {
            let disks: Vec<LocalDisk> = list_all(cluster).await?;
            node_facts(n, &nodes, &disks)?.node.into_iter().collect()
        }
    };
    Ok(PoolList {
        items: pool_rows(&nodes),
    })
}
