//! The CSI controller service of `disk.hwameistor.io`: one whole disk per volume, as a
//! LocalDiskVolume.
//!
//! CreateVolume needs the node (a WaitForFirstConsumer StorageClass: the scheduler chose
//! it), writes the LocalDiskVolume and watches it until the controller bound a disk and the
//! node agent confirmed it (Ready), or until no disk fits (Pending): then the object is
//! removed again and the call answers ResourceExhausted with the reason, leaving nothing
//! behind. The volume's capacity is its disk's. DeleteVolume deletes the object and waits
//! while the agent wipes the disk and the controller gives it back; a wipe longer than the
//! call (a full wipe) answers Unavailable and the retry finds it further on.
//!
//! Capabilities: CREATE_DELETE_VOLUME and GET_CAPACITY. A disk is attached to its node for
//! good: there is nothing to publish (the CSIDriver says attachRequired: false).
//!
//! StorageClass parameters: `diskType` (`HDD`, `SSD`, `NVMe`; default `HDD`), `wipe`
//! (`signatures`, `full`: what is erased when the volume is deleted; default
//! `signatures`), and the sidecars' `csi.storage.k8s.io/` keys.

use crate::capability;
use crate::controller::{deadline, require};
use crate::csi::controller_server::Controller;
use crate::csi::*;
use crate::errors::{internal, invalid, kube_status, not_found};
use crate::topology;
use hwameistor_api::volume::ANNOTATION_CSI_NAME;
use hwameistor_api::{
    disk_unavailability, DiskType, DiskVolumeState, LocalDisk, LocalDiskVolume,
    LocalDiskVolumeSpec, WipePolicy,
};
use hwameistor_core::naming::{is_plain_volume_name, volume_object_name};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

pub use hwameistor_api::DISK_DRIVER_NAME;

const PARAM_DISK_TYPE: &str = "diskType";
const PARAM_WIPE: &str = "wipe";
const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";

/// A disk StorageClass's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskParams {
    pub disk_type: DiskType,
    pub wipe: WipePolicy,
    pub pvc_namespace: Option<String>,
    pub pvc_name: Option<String>,
}

/// Reads the parameters; an unknown key or value is refused naming it.
pub fn parse_params(params: &HashMap<String, String>) -> Result<DiskParams, Status> {
    let mut out = DiskParams {
        disk_type: DiskType::Hdd,
        wipe: WipePolicy::Signatures,
        pvc_namespace: None,
        pvc_name: None,
    };
    for (k, v) in params {
        match k.as_str() {
            PARAM_DISK_TYPE => {
                out.disk_type = DiskType::parse(v).ok_or_else(|| {
                    invalid(format!(
                        "parameter {PARAM_DISK_TYPE}={v:?}: use HDD, SSD or NVMe"
                    ))
                })?
            }
            PARAM_WIPE => {
                out.wipe = match v.to_ascii_lowercase().as_str() {
                    "signatures" => WipePolicy::Signatures,
                    "full" => WipePolicy::Full,
                    _ => {
                        return Err(invalid(format!(
                            "parameter {PARAM_WIPE}={v:?}: use signatures or full"
                        )))
                    }
                }
            }
            PVC_NAME => out.pvc_name = Some(v.clone()),
            PVC_NAMESPACE => out.pvc_namespace = Some(v.clone()),
            k if k.starts_with("csi.storage.k8s.io/") => {}
            other => {
                return Err(invalid(format!(
                    "unknown parameter {other:?} (a disk StorageClass takes {PARAM_DISK_TYPE} and {PARAM_WIPE})"
                )))
            }
        }
    }
    Ok(out)
}

/// The LocalDiskVolume a CreateVolume request asks for.
pub fn disk_volume_spec(req: &CreateVolumeRequest) -> Result<LocalDiskVolumeSpec, Status> {
    require("name", &req.name)?;
    if req.volume_capabilities.is_empty() {
        return Err(invalid("volume_capabilities are required"));
    }
    capability::check_all(&req.volume_capabilities)?;
    if req.volume_content_source.is_some() {
        return Err(invalid(
            "a disk volume cannot be created from a snapshot or another volume",
        ));
    }
    let p = parse_params(&req.parameters)?;
    let nodes = topology::candidate_nodes(req.accessibility_requirements.as_ref())?;
    let Some(node) = nodes.first() else {
        return Err(invalid(
            "a disk volume needs its node: use a StorageClass with volumeBindingMode WaitForFirstConsumer",
        ));
    };
    let range = req.capacity_range.clone().unwrap_or_default();
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(invalid("capacity_range must not be negative"));
    }
    if range.limit_bytes > 0 && range.limit_bytes < range.required_bytes {
        return Err(invalid(format!(
            "capacity_range: limit {} is below required {}",
            range.limit_bytes, range.required_bytes
        )));
    }
    Ok(LocalDiskVolumeSpec {
        node_name: node.clone(),
        disk_type: p.disk_type,
        required_capacity_bytes: range.required_bytes.max(1),
        max_capacity_bytes: (range.limit_bytes > 0).then_some(range.limit_bytes),
        pvc_namespace: p.pvc_namespace,
        pvc_name: p.pvc_name,
        wipe: p.wipe,
    })
}

/// The CSI volume of a Ready disk volume.
fn volume_message(v: &LocalDiskVolume) -> Volume {
    let st = v.status.clone().unwrap_or_default();
    Volume {
        capacity_bytes: st.capacity_bytes.unwrap_or(v.spec.required_capacity_bytes),
        volume_id: v.name_any(),
        // The node service reads the disk's stable path from here (nothing is published).
        volume_context: HashMap::from([
            (
                "diskType".to_string(),
                v.spec.disk_type.as_str().to_string(),
            ),
            (
                crate::PUBLISH_DEVICE_PATH.to_string(),
                st.device_path.clone().unwrap_or_default(),
            ),
        ]),
        content_source: None,
        accessible_topology: vec![topology::of_node(&v.spec.node_name)],
    }
}

pub struct DiskControllerService {
    client: Client,
    timeouts: crate::controller::Timeouts,
}

impl DiskControllerService {
    pub fn new(client: Client, timeouts: crate::controller::Timeouts) -> Self {
        DiskControllerService { client, timeouts }
    }

    fn api(&self) -> Api<LocalDiskVolume> {
        Api::all(self.client.clone())
    }

    async fn get(&self, name: &str) -> Result<Option<LocalDiskVolume>, Status> {
        if !is_plain_volume_name(name) {
            return Ok(None);
        }
        self.api()
            .get_opt(name)
            .await
            .map_err(|e| kube_status("reading LocalDiskVolume", e))
    }

    /// Waits until `name` is Ready (its volume), Pending (no disk: removed again,
    /// ResourceExhausted) or Failed; Unavailable when `limit` passes first.
    async fn wait_settled(&self, name: &str, limit: Duration) -> Result<LocalDiskVolume, Status> {
        let settled = |v: Option<&LocalDiskVolume>| {
            v.and_then(|v| v.status.as_ref()).is_some_and(|s| {
                matches!(
                    s.state,
                    Some(
                        DiskVolumeState::Ready | DiskVolumeState::Pending | DiskVolumeState::Failed
                    )
                )
            })
        };
        let v = match tokio::time::timeout(limit, await_condition(self.api(), name, settled)).await
        {
            Ok(Ok(Some(v))) => v,
            Ok(Ok(None)) => return Err(Status::new(Code::Aborted, "volume vanished; retry")),
            Ok(Err(e)) => return Err(Status::new(Code::Unavailable, e.to_string())),
            Err(_) => {
                return Err(Status::new(
                    Code::Unavailable,
                    format!("disk volume {name} is not bound yet; retry"),
                ))
            }
        };
        let st = v.status.clone().unwrap_or_default();
        match st.state {
            Some(DiskVolumeState::Ready) => Ok(v),
            Some(DiskVolumeState::Pending) => {
                // Nothing is left behind: the next try (maybe on another node) starts clean.
                self.delete_and_wait(&v, limit).await?;
                Err(Status::new(
                    Code::ResourceExhausted,
                    st.message.unwrap_or_else(|| "no disk fits".into()),
                ))
            }
            _ => Err(internal(format!(
                "disk volume {name} failed: {}",
                st.message.unwrap_or_default()
            ))),
        }
    }

    async fn delete_and_wait(&self, v: &LocalDiskVolume, limit: Duration) -> Result<(), Status> {
        let name = v.name_any();
        match self.api().delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(kube_status("deleting LocalDiskVolume", e)),
        }
        let uid = v.uid().unwrap_or_default();
        match tokio::time::timeout(
            limit,
            await_condition(self.api(), &name, conditions::is_deleted(&uid)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Status::new(Code::Unavailable, e.to_string())),
            Err(_) => Err(Status::new(
                Code::Unavailable,
                format!("disk volume {name} is being wiped and given back; retry"),
            )),
        }
    }
}

#[tonic::async_trait]
impl Controller for DiskControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let limit = deadline(&request, self.timeouts.create);
        let req = request.into_inner();
        let spec = disk_volume_spec(&req)?;
        let name = volume_object_name(&req.name);
        // A volume of this name must ask for the same (a repeated call, or a concurrent one
        // that won the race).
        let compatible = |v: &LocalDiskVolume| {
            let same = v.spec.node_name == spec.node_name
                && v.spec.disk_type == spec.disk_type
                && v.spec.required_capacity_bytes == spec.required_capacity_bytes
                && v.spec.max_capacity_bytes == spec.max_capacity_bytes;
            if same {
                Ok(())
            } else {
                Err(Status::new(
                    Code::AlreadyExists,
                    format!("volume {} exists with another node, type or size", req.name),
                ))
            }
        };
        match self.get(&name).await? {
            Some(v) => compatible(&v)?,
            None => {
                let mut v = LocalDiskVolume::new(&name, spec.clone());
                if name != req.name {
                    v.metadata.annotations = Some(BTreeMap::from([(
                        ANNOTATION_CSI_NAME.to_string(),
                        req.name.clone(),
                    )]));
                }
                match self.api().create(&PostParams::default(), &v).await {
                    Ok(_) => {
                        tracing::info!(volume = %name, node = %spec.node_name, disk_type = %spec.disk_type, bytes = spec.required_capacity_bytes, "LocalDiskVolume created")
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        let existing = self
                            .get(&name)
                            .await?
                            .ok_or_else(|| Status::new(Code::Aborted, "volume vanished; retry"))?;
                        compatible(&existing)?;
                    }
                    Err(e) => return Err(kube_status("creating LocalDiskVolume", e)),
                }
            }
        }
        let v = self.wait_settled(&name, limit).await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume_message(&v)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let limit = deadline(&request, self.timeouts.delete);
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        let Some(v) = self.get(&req.volume_id).await? else {
            return Ok(Response::new(DeleteVolumeResponse {}));
        };
        self.delete_and_wait(&v, limit).await?;
        tracing::info!(volume = %req.volume_id, "LocalDiskVolume deleted; its disk wiped and given back");
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        require("volume_id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(invalid("volume_capabilities are required"));
        }
        if self.get(&req.volume_id).await?.is_none() {
            return Err(not_found(format!(
                "volume {} does not exist",
                req.volume_id
            )));
        }
        let confirmed = match capability::check_all(&req.volume_capabilities) {
            Ok(_) => Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: HashMap::new(),
            }),
            Err(_) => None,
        };
        let message = if confirmed.is_some() {
            String::new()
        } else {
            "a disk volume serves one node (SINGLE_NODE_WRITER or SINGLE_NODE_READER_ONLY), as a filesystem or a raw block device".into()
        };
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed,
            message,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        if !req.volume_capabilities.is_empty() {
            capability::check_all(&req.volume_capabilities)?;
        }
        let p = parse_params(&req.parameters)?;
        let node = req
            .accessible_topology
            .as_ref()
            .map(|t| topology::node_of(t).ok_or(topology::NoNodeKey))
            .transpose()?;
        let disks: Vec<LocalDisk> = Api::<LocalDisk>::all(self.client.clone())
            .list(&match &node {
                Some(n) => ListParams::default().fields(&format!("spec.nodeName={n}")),
                None => ListParams::default(),
            })
            .await
            .map_err(|e| kube_status("listing LocalDisks", e))?
            .items;
        let (total, largest) = free_disks(&disks, p.disk_type);
        Ok(Response::new(GetCapacityResponse {
            available_capacity: total,
            // One volume is one disk: none larger than the largest free disk.
            maximum_volume_size: Some(largest),
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type;
        let capabilities = [Type::CreateDeleteVolume, Type::GetCapacity]
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

    async fn controller_publish_volume(
        &self,
        _request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(unoffered(
            "ControllerPublishVolume (a disk stays attached to its node)",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(unoffered("ControllerUnpublishVolume"))
    }

    async fn list_volumes(
        &self,
        _request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        Err(unoffered("ListVolumes"))
    }

    async fn controller_expand_volume(
        &self,
        _request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        Err(unoffered(
            "ControllerExpandVolume (a whole disk does not grow)",
        ))
    }

    async fn create_snapshot(
        &self,
        _request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        Err(unoffered("CreateSnapshot"))
    }

    async fn delete_snapshot(
        &self,
        _request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        Err(unoffered("DeleteSnapshot"))
    }

    async fn list_snapshots(
        &self,
        _request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Err(unoffered("ListSnapshots"))
    }

    async fn controller_get_volume(
        &self,
        _request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        Err(unoffered("ControllerGetVolume"))
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(unoffered("ControllerModifyVolume"))
    }
}

fn unoffered(what: &str) -> Status {
    Status::new(
        Code::Unimplemented,
        format!("{what} is not offered by {DISK_DRIVER_NAME}"),
    )
}

/// Room for new disk volumes of `disk_type` among `disks`: the sum of the free ones (by the
/// one eligibility rule) and the largest. Pure.
pub fn free_disks(disks: &[LocalDisk], disk_type: DiskType) -> (i64, i64) {
    disks
        .iter()
        .filter(|d| d.status.as_ref().and_then(|s| s.disk_type) == Some(disk_type))
        .filter(|d| disk_unavailability(d).is_none())
        .filter_map(|d| d.status.as_ref().and_then(|s| s.capacity_bytes))
        .fold((0, 0), |(sum, max), c| (sum + c, max.max(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_read_and_unknown_ones_refused() {
        let p = parse_params(&params(&[
            ("diskType", "ssd"),
            ("wipe", "Full"),
            (PVC_NAME, "data"),
            (PVC_NAMESPACE, "db"),
            ("csi.storage.k8s.io/pv/name", "pv-1"),
        ]))
        .expect("params");
        assert_eq!(p.disk_type, DiskType::Ssd);
        assert_eq!(p.wipe, WipePolicy::Full);
        assert_eq!(p.pvc_name.as_deref(), Some("data"));
        let e = parse_params(&params(&[("poolClass", "HDD")])).unwrap_err();
        assert!(
            e.message().contains("unknown parameter \"poolClass\""),
            "{e}"
        );
        let e = parse_params(&params(&[("wipe", "shred")])).unwrap_err();
        assert!(e.message().contains("use signatures or full"), "{e}");
    }

    #[test]
    fn a_request_without_its_node_or_with_a_source_is_refused() {
        use crate::capability::tests::mount_cap;
        use crate::csi::volume_capability::access_mode::Mode;
        let mut req = CreateVolumeRequest {
            name: "pvc-1".into(),
            volume_capabilities: vec![mount_cap("xfs", Mode::SingleNodeWriter)],
            capacity_range: Some(CapacityRange {
                required_bytes: 10 << 30,
                limit_bytes: 20 << 30,
            }),
            ..Default::default()
        };
        let e = disk_volume_spec(&req).unwrap_err();
        assert!(e.message().contains("WaitForFirstConsumer"), "{e}");
        req.accessibility_requirements = Some(TopologyRequirement {
            requisite: vec![topology::of_node("n1")],
            preferred: vec![topology::of_node("n1")],
        });
        let spec = disk_volume_spec(&req).expect("spec");
        assert_eq!(spec.node_name, "n1");
        assert_eq!(spec.max_capacity_bytes, Some(20 << 30));
        req.volume_content_source = Some(VolumeContentSource::default());
        assert!(disk_volume_spec(&req).is_err());
    }
}
