//! One client connection's task, after it has joined its room.
//!
//! It reads every frame the server sends and counts ours in its [`Tally`]; a publisher also
//! sends messages on a fixed schedule inside the run's [`Window`]. One task owns the socket
//! (no split, no lock): a `select!` over the stop token, the next send time and the next frame.
//!
//! ```text
//!   Fleet ── window (watch) ──▶ client task ── send at start + phase + n·period ──▶ server
//!         ── stop (token) ───▶             ◀── every frame: classify, tally, latency ──
//!         ◀── ClientEnd (JoinHandle) ──
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::ledger::{LatencyRecorder, LatencySink, Progress, Receiver, Tally};
use crate::target::Ws;
use crate::wire::{self, Inbound, MsgId};

/// Most messages one publisher writes before it flushes and lets its reader run.
const MAX_BATCH: u64 = 256;

/// Most frames a client handles in a row before it looks at its stop token and timers again.
const MAX_DRAIN: usize = 256;

/// How long a client waits for the server's answer to its close frame at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// When publishers send: messages are scheduled in `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first message's scheduled time (before each publisher's phase).
    pub start: Instant,
    /// Nothing scheduled at or after this is sent.
    pub end: Instant,
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    /// Its global index (in message ids and in [`Shared::sent`]).
    pub publisher: u32,
    /// Seconds between two of its messages.
    pub period_s: f64,
    /// Seconds after the window's start of its first message, to spread publishers out.
    pub phase_s: f64,
    /// Bytes of `content`.
    pub payload: usize,
    /// Most messages it sends.
    pub limit: u64,
}

/// One client's place in the run.
#[derive(Debug, Clone)]
pub struct Role {
    /// Its connection index: token user, source address, progress slot.
    pub index: usize,
    /// Its room's index.
    pub room_index: u32,
    /// Its room's name.
    pub room: Arc<str>,
    /// Set for a publisher.
    pub publish: Option<PublishPlan>,
}

/// What every client of one run shares. Owned by the fleet; each task holds an `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// Cancelled when the run is over: clients close and return their tallies.
    pub stop: CancellationToken,
    /// `None` until publishing starts.
    pub window: watch::Receiver<Option<Window>>,
    /// Distinct deliveries per client, for progress and the drain.
    pub progress: Progress,
    /// Delivery latency.
    pub latency: Arc<LatencySink>,
    /// Room index of each publisher.
    pub publisher_room: Vec<u32>,
    /// Messages sent by each publisher so far.
    pub sent: Vec<AtomicU64>,
    /// Publishers past the end of their window.
    pub publishers_done: AtomicUsize,
    /// No message counter reaches this (the tallies' bound).
    pub max_seq: u64,
    /// Every client task ends by then, whatever happens.
    pub hard_deadline: Instant,
}

/// How a client task ended and what it saw.
#[derive(Debug)]
pub struct ClientEnd {
    /// Its tally, with its room.
    pub receiver: Receiver,
    /// The close code, when the server closed it before the end of the run.
    pub close_code: Option<u16>,
    /// What went wrong, if anything did before the end of the run.
    pub error: Option<String>,
}

/// Runs one joined client until [`Shared::stop`], then closes it.
pub async fn run(mut ws: Ws, role: Role, shared: Arc<Shared>) -> ClientEnd {
    let mut tally = Tally::new(shared.max_seq);
    let mut latency = LatencyRecorder::new(shared.latency.clone());
    let mut window_rx = shared.window.clone();
    let mut window = *window_rx.borrow_and_update();
    let mut watching = role.publish.is_some();
    let mut publisher = role.publish.map(|plan| Publisher { plan, seq: 0 });
    let mut next_send = None;
    if let (Some(publisher), Some(window)) = (&publisher, window) {
        next_send = Some(publisher.at(&window));
    }
    let mut close_code = None;
    let mut error = None;
    // Created once, not per frame: a fresh `cancelled()` would lock the token's shared state
    // and a fresh `Sleep` would re-register a timer on every frame.
    let stop = shared.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let deadline = tokio::time::sleep_until(tokio::time::Instant::from_std(shared.hard_deadline));
    tokio::pin!(deadline);
    let far_future = tokio::time::Instant::from_std(shared.hard_deadline);
    let send_timer = tokio::time::sleep_until(next_send.map_or(far_future, Into::into));
    tokio::pin!(send_timer);
    loop {
        tokio::select! {
            () = &mut stopped => {
                // The run is over: say goodbye, wait (bounded) for the server's close.
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break;
            }
            () = &mut deadline => {
                error = Some("still running at the hard deadline".to_owned());
                break;
            }
            // Publishing starts when the fleet opens the window.
            changed = window_rx.changed(), if watching && window.is_none() => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                window = *window_rx.borrow_and_update();
                if let (Some(publisher), Some(window)) = (&publisher, window) {
                    let at = publisher.at(&window);
                    next_send = Some(at);
                    send_timer.as_mut().reset(at.into());
                }
            }
            // The next scheduled message is due.
            () = &mut send_timer, if next_send.is_some() => {
                let (Some(p), Some(w)) = (publisher.as_mut(), window) else { continue };
                match p.send_due(&mut ws, &role.room, &w, &shared).await {
                    Ok(next) => {
                        next_send = next;
                        if let Some(at) = next {
                            send_timer.as_mut().reset(at.into());
                        }
                    }
                    Err(err) => {
                        error = Some(format!("send: {err}"));
                        break;
                    }
                }
            }
            // A frame from the server, then the ones read with it, without another trip
            // through the `select` (which would poll the stop token and both timers again).
            first = ws.next() => {
                // Frames read together arrived together: one clock read for all of them.
                let now_us = wire::now_us();
                let mut frame = first;
                let mut handled = 0;
                let ended = loop {
                    if let Some(end) = on_frame(frame, now_us, &role, &shared, &mut tally, &mut latency) {
                        break Some(end);
                    }
                    handled += 1;
                    if handled == MAX_DRAIN {
                        break None;
                    }
                    match ws.next().now_or_never() {
                        Some(next) => frame = next,
                        None => break None,
                    }
                };
                if let Some((code, message)) = ended {
                    close_code = code;
                    error = Some(message);
                    break;
                }
            }
        }
    }
    if let Some(p) = &publisher
        && next_send.is_some()
    {
        // Ended early (an error): it will send no more.
        shared.sent[p.plan.publisher as usize].store(p.seq, Ordering::Relaxed);
        shared.publishers_done.fetch_add(1, Ordering::Relaxed);
    }
    latency.flush();
    ClientEnd {
        receiver: Receiver {
            room: role.room_index,
            tally,
        },
        close_code,
        error,
    }
}

/// Handles one frame received at `now_us`; returns how the client ends (the server's close
/// code, if it sent one, and what happened) when the frame ends it.
fn on_frame(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    now_us: u64,
    role: &Role,
    shared: &Shared,
    tally: &mut Tally,
    latency: &mut LatencyRecorder,
) -> Option<(Option<u16>, String)> {
    match frame {
        Some(Ok(Message::Text(text))) => {
            match wire::classify(&text) {
                Inbound::Message(Some(id)) => count(id, now_us, role, shared, tally, latency),
                Inbound::Message(None) => tally.foreign += 1,
                _ => {}
            }
            None
        }
        Some(Ok(Message::Close(frame))) => Some((
            Some(frame.map_or(1005, |f| f.code.into())),
            "closed by the server".to_owned(),
        )),
        Some(Ok(_)) => None,
        Some(Err(err)) => Some((None, err.to_string())),
        None => Some((None, "connection ended".to_owned())),
    }
}

/// Counts one of our messages, received at `now_us`.
fn count(
    id: MsgId,
    now_us: u64,
    role: &Role,
    shared: &Shared,
    tally: &mut Tally,
    latency: &mut LatencyRecorder,
) {
    match shared.publisher_room.get(id.publisher as usize) {
        Some(&room) if room == role.room_index => {
            if tally.record(id) {
                latency.record_sent(id.sent_us, now_us);
                shared.progress.set(role.index, tally.unique);
            }
        }
        Some(_) => tally.misrouted += 1,
        None => tally.foreign += 1,
    }
}

/// A publisher's schedule and counter.
#[derive(Debug)]
struct Publisher {
    plan: PublishPlan,
    /// The next message's counter (= messages sent).
    seq: u64,
}

impl Publisher {
    /// When message `self.seq` is scheduled.
    fn at(&self, window: &Window) -> Instant {
        let offset = self.plan.phase_s + self.seq as f64 * self.plan.period_s;
        window.start + Duration::from_secs_f64(offset)
    }

    /// Sends every message due by now (at most [`MAX_BATCH`]), stamped with its scheduled
    /// time, so a publisher that falls behind shows up as latency, not as a lower rate.
    /// Returns when the next one is due, or `None` when this publisher is done.
    async fn send_due(
        &mut self,
        ws: &mut Ws,
        room: &str,
        window: &Window,
        shared: &Shared,
    ) -> Result<Option<Instant>, tokio_tungstenite::tungstenite::Error> {
        let now = Instant::now();
        let mut batch = 0;
        while batch < MAX_BATCH && self.seq < self.plan.limit && now < window.end {
            let at = self.at(window);
            if at > now || at >= window.end {
                break;
            }
            let id = MsgId {
                publisher: self.plan.publisher,
                seq: self.seq,
                sent_us: wire::micros_since_epoch(at),
            };
            ws.feed(Message::text(wire::message(room, id, self.plan.payload)))
                .await?;
            self.seq += 1;
            batch += 1;
        }
        if batch > 0 {
            ws.flush().await?;
            shared.sent[self.plan.publisher as usize].store(self.seq, Ordering::Relaxed);
        }
        let next = self.at(window);
        if self.seq >= self.plan.limit || next >= window.end || now >= window.end {
            shared.publishers_done.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(next.max(now)))
    }
}
