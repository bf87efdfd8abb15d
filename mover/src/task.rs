//! Ties background work to the connection that needs it: when a connection (or a stream
//! inside it) goes away, the threads and tasks working for it stop instead of reading a
//! whole device for nobody.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Sets the flag a blocking thread polls when dropped.
pub(crate) struct StopOnDrop(pub Arc<AtomicBool>);

impl StopOnDrop {
    pub fn new() -> Self {
        StopOnDrop(Arc::new(AtomicBool::new(false)))
    }

    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
