//! The source side: one server per agent, on one port, serving every copy that reads from
//! this node. It keeps no state between connections: the target says where to start.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authorizer, RefusalKind};
use crate::crypto::{CopyIdentity, SessionKey};
use crate::device::Device;
use crate::digest::{self, Digest};
use crate::error::{MoverError, Role};
use crate::frame::{self, Frame, FrameError, MAX_CONTROL_FRAME};
use crate::handshake;
use crate::key::{NodeKey, PublicKey};
use crate::layout::Layout;
use crate::pool::BufferPool;
use crate::ratelimit::TokenBucket;
use crate::task::{AbortOnDrop, StopOnDrop};

/// Faults a test can inject into a server. Never set outside tests.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    /// Flip one byte of this chunk's data after its digest and tag were computed (as a
    /// broken NIC or a bad memory bit would): the target must detect it and have it sent
    /// again.
    pub corrupt_chunk: Option<u64>,
    /// How many times the chunk is damaged, counted over all connections of this server;
    /// 0 means once.
    pub corrupt_times: u32,
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Chunks read and digested ahead of the socket, per connection.
    pub read_ahead: usize,
    /// Connections served at once; more are refused as busy (the target retries).
    pub max_connections: usize,
    /// Time a new connection has to complete the handshake.
    pub handshake_timeout: Duration,
    /// A connection with nothing to stream and no digest pass running is closed after this
    /// long without a request.
    pub idle_timeout: Duration,
    /// A write to a target that stopped reading fails after this long.
    pub write_timeout: Duration,
    /// Sent when nothing else was for this long, so the target can tell a slow source (a long
    /// digest pass, a low rate limit) from a dead one.
    pub keepalive_interval: Duration,
    pub fault: FaultInjection,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            read_ahead: 4,
            max_connections: 16,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(5),
            fault: FaultInjection::default(),
        }
    }
}

/// What one connection did.
#[derive(Clone, Debug)]
pub struct Served {
    pub identity: CopyIdentity,
    pub peer: SocketAddr,
    pub chunks_sent: u64,
    pub zero_chunks: u64,
    pub bytes_sent: u64,
    /// Streams restarted at the target's request (damaged chunks).
    pub restarts: u64,
    /// The device digest sent, if the target asked for verification.
    pub digest: Option<Digest>,
}

/// The block mover's server.
pub struct Server<A> {
    inner: Arc<Inner<A>>,
}

impl<A> Clone for Server<A> {
    fn clone(&self) -> Self {
        Server {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<A> {
    node: String,
    key: Arc<NodeKey>,
    authorizer: A,
    options: ServerOptions,
    slots: Arc<Semaphore>,
    corrupted: AtomicU32,
}

impl<A: Authorizer> Server<A> {
    /// A server for node `node` (the name targets put in their Hello as the source).
    pub fn new(
        node: impl Into<String>,
        key: Arc<NodeKey>,
        authorizer: A,
        options: ServerOptions,
    ) -> Self {
        Server {
            inner: Arc::new(Inner {
                node: node.into(),
                key,
                slots: Arc::new(Semaphore::new(options.max_connections.max(1))),
                authorizer,
                options,
                corrupted: AtomicU32::new(0),
            }),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.inner.key.public_key()
    }

    /// Serves connections from `listener` until `shutdown` is cancelled; then every
    /// connection is dropped at once (targets resume from their checkpoints).
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let server = self.clone();
                        connections.spawn(async move { server.serve_logged(stream, peer).await });
                    }
                    Err(e) => {
                        // Out of descriptors or similar: pause instead of spinning.
                        tracing::warn!(error = %e, "mover: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        connections.shutdown().await;
    }

    async fn serve_logged(&self, stream: TcpStream, peer: SocketAddr) {
        match self.serve_connection(stream).await {
            Ok(served) => tracing::info!(
                %peer, operation = %served.identity.operation, volume = %served.identity.volume,
                chunks = served.chunks_sent, zero_chunks = served.zero_chunks,
                bytes = served.bytes_sent, restarts = served.restarts,
                digest = ?served.digest.map(|d| d.to_hex()), "mover: connection done"),
            Err(e) => tracing::warn!(%peer, error = %e, "mover: connection failed"),
        }
    }

    /// Serves one connection: handshake, then chunks as the target asks, then the digest.
    pub async fn serve_connection(&self, mut stream: TcpStream) -> Result<Served, MoverError> {
        let peer = stream
            .peer_addr()
            .map_err(|e| MoverError::io("peer address", e))?;
        let _ = stream.set_nodelay(true);
        let Ok(_slot) = self.inner.slots.clone().try_acquire_owned() else {
            let message = format!(
                "serving {} connections already",
                self.inner.options.max_connections
            );
            return Err(
                handshake::refuse(&mut stream, Role::Target, RefusalKind::Busy, message).await,
            );
        };
        let inner = &self.inner;
        let session = timeout(
            inner.options.handshake_timeout,
            handshake::server(
                &mut stream,
                &inner.key,
                &inner.node,
                &inner.authorizer,
                peer,
            ),
        )
        .await
        .map_err(|_| MoverError::Timeout {
            peer: Role::Target,
            what: "handshake",
            after: inner.options.handshake_timeout,
        })??;
        tracing::debug!(%peer, operation = %session.identity.operation, "mover: target authenticated");
        let (read, write) = stream.into_split();
        let mut connection = Connection {
            served: Served {
                identity: session.identity.clone(),
                peer,
                chunks_sent: 0,
                zero_chunks: 0,
                bytes_sent: 0,
                restarts: 0,
                digest: None,
            },
            session: session.session,
            device: Arc::new(session.device),
            layout: session.layout,
            out: BufWriter::with_capacity(256 * 1024, write),
            pool: BufferPool::new(inner.options.read_ahead + 2),
            options: &inner.options,
            corrupted: &inner.corrupted,
            epoch: 0,
            bucket: None,
            last_write: Instant::now(),
        };
        connection.run(read).await?;
        Ok(connection.served)
    }
}

/// A chunk read (and digested) ahead of the socket.
enum Prepared {
    Data {
        index: u64,
        digest: [u8; 32],
        buf: Vec<u8>,
    },
    Zero {
        index: u64,
    },
    End,
    Failed(io::Error),
}

/// The chunks of one epoch, read by a blocking thread.
struct Stream {
    epoch: u32,
    chunks: mpsc::Receiver<Prepared>,
    _stop: StopOnDrop,
}

/// Reads chunks `from..` in order, sending each ready for the wire; stops when the stream
/// is replaced or the connection ends.
fn read_ahead(
    device: Arc<Device>,
    layout: Layout,
    from: u64,
    tx: mpsc::Sender<Prepared>,
    pool: BufferPool,
    stop: Arc<AtomicBool>,
) {
    for index in from..layout.total_chunks() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut buf = pool.take(layout.chunk_len(index));
        let item = match device.read_at(&mut buf, layout.offset(index)) {
            Err(e) => Prepared::Failed(e),
            Ok(()) if digest::is_zero(&buf) => {
                pool.put(buf);
                Prepared::Zero { index }
            }
            Ok(()) => Prepared::Data {
                index,
                digest: digest::chunk_digest(&buf),
                buf,
            },
        };
        let failed = matches!(item, Prepared::Failed(_));
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    }
    let _ = tx.blocking_send(Prepared::End);
}

struct Connection<'a> {
    served: Served,
    session: SessionKey,
    device: Arc<Device>,
    layout: Layout,
    out: BufWriter<OwnedWriteHalf>,
    pool: BufferPool,
    options: &'a ServerOptions,
    corrupted: &'a AtomicU32,
    /// The newest epoch the target asked for.
    epoch: u32,
    bucket: Option<TokenBucket>,
    last_write: Instant,
}

async fn next_chunk(stream: &mut Option<Stream>) -> Option<Prepared> {
    match stream {
        Some(s) => s.chunks.recv().await,
        None => std::future::pending().await,
    }
}

async fn digest_done(
    task: &mut Option<(JoinHandle<io::Result<Digest>>, StopOnDrop)>,
) -> io::Result<Digest> {
    match task {
        Some((handle, _)) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        },
        None => std::future::pending().await,
    }
}

/// Reads the target's frames in a task of their own: a read cut short by `select!` would
/// lose the frame's bytes.
async fn read_requests(read: OwnedReadHalf, tx: mpsc::Sender<Result<Frame, FrameError>>) {
    let mut read = BufReader::new(read);
    let pool = BufferPool::new(0);
    loop {
        let frame = frame::read_frame(&mut read, MAX_CONTROL_FRAME, &pool)
            .await
            .map(|(f, _)| f);
        let last = frame.is_err();
        if tx.send(frame).await.is_err() || last {
            return;
        }
    }
}

impl Connection<'_> {
    async fn run(&mut self, read: OwnedReadHalf) -> Result<(), MoverError> {
        let (tx, mut requests) = mpsc::channel(4);
        let _reader = AbortOnDrop(tokio::spawn(read_requests(read, tx)));
        let mut stream: Option<Stream> = None;
        let mut digest_pass = None;
        // Idle: no stream and no digest pass, since the later of the last request and the
        // end of the last work (a long copy's last request is its first).
        let mut idle_since = Instant::now();
        loop {
            let idle = stream.is_none() && digest_pass.is_none();
            let idle_deadline = idle_since + self.options.idle_timeout;
            let keepalive_at = self.last_write + self.options.keepalive_interval;
            tokio::select! {
                request = requests.recv() => {
                    idle_since = Instant::now();
                    let request = match request {
                        Some(Ok(frame)) => frame,
                        // The target hung up: after a verification, or to resume later.
                        Some(Err(FrameError::Closed)) | None => return Ok(()),
                        Some(Err(error)) => return Err(MoverError::Frame { peer: Role::Target, error }),
                    };
                    match request {
                        Frame::Range { epoch, from_chunk, rate, tag } => {
                            stream = Some(self.start_stream(epoch, from_chunk, rate, &tag)?);
                        }
                        Frame::Verify { tag } => {
                            if !self.session.verify(b"verify", &[], &tag) {
                                return Err(self.bad_tag("Verify"));
                            }
                            let stop = StopOnDrop::new();
                            let (device, layout, flag) = (self.device.clone(), self.layout, stop.flag());
                            let handle = tokio::task::spawn_blocking(move || digest::digest_device(&device, layout, &flag));
                            digest_pass = Some((handle, stop));
                        }
                        Frame::Refused { kind, message } => {
                            return Err(MoverError::RefusedByPeer { peer: Role::Target, kind, message });
                        }
                        other => {
                            return Err(MoverError::Protocol {
                                peer: Role::Target,
                                message: format!("sent {} during a copy", other.name()),
                            });
                        }
                    }
                }
                chunk = next_chunk(&mut stream) => {
                    let epoch = stream.as_ref().map_or(0, |s| s.epoch);
                    let more = match chunk {
                        Some(chunk) => self.send_chunk(epoch, chunk).await?,
                        None => false,
                    };
                    if !more {
                        stream = None;
                        idle_since = Instant::now();
                    }
                    if stream.as_ref().is_none_or(|s| s.chunks.is_empty()) {
                        self.flush().await?;
                    }
                }
                digest = digest_done(&mut digest_pass) => {
                    digest_pass = None;
                    idle_since = Instant::now();
                    let digest = match digest {
                        Ok(digest) => digest,
                        Err(e) => {
                            let message = format!("reading {} for the digest: {e}", self.device.path().display());
                            return Err(handshake::refuse(&mut self.out, Role::Target, RefusalKind::Device, message).await);
                        }
                    };
                    let tag = self.session.tag(b"digest", &[&digest.0]);
                    self.write(&Frame::Digest { value: digest.0, tag }).await?;
                    self.flush().await?;
                    self.served.digest = Some(digest);
                }
                _ = tokio::time::sleep_until(keepalive_at.into()) => {
                    self.write(&Frame::KeepAlive).await?;
                    self.flush().await?;
                }
                _ = tokio::time::sleep_until(idle_deadline.into()), if idle => {
                    return Err(MoverError::Timeout {
                        peer: Role::Target,
                        what: "waiting for the target's next request",
                        after: self.options.idle_timeout,
                    });
                }
            }
        }
    }

    fn bad_tag(&self, frame: &str) -> MoverError {
        MoverError::Protocol {
            peer: Role::Target,
            message: format!("a {frame} frame's tag did not verify"),
        }
    }

    /// Starts streaming from `from` in a new epoch, replacing any running stream (its
    /// chunks still in flight carry the old epoch, which the target drops).
    fn start_stream(
        &mut self,
        epoch: u32,
        from: u64,
        rate: u64,
        tag: &[u8; 32],
    ) -> Result<Stream, MoverError> {
        if !self.session.verify(
            b"range",
            &[
                &epoch.to_be_bytes(),
                &from.to_be_bytes(),
                &rate.to_be_bytes(),
            ],
            tag,
        ) {
            return Err(self.bad_tag("Range"));
        }
        let total = self.layout.total_chunks();
        if epoch <= self.epoch || from > total {
            return Err(MoverError::Protocol {
                peer: Role::Target,
                message: format!(
                    "asked for chunks from {from} of {total} in epoch {epoch} after epoch {}",
                    self.epoch
                ),
            });
        }
        if self.epoch > 0 {
            self.served.restarts += 1;
        }
        tracing::debug!(peer = %self.served.peer, epoch, from, rate, "mover: streaming");
        self.epoch = epoch;
        self.bucket = (rate > 0).then(|| TokenBucket::new(rate, Instant::now()));
        let (tx, rx) = mpsc::channel(self.options.read_ahead.max(1));
        let stop = StopOnDrop::new();
        let (device, layout, pool, flag) = (
            self.device.clone(),
            self.layout,
            self.pool.clone(),
            stop.flag(),
        );
        tokio::task::spawn_blocking(move || read_ahead(device, layout, from, tx, pool, flag));
        Ok(Stream {
            epoch,
            chunks: rx,
            _stop: stop,
        })
    }

    /// Sends one prepared chunk; false once the stream ended.
    async fn send_chunk(&mut self, epoch: u32, chunk: Prepared) -> Result<bool, MoverError> {
        let e = epoch.to_be_bytes();
        match chunk {
            Prepared::Data {
                index,
                digest,
                mut buf,
            } => {
                let tag = self
                    .session
                    .tag(b"chunk", &[&e, &index.to_be_bytes(), &digest]);
                let mut header = Vec::with_capacity(frame::CHUNK_HEADER_LEN + 4);
                frame::encode_chunk_header(&mut header, epoch, index, &digest, &tag, buf.len());
                let fault = &self.options.fault;
                if fault.corrupt_chunk == Some(index)
                    && self.corrupted.fetch_add(1, Ordering::Relaxed) < fault.corrupt_times.max(1)
                {
                    let middle = buf.len() / 2;
                    buf[middle] ^= 0x01;
                    tracing::warn!(index, "mover: fault injection corrupted a chunk in flight");
                }
                self.pace(header.len() + buf.len()).await;
                let written = self.write_parts(&header, &buf).await;
                self.pool.put(buf);
                written?;
                self.served.chunks_sent += 1;
                Ok(true)
            }
            Prepared::Zero { index } => {
                let tag = self.session.tag(b"zero", &[&e, &index.to_be_bytes()]);
                let frame = Frame::Zero { epoch, index, tag };
                self.pace(frame::CHUNK_HEADER_LEN).await;
                self.write(&frame).await?;
                self.served.zero_chunks += 1;
                Ok(true)
            }
            Prepared::End => {
                let total = self.layout.total_chunks();
                let tag = self.session.tag(b"end", &[&e, &total.to_be_bytes()]);
                self.write(&Frame::End {
                    epoch,
                    total_chunks: total,
                    tag,
                })
                .await?;
                Ok(false)
            }
            Prepared::Failed(e) => {
                let message = format!("reading {}: {e}", self.device.path().display());
                Err(
                    handshake::refuse(&mut self.out, Role::Target, RefusalKind::Device, message)
                        .await,
                )
            }
        }
    }

    /// Waits as long as the rate limit asks before `bytes` go out.
    async fn pace(&mut self, bytes: usize) {
        if let Some(bucket) = &mut self.bucket {
            let wait = bucket.take(bytes as u64, Instant::now());
            if !wait.is_zero() {
                // Whatever is buffered goes out before the pause, not after it.
                let _ = self.out.flush().await;
                tokio::time::sleep(wait).await;
            }
        }
    }

    fn timed<T>(
        &self,
        what: &'static str,
        result: Result<io::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, MoverError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(MoverError::io(format!("{what} to {}", self.served.peer), e)),
            Err(_) => Err(MoverError::Timeout {
                peer: Role::Target,
                what,
                after: self.options.write_timeout,
            }),
        }
    }

    async fn write_parts(&mut self, header: &[u8], data: &[u8]) -> Result<(), MoverError> {
        let result = timeout(self.options.write_timeout, async {
            self.out.write_all(header).await?;
            self.out.write_all(data).await
        })
        .await;
        self.timed("sending a chunk", result)?;
        self.served.bytes_sent += (header.len() + data.len()) as u64;
        self.last_write = Instant::now();
        Ok(())
    }

    async fn write(&mut self, frame: &Frame) -> Result<(), MoverError> {
        let result = timeout(
            self.options.write_timeout,
            frame::write_frame(&mut self.out, frame),
        )
        .await;
        let n = self.timed("sending a frame", result)?;
        self.served.bytes_sent += n as u64;
        self.last_write = Instant::now();
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), MoverError> {
        let result = timeout(self.options.write_timeout, self.out.flush()).await;
        self.timed("flushing", result)
    }
}
