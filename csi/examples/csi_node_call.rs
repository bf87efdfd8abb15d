//! A minimal CSI node client for tests and debugging: one call per run, over the plugin's
//! Unix socket, the way the kubelet makes it.
//!
//! ```text
//! csi_node_call SOCKET info
//! csi_node_call SOCKET stage     VOLUME DEVICE STAGING (xfs|ext4|block) [KEY=VALUE]...
//! csi_node_call SOCKET publish   VOLUME DEVICE STAGING TARGET (xfs|ext4|block) [ro]
//! csi_node_call SOCKET expand    VOLUME PATH STAGING BYTES
//! csi_node_call SOCKET stats     VOLUME PATH
//! csi_node_call SOCKET unpublish VOLUME TARGET
//! csi_node_call SOCKET unstage   VOLUME STAGING
//! ```
//!
//! `stage`'s `KEY=VALUE` arguments are the volume context (what CreateVolume answered).
//!
//! Prints `ok` and the answer's figures; on a gRPC error prints the code and message and
//! exits with 1.

use hwameistor_csi::csi::node_client::NodeClient;
use hwameistor_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use hwameistor_csi::csi::*;
use hwameistor_csi::PUBLISH_DEVICE_PATH;
use std::collections::HashMap;
use tonic::transport::{Endpoint, Uri};

fn capability(kind: &str, read_only: bool) -> VolumeCapability {
    let mode = if read_only {
        Mode::SingleNodeReaderOnly
    } else {
        Mode::SingleNodeWriter
    };
    let access_type = match kind {
        "block" => AccessType::Block(BlockVolume {}),
        fs => AccessType::Mount(MountVolume {
            fs_type: fs.to_string(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        }),
    };
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(access_type),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: csi_node_call SOCKET (info|stage|publish|expand|stats|unpublish|unstage) ARGS..."
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        usage();
    }
    let socket = args[0].clone();
    let a = |i: usize| args.get(i + 2).cloned().unwrap_or_else(|| usage());
    let channel = match Endpoint::try_from("http://[::]:50051") {
        Ok(e) => {
            e.connect_with_connector(tower::service_fn(move |_: Uri| {
                tokio::net::UnixStream::connect(socket.clone())
            }))
            .await
        }
        Err(e) => {
            eprintln!("endpoint: {e}");
            std::process::exit(1)
        }
    };
    let mut node = match channel {
        Ok(c) => NodeClient::new(c),
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(1)
        }
    };
    let ctx = |dev: String| HashMap::from([(PUBLISH_DEVICE_PATH.to_string(), dev)]);
    let result: Result<String, tonic::Status> = match args[1].as_str() {
        "info" => node.node_get_info(NodeGetInfoRequest {}).await.map(|r| {
            let r = r.into_inner();
            format!("node={} max_volumes={}", r.node_id, r.max_volumes_per_node)
        }),
        "stage" => node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: a(0),
                publish_context: ctx(a(1)),
                staging_target_path: a(2),
                volume_capability: Some(capability(&a(3), false)),
                volume_context: args
                    .iter()
                    .skip(6)
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .map(|_| String::new()),
        "publish" => {
            let ro = args.get(7).is_some_and(|x| x == "ro");
            node.node_publish_volume(NodePublishVolumeRequest {
                volume_id: a(0),
                publish_context: ctx(a(1)),
                staging_target_path: a(2),
                target_path: a(3),
                volume_capability: Some(capability(&a(4), false)),
                readonly: ro,
                ..Default::default()
            })
            .await
            .map(|_| String::new())
        }
        "expand" => {
            let bytes: i64 = a(3).parse().unwrap_or_else(|_| usage());
            node.node_expand_volume(NodeExpandVolumeRequest {
                volume_id: a(0),
                volume_path: a(1),
                staging_target_path: a(2),
                capacity_range: Some(CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capability: None,
                ..Default::default()
            })
            .await
            .map(|r| format!("capacity_bytes={}", r.into_inner().capacity_bytes))
        }
        "stats" => node
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: a(0),
                volume_path: a(1),
                staging_target_path: String::new(),
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let mut out: Vec<String> = r
                    .usage
                    .iter()
                    .map(|u| {
                        format!(
                            "unit{}: total={} used={} available={}",
                            u.unit, u.total, u.used, u.available
                        )
                    })
                    .collect();
                if let Some(c) = r.volume_condition {
                    out.push(format!("abnormal={} message={:?}", c.abnormal, c.message));
                }
                out.join(" ")
            }),
        "unpublish" => node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: a(0),
                target_path: a(1),
            })
            .await
            .map(|_| String::new()),
        "unstage" => node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: a(0),
                staging_target_path: a(1),
            })
            .await
            .map(|_| String::new()),
        _ => usage(),
    };
    match result {
        Ok(s) => println!("ok {s}"),
        Err(e) => {
            println!("error {:?}: {}", e.code(), e.message());
            std::process::exit(1)
        }
    }
}
