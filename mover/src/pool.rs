//! Recycled chunk buffers: a copy moves the same few multi-megabyte buffers around instead of
//! allocating (and page-faulting) a fresh one for every chunk.

use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool holding at most `keep` idle buffers; more are freed.
    pub fn new(keep: usize) -> Self {
        BufferPool {
            free: Arc::new(Mutex::new(Vec::new())),
            keep,
        }
    }

    /// A buffer of exactly `len` bytes with unspecified contents (callers overwrite it).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let recycled = self.free.lock().ok().and_then(|mut free| free.pop());
        let mut buf = recycled.unwrap_or_default();
        // Shrinking keeps the old bytes and costs nothing; only growth writes zeros.
        buf.resize(len, 0);
        buf
    }

    pub fn put(&self, buf: Vec<u8>) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let pool = BufferPool::new(1);
        let mut a = pool.take(100);
        assert_eq!(a.len(), 100);
        a[0] = 7;
        let ptr = a.as_ptr();
        pool.put(a);
        let b = pool.take(50);
        assert_eq!(b.len(), 50);
        assert_eq!(b.as_ptr(), ptr);
        pool.put(b);
        pool.put(vec![0; 10]);
        assert_eq!(pool.free.lock().map(|f| f.len()).unwrap_or(0), 1);
    }
}
