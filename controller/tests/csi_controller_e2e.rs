//! The CSI controller service and the LocalVolume reconciler end to end, against the
//! project's in-process API server, with a fake node agent (see `common`).

mod common;

use common::{add_node, eventually, start, GI};
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
use std::collections::HashMap;
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
    assert_eq!(
        csi.controller_unpublish_volume(Request::new(ControllerUnpublishVolumeRequest {
            volume_id: "pvc-a".into(),
            node_id: "n2".into(),
            ..Default::default()
        }))
        .await
        .expect_err("gone")
        .code(),
        Code::NotFound
    );

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

    // No node reports the room: refused before anything is written.
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
