//! Host end of the guest exec daemon's virtio-serial port (QEMU exposes it as a unix socket).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::protocol::{Op, Reply, Request, Response};

pub(crate) enum CallError {
    Timeout,
    Disconnected,
    Io(std::io::Error),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// The host end of the virtio-serial port: requests go out with fresh ids, a reader task routes
/// each response to its waiting caller, so any number of calls can be in flight.
pub(crate) struct GuestConn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl GuestConn {
    pub(crate) async fn connect(path: &Path) -> std::io::Result<GuestConn> {
        let s = UnixStream::connect(path).await?;
        let (rd, wr) = s.into_split();
        let pending: Pending = Arc::default();
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Response>(&line) {
                    Ok(r) => {
                        let tx = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.id);
                        if let Some(tx) = tx {
                            let _ = tx.send(r.reply);
                        }
                    }
                    Err(e) => tracing::debug!("guest sent a bad line ({e}): {line:?}"),
                }
            }
            // Connection gone (QEMU exited): fail every waiting call.
            p.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        Ok(GuestConn {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    pub(crate) async fn call(&self, op: Op, timeout: Duration) -> Result<Reply, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let res = tokio::time::timeout(timeout, async {
            let mut line = serde_json::to_vec(&Request { id, op })
                .map_err(|e| CallError::Io(std::io::Error::other(e)))?;
            line.push(b'\n');
            self.writer
                .lock()
                .await
                .write_all(&line)
                .await
                .map_err(CallError::Io)?;
            rx.await.map_err(|_| CallError::Disconnected)
        })
        .await
        .unwrap_or(Err(CallError::Timeout));
        if res.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
        res
    }
}

impl Drop for GuestConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
