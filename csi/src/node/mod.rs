//! The CSI node service: stage (format + mount), publish (bind), expand, stats.
//!
//! Every call is idempotent: it looks at the mount table first and only does what is still
//! missing, so a call repeated after a crash or a timeout finishes the job. A device is
//! formatted only when `blkid -p` finds no signature on it at all; a device that carries
//! anything else (another filesystem, a partition table, an LVM label) is refused, never
//! reformatted.
//!
//! # Error codes
//!
//! As the spec's tables say: a missing field is InvalidArgument; a capability the volume
//! or the driver cannot serve is FailedPrecondition at stage and publish ("exceeds
//! capabilities") and InvalidArgument at expand; a device or volume path that does not
//! exist is NotFound; a target already holding something else is AlreadyExists; a second
//! call for a volume while one runs is Aborted.

pub mod host;
pub mod mountinfo;

use crate::capability::{self, Access};
use crate::csi::node_server::Node;
use crate::csi::*;
use crate::errors::{internal, invalid, missing, not_found, precondition};
use crate::in_flight::InFlight;
use crate::params::FsType;
use crate::{PUBLISH_DEVICE_PATH, VOLUME_CONTEXT_FS_TYPE, VOLUME_CONTEXT_RESTORED};
use host::{Contents, Host, HostError};
use hwameistor_api::TOPOLOGY_NODE_KEY;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::{Code, Request, Response, Status};

pub struct NodeService {
    node: String,
    host: Host,
    max_volumes: i64,
    in_flight: InFlight,
    replication: Option<std::sync::Arc<dyn Replicated>>,
    record: Option<std::sync::Arc<dyn PublishRecord>>,
}

/// Where a driver's volumes are published, kept where others can see it: a raw-disk
/// volume's record keeps its disk from being wiped while a pod has it, which no mount
/// table shows for a raw block volume.
#[tonic::async_trait]
pub trait PublishRecord: Send + Sync + 'static {
    /// Before `volume_id` is published at `target`: recorded, or the publish fails (a use
    /// never goes unrecorded).
    async fn publishing(&self, volume_id: &str, target: &str) -> Result<(), Status>;
    /// After `volume_id` was unpublished from `target`: the record goes (an error fails the
    /// unpublish, which the kubelet repeats).
    async fn unpublished(&self, volume_id: &str, target: &str) -> Result<(), Status>;
}

/// The node's replication layer, as staging needs it: an HA volume is served from its DRBD
/// device, never from the logical volume under it, and only by the replica the controller
/// allows to be primary.
#[tonic::async_trait]
pub trait Replicated: Send + Sync + 'static {
    /// Before staging `volume_id` here: for an HA volume, promotes this node's replica and
    /// returns its device (an error says why not, e.g. not allowed to be primary);
    /// `Ok(None)` for a volume without replication.
    async fn promote(&self, volume_id: &str) -> Result<Option<PathBuf>, Status>;
    /// After unstaging `volume_id` here: demotes an HA volume's replica (no-op otherwise).
    async fn demote(&self, volume_id: &str) -> Result<(), Status>;
}

impl From<HostError> for Status {
    fn from(e: HostError) -> Status {
        internal(e.to_string())
    }
}

fn absolute(field: &str, p: &str) -> Result<PathBuf, Status> {
    if p.is_empty() {
        return Err(missing(field));
    }
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(invalid(format!("{field} {p:?} must be an absolute path")));
    }
    Ok(path)
}

/// A capability at stage or publish: a missing one, or one missing its parts, is an
/// invalid request; one the driver cannot serve "exceeds capabilities", which the spec
/// answers with FailedPrecondition for these two calls.
fn node_capability(cap: Option<&VolumeCapability>) -> Result<capability::Requested, Status> {
    use capability::CapabilityError as E;
    capability::check(cap).map_err(|e| match e {
        E::Missing | E::NoAccessType | E::NoAccessMode => invalid(e.to_string()),
        E::Mode(_) | E::FsType(_) | E::Mixed | E::MountGroup(_) => precondition(e.to_string()),
    })
}

/// A volume path for stats or expansion: a path with nothing at it names no volume
/// (NotFound, whether or not it is absolute); one that exists must be absolute.
fn existing_volume_path(p: &str) -> Result<PathBuf, Status> {
    if p.is_empty() {
        return Err(missing("volume_path"));
    }
    let path = PathBuf::from(p);
    // symlink_metadata: a dangling link at the path is still something there.
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(not_found(format!("volume path {p} does not exist")));
    }
    if !path.is_absolute() {
        return Err(invalid(format!(
            "volume_path {p:?} must be an absolute path"
        )));
    }
    Ok(path)
}

fn require(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        Err(missing(field))
    } else {
        Ok(())
    }
}

/// The volume's device: named by ControllerPublish (`lvm.hwameistor.io`: the replica's
/// device on this node), or, for a driver that publishes nothing (`disk.hwameistor.io`: a
/// whole disk by its stable path), by CreateVolume in the volume context.
fn device_from(
    publish_context: &HashMap<String, String>,
    volume_context: &HashMap<String, String>,
) -> Result<PathBuf, Status> {
    publish_context
        .get(PUBLISH_DEVICE_PATH)
        .or_else(|| volume_context.get(PUBLISH_DEVICE_PATH))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| invalid(format!("neither publish_context nor volume_context has a {PUBLISH_DEVICE_PATH}; was the volume made and published by a HwameiStor driver?")))
}

fn mkdir_all(path: &Path) -> Result<(), Status> {
    std::fs::create_dir_all(path)
        .map_err(|e| internal(format!("cannot create {}: {e}", path.display())))
}

impl NodeService {
    pub fn new(node: String, host: Host, max_volumes: i64) -> Self {
        NodeService {
            node,
            host,
            max_volumes,
            in_flight: InFlight::default(),
            replication: None,
            record: None,
        }
    }

    /// Records every publish and unpublish in `record`.
    pub fn with_publish_record(mut self, record: std::sync::Arc<dyn PublishRecord>) -> Self {
        self.record = Some(record);
        self
    }

    /// Serves HA volumes through `replication`.
    pub fn with_replication(mut self, replication: std::sync::Arc<dyn Replicated>) -> Self {
        self.replication = Some(replication);
        self
    }

    fn existing_device(&self, dev: &Path) -> Result<(u32, u32), Status> {
        self.host.block_device(dev).ok_or_else(|| {
            not_found(format!(
                "block device {} does not exist on node {}",
                dev.display(),
                self.node
            ))
        })
    }

    async fn stage_filesystem(
        &self,
        dev: &Path,
        staging: &Path,
        fs: FsType,
        flags: &[String],
        read_only: bool,
        restored: bool,
    ) -> Result<(), Status> {
        let numbers = self.existing_device(dev)?;
        mkdir_all(staging)?;
        if let Some(m) = self.host.mount_at(staging)? {
            if (m.major, m.minor) == numbers && m.read_only() == read_only {
                return Ok(());
            }
            return Err(Status::new(
                Code::AlreadyExists,
                format!(
                    "{} is already a mount of {} ({}, read-only {}), incompatible with staging {} read-only {read_only}",
                    staging.display(),
                    m.source,
                    m.fs_type,
                    m.read_only(),
                    dev.display()
                ),
            ));
        }
        let mut grow = false;
        match self.host.probe(dev).await? {
            Contents::Blank => {
                tracing::info!(device = %dev.display(), %fs, "formatting blank device");
                self.host.mkfs(dev, fs).await?;
            }
            // A filesystem restored from a snapshot into a larger volume fills it once
            // mounted (growing one that already does is a no-op).
            Contents::Filesystem(found) if found == fs.as_str() => grow = restored && !read_only,
            Contents::Filesystem(found) => {
                return Err(precondition(format!(
                    "{} carries a {found} filesystem but {fs} was requested; refusing to reformat a device that holds data",
                    dev.display()
                )))
            }
            Contents::Other(what) => {
                return Err(precondition(format!("{} carries {what}; refusing to format a device that holds data", dev.display())))
            }
        }
        let mut options = flags.to_vec();
        if read_only {
            options.push("ro".into());
        }
        if restored && fs == FsType::Xfs {
            // A restored XFS carries its source's UUID; XFS refuses to mount a second
            // filesystem with one already mounted (the source, on this node) without this.
            options.push("nouuid".into());
        }
        self.host.mount(dev, staging, fs.as_str(), &options).await?;
        if grow {
            self.host
                .grow(fs.as_str(), &dev.to_string_lossy(), staging)
                .await?;
            tracing::info!(device = %dev.display(), "restored filesystem grown to its volume");
        }
        Ok(())
    }

    async fn unmount_all(&self, target: &Path) -> Result<(), Status> {
        // Stacked mounts (a retried call that mounted twice) come off one at a time.
        for _ in 0..8 {
            if self.host.mount_at(target)?.is_none() {
                return Ok(());
            }
            self.host.umount(target).await?;
        }
        Err(internal(format!(
            "{} is still mounted after 8 unmounts",
            target.display()
        )))
    }

    async fn publish_block(
        &self,
        dev: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<(), Status> {
        let numbers = self.existing_device(dev)?;
        if let Some(parent) = target.parent() {
            mkdir_all(parent)?;
        }
        if self.host.mount_at(target)?.is_some() {
            // A bind-mounted device node shows the device itself at the target.
            if self.host.block_device(target) == Some(numbers) {
                return Ok(());
            }
            return Err(Status::new(
                Code::AlreadyExists,
                format!("{} is already a mount of another device", target.display()),
            ));
        }
        if !target.exists() {
            std::fs::File::create(target)
                .map_err(|e| internal(format!("cannot create {}: {e}", target.display())))?;
        }
        self.host.bind(dev, target, read_only, &[]).await?;
        Ok(())
    }

    async fn publish_mount(
        &self,
        staging: &Path,
        target: &Path,
        read_only: bool,
        flags: &[String],
    ) -> Result<(), Status> {
        let staged = self.host.mount_at(staging)?.ok_or_else(|| {
            precondition(format!(
                "volume is not staged: nothing is mounted at {}",
                staging.display()
            ))
        })?;
        mkdir_all(target)?;
        if let Some(m) = self.host.mount_at(target)? {
            if (m.major, m.minor) == (staged.major, staged.minor) && m.read_only() == read_only {
                return Ok(());
            }
            return Err(Status::new(
                Code::AlreadyExists,
                format!(
                    "{} is already mounted from {} (read-only {}), incompatible with this request",
                    target.display(),
                    m.source,
                    m.read_only()
                ),
            ));
        }
        self.host.bind(staging, target, read_only, flags).await?;
        Ok(())
    }

    fn usage(&self, path: &Path) -> Result<Vec<VolumeUsage>, Status> {
        let st = nix::sys::statvfs::statvfs(path)
            .map_err(|e| internal(format!("statvfs {}: {e}", path.display())))?;
        let frsize = st.fragment_size() as i64;
        let blocks = st.blocks() as i64;
        let (bfree, bavail) = (st.blocks_free() as i64, st.blocks_available() as i64);
        let (files, ffree) = (st.files() as i64, st.files_free() as i64);
        Ok(vec![
            VolumeUsage {
                unit: volume_usage::Unit::Bytes as i32,
                total: blocks * frsize,
                available: bavail * frsize,
                used: (blocks - bfree) * frsize,
            },
            VolumeUsage {
                unit: volume_usage::Unit::Inodes as i32,
                total: files,
                available: ffree,
                used: files - ffree,
            },
        ])
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let staging = absolute("staging_target_path", &req.staging_target_path)?;
        let cap = node_capability(req.volume_capability.as_ref())?;
        let _guard = self.in_flight.begin(&req.volume_id)?;
        let mut dev = device_from(&req.publish_context, &req.volume_context)?;
        if let Some(rep) = &self.replication {
            if let Some(drbd) = rep.promote(&req.volume_id).await? {
                // The replicated device, whatever the publish context names.
                dev = drbd;
            }
        }
        match cap.access {
            // A raw block volume is bind-mounted straight from the device at publish.
            Access::Block => {
                if let Some(fs) = volume_fs(&req.publish_context, &req.volume_context) {
                    return Err(precondition(format!(
                        "volume {} is an {fs} filesystem volume; it cannot be used as a raw block device",
                        req.volume_id
                    )));
                }
                self.existing_device(&dev)?;
            }
            Access::Mount { fs, flags } => {
                let fs = match fs {
                    Some(fs) => fs,
                    None => match req.volume_context.get(VOLUME_CONTEXT_FS_TYPE) {
                        Some(v) => FsType::parse(v).ok_or_else(|| {
                            invalid(format!(
                                "volume_context {VOLUME_CONTEXT_FS_TYPE}={v:?} is not xfs or ext4"
                            ))
                        })?,
                        None => FsType::default(),
                    },
                };
                let restored = req.volume_context.contains_key(VOLUME_CONTEXT_RESTORED);
                self.stage_filesystem(&dev, &staging, fs, &flags, cap.read_only, restored)
                    .await?;
            }
        }
        tracing::info!(volume = %req.volume_id, staging = %staging.display(), "staged");
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let staging = absolute("staging_target_path", &req.staging_target_path)?;
        let _guard = self.in_flight.begin(&req.volume_id)?;
        self.unmount_all(&staging).await?;
        if let Some(rep) = &self.replication {
            rep.demote(&req.volume_id).await?;
        }
        tracing::info!(volume = %req.volume_id, staging = %staging.display(), "unstaged");
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let target = absolute("target_path", &req.target_path)?;
        if req.staging_target_path.is_empty() {
            // STAGE_UNSTAGE_VOLUME is offered: the spec's code for a publish without it.
            return Err(precondition(
                "staging_target_path is not set; the volume must be staged first",
            ));
        }
        let staging = absolute("staging_target_path", &req.staging_target_path)?;
        let cap = node_capability(req.volume_capability.as_ref())?;
        let read_only = req.readonly || cap.read_only;
        let _guard = self.in_flight.begin(&req.volume_id)?;
        let block_device = match cap.access {
            Access::Block => {
                if let Some(fs) = volume_fs(&req.publish_context, &req.volume_context) {
                    return Err(precondition(format!(
                        "volume {} is an {fs} filesystem volume; it cannot be used as a raw block device",
                        req.volume_id
                    )));
                }
                Some(device_from(&req.publish_context, &req.volume_context)?)
            }
            Access::Mount { .. } => None,
        };
        if let Some(r) = &self.record {
            r.publishing(&req.volume_id, &req.target_path).await?;
        }
        let published = match (&cap.access, block_device) {
            (Access::Block, Some(dev)) => self.publish_block(&dev, &target, read_only).await,
            (Access::Mount { flags, .. }, _) => {
                self.publish_mount(&staging, &target, read_only, flags)
                    .await
            }
            (Access::Block, None) => Err(internal("no device for a raw block volume")),
        };
        if let Err(e) = published {
            // Nothing mounted at the target after all: the record goes too, or it would
            // keep the disk from being given back when the kubelet never unpublishes.
            if let (Some(r), Ok(None)) = (&self.record, self.host.mount_at(&target)) {
                if let Err(re) = r.unpublished(&req.volume_id, &req.target_path).await {
                    tracing::warn!(volume = %req.volume_id, error = %re, "the failed publish stays recorded");
                }
            }
            return Err(e);
        }
        tracing::info!(volume = %req.volume_id, target = %target.display(), read_only, "published");
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let target = absolute("target_path", &req.target_path)?;
        let _guard = self.in_flight.begin(&req.volume_id)?;
        self.unmount_all(&target).await?;
        // The target is ours to remove once nothing is mounted there (a directory for
        // filesystems, a file for raw block volumes).
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target)
                .map_err(|e| internal(format!("cannot remove {}: {e}", target.display())))?,
            Ok(_) => std::fs::remove_file(&target)
                .map_err(|e| internal(format!("cannot remove {}: {e}", target.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(internal(format!(
                    "cannot inspect {}: {e}",
                    target.display()
                )))
            }
        }
        if let Some(r) = &self.record {
            r.unpublished(&req.volume_id, &req.target_path).await?;
        }
        tracing::info!(volume = %req.volume_id, target = %target.display(), "unpublished");
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let meta = std::fs::metadata(&path)
            .map_err(|_| not_found(format!("volume path {} does not exist", path.display())))?;
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_block_device() {
            let numbers = self.existing_device(&path)?;
            let present = self.host.device_present(numbers);
            let total = if present {
                self.host.device_size(numbers)?
            } else {
                0
            };
            return Ok(Response::new(NodeGetVolumeStatsResponse {
                usage: vec![VolumeUsage {
                    unit: volume_usage::Unit::Bytes as i32,
                    total,
                    available: 0,
                    used: 0,
                }],
                volume_condition: Some(condition(present, &path)),
            }));
        }
        let mount = self.host.mount_at(&path)?;
        let usage = self.usage(&path)?;
        let volume_condition = Some(match mount {
            None => VolumeCondition {
                abnormal: true,
                message: format!("{} is not a mount point", path.display()),
            },
            Some(m) => condition(
                self.host.device_present((m.major, m.minor)),
                Path::new(&m.source),
            ),
        });
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition,
        }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let path = existing_volume_path(&req.volume_path)?;
        let required = req
            .capacity_range
            .as_ref()
            .map(|r| r.required_bytes)
            .unwrap_or(0);
        let block = match req.volume_capability.as_ref() {
            Some(cap) => capability::check(Some(cap))?.access == Access::Block,
            None => self.host.block_device(&path).is_some(),
        };
        let _guard = self.in_flight.begin(&req.volume_id)?;
        let capacity = if block {
            // Nothing to grow: the device already has the new size.
            let numbers = self.existing_device(&path)?;
            self.host.device_size(numbers)?
        } else {
            // Grow through the staging mount when there is one: it is the filesystem's
            // first mount and exists as long as the volume is on this node.
            let at = if req.staging_target_path.is_empty() {
                path.clone()
            } else {
                PathBuf::from(&req.staging_target_path)
            };
            let m = match self.host.mount_at(&at)? {
                Some(m) => m,
                None => self.host.mount_at(&path)?.ok_or_else(|| {
                    not_found(format!("nothing is mounted at {}", path.display()))
                })?,
            };
            let numbers = (m.major, m.minor);
            let size = self.host.device_size(numbers)?;
            if required > size {
                // Not FailedPrecondition: for this call that means "volume in use, never
                // retry". The range cannot be met by this device (yet): OutOfRange.
                return Err(Status::new(
                    Code::OutOfRange,
                    format!(
                        "device {} is {size} bytes, smaller than the {required} bytes requested: the controller has not grown it",
                        m.source
                    ),
                ));
            }
            self.host
                .grow(&m.fs_type, &m.source, Path::new(&m.mount_point))
                .await?;
            tracing::info!(volume = %req.volume_id, device = %m.source, size, "filesystem grown");
            size
        };
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: capacity,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::rpc::Type;
        let capabilities = [
            Type::StageUnstageVolume,
            Type::ExpandVolume,
            Type::GetVolumeStats,
            Type::VolumeCondition,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node.clone(),
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(Topology {
                segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_string(), self.node.clone())]),
            }),
        }))
    }
}

/// The filesystem a volume was created with, from the contexts the controller filled in.
fn volume_fs<'a>(
    publish_context: &'a HashMap<String, String>,
    volume_context: &'a HashMap<String, String>,
) -> Option<&'a str> {
    publish_context
        .get(VOLUME_CONTEXT_FS_TYPE)
        .or_else(|| volume_context.get(VOLUME_CONTEXT_FS_TYPE))
        .map(String::as_str)
        .filter(|fs| !fs.is_empty())
}

fn condition(present: bool, dev: &Path) -> VolumeCondition {
    if present {
        VolumeCondition {
            abnormal: false,
            message: "volume is healthy".into(),
        }
    } else {
        VolumeCondition {
            abnormal: true,
            message: format!("device {} is gone", dev.display()),
        }
    }
}
