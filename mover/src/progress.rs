//! What the target reports while copying: the agent turns it into the replica's copy status.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where a copy stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    /// Connecting and authenticating (again, after a failure).
    #[default]
    Connecting,
    /// Receiving and writing chunks.
    Copying,
    /// Waiting before the next attempt after a failure.
    Retrying,
    /// Both sides read their device back and compare digests.
    Verifying,
    /// The copy equals the source.
    Verified,
}

/// A snapshot of a copy's progress, published on a `tokio::sync::watch` channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes of the device known to be on the target (written, or zero and skipped),
    /// including what earlier runs did before the checkpoint this run resumed from.
    pub bytes_done: u64,
    /// The device's size; 0 until the source announced it.
    pub bytes_total: u64,
    /// Bytes of the frames received whole by this run (headers included).
    pub bytes_on_wire: u64,
    /// All-zero chunks that were not sent.
    pub zero_chunks: u64,
    /// Over the last few seconds; `None` until there are two samples.
    pub bytes_per_second: Option<u64>,
    pub eta: Option<Duration>,
    /// Chunks that arrived damaged and were sent again.
    pub resends: u64,
    /// Times the copy reconnected and resumed from its checkpoint.
    pub resumes: u64,
    /// The last error, while retrying.
    pub last_error: Option<String>,
}

/// Rate over a sliding window of `(time, bytes done)` samples.
pub(crate) struct RateWindow {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    pub fn new(window: Duration) -> Self {
        RateWindow {
            window,
            samples: VecDeque::new(),
        }
    }

    pub fn record(&mut self, now: Instant, bytes_done: u64) {
        self.samples.push_back((now, bytes_done));
        // Keep one sample older than the window so the window is always fully covered.
        while self.samples.len() > 2 {
            match self.samples.get(1) {
                Some((t, _)) if now.saturating_duration_since(*t) >= self.window => {
                    self.samples.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Bytes per second between the oldest and newest sample.
    pub fn rate(&self) -> Option<u64> {
        let (t0, b0) = self.samples.front()?;
        let (t1, b1) = self.samples.back()?;
        let secs = t1.saturating_duration_since(*t0).as_secs_f64();
        if secs < 0.05 {
            return None;
        }
        Some((b1.saturating_sub(*b0) as f64 / secs) as u64)
    }
}

/// Time left at `rate` bytes per second.
pub(crate) fn eta(remaining: u64, rate: Option<u64>) -> Option<Duration> {
    match rate {
        Some(r) if r > 0 => Some(Duration::from_secs_f64(remaining as f64 / r as f64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_the_recent_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(Duration::from_secs(2));
        assert_eq!(w.rate(), None);
        // 100 B/s for 10 s, then 1000 B/s for 4 s: the window sees only the fast part.
        let mut bytes = 0;
        for s in 0..=10 {
            w.record(t0 + Duration::from_secs(s), bytes);
            bytes += 100;
        }
        bytes -= 100;
        for s in 11..=14 {
            bytes += 1000;
            w.record(t0 + Duration::from_secs(s), bytes);
        }
        let rate = w.rate().unwrap_or(0);
        assert!((900..=1000).contains(&rate), "{rate}");
        assert_eq!(eta(5000, Some(1000)), Some(Duration::from_secs(5)));
        assert_eq!(eta(5000, Some(0)), None);
    }
}
