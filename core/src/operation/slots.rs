//! How many data-moving operations (migrations, conversions) run at once: a cluster-wide
//! cap and a per-node cap, because each one reads a whole volume on one node and writes it
//! on another, and too many at once starve the applications' own I/O.

/// The caps (controller settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub cluster: usize,
    pub per_node: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cluster: 4,
            per_node: 1,
        }
    }
}

/// One operation that moves data now (Running or Aborting), and the nodes it loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Busy {
    pub name: String,
    pub nodes: Vec<String>,
}

/// Whether operation `me`, which will load `nodes`, may start next to `running` (which may
/// include `me` itself: it is not counted).
pub fn may_start(
    me: &str,
    nodes: &[String],
    running: &[Busy],
    limits: Limits,
) -> Result<(), String> {
    let others: Vec<&Busy> = running.iter().filter(|b| b.name != me).collect();
    if others.len() >= limits.cluster {
        return Err(format!(
            "{} operations move data already (at most {} at once in the cluster); this one starts when one ends",
            others.len(),
            limits.cluster
        ));
    }
    for node in nodes {
        let on_node: Vec<&str> = others
            .iter()
            .filter(|b| b.nodes.iter().any(|n| n == node))
            .map(|b| b.name.as_str())
            .collect();
        if on_node.len() >= limits.per_node {
            return Err(format!(
                "node {node} is busy with {} (at most {} data-moving operation(s) per node); this one starts when it ends",
                on_node.join(", "),
                limits.per_node
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(name: &str, nodes: &[&str]) -> Busy {
        Busy {
            name: name.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn cluster_and_node_caps() {
        let limits = Limits {
            cluster: 2,
            per_node: 1,
        };
        let n = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(may_start("m", &n(&["a"]), &[], limits), Ok(()));
        let one = [busy("x", &["b", "c"])];
        assert_eq!(may_start("m", &n(&["a"]), &one, limits), Ok(()));
        let err = may_start("m", &n(&["a", "c"]), &one, limits).expect_err("c is busy");
        assert!(err.contains("node c is busy with x"), "{err}");
        let two = [busy("x", &["b"]), busy("y", &["c"])];
        let err = may_start("m", &n(&["a"]), &two, limits).expect_err("cluster cap");
        assert!(err.contains("2 operations move data already"), "{err}");
        // Itself is not counted (it shows as running once it started).
        let me = [busy("m", &["a"]), busy("x", &["b"])];
        assert_eq!(may_start("m", &n(&["a"]), &me, limits), Ok(()));
    }
}
