//! The send side's bandwidth limit: a token bucket that may go into debt, so a chunk larger
//! than the bucket still goes out whole and the sender then waits the debt off.

use std::time::{Duration, Instant};

pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` bytes per second (> 0). The bucket starts empty so the first second is not a
    /// burst above the limit; it holds at most a tenth of a second's worth, so an idle pause
    /// is not paid back with a burst either.
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1) as f64;
        TokenBucket {
            rate,
            burst: (rate / 10.0).max(64.0 * 1024.0),
            tokens: 0.0,
            last: now,
        }
    }

    /// Takes `bytes` and says how long to wait before sending them.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender that waits whatever the bucket says moves `rate` bytes a second on average.
    #[test]
    fn sender_obeying_the_bucket_averages_the_rate() {
        let start = Instant::now();
        let rate = 10 * 1024 * 1024;
        let mut bucket = TokenBucket::new(rate, start);
        let mut now = start;
        let chunk = 4 * 1024 * 1024;
        let chunks = 25;
        for _ in 0..chunks {
            now += bucket.take(chunk, now);
        }
        let secs = (now - start).as_secs_f64();
        let expected = (chunks * chunk) as f64 / rate as f64;
        // The last chunk's debt is paid after it is sent, so the total time is one chunk less.
        let lower = ((chunks - 1) * chunk) as f64 / rate as f64;
        assert!(
            secs >= lower * 0.99 && secs <= expected * 1.01,
            "{secs} vs {expected}"
        );
    }

    #[test]
    fn idle_time_buys_at_most_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000, start);
        let later = start + Duration::from_secs(60);
        assert_eq!(bucket.take(100_000, later), Duration::ZERO);
        let wait = bucket.take(1_000_000, later);
        assert!(wait >= Duration::from_millis(990), "{wait:?}");
    }
}
