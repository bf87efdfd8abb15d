//! How a device is cut into chunks: the unit of transfer, of verification and of the
//! checkpoint.

use crate::error::MoverError;

/// Default chunk: large enough that per-chunk costs (a frame header, a MAC, a syscall) vanish
/// next to the data, small enough that a resend or a resume repeats little.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Chunks are whole 4 KiB blocks, so writes and zeroing stay aligned on any block device.
pub const CHUNK_ALIGN: u32 = 4096;
/// The upper bound also bounds the largest frame a peer may announce.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

/// Checks that `chunk_size` is a multiple of 4 KiB between 4 KiB and 64 MiB.
pub fn validate_chunk_size(chunk_size: u32) -> Result<(), MoverError> {
    if chunk_size == 0 || !chunk_size.is_multiple_of(CHUNK_ALIGN) || chunk_size > MAX_CHUNK_SIZE {
        return Err(MoverError::InvalidChunkSize(chunk_size));
    }
    Ok(())
}

/// A device of `size` bytes in chunks of `chunk_size`; the last chunk may be shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub size: u64,
    pub chunk_size: u32,
}

impl Layout {
    pub fn total_chunks(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size))
    }

    pub fn offset(&self, index: u64) -> u64 {
        index * u64::from(self.chunk_size)
    }

    /// Length of chunk `index` (0 past the end).
    pub fn chunk_len(&self, index: u64) -> usize {
        let start = self.offset(index).min(self.size);
        // At most chunk_size (u32), so the cast is lossless.
        (self.size - start).min(u64::from(self.chunk_size)) as usize
    }

    /// Bytes in chunks `0..index`.
    pub fn bytes_before(&self, index: u64) -> u64 {
        self.offset(index).min(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_chunk_is_partial() {
        let l = Layout {
            size: 10_000,
            chunk_size: 4096,
        };
        assert_eq!(l.total_chunks(), 3);
        assert_eq!(l.chunk_len(0), 4096);
        assert_eq!(l.chunk_len(2), 10_000 - 8192);
        assert_eq!(l.chunk_len(3), 0);
        assert_eq!(l.bytes_before(3), 10_000);
        let exact = Layout {
            size: 8192,
            chunk_size: 4096,
        };
        assert_eq!(exact.total_chunks(), 2);
        assert_eq!(exact.chunk_len(1), 4096);
    }

    #[test]
    fn chunk_sizes_are_aligned_and_bounded() {
        assert!(validate_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        assert!(validate_chunk_size(4096).is_ok());
        assert!(validate_chunk_size(0).is_err());
        assert!(validate_chunk_size(4095).is_err());
        assert!(validate_chunk_size(MAX_CHUNK_SIZE + 4096).is_err());
    }
}
