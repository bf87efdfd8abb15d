//! The mutual authentication that opens every connection.
//!
//! ```text
//! target → source  Hello{version, chunk size, operation, uid, volume, nodes, target nonce}
//! source           asks its Authorizer; derives the operation key from its node key and
//!                  the target node's published key
//! source → target  Challenge{source nonce, size, proof_S = HMAC(key, "source proof" ‖ T)}
//! target → source  Response{proof_T = HMAC(key, "target proof" ‖ T)}
//! ```
//!
//! `T` hashes the Hello and the Challenge, so each proof covers everything said and both
//! nonces. The target checks the source's proof first and answers only if it holds; either
//! side refuses with a Refused frame and a reason. Both then use the session key derived from
//! the operation key and `T`.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::auth::{Authorizer, CopyRequest, Grant, RefusalKind};
use crate::crypto::{self, CopyIdentity, SessionKey};
use crate::device::Device;
use crate::error::{MoverError, Role};
use crate::frame::{self, Challenge, Frame, FrameError, Hello, MAX_CONTROL_FRAME, MAX_STRING};
use crate::key::{NodeKey, PublicKey};
use crate::layout::{validate_chunk_size, Layout};
use crate::pool::BufferPool;

/// Sends a refusal (best effort: the peer may be gone) and makes the matching error.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(
    w: &mut W,
    peer: Role,
    kind: RefusalKind,
    message: String,
) -> MoverError {
    let frame = Frame::Refused {
        kind,
        message: message.clone(),
    };
    if frame::write_frame(w, &frame).await.is_ok() {
        let _ = w.flush().await;
    }
    MoverError::Refused {
        peer,
        kind,
        message,
    }
}

fn frame_error(peer: Role, error: FrameError) -> MoverError {
    MoverError::Frame { peer, error }
}

fn unexpected(peer: Role, frame: &Frame, wanted: &str) -> MoverError {
    MoverError::Protocol {
        peer,
        message: format!("sent {} where {wanted} was due", frame.name()),
    }
}

pub(crate) struct ClientSession {
    pub session: SessionKey,
    /// Bytes the source serves.
    pub size: u64,
}

/// The target's side.
pub(crate) async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: &NodeKey,
    source_key: &PublicKey,
    identity: &CopyIdentity,
    chunk_size: u32,
) -> Result<ClientSession, MoverError> {
    let key = crypto::operation_key(me, source_key, identity)?;
    let hello = Hello {
        chunk_size,
        identity: identity.clone(),
        nonce: crypto::random_nonce()?,
    };
    let io = |e| MoverError::io("sending the Hello", e);
    frame::write_frame(stream, &Frame::Hello(hello.clone()))
        .await
        .map_err(io)?;
    stream.flush().await.map_err(io)?;
    let pool = BufferPool::new(0);
    let (answer, _) = frame::read_frame(stream, MAX_CONTROL_FRAME, &pool)
        .await
        .map_err(|e| frame_error(Role::Source, e))?;
    let challenge = match answer {
        Frame::Challenge(c) => c,
        Frame::Refused { kind, message } => {
            return Err(MoverError::RefusedByPeer {
                peer: Role::Source,
                kind,
                message,
            })
        }
        other => return Err(unexpected(Role::Source, &other, "a Challenge")),
    };
    let transcript = crypto::transcript(
        &frame::hello_body(&hello),
        &frame::challenge_signed(&challenge.nonce, challenge.size),
    );
    if !key.verify_proof(Role::Source, &transcript, &challenge.proof) {
        let _ = refuse(
            stream,
            Role::Source,
            RefusalKind::Authentication,
            format!(
                "the source's proof for operation {:?} did not verify with target {:?}'s key",
                identity.operation, identity.target_node
            ),
        )
        .await;
        return Err(MoverError::Authentication { peer: Role::Source });
    }
    let response = Frame::Response {
        proof: key.proof(Role::Target, &transcript),
    };
    let io = |e| MoverError::io("sending the Response", e);
    frame::write_frame(stream, &response).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    Ok(ClientSession {
        session: key.session(&transcript),
        size: challenge.size,
    })
}

pub(crate) struct ServerSession {
    pub session: SessionKey,
    pub identity: CopyIdentity,
    pub device: Device,
    pub layout: Layout,
}

/// Checks a Hello against its grant, naming the first difference.
fn check_grant(hello: &Hello, grant: &Grant) -> Result<(), (RefusalKind, String)> {
    let id = &hello.identity;
    if id.uid != grant.uid {
        return Err((
            RefusalKind::UidMismatch,
            // The operation's own uid is not told to a peer not yet authenticated.
            format!(
                "operation {:?} does not have uid {:?} (recreated since?)",
                id.operation, id.uid
            ),
        ));
    }
    if id.volume != grant.volume {
        return Err((
            RefusalKind::WrongCopy,
            format!(
                "operation {:?} copies volume {:?}, not {:?}",
                id.operation, grant.volume, id.volume
            ),
        ));
    }
    if id.target_node != grant.target_node {
        return Err((
            RefusalKind::WrongCopy,
            format!(
                "operation {:?} copies to node {:?}, not {:?}",
                id.operation, grant.target_node, id.target_node
            ),
        ));
    }
    Ok(())
}

/// The source's side. Every refusal is sent to the target with its reason before returning.
pub(crate) async fn server<S: AsyncRead + AsyncWrite + Unpin, A: Authorizer>(
    stream: &mut S,
    me: &NodeKey,
    node: &str,
    authorizer: &A,
    peer_addr: SocketAddr,
) -> Result<ServerSession, MoverError> {
    let pool = BufferPool::new(0);
    let hello = match frame::read_frame(stream, MAX_CONTROL_FRAME, &pool).await {
        Ok((Frame::Hello(hello), _)) => hello,
        Ok((other, _)) => {
            let e = unexpected(Role::Target, &other, "a Hello");
            return Err(refuse(stream, Role::Target, RefusalKind::Protocol, e.to_string()).await);
        }
        Err(FrameError::UnsupportedVersion { theirs }) => {
            let message = format!(
                "the source speaks mover protocol version {}, the target {theirs}",
                frame::PROTOCOL_VERSION
            );
            return Err(refuse(
                stream,
                Role::Target,
                RefusalKind::UnsupportedVersion,
                message,
            )
            .await);
        }
        Err(e) => return Err(frame_error(Role::Target, e)),
    };
    let decision = async {
        if validate_chunk_size(hello.chunk_size).is_err() {
            return Err((
                RefusalKind::InvalidRequest,
                format!(
                    "chunk size {} is not a multiple of 4 KiB between 4 KiB and 64 MiB",
                    hello.chunk_size
                ),
            ));
        }
        if hello.identity.source_node != node {
            return Err((
                RefusalKind::WrongCopy,
                format!(
                    "this is node {node:?}, not the source {:?}",
                    hello.identity.source_node
                ),
            ));
        }
        let request = CopyRequest {
            identity: hello.identity.clone(),
            chunk_size: hello.chunk_size,
            peer_addr,
        };
        let grant = authorizer
            .authorize(&request)
            .await
            .map_err(|r| (r.kind, r.message))?;
        check_grant(&hello, &grant)?;
        let path = grant.device.clone();
        let device = tokio::task::spawn_blocking(move || Device::open_source(&path))
            .await
            .map_err(|e| (RefusalKind::Device, e.to_string()))?
            .map_err(|e| {
                (
                    RefusalKind::Device,
                    format!("opening {}: {e}", grant.device.display()),
                )
            })?;
        let size = match grant.size {
            Some(size) if size > device.size() => {
                return Err((
                    RefusalKind::Device,
                    format!(
                        "{} holds {} bytes, the copy needs {size}",
                        grant.device.display(),
                        device.size()
                    ),
                ))
            }
            Some(size) => size,
            None => device.size(),
        };
        if size == 0 {
            return Err((
                RefusalKind::EmptySource,
                format!("{} is empty", grant.device.display()),
            ));
        }
        let key = crypto::operation_key(me, &grant.target_key, &hello.identity)
            .map_err(|e| (RefusalKind::Authentication, e.to_string()))?;
        Ok((device, size, key))
    };
    let (device, size, key) = match decision.await {
        Ok(accepted) => accepted,
        Err((kind, message)) => {
            return Err(refuse(stream, Role::Target, kind, message).await);
        }
    };
    let nonce = crypto::random_nonce()?;
    let transcript = crypto::transcript(
        &frame::hello_body(&hello),
        &frame::challenge_signed(&nonce, size),
    );
    let challenge = Frame::Challenge(Challenge {
        nonce,
        size,
        proof: key.proof(Role::Source, &transcript),
    });
    let io = |e| MoverError::io("sending the Challenge", e);
    frame::write_frame(stream, &challenge).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let proof = match frame::read_frame(stream, MAX_CONTROL_FRAME, &pool).await {
        Ok((Frame::Response { proof }, _)) => proof,
        Ok((Frame::Refused { kind, message }, _)) => {
            return Err(MoverError::RefusedByPeer {
                peer: Role::Target,
                kind,
                message,
            })
        }
        Ok((other, _)) => return Err(unexpected(Role::Target, &other, "a Response")),
        Err(e) => return Err(frame_error(Role::Target, e)),
    };
    if !key.verify_proof(Role::Target, &transcript, &proof) {
        let message = format!(
            "the target's proof for operation {:?} did not verify with node {:?}'s key",
            hello.identity.operation, hello.identity.target_node
        );
        let _ = refuse(stream, Role::Target, RefusalKind::Authentication, message).await;
        return Err(MoverError::Authentication { peer: Role::Target });
    }
    Ok(ServerSession {
        session: key.session(&transcript),
        identity: hello.identity,
        device,
        layout: Layout {
            size,
            chunk_size: hello.chunk_size,
        },
    })
}

/// Checks that `identity`'s strings fit in a Hello.
pub(crate) fn check_identity(identity: &CopyIdentity) -> Result<(), MoverError> {
    for (name, value) in [
        ("operation", &identity.operation),
        ("uid", &identity.uid),
        ("volume", &identity.volume),
        ("source node", &identity.source_node),
        ("target node", &identity.target_node),
    ] {
        if value.is_empty() || value.len() > MAX_STRING {
            return Err(MoverError::InvalidConfig(format!(
                "{name} must be 1 to {MAX_STRING} bytes, is {}",
                value.len()
            )));
        }
    }
    Ok(())
}
