//! A run's clients: set up (connect + join, bounded in concurrency and time), opened for
//! publishing, drained and stopped, with every client's [`ClientEnd`] collected.
//!
//! Client `i` is in room `i % rooms`; publisher `p` is client `p`, so publishers are spread
//! over the rooms round-robin. Every client task is spawned at once and takes a semaphore
//! permit only for its connect + join, so set-up concurrency is bounded while joined clients
//! already read (the server's join announcements must not pile up).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{self, ClientEnd, PublishPlan, Role, Shared, Window};
use crate::ledger::{
    self, Delivery, LatencySink, LatencySummary, Progress, Receiver, SecondLatency, Tally,
};
use crate::progress::Bar;
use crate::target::Connector;
use crate::wire;

/// How often waits poll the counters (progress bars, drain).
const POLL: Duration = Duration::from_millis(100);

/// Who is in the run.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Clients.
    pub clients: usize,
    /// Rooms (client `i` joins room `i % rooms`).
    pub rooms: u32,
    /// Prefix of room names (`{prefix}{index}`).
    pub room_prefix: String,
    /// Publishers (the first `publishers` clients).
    pub publishers: usize,
    /// Total messages per second over all publishers.
    pub rate: f64,
    /// Bytes of each message's content.
    pub payload: usize,
    /// Most messages one publisher sends.
    pub limit_per_publisher: u64,
    /// Connect + join at once.
    pub setup_concurrency: usize,
    /// Bound on the whole set-up.
    pub setup_timeout: Duration,
    /// Every client task ends after this long, whatever happens.
    pub lifetime: Duration,
}

/// The set-up's outcome.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Clients connected and joined.
    pub ready: usize,
    /// Failures by kind (`close 1013`, `io:ConnectionRefused`, …).
    pub failures: BTreeMap<String, u64>,
    /// One failure in full, to show.
    pub first_error: Option<String>,
    /// Wall time of the set-up.
    pub elapsed: Duration,
    /// Connect + join latency per client.
    pub handshake: LatencySummary,
}

/// Running clients.
#[derive(Debug)]
pub struct Fleet {
    plan: FleetPlan,
    shared: Arc<Shared>,
    window_tx: watch::Sender<Option<Window>>,
    tasks: JoinSet<ClientEnd>,
    /// Expected members per room (for the drain).
    members: Vec<u64>,
}

/// What the fleet saw, at the end.
#[derive(Debug, Clone, Default)]
pub struct FleetEnd {
    /// Exact delivery accounting.
    pub delivery: Delivery,
    /// Delivery latency.
    pub latency: LatencySummary,
    /// Delivery latency by second of the publishing window (by scheduled send time).
    pub latency_by_second: Vec<SecondLatency>,
    /// Clients closed by the server during the run, by close code.
    pub closed: BTreeMap<u16, u64>,
    /// Client errors during the run, by message.
    pub errors: BTreeMap<String, u64>,
}

impl Fleet {
    /// Connects and joins every client. Returns when all are in, or when the set-up timeout
    /// passed; failures are counted in [`Setup`], not returned as errors.
    ///
    /// # Errors
    ///
    /// A plan that does not fit (more publishers than clients).
    pub async fn launch(
        connector: &Connector,
        plan: FleetPlan,
        bar: &Bar,
    ) -> anyhow::Result<(Self, Setup)> {
        if plan.publishers > plan.clients {
            bail!(
                "{} publishers but only {} clients",
                plan.publishers,
                plan.clients
            );
        }
        let rooms = plan.rooms.max(1);
        let (window_tx, window_rx) = watch::channel(None);
        let started = Instant::now();
        let shared = Arc::new(Shared {
            stop: CancellationToken::new(),
            window: window_rx,
            progress: Progress::new(plan.clients),
            latency: Arc::new(LatencySink::default()),
            publisher_room: (0..plan.publishers).map(|p| p as u32 % rooms).collect(),
            sent: (0..plan.publishers).map(|_| AtomicU64::new(0)).collect(),
            publishers_done: AtomicUsize::new(0),
            max_seq: plan.limit_per_publisher,
            hard_deadline: started + plan.setup_timeout + plan.lifetime,
        });
        let mut members = vec![0u64; rooms as usize];
        let handshakes = Arc::new(LatencySink::default());
        let ready = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        // µs after `started` when the last set-up finished (the poll below is coarser).
        let last_done = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new((BTreeMap::new(), None::<String>)));
        let permits = Arc::new(Semaphore::new(plan.setup_concurrency.max(1)));
        let room_names: Vec<Arc<str>> = (0..rooms)
            .map(|r| Arc::from(format!("{}{r}", plan.room_prefix)))
            .collect();
        let per_publisher_rate = plan.rate / plan.publishers.max(1) as f64;
        let mut tasks = JoinSet::new();
        for index in 0..plan.clients {
            let room_index = index as u32 % rooms;
            members[room_index as usize] += 1;
            let publish = (index < plan.publishers).then(|| PublishPlan {
                publisher: index as u32,
                period_s: 1.0 / per_publisher_rate,
                // Spread the publishers' sends evenly over one period.
                phase_s: index as f64 / plan.publishers as f64 / per_publisher_rate,
                payload: plan.payload,
                limit: plan.limit_per_publisher,
            });
            let role = Role {
                index,
                room_index,
                room: room_names[room_index as usize].clone(),
                publish,
            };
            let connector = connector.clone();
            let shared = shared.clone();
            let permits = permits.clone();
            let handshakes = handshakes.clone();
            let (ready, failed, failures) = (ready.clone(), failed.clone(), failures.clone());
            let last_done = last_done.clone();
            tasks.spawn(async move {
                let joined = {
                    let _permit = permits
                        .acquire()
                        .await
                        .expect("the semaphore is never closed");
                    if shared.stop.is_cancelled() {
                        Err(None)
                    } else {
                        let begun = Instant::now();
                        let joined = connector.connect_and_join(index as u64, &role.room).await;
                        if joined.is_ok() {
                            let us = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
                            ledger::LatencyRecorder::new(handshakes).record(us);
                        }
                        let done_us =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        last_done.fetch_max(done_us, Ordering::Relaxed);
                        joined.map_err(Some)
                    }
                };
                match joined {
                    Ok(ws) => {
                        ready.fetch_add(1, Ordering::Relaxed);
                        client::run(ws, role, shared).await
                    }
                    Err(err) => {
                        let message = err.as_ref().map(ToString::to_string);
                        if let Some(err) = err {
                            let mut failures = failures.lock().expect("failure lock poisoned");
                            *failures.0.entry(err.kind()).or_insert(0) += 1;
                            failures.1.get_or_insert_with(|| err.to_string());
                        }
                        failed.fetch_add(1, Ordering::Relaxed);
                        failed_end(&role, &shared, message)
                    }
                }
            });
        }
        bar.set_length(plan.clients as u64);
        let deadline = started + plan.setup_timeout;
        loop {
            let (r, f) = (
                ready.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
            );
            bar.set_position((r + f) as u64);
            if r + f >= plan.clients || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let all_done =
            ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= plan.clients;
        let elapsed = if all_done {
            Duration::from_micros(last_done.load(Ordering::Relaxed))
        } else {
            started.elapsed()
        };
        let (failures, first_error) = {
            let mut failures = failures.lock().expect("failure lock poisoned");
            (std::mem::take(&mut failures.0), failures.1.take())
        };
        let ready = ready.load(Ordering::Relaxed);
        let mut setup = Setup {
            ready,
            failures,
            first_error,
            elapsed,
            handshake: handshakes.summary(),
        };
        let pending = plan.clients - ready - failed.load(Ordering::Relaxed);
        if pending > 0 {
            setup
                .failures
                .insert("setup timeout".to_owned(), pending as u64);
        }
        Ok((
            Self {
                plan,
                shared,
                window_tx,
                tasks,
                members,
            },
            setup,
        ))
    }

    /// Opens the publishing window `[now + lead, now + lead + duration)`.
    pub fn publish_for(&self, lead: Duration, duration: Duration) -> Window {
        let start = Instant::now() + lead;
        let window = Window {
            start,
            end: start + duration,
        };
        self.window_tx.send_replace(Some(window));
        window
    }

    /// Distinct deliveries so far, over all clients.
    pub fn delivered(&self) -> u64 {
        self.shared.progress.total()
    }

    /// Messages sent so far, over all publishers.
    pub fn sent(&self) -> u64 {
        self.shared
            .sent
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum()
    }

    /// Deliveries expected for what was sent so far.
    pub fn expected(&self) -> u64 {
        self.shared
            .sent
            .iter()
            .zip(&self.shared.publisher_room)
            .map(|(s, room)| s.load(Ordering::Relaxed) * self.members[*room as usize])
            .sum()
    }

    /// Waits until the window has closed and every publisher is done (bounded: the window's
    /// end plus `grace`), then until every expected delivery arrived or `drain` passed.
    /// Updates `bar` with deliveries.
    pub async fn wait_and_drain(
        &self,
        window: Window,
        grace: Duration,
        drain: Duration,
        bar: &Bar,
    ) {
        let publishers_deadline = window.end + grace;
        while self.shared.publishers_done.load(Ordering::Relaxed) < self.plan.publishers
            && Instant::now() < publishers_deadline
        {
            bar.set_message(format!(
                "sent {} delivered {}",
                self.sent(),
                self.delivered()
            ));
            if let Some(left) = window.end.checked_duration_since(Instant::now()) {
                bar.set_position(
                    (window.end - window.start).saturating_sub(left).as_millis() as u64
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let drain_deadline = Instant::now() + drain;
        let expected = self.expected();
        while self.delivered() < expected && Instant::now() < drain_deadline {
            bar.set_message(format!("draining {}/{expected}", self.delivered()));
            tokio::time::sleep(POLL / 4).await;
        }
    }

    /// Stops every client (each closes its socket) and accounts for what was sent and seen.
    pub async fn finish(mut self) -> FleetEnd {
        self.shared.stop.cancel();
        let mut ends = Vec::with_capacity(self.plan.clients);
        // Every task ends by the hard deadline; the extra bound covers a runtime too busy to
        // poll it.
        let bound =
            tokio::time::Instant::from_std(self.shared.hard_deadline) + Duration::from_secs(10);
        let mut out = FleetEnd::default();
        while let Ok(Some(joined)) = tokio::time::timeout_at(bound, self.tasks.join_next()).await {
            match joined {
                Ok(end) => ends.push(end),
                Err(err) => {
                    *out.errors
                        .entry(format!("client task failed: {err}"))
                        .or_insert(0) += 1;
                }
            }
        }
        self.tasks.abort_all();
        for end in &ends {
            if let Some(code) = end.close_code {
                *out.closed.entry(code).or_insert(0) += 1;
            }
            if let Some(error) = &end.error {
                *out.errors.entry(error.clone()).or_insert(0) += 1;
            }
        }
        let unreported = self.plan.clients - ends.len();
        if unreported > 0 {
            *out.errors
                .entry("client did not report".to_owned())
                .or_insert(0) += unreported as u64;
        }
        let sent: Vec<u64> = self
            .shared
            .sent
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        let receivers: Vec<Receiver> = ends.into_iter().map(|e| e.receiver).collect();
        out.delivery = ledger::account(&sent, &self.shared.publisher_room, &receivers);
        // A member whose task never reported is still a member: what it should have received
        // counts as lost (its share of `incomplete_messages` is not known).
        let expected: u64 = sent
            .iter()
            .zip(&self.shared.publisher_room)
            .map(|(s, room)| s * self.members[*room as usize])
            .sum();
        out.delivery.expected = expected;
        out.delivery.lost = expected.saturating_sub(out.delivery.received);
        out.latency = self.shared.latency.summary();
        if let Some(window) = *self.window_tx.borrow() {
            let first = wire::micros_since_epoch(window.start) / 1_000_000;
            let end = wire::micros_since_epoch(window.end).div_ceil(1_000_000);
            out.latency_by_second = self.shared.latency.by_second(first, end);
        }
        out
    }
}

/// The end of a client that never joined: an empty tally in its room (so its deliveries
/// count as lost) and the reason.
fn failed_end(role: &Role, shared: &Shared, error: Option<String>) -> ClientEnd {
    if role.publish.is_some() {
        // It will never send: count it done so nobody waits for it.
        shared.publishers_done.fetch_add(1, Ordering::Relaxed);
    }
    ClientEnd {
        receiver: Receiver {
            room: role.room_index,
            tally: Tally::new(shared.max_seq),
        },
        close_code: None,
        error: Some(error.unwrap_or_else(|| "not connected".to_owned())),
    }
}
