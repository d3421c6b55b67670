//! Exact accounting of deliveries, and latency.
//!
//! Each receiver keeps a [`Tally`]: per publisher, one bit per message counter, set when the
//! message arrives (a second arrival is a duplicate). Nothing is shared on that path, so
//! counting costs no contention. At the end [`account`] compares the tallies with what each
//! publisher sent: expected deliveries are `sent × members of the publisher's room`. Latency
//! samples go to each receiver's own [`LatencyRecorder`] buffer and are merged into one
//! HdrHistogram under a lock once per batch. [`Progress`] lets the scenario read delivery
//! counts while the run goes on (one cache line per receiver, written only by its owner).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::wire::MsgId;

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per publisher, bit `seq` is set once message `seq` arrived here.
    seen: HashMap<u32, Vec<u64>>,
    /// Counters at or beyond this are not ours (they could not have been sent).
    max_seq: u64,
    /// First deliveries of messages from this receiver's room.
    pub unique: u64,
    /// Second and later deliveries of the same message.
    pub duplicates: u64,
    /// Messages of ours from a publisher in another room.
    pub misrouted: u64,
    /// `message` envelopes whose content is not one of ours.
    pub foreign: u64,
}

impl Tally {
    /// An empty tally; no publisher sends `max_seq` messages or more.
    pub fn new(max_seq: u64) -> Self {
        Self {
            max_seq,
            ..Self::default()
        }
    }

    /// Records a delivery from a publisher in this receiver's room; `true` the first time.
    pub fn record(&mut self, id: MsgId) -> bool {
        if id.seq >= self.max_seq {
            self.foreign += 1;
            return false;
        }
        let bits = self.seen.entry(id.publisher).or_default();
        let word = usize::try_from(id.seq / 64).expect("bounded by max_seq");
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (id.seq % 64);
        if bits[word] & mask == 0 {
            bits[word] |= mask;
            self.unique += 1;
            true
        } else {
            self.duplicates += 1;
            false
        }
    }

    fn bits(&self, publisher: u32) -> &[u64] {
        self.seen.get(&publisher).map_or(&[], Vec::as_slice)
    }
}

/// The outcome of a run's deliveries.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// Messages the publishers sent.
    pub messages_sent: u64,
    /// Deliveries that should have happened: each message × members of its room.
    pub expected: u64,
    /// Distinct deliveries that happened.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Deliveries of a message a receiver already had.
    pub duplicates: u64,
    /// Messages delivered to a member of another room.
    pub misrouted: u64,
    /// Messages not of this run (unknown content or counter).
    pub foreign: u64,
    /// Messages that did not reach every member of their room.
    pub incomplete_messages: u64,
}

/// One receiver's tally with the room it is in.
#[derive(Debug)]
pub struct Receiver {
    /// Room index.
    pub room: u32,
    /// What it saw.
    pub tally: Tally,
}

/// Compares what was sent with what arrived.
///
/// `sent[p]` and `publisher_room[p]` describe publisher `p`; every member of every room must
/// be in `receivers` (one whose connection failed still brings its tally).
pub fn account(sent: &[u64], publisher_room: &[u32], receivers: &[Receiver]) -> Delivery {
    let mut by_room: HashMap<u32, Vec<&Tally>> = HashMap::new();
    let mut out = Delivery::default();
    for receiver in receivers {
        by_room
            .entry(receiver.room)
            .or_default()
            .push(&receiver.tally);
        out.received += receiver.tally.unique;
        out.duplicates += receiver.tally.duplicates;
        out.misrouted += receiver.tally.misrouted;
        out.foreign += receiver.tally.foreign;
    }
    for (publisher, (&sent, room)) in sent.iter().zip(publisher_room).enumerate() {
        let publisher = u32::try_from(publisher).expect("publishers are bounded by the CLI");
        let members = by_room.get(room).map_or(&[][..], Vec::as_slice);
        out.messages_sent += sent;
        out.expected += sent * members.len() as u64;
        out.incomplete_messages += sent - complete_messages(sent, publisher, members);
    }
    out.lost = out.expected.saturating_sub(out.received);
    out
}

/// How many of `publisher`'s first `sent` messages reached every one of `members`.
fn complete_messages(sent: u64, publisher: u32, members: &[&Tally]) -> u64 {
    if members.is_empty() {
        return 0;
    }
    let words = usize::try_from(sent.div_ceil(64)).expect("bounded by max_seq");
    let mut all = vec![u64::MAX; words];
    if !sent.is_multiple_of(64) {
        all[words - 1] = (1u64 << (sent % 64)) - 1;
    }
    for tally in members {
        let bits = tally.bits(publisher);
        for (i, word) in all.iter_mut().enumerate() {
            *word &= bits.get(i).copied().unwrap_or(0);
        }
    }
    all.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

/// The latency of the messages sent in one second of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct SecondLatency {
    /// Seconds from the first second asked for.
    pub second: u32,
    /// Deliveries of messages sent in that second.
    pub count: u64,
    /// Their 99th percentile, µs (2 significant digits).
    pub p99_us: u64,
    /// Their largest, µs.
    pub max_us: u64,
}

/// The run's latency histogram (1 µs to 1 h, 3 significant digits), and one per second of
/// sending (2 significant digits), so a run can say when its slow deliveries happened.
#[derive(Debug)]
pub struct LatencySink {
    hist: Mutex<Histogram<u64>>,
    /// Indexed by the second (since [`wire::epoch`](crate::wire::epoch)) the message was
    /// scheduled in; grown as needed.
    by_second: Mutex<Vec<Option<Histogram<u64>>>>,
}

impl Default for LatencySink {
    fn default() -> Self {
        Self {
            hist: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid"),
            ),
            by_second: Mutex::new(Vec::new()),
        }
    }
}

impl LatencySink {
    /// Percentiles of everything recorded so far.
    ///
    /// # Panics
    ///
    /// If a recorder panicked while holding the lock.
    pub fn summary(&self) -> LatencySummary {
        let hist = self.hist.lock().expect("latency lock poisoned");
        if hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: hist.len(),
            p50_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
            mean_us: hist.mean(),
        }
    }

    /// Each second in `[from, to)` (seconds since [`wire::epoch`](crate::wire::epoch), by
    /// scheduled send time) with what its messages' deliveries took; a second with none is
    /// reported with count 0.
    ///
    /// # Panics
    ///
    /// If a recorder panicked while holding the lock.
    pub fn by_second(&self, from: u64, to: u64) -> Vec<SecondLatency> {
        let seconds = self.by_second.lock().expect("latency lock poisoned");
        (from..to)
            .map(|second| {
                let offset = u32::try_from(second - from).unwrap_or(u32::MAX);
                let hist = usize::try_from(second)
                    .ok()
                    .and_then(|at| seconds.get(at))
                    .and_then(Option::as_ref);
                match hist {
                    Some(hist) if !hist.is_empty() => SecondLatency {
                        second: offset,
                        count: hist.len(),
                        p99_us: hist.value_at_quantile(0.99),
                        max_us: hist.max(),
                    },
                    _ => SecondLatency {
                        second: offset,
                        ..SecondLatency::default()
                    },
                }
            })
            .collect()
    }
}

/// Seconds of sending kept per second: a longer run still counts in the overall histogram.
const MAX_SECONDS: u64 = 3600;

/// Samples in this many are merged into the shared histogram at once.
const LATENCY_BATCH: usize = 1024;

/// One receiver's latency buffer; flushes into the [`LatencySink`] when full and on drop.
#[derive(Debug)]
pub struct LatencyRecorder {
    /// Latency (µs) and the second it was sent in ([`NO_SECOND`]: not known).
    buf: Vec<(u64, u64)>,
    sink: Arc<LatencySink>,
}

/// The second of a sample recorded without its send time.
const NO_SECOND: u64 = u64::MAX;

impl LatencyRecorder {
    /// A recorder feeding `sink`.
    pub fn new(sink: Arc<LatencySink>) -> Self {
        Self {
            buf: Vec::new(),
            sink,
        }
    }

    /// Records one latency, µs.
    pub fn record(&mut self, us: u64) {
        self.push(us, NO_SECOND);
    }

    /// Records the latency of a message scheduled at `sent_us` (µs since
    /// [`wire::epoch`](crate::wire::epoch)) and received at `now_us`, also under the second it
    /// was sent in ([`LatencySink::by_second`]).
    pub fn record_sent(&mut self, sent_us: u64, now_us: u64) {
        self.push(now_us.saturating_sub(sent_us), sent_us / 1_000_000);
    }

    fn push(&mut self, us: u64, second: u64) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(LATENCY_BATCH);
        }
        self.buf.push((us, second));
        if self.buf.len() >= LATENCY_BATCH {
            self.flush();
        }
    }

    /// Merges the buffered samples into the sink.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // One lock per batch; a poisoned lock means another receiver panicked: drop the samples.
        if let Ok(mut hist) = self.sink.hist.lock() {
            for &(us, _) in &self.buf {
                hist.saturating_record(us.max(1));
            }
        }
        if let Ok(mut seconds) = self.sink.by_second.lock() {
            for &(us, second) in &self.buf {
                if second >= MAX_SECONDS {
                    continue;
                }
                let at = second as usize;
                if seconds.len() <= at {
                    seconds.resize_with(at + 1, || None);
                }
                seconds[at]
                    .get_or_insert_with(|| {
                        Histogram::new_with_bounds(1, 3_600_000_000, 2)
                            .expect("constant bounds are valid")
                    })
                    .saturating_record(us.max(1));
            }
        }
        self.buf.clear();
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A counter on its own cache line, so receivers on different cores do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// Live delivery counts, one slot per receiver, read by the scenario for progress and drain.
#[derive(Debug)]
pub struct Progress {
    slots: Box<[Slot]>,
}

impl Progress {
    /// Slots for `receivers` receivers.
    pub fn new(receivers: usize) -> Self {
        Self {
            slots: (0..receivers).map(|_| Slot::default()).collect(),
        }
    }

    /// Receiver `index` has `count` distinct deliveries so far.
    pub fn set(&self, index: usize, count: u64) {
        if let Some(slot) = self.slots.get(index) {
            slot.0.store(count, Ordering::Relaxed);
        }
    }

    /// Receiver `index`'s count (0 for an index out of range).
    pub fn get(&self, index: usize) -> u64 {
        self.slots
            .get(index)
            .map_or(0, |slot| slot.0.load(Ordering::Relaxed))
    }

    /// Slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// All receivers' deliveries so far.
    pub fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_kept_per_second_of_sending() {
        let sink = Arc::new(LatencySink::default());
        let mut recorder = LatencyRecorder::new(sink.clone());
        // Second 5: 100 deliveries at 2 ms. Second 6: 99 at 1 ms and one at 80 ms. Second 8:
        // one. Seconds 7 and 9: none. A sample without a send time counts only overall.
        for _ in 0..100 {
            recorder.record_sent(5_000_000, 5_002_000);
        }
        for _ in 0..99 {
            recorder.record_sent(6_100_000, 6_101_000);
        }
        recorder.record_sent(6_900_000, 6_980_000);
        recorder.record_sent(8_000_000, 8_000_500);
        recorder.record(123);
        recorder.flush();
        assert_eq!(sink.summary().count, 202);
        let seconds = sink.by_second(5, 10);
        assert_eq!(seconds.len(), 5);
        assert_eq!(
            (seconds[0].second, seconds[0].count, seconds[0].p99_us / 100),
            (0, 100, 20),
        );
        assert_eq!((seconds[1].count, seconds[1].max_us / 1000), (100, 80));
        assert!(
            seconds[1].p99_us < 2_000,
            "one slow delivery in 100 is the 100th percentile"
        );
        assert_eq!(
            seconds[2],
            SecondLatency {
                second: 2,
                ..SecondLatency::default()
            }
        );
        assert_eq!((seconds[3].second, seconds[3].count), (3, 1));
        assert_eq!(seconds[4].count, 0);
    }

    fn id(publisher: u32, seq: u64) -> MsgId {
        MsgId {
            publisher,
            seq,
            sent_us: 0,
        }
    }

    #[test]
    fn duplicates_and_losses_are_counted_exactly() {
        // Room 0: publisher 0 sends 100 messages to members a and b.
        let mut a = Tally::new(1000);
        let mut b = Tally::new(1000);
        for seq in 0..100 {
            assert!(a.record(id(0, seq)));
            if seq != 70 {
                b.record(id(0, seq));
            }
        }
        assert!(!a.record(id(0, 5)), "second arrival is a duplicate");
        a.record(id(0, 5000)); // beyond max_seq: foreign
        let receivers = [
            Receiver { room: 0, tally: a },
            Receiver { room: 0, tally: b },
        ];
        let delivery = account(&[100], &[0], &receivers);
        assert_eq!(
            delivery,
            Delivery {
                messages_sent: 100,
                expected: 200,
                received: 199,
                lost: 1,
                duplicates: 1,
                misrouted: 0,
                foreign: 1,
                incomplete_messages: 1,
            }
        );
    }

    #[test]
    fn a_silent_publisher_and_an_empty_room_add_nothing() {
        let delivery = account(&[0], &[3], &[]);
        assert_eq!(delivery, Delivery::default());
    }

    #[test]
    fn latency_percentiles_come_from_every_recorder() {
        let sink = Arc::new(LatencySink::default());
        for start in [1u64, 501] {
            let mut recorder = LatencyRecorder::new(sink.clone());
            for us in start..start + 500 {
                recorder.record(us);
            }
        }
        let summary = sink.summary();
        assert_eq!(summary.count, 1000);
        assert!((495..=505).contains(&summary.p50_us), "{summary:?}");
        assert_eq!(summary.max_us, 1000);
    }
}
