//! The CSI controller service: volumes as LocalVolume objects.
//!
//! The service never places volumes itself. CreateVolume writes the LocalVolume the
//! request describes and watches it until the controller has placed it and its replica is
//! Ready (or the controller reports that no node has room, which becomes
//! ResourceExhausted after the LocalVolume is removed again). Every call is idempotent:
//! repeating it finds the object it created and waits for the same outcome.
//!
//! # Volume names and ids
//!
//! A CSI volume name may be any string; the LocalVolume is named
//! [`volume_object_name`]`(name)` (the name itself when it is a valid object name, else a
//! readable prefix and a hash), the original name is kept in the annotation
//! [`ANNOTATION_CSI_NAME`] when it differs, and the object name is the volume id. An id
//! that is no valid object name cannot name a volume of ours: it is answered as an unknown
//! volume without asking the API server (which would refuse it as InvalidArgument).
//!
//! # Capabilities
//!
//! CREATE_DELETE_VOLUME, PUBLISH_UNPUBLISH_VOLUME, LIST_VOLUMES,
//! LIST_VOLUMES_PUBLISHED_NODES, GET_CAPACITY, EXPAND_VOLUME, GET_VOLUME,
//! CREATE_DELETE_SNAPSHOT and LIST_SNAPSHOTS are offered and work (snapshots in
//! [`crate::snapshots`]); clones (a volume from a snapshot or another volume),
//! VOLUME_CONDITION and MODIFY_VOLUME are not offered and answer as the spec says.

use crate::capability::{self, Access};
use crate::csi::controller_server::Controller;
use crate::csi::*;
use crate::errors::{
    internal, invalid, kube_status, missing, not_found, precondition, size_status,
};
use crate::params::{self, FsType};
use crate::{topology, PUBLISH_DEVICE_PATH, VOLUME_CONTEXT_FS_TYPE, VOLUME_CONTEXT_RESTORED};
use hwameistor_api::replica::replica_name;
use hwameistor_api::volume::{ANNOTATION_CSI_NAME, CONDITION_SCHEDULED, REASON_NO_CAPACITY};
use hwameistor_api::{
    Accessibility, LocalStorageNode, LocalVolume, LocalVolumeExpand, LocalVolumeExpandSpec,
    LocalVolumeReplica, LocalVolumeSpec, OperationPhase, PoolClass, VolumeDataSource, VolumeKind,
    VolumeState, LABEL_VOLUME,
};
use hwameistor_core::naming::{is_plain_volume_name, volume_object_name};
use hwameistor_core::restore::{self, RestoreRefusal};
use hwameistor_core::sizing::{self, VolumeAccess};
use hwameistor_core::{ha, placement};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// How often an expansion in progress is looked at.
const EXPAND_POLL: Duration = Duration::from_millis(250);

/// The LocalVolumeExpand CSI makes to grow `volume` to `bytes` (a LocalVolume name has at
/// most 63 characters, so this is always a valid object name).
pub fn expansion_name(volume: &str, bytes: i64) -> String {
    format!("{volume}-expand-{bytes}")
}

/// How long calls wait for the cluster to act, unless the caller's deadline is shorter.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub create: Duration,
    pub delete: Duration,
    pub expand: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            create: Duration::from_secs(50),
            delete: Duration::from_secs(50),
            expand: Duration::from_secs(50),
        }
    }
}

pub struct ControllerService {
    client: Client,
    timeouts: Timeouts,
    snapshots: crate::snapshots::Snapshots,
}

/// The caller's deadline from the `grpc-timeout` header (`<digits><unit>`, unit one of
/// H M S m u n), so the call answers before the caller gives up on it.
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (num, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pub(crate) fn deadline<T>(req: &Request<T>, ours: Duration) -> Duration {
    let theirs = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout);
    match theirs {
        // Leave a little time to send the answer.
        Some(t) => ours.min(t.mul_f32(0.9)),
        None => ours,
    }
}

pub(crate) fn require(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        Err(missing(field))
    } else {
        Ok(())
    }
}

/// The placement failure the controller reported, if any.
pub fn unschedulable(lv: &LocalVolume) -> Option<String> {
    let st = lv.status.as_ref()?;
    st.conditions
        .iter()
        .find(|c| {
            c.type_ == CONDITION_SCHEDULED && c.status == "False" && c.reason == REASON_NO_CAPACITY
        })
        .map(|c| c.message.clone())
}

pub fn is_ready(lv: &LocalVolume) -> bool {
    lv.spec.config.is_some() && lv.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
}

fn nodes_of(lv: &LocalVolume) -> Vec<String> {
    lv.spec
        .config
        .as_ref()
        .map(|c| c.replicas.iter().map(|r| r.hostname.clone()).collect())
        .unwrap_or_default()
}

fn access_of(lv: &LocalVolume) -> VolumeAccess {
    match lv.spec.fs_type.as_deref().and_then(FsType::parse) {
        Some(fs) => VolumeAccess::Filesystem(fs),
        None => VolumeAccess::Block,
    }
}

/// Whether a volume of kind `have` serves the access `asked`.
fn serves(asked: &Access, have: VolumeAccess) -> bool {
    match (asked, have) {
        (Access::Block, VolumeAccess::Block) => true,
        (Access::Mount { fs: None, .. }, VolumeAccess::Filesystem(_)) => true,
        (Access::Mount { fs: Some(a), .. }, VolumeAccess::Filesystem(b)) => *a == b,
        _ => false,
    }
}

fn volume_message(lv: &LocalVolume) -> Volume {
    Volume {
        capacity_bytes: lv.spec.required_capacity_bytes,
        volume_id: lv.name_any(),
        volume_context: lv
            .spec
            .fs_type
            .iter()
            .map(|fs| (VOLUME_CONTEXT_FS_TYPE.to_string(), fs.clone()))
            // A restored filesystem may be smaller than its volume: the node grows it.
            .chain(
                lv.spec
                    .data_source
                    .iter()
                    .map(|d| (VOLUME_CONTEXT_RESTORED.to_string(), d.snapshot.clone())),
            )
            .collect(),
        content_source: content_source_message(lv),
        accessible_topology: nodes_of(lv).iter().map(|n| topology::of_node(n)).collect(),
    }
}

fn published_nodes(lv: &LocalVolume) -> Vec<String> {
    lv.status
        .as_ref()
        .and_then(|s| s.published_node.clone())
        .into_iter()
        .collect()
}

/// The CSI volume name a LocalVolume was created for.
pub fn csi_name_of(lv: &LocalVolume) -> String {
    lv.annotations()
        .get(ANNOTATION_CSI_NAME)
        .cloned()
        .unwrap_or_else(|| lv.name_any())
}

fn pool_class_of(lv: &LocalVolume) -> Option<PoolClass> {
    PoolClass::from_pool_name(&lv.spec.pool_name)
}

impl ControllerService {
    pub fn new(client: Client, timeouts: Timeouts) -> Self {
        ControllerService {
            snapshots: crate::snapshots::Snapshots::new(client.clone(), timeouts.create),
            client,
            timeouts,
        }
    }

    fn volumes(&self) -> Api<LocalVolume> {
        Api::all(self.client.clone())
    }

    fn expansions(&self) -> Api<LocalVolumeExpand> {
        Api::all(self.client.clone())
    }

    /// Ensures a LocalVolumeExpand of `volume` to `bytes` exists and has not ended in
    /// failure: one that failed or was aborted is replaced (a retried call is a new try).
    async fn request_expansion(&self, volume: &str, bytes: i64) -> Result<(), Status> {
        let name = expansion_name(volume, bytes);
        let api = self.expansions();
        if let Some(old) = api
            .get_opt(&name)
            .await
            .map_err(|e| kube_status("reading LocalVolumeExpand", e))?
        {
            let phase = old.status.as_ref().and_then(|s| s.phase);
            if !matches!(
                phase,
                Some(OperationPhase::Failed) | Some(OperationPhase::Aborted)
            ) {
                return Ok(());
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_status("replacing a failed LocalVolumeExpand", e)),
            }
            return Err(Status::new(
                Code::Unavailable,
                format!(
                    "the last expansion of {volume} ended {:?}: {}; retry",
                    phase.unwrap_or(OperationPhase::Failed),
                    old.status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_default()
                ),
            ));
        }
        let op = LocalVolumeExpand::new(
            &name,
            LocalVolumeExpandSpec {
                volume_name: volume.to_string(),
                required_capacity_bytes: bytes,
                abort: false,
                ttl_seconds_after_finished: None,
            },
        );
        match api.create(&PostParams::default(), &op).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(kube_status("creating LocalVolumeExpand", e)),
        }
    }

    /// Waits until volume `name` is Ready at `target` bytes, or its expansion to `bytes`
    /// (when `requested`) ended without growing it.
    async fn await_expansion(
        &self,
        name: &str,
        requested: bool,
        bytes: i64,
        target: i64,
        limit: Duration,
    ) -> Result<LocalVolume, Status> {
        let deadline = tokio::time::Instant::now() + limit;
        let op_name = expansion_name(name, bytes);
        loop {
            let lv = self
                .volumes()
                .get_opt(name)
                .await
                .map_err(|e| kube_status("reading LocalVolume", e))?
                .ok_or_else(|| not_found(format!("volume {name} was deleted")))?;
            let st = lv.status.as_ref();
            if st.and_then(|s| s.allocated_capacity_bytes).unwrap_or(0) >= target
                && st.and_then(|s| s.state) == Some(VolumeState::Ready)
            {
                return Ok(lv);
            }
            if requested {
                let op = self
                    .expansions()
                    .get_opt(&op_name)
                    .await
                    .map_err(|e| kube_status("reading LocalVolumeExpand", e))?;
                if let Some(st) = op.as_ref().and_then(|o| o.status.as_ref()) {
                    if matches!(
                        st.phase,
                        Some(OperationPhase::Failed) | Some(OperationPhase::Aborted)
                    ) {
                        return Err(Status::new(
                            Code::ResourceExhausted,
                            format!(
                                "expanding {name}: {}",
                                st.message.clone().unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::new(
                    Code::DeadlineExceeded,
                    format!("volume {name} has not reached {target} bytes after {limit:?}"),
                ));
            }
            tokio::time::sleep(EXPAND_POLL).await;
        }
    }

    fn nodes(&self) -> Api<LocalStorageNode> {
        Api::all(self.client.clone())
    }

    fn replicas(&self) -> Api<LocalVolumeReplica> {
        Api::all(self.client.clone())
    }

    /// The volume with id `name`, if it exists.
    async fn get_volume(&self, name: &str) -> Result<Option<LocalVolume>, Status> {
        if !is_plain_volume_name(name) {
            // Every id this driver hands out is a plain name (see the module docs).
            return Ok(None);
        }
        self.volumes()
            .get_opt(name)
            .await
            .map_err(|e| kube_status("reading LocalVolume", e))
    }

    async fn list_nodes(&self) -> Result<Vec<LocalStorageNode>, Status> {
        Ok(self
            .nodes()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_status("listing LocalStorageNodes", e))?
            .items)
    }

    /// The inputs of the controller's placement: nodes, and every replica placed so far.
    async fn placement_state(
        &self,
    ) -> Result<(Vec<placement::NodeView>, Vec<placement::Placed>), Status> {
        let nodes = self.list_nodes().await?;
        let volumes = self
            .volumes()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_status("listing LocalVolumes", e))?
            .items;
        let replicas = self
            .replicas()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_status("listing LocalVolumeReplicas", e))?
            .items;
        Ok((
            placement::node_views(&nodes),
            placement::placed_replicas(&volumes, &replicas),
        ))
    }

    /// Waits until `name` is Ready, gone, unschedulable or being deleted.
    async fn wait_settled(&self, name: &str, limit: Duration) -> Result<LocalVolume, Status> {
        let settled = |lv: Option<&LocalVolume>| match lv {
            None => true,
            Some(lv) => {
                is_ready(lv)
                    || unschedulable(lv).is_some()
                    || lv.metadata.deletion_timestamp.is_some()
            }
        };
        let found = match tokio::time::timeout(
            limit,
            await_condition(self.volumes(), name, settled),
        )
        .await
        {
            Err(_) => {
                let state = self
                    .get_volume(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|lv| lv.status)
                    .and_then(|s| s.state);
                return Err(Status::new(
                    Code::DeadlineExceeded,
                    format!("volume {name} is not Ready after {limit:?} (state {state:?}); it is still being provisioned"),
                ));
            }
            Ok(Err(e)) => {
                return Err(Status::new(
                    Code::Unavailable,
                    format!("watching LocalVolume {name}: {e}"),
                ))
            }
            Ok(Ok(None)) => {
                return Err(Status::new(
                    Code::Aborted,
                    format!("volume {name} was deleted while being created"),
                ))
            }
            Ok(Ok(Some(lv))) => lv,
        };
        if found.metadata.deletion_timestamp.is_some() {
            return Err(Status::new(
                Code::Aborted,
                format!("volume {name} is being deleted"),
            ));
        }
        if let Some(why) = unschedulable(&found) {
            // Nothing may stay behind: remove the volume the controller could not place.
            self.delete_and_wait(&found, limit).await?;
            return Err(Status::new(Code::ResourceExhausted, why));
        }
        Ok(found)
    }

    async fn delete_and_wait(&self, lv: &LocalVolume, limit: Duration) -> Result<(), Status> {
        let name = lv.name_any();
        if lv.metadata.deletion_timestamp.is_none() {
            match self.volumes().delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(kube_status("deleting LocalVolume", e)),
            }
        }
        let uid = lv.metadata.uid.clone().unwrap_or_default();
        match tokio::time::timeout(limit, await_condition(self.volumes(), &name, conditions::is_deleted(&uid))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Status::new(Code::Unavailable, format!("watching LocalVolume {name}: {e}"))),
            Err(_) => Err(Status::new(
                Code::DeadlineExceeded,
                format!("volume {name} is still being deleted after {limit:?} (waiting for its replicas to be removed)"),
            )),
        }
    }

    /// The data source a new volume `name` of `spec` restores from `src`: the snapshot
    /// named, or one taken now of the volume cloned (kept until the clone is filled).
    async fn data_source(
        &self,
        src: &ContentSource,
        name: &str,
        spec: &LocalVolumeSpec,
        limit: Duration,
    ) -> Result<VolumeDataSource, Status> {
        match src {
            ContentSource::Snapshot(id) => {
                let snap = self.snapshots.get(id).await?.ok_or_else(|| {
                    not_found(format!(
                        "snapshot {id} (the volume's content source) does not exist"
                    ))
                })?;
                let source = self.get_volume(&snap.spec.source_volume).await?;
                restore::data_source(spec, &snap, source.as_ref(), None).map_err(restore_status)
            }
            ContentSource::Volume(id) => {
                let source = self.get_volume(id).await?.ok_or_else(|| {
                    not_found(format!(
                        "volume {id} (the volume's content source) does not exist"
                    ))
                })?;
                // Refused before a snapshot is taken for nothing.
                if spec.required_capacity_bytes < source.spec.required_capacity_bytes {
                    return Err(Status::new(
                        Code::OutOfRange,
                        format!(
                            "volume {id} is {} bytes; a clone of it is at least that (asked {})",
                            source.spec.required_capacity_bytes, spec.required_capacity_bytes
                        ),
                    ));
                }
                let snap = self
                    .snapshots
                    .take(&restore::clone_snapshot_name(name), id, None, None, limit)
                    .await?;
                restore::data_source(spec, &snap, Some(&source), Some(id)).map_err(restore_status)
            }
        }
    }

    async fn set_published(&self, lv: &LocalVolume, node: Option<&str>) -> Result<(), Status> {
        // resourceVersion makes this a compare-and-swap: two attaches racing for one volume
        // cannot both win.
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": lv.metadata.resource_version },
            "status": { "publishedNode": node },
        });
        self.volumes()
            .patch_status(
                &lv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| kube_status("recording the published node", e))?;
        Ok(())
    }
}

/// Whether an existing volume satisfies a repeated CreateVolume for `csi_name`.
pub fn compatible(
    existing: &LocalVolume,
    csi_name: &str,
    want: &LocalVolumeSpec,
    range: &CapacityRange,
) -> Result<(), Status> {
    let recorded = csi_name_of(existing);
    if recorded != csi_name {
        // Two names mapped to one object name: never hand one volume out for both.
        return Err(Status::new(
            Code::AlreadyExists,
            format!(
                "volume name {csi_name:?} maps to LocalVolume {}, which already belongs to volume name {recorded:?}; use another name",
                existing.name_any()
            ),
        ));
    }
    let e = &existing.spec;
    let placed = nodes_of(existing);
    if !want.accessibility.nodes.is_empty()
        && !placed.is_empty()
        && !placed.iter().any(|n| want.accessibility.nodes.contains(n))
    {
        return Err(Status::new(
            Code::AlreadyExists,
            format!(
                "volume {} exists on {placed:?}, outside the requested topology {:?}",
                existing.name_any(),
                want.accessibility.nodes
            ),
        ));
    }
    let size_ok = e.required_capacity_bytes >= range.required_bytes
        && (range.limit_bytes == 0 || e.required_capacity_bytes <= range.limit_bytes);
    if e.pool_name != want.pool_name
        || e.fs_type != want.fs_type
        || e.replica_number != want.replica_number
        || e.convertible != want.convertible
        || e.thin != want.thin
        || !size_ok
    {
        return Err(Status::new(
            Code::AlreadyExists,
            format!(
                "volume {} exists with pool {}, filesystem {:?}, {} bytes, {} replicas{}: incompatible with this request",
                existing.name_any(),
                e.pool_name,
                e.fs_type,
                e.required_capacity_bytes,
                e.replica_number,
                if e.thin { ", thin" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// What a CreateVolume asks the new volume to hold: a snapshot's data, or a copy of
/// another volume's (taken through a snapshot made for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentSource {
    Snapshot(String),
    Volume(String),
}

/// The request's content source, if any. Pure.
pub fn content_source(req: &CreateVolumeRequest) -> Result<Option<ContentSource>, Status> {
    use volume_content_source::Type;
    let Some(src) = req.volume_content_source.as_ref() else {
        return Ok(None);
    };
    match &src.r#type {
        Some(Type::Snapshot(s)) => {
            require("volume_content_source.snapshot.snapshot_id", &s.snapshot_id)?;
            Ok(Some(ContentSource::Snapshot(s.snapshot_id.clone())))
        }
        Some(Type::Volume(v)) => {
            require("volume_content_source.volume.volume_id", &v.volume_id)?;
            Ok(Some(ContentSource::Volume(v.volume_id.clone())))
        }
        None => Err(invalid(
            "volume_content_source names neither a snapshot nor a volume",
        )),
    }
}

/// Whether volume `v` was made from `src` (a repeated CreateVolume must ask for the same).
fn made_from(v: &LocalVolume, src: Option<&ContentSource>) -> bool {
    let ds = v.spec.data_source.as_ref();
    match src {
        None => ds.is_none(),
        Some(ContentSource::Snapshot(id)) => {
            ds.is_some_and(|d| d.clone_of.is_none() && &d.snapshot == id)
        }
        Some(ContentSource::Volume(id)) => ds.is_some_and(|d| d.clone_of.as_ref() == Some(id)),
    }
}

/// The CSI content source of a volume made from a snapshot or a clone.
fn content_source_message(v: &LocalVolume) -> Option<VolumeContentSource> {
    use volume_content_source::{SnapshotSource, Type, VolumeSource};
    let ds = v.spec.data_source.as_ref()?;
    Some(VolumeContentSource {
        r#type: Some(match &ds.clone_of {
            Some(volume) => Type::Volume(VolumeSource {
                volume_id: volume.clone(),
            }),
            None => Type::Snapshot(SnapshotSource {
                snapshot_id: ds.snapshot.clone(),
            }),
        }),
    })
}

/// The CSI status of a restore `refusal`.
fn restore_status(refusal: RestoreRefusal) -> Status {
    match refusal {
        RestoreRefusal::Invalid(m) => invalid(m),
        RestoreRefusal::TooSmall(m) => Status::new(Code::OutOfRange, m),
        RestoreRefusal::NotReady(m) => Status::new(Code::Unavailable, m),
    }
}

/// The spec CreateVolume writes and the size rule's input, from a request. Pure.
pub fn volume_spec(req: &CreateVolumeRequest) -> Result<LocalVolumeSpec, Status> {
    require("name", &req.name)?;
    if !req.mutable_parameters.is_empty() {
        return Err(invalid(
            "mutable parameters are not supported (MODIFY_VOLUME is not offered)",
        ));
    }
    let access = capability::check_all(&req.volume_capabilities)?;
    let params = params::parse(&req.parameters)?;
    let (size_access, fs_type) = match access {
        Access::Block => {
            if params.fs_type.is_some() {
                return Err(invalid(format!(
                    "{} is set but the volume is a raw block volume",
                    params::PARAM_FS_TYPE
                )));
            }
            (VolumeAccess::Block, None)
        }
        Access::Mount { fs, .. } => {
            let fs = match (fs, params.fs_type) {
                (Some(a), Some(b)) if a != b => {
                    return Err(invalid(format!(
                        "{}={b} contradicts the capability's filesystem {a}",
                        params::PARAM_FS_TYPE
                    )))
                }
                (a, b) => a.or(b).unwrap_or_default(),
            };
            (VolumeAccess::Filesystem(fs), Some(fs.as_str().to_string()))
        }
    };
    let range = req.capacity_range.clone().unwrap_or_default();
    let bytes = sizing::volume_size(range.required_bytes, range.limit_bytes, size_access)
        .map_err(size_status)?;
    let nodes = topology::candidate_nodes(req.accessibility_requirements.as_ref())?;
    Ok(LocalVolumeSpec {
        pool_name: params.pool_class.pool_name().to_string(),
        volume_kind: VolumeKind::Lvm,
        required_capacity_bytes: bytes,
        replica_number: i64::from(params.replicas.get()),
        convertible: params.convertible,
        accessibility: Accessibility { nodes },
        pvc_namespace: params.pvc_namespace,
        pvc_name: params.pvc_name,
        fs_type,
        config: None,
        split_brain_resolution: None,
        operation: None,
        thin: params.thin,
        data_source: None,
    })
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let limit = deadline(&request, self.timeouts.create);
        let req = request.into_inner();
        let mut spec = volume_spec(&req)?;
        let source = content_source(&req)?;
        let range = req.capacity_range.clone().unwrap_or_default();
        let name = volume_object_name(&req.name);
        match self.get_volume(&name).await? {
            Some(existing) => {
                compatible(&existing, &req.name, &spec, &range)?;
                if !made_from(&existing, source.as_ref()) {
                    return Err(Status::new(
                        Code::AlreadyExists,
                        format!("volume {name} exists with another content source ({:?}); incompatible with this request", existing.spec.data_source),
                    ));
                }
            }
            None => {
                if let Some(src) = &source {
                    spec.data_source = Some(self.data_source(src, &name, &spec, limit).await?);
                }
                // No early refusal here: whether a pool has room is decided once, by the
                // controller's placement (hwameistor_core::placement::place, which also
                // counts volumes placed but not reported yet and the per-pool volume limit
                // only the controller knows). A volume it cannot place gets NoCapacity,
                // which wait_settled turns into ResourceExhausted after removing the object;
                // a second, advisory check here could only disagree with it.
                let mut lv = LocalVolume::new(&name, spec.clone());
                if name != req.name {
                    lv.metadata.annotations = Some(BTreeMap::from([(
                        ANNOTATION_CSI_NAME.to_string(),
                        req.name.clone(),
                    )]));
                }
                match self.volumes().create(&PostParams::default(), &lv).await {
                    Ok(_) => {
                        tracing::info!(volume = %name, csi_name = %req.name, bytes = spec.required_capacity_bytes, pool = %spec.pool_name, "LocalVolume created")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // A concurrent repeat of this call won the race; it must ask for the same.
                        let existing = self
                            .get_volume(&name)
                            .await?
                            .ok_or_else(|| Status::new(Code::Aborted, "volume vanished; retry"))?;
                        compatible(&existing, &req.name, &spec, &range)?;
                    }
                    Err(e) => return Err(kube_status("creating LocalVolume", e)),
                }
            }
        }
        let lv = self.wait_settled(&name, limit).await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume_message(&lv)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let limit = deadline(&request, self.timeouts.delete);
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let Some(lv) = self.get_volume(&req.volume_id).await? else {
            return Ok(Response::new(DeleteVolumeResponse {}));
        };
        if let Some(node) = lv.status.as_ref().and_then(|s| s.published_node.as_deref()) {
            return Err(precondition(format!(
                "volume {} is published on node {node}; unpublish it first",
                req.volume_id
            )));
        }
        // Its snapshots live beside it (LVM would remove them with it): they go first.
        let snapshots = self.snapshots.of_volume(&req.volume_id).await?;
        if !snapshots.is_empty() {
            let names: Vec<String> = snapshots.iter().map(|s| s.name_any()).collect();
            return Err(precondition(format!(
                "volume {} has snapshots ({}); delete them first (their VolumeSnapshots)",
                req.volume_id,
                names.join(", ")
            )));
        }
        self.delete_and_wait(&lv, limit).await?;
        tracing::info!(volume = %req.volume_id, "LocalVolume deleted");
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        require("node_id", &req.node_id)?;
        let cap = capability::check(req.volume_capability.as_ref())?;
        let mut lv = self
            .get_volume(&req.volume_id)
            .await?
            .ok_or_else(|| not_found(format!("volume {} does not exist", req.volume_id)))?;
        if (cap.access == Access::Block) != lv.spec.fs_type.is_none() {
            return Err(invalid(format!(
                "capability {:?} does not match volume {} (filesystem {:?})",
                cap.access, req.volume_id, lv.spec.fs_type
            )));
        }
        let nodes = nodes_of(&lv);
        if !nodes.iter().any(|n| n == &req.node_id) {
            if self
                .nodes()
                .get_opt(&req.node_id)
                .await
                .map_err(|e| kube_status("reading LocalStorageNode", e))?
                .is_none()
            {
                return Err(not_found(format!(
                    "node {} is not a storage node",
                    req.node_id
                )));
            }
            return Err(precondition(format!(
                "volume {} lives on {:?}, not on node {}",
                req.volume_id, nodes, req.node_id
            )));
        }
        if let Some(other) = lv
            .status
            .as_ref()
            .and_then(|s| s.published_node.as_deref())
            .filter(|n| *n != req.node_id)
        {
            // An HA volume whose replica there is fenced (failed over from a lost node)
            // may be published here: that node can never write to it again.
            let fenced = lv
                .spec
                .config
                .as_ref()
                .is_some_and(|c| c.replicas.iter().any(|a| a.hostname == other && a.outdated));
            if !fenced {
                return Err(precondition(format!(
                    "volume {} is published on node {other}; a local volume serves one node",
                    req.volume_id
                )));
            }
        }
        let mut switched = false;
        if let Some(config) = lv.spec.config.as_ref().filter(|c| ha::is_ha(c)) {
            let replicas = self
                .replicas()
                .list(&ListParams::default().labels(&format!("{LABEL_VOLUME}={}", req.volume_id)))
                .await
                .map_err(|e| kube_status("listing LocalVolumeReplicas", e))?
                .items;
            match ha::switch_primary(config, &replicas, &req.node_id) {
                Ok(None) => {}
                Ok(Some(next)) => {
                    // Compare-and-swap: a failover or a fence racing with this wins or
                    // loses as a whole; the attacher retries on Aborted.
                    let patch = serde_json::json!({
                        "metadata": { "resourceVersion": lv.metadata.resource_version },
                        "spec": { "config": next },
                    });
                    match self
                        .volumes()
                        .patch(
                            &req.volume_id,
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(volume = %req.volume_id, node = %req.node_id, "HA primary switched over")
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            return Err(Status::new(
                                Code::Aborted,
                                format!("volume {} changed meanwhile; retry", req.volume_id),
                            ))
                        }
                        Err(e) => return Err(kube_status("switching the HA primary", e)),
                    }
                    switched = true;
                }
                Err(why) => {
                    return Err(precondition(format!(
                        "HA volume {} cannot be served from {}: {why}",
                        req.volume_id, req.node_id
                    )))
                }
            }
        }
        if switched {
            // The record below is a compare-and-swap on the volume as it is now.
            lv = self
                .get_volume(&req.volume_id)
                .await?
                .ok_or_else(|| not_found(format!("volume {} does not exist", req.volume_id)))?;
        }
        // A migration reading or writing the replica here forbids using it; checked on the
        // volume as the compare-and-swap below records it, so a migration starting
        // meanwhile and this publication cannot both win.
        if let Some(why) = lv
            .spec
            .config
            .as_ref()
            .and_then(|c| hwameistor_core::volume::publish_refusal(c, &req.node_id))
        {
            return Err(precondition(format!(
                "volume {} cannot be used on {} now: {why}",
                req.volume_id, req.node_id
            )));
        }
        let replica = self
            .replicas()
            .get_opt(&replica_name(&req.volume_id, &req.node_id))
            .await
            .map_err(|e| kube_status("reading LocalVolumeReplica", e))?;
        let device = replica
            .and_then(|r| r.status)
            .and_then(|s| s.device_path)
            .ok_or_else(|| {
                Status::new(
                    Code::Unavailable,
                    format!(
                        "the replica of {} on {} has no device yet",
                        req.volume_id, req.node_id
                    ),
                )
            })?;
        if lv.status.as_ref().and_then(|s| s.published_node.as_deref())
            != Some(req.node_id.as_str())
        {
            self.set_published(&lv, Some(&req.node_id)).await?;
            tracing::info!(volume = %req.volume_id, node = %req.node_id, "published");
        }
        let mut publish_context = HashMap::from([(PUBLISH_DEVICE_PATH.to_string(), device)]);
        if let Some(fs) = &lv.spec.fs_type {
            publish_context.insert(VOLUME_CONTEXT_FS_TYPE.to_string(), fs.clone());
        }
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        // A volume that is gone is published nowhere: the spec asks for OK then, so a
        // detach retried after the volume was deleted completes.
        let Some(lv) = self.get_volume(&req.volume_id).await? else {
            return Ok(Response::new(ControllerUnpublishVolumeResponse {}));
        };
        let published = lv.status.as_ref().and_then(|s| s.published_node.clone());
        // An empty node id means "from every node".
        if published.is_some()
            && (req.node_id.is_empty() || published.as_deref() == Some(req.node_id.as_str()))
        {
            self.set_published(&lv, None).await?;
            tracing::info!(volume = %req.volume_id, node = %req.node_id, "unpublished");
        }
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(missing("volume_capabilities"));
        }
        let lv = self
            .get_volume(&req.volume_id)
            .await?
            .ok_or_else(|| not_found(format!("volume {} does not exist", req.volume_id)))?;
        let verdict = capability::check_all(&req.volume_capabilities)
            .map_err(|e| e.to_string())
            .and_then(|access| {
                params::parse(&req.parameters).map_err(|e| e.to_string())?;
                if !req.mutable_parameters.is_empty() {
                    return Err("mutable parameters are not supported".to_string());
                }
                let have = access_of(&lv);
                if serves(&access, have) {
                    Ok(())
                } else {
                    Err(format!(
                        "volume {} is {have:?}; it cannot serve {access:?}",
                        req.volume_id
                    ))
                }
            });
        Ok(Response::new(match verdict {
            Ok(()) => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(message) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        if req.max_entries < 0 {
            return Err(invalid("max_entries must not be negative"));
        }
        // The token is the name of the last volume returned: pages stay correct when volumes
        // come and go between calls.
        let after = match req.starting_token.as_str() {
            "" => None,
            t => Some(t.strip_prefix("after:").ok_or_else(|| {
                Status::new(
                    Code::Aborted,
                    format!("starting_token {t:?} was not issued by this plugin"),
                )
            })?),
        };
        let mut all = self
            .volumes()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_status("listing LocalVolumes", e))?
            .items;
        all.sort_by_key(|lv| lv.name_any());
        let rest: Vec<&LocalVolume> = all
            .iter()
            .filter(|lv| after.is_none_or(|a| lv.name_any().as_str() > a))
            .collect();
        let take = if req.max_entries == 0 {
            rest.len()
        } else {
            (req.max_entries as usize).min(rest.len())
        };
        let page = &rest[..take];
        let next_token = if take < rest.len() {
            page.last()
                .map(|lv| format!("after:{}", lv.name_any()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let entries = page
            .iter()
            .map(|lv| list_volumes_response::Entry {
                volume: Some(volume_message(lv)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: published_nodes(lv),
                    // VOLUME_CONDITION is not offered.
                    volume_condition: None,
                }),
            })
            .collect();
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        let access = if req.volume_capabilities.is_empty() {
            None
        } else {
            Some(capability::check_all(&req.volume_capabilities)?)
        };
        let params = params::parse(&req.parameters)?;
        let node = req
            .accessible_topology
            .as_ref()
            .map(|t| topology::node_of(t).ok_or(topology::NoNodeKey))
            .transpose()?;
        let (nodes, placed) = self.placement_state().await?;
        // An HA class needs room on a second node too (and metadata beside the data).
        let room = if params.replicas.get() > 1 {
            placement::available_replicated(&nodes, params.pool_class, &placed, node)
        } else {
            placement::available(&nodes, params.pool_class, params.thin, &placed, node)
        };
        // The smallest volume these capabilities allow (xfs has a floor of its own); without
        // capabilities the filesystem is not known, so no minimum is claimed.
        let minimum_volume_size = access.map(|a| {
            let fs = match a {
                Access::Block => return VolumeAccess::Block.min_bytes(),
                Access::Mount { fs, .. } => fs.or(params.fs_type).unwrap_or_default(),
            };
            VolumeAccess::Filesystem(fs).min_bytes()
        });
        Ok(Response::new(GetCapacityResponse {
            available_capacity: room.total,
            // A volume lives in one pool: none larger than the roomiest pool fits.
            maximum_volume_size: Some(room.largest),
            minimum_volume_size,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type;
        let capabilities = [
            Type::CreateDeleteVolume,
            Type::PublishUnpublishVolume,
            Type::ListVolumes,
            Type::GetCapacity,
            Type::ExpandVolume,
            Type::ListVolumesPublishedNodes,
            Type::GetVolume,
            Type::CreateDeleteSnapshot,
            Type::ListSnapshots,
            Type::CloneVolume,
        ]
        .into_iter()
        .map(|t| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let limit = deadline(&request, self.timeouts.expand);
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let range = req
            .capacity_range
            .clone()
            .ok_or_else(|| missing("capacity_range"))?;
        let lv = self
            .get_volume(&req.volume_id)
            .await?
            .ok_or_else(|| not_found(format!("volume {} does not exist", req.volume_id)))?;
        if lv.metadata.deletion_timestamp.is_some() {
            return Err(not_found(format!(
                "volume {} is being deleted",
                req.volume_id
            )));
        }
        let nodes = nodes_of(&lv);
        if nodes.is_empty() {
            // Still being created: an operation is pending for the volume.
            return Err(Status::new(
                Code::Aborted,
                format!("volume {} is not placed yet; retry", req.volume_id),
            ));
        }
        let access = access_of(&lv);
        if let Some(cap) = req.volume_capability.as_ref() {
            let asked = capability::check(Some(cap))?.access;
            if !serves(&asked, access) {
                return Err(invalid(format!(
                    "volume {} is {access:?}; it cannot serve {asked:?}",
                    req.volume_id
                )));
            }
        }
        let node_expansion_required = access != VolumeAccess::Block;
        let want = sizing::volume_size(range.required_bytes, range.limit_bytes, access)
            .map_err(size_status)?;
        let have = lv.spec.required_capacity_bytes;
        let name = lv.name_any();
        if range.limit_bytes > 0 && range.limit_bytes < have {
            return Err(Status::new(
                Code::OutOfRange,
                format!(
                    "volume {name} is {have} bytes; it cannot shrink to limit_bytes {}",
                    range.limit_bytes
                ),
            ));
        }
        if want > have {
            let class = pool_class_of(&lv).ok_or_else(|| {
                internal(format!(
                    "volume {name} has unknown pool {}",
                    lv.spec.pool_name
                ))
            })?;
            // The controller's rule: the volume's own allocation is its to grow into, and
            // what is promised to other volumes but not reported yet is not free.
            let (views, placed) = self.placement_state().await?;
            for node in &nodes {
                placement::check_growth(&views, node, class, &placed, &name, want).map_err(
                    |why| {
                        let code = match why {
                            placement::GrowthError::NoRoom { .. } => Code::ResourceExhausted,
                            // The node may come back: retry later.
                            _ => Code::Unavailable,
                        };
                        Status::new(code, format!("cannot grow {name} to {want} bytes: {why}"))
                    },
                )?;
            }
            // Through the same path as a user's expansion: a LocalVolumeExpand the
            // controller runs (and keeps as history). Named by volume and size, so a retried
            // call finds its own.
            self.request_expansion(&name, want).await?;
            tracing::info!(volume = %name, from = have, to = want, "expansion requested");
        }
        let target = want.max(have);
        let lv = self
            .await_expansion(&name, want > have, want, target, limit)
            .await?;
        let capacity_bytes = lv
            .status
            .as_ref()
            .and_then(|s| s.allocated_capacity_bytes)
            .unwrap_or(target);
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes,
            node_expansion_required,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        self.snapshots.create(request).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        self.snapshots.delete(request).await
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        self.snapshots.list_rpc(request).await
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let lv = self
            .get_volume(&req.volume_id)
            .await?
            .ok_or_else(|| not_found(format!("volume {} does not exist", req.volume_id)))?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(volume_message(&lv)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: published_nodes(&lv),
                // VOLUME_CONDITION is not offered.
                volume_condition: None,
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        _r: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented("MODIFY_VOLUME is not offered"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::tests::{block_cap, mount_cap};
    use crate::csi::volume_capability::access_mode::Mode;

    fn create(
        name: &str,
        params: &[(&str, &str)],
        caps: Vec<VolumeCapability>,
        required: i64,
    ) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: required,
                limit_bytes: 0,
            }),
            volume_capabilities: caps,
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout(""), None);
        assert_eq!(grpc_timeout("10x"), None);
    }

    #[test]
    fn create_requests_become_local_volume_specs() {
        let w = Mode::SingleNodeWriter;
        let mut req = create(
            "pvc-1",
            &[
                ("poolClass", "SSD"),
                ("csi.storage.k8s.io/pvc/name", "data"),
            ],
            vec![mount_cap("", w)],
            1 << 20,
        );
        req.accessibility_requirements = Some(TopologyRequirement {
            requisite: vec![topology::of_node("n2")],
            preferred: vec![topology::of_node("n2")],
        });
        let spec = volume_spec(&req).expect("valid");
        assert_eq!(spec.pool_name, "LocalStorage_PoolSSD");
        assert_eq!(spec.required_capacity_bytes, 300 << 20, "xfs floor applied");
        assert_eq!(spec.fs_type.as_deref(), Some("xfs"));
        assert_eq!(spec.accessibility.nodes, vec!["n2".to_string()]);
        assert_eq!(spec.pvc_name.as_deref(), Some("data"));
        assert_eq!(spec.replica_number, 1);

        let block = volume_spec(&create("pvc-2", &[], vec![block_cap(w)], 1)).expect("block");
        assert_eq!(
            (block.fs_type, block.required_capacity_bytes),
            (None, 4 << 20)
        );
        let ext4 = volume_spec(&create(
            "pvc-3",
            &[("csi.storage.k8s.io/fstype", "ext4")],
            vec![mount_cap("", w)],
            1,
        ))
        .expect("ext4");
        assert_eq!(ext4.fs_type.as_deref(), Some("ext4"));
    }

    #[test]
    fn invalid_create_requests_are_refused_with_the_right_code() {
        let w = Mode::SingleNodeWriter;
        let code = |r: CreateVolumeRequest| {
            volume_spec(&r)
                .err()
                .map(|s| (s.code(), s.message().to_string()))
        };
        let (c, m) = code(create("", &[], vec![mount_cap("", w)], 1)).expect("no name");
        assert_eq!((c, m.as_str()), (Code::InvalidArgument, "name is required"));
        assert_eq!(
            code(create("v", &[], vec![], 1)).map(|x| x.0),
            Some(Code::InvalidArgument)
        );
        let (c, m) = code(create(
            "v",
            &[("replicaNumber", "3")],
            vec![mount_cap("", w)],
            1,
        ))
        .expect("three replicas");
        assert_eq!(c, Code::InvalidArgument);
        assert!(
            m.contains("replicaNumber") && m.contains("two nodes"),
            "{m}"
        );
        let (c, m) = code(create(
            "v",
            &[("csi.storage.k8s.io/fstype", "ext4")],
            vec![mount_cap("xfs", w)],
            1,
        ))
        .expect("conflict");
        assert_eq!(c, Code::InvalidArgument);
        assert!(m.contains("csi.storage.k8s.io/fstype"), "{m}");
        assert_eq!(
            code(create(
                "v",
                &[("csi.storage.k8s.io/fstype", "xfs")],
                vec![block_cap(w)],
                1
            ))
            .map(|x| x.0),
            Some(Code::InvalidArgument)
        );
        assert_eq!(
            code(create(
                "v",
                &[],
                vec![mount_cap("", Mode::MultiNodeMultiWriter)],
                1
            ))
            .map(|x| x.0),
            Some(Code::InvalidArgument)
        );
        let mut small = create("v", &[], vec![mount_cap("xfs", w)], 1 << 20);
        small.capacity_range = Some(CapacityRange {
            required_bytes: 1 << 20,
            limit_bytes: 100 << 20,
        });
        let (c, m) = code(small).expect("below xfs floor");
        assert_eq!(c, Code::OutOfRange);
        assert!(m.contains("300Mi"), "{m}");
        let mut cloned = create("v", &[], vec![mount_cap("", w)], 1);
        cloned.volume_content_source = Some(VolumeContentSource::default());
        assert_eq!(
            content_source(&cloned).map_err(|e| e.code()),
            Err(Code::InvalidArgument)
        );
    }
}
