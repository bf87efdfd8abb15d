//! A tiny Ethernet hub on host loopback joining the VMs' second NICs into one L2 segment.
//!
//! QEMU's `-netdev socket,connect=HOST:PORT` carries each frame over TCP as a 4-byte big-endian
//! length followed by the frame. QEMU itself can only join two peers that way (listen/connect),
//! so the hub accepts any number of VMs and floods every frame to all other connections. No MAC
//! learning: a handful of test VMs do not need it, and flooding cannot get stale across reboots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, IoContext};

/// Larger than any frame QEMU sends (it caps at 68 KiB); anything bigger is a broken stream.
const MAX_FRAME: usize = 1 << 20;
/// Frames queued per peer before the hub drops instead of blocking the others, like a switch.
const QUEUE: usize = 512;

type Frame = Arc<[u8]>;
type Peers = Arc<Mutex<HashMap<u64, mpsc::Sender<Frame>>>>;

pub(crate) struct Hub {
    port: u16,
    task: JoinHandle<()>,
}

impl Hub {
    /// Listens on 127.0.0.1 on an ephemeral port.
    pub(crate) async fn start() -> Result<Hub, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .ctx(|| "bind L2 hub on 127.0.0.1".into())?;
        let port = listener
            .local_addr()
            .ctx(|| "L2 hub address".into())?
            .port();
        let task = tokio::spawn(serve(listener));
        Ok(Hub { port, task })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener) {
    let peers: Peers = Arc::default();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("L2 hub accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let id = next_id;
        next_id += 1;
        tracing::debug!(%addr, id, "L2 hub: peer connected");
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(QUEUE);
        peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let (rd, wr) = stream.into_split();
        tasks.spawn(read_peer(id, rd, peers.clone()));
        tasks.spawn(write_peer(wr, rx));
    }
}

async fn read_peer(id: u64, mut rd: tokio::net::tcp::OwnedReadHalf, peers: Peers) {
    let res: std::io::Result<()> = async {
        loop {
            let len = rd.read_u32().await? as usize;
            if len > MAX_FRAME {
                return Err(std::io::Error::other(format!("frame of {len} bytes")));
            }
            let mut buf = vec![0u8; len];
            rd.read_exact(&mut buf).await?;
            let frame: Frame = buf.into();
            let peers = peers.lock().unwrap_or_else(|e| e.into_inner());
            for (other, tx) in peers.iter() {
                if *other != id {
                    // Full queue: drop the frame, as a congested switch would.
                    let _ = tx.try_send(frame.clone());
                }
            }
        }
    }
    .await;
    tracing::debug!(id, ?res, "L2 hub: peer gone");
    // Dropping the sender ends the peer's writer task.
    peers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
}

async fn write_peer(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>) {
    let mut buf = Vec::with_capacity(2048);
    while let Some(frame) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        buf.extend_from_slice(&frame);
        if wr.write_all(&buf).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    async fn connect(port: u16) -> TcpStream {
        TcpStream::connect(("127.0.0.1", port)).await.unwrap()
    }

    async fn send(s: &mut TcpStream, data: &[u8]) {
        s.write_u32(data.len() as u32).await.unwrap();
        s.write_all(data).await.unwrap();
    }

    async fn recv(s: &mut TcpStream) -> Vec<u8> {
        let len = s.read_u32().await.unwrap() as usize;
        let mut b = vec![0; len];
        s.read_exact(&mut b).await.unwrap();
        b
    }

    #[tokio::test]
    async fn floods_to_all_others() {
        let hub = Hub::start().await.unwrap();
        let mut a = connect(hub.port()).await;
        let mut b = connect(hub.port()).await;
        let mut c = connect(hub.port()).await;
        // Let the hub register all three before sending.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        send(&mut a, b"frame-from-a").await;
        assert_eq!(recv(&mut b).await, b"frame-from-a");
        assert_eq!(recv(&mut c).await, b"frame-from-a");
        send(&mut c, b"frame-from-c").await;
        assert_eq!(recv(&mut a).await, b"frame-from-c");
        assert_eq!(recv(&mut b).await, b"frame-from-c");
        // The sender never gets its own frame back: the next frame a sees is from b.
        send(&mut b, b"frame-from-b").await;
        assert_eq!(recv(&mut a).await, b"frame-from-b");
    }
}
