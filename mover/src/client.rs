//! The target side: connects to the source's server, receives the device into its own,
//! keeps the checkpoint and the progress, resumes after failures, and verifies the copy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::crypto::{CopyIdentity, SessionKey};
use crate::device::Device;
use crate::digest::{self, Digest};
use crate::error::{MoverError, Role};
use crate::frame::{self, Frame};
use crate::handshake;
use crate::key::{NodeKey, PublicKey};
use crate::layout::{validate_chunk_size, Layout, DEFAULT_CHUNK_SIZE};
use crate::pool::BufferPool;
use crate::progress::{self, Phase, Progress, RateWindow};
use crate::task::{AbortOnDrop, StopOnDrop};
use crate::writer::{SyncPolicy, TargetZeroed, WriteItem, Writer, WriterEvent};

/// How the target retries after a failure.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Failed attempts in a row without a chunk of progress before giving up; an attempt
    /// that moved the copy forward starts the count again, so a long copy over a flaky link
    /// is not given up while it advances.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_attempts: 10,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub identity: CopyIdentity,
    /// The source's mover endpoint, `address:port`.
    pub source_addr: String,
    /// The source node's published key.
    pub source_key: PublicKey,
    /// The target device (an existing block device or file, at least the source's size).
    pub target: PathBuf,
    pub target_zeroed: TargetZeroed,
    /// A multiple of 4 KiB between 4 KiB and 64 MiB; the checkpoint is bound to it.
    pub chunk_size: u32,
    /// Bytes per second the source may send; 0: unlimited.
    pub rate_limit: u64,
    /// The target syncs and records its checkpoint after this many bytes written...
    pub sync_every_bytes: u64,
    /// ...or this long, whichever comes first, and at the end.
    pub sync_every: Duration,
    pub retry: RetryPolicy,
    /// For connecting and for the handshake.
    pub connect_timeout: Duration,
    /// Silence from the source for this long (it sends keepalives) fails the connection.
    pub idle_timeout: Duration,
}

impl ClientConfig {
    pub fn new(
        identity: CopyIdentity,
        source_addr: impl Into<String>,
        source_key: PublicKey,
        target: impl Into<PathBuf>,
    ) -> Self {
        ClientConfig {
            identity,
            source_addr: source_addr.into(),
            source_key,
            target: target.into(),
            target_zeroed: TargetZeroed::No,
            chunk_size: DEFAULT_CHUNK_SIZE,
            rate_limit: 0,
            sync_every_bytes: 256 * 1024 * 1024,
            sync_every: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// A verified copy: the target's device equals the source's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The device digest both sides computed (BLAKE3 over the chunks' BLAKE3 digests).
    pub digest: Digest,
    /// The device's size.
    pub bytes: u64,
    /// Bytes of the frames received whole by this run, after the handshakes (a frame cut
    /// by a failure is not counted).
    pub bytes_on_wire: u64,
    pub zero_chunks: u64,
    pub resends: u64,
    pub resumes: u64,
    /// The chunk each connection of this run started from.
    pub resume_points: Vec<u64>,
    pub elapsed: Duration,
}

/// Counters of one run, across its connections.
#[derive(Default)]
struct RunStats {
    bytes_on_wire: u64,
    zero_chunks: u64,
    resends: u64,
    resumes: u64,
    resume_points: Vec<u64>,
    /// Chunks written by the current attempt (progress resets the retry count).
    chunks_this_attempt: u64,
}

/// Copies one volume to this node. One client per copy; `run` may be called again after it
/// returned (it resumes from the checkpoint).
pub struct Client {
    config: ClientConfig,
    key: Arc<NodeKey>,
    store: Arc<dyn CheckpointStore>,
    progress: watch::Sender<Progress>,
}

/// The frames the reader task forwards, each with its size on the wire.
type Incoming = Result<(Frame, usize), MoverError>;

impl Client {
    pub fn new(
        config: ClientConfig,
        key: Arc<NodeKey>,
        store: Arc<dyn CheckpointStore>,
    ) -> Result<Self, MoverError> {
        validate_chunk_size(config.chunk_size)?;
        handshake::check_identity(&config.identity)?;
        if config.retry.max_attempts == 0 {
            return Err(MoverError::InvalidConfig(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        Ok(Client {
            config,
            key,
            store,
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// The copy's progress, updated as chunks land.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Copies until the target is verified equal to the source, a failure no retry can cure,
    /// too many failures in a row, or `cancel`. A damaged chunk is sent again; a lost
    /// connection or a restarted source is resumed from the checkpoint.
    ///
    /// One run per copy at a time: two runs (or two agents) writing one target with one
    /// checkpoint would each record the other's progress as their own.
    pub async fn run(&self, cancel: CancellationToken) -> Result<Outcome, MoverError> {
        let start = Instant::now();
        let mut stats = RunStats::default();
        let mut failures = 0;
        let mut backoff = self.config.retry.initial_backoff;
        loop {
            if cancel.is_cancelled() {
                return Err(MoverError::Cancelled);
            }
            stats.chunks_this_attempt = 0;
            let mut writer = None;
            let result = tokio::select! {
                r = self.attempt(&mut stats, &mut writer) => r,
                _ = cancel.cancelled() => Err(MoverError::Cancelled),
            };
            // The writer keeps what it verified: wait until it synced and recorded it, so the
            // next attempt (or the next run) resumes after it and never races it.
            if let Some(handle) = writer {
                let _ = handle.await;
            }
            let error = match result {
                Ok(digest) => {
                    let outcome = Outcome {
                        digest,
                        bytes: self.progress.borrow().bytes_total,
                        bytes_on_wire: stats.bytes_on_wire,
                        zero_chunks: stats.zero_chunks,
                        resends: stats.resends,
                        resumes: stats.resumes,
                        resume_points: stats.resume_points,
                        elapsed: start.elapsed(),
                    };
                    self.progress.send_modify(|p| {
                        p.phase = Phase::Verified;
                        p.last_error = None;
                        p.eta = Some(Duration::ZERO);
                    });
                    return Ok(outcome);
                }
                Err(e) => e,
            };
            self.progress
                .send_modify(|p| p.last_error = Some(error.to_string()));
            if !error.is_retryable() || cancel.is_cancelled() {
                return Err(error);
            }
            if stats.chunks_this_attempt > 0 {
                failures = 0;
                backoff = self.config.retry.initial_backoff;
            }
            failures += 1;
            if failures >= self.config.retry.max_attempts {
                return Err(MoverError::GaveUp {
                    attempts: failures,
                    last: Box::new(error),
                });
            }
            tracing::warn!(operation = %self.config.identity.operation, error = %error,
                retry_in = ?backoff, "mover: copy interrupted, resuming");
            self.progress.send_modify(|p| p.phase = Phase::Retrying);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return Err(MoverError::Cancelled),
            }
            backoff = (backoff * 2).min(self.config.retry.max_backoff);
        }
    }

    /// One connection: handshake, stream from the checkpoint, verify.
    async fn attempt(
        &self,
        stats: &mut RunStats,
        writer_slot: &mut Option<JoinHandle<()>>,
    ) -> Result<Digest, MoverError> {
        let config = &self.config;
        self.progress.send_modify(|p| p.phase = Phase::Connecting);
        let connect = timeout(
            config.connect_timeout,
            TcpStream::connect(&config.source_addr),
        );
        let mut stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(MoverError::io(
                    format!("connecting to {}", config.source_addr),
                    e,
                ))
            }
            Err(_) => {
                return Err(MoverError::Timeout {
                    peer: Role::Source,
                    what: "connecting",
                    after: config.connect_timeout,
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let handshake = handshake::client(
            &mut stream,
            &self.key,
            &config.source_key,
            &config.identity,
            config.chunk_size,
        );
        let session = timeout(config.connect_timeout, handshake)
            .await
            .map_err(|_| MoverError::Timeout {
                peer: Role::Source,
                what: "handshake",
                after: config.connect_timeout,
            })??;
        let layout = Layout {
            size: session.size,
            chunk_size: config.chunk_size,
        };
        let (from, checkpoint, device) = self.prepare(layout).await?;
        if !stats.resume_points.is_empty() || from > 0 {
            stats.resumes += 1;
        }
        stats.resume_points.push(from);
        tracing::info!(operation = %config.identity.operation, from_chunk = from,
            chunks = layout.total_chunks(), "mover: copying");
        let done = layout.bytes_before(from);
        self.progress.send_modify(|p| {
            p.phase = Phase::Copying;
            p.bytes_total = layout.size;
            p.bytes_done = done;
            p.resumes = stats.resumes;
            p.bytes_per_second = None;
            p.eta = None;
        });

        let pool = BufferPool::new(8);
        let (read, write) = stream.into_split();
        let (frames_tx, mut frames) = mpsc::channel(2);
        let idle = self.idle_timeout();
        let max = frame::max_stream_frame(config.chunk_size);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(
            read,
            max,
            pool.clone(),
            idle,
            frames_tx,
        )));
        let mut out = BufWriter::new(write);

        let (items, items_rx) = mpsc::channel(4);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let writer = Writer {
            device: device.clone(),
            layout,
            next: from,
            zeroed: config.target_zeroed,
            store: self.store.clone(),
            checkpoint,
            sync: SyncPolicy {
                every_bytes: config.sync_every_bytes,
                every: config.sync_every,
            },
            pool: pool.clone(),
        };
        *writer_slot = Some(tokio::task::spawn_blocking(move || {
            writer.run(items_rx, events_tx)
        }));

        let mut receiver = Receiver {
            session: &session.session,
            layout,
            rate_limit: config.rate_limit,
            epoch: 1,
            expect: from,
            stats,
            progress: &self.progress,
            window: RateWindow::new(Duration::from_secs(10)),
            pool,
            damaged: (u64::MAX, 0),
        };
        receiver.request(&mut out, from).await?;
        receiver
            .receive(&mut out, &mut frames, items, &mut events)
            .await?;
        // Every chunk is written and synced: both sides now read their device back.
        self.progress.send_modify(|p| p.phase = Phase::Verifying);
        receiver.verify(&mut out, &mut frames, device).await
    }

    /// Checks the checkpoint and the target; returns the chunk to start from.
    async fn prepare(&self, layout: Layout) -> Result<(u64, Checkpoint, Arc<Device>), MoverError> {
        let id = &self.config.identity;
        let expected = Checkpoint {
            operation: id.operation.clone(),
            uid: id.uid.clone(),
            volume: id.volume.clone(),
            chunk_size: layout.chunk_size,
            size: layout.size,
            total_chunks: layout.total_chunks(),
            next_chunk: 0,
        };
        let store = self.store.clone();
        let target = self.config.target.clone();
        let blocking = tokio::task::spawn_blocking(move || {
            let from = match store.load()? {
                Some(stored) => {
                    stored.ensure_same_copy(&expected)?;
                    stored.next_chunk
                }
                None => 0,
            };
            let device = Device::open_target(&target)
                .map_err(|e| MoverError::io(format!("opening {}", target.display()), e))?;
            Ok::<_, MoverError>((from, expected, device))
        });
        let (from, checkpoint, device) = blocking
            .await
            .map_err(|e| MoverError::io("preparing the target", std::io::Error::other(e)))??;
        if device.size() < layout.size {
            return Err(MoverError::TargetTooSmall {
                target: device.size(),
                needed: layout.size,
            });
        }
        Ok((from, checkpoint, Arc::new(device)))
    }

    /// The source may legitimately be silent for a chunk's time at the rate limit.
    fn idle_timeout(&self) -> Duration {
        let c = &self.config;
        if c.rate_limit == 0 {
            return c.idle_timeout;
        }
        let per_chunk = f64::from(c.chunk_size) / c.rate_limit as f64;
        c.idle_timeout + Duration::from_secs_f64(2.0 * per_chunk)
    }
}

/// Reads the source's frames in a task of their own (a read cut short by `select!` would
/// lose bytes), failing on silence longer than `idle`.
async fn read_frames(
    read: OwnedReadHalf,
    max: usize,
    pool: BufferPool,
    idle: Duration,
    tx: mpsc::Sender<Incoming>,
) {
    let mut read = BufReader::with_capacity(256 * 1024, read);
    loop {
        let frame = match timeout(idle, frame::read_frame(&mut read, max, &pool)).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(error)) => Err(MoverError::Frame {
                peer: Role::Source,
                error,
            }),
            Err(_) => Err(MoverError::Timeout {
                peer: Role::Source,
                what: "receiving",
                after: idle,
            }),
        };
        let last = frame.is_err();
        if tx.send(frame).await.is_err() || last {
            return;
        }
    }
}

/// One connection's streaming state.
struct Receiver<'a> {
    session: &'a SessionKey,
    layout: Layout,
    rate_limit: u64,
    /// The epoch asked for last; frames of older ones are dropped.
    epoch: u32,
    /// The next chunk of the current epoch.
    expect: u64,
    stats: &'a mut RunStats,
    progress: &'a watch::Sender<Progress>,
    window: RateWindow,
    pool: BufferPool,
    /// The chunk that arrived damaged last and how many times in a row.
    damaged: (u64, u32),
}

/// Times one chunk is asked for again on one connection before the connection is given up.
const MAX_RESENDS: u32 = 3;

fn bad_tag(frame: &str, index: u64) -> MoverError {
    MoverError::Protocol {
        peer: Role::Source,
        message: format!("the tag of {frame} {index} did not verify"),
    }
}

impl Receiver<'_> {
    async fn send(
        &self,
        out: &mut BufWriter<OwnedWriteHalf>,
        frame: &Frame,
    ) -> Result<(), MoverError> {
        let io = |e| MoverError::io(format!("sending a {} frame", frame.name()), e);
        frame::write_frame(out, frame).await.map_err(io)?;
        out.flush().await.map_err(io)
    }

    /// Asks for the chunks from `from` in the current epoch.
    async fn request(
        &mut self,
        out: &mut BufWriter<OwnedWriteHalf>,
        from: u64,
    ) -> Result<(), MoverError> {
        let (e, f, r) = (
            self.epoch.to_be_bytes(),
            from.to_be_bytes(),
            self.rate_limit.to_be_bytes(),
        );
        let tag = self.session.tag(b"range", &[&e, &f, &r]);
        let frame = Frame::Range {
            epoch: self.epoch,
            from_chunk: from,
            rate: self.rate_limit,
            tag,
        };
        self.expect = from;
        self.send(out, &frame).await
    }

    /// Receives chunks and hands them to the writer until it reports the copy written.
    async fn receive(
        &mut self,
        out: &mut BufWriter<OwnedWriteHalf>,
        frames: &mut mpsc::Receiver<Incoming>,
        items: mpsc::Sender<WriteItem>,
        events: &mut mpsc::UnboundedReceiver<WriterEvent>,
    ) -> Result<(), MoverError> {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(WriterEvent::Written { bytes, zero }) => self.written(bytes, zero),
                    Some(WriterEvent::Damaged { epoch, index }) if epoch == self.epoch => {
                        self.damaged = match self.damaged {
                            (last, times) if last == index => (index, times + 1),
                            _ => (index, 1),
                        };
                        // A link that damages the same chunk every time will not heal by
                        // asking again; a new connection may take another path.
                        if self.damaged.1 > MAX_RESENDS {
                            return Err(MoverError::Damaged { index, times: self.damaged.1 });
                        }
                        self.stats.resends += 1;
                        self.progress.send_modify(|p| p.resends = self.stats.resends);
                        self.epoch += 1;
                        self.request(out, index).await?;
                    }
                    Some(WriterEvent::Damaged { .. }) => {}
                    Some(WriterEvent::Finished) => return Ok(()),
                    Some(WriterEvent::Failed(e)) => return Err(e),
                    None => return Err(MoverError::io("writing the target", std::io::Error::other("the writer stopped"))),
                },
                incoming = frames.recv() => {
                    let Some(incoming) = incoming else {
                        return Err(MoverError::Frame { peer: Role::Source, error: frame::FrameError::Closed });
                    };
                    let (frame, wire) = incoming?;
                    self.stats.bytes_on_wire += wire as u64;
                    if let Some(item) = self.accept(frame)? {
                        if items.send(item).await.is_err() {
                            // The writer stopped: its event says why.
                            return Err(match events.recv().await {
                                Some(WriterEvent::Failed(e)) => e,
                                _ => MoverError::io("writing the target", std::io::Error::other("the writer stopped")),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Checks a frame; returns what the writer must do with it.
    fn accept(&mut self, frame: Frame) -> Result<Option<WriteItem>, MoverError> {
        let epoch = match &frame {
            Frame::Chunk { epoch, .. } | Frame::Zero { epoch, .. } | Frame::End { epoch, .. } => {
                *epoch
            }
            Frame::KeepAlive => return Ok(None),
            Frame::Refused { kind, message } => {
                return Err(MoverError::RefusedByPeer {
                    peer: Role::Source,
                    kind: *kind,
                    message: message.clone(),
                });
            }
            other => {
                return Err(MoverError::Protocol {
                    peer: Role::Source,
                    message: format!("sent {} during the copy", other.name()),
                });
            }
        };
        if epoch < self.epoch {
            // Sent before the source saw the request for a new epoch.
            if let Frame::Chunk { payload, .. } = frame {
                self.pool.put(payload.into_buf());
            }
            return Ok(None);
        }
        if epoch > self.epoch {
            return Err(MoverError::Protocol {
                peer: Role::Source,
                message: format!("sent epoch {epoch}, asked for {}", self.epoch),
            });
        }
        let e = epoch.to_be_bytes();
        let item = match frame {
            Frame::Chunk {
                index,
                digest,
                tag,
                payload,
                ..
            } => {
                // A damaged header cannot be trusted to frame what follows: reconnect.
                if !self
                    .session
                    .verify(b"chunk", &[&e, &index.to_be_bytes(), &digest], &tag)
                {
                    return Err(bad_tag("chunk", index));
                }
                self.next_index(index)?;
                WriteItem::Data {
                    epoch,
                    index,
                    digest,
                    payload,
                }
            }
            Frame::Zero { index, tag, .. } => {
                if !self
                    .session
                    .verify(b"zero", &[&e, &index.to_be_bytes()], &tag)
                {
                    return Err(bad_tag("zero chunk", index));
                }
                self.next_index(index)?;
                WriteItem::Zero { epoch, index }
            }
            Frame::End {
                total_chunks, tag, ..
            } => {
                if !self
                    .session
                    .verify(b"end", &[&e, &total_chunks.to_be_bytes()], &tag)
                {
                    return Err(bad_tag("end", total_chunks));
                }
                if total_chunks != self.layout.total_chunks() || self.expect != total_chunks {
                    return Err(MoverError::Protocol {
                        peer: Role::Source,
                        message: format!(
                            "ended at chunk {} of {total_chunks}, expected {}",
                            self.expect,
                            self.layout.total_chunks()
                        ),
                    });
                }
                WriteItem::End { epoch }
            }
            _ => return Ok(None),
        };
        Ok(Some(item))
    }

    fn next_index(&mut self, index: u64) -> Result<(), MoverError> {
        if index != self.expect || index >= self.layout.total_chunks() {
            return Err(MoverError::Protocol {
                peer: Role::Source,
                message: format!("sent chunk {index} where {} was due", self.expect),
            });
        }
        self.expect += 1;
        Ok(())
    }

    fn written(&mut self, bytes: u64, zero: bool) {
        self.stats.chunks_this_attempt += 1;
        if zero {
            self.stats.zero_chunks += 1;
        }
        let now = Instant::now();
        let (wire, zeros) = (self.stats.bytes_on_wire, self.stats.zero_chunks);
        let window = &mut self.window;
        self.progress.send_modify(|p| {
            p.bytes_done += bytes;
            p.bytes_on_wire = wire;
            p.zero_chunks = zeros;
            window.record(now, p.bytes_done);
            p.bytes_per_second = window.rate();
            p.eta = progress::eta(
                p.bytes_total.saturating_sub(p.bytes_done),
                p.bytes_per_second,
            );
        });
    }

    /// Both sides digest their whole device at once: the source its device again, the
    /// target its own from the disk (cache dropped), never from what it received.
    async fn verify(
        &mut self,
        out: &mut BufWriter<OwnedWriteHalf>,
        frames: &mut mpsc::Receiver<Incoming>,
        device: Arc<Device>,
    ) -> Result<Digest, MoverError> {
        let tag = self.session.tag(b"verify", &[]);
        self.send(out, &Frame::Verify { tag }).await?;
        let stop = StopOnDrop::new();
        let (layout, flag) = (self.layout, stop.flag());
        let own = tokio::task::spawn_blocking(move || {
            // Without the drop the read-back would mostly come from the page cache.
            if let Err(e) = device.drop_cache() {
                tracing::debug!(error = %e, "mover: could not drop the target's cache before verifying");
            }
            digest::digest_device(&device, layout, &flag)
                .map_err(|e| MoverError::io(format!("reading {} back", device.path().display()), e))
        });
        let theirs = async {
            loop {
                let Some(incoming) = frames.recv().await else {
                    return Err(MoverError::Frame {
                        peer: Role::Source,
                        error: frame::FrameError::Closed,
                    });
                };
                let (frame, wire) = incoming?;
                self.stats.bytes_on_wire += wire as u64;
                match frame {
                    Frame::KeepAlive => {}
                    Frame::Digest { value, tag } => {
                        if !self.session.verify(b"digest", &[&value], &tag) {
                            return Err(bad_tag("digest", 0));
                        }
                        return Ok(Digest(value));
                    }
                    Frame::Refused { kind, message } => {
                        return Err(MoverError::RefusedByPeer {
                            peer: Role::Source,
                            kind,
                            message,
                        })
                    }
                    other => {
                        return Err(MoverError::Protocol {
                            peer: Role::Source,
                            message: format!("sent {} instead of the digest", other.name()),
                        })
                    }
                }
            }
        };
        let own = async {
            own.await
                .map_err(|e| MoverError::io("verifying", std::io::Error::other(e)))?
        };
        let (source_digest, target_digest) = tokio::try_join!(theirs, own)?;
        drop(stop);
        if source_digest != target_digest {
            return Err(MoverError::DigestMismatch {
                source_digest,
                target_digest,
            });
        }
        tracing::info!(digest = %target_digest, "mover: copy verified");
        Ok(target_digest)
    }
}
