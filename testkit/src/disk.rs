//! A stateful fake of [`hwameistor_hostexec::disk::Wipe`]: records every wipe, refuses a
//! device marked busy as the kernel does, and fails on demand.

use futures::future::BoxFuture;
use hwameistor_hostexec::disk::{Wipe, WipeCli};
use hwameistor_hostexec::ExecError;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    /// (device, full) of every wipe that succeeded, in order.
    wiped: Vec<(String, bool)>,
    busy: BTreeSet<String>,
    fail_next: usize,
}

#[derive(Clone, Default)]
pub struct FakeWipe {
    state: Arc<Mutex<State>>,
}

impl FakeWipe {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wipes that succeeded: (device, full).
    pub fn wiped(&self) -> Vec<(String, bool)> {
        self.lock().wiped.clone()
    }

    /// Marks `device` held (mounted, opened exclusively): wipes of it fail until cleared.
    pub fn set_busy(&self, device: &str, busy: bool) {
        let mut s = self.lock();
        if busy {
            s.busy.insert(device.to_string());
        } else {
            s.busy.remove(device);
        }
    }

    /// Fails the next `n` wipes (an I/O error).
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }
}

fn failed(device: &str, full: bool, stderr: String) -> ExecError {
    let command = WipeCli::commands(device, full)
        .last()
        .map(|c| c.to_string())
        .unwrap_or_default();
    ExecError::Failed {
        command,
        code: Some(1),
        stdout: String::new(),
        stderr,
    }
}

impl Wipe for FakeWipe {
    fn wipe<'a>(&'a self, device: &'a str, full: bool) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            let mut s = self.lock();
            if s.busy.contains(device) {
                return Err(failed(
                    device,
                    full,
                    format!("wipefs: error: {device}: probing initialization failed: Device or resource busy"),
                ));
            }
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return Err(failed(
                    device,
                    full,
                    format!("wipefs: error: {device}: Input/output error"),
                ));
            }
            s.wiped.push((device.to_string(), full));
            Ok(())
        })
    }
}
