//! A tiny Ethernet hub on host loopback joining the VMs' second NICs into one L2 segment.
//!
//! QEMU's `-netdev socket,connect=HOST:PORT` carries each frame over TCP as a 4-byte big-endian
//! length followed by the frame. QEMU itself can only join two peers that way (listen/connect),
//! so the hub accepts any number of VMs and floods every frame to all other connections. No MAC
//! learning: a handful of test VMs do not need it, and flooding cannot get stale across reboots.
//!
//! Each VM connects to a port of its own, so the hub knows which VM a connection belongs to
//! from the moment it is accepted (before the VM has sent a frame), and a VM that reboots or is
//! powered on again after a crash comes back as the same peer. That identity is what network
//! partitions act on: a blocked pair of VMs exchanges no frames in either direction, while
//! every other pair, and each VM's user-mode NIC (its path to the host), is untouched.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

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
/// A queued frame with the index of the VM that sent it.
type Queued = (usize, Frame);

#[derive(Default)]
struct State {
    /// Live connections by connection id (a VM that reconnects gets a new id).
    peers: HashMap<u64, Peer>,
    /// Partitioned VM pairs, smaller index first.
    blocked: HashSet<(usize, usize)>,
}

struct Peer {
    vm: usize,
    tx: mpsc::Sender<Queued>,
}

impl State {
    fn blocks(&self, a: usize, b: usize) -> bool {
        self.blocked.contains(&pair(a, b))
    }
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the maps consistent (every update is
        // a single insert or remove), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Hub {
    /// Port of VM `i` at index `i`.
    ports: Vec<u16>,
    state: Shared,
    task: JoinHandle<()>,
}

impl Hub {
    /// Listens on 127.0.0.1 on one ephemeral port per VM (`vms` of them).
    pub(crate) async fn start(vms: usize) -> Result<Hub, Error> {
        let mut listeners = Vec::with_capacity(vms);
        let mut ports = Vec::with_capacity(vms);
        for vm in 0..vms {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .ctx(|| format!("bind L2 hub port of VM {vm} on 127.0.0.1"))?;
            let port = listener
                .local_addr()
                .ctx(|| "L2 hub address".into())?
                .port();
            listeners.push(listener);
            ports.push(port);
        }
        let state = Shared::default();
        let task = tokio::spawn(serve(listeners, state.clone()));
        Ok(Hub { ports, state, task })
    }

    /// The port of each VM, by VM index.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Stops (`blocked`) or restores all frames between VMs `a` and `b`, both directions.
    /// Frames the hub has queued but not yet sent are checked again before sending, so nothing
    /// crosses a partition after this returns except what was already written to a socket.
    pub(crate) fn set_blocked(&self, a: usize, b: usize, blocked: bool) {
        let mut s = self.state.lock();
        if blocked {
            s.blocked.insert(pair(a, b));
        } else {
            s.blocked.remove(&pair(a, b));
        }
    }

    pub(crate) fn unblock_all(&self) {
        self.state.lock().blocked.clear();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Aborting the top task drops its JoinSet of accept loops, whose own JoinSets abort
        // every connection task.
        self.task.abort();
    }
}

async fn serve(listeners: Vec<TcpListener>, state: Shared) {
    let mut loops = JoinSet::new();
    for (vm, listener) in listeners.into_iter().enumerate() {
        loops.spawn(accept_loop(vm, listener, state.clone()));
    }
    while loops.join_next().await.is_some() {}
}

/// Accepts the connections of one VM (one per boot of it).
async fn accept_loop(vm: usize, listener: TcpListener, state: Shared) {
    // Connection ids are unique across VMs: the VM index is in the low bits.
    let mut next = 0u64;
    let mut tasks = JoinSet::new();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(vm, "L2 hub accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        while tasks.try_join_next().is_some() {}
        let id = (next << 16) | vm as u64;
        next += 1;
        tracing::debug!(%addr, vm, id, "L2 hub: peer connected");
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(QUEUE);
        state.lock().peers.insert(id, Peer { vm, tx });
        let (rd, wr) = stream.into_split();
        tasks.spawn(read_peer(id, vm, rd, state.clone()));
        tasks.spawn(write_peer(vm, wr, rx, state.clone()));
    }
}

async fn read_peer(id: u64, vm: usize, mut rd: tokio::net::tcp::OwnedReadHalf, state: Shared) {
    let res: std::io::Result<()> = async {
        loop {
            let len = rd.read_u32().await? as usize;
            if len > MAX_FRAME {
                return Err(std::io::Error::other(format!("frame of {len} bytes")));
            }
            let mut buf = vec![0u8; len];
            rd.read_exact(&mut buf).await?;
            let frame: Frame = buf.into();
            let s = state.lock();
            for (other, peer) in s.peers.iter() {
                // Never back to the sender's own connection, nor to an older connection of the
                // same VM that has not noticed yet that it is dead.
                if *other == id || peer.vm == vm || s.blocks(vm, peer.vm) {
                    continue;
                }
                // Full queue: drop the frame, as a congested switch would.
                let _ = peer.tx.try_send((vm, frame.clone()));
            }
        }
    }
    .await;
    tracing::debug!(id, vm, ?res, "L2 hub: peer gone");
    // Dropping the sender ends the peer's writer task.
    state.lock().peers.remove(&id);
}

async fn write_peer(
    vm: usize,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Queued>,
    state: Shared,
) {
    let mut buf = Vec::with_capacity(2048);
    while let Some((from, frame)) = rx.recv().await {
        // A partition made while the frame was queued applies to it too.
        if state.lock().blocks(from, vm) {
            continue;
        }
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
    use std::time::Duration;
    use tokio::net::TcpStream;

    async fn connect(hub: &Hub, vm: usize) -> TcpStream {
        let port = hub.ports()[vm];
        TcpStream::connect(("127.0.0.1", port)).await.unwrap()
    }

    async fn send(s: &mut TcpStream, data: &[u8]) {
        s.write_u32(data.len() as u32).await.unwrap();
        s.write_all(data).await.unwrap();
    }

    async fn recv(s: &mut TcpStream) -> Vec<u8> {
        let len = tokio::time::timeout(Duration::from_secs(10), s.read_u32())
            .await
            .expect("a frame within 10 s")
            .unwrap() as usize;
        let mut b = vec![0; len];
        s.read_exact(&mut b).await.unwrap();
        b
    }

    /// Lets the hub register connections before frames are sent.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn floods_to_all_others() {
        let hub = Hub::start(3).await.unwrap();
        let mut a = connect(&hub, 0).await;
        let mut b = connect(&hub, 1).await;
        let mut c = connect(&hub, 2).await;
        settle().await;
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

    /// Frames between a partitioned pair vanish both ways, other pairs are untouched, a
    /// reconnecting VM stays partitioned, and healing restores the link.
    #[tokio::test]
    async fn partition_blocks_one_pair_across_reconnects() {
        let hub = Hub::start(3).await.unwrap();
        let mut a = connect(&hub, 0).await;
        let mut b = connect(&hub, 1).await;
        let mut c = connect(&hub, 2).await;
        settle().await;
        hub.set_blocked(1, 0, true);

        // Once c has a's frame, the hub has handled it for every peer; so if b's first frame
        // is c's later one, a's never reached b.
        send(&mut a, b"a1").await;
        assert_eq!(recv(&mut c).await, b"a1");
        send(&mut c, b"c1").await;
        assert_eq!(recv(&mut b).await, b"c1");
        assert_eq!(recv(&mut a).await, b"c1");
        send(&mut b, b"b1").await;
        assert_eq!(recv(&mut c).await, b"b1");
        send(&mut c, b"c2").await;
        assert_eq!(recv(&mut a).await, b"c2");
        assert_eq!(recv(&mut b).await, b"c2");

        // b "reboots": a new connection on its port is still b.
        drop(b);
        let mut b = connect(&hub, 1).await;
        settle().await;
        send(&mut a, b"a2").await;
        assert_eq!(recv(&mut c).await, b"a2");
        send(&mut c, b"c3").await;
        assert_eq!(recv(&mut b).await, b"c3");
        assert_eq!(recv(&mut a).await, b"c3");

        hub.unblock_all();
        send(&mut a, b"a3").await;
        assert_eq!(recv(&mut b).await, b"a3");
        assert_eq!(recv(&mut c).await, b"a3");
        send(&mut b, b"b2").await;
        assert_eq!(recv(&mut a).await, b"b2");
        assert_eq!(recv(&mut c).await, b"b2");
    }
}
