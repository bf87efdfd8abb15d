//! Serving the CSI services on a Unix socket, the way the kubelet and sidecars reach them.

use crate::errors::ServeError;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

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

/// A Unix connection as tonic 0.5 wants it: with (empty) connection info.
pub struct UnixConnection(pub UnixStream);

impl Connected for UnixConnection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for UnixConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Binds the socket, replacing a stale one left by a previous run (the kubelet and the
/// sidecars reconnect to the path, so it must be reused).
pub fn listen(
    path: &Path,
) -> Result<impl Stream<Item = std::io::Result<UnixConnection>>, ServeError> {
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
    Ok(tokio_stream::wrappers::UnixListenerStream::new(listener).map(|c| c.map(UnixConnection)))
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
