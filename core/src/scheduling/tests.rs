use super::*;
use crate::placement::PoolView;

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;
const HDD: PoolClass = PoolClass::Hdd;
const SSD: PoolClass = PoolClass::Ssd;

fn node(name: &str, pools: &[(PoolClass, i64)]) -> NodeView {
    NodeView {
        name: name.into(),
        ready: true,
        storage_ip: Some(format!("10.0.0.{}", name.len())),
        pools: pools
            .iter()
            .map(|(c, free)| {
                (
                    *c,
                    PoolView {
                        total: 100 * GI,
                        free: *free,
                        extent: 4 * MI,
                        volumes: 0,
                    },
                )
            })
            .collect(),
    }
}

fn new(pvc: &str, class: PoolClass, bytes: i64, ha: bool) -> NewClaim {
    NewClaim {
        pvc: pvc.into(),
        class,
        bytes,
        replicated: ha,
        second: ha,
    }
}

fn pod(uid: &str, new: Vec<NewClaim>) -> PodClaims {
    PodClaims {
        uid: uid.into(),
        new,
        ..Default::default()
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cap(nodes: &[NodeView]) -> Capacity {
    Capacity::new(nodes, &[], &[], 0, Policy::default())
}

fn passed(c: &Capacity, p: &PodClaims, on: &[&str]) -> Vec<String> {
    c.filter(p, &names(on))
        .0
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn bound_claims_keep_the_pod_on_the_replicas_nodes() {
    let c = cap(&[
        node("a", &[(HDD, GI)]),
        node("b", &[(HDD, GI)]),
        node("c", &[]),
    ]);
    let p = PodClaims {
        uid: "u".into(),
        bound: vec![
            BoundClaim {
                pvc: "ns/ha".into(),
                volume: "pvc-1".into(),
                nodes: names(&["a", "b"]),
            },
            BoundClaim {
                pvc: "ns/plain".into(),
                volume: "pvc-2".into(),
                nodes: names(&["b"]),
            },
        ],
        ..Default::default()
    };
    let (ok, failed) = c.filter(&p, &names(&["a", "b", "c"]));
    assert_eq!(ok, vec![("b".to_string(), MAX_SCORE)]);
    assert_eq!(failed["a"], "volume pvc-2 (ns/plain) is on b, not on a");
    assert!(failed["c"].contains("is on a, b, not on c"), "{failed:?}");
    // A volume no replica can serve now: nowhere.
    let mut stuck = p.clone();
    stuck.bound[0].nodes.clear();
    let (ok, failed) = c.filter(&stuck, &names(&["a", "b"]));
    assert!(ok.is_empty());
    assert!(failed["b"].contains("has no replica that can serve it now"));
    // Blocked: every node says why.
    let blocked = PodClaims {
        blocked: vec!["PersistentVolumeClaim ns/x does not exist".into()],
        ..Default::default()
    };
    assert_eq!(
        c.filter(&blocked, &names(&["a"])).1["a"],
        "PersistentVolumeClaim ns/x does not exist"
    );
}

#[test]
fn new_claims_need_room_for_all_of_them_in_each_class() {
    let c = cap(&[
        node("a", &[(HDD, 3 * GI), (SSD, GI)]),
        node("b", &[(HDD, 10 * GI)]),
        node("full", &[(HDD, GI)]),
    ]);
    // 1 GiB + 1 GiB HDD and 512 MiB SSD: only a has both pools; b has no SSD pool.
    let p = pod(
        "u",
        vec![
            new("ns/d1", HDD, GI, false),
            new("ns/d2", HDD, GI, false),
            new("ns/s1", SSD, 512 * MI, false),
        ],
    );
    let (ok, failed) = c.filter(&p, &names(&["a", "b", "full", "ghost"]));
    assert_eq!(
        ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(failed["b"], "b has no SSD pool");
    assert_eq!(
        failed["ghost"],
        "ghost runs no HwameiStor agent (no LocalStorageNode)"
    );
    // Two volumes of 1 GiB do not fit 1 GiB, even though each alone would.
    let hdd_only = pod(
        "u",
        vec![new("ns/d1", HDD, GI, false), new("ns/d2", HDD, GI, false)],
    );
    let failed = c.filter(&hdd_only, &names(&["full"])).1;
    assert_eq!(
        failed["full"],
        "full has 1Gi free in its HDD pool, the pod's new volumes there need 2Gi"
    );
    // Sizes round to the pool's extent per volume: 2 x (1 GiB + 1 B) need 2 GiB + 8 MiB.
    let odd = pod(
        "u",
        vec![
            new("ns/d1", HDD, GI + 1, false),
            new("ns/d2", HDD, GI + 1, false),
        ],
    );
    let tight = cap(&[node("t", &[(HDD, 2 * GI + 4 * MI)])]);
    assert!(tight.filter(&odd, &names(&["t"])).0.is_empty());
    let enough = cap(&[node("t", &[(HDD, 2 * GI + 8 * MI)])]);
    assert_eq!(passed(&enough, &odd, &["t"]), ["t"]);
}

#[test]
fn a_node_not_ready_or_without_an_address_for_replicated_volumes_fails() {
    let mut down = node("down", &[(HDD, 10 * GI)]);
    down.ready = false;
    let mut no_ip = node("noip", &[(HDD, 10 * GI)]);
    no_ip.storage_ip = None;
    let c = cap(&[down, no_ip, node("b", &[(HDD, 10 * GI)])]);
    let plain = pod("u", vec![new("ns/d", HDD, GI, false)]);
    let (ok, failed) = c.filter(&plain, &names(&["down", "noip"]));
    assert_eq!(ok.len(), 1, "a plain volume needs no address");
    assert_eq!(failed["down"], "down's HwameiStor agent is not Ready");
    // A convertible volume runs DRBD: its node needs an address.
    let convertible = pod(
        "u",
        vec![NewClaim {
            second: false,
            ..new("ns/d", HDD, GI, true)
        }],
    );
    let failed = c.filter(&convertible, &names(&["noip"])).1;
    assert!(
        failed["noip"].contains("no replication address"),
        "{failed:?}"
    );
}

#[test]
fn ha_claims_need_a_second_node_with_room() {
    let p = pod("u", vec![new("ns/ha", HDD, GI, true)]);
    // Only a has room: it cannot be both replicas.
    let c = cap(&[node("a", &[(HDD, 5 * GI)]), node("b", &[(HDD, GI / 2)])]);
    let failed = c.filter(&p, &names(&["a"])).1;
    assert_eq!(
        failed["a"],
        "no node other than a has room for the second replica of the pod's HA volumes"
    );
    // With c, a can host the first replica (c the second), and c the first (a the second).
    let c = cap(&[
        node("a", &[(HDD, 5 * GI)]),
        node("b", &[(HDD, GI / 2)]),
        node("c", &[(HDD, 3 * GI)]),
    ]);
    assert_eq!(passed(&c, &p, &["a", "b", "c"]), ["a", "c"]);
    let mut c = c;
    let made = c.reserve(&p, "c", 100).expect("reserve");
    assert_eq!(made[0].node, "c");
    assert_eq!(
        made[0].second.as_deref(),
        Some("a"),
        "the roomiest other node"
    );
    assert_eq!(made[0].meta, drbd::meta_bytes(GI));
}

#[test]
fn scores_prefer_more_room_left() {
    let c = cap(&[
        node("small", &[(HDD, 2 * GI)]),
        node("big", &[(HDD, 20 * GI)]),
    ]);
    let p = pod("u", vec![new("ns/d", HDD, GI, false)]);
    let (ok, _) = c.filter(&p, &names(&["small", "big"]));
    let score = |n: &str| ok.iter().find(|(x, _)| x == n).map(|(_, s)| *s);
    assert_eq!(score("small"), Some(5));
    assert_eq!(score("big"), Some(10));
    assert_eq!(Capacity::best(&ok), Some("big"));
    // Ties go to the first name.
    assert_eq!(
        Capacity::best(&[("b".into(), 3), ("a".into(), 3)]),
        Some("a")
    );
    assert_eq!(Capacity::best(&[]), None);
}

#[test]
fn reservations_hold_room_for_others_until_released_or_expired() {
    let nodes = [node("a", &[(HDD, 3 * GI)])];
    let mut c = cap(&nodes);
    let p1 = pod("p1", vec![new("ns/one", HDD, 2 * GI, false)]);
    let p2 = pod("p2", vec![new("ns/two", HDD, 2 * GI, false)]);
    c.reserve(&p1, "a", 100).expect("p1 fits");
    assert!(
        c.filter(&p2, &names(&["a"])).0.is_empty(),
        "a is held for p1"
    );
    assert!(c.reserve(&p2, "a", 100).is_err());
    // p1 filtered again: its own reservation does not count against it once released.
    c.release_pod("p1");
    assert_eq!(passed(&c, &p2, &["a"]), ["a"]);
    c.reserve(&p2, "a", 100).expect("p2 fits now");
    // The volume of p2 got placed: the claim's reservation goes (the placement counts it).
    c.release_claim("ns/two");
    assert!(c.reservations().is_empty());
    // Expiry.
    c.reserve(&p1, "a", 50).expect("p1 again");
    c.expire(49);
    assert_eq!(c.reservations().len(), 1);
    c.expire(50);
    assert!(c.reservations().is_empty());
    assert_eq!(passed(&c, &p2, &["a"]), ["a"]);
    // Built from reservations: only those that hold at `now`.
    let r = Reservation {
        pvc: "ns/x".into(),
        pod_uid: String::new(),
        node: "a".into(),
        second: None,
        class: HDD,
        bytes: 2 * GI,
        meta: 0,
        expires: 10,
    };
    let held = Capacity::new(&nodes, &[], std::slice::from_ref(&r), 5, Policy::default());
    assert!(held.filter(&p2, &names(&["a"])).0.is_empty());
    let gone = Capacity::new(&nodes, &[], &[r], 10, Policy::default());
    assert_eq!(passed(&gone, &p2, &["a"]), ["a"]);
}

#[test]
fn placed_volumes_count_as_the_placement_counts_them() {
    let nodes = [node("a", &[(HDD, 3 * GI)])];
    let placed = [Placed {
        volume: "v".into(),
        node: "a".into(),
        class: HDD,
        required: 2 * GI,
        // Placed, its logical volume not reported yet: the free bytes do not show it.
        allocated: None,
        meta: 0,
    }];
    let c = Capacity::new(&nodes, &placed, &[], 0, Policy::default());
    let p = pod("u", vec![new("ns/d", HDD, 2 * GI, false)]);
    assert!(c.filter(&p, &names(&["a"])).0.is_empty());
    let small = pod("u", vec![new("ns/d", HDD, GI, false)]);
    assert_eq!(passed(&c, &small, &["a"]), ["a"]);
}

#[test]
fn the_volume_count_limit_counts_new_and_reserved_volumes() {
    let mut n = node("a", &[(HDD, 50 * GI)]);
    if let Some(p) = n.pools.get_mut(&HDD) {
        p.volumes = 2;
    }
    let policy = Policy {
        max_volumes_per_pool: Some(4),
    };
    let mut c = Capacity::new(&[n], &[], &[], 0, policy);
    let two = pod(
        "p1",
        vec![new("ns/a", HDD, GI, false), new("ns/b", HDD, GI, false)],
    );
    c.reserve(&two, "a", 100).expect("2 + 2 = 4");
    let one = pod("p2", vec![new("ns/c", HDD, GI, false)]);
    let failed = c.filter(&one, &names(&["a"])).1;
    assert_eq!(failed["a"], "a's HDD pool holds 4 volumes (at most 4)");
}

#[test]
fn a_pod_without_new_claims_fits_every_node_holding_its_volumes() {
    let c = cap(&[node("a", &[(HDD, 0)])]);
    let p = PodClaims {
        uid: "u".into(),
        bound: vec![BoundClaim {
            pvc: "ns/d".into(),
            volume: "v".into(),
            nodes: names(&["a"]),
        }],
        ..Default::default()
    };
    // A full pool does not matter to a volume that exists.
    assert_eq!(
        c.filter(&p, &names(&["a"])).0,
        vec![("a".to_string(), MAX_SCORE)]
    );
    assert!(!PodClaims::default().uses_storage());
    let mut c2 = c.clone();
    assert!(c2.reserve(&p, "a", 10).expect("nothing to hold").is_empty());
}

/// A burst of pods each given the best node and reserved at once never promises more than
/// the pools hold, and every pod that gets no node is told why.
#[test]
fn a_burst_never_overcommits_a_node() {
    let nodes: Vec<NodeView> = (0..20)
        .map(|i| node(&format!("n{i:02}"), &[(HDD, (i % 5 + 1) * 10 * GI)]))
        .collect();
    let mut c = cap(&nodes);
    let all: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let (mut given, mut refused) = (0, 0);
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..1000 {
        let ha = i % 7 == 0;
        let p = pod(
            &format!("p{i}"),
            vec![
                new(&format!("ns/a{i}"), HDD, GI, ha),
                new(&format!("ns/b{i}"), HDD, 2 * GI, false),
            ],
        );
        let (ok, failed) = c.filter(&p, &all);
        match Capacity::best(&ok).map(str::to_string) {
            Some(n) => {
                let made = c
                    .reserve(&p, &n, 1000)
                    .expect("a node that passed can be held");
                for r in made {
                    let b =
                        round_up_to_extent(r.bytes, 4 * MI) + round_up_to_extent(r.meta, 4 * MI);
                    *used.entry(r.node.clone()).or_default() += b;
                    if let Some(s) = r.second {
                        *used.entry(s).or_default() += b;
                    }
                }
                given += 1;
            }
            None => {
                assert_eq!(failed.len(), all.len());
                assert!(failed.values().all(|w| !w.is_empty()));
                refused += 1;
            }
        }
    }
    for n in &nodes {
        let free = n.pools[&HDD].free;
        assert!(
            used.get(&n.name).copied().unwrap_or(0) <= free,
            "{} over-committed",
            n.name
        );
    }
    assert!(
        given > 100 && refused > 0,
        "given {given}, refused {refused}"
    );
}
