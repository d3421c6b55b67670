//! [`Pace`]: how far apart a connection's writes are spaced right now, from the hub's rate of
//! deliveries.
//!
//! A connection writes a frame queued after a quiet spell at once; frames queued within the
//! write interval of its last write wait and leave together (`session::driver`). That
//! interval buys CPU only under load: a write is a system call, and at 1,600 msg/s into a room
//! of 1000 a fixed 40 ms took server CPU per delivery from 0.46 to 0.42 µs (and the load
//! generator reading it from 1.0 to 0.86 cores). At light load it bought nothing and cost
//! every message up to the whole interval: at 50 msg/s each member gets a message every
//! 20 ms, always within 40 ms of its last write, so every message waited.
//!
//! So the interval follows the load. Where it reaches the whole interval is a trade the
//! machine decides: each write skipped is a system call saved (~4.5 µs of server CPU here,
//! nested virtualization; three times Bun's cost per send), and on two shared cores at 200
//! msg/s into 1000, writing every 8 ms instead of every 40 ms tripled the writes and lost
//! more to queueing for the CPU than it saved in waiting, so the default reaches the whole
//! interval at 200,000 deliveries/s. Every delivery the hub counts (`Hub::count`, once per
//! broadcast, never per recipient) feeds an exponentially decaying count of deliveries
//! ([`TIME_CONSTANT`]), and the interval is [`SessionConfig::write_interval`] times the
//! estimated deliveries per second over [`SessionConfig::write_interval_rate`], at most the
//! whole interval. Sessions read it with one relaxed load when they decide whether to wait.
//!
//! ```text
//! interval
//!  40 ms ┤                 ┌──────────── write_interval
//!        │              ╱
//!        │           ╱
//!        │        ╱          deliveries/s over the whole hub
//!   0 ms ┼─────╱─────────┬──────────────▶
//!        0          write_interval_rate
//! ```
//!
//! Held in the hub rather than in each connection's task: one estimate for everyone, nothing
//! added to an idle connection's memory, and it is the hub-wide rate of writes that costs CPU.
//! With a steady per-member rate `r`, the writes per second over the hub are at most
//! `write_interval_rate / (write_interval × r)`, however many members there are.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SessionConfig;

/// How quickly the estimate forgets: a step in the rate is 63% seen after this long. Short
/// enough that a burst is paced within a few commits' worth of messages, long enough that one
/// large broadcast after a quiet spell does not look like a flood.
const TIME_CONSTANT: Duration = Duration::from_millis(250);

/// The hub's delivery rate, and the write interval it calls for.
#[derive(Debug)]
pub(crate) struct Pace {
    /// [`SessionConfig::write_interval`], in µs: the interval at and above `full_rate`.
    full_us: u32,
    /// [`SessionConfig::write_interval_rate`]; 0: the full interval at any rate.
    full_rate: u64,
    /// The interval now, in µs: written after each counted delivery, read by every session
    /// that has frames to write.
    interval_us: AtomicU32,
    /// The decaying count, under its own short lock (taken once per broadcast, after the
    /// hub's state lock is released).
    recent: Mutex<Recent>,
}

#[derive(Debug)]
struct Recent {
    /// Deliveries, each weighted by `exp(-age / TIME_CONSTANT)`, as of `at`.
    count: f64,
    at: Instant,
}

impl Pace {
    /// No deliveries yet: no wait, unless `write_interval_rate` is 0.
    pub(crate) fn new(config: &SessionConfig) -> Self {
        let full_us = u32::try_from(config.write_interval.as_micros()).unwrap_or(u32::MAX);
        let full_rate = config.write_interval_rate;
        Self {
            full_us,
            full_rate,
            interval_us: AtomicU32::new(if full_rate == 0 { full_us } else { 0 }),
            recent: Mutex::new(Recent {
                count: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// The shortest time between two writes to one connection, now.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_micros(u64::from(self.interval_us.load(Ordering::Relaxed)))
    }

    /// Counts `delivered` frames queued at `now` and sets the interval they call for.
    pub(crate) fn record(&self, delivered: usize, now: Instant) {
        if self.full_rate == 0 || self.full_us == 0 {
            return;
        }
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let age = now.saturating_duration_since(recent.at).as_secs_f64();
        recent.count = recent.count * (-age / TIME_CONSTANT.as_secs_f64()).exp() + delivered as f64;
        recent.at = recent.at.max(now);
        let rate = recent.count / TIME_CONSTANT.as_secs_f64();
        drop(recent);
        let share = (rate / self.full_rate as f64).min(1.0);
        // Truncation is fine: µs, at most `full_us`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let interval = (f64::from(self.full_us) * share) as u32;
        self.interval_us.store(interval, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(write_interval_ms: u64, write_interval_rate: u64) -> Pace {
        Pace::new(&SessionConfig {
            write_interval: Duration::from_millis(write_interval_ms),
            write_interval_rate,
            ..SessionConfig::default()
        })
    }

    /// Feeds `per_second` deliveries a second, in groups every 5 ms (a group commit), for
    /// `seconds`, from `start`; returns the interval then.
    fn steady(pace: &Pace, start: Instant, per_second: usize, seconds: u64) -> Duration {
        let step = Duration::from_millis(5);
        let groups = seconds * 200;
        for i in 1..=groups {
            pace.record(per_second / 200, start + step * u32::try_from(i).unwrap());
        }
        pace.interval()
    }

    fn ms(interval: Duration) -> f64 {
        interval.as_secs_f64() * 1000.0
    }

    #[test]
    fn the_interval_grows_with_the_rate_up_to_the_full_interval() {
        let start = Instant::now();
        let p = pace(40, 1_000_000);
        assert_eq!(p.interval(), Duration::ZERO, "nothing delivered yet");
        // 50 msg/s into 1000: 50,000 deliveries/s, 2 ms.
        let light = ms(steady(&p, start, 50_000, 2));
        assert!((1.5..2.5).contains(&light), "{light} ms");
        let p = pace(40, 1_000_000);
        let half = ms(steady(&p, start, 500_000, 2));
        assert!((18.0..22.0).contains(&half), "{half} ms");
        let p = pace(40, 1_000_000);
        let full = ms(steady(&p, start, 2_000_000, 2));
        assert!(
            (full - 40.0).abs() < 1e-3,
            "never above the full interval: {full} ms"
        );
    }

    #[test]
    fn a_quiet_spell_brings_the_interval_down() {
        let start = Instant::now();
        let p = pace(40, 1_000_000);
        steady(&p, start, 2_000_000, 1);
        assert!(ms(p.interval()) > 39.0);
        // One small delivery two seconds later: the flood is forgotten.
        p.record(1000, start + Duration::from_secs(3));
        assert!(ms(p.interval()) < 1.0, "{:?}", p.interval());
    }

    #[test]
    fn a_rate_of_zero_keeps_the_full_interval() {
        let p = pace(40, 0);
        assert_eq!(p.interval(), Duration::from_millis(40));
        p.record(1, Instant::now());
        assert_eq!(p.interval(), Duration::from_millis(40));
        let none = pace(0, 1_000_000);
        none.record(1_000_000, Instant::now());
        assert_eq!(none.interval(), Duration::ZERO);
    }
}
