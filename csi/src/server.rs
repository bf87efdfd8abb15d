//! Serving the CSI services on a Unix socket, the way the kubelet and sidecars reach them.

use crate::errors::ServeError;
use futures::Stream;
use std::future::Future;
use std::path::{Path, PathBuf};
use tokio::net::{UnixListener, UnixStream};

/// The socket path of a `unix:///path` endpoint (also `unix:/path` and a bare absolute path).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServeError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if path.starts_with('/') && path.len() > 1 {
        Ok(PathBuf::from(path))
    } else {
        Err(ServeError::Endpoint(endpoint.to_string()))
    }
}

/// Binds the socket, replacing a stale one left by a previous run (the kubelet and the
/// sidecars reconnect to the path, so it must be reused).
///
/// tonic's transport serves a tokio `UnixStream` as it is (it carries the peer's
/// credentials as connection info), so no wrapper is needed.
pub fn listen(path: &Path) -> Result<impl Stream<Item = std::io::Result<UnixStream>>, ServeError> {
    let err = |source| ServeError::Listen {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    Ok(tokio_stream::wrappers::UnixListenerStream::new(listener))
}

/// Which services a process serves.
pub struct Services {
    pub identity: crate::identity::IdentityService,
    pub controller: Option<crate::controller::ControllerService>,
    pub node: Option<crate::node::NodeService>,
}

/// Serves until `shutdown` completes.
pub async fn serve(
    endpoint: &str,
    services: Services,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    use crate::csi::{
        controller_server::ControllerServer, identity_server::IdentityServer,
        node_server::NodeServer,
    };
    let path = socket_path(endpoint)?;
    let incoming = listen(&path)?;
    tracing::info!(endpoint, "serving CSI");
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(services.identity))
        .add_optional_service(services.controller.map(ControllerServer::new))
        .add_optional_service(services.node.map(NodeServer::new));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Serves `disk.hwameistor.io`'s identity and controller service until `shutdown`
/// completes.
pub async fn serve_disk_controller(
    endpoint: &str,
    identity: crate::identity::IdentityService,
    controller: crate::disk_controller::DiskControllerService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    use crate::csi::{controller_server::ControllerServer, identity_server::IdentityServer};
    let path = socket_path(endpoint)?;
    let incoming = listen(&path)?;
    tracing::info!(endpoint, "serving CSI (disk.hwameistor.io)");
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_a_socket() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").ok(),
            Some(PathBuf::from("/csi/csi.sock"))
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").ok(),
            Some(PathBuf::from("/csi/csi.sock"))
        );
        assert_eq!(
            socket_path("/tmp/x.sock").ok(),
            Some(PathBuf::from("/tmp/x.sock"))
        );
        assert!(matches!(
            socket_path("tcp://127.0.0.1:1"),
            Err(ServeError::Endpoint(_))
        ));
        assert!(matches!(
            socket_path("unix://"),
            Err(ServeError::Endpoint(_))
        ));
        assert!(matches!(
            socket_path("unix://relative.sock"),
            Err(ServeError::Endpoint(_))
        ));
    }
}
