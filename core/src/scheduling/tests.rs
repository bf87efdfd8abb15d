use super::*;
use crate::disk_volume::size_fits;
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
                        thin_percent: 100,
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
        thin: false,
        data_nodes: Vec::new(),
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
    Capacity::new(nodes, &[], &[], &[], 0, Policy::default())
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
        made[0].hold,
        Hold::Pool {
            class: HDD,
            bytes: GI,
            meta: drbd::meta_bytes(GI),
            // The roomiest other node.
            second: Some("a".into()),
            thin: false,
        }
    );
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
fn a_claim_restoring_data_prefers_the_node_holding_it_over_room() {
    let c = cap(&[
        node("small", &[(HDD, 2 * GI)]),
        node("big", &[(HDD, 20 * GI)]),
    ]);
    let restore = NewClaim {
        data_nodes: names(&["small"]),
        ..new("ns/r", HDD, GI, false)
    };
    let p = pod("u", vec![restore.clone()]);
    let (ok, _) = c.filter(&p, &names(&["small", "big"]));
    let score_on = |ok: &[(String, i64)], n: &str| ok.iter().find(|(x, _)| x == n).map(|(_, s)| *s);
    // The data's node: 6 for holding it all, 2 for half its room left; the other: room only.
    assert_eq!(score_on(&ok, "small"), Some(8));
    assert_eq!(score_on(&ok, "big"), Some(4));
    assert_eq!(Capacity::best(&ok), Some("small"));
    // Half the data on each node: room decides between them again.
    let clone = NewClaim {
        data_nodes: names(&["big"]),
        ..new("ns/c", HDD, GI, false)
    };
    let p = pod("u2", vec![restore.clone(), clone]);
    let (ok, _) = c.filter(&p, &names(&["small", "big"]));
    assert!(score_on(&ok, "big") > score_on(&ok, "small"), "{ok:?}");
    // Holding the data never lets a node without room pass.
    let full = cap(&[node("small", &[(HDD, GI / 2)])]);
    let (ok, failed) = full.filter(&pod("u3", vec![restore]), &names(&["small"]));
    assert!(ok.is_empty() && failed.contains_key("small"), "{failed:?}");
    // The score rule itself: locality outweighs room.
    assert_eq!(score(1.0, None), 10);
    assert_eq!(score(0.0, Some(1.0)), 6);
    assert_eq!(score(1.0, Some(0.0)), 4);
    assert_eq!(
        data_locality(&pod("u4", vec![new("ns/p", HDD, GI, false)]), "small"),
        None
    );
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
        hold: Hold::Pool {
            class: HDD,
            bytes: 2 * GI,
            meta: 0,
            second: None,
            thin: false,
        },
        expires: 10,
    };
    let held = Capacity::new(
        &nodes,
        &[],
        &[],
        std::slice::from_ref(&r),
        5,
        Policy::default(),
    );
    assert!(held.filter(&p2, &names(&["a"])).0.is_empty());
    let gone = Capacity::new(&nodes, &[], &[], &[r], 10, Policy::default());
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
        thin: false,
    }];
    let c = Capacity::new(&nodes, &placed, &[], &[], 0, Policy::default());
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
    let mut c = Capacity::new(&[n], &[], &[], &[], 0, policy);
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
                    let Hold::Pool {
                        bytes,
                        meta,
                        second,
                        ..
                    } = r.hold
                    else {
                        panic!("a disk hold for pool claims: {r:?}");
                    };
                    let b = round_up_to_extent(bytes, 4 * MI) + round_up_to_extent(meta, 4 * MI);
                    *used.entry(r.node.clone()).or_default() += b;
                    if let Some(s) = second {
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

fn need(required: i64, max: Option<i64>) -> DiskNeed {
    DiskNeed { required, max }
}

fn disk_claim(pvc: &str, t: DiskType, required: i64) -> NewDiskClaim {
    NewDiskClaim {
        pvc: pvc.into(),
        disk_type: t,
        need: need(required, None),
    }
}

fn free(node: &str, t: DiskType, capacity: i64) -> FreeDisk {
    FreeDisk {
        node: node.into(),
        disk_type: t,
        capacity,
    }
}

fn disk_pod(uid: &str, disks: Vec<NewDiskClaim>) -> PodClaims {
    PodClaims {
        uid: uid.into(),
        disks,
        ..Default::default()
    }
}

/// Whether each need can have its own disk, by trying every assignment.
fn exhaustive(free: &[i64], needs: &[DiskNeed]) -> bool {
    fn go(free: &[i64], used: &mut Vec<bool>, needs: &[DiskNeed]) -> bool {
        let Some((n, rest)) = needs.split_first() else {
            return true;
        };
        for i in 0..free.len() {
            if !used[i] && size_fits(free[i], n.required, n.max) {
                used[i] = true;
                if go(free, used, rest) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    go(free, &mut vec![false; free.len()], needs)
}

#[test]
fn disks_suffice_finds_an_assignment_whenever_one_exists() {
    // A need with a low limit is served first by the small disk it can take.
    assert!(disks_suffice(
        &[2 * GI, 5 * GI],
        &[need(GI, Some(10 * GI)), need(GI, Some(2 * GI))]
    ));
    assert!(!disks_suffice(&[2 * GI], &[need(GI, None), need(GI, None)]));
    assert!(!disks_suffice(&[2 * GI, 5 * GI], &[need(6 * GI, None)]));
    assert!(!disks_suffice(&[5 * GI], &[need(GI, Some(4 * GI))]));
    assert!(disks_suffice(&[GI], &[]));
    // Against every assignment tried, on small random cases.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    for _ in 0..3000 {
        let mut disks: Vec<i64> = (0..next(6)).map(|_| (next(8) as i64 + 1) * GI).collect();
        disks.sort_unstable();
        let needs: Vec<DiskNeed> = (0..next(5))
            .map(|_| {
                let r = (next(8) as i64 + 1) * GI;
                let max = (next(3) == 0).then(|| r + next(4) as i64 * GI);
                need(r, max)
            })
            .collect();
        assert_eq!(
            disks_suffice(&disks, &needs),
            exhaustive(&disks, &needs),
            "disks {disks:?}, needs {needs:?}"
        );
    }
}

#[test]
fn new_disk_claims_need_a_free_disk_of_their_type_each() {
    let c = Capacity::new(
        &[node("a", &[]), node("b", &[(SSD, 50 * GI)]), node("c", &[])],
        &[],
        &[
            free("a", DiskType::Ssd, GI),
            free("a", DiskType::Ssd, 4 * GI),
            free("a", DiskType::Hdd, 8 * GI),
            free("c", DiskType::Ssd, 2 * GI),
        ],
        &[],
        0,
        Policy::default(),
    );
    let two = disk_pod(
        "u",
        vec![
            disk_claim("ns/x", DiskType::Ssd, 3 * GI / 2),
            disk_claim("ns/y", DiskType::Ssd, GI),
        ],
    );
    let (ok, failed) = c.filter(&two, &names(&["a", "b", "c", "d"]));
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].0, "a");
    // An SSD pool is not an SSD disk.
    assert_eq!(
        failed["b"],
        "b has no free SSD disk; the pod's new disk volumes need 2 of them (at least 1.5Gi, at least 1Gi)"
    );
    assert!(
        failed["c"].starts_with("c's free SSD disks: 2Gi;"),
        "{}",
        failed["c"]
    );
    assert!(
        failed["d"].contains("no LocalStorageNode"),
        "{}",
        failed["d"]
    );
    // Of another type, or larger than any.
    let hdd = disk_pod("u", vec![disk_claim("ns/h", DiskType::Hdd, 8 * GI)]);
    assert_eq!(passed(&c, &hdd, &["a", "c"]), ["a"]);
    let big = disk_pod("u", vec![disk_claim("ns/h", DiskType::Hdd, 9 * GI)]);
    assert!(passed(&c, &big, &["a"]).is_empty());
    // Mixed with pool claims: both must fit on the node.
    let mixed = PodClaims {
        new: vec![new("ns/l", SSD, GI, false)],
        ..disk_pod("u", vec![disk_claim("ns/d", DiskType::Ssd, GI)])
    };
    let (ok, failed) = c.filter(&mixed, &names(&["a", "b", "c"]));
    assert!(ok.is_empty(), "{ok:?}");
    assert_eq!(failed["a"], "a has no SSD pool");
    assert!(
        failed["b"].starts_with("b has no free SSD disk"),
        "{}",
        failed["b"]
    );
}

#[test]
fn disk_holds_keep_a_disk_for_one_pod_until_released_or_expired() {
    let nodes = [node("a", &[]), node("b", &[])];
    let disks = [
        free("a", DiskType::Nvme, 2 * GI),
        free("a", DiskType::Nvme, 4 * GI),
        free("b", DiskType::Nvme, 4 * GI),
    ];
    let mut c = Capacity::new(&nodes, &[], &disks, &[], 0, Policy::default());
    let p1 = disk_pod("p1", vec![disk_claim("ns/one", DiskType::Nvme, 3 * GI)]);
    let p2 = disk_pod("p2", vec![disk_claim("ns/two", DiskType::Nvme, 3 * GI)]);
    let p3 = disk_pod("p3", vec![disk_claim("ns/three", DiskType::Nvme, GI)]);
    let made = c.reserve(&p1, "a", 100).expect("p1 fits on a");
    assert_eq!(
        made[0].hold,
        Hold::Disk {
            disk_type: DiskType::Nvme,
            need: need(3 * GI, None)
        }
    );
    // a's 4 GiB disk is p1's: p2 goes to b; p3 still fits a's 2 GiB.
    let (ok, failed) = c.filter(&p2, &names(&["a", "b"]));
    assert_eq!(
        ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        failed["a"],
        "a's free NVMe disks: 2Gi, 4Gi (1 held for other pods: at least 3Gi); the pod's new disk volumes need 1 of them (at least 3Gi)"
    );
    assert_eq!(passed(&c, &p3, &["a"]), ["a"]);
    // More room left scores higher: b keeps none of one, a one of two.
    let scores: BTreeMap<String, i64> = c.filter(&p3, &names(&["a", "b"])).0.into_iter().collect();
    assert_eq!(scores["a"], 0);
    assert_eq!(scores["b"], 0);
    let p4 = disk_pod("p4", vec![disk_claim("ns/four", DiskType::Nvme, GI)]);
    c.release_pod("p1");
    let scores: BTreeMap<String, i64> = c.filter(&p4, &names(&["a", "b"])).0.into_iter().collect();
    assert!(scores["a"] > scores["b"], "{scores:?}");
    // Its disk bound (the claim released): a fits p2 again.
    c.reserve(&p1, "a", 100).expect("again");
    assert!(passed(&c, &p2, &["a"]).is_empty());
    c.release_claim("ns/one");
    assert_eq!(passed(&c, &p2, &["a"]), ["a"]);
    // Expired.
    c.reserve(&p1, "a", 50).expect("again");
    c.expire(50);
    assert_eq!(passed(&c, &p2, &["a"]), ["a"]);
    // Moved with its pod (the scheduler bound it elsewhere): held on b now.
    let made = c.reserve(&p1, "a", 100).expect("again");
    c.release_pod("p1");
    c.restore(made.into_iter().map(|r| r.moved_to("b")).collect());
    assert_eq!(passed(&c, &p2, &["a", "b"]), ["a"]);
}

/// A burst of pods with disk claims never holds more disks on a node than it has free, of
/// the sizes asked (checked by trying every assignment), and every pod left out is told why.
#[test]
fn a_burst_of_disk_claims_never_promises_a_disk_twice() {
    let nodes: Vec<NodeView> = (0..8).map(|i| node(&format!("n{i}"), &[])).collect();
    let mut disks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for k in 0..(i % 3 + 2) {
            disks.push(free(&n.name, DiskType::Hdd, ((i + k) % 4 + 1) as i64 * GI));
        }
    }
    let mut c = Capacity::new(&nodes, &[], &disks, &[], 0, Policy::default());
    let all: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut held: BTreeMap<String, Vec<DiskNeed>> = BTreeMap::new();
    let (mut given, mut refused) = (0, 0);
    for i in 0..200 {
        let mut claims = vec![disk_claim(
            &format!("ns/a{i}"),
            DiskType::Hdd,
            (i % 4 + 1) * GI,
        )];
        if i % 3 == 0 {
            claims.push(NewDiskClaim {
                need: need(GI, Some(2 * GI)),
                ..disk_claim(&format!("ns/b{i}"), DiskType::Hdd, GI)
            });
        }
        let p = disk_pod(&format!("p{i}"), claims);
        let (ok, failed) = c.filter(&p, &all);
        match Capacity::best(&ok).map(str::to_string) {
            Some(n) => {
                for r in c
                    .reserve(&p, &n, 1000)
                    .expect("a node that passed can be held")
                {
                    let Hold::Disk { need, .. } = r.hold else {
                        panic!("a pool hold for disk claims: {r:?}");
                    };
                    held.entry(r.node).or_default().push(need);
                }
                given += 1;
            }
            None => {
                assert!(
                    failed.values().all(|w| w.contains("HDD disk")),
                    "{failed:?}"
                );
                refused += 1;
            }
        }
    }
    for n in &nodes {
        let mut sizes: Vec<i64> = disks
            .iter()
            .filter(|d| d.node == n.name)
            .map(|d| d.capacity)
            .collect();
        sizes.sort_unstable();
        let needs = held.get(&n.name).cloned().unwrap_or_default();
        assert!(
            exhaustive(&sizes, &needs),
            "{}: {sizes:?} for {needs:?}",
            n.name
        );
    }
    assert!(
        given > 5 && refused > 100,
        "given {given}, refused {refused}"
    );
}

#[test]
fn thin_claims_need_their_share_of_the_pool_and_hold_only_that() {
    // 2 GiB free on each; a's agent over-provisions thin pools 300%, b's does not say.
    let mut a = node("a", &[(HDD, 2 * GI)]);
    let b = node("b", &[(HDD, 2 * GI)]);
    for p in a.pools.values_mut() {
        p.thin_percent = 300;
    }
    let mut c = cap(&[a, b]);
    let thin = |pvc: &str, bytes: i64| NewClaim {
        thin: true,
        ..new(pvc, HDD, bytes, false)
    };
    // 3 GiB thin + 1 GiB thick: a needs 1 + 1 GiB, b 3 + 1 GiB.
    let p1 = pod(
        "p1",
        vec![thin("ns/t1", 3 * GI), new("ns/k1", HDD, GI, false)],
    );
    let (ok, failed) = c.filter(&p1, &names(&["a", "b"]));
    assert_eq!(
        ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(
        failed["b"],
        "b has 2Gi free in its HDD pool, the pod's new volumes there need 4Gi"
    );
    // Held on a: 2 GiB of the 2 (the thin claim's share only): nothing left for another.
    c.reserve(&p1, "a", 100).expect("p1 fits a");
    let p2 = pod("p2", vec![thin("ns/t2", 4 * MI)]);
    assert!(
        c.filter(&p2, &names(&["a"])).0.is_empty(),
        "a is held for p1"
    );
    // Released: 6 GiB of thin volumes fit the 2 GiB at 300%, not 6 GiB + 12 MiB.
    c.release_pod("p1");
    assert_eq!(
        passed(&c, &pod("p3", vec![thin("ns/t3", 6 * GI)]), &["a"]),
        ["a"]
    );
    assert!(c
        .filter(
            &pod("p4", vec![thin("ns/t4", 6 * GI + 12 * MI)]),
            &names(&["a"])
        )
        .0
        .is_empty());
}
