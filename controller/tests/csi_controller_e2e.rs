//! The CSI controller service and the LocalVolume reconciler end to end, against the
//! project's in-process API server, with a fake node agent (see `common`).

mod common;

use common::{add_node, eventually, start, GI};
use hwameistor_api::volume::ANNOTATION_CSI_NAME;
use hwameistor_api::{
    LocalVolume, LocalVolumeReplica, VolumeState, FINALIZER_VOLUME, LABEL_NODE, LABEL_VOLUME,
};
use hwameistor_csi::controller::{ControllerService, Timeouts};
use hwameistor_csi::csi::controller_server::Controller;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use hwameistor_csi::csi::*;
use hwameistor_csi::topology;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::ListParams;
use kube::Api;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
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
    let cluster = start().await;
    let client = cluster.client.clone();
    add_node(&client, "n1", 10 * GI, 8 * GI).await;
    add_node(&client, "n2", 10 * GI, 5 * GI).await;
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());
    let replicas: Api<LocalVolumeReplica> = Api::all(client.clone());

    // WaitForFirstConsumer picked n2 although n1 has more room: n2 it is.
    let created = csi
        .create_volume(Request::new(create_req(
            "pvc-a",
            GI,
            Some("n2"),
            mount_cap(),
        )))
        .await
        .expect("create")
        .into_inner();
    let vol = created.volume.clone().expect("volume");
    assert_eq!(vol.volume_id, "pvc-a");
    assert_eq!(vol.capacity_bytes, GI);
    assert_eq!(vol.accessible_topology, vec![topology::of_node("n2")]);
    assert_eq!(
        vol.volume_context.get("fsType").map(String::as_str),
        Some("xfs")
    );

    let lv = volumes.get("pvc-a").await.expect("LocalVolume");
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
        (-1, 1, "n2")
    );
    assert_eq!(
        (
            lv.spec.pvc_name.as_deref(),
            lv.spec.pvc_namespace.as_deref()
        ),
        (Some("claim-pvc-a"), Some("apps"))
    );
    let r = replicas.get("pvc-a-n2").await.expect("replica");
    let labels = r.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        (
            labels.get(LABEL_NODE).map(String::as_str),
            labels.get(LABEL_VOLUME).map(String::as_str)
        ),
        (Some("n2"), Some("pvc-a"))
    );
    assert_eq!(
        r.metadata.owner_references.clone().unwrap_or_default()[0].uid,
        lv.metadata.uid.clone().unwrap_or_default()
    );

    // Repeating the call answers the same; asking for something else is a conflict.
    let again = csi
        .create_volume(Request::new(create_req(
            "pvc-a",
            GI,
            Some("n2"),
            mount_cap(),
        )))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again, created);
    let err = csi
        .create_volume(Request::new(create_req(
            "pvc-a",
            2 * GI,
            Some("n2"),
            mount_cap(),
        )))
        .await
        .expect_err("bigger");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        replicas
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1,
        "no second replica"
    );

    // Publish: only to the volume's node, idempotent, and it records the node.
    for _ in 0..2 {
        let ctx = csi
            .controller_publish_volume(Request::new(publish_req("pvc-a", "n2")))
            .await
            .expect("publish")
            .into_inner();
        assert_eq!(
            ctx.publish_context.get("devicePath").map(String::as_str),
            Some("/dev/LocalStorage_PoolHDD/pvc-a")
        );
    }
    let lv = volumes.get("pvc-a").await.expect("lv");
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.published_node.as_deref()),
        Some("n2")
    );
    assert_eq!(
        lv.status.as_ref().and_then(|s| s.state),
        Some(VolumeState::Ready),
        "the reconciler keeps publishedNode and state apart"
    );
    assert_eq!(
        csi.controller_publish_volume(Request::new(publish_req("pvc-a", "n1")))
            .await
            .expect_err("other node")
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        csi.controller_publish_volume(Request::new(publish_req("pvc-a", "ghost")))
            .await
            .expect_err("no node")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        csi.controller_publish_volume(Request::new(publish_req("nope", "n2")))
            .await
            .expect_err("no volume")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: "pvc-a".into(),
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
            volume_id: "pvc-a".into(),
            volume_capabilities: vec![mount_cap()],
            ..Default::default()
        }))
        .await
        .expect("validate")
        .into_inner();
    assert!(v.confirmed.is_some(), "{}", v.message);
    let v = csi
        .validate_volume_capabilities(Request::new(ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-a".into(),
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
    assert_eq!(list.entries.len(), 1);
    assert_eq!(
        list.entries[0]
            .status
            .as_ref()
            .map(|s| s.published_node_ids.clone()),
        Some(vec!["n2".to_string()])
    );
    let cap_n2 = csi
        .get_capacity(Request::new(GetCapacityRequest {
            parameters: HashMap::from([("poolClass".to_string(), "HDD".to_string())]),
            accessible_topology: Some(topology::of_node("n2")),
            ..Default::default()
        }))
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(cap_n2.available_capacity, 5 * GI);
    let all = csi
        .get_capacity(Request::new(GetCapacityRequest::default()))
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(all.available_capacity, 13 * GI);
    let ssd = csi
        .get_capacity(Request::new(GetCapacityRequest {
            parameters: HashMap::from([("poolClass".to_string(), "SSD".to_string())]),
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
                volume_id: "pvc-a".into(),
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
            .get("pvc-a-n2")
            .await
            .expect("replica")
            .spec
            .required_capacity_bytes,
        2 * GI
    );
    let lv = volumes.get("pvc-a").await.expect("lv");
    assert_eq!(
        lv.spec
            .config
            .as_ref()
            .map(|c| (c.required_capacity_bytes, c.version)),
        Some((2 * GI, 2))
    );
    let too_big = csi
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: "pvc-a".into(),
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
            volume_id: "pvc-a".into(),
            node_id: "n2".into(),
            ..Default::default()
        }))
        .await
        .expect("unpublish");
    }
    assert_eq!(
        volumes
            .get("pvc-a")
            .await
            .expect("lv")
            .status
            .and_then(|s| s.published_node),
        None
    );
    for _ in 0..2 {
        csi.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: "pvc-a".into(),
            ..Default::default()
        }))
        .await
        .expect("delete");
    }
    assert!(volumes.get_opt("pvc-a").await.expect("get").is_none());
    assert!(replicas
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());
    // A volume that is gone is published nowhere: detaching it again succeeds (the spec's
    // "safely regarded as ControllerUnpublished").
    csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
        volume_id: "pvc-a".into(),
        node_id: "n2".into(),
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
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("pvc-a"))
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
    let cluster = start().await;
    let client = cluster.client.clone();
    add_node(&client, "n1", 2 * GI, 2 * GI).await;
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());

    // No node has the room: the controller's placement refuses, and the CSI driver removes
    // the LocalVolume it had written.
    let err = csi
        .create_volume(Request::new(create_req(
            "pvc-big",
            3 * GI,
            None,
            mount_cap(),
        )))
        .await
        .expect_err("too big");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("n1 has 2Gi free"),
        "{}",
        err.message()
    );
    let err = csi
        .create_volume(Request::new(create_req(
            "pvc-elsewhere",
            GI,
            Some("n9"),
            mount_cap(),
        )))
        .await
        .expect_err("unknown node");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("n9 is not a storage node"),
        "{}",
        err.message()
    );
    assert!(volumes
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty());

    // The node still reports 2 GiB free after the first volume took 1.5 GiB (the fake agent
    // never updates it, like a node whose report lags): the controller's own accounting
    // (2 GiB total, 1.5 GiB placed) refuses the second, and the CSI driver removes the
    // LocalVolume it had created.
    let first = csi
        .create_volume(Request::new(create_req(
            "pvc-1",
            1536 << 20,
            Some("n1"),
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
            "pvc-2",
            1536 << 20,
            Some("n1"),
            mount_cap(),
        )))
        .await
        .expect_err("second does not");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("n1 has 512Mi free"),
        "{}",
        err.message()
    );
    let names: Vec<String> = volumes
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|v| v.metadata.name)
        .collect();
    assert_eq!(names, vec!["pvc-1".to_string()]);
    let replicas: Api<LocalVolumeReplica> = Api::all(client.clone());
    eventually("only pvc-1's replica exists", || async {
        let items = replicas
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        items.len() == 1 && items[0].spec.volume_name == "pvc-1"
    })
    .await;
}

#[tokio::test]
async fn block_volumes_and_pagination() {
    let cluster = start().await;
    let client = cluster.client.clone();
    add_node(&client, "n1", 10 * GI, 10 * GI).await;
    let csi = service(&client);
    for i in 0..3 {
        let v = csi
            .create_volume(Request::new(create_req(
                &format!("pvc-{i}"),
                1,
                None,
                block_cap(),
            )))
            .await
            .expect("block")
            .into_inner();
        let v = v.volume.expect("volume");
        assert_eq!(v.capacity_bytes, 4 << 20, "raw block floor is one extent");
        assert!(v.volume_context.is_empty(), "no filesystem");
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..4 {
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
                .filter_map(|e| e.volume.map(|v| v.volume_id)),
        );
        token = page.next_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, vec!["pvc-0", "pvc-1", "pvc-2"]);
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
            volume_id: "pvc-0".into(),
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
    let cluster = start().await;
    let client = cluster.client.clone();
    // A one-letter node: a mapped name is up to 61 characters and its replica is named
    // "<volume>-<node>". A real API server takes that up to 253 characters, but the test
    // server limits every dot-separated part of a name to 63 (stricter than Kubernetes).
    add_node(&client, "a", 10 * GI, 10 * GI).await;
    let csi = service(&client);
    let volumes: Api<LocalVolume> = Api::all(client.clone());

    // Upper case and 128 characters: names the spec allows and an object name does not.
    let long = format!("Sanity-{}", "X".repeat(121));
    assert_eq!(long.len(), 128);
    for name in [
        "Sanity-CreateVolume-ABC",
        long.as_str(),
        "with space/and:colon",
    ] {
        let v = csi
            .create_volume(Request::new(create_req(name, GI, None, mount_cap())))
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
            .create_volume(Request::new(create_req(name, GI, None, mount_cap())))
            .await
            .expect("repeat")
            .into_inner()
            .volume
            .expect("volume");
        assert_eq!(again, v);
        // Same name, another size or other parameters: AlreadyExists.
        assert_eq!(
            code(
                csi.create_volume(Request::new(create_req(name, 2 * GI, None, mount_cap())))
                    .await
            ),
            Code::AlreadyExists
        );
        let mut ssd = create_req(name, GI, None, mount_cap());
        ssd.parameters.insert("poolClass".into(), "SSD".into());
        assert_eq!(
            code(csi.create_volume(Request::new(ssd)).await),
            Code::AlreadyExists
        );
        assert_eq!(
            code(
                csi.create_volume(Request::new(create_req(name, GI, None, block_cap())))
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
    csi.create_volume(Request::new(create_req("pvc-plain", GI, None, mount_cap())))
        .await
        .expect("plain");
    let plain = volumes.get("pvc-plain").await.expect("plain LocalVolume");
    assert!(plain
        .metadata
        .annotations
        .unwrap_or_default()
        .get(ANNOTATION_CSI_NAME)
        .is_none());

    // A mapping collision: the object a name maps to already belongs to another name.
    let name = "Collides-With-Someone";
    let object = hwameistor_core::naming::volume_object_name(name);
    let mut other = LocalVolume::new(&object, volumes.get("pvc-plain").await.expect("plain").spec);
    other.spec.config = None;
    other.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_CSI_NAME.to_string(),
        "Someone-Else".to_string(),
    )]));
    volumes
        .create(&kube::api::PostParams::default(), &other)
        .await
        .expect("squatter");
    let err = csi
        .create_volume(Request::new(create_req(name, GI, None, mount_cap())))
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
    let cluster = start().await;
    let client = cluster.client.clone();
    add_node(&client, "n1", 10 * GI, 10 * GI).await;
    let csi = service(&client);

    // Ids that are no object name cannot be ours: never InvalidArgument from the API server.
    for id in ["no-such-volume", "Not-An-Object-Name", &"x".repeat(128)] {
        assert_eq!(
            code(
                csi.controller_publish_volume(Request::new(publish_req(id, "n1")))
                    .await
            ),
            Code::NotFound,
            "publish {id}"
        );
        assert_eq!(
            code(
                csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
                    volume_id: id.into(),
                    node_id: "n1".into(),
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
    let mut no_cap = publish_req("v", "n1");
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
    let mut mutable = create_req("pvc-m", GI, None, mount_cap());
    mutable
        .mutable_parameters
        .insert("iops".into(), "100".into());
    assert_eq!(
        code(csi.create_volume(Request::new(mutable)).await),
        Code::InvalidArgument
    );

    // A real volume: the node it is published to must exist; capabilities must fit it.
    let v = csi
        .create_volume(Request::new(create_req("pvc-x", GI, None, mount_cap())))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(
        code(
            csi.controller_publish_volume(Request::new(publish_req(&v.volume_id, "ghost")))
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

    // GET_VOLUME is offered and answers with the volume and where it is published;
    // snapshots and MODIFY_VOLUME are not, and answer Unimplemented.
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
    assert!(offered.contains(&(T::GetVolume as i32)));
    for absent in [
        T::CreateDeleteSnapshot,
        T::ListSnapshots,
        T::CloneVolume,
        T::VolumeCondition,
        T::ModifyVolume,
    ] {
        assert!(!offered.contains(&(absent as i32)), "{absent:?} offered");
    }
    csi.controller_publish_volume(Request::new(publish_req(&v.volume_id, "n1")))
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
        Some(vec!["n1".to_string()])
    );
    assert_eq!(
        code(
            csi.create_snapshot(Request::new(CreateSnapshotRequest::default()))
                .await
        ),
        Code::Unimplemented
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
    let cluster = start().await;
    let client = cluster.client.clone();
    // The fake agent never updates the node's report: it stays at 6 GiB free.
    add_node(&client, "n1", 10 * GI, 6 * GI).await;
    add_node(&client, "n2", 10 * GI, 3 * GI).await;
    let csi = service(&client);
    let capacity = |node: Option<&str>| GetCapacityRequest {
        volume_capabilities: vec![mount_cap()],
        parameters: HashMap::from([("poolClass".to_string(), "HDD".to_string())]),
        accessible_topology: node.map(topology::of_node),
        ..Default::default()
    };
    let before = csi
        .get_capacity(Request::new(capacity(None)))
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
        "xfs floor is the minimum"
    );
    csi.create_volume(Request::new(create_req(
        "pvc-1",
        4 * GI,
        Some("n1"),
        mount_cap(),
    )))
    .await
    .expect("create");
    // n1's report still says 6 GiB free; its total less the 4 GiB placed also leaves 6.
    let n1 = csi
        .get_capacity(Request::new(capacity(Some("n1"))))
        .await
        .expect("n1")
        .into_inner();
    assert_eq!(n1.available_capacity, 6 * GI);
    // What GetCapacity offers on a node, CreateVolume accepts there.
    let offered = n1.maximum_volume_size.expect("max");
    csi.create_volume(Request::new(create_req(
        "pvc-2",
        offered,
        Some("n1"),
        mount_cap(),
    )))
    .await
    .expect("what was offered fits");
    let n1 = csi
        .get_capacity(Request::new(capacity(Some("n1"))))
        .await
        .expect("n1")
        .into_inner();
    assert_eq!(
        n1.available_capacity, 0,
        "10 GiB total, 10 GiB placed: the stale report of 6 GiB free is not believed"
    );
    let err = csi
        .create_volume(Request::new(create_req(
            "pvc-3",
            GI,
            Some("n1"),
            mount_cap(),
        )))
        .await
        .expect_err("full");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let block = csi
        .get_capacity(Request::new(GetCapacityRequest {
            volume_capabilities: vec![block_cap()],
            ..Default::default()
        }))
        .await
        .expect("block")
        .into_inner();
    assert_eq!(block.minimum_volume_size, Some(4 << 20));
    assert_eq!(block.available_capacity, 3 * GI, "only n2 has room left");
}
