//! The target's writer: a blocking thread that checks each chunk against its digest, writes
//! it where it belongs, and records progress in the checkpoint only once it is synced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::device::{Device, Zeroer};
use crate::digest;
use crate::error::{MoverError, Role};
use crate::frame::Payload;
use crate::layout::Layout;
use crate::pool::BufferPool;

/// Whether the target reads as zeros where nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetZeroed {
    /// E.g. a freshly created thin LV: zero chunks cost nothing.
    Yes,
    /// Zero chunks are zeroed on the target (BLKZEROOUT, a punched hole, or written zeros).
    No,
}

/// A chunk whose tag the receiver already checked.
pub(crate) enum WriteItem {
    Data {
        epoch: u32,
        index: u64,
        digest: [u8; 32],
        payload: Payload,
    },
    Zero {
        epoch: u32,
        index: u64,
    },
    End {
        epoch: u32,
    },
}

pub(crate) enum WriterEvent {
    /// A chunk of `bytes` is on the target.
    Written {
        bytes: u64,
        zero: bool,
    },
    /// Chunk `index` of `epoch` did not match its digest; everything after it in that epoch
    /// is dropped.
    Damaged {
        epoch: u32,
        index: u64,
    },
    /// Every chunk is written and synced, and the checkpoint says so.
    Finished,
    Failed(MoverError),
}

/// When the target syncs and records progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SyncPolicy {
    pub every_bytes: u64,
    pub every: Duration,
}

pub(crate) struct Writer {
    pub device: Arc<Device>,
    pub layout: Layout,
    pub next: u64,
    pub zeroed: TargetZeroed,
    pub store: Arc<dyn CheckpointStore>,
    pub checkpoint: Checkpoint,
    pub sync: SyncPolicy,
    pub pool: BufferPool,
}

struct State {
    zeroer: Zeroer,
    /// Items of this epoch and older are stale (a damaged chunk was asked for again).
    dropped_upto: u32,
    unsynced_bytes: u64,
    last_sync: Instant,
    saved_next: u64,
}

fn protocol(message: String) -> MoverError {
    MoverError::Protocol {
        peer: Role::Source,
        message,
    }
}

impl Writer {
    /// Consumes items until End or until the receiver goes away (connection lost, copy
    /// cancelled); in the second case what was verified and written is synced and recorded,
    /// so the next connection resumes after it.
    pub fn run(
        mut self,
        mut items: mpsc::Receiver<WriteItem>,
        events: mpsc::UnboundedSender<WriterEvent>,
    ) {
        let mut state = State {
            zeroer: Zeroer::new(self.device.kind()),
            dropped_upto: 0,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            saved_next: self.next,
        };
        let result = self.consume(&mut items, &events, &mut state);
        let event = match result {
            Ok(true) => WriterEvent::Finished,
            Ok(false) => return,
            Err(e) => {
                // Keep what is already on the device if the device still syncs.
                if let Err(sync_error) = self.sync_and_save(&mut state) {
                    tracing::debug!(error = %sync_error, "mover: no checkpoint after a write failure");
                }
                WriterEvent::Failed(e)
            }
        };
        let _ = events.send(event);
    }

    fn consume(
        &mut self,
        items: &mut mpsc::Receiver<WriteItem>,
        events: &mpsc::UnboundedSender<WriterEvent>,
        state: &mut State,
    ) -> Result<bool, MoverError> {
        while let Some(item) = items.blocking_recv() {
            match item {
                WriteItem::Data { epoch, payload, .. } if epoch <= state.dropped_upto => {
                    self.pool.put(payload.into_buf());
                }
                WriteItem::Zero { epoch, .. } if epoch <= state.dropped_upto => {}
                WriteItem::Data {
                    epoch,
                    index,
                    digest,
                    payload,
                } => {
                    self.expect(index)?;
                    let data = payload.data();
                    if data.len() != self.layout.chunk_len(index) {
                        return Err(protocol(format!(
                            "chunk {index} holds {} bytes, not {}",
                            data.len(),
                            self.layout.chunk_len(index)
                        )));
                    }
                    if digest::chunk_digest(data) != digest {
                        tracing::warn!(
                            index,
                            epoch,
                            "mover: chunk arrived damaged, asking for it again"
                        );
                        state.dropped_upto = epoch;
                        self.pool.put(payload.into_buf());
                        let _ = events.send(WriterEvent::Damaged { epoch, index });
                        continue;
                    }
                    let written = self
                        .device
                        .write_at(data, self.layout.offset(index))
                        .map_err(|e| self.io_error("writing", index, e));
                    let len = data.len() as u64;
                    self.pool.put(payload.into_buf());
                    written?;
                    state.unsynced_bytes += len;
                    self.advance(len, false, events, state)?;
                }
                WriteItem::Zero { index, .. } => {
                    self.expect(index)?;
                    let len = self.layout.chunk_len(index) as u64;
                    if self.zeroed == TargetZeroed::No {
                        state
                            .zeroer
                            .zero(&self.device, self.layout.offset(index), len)
                            .map_err(|e| self.io_error("zeroing", index, e))?;
                        state.unsynced_bytes += len;
                    }
                    self.advance(len, true, events, state)?;
                }
                WriteItem::End { epoch } if epoch <= state.dropped_upto => {}
                WriteItem::End { .. } => {
                    let total = self.layout.total_chunks();
                    if self.next != total {
                        return Err(protocol(format!(
                            "ended the stream at chunk {} of {total}",
                            self.next
                        )));
                    }
                    self.sync_and_save(state)?;
                    return Ok(true);
                }
            }
        }
        self.sync_and_save(state)?;
        Ok(false)
    }

    fn expect(&self, index: u64) -> Result<(), MoverError> {
        if index != self.next {
            return Err(protocol(format!(
                "sent chunk {index} where {} was due",
                self.next
            )));
        }
        Ok(())
    }

    fn io_error(&self, what: &str, index: u64, e: std::io::Error) -> MoverError {
        MoverError::io(
            format!("{what} chunk {index} of {}", self.device.path().display()),
            e,
        )
    }

    fn advance(
        &mut self,
        bytes: u64,
        zero: bool,
        events: &mpsc::UnboundedSender<WriterEvent>,
        state: &mut State,
    ) -> Result<(), MoverError> {
        self.next += 1;
        let _ = events.send(WriterEvent::Written { bytes, zero });
        if state.unsynced_bytes >= self.sync.every_bytes
            || state.last_sync.elapsed() >= self.sync.every
        {
            self.sync_and_save(state)?;
        }
        Ok(())
    }

    /// Syncs the device, then records the progress: the checkpoint never runs ahead of what
    /// is durable.
    fn sync_and_save(&mut self, state: &mut State) -> Result<(), MoverError> {
        self.device
            .sync_data()
            .map_err(|e| MoverError::io(format!("syncing {}", self.device.path().display()), e))?;
        state.unsynced_bytes = 0;
        state.last_sync = Instant::now();
        if self.next != state.saved_next {
            self.checkpoint.next_chunk = self.next;
            self.store.save(&self.checkpoint)?;
            state.saved_next = self.next;
        }
        Ok(())
    }
}
