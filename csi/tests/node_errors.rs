//! The node service's answers to requests it must refuse before touching the host: the
//! spec's error codes, without root or devices (nothing here runs a host command).

use hwameistor_csi::csi::node_server::Node;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use hwameistor_csi::csi::*;
use hwameistor_csi::exec::HostExecutor;
use hwameistor_csi::node::host::Host;
use hwameistor_csi::node::NodeService;
use hwameistor_csi::{PUBLISH_DEVICE_PATH, VOLUME_CONTEXT_FS_TYPE};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request};

fn service() -> NodeService {
    NodeService::new(
        "node-1".into(),
        Host::new(Arc::new(HostExecutor::direct(Duration::from_secs(5)))),
        10,
    )
}

fn mount_cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "xfs".into(),
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

fn stats(path: &str) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: "v".into(),
        volume_path: path.into(),
        staging_target_path: String::new(),
    }
}

fn expand(path: &str, cap: Option<VolumeCapability>) -> NodeExpandVolumeRequest {
    NodeExpandVolumeRequest {
        volume_id: "v".into(),
        volume_path: path.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capability: cap,
        ..Default::default()
    }
}

#[tokio::test]
async fn stats_and_expand_of_a_path_that_does_not_exist_are_not_found() {
    let svc = service();
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("no-such-volume");
    for path in [
        absent.to_string_lossy().to_string(),
        "some/relative/path".to_string(),
        "not-a-volume".to_string(),
    ] {
        let err = svc
            .node_get_volume_stats(Request::new(stats(&path)))
            .await
            .map(drop)
            .expect_err("no volume there");
        assert_eq!(
            err.code(),
            Code::NotFound,
            "stats {path}: {}",
            err.message()
        );
        let err = svc
            .node_expand_volume(Request::new(expand(&path, None)))
            .await
            .map(drop)
            .expect_err("no volume there");
        assert_eq!(
            err.code(),
            Code::NotFound,
            "expand {path}: {}",
            err.message()
        );
    }
    // Missing fields stay InvalidArgument.
    let err = svc
        .node_get_volume_stats(Request::new(stats("")))
        .await
        .map(drop)
        .expect_err("no path");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut no_id = stats(&dir.path().to_string_lossy());
    no_id.volume_id.clear();
    let err = svc
        .node_get_volume_stats(Request::new(no_id))
        .await
        .map(drop)
        .expect_err("no id");
    assert_eq!(err.code(), Code::InvalidArgument);
    // A capability the driver cannot serve exceeds capabilities: InvalidArgument for expand.
    let err = svc
        .node_expand_volume(Request::new(expand(
            &dir.path().to_string_lossy(),
            Some(mount_cap(Mode::MultiNodeMultiWriter)),
        )))
        .await
        .map(drop)
        .expect_err("multi-node");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn stage_and_publish_answer_the_spec_codes() {
    let svc = service();
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |p: &str| dir.path().join(p).to_string_lossy().to_string();
    let stage = |cap: Option<VolumeCapability>| NodeStageVolumeRequest {
        volume_id: "v".into(),
        publish_context: HashMap::from([
            (
                PUBLISH_DEVICE_PATH.to_string(),
                "/dev/does-not-exist".into(),
            ),
            (VOLUME_CONTEXT_FS_TYPE.to_string(), "xfs".into()),
        ]),
        staging_target_path: at("staging"),
        volume_capability: cap,
        ..Default::default()
    };
    let code = |r: Result<(), tonic::Status>| r.expect_err("refused").code();

    // Missing capability: a missing field. An access mode the driver does not serve, and a
    // raw block capability for a filesystem volume, exceed capabilities.
    assert_eq!(
        code(
            svc.node_stage_volume(Request::new(stage(None)))
                .await
                .map(drop)
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            svc.node_stage_volume(Request::new(stage(Some(mount_cap(
                Mode::MultiNodeMultiWriter
            )))))
            .await
            .map(drop)
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            svc.node_stage_volume(Request::new(stage(Some(block_cap()))))
                .await
                .map(drop)
        ),
        Code::FailedPrecondition
    );
    // The device named by the publish context does not exist.
    assert_eq!(
        code(
            svc.node_stage_volume(Request::new(stage(Some(mount_cap(Mode::SingleNodeWriter)))))
                .await
                .map(drop)
        ),
        Code::NotFound
    );

    let publish = |staging: &str, cap: VolumeCapability| NodePublishVolumeRequest {
        volume_id: "v".into(),
        publish_context: HashMap::from([
            (
                PUBLISH_DEVICE_PATH.to_string(),
                "/dev/does-not-exist".into(),
            ),
            (VOLUME_CONTEXT_FS_TYPE.to_string(), "xfs".into()),
        ]),
        staging_target_path: staging.into(),
        target_path: at("target"),
        volume_capability: Some(cap),
        ..Default::default()
    };
    // STAGE_UNSTAGE_VOLUME is offered, so a publish without a staging path is the spec's
    // "staging target path not set".
    assert_eq!(
        code(
            svc.node_publish_volume(Request::new(publish("", mount_cap(Mode::SingleNodeWriter))))
                .await
                .map(drop)
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            svc.node_publish_volume(Request::new(publish(&at("staging"), block_cap())))
                .await
                .map(drop)
        ),
        Code::FailedPrecondition
    );
    let mut no_target = publish(&at("staging"), mount_cap(Mode::SingleNodeWriter));
    no_target.target_path.clear();
    assert_eq!(
        code(
            svc.node_publish_volume(Request::new(no_target))
                .await
                .map(drop)
        ),
        Code::InvalidArgument
    );
}

/// What a publish record was asked, in order.
#[derive(Default)]
struct Log {
    calls: std::sync::Mutex<Vec<String>>,
    refuse: bool,
}

#[tonic::async_trait]
impl hwameistor_csi::node::PublishRecord for Log {
    async fn publishing(&self, volume_id: &str, target: &str) -> Result<(), tonic::Status> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("publishing {volume_id} {target}"));
        if self.refuse {
            return Err(tonic::Status::failed_precondition("being deleted"));
        }
        Ok(())
    }
    async fn unpublished(&self, volume_id: &str, target: &str) -> Result<(), tonic::Status> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("unpublished {volume_id} {target}"));
        Ok(())
    }
}

/// A publish is recorded before it is made; one refused before anything is recorded
/// leaves no record, and one that fails with nothing mounted takes its record back (the
/// kubelet may never unpublish it).
#[tokio::test]
async fn publishes_are_recorded_first_and_failed_ones_taken_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("pod/dev");
    let target_s = target.to_string_lossy().to_string();
    let publish = |cap: VolumeCapability, fs: Option<&str>| NodePublishVolumeRequest {
        volume_id: "pvc-1".into(),
        target_path: target_s.clone(),
        staging_target_path: dir.path().join("staging").to_string_lossy().to_string(),
        volume_capability: Some(cap),
        volume_context: HashMap::from([(
            PUBLISH_DEVICE_PATH.to_string(),
            "/dev/hwameistor-no-such-disk".to_string(),
        )])
        .into_iter()
        .chain(fs.map(|f| (VOLUME_CONTEXT_FS_TYPE.to_string(), f.to_string())))
        .collect(),
        ..Default::default()
    };
    let log = Arc::new(Log::default());
    let svc = service().with_publish_record(log.clone());
    // A filesystem volume asked for as a raw block device: refused, nothing recorded.
    let e = svc
        .node_publish_volume(Request::new(publish(block_cap(), Some("xfs"))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(log.calls.lock().unwrap().is_empty());
    // The device is not there: recorded, failed, taken back.
    let e = svc
        .node_publish_volume(Request::new(publish(block_cap(), None)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert_eq!(
        *log.calls.lock().unwrap(),
        [
            format!("publishing pvc-1 {target_s}"),
            format!("unpublished pvc-1 {target_s}")
        ]
    );
    // Unpublish (nothing mounted there): the record goes.
    log.calls.lock().unwrap().clear();
    svc.node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
        volume_id: "pvc-1".into(),
        target_path: target_s.clone(),
    }))
    .await
    .expect("unpublish");
    assert_eq!(
        *log.calls.lock().unwrap(),
        [format!("unpublished pvc-1 {target_s}")]
    );
    // The record refuses (the volume is being deleted): the publish fails, as it said.
    let refusing = Arc::new(Log {
        refuse: true,
        ..Default::default()
    });
    let svc = service().with_publish_record(refusing.clone());
    let e = svc
        .node_publish_volume(Request::new(publish(block_cap(), None)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("being deleted"), "{e}");
    assert_eq!(refusing.calls.lock().unwrap().len(), 1);
}
