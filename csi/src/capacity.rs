//! Free space as the nodes report it (LocalStorageNode status). Pure.
//!
//! These answers are advisory: GetCapacity feeds the scheduler's CSIStorageCapacity and
//! CreateVolume uses them to refuse early. The controller's placement is the authority; it
//! also counts volumes placed but not yet reported.

use hwameistor_api::{LocalStorageNode, NodeState, PoolClass};

/// Free bytes in node's pool of `class`; 0 when the node is not Ready or has no such pool.
pub fn pool_free(node: &LocalStorageNode, class: PoolClass) -> i64 {
    let Some(st) = node.status.as_ref() else {
        return 0;
    };
    if st.state != Some(NodeState::Ready) {
        return 0;
    }
    st.pools
        .get(class.pool_name())
        .map(|p| p.free_capacity_bytes.max(0))
        .unwrap_or(0)
}

fn name(node: &LocalStorageNode) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

/// Capacity for GetCapacity: the free bytes of `class` on `only_node`, or summed over all
/// nodes when no node is given.
pub fn available(nodes: &[LocalStorageNode], class: PoolClass, only_node: Option<&str>) -> i64 {
    nodes
        .iter()
        .filter(|n| only_node.is_none_or(|o| name(n) == o))
        .map(|n| pool_free(n, class))
        .fold(0i64, i64::saturating_add)
}

/// Whether some candidate node (any node when `candidates` is empty) reports `bytes` free
/// in its `class` pool; `Err` carries what each node had, for the error message.
pub fn check_fits(
    nodes: &[LocalStorageNode],
    class: PoolClass,
    bytes: i64,
    candidates: &[String],
) -> Result<String, String> {
    let mut seen = Vec::new();
    for n in nodes
        .iter()
        .filter(|n| candidates.is_empty() || candidates.iter().any(|c| c == name(n)))
    {
        let free = pool_free(n, class);
        if free >= bytes {
            return Ok(name(n).to_string());
        }
        seen.push(format!(
            "{} has {} free",
            name(n),
            hwameistor_api::quantity::format_size(free)
        ));
    }
    for c in candidates {
        if !nodes.iter().any(|n| name(n) == c) {
            seen.push(format!("{c} has no LocalStorageNode"));
        }
    }
    if seen.is_empty() {
        seen.push("no storage node exists".into());
    }
    Err(format!(
        "no node has {} free in its {class} pool: {}",
        hwameistor_api::quantity::format_size(bytes),
        seen.join(", ")
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hwameistor_api::{LocalStorageNodeSpec, LocalStorageNodeStatus, PoolStatus};

    pub(crate) fn node(
        name: &str,
        ready: bool,
        pools: &[(PoolClass, i64, i64)],
    ) -> LocalStorageNode {
        let mut n = LocalStorageNode::new(
            name,
            LocalStorageNodeSpec {
                hostname: name.into(),
                storage_ip: None,
            },
        );
        n.status = Some(LocalStorageNodeStatus {
            state: Some(if ready {
                NodeState::Ready
            } else {
                NodeState::NotReady
            }),
            pools: pools
                .iter()
                .map(|&(class, total, free)| {
                    (
                        class.pool_name().to_string(),
                        PoolStatus {
                            name: class.pool_name().into(),
                            class,
                            total_capacity_bytes: total,
                            used_capacity_bytes: total - free,
                            free_capacity_bytes: free,
                            extent_size_bytes: 4 << 20,
                            volume_count: 0,
                            disks: vec![],
                        },
                    )
                })
                .collect(),
            ..Default::default()
        });
        n
    }

    #[test]
    fn capacity_per_node_and_class() {
        let nodes = vec![
            node(
                "a",
                true,
                &[(PoolClass::Hdd, 100, 60), (PoolClass::Ssd, 50, 50)],
            ),
            node("b", true, &[(PoolClass::Hdd, 100, 30)]),
            node("c", false, &[(PoolClass::Hdd, 100, 100)]),
        ];
        assert_eq!(available(&nodes, PoolClass::Hdd, None), 90);
        assert_eq!(available(&nodes, PoolClass::Hdd, Some("b")), 30);
        assert_eq!(
            available(&nodes, PoolClass::Hdd, Some("c")),
            0,
            "NotReady node offers nothing"
        );
        assert_eq!(available(&nodes, PoolClass::Ssd, None), 50);
        assert_eq!(available(&nodes, PoolClass::Nvme, None), 0);
        assert_eq!(available(&nodes, PoolClass::Hdd, Some("zz")), 0);
    }

    #[test]
    fn fits_honours_candidates() {
        let nodes = vec![
            node("a", true, &[(PoolClass::Hdd, 100, 60)]),
            node("b", true, &[(PoolClass::Hdd, 100, 30)]),
        ];
        assert_eq!(check_fits(&nodes, PoolClass::Hdd, 50, &[]), Ok("a".into()));
        let err = check_fits(&nodes, PoolClass::Hdd, 50, &["b".into(), "x".into()])
            .expect_err("b too small");
        assert_eq!(
            err,
            "no node has 50B free in its HDD pool: b has 30B free, x has no LocalStorageNode"
        );
        assert!(check_fits(&[], PoolClass::Hdd, 1, &[]).is_err());
    }
}
