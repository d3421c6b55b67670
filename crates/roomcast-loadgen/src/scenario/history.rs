//! `history`: persisted messages per second. roomcast persists every chat `message` before it
//! broadcasts it, then acks the sender with the message's `id`, its per-room `seq` and the
//! client's `client_msg_id`; an ack therefore means "committed", and acks per second are
//! persisted messages per second.
//!
//! ```text
//! connect + join all ─▶ settle ─▶ closed loop [start, start + duration) ─▶ drain acks, fan-out
//!                                 └───────────── CPU of both processes ──────────────┘
//!                     ─▶ close, account (acks, seqs per room) ─▶ read back through the API
//! ```
//!
//! `--publishers` connections spread over `--rooms` rooms; each keeps `--window` messages in
//! flight ([`crate::committer`]). Exact checks: every message sent got exactly one ack; per
//! room, the acked seqs are contiguous and unique ([`crate::acks`]); every member got every
//! message of its room (counted, not identified); with `--verify-history`, the room's
//! `last_seq` and its latest stored messages agree with the acks ([`crate::readback`]).
//!
//! The reference server stores nothing and sends no ack, so this scenario has no baseline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::acks::{self, AckTotals, RoomSeqs};
use crate::client::Window;
use crate::committer::{self, CommitterEnd, Role, Shared};
use crate::fleet::Setup;
use crate::ledger::{LatencyRecorder, LatencySink, LatencySummary, Progress};
use crate::procfs::{CpuMeter, CpuUse};
use crate::progress::Bar;
use crate::readback::{self, Api, RoomReadback};
use crate::report::{Better, Report};
use crate::scenario::fanout::push_cpu;
use crate::target::Target;
use crate::token::TokenMinter;

/// Time for the server's join announcements to reach everyone before the window opens.
const SETTLE: Duration = Duration::from_secs(1);

/// Time between opening the window and its start: lets every committer see it.
const LEAD: Duration = Duration::from_millis(200);

/// How often the drain polls the counters.
const POLL: Duration = Duration::from_millis(50);

/// One history run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HistoryPlan {
    /// Connections that publish (each is also a member of its room).
    pub publishers: u32,
    /// Rooms, publishers spread over them round-robin.
    pub rooms: u32,
    /// Messages each publisher keeps in flight.
    pub window: u32,
    /// How long publishers send.
    #[serde(serialize_with = "crate::scenario::as_secs")]
    pub duration: Duration,
    /// Bytes of each message's content.
    pub payload: u32,
    /// Most messages sent in the whole run (bounds the load generator's memory).
    pub max_messages: u64,
    /// Read back what was persisted through the HTTP API.
    pub verify_history: bool,
    /// Most stored messages read back per room.
    pub verify_messages: u32,
}

/// What the read-back found, over all rooms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Readback {
    /// Sum of the rooms' `last_seq` (the rooms are new, so this is what they hold).
    pub persisted: u64,
    /// Rooms whose `last_seq` is not the last seq acked there.
    pub rooms_mismatched: u64,
    /// Stored messages read back.
    pub read: u64,
    /// Of those, stored at the seq their sender was acked for.
    pub matched: u64,
    /// Of those, not.
    pub mismatched: u64,
    /// Why the read-back stopped early.
    pub error: Option<String>,
}

impl Readback {
    fn is_exact(&self) -> bool {
        self.error.is_none() && self.rooms_mismatched == 0 && self.mismatched == 0
    }
}

/// What a history run measured.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryOutcome {
    /// The plan it ran (rooms capped at publishers).
    pub plan: HistoryPlan,
    /// Seconds to connect and join every publisher.
    pub setup_s: f64,
    /// Sent, acked, and the exactness checks.
    pub acks: AckTotals,
    /// Messages acked by the window's end, per second of the window.
    pub persisted_per_s: f64,
    /// Acks in each second of the window (the last one may be partial).
    pub per_second: Vec<u64>,
    /// Send → ack latency.
    pub latency: LatencySummary,
    /// Fan-out frames expected: each room's acked messages × its members.
    pub fanout_expected: u64,
    /// Fan-out frames received.
    pub fanout_received: u64,
    /// `error` envelopes the server sent.
    pub error_envelopes: u64,
    /// The first of them.
    pub first_error_envelope: Option<String>,
    /// CPU of both processes during the window and the drain.
    pub cpu: CpuUse,
    /// Publishers the server closed, by code.
    pub closed: BTreeMap<u16, u64>,
    /// Client errors, by message.
    pub errors: BTreeMap<String, u64>,
    /// Per room, the acked seqs' check.
    pub rooms: Vec<RoomSeqs>,
    /// The read-back, when it ran.
    pub readback: Option<Readback>,
}

impl HistoryOutcome {
    /// Why the run is not exact, if it is not: a message not acked exactly once, a hole or a
    /// repeat in a room's seqs, a lost fan-out frame, an error envelope, a close, or a
    /// read-back that disagrees with the acks.
    pub fn why_not_exact(&self) -> Option<String> {
        let a = &self.acks;
        if a.sent == 0 {
            return Some("nothing was sent".to_owned());
        }
        if !a.is_exact() {
            return Some(format!(
                "acks: {} unacked, {} duplicate, {} unknown; seqs: {} missing, {} repeated",
                a.unacked, a.duplicate_acks, a.unknown_acks, a.seq_missing, a.seq_duplicates
            ));
        }
        if self.fanout_received < self.fanout_expected {
            return Some(format!(
                "fan-out: {} of {} frames received",
                self.fanout_received, self.fanout_expected
            ));
        }
        if self.error_envelopes > 0 {
            return Some(format!("{} error envelopes", self.error_envelopes));
        }
        if !self.closed.is_empty() {
            return Some(format!("closed by the server: {:?}", self.closed));
        }
        if !self.errors.is_empty() {
            return Some(format!("client errors: {:?}", self.errors));
        }
        match &self.readback {
            Some(r) if !r.is_exact() => Some(format!(
                "read-back: {} rooms' last_seq differ, {} of {} stored messages differ{}",
                r.rooms_mismatched,
                r.mismatched,
                r.read,
                r.error
                    .as_ref()
                    .map_or_else(String::new, |e| format!("; {e}"))
            )),
            _ => None,
        }
    }

    /// The table and JSON figures.
    pub fn report(&self) -> Report {
        let mut r = Report::default();
        let a = &self.acks;
        let ms = |us: u64| us as f64 / 1000.0;
        let count = |n: u64| n as f64;
        r.push(
            "setup_s",
            "setup (connect + join all)",
            "s",
            self.setup_s,
            Better::Lower,
        );
        r.push(
            "messages_sent",
            "messages sent",
            "",
            count(a.sent),
            Better::Neither,
        );
        r.push(
            "acked",
            "messages acked (persisted)",
            "",
            count(a.acked),
            Better::Higher,
        );
        r.push(
            "persisted_per_s",
            "persisted messages",
            "/s",
            self.persisted_per_s,
            Better::Higher,
        );
        let slowest = self.per_second.iter().copied().min().map(count);
        r.push(
            "slowest_second",
            "slowest whole second",
            "/s",
            slowest,
            Better::Higher,
        );
        r.push(
            "unacked",
            "sent, never acked",
            "",
            count(a.unacked),
            Better::Lower,
        );
        r.push(
            "duplicate_acks",
            "acked twice",
            "",
            count(a.duplicate_acks),
            Better::Lower,
        );
        r.push(
            "unknown_acks",
            "acks for nothing sent",
            "",
            count(a.unknown_acks),
            Better::Lower,
        );
        r.push(
            "seq_missing",
            "seq gaps (in rooms)",
            "",
            count(a.seq_missing),
            Better::Lower,
        );
        r.push(
            "seq_duplicates",
            "seq repeats (in rooms)",
            "",
            count(a.seq_duplicates),
            Better::Lower,
        );
        r.push(
            "p50_ms",
            "ack latency p50",
            "ms",
            ms(self.latency.p50_us),
            Better::Lower,
        );
        r.push(
            "p90_ms",
            "ack latency p90",
            "ms",
            ms(self.latency.p90_us),
            Better::Lower,
        );
        r.push(
            "p99_ms",
            "ack latency p99",
            "ms",
            ms(self.latency.p99_us),
            Better::Lower,
        );
        r.push(
            "p999_ms",
            "ack latency p99.9",
            "ms",
            ms(self.latency.p999_us),
            Better::Lower,
        );
        r.push(
            "max_ms",
            "ack latency max",
            "ms",
            ms(self.latency.max_us),
            Better::Lower,
        );
        r.push(
            "fanout_received",
            "fan-out frames received",
            "",
            count(self.fanout_received),
            Better::Higher,
        );
        r.push(
            "fanout_missing",
            "fan-out frames missing",
            "",
            count(self.fanout_expected.saturating_sub(self.fanout_received)),
            Better::Lower,
        );
        r.push(
            "error_envelopes",
            "error envelopes",
            "",
            count(self.error_envelopes),
            Better::Lower,
        );
        r.push(
            "closed_by_server",
            "publishers closed by server",
            "",
            count(self.closed.values().sum()),
            Better::Lower,
        );
        r.push(
            "client_errors",
            "client errors",
            "",
            count(self.errors.values().sum()),
            Better::Lower,
        );
        let rb = self.readback.as_ref();
        r.push(
            "history_persisted",
            "read back: rooms' last_seq summed",
            "",
            rb.map(|b| count(b.persisted)),
            Better::Neither,
        );
        r.push(
            "history_checked",
            "read back: stored messages checked",
            "",
            rb.map(|b| count(b.read)),
            Better::Neither,
        );
        r.push(
            "history_mismatches",
            "read back: rooms + messages differing",
            "",
            rb.map(|b| count(b.rooms_mismatched + b.mismatched)),
            Better::Lower,
        );
        push_cpu(
            &mut r,
            &self.cpu,
            a.acked,
            "server_us_per_message",
            "server CPU per persisted message",
        );
        match self.why_not_exact() {
            None => r.notes.push(format!(
                "exact: {} messages acked once each, every room gap-free{}",
                a.acked,
                if self.readback.is_some() {
                    ", read back"
                } else {
                    ""
                }
            )),
            Some(why) => r.notes.push(format!("NOT EXACT: {why}")),
        }
        if a.rooms_not_from_1 > 0 {
            r.notes.push(format!(
                "{} rooms did not start at seq 1 (not new?)",
                a.rooms_not_from_1
            ));
        }
        if let Some(first) = &self.first_error_envelope {
            r.notes.push(format!("first error envelope: {first}"));
        }
        for (error, n) in &self.errors {
            r.notes.push(format!("{n} × {error}"));
        }
        r.details = json!({ "outcome": self });
        r
    }
}

/// Runs one history scenario against `target`; users and rooms are named after `namespace`.
///
/// # Errors
///
/// A plan that does not fit, or publishers that could not all connect and join.
pub async fn run(
    target: &Target,
    plan: &HistoryPlan,
    namespace: &str,
) -> anyhow::Result<HistoryOutcome> {
    let mut plan = *plan;
    plan.rooms = plan.rooms.min(plan.publishers).max(1);
    let publishers = plan.publishers as usize;
    crate::scenario::check_fd_budget(publishers)?;
    let rooms = plan.rooms;
    let room_names: Vec<Arc<str>> = (0..rooms)
        .map(|r| Arc::from(format!("lg-{namespace}-h{r}")))
        .collect();
    let members: Vec<u64> = (0..rooms)
        .map(|r| (0..publishers).filter(|i| *i as u32 % rooms == r).count() as u64)
        .collect();
    let (window_tx, window_rx) = watch::channel(None);
    let lifetime = target.setup_timeout
        + SETTLE
        + LEAD
        + plan.duration
        + 2 * target.drain
        + Duration::from_secs(30);
    let shared = Arc::new(Shared {
        stop: CancellationToken::new(),
        window: window_rx,
        in_flight: plan.window as usize,
        payload: plan.payload as usize,
        key_prefix: namespace.to_owned(),
        budget: AtomicU64::new(plan.max_messages),
        sent: Progress::new(publishers),
        acked: Progress::new(publishers),
        fanout: Progress::new(publishers),
        latency: Arc::new(LatencySink::default()),
        hard_deadline: Instant::now() + lifetime,
    });

    // Set-up: every task spawned at once, a permit only for its connect + join.
    let bar = Bar::new(&format!("{} join", target.label), publishers as u64);
    let (mut tasks, setup) = launch(target, namespace, &room_names, &shared, &bar).await;
    bar.finish();
    if setup.ready < publishers {
        shared.stop.cancel();
        tasks.abort_all();
        bail!(
            "{}: only {}/{publishers} publishers joined; failures {:?}; first: {}",
            target.label,
            setup.ready,
            setup.failures,
            setup.first_error.unwrap_or_default()
        );
    }
    tokio::time::sleep(SETTLE).await;

    // The window, sampled once a second.
    let bar = Bar::new(
        &format!("{} persist", target.label),
        plan.duration.as_millis() as u64,
    );
    let cpu = CpuMeter::start(target.server_pid);
    let start = Instant::now() + LEAD;
    let window = Window {
        start,
        end: start + plan.duration,
    };
    window_tx.send_replace(Some(window));
    let mut per_second = Vec::new();
    let mut last = 0;
    let mut tick = start;
    while tick < window.end {
        tick = (tick + Duration::from_secs(1)).min(window.end);
        tokio::time::sleep_until(tick.into()).await;
        let acked = shared.acked.total();
        if tick - start <= plan.duration && (tick - start).subsec_nanos() == 0 {
            per_second.push(acked - last);
        }
        last = acked;
        bar.set_position((tick - start).as_millis() as u64);
        bar.set_message(format!("acked {acked}"));
    }
    let acked_by_end = shared.acked.total();

    // Drain: every ack, then every fan-out frame those acks imply.
    let drain_deadline = Instant::now() + target.drain;
    while shared.acked.total() < shared.sent.total() && Instant::now() < drain_deadline {
        bar.set_message(format!(
            "draining acks {}/{}",
            shared.acked.total(),
            shared.sent.total()
        ));
        tokio::time::sleep(POLL).await;
    }
    let fanout_expected = || {
        (0..publishers)
            .map(|i| shared.acked.get(i) * members[i % rooms as usize])
            .sum::<u64>()
    };
    let drain_deadline = Instant::now() + target.drain;
    while shared.fanout.total() < fanout_expected() && Instant::now() < drain_deadline {
        bar.set_message(format!(
            "draining fan-out {}/{}",
            shared.fanout.total(),
            fanout_expected()
        ));
        tokio::time::sleep(POLL).await;
    }
    let cpu = cpu.stop();
    bar.finish();

    // Stop and account.
    shared.stop.cancel();
    let ends = collect(&mut tasks, &shared, publishers).await;
    let mut outcome = HistoryOutcome {
        plan,
        setup_s: setup.elapsed.as_secs_f64(),
        acks: AckTotals::default(),
        persisted_per_s: acked_by_end as f64 / plan.duration.as_secs_f64(),
        per_second,
        latency: shared.latency.summary(),
        fanout_expected: 0,
        fanout_received: 0,
        error_envelopes: 0,
        first_error_envelope: None,
        cpu,
        closed: BTreeMap::new(),
        errors: ends.errors,
        rooms: Vec::new(),
        readback: None,
    };
    // Per room: (seq, publisher, counter) of every ack, sorted by seq.
    let mut by_room: Vec<Vec<(u64, u32, u64)>> = vec![Vec::new(); rooms as usize];
    let mut acked_in_room = vec![0u64; rooms as usize];
    for end in ends.ends {
        let room = end.room_index as usize;
        outcome.acks.add_publisher(&end.book, end.sent);
        acked_in_room[room] += end.book.distinct;
        outcome.fanout_received += end.fanout;
        outcome.error_envelopes += end.error_envelopes;
        if outcome.first_error_envelope.is_none() {
            outcome.first_error_envelope = end.first_error_envelope;
        }
        if let Some(code) = end.close_code {
            *outcome.closed.entry(code).or_insert(0) += 1;
        }
        if let Some(error) = end.error {
            *outcome.errors.entry(error).or_insert(0) += 1;
        }
        let publisher = u32::try_from(end.index).expect("publishers are bounded by the CLI");
        by_room[room].extend(end.seqs.into_iter().map(|(seq, c)| (seq, publisher, c)));
    }
    for (room, acked) in by_room.iter_mut().zip(&acked_in_room) {
        room.sort_unstable();
        let mut seqs: Vec<u64> = room.iter().map(|&(seq, _, _)| seq).collect();
        let checked = acks::check_room(&mut seqs);
        outcome.acks.add_room(&checked);
        outcome.rooms.push(checked);
        outcome.fanout_expected += acked * members[outcome.rooms.len() - 1];
    }

    if plan.verify_history {
        let token = TokenMinter::new(target.secret.as_bytes(), namespace).mint(0);
        let api = Api::new(target.endpoint.addr(), token);
        let mut readback = Readback::default();
        for ((name, acked), seqs) in room_names.iter().zip(&by_room).zip(&outcome.rooms) {
            match readback::verify_room(&api, name, acked, u64::from(plan.verify_messages)).await {
                Ok(RoomReadback {
                    last_seq,
                    read,
                    matched,
                    mismatched,
                }) => {
                    readback.persisted += last_seq;
                    if Some(last_seq) != seqs.last.or(Some(0)) {
                        readback.rooms_mismatched += 1;
                    }
                    readback.read += read;
                    readback.matched += matched;
                    readback.mismatched += mismatched;
                }
                Err(err) => {
                    readback.error = Some(format!("{err:#}"));
                    break;
                }
            }
        }
        outcome.readback = Some(readback);
    }
    Ok(outcome)
}

/// Spawns every committer and waits until all joined, or the set-up timeout passed.
async fn launch(
    target: &Target,
    namespace: &str,
    room_names: &[Arc<str>],
    shared: &Arc<Shared>,
    bar: &Bar,
) -> (JoinSet<CommitterEnd>, Setup) {
    let publishers = shared.sent.len();
    let rooms = room_names.len() as u32;
    let connector = target.connector(namespace);
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(target.setup_concurrency.max(1)));
    let handshakes = Arc::new(LatencySink::default());
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    // µs after `started` when the last set-up finished.
    let last_done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new((BTreeMap::<String, u64>::new(), None::<String>)));
    let mut tasks = JoinSet::new();
    for index in 0..publishers {
        let room_index = index as u32 % rooms;
        let role = Role {
            index,
            room_index,
            room: room_names[room_index as usize].clone(),
        };
        let (connector, shared, permits) = (connector.clone(), shared.clone(), permits.clone());
        let (ready, failed, failures) = (ready.clone(), failed.clone(), failures.clone());
        let (handshakes, last_done) = (handshakes.clone(), last_done.clone());
        tasks.spawn(async move {
            let joined = {
                let _permit = permits
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                let begun = Instant::now();
                let joined = connector.connect_and_join(index as u64, &role.room).await;
                if joined.is_ok() {
                    let us = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
                    LatencyRecorder::new(handshakes).record(us);
                }
                let done_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                last_done.fetch_max(done_us, Ordering::Relaxed);
                joined
            };
            match joined {
                Ok(ws) => {
                    ready.fetch_add(1, Ordering::Relaxed);
                    committer::run(ws, role, shared).await
                }
                Err(err) => {
                    {
                        // Lock scope: count the failure, keep the first in full.
                        let mut failures = failures.lock().expect("failure lock poisoned");
                        *failures.0.entry(err.kind()).or_insert(0) += 1;
                        failures.1.get_or_insert_with(|| err.to_string());
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    CommitterEnd::not_joined(index, room_index, err.to_string())
                }
            }
        });
    }
    let deadline = started + target.setup_timeout;
    loop {
        let done = ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        bar.set_position(done as u64);
        if done >= publishers || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = ready.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let elapsed = if ready + failed >= publishers {
        Duration::from_micros(last_done.load(Ordering::Relaxed))
    } else {
        started.elapsed()
    };
    let (mut failures, first_error) = {
        let mut failures = failures.lock().expect("failure lock poisoned");
        (std::mem::take(&mut failures.0), failures.1.take())
    };
    let pending = publishers - ready - failed;
    if pending > 0 {
        failures.insert("setup timeout".to_owned(), pending as u64);
    }
    let setup = Setup {
        ready,
        failures,
        first_error,
        elapsed,
        handshake: handshakes.summary(),
    };
    (tasks, setup)
}

/// Every committer's end, and errors of tasks that did not report.
struct Ends {
    ends: Vec<CommitterEnd>,
    errors: BTreeMap<String, u64>,
}

/// Joins every committer (bounded by the hard deadline).
async fn collect(tasks: &mut JoinSet<CommitterEnd>, shared: &Shared, publishers: usize) -> Ends {
    let mut ends = Vec::with_capacity(publishers);
    let mut errors = BTreeMap::new();
    // Every task ends by the hard deadline; the extra bound covers a runtime too busy to
    // poll it.
    let bound = tokio::time::Instant::from_std(shared.hard_deadline) + Duration::from_secs(10);
    while let Ok(Some(joined)) = tokio::time::timeout_at(bound, tasks.join_next()).await {
        match joined {
            Ok(end) => ends.push(end),
            Err(err) => {
                *errors
                    .entry(format!("publisher task failed: {err}"))
                    .or_insert(0) += 1;
            }
        }
    }
    tasks.abort_all();
    let unreported = publishers - ends.len();
    if unreported > 0 {
        *errors
            .entry("publisher did not report".to_owned())
            .or_insert(0) += unreported as u64;
    }
    Ends { ends, errors }
}
