//! Helpers for tests and benchmarks of the mover (and of the agent that uses it): a proxy
//! that cuts a connection part-way, as a failing link would, and reproducible pseudo-random
//! data.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::task::AbortOnDrop;

/// A loopback proxy to an upstream server; stops when dropped.
pub struct CuttingProxy {
    addr: SocketAddr,
    from_upstream: Arc<AtomicU64>,
    _task: AbortOnDrop<()>,
}

impl CuttingProxy {
    /// Forwards connections to `upstream`. With `cut_after`, the first connection is cut
    /// (both directions closed) once that many bytes came from the upstream; later
    /// connections pass whole.
    pub async fn start(upstream: SocketAddr, cut_after: Option<u64>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let from_upstream = Arc::new(AtomicU64::new(0));
        let counter = from_upstream.clone();
        let task = tokio::spawn(async move {
            let mut limit = cut_after;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(forward(client, server, limit.take(), counter.clone()));
            }
        });
        Ok(CuttingProxy {
            addr,
            from_upstream,
            _task: AbortOnDrop(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes passed from the upstream to clients, over all connections (a frame cut in
    /// half counts with the half that got through).
    pub fn bytes_from_upstream(&self) -> u64 {
        self.from_upstream.load(Ordering::Relaxed)
    }
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    limit: Option<u64>,
    counter: Arc<AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = AbortOnDrop(tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    }));
    let mut passed = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let want = match limit {
            Some(limit) if passed >= limit => break,
            Some(limit) => buf.len().min((limit - passed) as usize),
            None => buf.len(),
        };
        let n = match server_read.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        passed += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    // Both directions go down together, like a cut link.
    drop(upstream);
}

/// Fills `buf` with pseudo-random bytes (xorshift64*): the same for the same seed, fast
/// enough for gigabytes, incompressible and never all-zero in a 4 KiB block in practice.
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in buf.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bytes = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_reproducible_and_differ_by_seed() {
        let (mut a, mut b, mut c) = (vec![0u8; 1001], vec![0u8; 1001], vec![0u8; 1001]);
        fill_random(&mut a, 1);
        fill_random(&mut b, 1);
        fill_random(&mut c, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().filter(|&&x| x == 0).count() < 20);
    }

    #[tokio::test]
    async fn the_first_connection_is_cut_after_the_limit() -> io::Result<()> {
        let upstream = TcpListener::bind("127.0.0.1:0").await?;
        let up_addr = upstream.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(&[7u8; 10_000]).await;
                });
            }
        });
        let proxy = CuttingProxy::start(up_addr, Some(1234)).await?;
        let mut got = Vec::new();
        TcpStream::connect(proxy.addr())
            .await?
            .read_to_end(&mut got)
            .await?;
        assert_eq!(got.len(), 1234);
        got.clear();
        TcpStream::connect(proxy.addr())
            .await?
            .read_to_end(&mut got)
            .await?;
        assert_eq!(got.len(), 10_000);
        assert_eq!(proxy.bytes_from_upstream(), 11_234);
        Ok(())
    }
}
