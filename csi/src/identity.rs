//! The CSI identity service: who the plugin is, what it offers, and whether it is ready
//! (as the binary's [`ReadinessSource`] says).

use crate::csi::identity_server::Identity;
use crate::csi::*;
use crate::readiness::{Readiness, ReadinessSource};
use hwameistor_api::CSI_DRIVER_NAME;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

pub struct IdentityService {
    /// The driver's name (`lvm.hwameistor.io` or `disk.hwameistor.io`).
    name: &'static str,
    /// Whether this process serves the controller service too; the node plugin does not,
    /// and says so.
    controller: bool,
    readiness: Arc<dyn ReadinessSource>,
}

impl IdentityService {
    /// The identity of `lvm.hwameistor.io`.
    pub fn new(controller: bool, readiness: Arc<dyn ReadinessSource>) -> Self {
        Self::named(CSI_DRIVER_NAME, controller, readiness)
    }

    /// The identity of driver `name`.
    pub fn named(
        name: &'static str,
        controller: bool,
        readiness: Arc<dyn ReadinessSource>,
    ) -> Self {
        IdentityService {
            name,
            controller,
            readiness,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.to_string(),
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
        match self.readiness.readiness() {
            Readiness::Ready => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Readiness::Starting(why) => {
                tracing::debug!(%why, "probe: not ready yet");
                Ok(Response::new(ProbeResponse { ready: Some(false) }))
            }
            // The spec's code for "plugin not healthy" and "missing required dependency".
            Readiness::Unhealthy(why) => Err(Status::new(
                Code::FailedPrecondition,
                format!("not healthy: {why}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn probe_answers_what_the_source_says() {
        let now = Arc::new(Mutex::new(Readiness::Starting("API not reached".into())));
        let source = {
            let now = now.clone();
            move || now.lock().map(|r| r.clone()).unwrap_or(Readiness::Ready)
        };
        let svc = IdentityService::new(true, Arc::new(source));
        let probe = || async { svc.probe(Request::new(ProbeRequest {})).await };
        assert_eq!(
            probe().await.map(|r| r.into_inner().ready).ok(),
            Some(Some(false))
        );
        *now.lock().expect("lock") = Readiness::Ready;
        assert_eq!(
            probe().await.map(|r| r.into_inner().ready).ok(),
            Some(Some(true))
        );
        *now.lock().expect("lock") = Readiness::Unhealthy("LVM cannot be read".into());
        let err = probe().await.expect_err("unhealthy");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("LVM cannot be read"),
            "{}",
            err.message()
        );
    }
}
