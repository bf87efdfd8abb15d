//! Copies that must not happen: the wrong node, uid or operation, an agent's refusal, a
//! checkpoint of another copy, a peer of another protocol version. Nothing is written.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hwameistor_mover::{
    Authorizer, CancellationToken, Checkpoint, CheckpointError, CheckpointStore, CopyRequest,
    FileCheckpointStore, FrameError, Grant, MoverError, NodeKey, Refusal, RefusalKind, Role,
    Served, Server, ServerOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::*;

/// Serves exactly one connection and hands back the server's own result.
async fn serve_one<A: Authorizer>(
    server: Server<A>,
) -> std::io::Result<(std::net::SocketAddr, JoinHandle<Result<Served, MoverError>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| MoverError::Io {
            context: "accept".into(),
            source: e,
        })?;
        server.serve_connection(stream).await
    });
    Ok((addr, handle))
}

fn untouched(fx: &Fixture) -> TestResult {
    assert!(
        fx.target_bytes()?.iter().all(|&b| b == 0),
        "the target was written"
    );
    assert!(!fx.checkpoint.exists(), "a checkpoint was written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_nodes_key_cannot_fetch_the_copy() -> TestResult {
    let data = random_bytes(4 * CHUNK, 10);
    let fx = Fixture::new(&data)?;
    let intruder = Arc::new(NodeKey::generate()?);

    // The target node's name with another node's key.
    let (addr, served) = serve_one(fx.server(ServerOptions::default())).await?;
    let client = hwameistor_mover::Client::new(
        fx.config(addr),
        intruder.clone(),
        Arc::new(FileCheckpointStore::new(&fx.checkpoint)),
    )?;
    let result = client.run(CancellationToken::new()).await;
    assert!(
        matches!(
            result,
            Err(MoverError::Authentication { peer: Role::Source })
        ),
        "{result:?}"
    );
    let server_side = served.await?;
    assert!(
        matches!(
            server_side,
            Err(MoverError::RefusedByPeer {
                peer: Role::Target,
                kind: RefusalKind::Authentication,
                ..
            })
        ),
        "{server_side:?}"
    );
    untouched(&fx)?;

    // A server with another key than the one the target expects from the source.
    let impostor = Server::new(
        fx.identity.source_node.clone(),
        intruder,
        fx.authorizer(),
        ServerOptions::default(),
    );
    let (addr, served) = serve_one(impostor).await?;
    let result = fx.copy(fx.config(addr)).await;
    assert!(
        matches!(
            result,
            Err(MoverError::Authentication { peer: Role::Source })
        ),
        "{result:?}"
    );
    assert!(served.await?.is_err());
    untouched(&fx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_or_an_unknown_operation_is_refused_with_its_reason() -> TestResult {
    let data = random_bytes(4 * CHUNK, 11);
    let fx = Fixture::new(&data)?;

    let (addr, served) = serve_one(fx.server(ServerOptions::default())).await?;
    let mut config = fx.config(addr);
    config.identity.uid = "another-uid".into();
    let result = fx.copy(config).await;
    match &result {
        Err(MoverError::RefusedByPeer {
            peer: Role::Source,
            kind: RefusalKind::UidMismatch,
            message,
        }) => {
            assert!(message.contains("another-uid"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let server_side = served.await?;
    assert!(
        matches!(
            server_side,
            Err(MoverError::Refused {
                peer: Role::Target,
                kind: RefusalKind::UidMismatch,
                ..
            })
        ),
        "{server_side:?}"
    );

    let (addr, served) = serve_one(fx.server(ServerOptions::default())).await?;
    let mut config = fx.config(addr);
    config.identity.operation = "migrate-unknown".into();
    let result = fx.copy(config).await;
    assert!(
        matches!(
            result,
            Err(MoverError::RefusedByPeer {
                kind: RefusalKind::UnknownOperation,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(served.await?.is_err());

    // The right operation asked of the wrong node.
    let (addr, served) = serve_one(fx.server(ServerOptions::default())).await?;
    let mut config = fx.config(addr);
    config.identity.source_node = "node-c".into();
    let result = fx.copy(config).await;
    assert!(
        matches!(
            result,
            Err(MoverError::RefusedByPeer {
                kind: RefusalKind::WrongCopy,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(served.await?.is_err());
    untouched(&fx)
}

/// Refuses as "not ready" a given number of times, then for good with a reason.
struct Moody {
    not_ready: u32,
    asked: AtomicU32,
    grant: Option<Grant>,
}

impl Authorizer for Moody {
    async fn authorize(&self, _request: &CopyRequest) -> Result<Grant, Refusal> {
        let asked = self.asked.fetch_add(1, Ordering::SeqCst);
        if asked < self.not_ready {
            return Err(Refusal::new(
                RefusalKind::NotReady,
                "the volume is still being activated",
            ));
        }
        self.grant
            .clone()
            .ok_or_else(|| Refusal::new(RefusalKind::Denied, "node is in maintenance"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_refusal_ends_the_copy_unless_it_says_not_ready() -> TestResult {
    let data = random_bytes(4 * CHUNK, 12);
    let fx = Fixture::new(&data)?;
    let denying = Moody {
        not_ready: 0,
        asked: AtomicU32::new(0),
        grant: None,
    };
    let (addr, served) = serve_one(Server::new(
        "node-a",
        fx.source_key.clone(),
        denying,
        ServerOptions::default(),
    ))
    .await?;
    let result = fx.copy(fx.config(addr)).await;
    match &result {
        Err(MoverError::RefusedByPeer {
            kind: RefusalKind::Denied,
            message,
            ..
        }) => {
            assert!(message.contains("maintenance"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(served.await?.is_err());
    untouched(&fx)?;

    // Not ready twice, then granted: the target retries and copies.
    let slow = Moody {
        not_ready: 2,
        asked: AtomicU32::new(0),
        grant: Some(fx.grant()),
    };
    let server = Server::new(
        "node-a",
        fx.source_key.clone(),
        slow,
        ServerOptions::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let running = tokio::spawn(async move { server.serve(listener, token).await });
    let outcome = fx.copy(fx.config(addr)).await?;
    cancel.cancel();
    running.await?;
    assert!(fx.target_bytes()? == data);
    assert_eq!(outcome.resume_points, vec![0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_copy_is_refused() -> TestResult {
    let data = random_bytes(4 * CHUNK, 13);
    let fx = Fixture::new(&data)?;
    let store = FileCheckpointStore::new(&fx.checkpoint);
    let theirs = Checkpoint {
        operation: fx.identity.operation.clone(),
        uid: "an-earlier-operation-of-the-same-name".into(),
        volume: fx.identity.volume.clone(),
        chunk_size: CHUNK as u32,
        size: data.len() as u64,
        total_chunks: 4,
        next_chunk: 3,
    };
    store.save(&theirs)?;
    let server = fx.start(ServerOptions::default()).await?;
    let result = fx.copy(fx.config(server.addr)).await;
    assert!(
        matches!(
            result,
            Err(MoverError::Checkpoint(CheckpointError::Mismatch {
                field: "uid",
                ..
            }))
        ),
        "{result:?}"
    );
    // Another chunk size: the stored chunk indexes mean other offsets.
    let mut other_size = theirs.clone();
    other_size.uid = fx.identity.uid.clone();
    other_size.chunk_size = 2 * CHUNK as u32;
    other_size.total_chunks = 2;
    other_size.next_chunk = 1;
    store.save(&other_size)?;
    let result = fx.copy(fx.config(server.addr)).await;
    server.stop().await;
    assert!(
        matches!(
            result,
            Err(MoverError::Checkpoint(CheckpointError::Mismatch {
                field: "chunkSize",
                ..
            }))
        ),
        "{result:?}"
    );
    assert!(
        fx.target_bytes()?.iter().all(|&b| b == 0),
        "the target was written"
    );
    assert_eq!(
        store.load()?,
        Some(other_size),
        "the checkpoint was changed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_version_or_program_are_refused() -> TestResult {
    let fx = Fixture::new(&random_bytes(CHUNK, 14))?;
    // A Hello from a future version: the magic, then version 2, then whatever it says.
    let (addr, served) = serve_one(fx.server(ServerOptions::default())).await?;
    let mut stream = TcpStream::connect(addr).await?;
    let body = [&[1u8][..], b"HWMV", &2u16.to_be_bytes(), &[0xee; 40]].concat();
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    // A Refused frame (kind 4) with code 1, unsupported version, and a reason naming both.
    assert!(
        answer.len() > 7 && answer[4] == 4 && answer[5] == 1,
        "{answer:?}"
    );
    let reason = String::from_utf8_lossy(&answer[8..]);
    assert!(
        reason.contains("version 1") && reason.contains('2'),
        "{reason}"
    );
    let server_side = served.await?;
    assert!(
        matches!(
            server_side,
            Err(MoverError::Refused {
                kind: RefusalKind::UnsupportedVersion,
                ..
            })
        ),
        "{server_side:?}"
    );

    // Something else entirely (an HTTP client) is a framing error, and no allocation of the
    // size its first bytes would announce.
    let (addr, served) = serve_one(fx.server(ServerOptions::default())).await?;
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let server_side = served.await?;
    assert!(
        matches!(
            server_side,
            Err(MoverError::Frame {
                error: FrameError::TooLarge { .. },
                ..
            })
        ),
        "{server_side:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_source_is_waited_for_and_a_silent_peer_is_dropped() -> TestResult {
    let data = random_bytes(4 * CHUNK, 15);
    let fx = Fixture::new(&data)?;
    let options = ServerOptions {
        max_connections: 1,
        handshake_timeout: std::time::Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = fx.start(options).await?;
    // A peer that connects and says nothing holds the only slot until the handshake times out.
    let silent = TcpStream::connect(server.addr).await?;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut copy = fx.copy_in_background(fx.config(server.addr))?;
    let saw_busy = copy.progress.wait_for(|p| {
        p.last_error
            .as_deref()
            .is_some_and(|e| e.contains(&RefusalKind::Busy.to_string()))
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), saw_busy).await??;
    let outcome = copy.copy.await??;
    server.stop().await;
    drop(silent);
    assert!(fx.target_bytes()? == data);
    assert_eq!(outcome.resume_points, vec![0]);
    Ok(())
}
