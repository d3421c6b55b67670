//! [`LogSampler`]: keeps a repeated log line from becoming a flood.
//!
//! Refusals are logged where they happen (the route, the origin check, the server's rate
//! limits), and each is cheap for a client to cause: a script that retries a bad token in a
//! loop would otherwise write a line per attempt. A sampler lets the first `limit` lines of
//! each interval through and counts the rest; the next line that gets through carries that
//! count in its `suppressed` field, so nothing goes unreported, only unrepeated.
//!
//! One sampler per kind of line, usually a `static` beside the `tracing` call: lock-free (three
//! atomics), no allocation, shared by every connection and every hub of the process. Counts
//! are approximate under races (two threads may both open a new interval); for logs that is
//! fine.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The sampler of each kind of refusal in this crate: 10 lines per 10 s. Enough to see who is
/// refused and why; past it a client retrying in a loop costs one line per interval.
pub(crate) const fn refusals() -> LogSampler {
    LogSampler::new(10, Duration::from_secs(10))
}

/// Lets through the first `limit` log lines of each `interval`, and counts the others.
///
/// ```
/// use std::time::Duration;
/// use roomcast::LogSampler;
///
/// static REFUSED: LogSampler = LogSampler::new(10, Duration::from_secs(10));
///
/// fn refused(why: &str) {
///     // `suppressed`: how many such lines were left out since the last one written.
///     if let Some(suppressed) = REFUSED.sample() {
///         tracing::info!(why, suppressed, "connection refused");
///     }
/// }
/// refused("bad token");
/// ```
#[derive(Debug)]
pub struct LogSampler {
    limit: u64,
    interval_ms: u64,
    /// The interval the counts are for: ms since the process's first sample, divided by
    /// `interval_ms`, plus one (0: none yet).
    window: AtomicU64,
    /// Lines seen in `window`.
    seen: AtomicU64,
    /// Lines left out since the last one let through.
    suppressed: AtomicU64,
}

impl LogSampler {
    /// A sampler letting `limit` lines through per `interval` (at least 1 ms).
    pub const fn new(limit: u32, interval: Duration) -> Self {
        let interval_ms = interval.as_millis() as u64;
        Self {
            limit: limit as u64,
            interval_ms: if interval_ms == 0 { 1 } else { interval_ms },
            window: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Counts one line: `Some(suppressed)` when it should be written, with the number of lines
    /// left out since the last one written; `None` when it should be left out.
    pub fn sample(&self) -> Option<u64> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let elapsed = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
        self.sample_at(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// [`LogSampler::sample`] at `now_ms` (ms on any monotonic clock), for tests.
    fn sample_at(&self, now_ms: u64) -> Option<u64> {
        let window = now_ms / self.interval_ms + 1;
        let current = self.window.load(Ordering::Relaxed);
        let seen = if window != current
            && self
                .window
                .compare_exchange(current, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // A new interval: this line is its first.
            self.seen.store(1, Ordering::Relaxed);
            1
        } else {
            self.seen.fetch_add(1, Ordering::Relaxed) + 1
        };
        if seen <= self.limit {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lines_of_each_interval_pass_and_the_next_one_counts_the_rest() {
        let sampler = LogSampler::new(2, Duration::from_secs(1));
        let passed: Vec<Option<u64>> = (0..5).map(|i| sampler.sample_at(100 + i)).collect();
        assert_eq!(passed, [Some(0), Some(0), None, None, None]);
        // The next interval: the first line reports the three left out.
        assert_eq!(sampler.sample_at(1_000), Some(3));
        assert_eq!(sampler.sample_at(1_001), Some(0));
        assert_eq!(sampler.sample_at(1_002), None);
        // A quiet spell of several intervals changes nothing.
        assert_eq!(sampler.sample_at(9_000), Some(1));
    }

    #[test]
    fn a_limit_of_zero_logs_nothing_but_counts() {
        let sampler = LogSampler::new(0, Duration::ZERO);
        assert_eq!(sampler.sample_at(5), None);
        assert_eq!(sampler.sample_at(5), None);
    }
}
