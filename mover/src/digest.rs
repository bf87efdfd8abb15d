//! Chunk digests and the device digest both sides compute to verify a copy end to end.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::device::Device;
use crate::layout::Layout;

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

pub(crate) fn chunk_digest(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Whether `data` is all zeros. Scans in blocks the compiler vectorises, stopping at the first
/// block with data (a data chunk is usually recognised in its first block).
pub(crate) fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// The digest of a whole device: BLAKE3 over the concatenation of its chunks' BLAKE3
/// digests. Per-chunk digests let the stream's digests and this one share their definition,
/// and a zero chunk's digest is known without hashing it.
pub(crate) struct DeviceDigest {
    hasher: blake3::Hasher,
    zero_full: [u8; 32],
    chunk_size: usize,
}

impl DeviceDigest {
    pub fn new(chunk_size: usize) -> Self {
        DeviceDigest {
            hasher: blake3::Hasher::new(),
            zero_full: chunk_digest(&vec![0u8; chunk_size]),
            chunk_size,
        }
    }

    pub fn push_chunk(&mut self, data: &[u8]) {
        let digest = if is_zero(data) {
            if data.len() == self.chunk_size {
                self.zero_full
            } else {
                chunk_digest(data)
            }
        } else {
            chunk_digest(data)
        };
        self.hasher.update(&digest);
    }

    pub fn finish(&self) -> Digest {
        Digest(*self.hasher.finalize().as_bytes())
    }
}

/// Reads `layout.size` bytes of `device` from its start and digests them; stops with
/// `Interrupted` once `stop` is set (the connection it was for is gone).
pub(crate) fn digest_device(
    device: &Device,
    layout: Layout,
    stop: &AtomicBool,
) -> std::io::Result<Digest> {
    let mut digest = DeviceDigest::new(layout.chunk_size as usize);
    let mut buf = vec![0u8; layout.chunk_size as usize];
    for index in 0..layout.total_chunks() {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "digest pass stopped",
            ));
        }
        let data = &mut buf[..layout.chunk_len(index)];
        device.read_at(data, layout.offset(index))?;
        digest.push_chunk(data);
    }
    Ok(digest.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&vec![0u8; 10_000]));
        let mut v = vec![0u8; 10_000];
        v[9_999] = 1;
        assert!(!is_zero(&v));
        v[9_999] = 0;
        v[0] = 0x80;
        assert!(!is_zero(&v));
    }

    #[test]
    fn zero_shortcut_equals_hashing() {
        let mut a = DeviceDigest::new(8);
        a.push_chunk(&[0; 8]);
        a.push_chunk(&[1; 8]);
        a.push_chunk(&[0; 3]);
        let mut h = blake3::Hasher::new();
        for chunk in [&[0u8; 8][..], &[1; 8], &[0; 3]] {
            h.update(blake3::hash(chunk).as_bytes());
        }
        assert_eq!(a.finish().0, *h.finalize().as_bytes());
    }
}
