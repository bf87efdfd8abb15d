//! The CSI controller service and the LocalVolume reconciler end to end, with a fake node
//! agent (see `common`), against the project's in-process API server or a shared real
//! cluster: every test names what it creates with an id of its own, pins its volumes to its
//! own nodes and runs a reconciler scoped to them, so tests run side by side and over
//! leftovers of earlier runs.

mod common;

use common::{eventually, set_pool, start_scoped, GI};
use hwameistor_api::volume::{ANNOTATION_CSI_NAME, CONDITION_SCHEDULED, REASON_NO_CAPACITY};
use hwameistor_api::{
    Accessibility, LocalStorageNode, LocalVolume, LocalVolumeReplica, LocalVolumeSpec, PoolClass,
    VolumeState, FINALIZER_VOLUME, LABEL_NODE, LABEL_VOLUME,
};
use hwameistor_controller::metrics::Metrics;
use hwameistor_controller::volume_reconciler::UNPLACED_RETRY;
use hwameistor_csi::controller::{ControllerService, Timeouts};
use hwameistor_csi::csi::controller_server::Controller;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use hwameistor_csi::csi::*;
use hwameistor_csi::topology;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tonic::{Code, Request};

fn service(client: &kube::Client) -> ControllerService {
    let t = Duration::from_secs(20);
    ControllerService::new(
        client.clone(),
        Timeouts {
            create: t,
            delete: t,
            expand: t,
        },
    )
}

fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

fn create_req(
    name: &str,
    bytes: i64,
    node: Option<&str>,
    cap: VolumeCapability,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        parameters: HashMap::from([
            ("poolClass".to_string(), "HDD".to_string()),
            (
                "csi.storage.k8s.io/pvc/name".to_string(),
                format!("claim-{name}"),
            ),
            (
                "csi.storage.k8s.io/pvc/namespace".to_string(),
                "apps".to_string(),
            ),
        ]),
        accessibility_requirements: node.map(|n| TopologyRequirement {
            requisite: vec![topology::of_node(n)],
            preferred: vec![topology::of_node(n)],
        }),
        ..Default::default()
    }
}

fn publish_req(volume: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        volume_capability: Some(mount_cap()),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_publish_expand_delete_leaves_nothing_behind() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("n1", 10 * GI, 8 * GI).await;
    let n2 = cluster.add_node("n2", 10 * GI, 5 * GI).await;
    let pvc = cluster.name("pvc-a");
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(client.clone());

    // WaitForFirstConsumer picked n2 although n1 has more room: n2 it is.
    let created = csi
        .create_volume(Request::new(create_req(&pvc, GI, Some(&n2), mount_cap())))
        .await
        .expect("create")
        .into_inner();
    let vol = created.volume.clone().expect("volume");
    assert_eq!(vol.volume_id, pvc);
    assert_eq!(vol.capacity_bytes, GI);
    assert_eq!(vol.accessible_topology, vec![topology::of_node(&n2)]);
    assert_eq!(
        vol.volume_context.get("fsType").map(String::as_str),
        Some("xfs")
    );

    let lv = volumes.get(&pvc).await.expect("LocalVolume");
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.state),
        Some(VolumeState::Ready)
    );
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.allocated_capacity_bytes),
        Some(GI)
    );
    assert!(lv
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .contains(&FINALIZER_VOLUME.to_string()));
    let config = lv.spec.config.clone().expect("placed");
    assert_eq!(
        (
            config.resource_id,
            config.replicas.len(),
            config.replicas[0].hostname.as_str()
        ),
        (-1, 1, n2.as_str())
    );
    assert_eq!(
        (
            lv.spec.pvc_name.as_deref(),
            lv.spec.pvc_namespace.as_deref()
        ),
        (Some(format!("claim-{pvc}").as_str()), Some("apps"))
    );
    let r = replicas.get(&format!("{pvc}-{n2}")).await.expect("replica");
    let labels = r.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        (
            labels.get(LABEL_NODE).map(String::as_str),
            labels.get(LABEL_VOLUME).map(String::as_str)
        ),
        (Some(n2.as_str()), Some(pvc.as_str()))
    );
    assert_eq!(
        r.metadata.owner_references.clone().unwrap_or_default()[0].uid,
        lv.metadata.uid.clone().unwrap_or_default()
    );

    // Repeating the call answers the same; asking for something else is a conflict.
    let again = csi
        .create_volume(Request::new(create_req(&pvc, GI, Some(&n2), mount_cap())))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, created);
    let err = csi
        .create_volume(Request::new(create_req(
            &pvc,
            2 * GI,
            Some(&n2),
            mount_cap(),
        )))
        .await
        .expect_err("bigger");
    assert_eq!(err.code(), Code::AlreadyExists);
    let of_pvc = ListParams::default().labels(&format!("{LABEL_VOLUME}={pvc}"));
    assert_eq!(
        replicas.list(&of_pvc).await.expect("list").items.len(),
        1,
        "no second replica"
    );

    // Publish: only to the volume's node, idempotent, and it records the node.
    for _ in 0..2 {
        let ctx = csi
            .controller_publish_volume(Request::new(publish_req(&pvc, &n2)))
            .await
            .expect("publish")
            .into_inner();
        assert_eq!(
            ctx.publish_context.get("devicePath").map(String::as_str),
            Some(format!("/dev/LocalStorage_PoolHDD/{pvc}").as_str())
        );
    }
    let lv = volumes.get(&pvc).await.expect("lv");
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.published_node.as_deref()),
        Some(n2.as_str())
    );
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.state),
        Some(VolumeState::Ready),
        "the reconciler keeps publishedNode and state apart"
    );
    assert_eq!(
        csi.controller_publish_volume(Request::new(publish_req(&pvc, &n1)))
            .await
            .expect_err("other node")
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        csi.controller_publish_volume(Request::new(publish_req(&pvc, &cluster.name("ghost"))))
            .await
            .expect_err("no node")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        csi.controller_publish_volume(Request::new(publish_req(&cluster.name("nope"), &n2)))
            .await
            .expect_err("no volume")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: pvc.clone(),
            ..Default::default()
        }))
        .await
        .expect_err("in use")
        .code(),
        Code::FailedPrecondition
    );

    // Validation, listing and capacity.
    let v = csi
        .validate_volume_capabilities(Request::new(ValidateVolumeCapabilitiesRequest {
            volume_id: pvc.clone(),
            volume_capabilities: vec![mount_cap()],
            ..Default::default()
        }))
        .await
        .expect("validate")
        .into_inner();
    assert!(v.confirmed.is_some(), "{}", v.message);
    let v = csi
        .validate_volume_capabilities(Request::new(ValidateVolumeCapabilitiesRequest {
            volume_id: pvc.clone(),
            volume_capabilities: vec![block_cap()],
            ..Default::default()
        }))
        .await
        .expect("validate block")
        .into_inner();
    assert!(v.confirmed.is_none() && !v.message.is_empty());
    let list = csi
        .list_volumes(Request::new(ListVolumesRequest {
            max_entries: 0,
            starting_token: String::new(),
        }))
        .await
        .expect("list")
        .into_inner();
    // Every volume of the cluster is listed; a shared one has other tests' too.
    let ours: Vec<_> = list
        .entries
        .iter()
        .filter(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == pvc))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(
        ours[0]
            .status
            .as_ref()
            .map(|s| s.published_node_ids.clone()),
        Some(vec![n2.clone()])
    );
    let cap_n2 = csi
        .get_capacity(Request::new(GetCapacityRequest {
            parameters: HashMap::from([("poolClass".to_string(), "HDD".to_string())]),
            accessible_topology: Some(topology::of_node(&n2)),
            ..Default::default()
        }))
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(cap_n2.available_capacity, 5 * GI);
    let ssd = csi
        .get_capacity(Request::new(GetCapacityRequest {
            parameters: HashMap::from([("poolClass".to_string(), "SSD".to_string())]),
            accessible_topology: Some(topology::of_node(&n2)),
            ..Default::default()
        }))
        .await
        .expect("ssd")
        .into_inner();
    assert_eq!(ssd.available_capacity, 0);
    let bad = csi
        .get_capacity(Request::new(GetCapacityRequest {
            parameters: HashMap::from([("poolClass".to_string(), "tape".to_string())]),
            ..Default::default()
        }))
        .await
        .expect_err("bad class");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Expand: the size flows to the replica and back; a filesystem needs the node's part.
    for _ in 0..2 {
        let grown = csi
            .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
                volume_id: pvc.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 2 * GI,
                    limit_bytes: 0,
                }),
                volume_capability: Some(mount_cap()),
                ..Default::default()
            }))
            .await
            .expect("expand")
            .into_inner();
        assert_eq!(
            (grown.capacity_bytes, grown.node_expansion_required),
            (2 * GI, true)
        );
    }
    assert_eq!(
        replicas
            .get(&format!("{pvc}-{n2}"))
            .await
            .expect("replica")
            .spec
            .required_capacity_bytes,
        2 * GI
    );
    let lv = volumes.get(&pvc).await.expect("lv");
    assert_eq!(
        lv.spec
            .config
            .as_ref()
            .map(|c| (c.required_capacity_bytes, c.version)),
        Some((2 * GI, 2))
    );
    let too_big = csi
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: pvc.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 9 * GI,
                limit_bytes: 0,
            }),
            ..Default::default()
        }))
        .await
        .expect_err("n2 has 5Gi free");
    assert_eq!(too_big.code(), Code::ResourceExhausted);

    // Unpublish (twice), delete (twice): everything is gone.
    for _ in 0..2 {
        csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
            volume_id: pvc.clone(),
            node_id: n2.clone(),
            ..Default::default()
        }))
        .await
        .expect("unpublish");
    }
    assert_eq!(
        volumes
            .get(&pvc)
            .await
            .expect("lv")
            .status
            .and_then(|s| s.published_node),
        None
    );
    for _ in 0..2 {
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: pvc.clone(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    }
    assert!(volumes.get_opt(&pvc).await.expect("get").is_none());
    assert!(replicas.list(&of_pvc).await.expect("list").items.is_empty());
    // A volume that is gone is published nowhere: detaching it again succeeds (the spec's
    // "safely regarded as ControllerUnpublished").
    csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
        volume_id: pvc.clone(),
        node_id: n2.clone(),
        ..Default::default()
    }))
    .await
    .expect("unpublish of a deleted volume");

    // The reconciler told people what happened.
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    let all_events = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    let reasons: Vec<String> = all_events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pvc.as_str()))
        .filter_map(|e| e.reason)
        .collect();
    for want in [
        "Scheduled",
        "ReplicaCreated",
        "VolumeReady",
        "VolumeExpanding",
        "ReplicaDeleting",
        "VolumeDeleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
}

#[tokio::test]
async fn no_room_is_resource_exhausted_and_leaves_nothing() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("n1", 2 * GI, 2 * GI).await;
    let n9 = cluster.name("n9");
    let csi = service(&client);

    // No node has the room: the controller's placement refuses, and the CSI driver removes
    // the LocalVolume it had written.
    let err = csi
        .create_volume(Request::new(create_req(
            &cluster.name("pvc-big"),
            3 * GI,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains(&format!("{n1} has 2Gi free")),
        "{}",
        err.message()
    );
    // Allowed on a node that is no storage node and on n1 (too small): both are named.
    // (Not on the unknown node alone: a scoped controller leaves a volume pinned to nothing
    // but unknown names to whichever scope that node will join.)
    let mut elsewhere = create_req(
        &cluster.name("pvc-elsewhere"),
        3 * GI,
        Some(&n9),
        mount_cap(),
    );
    if let Some(t) = elsewhere.accessibility_requirements.as_mut() {
        t.requisite.push(topology::of_node(&n1));
    }
    let err = csi
        .create_volume(Request::new(elsewhere))
        .await
        .expect_err("unknown node");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message()
            .contains(&format!("{n9} is not a storage node"))
            && err.message().contains(&format!("{n1} has 2Gi free")),
        "{}",
        err.message()
    );
    assert_eq!(cluster.own::<LocalVolume>().await, Vec::<String>::new());

    // The node still reports 2 GiB free after the first volume took 1.5 GiB (the fake agent
    // never updates it, like a node whose report lags): the controller's own accounting
    // (2 GiB total, 1.5 GiB placed) refuses the second, and the CSI driver removes the
    // LocalVolume it had created.
    let first = csi
        .create_volume(Request::new(create_req(
            &cluster.name("pvc-1"),
            1536 << 20,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect("first fits");
    assert_eq!(
        first.into_inner().volume.map(|v| v.capacity_bytes),
        Some(1536 << 20)
    );
    let err = csi
        .create_volume(Request::new(create_req(
            &cluster.name("pvc-2"),
            1536 << 20,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect_err("second does not");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains(&format!("{n1} has 512Mi free")),
        "{}",
        err.message()
    );
    assert_eq!(
        cluster.own::<LocalVolume>().await,
        vec![cluster.name("pvc-1")]
    );
    let replicas: Api<LocalVolumeReplica> = Api::all(client.clone());
    let on_n1 = ListParams::default().labels(&format!("{LABEL_NODE}={n1}"));
    eventually("only pvc-1's replica exists", || async {
        let items = replicas
            .list(&on_n1)
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        items.len() == 1 && items[0].spec.volume_name == cluster.name("pvc-1")
    })
    .await;
}

#[tokio::test]
async fn block_volumes_and_pagination() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("n1", 10 * GI, 10 * GI).await;
    let names: Vec<String> = (0..3).map(|i| cluster.name(&format!("pvc-{i}"))).collect();
    let csi = service(&client);
    for name in &names {
        let v = csi
            .create_volume(Request::new(create_req(name, 1, Some(&n1), block_cap())))
            .await
            .expect("block")
            .into_inner();
        let v = v.volume.expect("volume");
        assert_eq!(v.capacity_bytes, 4 << 20, "raw block floor is one extent");
        assert!(v.volume_context.is_empty(), "no filesystem");
    }
    // Pages over every volume of the cluster (a shared one has other tests' too): ours
    // come each once, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10_000 {
        let page = csi
            .list_volumes(Request::new(ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            }))
            .await
            .expect("page")
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .into_iter()
                .filter_map(|e| e.volume.map(|v| v.volume_id))
                .filter(|id| names.contains(id)),
        );
        token = page.next_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "the listing never ended");
    assert_eq!(seen, names);
    let bad = csi
        .list_volumes(Request::new(ListVolumesRequest {
            max_entries: 1,
            starting_token: "garbage".into(),
        }))
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), Code::Aborted);
    let grown = csi
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: names[0].clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 8 << 20,
                limit_bytes: 0,
            }),
            volume_capability: Some(block_cap()),
            ..Default::default()
        }))
        .await
        .expect("expand block")
        .into_inner();
    assert_eq!(
        (grown.capacity_bytes, grown.node_expansion_required),
        (8 << 20, false)
    );
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn any_csi_name_becomes_a_volume_and_names_stay_apart() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    // A one-letter node: a mapped name is up to 61 characters and its replica is named
    // "<volume>-<node>". A real API server takes that up to 253 characters, but the test
    // server limits every dot-separated part of a name to 63 (stricter than Kubernetes).
    // The test server is this test's own; on a shared real cluster the node needs the id.
    let node = if cluster.server.is_real() {
        cluster.name("a")
    } else {
        "a".to_string()
    };
    cluster.add_node_named(&node, 10 * GI, 10 * GI).await;
    let id = cluster.id.clone();
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());

    // Upper case and 128 characters: names the spec allows and an object name does not.
    // Each carries the test's id: the object name is a function of the CSI name.
    let long = format!("Sanity-{id}-{}", "X".repeat(120 - id.len()));
    assert_eq!(long.len(), 128);
    let upper = format!("Sanity-CreateVolume-ABC-{id}");
    let odd = format!("with space/and:colon {id}");
    for name in [upper.as_str(), long.as_str(), odd.as_str()] {
        let v = csi
            .create_volume(Request::new(create_req(name, GI, Some(&node), mount_cap())))
            .await
            .unwrap_or_else(|e| panic!("create {name:?}: {e}"))
            .into_inner()
            .volume
            .expect("volume");
        let object = hwameistor_core::naming::volume_object_name(name);
        assert_eq!(v.volume_id, object, "the volume id is the object name");
        let lv = volumes.get(&object).await.expect("LocalVolume");
        assert_eq!(
            lv.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_CSI_NAME))
                .map(String::as_str),
            Some(name),
            "the original name is recorded"
        );
        // Same name again: the same volume.
        let again = csi
            .create_volume(Request::new(create_req(name, GI, Some(&node), mount_cap())))
            .await
            .expect("repeat")
            .into_inner()
            .volume
            .expect("volume");
        assert_eq!(again, v);
        // Same name, another size or other parameters: AlreadyExists.
        assert_eq!(
            code(
                csi.create_volume(Request::new(create_req(
                    name,
                    2 * GI,
                    Some(&node),
                    mount_cap()
                )))
                .await
            ),
            Code::AlreadyExists
        );
        let mut ssd = create_req(name, GI, Some(&node), mount_cap());
        ssd.parameters.insert("poolClass".into(), "SSD".into());
        assert_eq!(
            code(csi.create_volume(Request::new(ssd)).await),
            Code::AlreadyExists
        );
        assert_eq!(
            code(
                csi.create_volume(Request::new(create_req(name, GI, Some(&node), block_cap())))
                    .await
            ),
            Code::AlreadyExists
        );
        // The id serves every other call.
        assert_eq!(
            code(
                csi.controller_get_volume(Request::new(ControllerGetVolumeRequest {
                    volume_id: object.clone(),
                }))
                .await
            ),
            Code::Ok
        );
    }
    // A plain name keeps its name and records nothing.
    let plain_name = cluster.name("pvc-plain");
    csi.create_volume(Request::new(create_req(
        &plain_name,
        GI,
        Some(&node),
        mount_cap(),
    )))
    .await
    .expect("plain");
    let plain = volumes.get(&plain_name).await.expect("plain LocalVolume");
    assert!(!plain
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(ANNOTATION_CSI_NAME));

    // A mapping collision: the object a name maps to already belongs to another name.
    let name = format!("Collides-With-Someone-{id}");
    let name = name.as_str();
    let object = hwameistor_core::naming::volume_object_name(name);
    let mut other = LocalVolume::new(&object, volumes.get(&plain_name).await.expect("plain").spec);
    other.spec.config = None;
    other.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_CSI_NAME.to_string(),
        "Someone-Else".to_string(),
    )]));
    volumes
        .create(&PostParams::default(), &other)
        .await
        .expect("squatter");
    let err = csi
        .create_volume(Request::new(create_req(name, GI, Some(&node), mount_cap())))
        .await
        .expect_err("collision");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().contains("Someone-Else") && err.message().contains(name),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn unknown_volumes_and_nodes_get_the_spec_codes() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("n1", 10 * GI, 10 * GI).await;
    let csi = service(&client);

    // Ids that are no object name cannot be ours: never InvalidArgument from the API server.
    let missing = cluster.name("no-such-volume");
    for id in [missing.as_str(), "Not-An-Object-Name", &"x".repeat(128)] {
        assert_eq!(
            code(
                csi.controller_publish_volume(Request::new(publish_req(id, &n1)))
                    .await
            ),
            Code::NotFound,
            "publish {id}"
        );
        assert_eq!(
            code(
                csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
                    volume_id: id.into(),
                    node_id: n1.clone(),
                    ..Default::default()
                }))
                .await
            ),
            Code::Ok,
            "unpublish {id}"
        );
        assert_eq!(
            code(
                csi.delete_volume(Request::new(DeleteVolumeRequest {
                    volume_id: id.into(),
                    ..Default::default()
                }))
                .await
            ),
            Code::Ok,
            "delete {id}"
        );
        assert_eq!(
            code(
                csi.validate_volume_capabilities(Request::new(ValidateVolumeCapabilitiesRequest {
                    volume_id: id.into(),
                    volume_capabilities: vec![mount_cap()],
                    ..Default::default()
                }))
                .await
            ),
            Code::NotFound,
            "validate {id}"
        );
        assert_eq!(
            code(
                csi.controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
                    volume_id: id.into(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: GI,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                }))
                .await
            ),
            Code::NotFound,
            "expand {id}"
        );
        assert_eq!(
            code(
                csi.controller_get_volume(Request::new(ControllerGetVolumeRequest {
                    volume_id: id.into(),
                }))
                .await
            ),
            Code::NotFound,
            "get {id}"
        );
    }

    // Missing fields are InvalidArgument.
    let mut no_node = publish_req("v", "");
    no_node.node_id.clear();
    assert_eq!(
        code(csi.controller_publish_volume(Request::new(no_node)).await),
        Code::InvalidArgument
    );
    let mut no_cap = publish_req("v", &n1);
    no_cap.volume_capability = None;
    assert_eq!(
        code(csi.controller_publish_volume(Request::new(no_cap)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            csi.controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
                volume_id: "v".into(),
                ..Default::default()
            }))
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            csi.controller_get_volume(Request::new(ControllerGetVolumeRequest {
                volume_id: String::new(),
            }))
            .await
        ),
        Code::InvalidArgument
    );
    let mut mutable = create_req(&cluster.name("pvc-m"), GI, Some(&n1), mount_cap());
    mutable
        .mutable_parameters
        .insert("iops".into(), "100".into());
    assert_eq!(
        code(csi.create_volume(Request::new(mutable)).await),
        Code::InvalidArgument
    );

    // A real volume: the node it is published to must exist; capabilities must fit it.
    let v = csi
        .create_volume(Request::new(create_req(
            &cluster.name("pvc-x"),
            GI,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(
        code(
            csi.controller_publish_volume(Request::new(publish_req(
                &v.volume_id,
                &cluster.name("ghost")
            )))
            .await
        ),
        Code::NotFound
    );
    let expand = |required: i64, limit: i64, cap: Option<VolumeCapability>| {
        Request::new(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: required,
                limit_bytes: limit,
            }),
            volume_capability: cap,
            ..Default::default()
        })
    };
    // A filesystem volume cannot be grown as a raw block volume: exceeds capabilities.
    assert_eq!(
        code(
            csi.controller_expand_volume(expand(2 * GI, 0, Some(block_cap())))
                .await
        ),
        Code::InvalidArgument
    );
    // Shrinking is not a size this driver can give.
    assert_eq!(
        code(
            csi.controller_expand_volume(expand(GI / 2, GI / 2, None))
                .await
        ),
        Code::OutOfRange
    );
    // Beyond the pool: ResourceExhausted, and the volume keeps its size.
    assert_eq!(
        code(csi.controller_expand_volume(expand(11 * GI, 0, None)).await),
        Code::ResourceExhausted
    );

    // GET_VOLUME and snapshots are offered, GET_VOLUME answers with the volume and where
    // it is published; clones, VOLUME_CONDITION and MODIFY_VOLUME are not (Unimplemented).
    let caps = csi
        .controller_get_capabilities(Request::new(ControllerGetCapabilitiesRequest {}))
        .await
        .expect("caps")
        .into_inner()
        .capabilities;
    use controller_service_capability::rpc::Type as T;
    let offered: Vec<i32> = caps
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(controller_service_capability::Type::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    for offers in [
        T::GetVolume,
        T::CreateDeleteSnapshot,
        T::ListSnapshots,
        T::CloneVolume,
    ] {
        assert!(offered.contains(&(offers as i32)), "{offers:?} not offered");
    }
    for absent in [T::VolumeCondition, T::ModifyVolume] {
        assert!(!offered.contains(&(absent as i32)), "{absent:?} offered");
    }
    csi.controller_publish_volume(Request::new(publish_req(&v.volume_id, &n1)))
        .await
        .expect("publish");
    let got = csi
        .controller_get_volume(Request::new(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        }))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.volume.as_ref(), Some(&v));
    assert_eq!(
        got.status.map(|s| s.published_node_ids),
        Some(vec![n1.clone()])
    );
    assert_eq!(
        code(
            csi.create_snapshot(Request::new(CreateSnapshotRequest::default()))
                .await
        ),
        Code::InvalidArgument,
        "no name"
    );
    assert_eq!(
        code(
            csi.controller_modify_volume(Request::new(ControllerModifyVolumeRequest::default()))
                .await
        ),
        Code::Unimplemented
    );
}

#[tokio::test]
async fn capacity_counts_volumes_placed_but_not_reported() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    // The fake agent never updates the node's report: it stays at 6 GiB free.
    let n1 = cluster.add_node("n1", 10 * GI, 6 * GI).await;
    let n2 = cluster.add_node("n2", 10 * GI, 3 * GI).await;
    let csi = service(&client);
    let capacity = |node: &str, cap: VolumeCapability| GetCapacityRequest {
        volume_capabilities: vec![cap],
        parameters: HashMap::from([("poolClass".to_string(), "HDD".to_string())]),
        accessible_topology: Some(topology::of_node(node)),
    };
    let ask = |node: &str, cap: VolumeCapability| {
        let req = capacity(node, cap);
        let csi = &csi;
        async move {
            let c = csi
                .get_capacity(Request::new(req))
                .await
                .expect("capacity")
                .into_inner();
            (
                c.available_capacity,
                c.maximum_volume_size,
                c.minimum_volume_size,
            )
        }
    };
    assert_eq!(
        ask(&n1, mount_cap()).await,
        (6 * GI, Some(6 * GI), Some(300 << 20)),
        "xfs floor is the minimum"
    );
    assert_eq!(ask(&n2, mount_cap()).await.0, 3 * GI);
    csi.create_volume(Request::new(create_req(
        &cluster.name("pvc-1"),
        4 * GI,
        Some(&n1),
        mount_cap(),
    )))
    .await
    .expect("create");
    // n1's report still says 6 GiB free; its total less the 4 GiB placed also leaves 6.
    let (available, offered, _) = ask(&n1, mount_cap()).await;
    assert_eq!(available, 6 * GI);
    // What GetCapacity offers on a node, CreateVolume accepts there.
    let offered = offered.expect("max");
    csi.create_volume(Request::new(create_req(
        &cluster.name("pvc-2"),
        offered,
        Some(&n1),
        mount_cap(),
    )))
    .await
    .expect("what was offered fits");
    assert_eq!(
        ask(&n1, mount_cap()).await.0,
        0,
        "10 GiB total, 10 GiB placed: the stale report of 6 GiB free is not believed"
    );
    let err = csi
        .create_volume(Request::new(create_req(
            &cluster.name("pvc-3"),
            GI,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect_err("full");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let (available, _, minimum) = ask(&n2, block_cap()).await;
    assert_eq!(minimum, Some(4 << 20), "a raw block volume is one extent");
    assert_eq!(available, 3 * GI, "n2 has room left");
}

#[tokio::test]
#[cfg_attr(
    real_cluster,
    ignore = "asks for the capacity of the whole cluster, which on a shared cluster includes other tests' nodes"
)]
async fn capacity_without_topology_covers_every_node() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("n1", 10 * GI, 6 * GI).await;
    cluster.add_node("n2", 10 * GI, 3 * GI).await;
    let csi = service(&client);
    let whole = |class: &str, cap: VolumeCapability| GetCapacityRequest {
        volume_capabilities: vec![cap],
        parameters: HashMap::from([("poolClass".to_string(), class.to_string())]),
        ..Default::default()
    };
    let before = csi
        .get_capacity(Request::new(whole("HDD", mount_cap())))
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(
        (
            before.available_capacity,
            before.maximum_volume_size,
            before.minimum_volume_size
        ),
        (9 * GI, Some(6 * GI), Some(300 << 20)),
        "the sum, the roomiest pool, the xfs floor"
    );
    let ssd = csi
        .get_capacity(Request::new(whole("SSD", mount_cap())))
        .await
        .expect("ssd")
        .into_inner();
    assert_eq!(ssd.available_capacity, 0, "no node has an SSD pool");
    // n1: 10 GiB total less the 6 GiB placed leaves 4 (its stale report still says 6).
    csi.create_volume(Request::new(create_req(
        &cluster.name("pvc-1"),
        6 * GI,
        Some(&n1),
        mount_cap(),
    )))
    .await
    .expect("create");
    let after = csi
        .get_capacity(Request::new(whole("HDD", block_cap())))
        .await
        .expect("block")
        .into_inner();
    assert_eq!(
        (
            after.available_capacity,
            after.maximum_volume_size,
            after.minimum_volume_size
        ),
        (7 * GI, Some(4 * GI), Some(4 << 20)),
        "n1's 4 and n2's 3, the roomiest 4, one extent for a raw block volume"
    );
}
/// Reconciles counted so far (successes and errors).
fn reconciles(m: &Metrics) -> u64 {
    m.render()
        .lines()
        .filter(|l| l.starts_with("hwameistor_controller_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A volume no node has room for waits quietly, and is placed as soon as a node's pools grow.
#[tokio::test]
async fn a_node_whose_pool_grows_places_the_waiting_volume_at_once() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("n1", GI, GI).await;
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let name = cluster.name("pvc-waits");
    // Created directly: CreateVolume would give up on an unplaceable volume and delete it.
    let lv = LocalVolume::new(
        &name,
        LocalVolumeSpec {
            pool_name: PoolClass::Hdd.pool_name().into(),
            volume_kind: Default::default(),
            required_capacity_bytes: 2 * GI,
            replica_number: 1,
            convertible: false,
            accessibility: Accessibility {
                nodes: vec![n1.clone()],
            },
            pvc_namespace: None,
            pvc_name: None,
            fs_type: Some("xfs".into()),
            config: None,
            split_brain_resolution: None,
            operation: None,
            thin: false,
            data_source: None,
        },
    );
    volumes
        .create(&PostParams::default(), &lv)
        .await
        .expect("create volume");
    eventually("the volume reported unplaceable", || async {
        volumes.get(&name).await.is_ok_and(|v| {
            v.status.is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == CONDITION_SCHEDULED
                        && c.status == "False"
                        && c.reason == REASON_NO_CAPACITY
                })
            })
        })
    })
    .await;

    // Waiting is quiet: a node update that leaves its pools alone (an annotation here) wakes
    // nothing. (Reconciles of other tests' volumes are not counted: out of this scope.)
    // Our own status write wakes the volume once more (a reconcile that finds the failure
    // written already); let that pass first.
    let mut before = reconciles(&cluster.metrics);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = reconciles(&cluster.metrics);
        if now != before {
            (before, quiet_since) = (now, Instant::now());
        }
    }
    let nodes: Api<LocalStorageNode> = Api::all(client.clone());
    nodes
        .patch(
            &n1,
            &PatchParams::default(),
            &Patch::Merge(
                &serde_json::json!({ "metadata": { "annotations": { "touched": "yes" } } }),
            ),
        )
        .await
        .expect("annotate node");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        reconciles(&cluster.metrics),
        before,
        "an unplaceable volume was reconciled again with nothing changed"
    );

    // The node's agent reports a bigger pool: the volume is placed now, not at the next
    // timed retry (UNPLACED_RETRY, 30 s).
    let grown = Instant::now();
    set_pool(&client, &n1, 4 * GI, 4 * GI).await;
    eventually("the volume placed and Ready", || async {
        volumes.get(&name).await.is_ok_and(|v| {
            v.spec.config.is_some() && v.status.and_then(|s| s.state) == Some(VolumeState::Ready)
        })
    })
    .await;
    assert!(
        grown.elapsed() < UNPLACED_RETRY / 3,
        "placed after {:?}",
        grown.elapsed()
    );

    volumes
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the volume gone", || async {
        matches!(volumes.get_opt(&name).await, Ok(None))
    })
    .await;
}

/// Sets what DRBD reports for the replica of `volume` on `node` (the fake agent keeps it).
async fn set_role(client: &kube::Client, volume: &str, node: &str, role: &str) {
    let api: Api<LocalVolumeReplica> = Api::all(client.clone());
    let name = hwameistor_api::replica::replica_name(volume, node);
    let patch = serde_json::json!({ "status": { "replication": {
        "role": role, "diskState": "UpToDate", "connectionState": "Connected",
        "peerDiskState": "UpToDate", "outOfSyncBytes": 0,
    } } });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("replica status");
}

#[tokio::test]
async fn an_ha_volume_spans_two_nodes_and_its_primary_moves_only_when_unused() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let n1 = cluster.add_node("ha1", 10 * GI, 8 * GI).await;
    let n2 = cluster.add_node("ha2", 10 * GI, 6 * GI).await;
    let pvc = cluster.name("pvc-ha");
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());

    // Capacity for the HA class on n2: bounded by a second node's room, less metadata (on a
    // shared cluster other tests' nodes may be that second node: only the bounds are sure).
    let capacity = |replicas: &str| {
        let csi = &csi;
        let n2 = n2.clone();
        let replicas = replicas.to_string();
        async move {
            csi.get_capacity(Request::new(GetCapacityRequest {
                parameters: HashMap::from([
                    ("poolClass".to_string(), "HDD".to_string()),
                    ("replicaNumber".to_string(), replicas),
                ]),
                accessible_topology: Some(topology::of_node(&n2)),
                ..Default::default()
            }))
            .await
            .expect("capacity")
            .into_inner()
        }
    };
    let (plain, ha) = (capacity("1").await, capacity("2").await);
    assert!(
        ha.available_capacity > 0 && ha.available_capacity < plain.available_capacity,
        "HA {} vs plain {}",
        ha.available_capacity,
        plain.available_capacity
    );

    // WaitForFirstConsumer with strict topology names n2 only: n2 holds the first replica,
    // the other goes to another node with room.
    let mut req = create_req(&pvc, GI, Some(&n2), mount_cap());
    req.parameters.insert("replicaNumber".into(), "2".into());
    let vol = csi
        .create_volume(Request::new(req))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let mut topo = vol.accessible_topology.clone();
    topo.sort_by_key(|t| t.segments.values().cloned().collect::<Vec<_>>());
    let mut want = vec![topology::of_node(&n1), topology::of_node(&n2)];
    want.sort_by_key(|t| t.segments.values().cloned().collect::<Vec<_>>());
    assert_eq!(topo, want, "usable from both nodes");
    let lv = volumes.get(&pvc).await.expect("lv");
    let config = lv.spec.config.clone().expect("placed");
    assert!(config.resource_id >= 0, "a replication resource");
    let primary = |lv: &LocalVolume| {
        lv.spec
            .config
            .as_ref()
            .and_then(|c| c.replicas.iter().find(|a| a.primary))
            .map(|a| a.hostname.clone())
    };
    assert_eq!(primary(&lv).as_deref(), Some(n2.as_str()));

    // Published on n2, the primary: the DRBD device, never the logical volume.
    let ctx = csi
        .controller_publish_volume(Request::new(publish_req(&pvc, &n2)))
        .await
        .expect("publish on n2")
        .into_inner();
    assert_eq!(
        ctx.publish_context.get("devicePath").map(String::as_str),
        Some(format!("/dev/drbd{}", config.resource_id).as_str())
    );
    // While published on n2, n1 is refused (one node at a time).
    let err = csi
        .controller_publish_volume(Request::new(publish_req(&pvc, &n1)))
        .await
        .expect_err("published elsewhere");
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Unpublished, but n2 is still primary (in use there): refused, the primary stays.
    csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
        volume_id: pvc.clone(),
        node_id: n2.clone(),
        ..Default::default()
    }))
    .await
    .expect("unpublish");
    set_role(&client, &pvc, &n2, "Primary").await;
    let err = csi
        .controller_publish_volume(Request::new(publish_req(&pvc, &n1)))
        .await
        .expect_err("still primary on n2");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("still primary"), "{}", err.message());
    assert_eq!(
        primary(&volumes.get(&pvc).await.expect("lv")).as_deref(),
        Some(n2.as_str())
    );
    // Demoted on n2: the primary moves to n1 and the publish goes through.
    set_role(&client, &pvc, &n2, "Secondary").await;
    csi.controller_publish_volume(Request::new(publish_req(&pvc, &n1)))
        .await
        .expect("publish on n1");
    let lv = volumes.get(&pvc).await.expect("lv");
    assert_eq!(primary(&lv).as_deref(), Some(n1.as_str()));
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.published_node.as_deref()),
        Some(n1.as_str())
    );
    csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
        volume_id: pvc.clone(),
        node_id: n1.clone(),
        ..Default::default()
    }))
    .await
    .expect("unpublish");
    csi.delete_volume(Request::new(DeleteVolumeRequest {
        volume_id: pvc.clone(),
        ..Default::default()
    }))
    .await
    .expect("delete");
}

/// The volumes of one pod live on the same nodes: an HA volume's second replica goes where
/// the other HA volume of its pod has its second replica, even when another node has more
/// room; a volume of no pod goes to the roomiest.
#[tokio::test]
async fn a_pods_ha_volumes_share_their_second_node() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let p = cluster.add_node("co-p", 40 * GI, 30 * GI).await;
    let x = cluster.add_node("co-x", 40 * GI, 12 * GI).await;
    let y = cluster.add_node("co-y", 40 * GI, 6 * GI).await;
    common::ensure_namespace(&client, "apps").await;
    let (v1, v2, v3) = (
        cluster.name("co-1"),
        cluster.name("co-2"),
        cluster.name("co-3"),
    );
    // The pod uses both claims (as a StatefulSet pod would; it never runs here).
    let pod_name = cluster.name("co-pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": pod_name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}],
                 "volumes": [
                     {"name": "a", "persistentVolumeClaim": {"claimName": format!("claim-{v1}")}},
                     {"name": "b", "persistentVolumeClaim": {"claimName": format!("claim-{v2}")}}]}
    }))
    .expect("pod");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "apps");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let csi = service(&client);
    let ha = |name: &str| {
        let mut req = create_req(name, GI, Some(&p), mount_cap());
        req.parameters.insert("replicaNumber".into(), "2".into());
        req
    };
    let nodes_of = |name: String| {
        let volumes: Api<LocalVolume> = Api::all(client.clone());
        async move {
            let mut n: Vec<String> = volumes
                .get(&name)
                .await
                .expect("lv")
                .spec
                .config
                .expect("placed")
                .replicas
                .into_iter()
                .map(|a| a.hostname)
                .collect();
            n.sort();
            n
        }
    };
    csi.create_volume(Request::new(ha(&v1)))
        .await
        .expect("create v1");
    let mut want = vec![p.clone(), x.clone()];
    want.sort();
    assert_eq!(nodes_of(v1.clone()).await, want, "the roomiest other node");
    // y becomes the roomiest other node; v2 still joins v1's second node.
    set_pool(&client, &y, 40 * GI, 20 * GI).await;
    eventually("y reports its room", || async {
        Api::<LocalStorageNode>::all(client.clone())
            .get(&y)
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.pools.values().next().map(|p| p.free_capacity_bytes))
            == Some(20 * GI)
    })
    .await;
    csi.create_volume(Request::new(ha(&v2)))
        .await
        .expect("create v2");
    assert_eq!(nodes_of(v2.clone()).await, want, "the pod's second node");
    // A volume no pod uses: the roomiest.
    csi.create_volume(Request::new(ha(&v3)))
        .await
        .expect("create v3");
    let mut want3 = vec![p.clone(), y.clone()];
    want3.sort();
    assert_eq!(nodes_of(v3.clone()).await, want3);
    let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
    for v in [&v1, &v2, &v3] {
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    }
}

/// Volume groups follow the pods: two volumes a pod uses together make a group named after
/// the first, its members labelled and reported Together; a third volume of the pod on
/// another node makes it Apart, with what to do; without the pod the group goes.
#[tokio::test]
async fn volume_groups_follow_the_pods_that_use_volumes_together() {
    use hwameistor_api::{GroupState, LocalVolumeGroup, LABEL_VOLUME_GROUP};
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let a = cluster.add_node("grp-a", 40 * GI, 30 * GI).await;
    let b = cluster.add_node("grp-b", 40 * GI, 30 * GI).await;
    common::ensure_namespace(&client, "apps").await;
    let (v1, v2, v3) = (
        cluster.name("grp-1"),
        cluster.name("grp-2"),
        cluster.name("grp-3"),
    );
    let csi = service(&client);
    for (v, node) in [(&v1, &a), (&v2, &a), (&v3, &b)] {
        csi.create_volume(Request::new(create_req(v, GI, Some(node), mount_cap())))
            .await
            .expect("create");
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "apps");
    let pod_name = cluster.name("grp-pod");
    let pod = |claims: &[&String]| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": pod_name, "namespace": "apps"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                     "volumes": claims.iter().enumerate().map(|(i, c)| serde_json::json!(
                         {"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": format!("claim-{c}")}}
                     )).collect::<Vec<_>>()}
        }))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &pod(&[&v1, &v2]))
        .await
        .expect("pod");
    let ctx = hwameistor_controller::volume_reconciler::Context::new_scoped(
        client.clone(),
        &cluster.name("groups"),
        std::sync::Arc::new(Metrics::default()),
        Default::default(),
        Some(cluster.scope()),
    );
    let groups: Api<LocalVolumeGroup> = Api::all(client.clone());
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let pass = hwameistor_controller::groups::reconcile_once(&ctx)
        .await
        .expect("pass");
    assert_eq!((pass.created, pass.relabelled), (1, 2), "{pass:?}");
    let mut members = [v1.clone(), v2.clone()];
    members.sort();
    let name = format!("lvg-{}", members[0]);
    let g = groups.get(&name).await.expect("group");
    let vols: Vec<&str> = g
        .spec
        .volumes
        .iter()
        .map(|m| m.local_volume.as_str())
        .collect();
    assert_eq!(vols, members.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(g.spec.pods, [format!("apps/{pod_name}")]);
    let st = g.status.clone().expect("status");
    assert_eq!(st.state, Some(GroupState::Together));
    assert_eq!(st.nodes, std::slice::from_ref(&a));
    for v in &members {
        let lv = volumes.get(v).await.expect("lv");
        assert_eq!(
            lv.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_VOLUME_GROUP)),
            Some(&name)
        );
    }
    // Unchanged: a second pass changes nothing.
    let again = hwameistor_controller::groups::reconcile_once(&ctx)
        .await
        .expect("pass");
    assert_eq!(again, hwameistor_controller::groups::Pass::default());

    // The pod also uses v3, on b: the group is Apart and says what to do.
    pods.delete(&pod_name, &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually("the pod gone", || async {
        pods.get_opt(&pod_name).await.ok().flatten().is_none()
    })
    .await;
    pods.create(&PostParams::default(), &pod(&[&v1, &v2, &v3]))
        .await
        .expect("pod");
    hwameistor_controller::groups::reconcile_once(&ctx)
        .await
        .expect("pass");
    let g = groups.get(&name).await.expect("group");
    let st = g.status.clone().expect("status");
    assert_eq!(st.state, Some(GroupState::Apart), "{st:?}");
    assert!(st
        .message
        .as_deref()
        .is_some_and(|m| m.contains("migrate the odd ones")));
    assert_eq!(g.spec.volumes.len(), 3);

    // Without the pod, no group and no labels.
    pods.delete(&pod_name, &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually("the pod gone", || async {
        pods.get_opt(&pod_name).await.ok().flatten().is_none()
    })
    .await;
    let pass = hwameistor_controller::groups::reconcile_once(&ctx)
        .await
        .expect("pass");
    assert_eq!((pass.deleted, pass.relabelled), (1, 3), "{pass:?}");
    assert!(groups.get_opt(&name).await.expect("get").is_none());
    for v in [&v1, &v2, &v3] {
        let lv = volumes.get(v).await.expect("lv");
        assert!(lv
            .metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key(LABEL_VOLUME_GROUP)));
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    }
}

/// The group maintenance as the controller runs it: fed by watches, a pass follows a pod's
/// arrival and departure within moments (its periodic pass here is an hour away).
#[tokio::test]
async fn volume_groups_follow_pods_within_moments_through_watches() {
    use hwameistor_api::{LocalVolumeGroup, LABEL_VOLUME_GROUP};
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    let a = cluster.add_node("gw-a", 40 * GI, 30 * GI).await;
    common::ensure_namespace(&client, "apps").await;
    let (v1, v2) = (cluster.name("gw-1"), cluster.name("gw-2"));
    let csi = service(&client);
    for v in [&v1, &v2] {
        csi.create_volume(Request::new(create_req(v, GI, Some(&a), mount_cap())))
            .await
            .expect("create");
    }
    let ctx = hwameistor_controller::volume_reconciler::Context::new_scoped(
        client.clone(),
        &cluster.name("groups-watch"),
        std::sync::Arc::new(Metrics::default()),
        Default::default(),
        Some(cluster.scope()),
    );
    let maintenance = tokio::spawn(hwameistor_controller::groups::run(
        ctx,
        std::time::Duration::from_secs(3600),
    ));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "apps");
    let pod_name = cluster.name("gw-pod");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": pod_name, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}],
                 "volumes": [
                     {"name": "a", "persistentVolumeClaim": {"claimName": format!("claim-{v1}")}},
                     {"name": "b", "persistentVolumeClaim": {"claimName": format!("claim-{v2}")}}
                 ]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let mut members = [v1.clone(), v2.clone()];
    members.sort();
    let name = format!("lvg-{}", members[0]);
    let groups: Api<LocalVolumeGroup> = Api::all(client.clone());
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let labelled = |want: Option<String>| {
        let volumes = volumes.clone();
        let members = members.clone();
        async move {
            for v in &members {
                let l = volumes
                    .get(v)
                    .await
                    .ok()
                    .and_then(|lv| lv.metadata.labels)
                    .and_then(|l| l.get(LABEL_VOLUME_GROUP).cloned());
                if l != want {
                    return false;
                }
            }
            true
        }
    };
    eventually("the group made and its volumes labelled", || async {
        groups.get_opt(&name).await.ok().flatten().is_some() && labelled(Some(name.clone())).await
    })
    .await;
    pods.delete(&pod_name, &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually("the group gone with the pod", || async {
        groups.get_opt(&name).await.ok().flatten().is_none() && labelled(None).await
    })
    .await;
    maintenance.abort();
    for v in [&v1, &v2] {
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: v.to_string(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    }
}

/// A thin StorageClass: the volume and its replica are thin, a node offers its room times
/// its over-provisioning ratio to thin volumes (what GetCapacity says, CreateVolume
/// accepts), a thin volume takes only its share from thick ones, and thin volumes keep
/// one replica.
#[tokio::test]
async fn thin_volumes_take_their_share_of_a_pool_and_keep_one_replica() {
    let cluster = start_scoped().await;
    let client = cluster.client.clone();
    // 3 GiB free; the node reports 200% over-provisioning for thin pools.
    let n1 = cluster.add_node("n1", 10 * GI, 3 * GI).await;
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(client.clone());
    let thin = |name: &str, bytes: i64| {
        let mut r = create_req(name, bytes, Some(&n1), mount_cap());
        r.parameters.insert("thin".into(), "true".into());
        r
    };
    let capacity = |thin: bool| {
        let mut parameters = HashMap::from([("poolClass".to_string(), "HDD".to_string())]);
        if thin {
            parameters.insert("thin".into(), "true".into());
        }
        GetCapacityRequest {
            volume_capabilities: vec![mount_cap()],
            parameters,
            accessible_topology: Some(topology::of_node(&n1)),
        }
    };
    let ask = |thin: bool| {
        let req = capacity(thin);
        let csi = &csi;
        async move {
            let c = csi
                .get_capacity(Request::new(req))
                .await
                .expect("capacity")
                .into_inner();
            (c.available_capacity, c.maximum_volume_size)
        }
    };
    assert_eq!(ask(true).await, (6 * GI, Some(6 * GI)));
    assert_eq!(ask(false).await, (3 * GI, Some(3 * GI)));

    let pvc = cluster.name("thin-a");
    csi.create_volume(Request::new(thin(&pvc, 5 * GI)))
        .await
        .expect("5 GiB thin in 3 GiB at 200%");
    let lv = volumes.get(&pvc).await.expect("LocalVolume");
    assert!(lv.spec.thin);
    let r = replicas.get(&format!("{pvc}-{n1}")).await.expect("replica");
    assert!(r.spec.thin, "the replica is thin too");
    // It takes 2.5 GiB of the 3 (the agent's thin pool took them from the group, which its
    // next report says): 0.5 GiB left for thick volumes, 1 GiB for thin ones.
    set_pool(&client, &n1, 10 * GI, GI / 2).await;
    assert_eq!(ask(false).await.1, Some(GI / 2));
    assert_eq!(ask(true).await.1, Some(GI));
    let err = csi
        .create_volume(Request::new(create_req(
            &cluster.name("thick-b"),
            GI,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect_err("no room for 1 GiB thick");
    assert_eq!(err.code(), Code::ResourceExhausted);
    csi.create_volume(Request::new(thin(&cluster.name("thin-c"), GI)))
        .await
        .expect("1 GiB thin fits what is left");

    // Thin and replicated do not go together: refused before anything is made.
    let mut ha = thin(&cluster.name("thin-ha"), GI);
    ha.parameters.insert("replicaNumber".into(), "2".into());
    let err = csi
        .create_volume(Request::new(ha))
        .await
        .expect_err("thin HA");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("thin volumes keep one replica"),
        "{err}"
    );
    // The same name asked for thick is another volume: a conflict.
    let err = csi
        .create_volume(Request::new(create_req(
            &pvc,
            5 * GI,
            Some(&n1),
            mount_cap(),
        )))
        .await
        .expect_err("thick of a thin name");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("thin"), "{err}");
}
