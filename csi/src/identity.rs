//! The CSI identity service: who the plugin is and what it offers.

use crate::csi::identity_server::Identity;
use crate::csi::*;
use hwameistor_api::CSI_DRIVER_NAME;
use std::collections::HashMap;
use tonic::{Request, Response, Status};

pub struct IdentityService {
    /// Whether this process serves the controller service too; the node plugin does not,
    /// and says so.
    controller: bool,
}

impl IdentityService {
    pub fn new(controller: bool) -> Self {
        IdentityService { controller }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: CSI_DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::service::Type as ServiceType;
        use plugin_capability::volume_expansion::Type as ExpansionType;
        let service = |t: ServiceType| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        let mut capabilities = vec![service(ServiceType::VolumeAccessibilityConstraints)];
        if self.controller {
            capabilities.insert(0, service(ServiceType::ControllerService));
        }
        // Filesystems grow while mounted (xfs_growfs, resize2fs).
        capabilities.push(PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: ExpansionType::Online as i32,
                },
            )),
        });
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
