//! One publisher of the `history` scenario, after it has joined its room: a closed loop that
//! keeps `--window` messages in flight and sends the next one when an `ack` comes back, while
//! draining the room's fan-out (the publishers are the room's members, so every message in
//! the room reaches each of them, its own included).
//!
//! ```text
//!   scenario ── window (watch) ──▶ committer ── message {client_msg_id: ns:p:c} ──▶ server
//!            ── stop (token) ───▶           ◀── ack {seq, client_msg_id}: book, seq, latency
//!                                           ◀── message (fan-out): one counter, no parse
//!            ◀── CommitterEnd (JoinHandle) ──
//! ```
//!
//! One task owns the socket, as in [`crate::client`]. Each wake-up handles every frame already
//! read, feeds the messages those acks release and flushes once, so a burst of acks costs one
//! write. Fan-out frames are only counted: their `type` is read with a byte scan and nothing
//! else is looked at, because with N members a room's fan-out is N frames per persisted message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::acks::AckBook;
use crate::client::Window;
use crate::ledger::{LatencyRecorder, LatencySink, Progress};
use crate::target::Ws;
use crate::wire::{self, MsgId};

/// Most frames handled in one wake-up before the pending messages are flushed.
const MAX_BATCH: usize = 256;

/// How long a committer waits for the server's answer to its close frame at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One committer's place in the run.
#[derive(Debug, Clone)]
pub struct Role {
    /// Its index: token user, source address, progress slot, and the `p` of its keys.
    pub index: usize,
    /// Its room's index.
    pub room_index: u32,
    /// Its room's name.
    pub room: Arc<str>,
}

/// What every committer of one run shares. Owned by the scenario; each task holds an `Arc`.
#[derive(Debug)]
pub struct Shared {
    /// Cancelled when the run is over: committers close and return what they saw.
    pub stop: CancellationToken,
    /// `None` until the run starts; no message is sent at or after its end.
    pub window: watch::Receiver<Option<Window>>,
    /// Messages each committer keeps in flight.
    pub in_flight: usize,
    /// Bytes of each message's content.
    pub payload: usize,
    /// First part of every `client_msg_id` (`{prefix}:{publisher}:{counter}`): the run's id,
    /// so keys never repeat across runs on one database.
    pub key_prefix: String,
    /// Messages all committers together may still send (`--max-messages`): bounds memory.
    pub budget: AtomicU64,
    /// Messages sent, per committer (written by its owner only).
    pub sent: Progress,
    /// Distinct messages acked, per committer.
    pub acked: Progress,
    /// Fan-out `message` frames received, per committer.
    pub fanout: Progress,
    /// Send → ack latency.
    pub latency: Arc<LatencySink>,
    /// Every committer ends by then, whatever happens.
    pub hard_deadline: Instant,
}

/// What one committer saw.
#[derive(Debug, Default)]
pub struct CommitterEnd {
    /// Its index ([`Role::index`]).
    pub index: usize,
    /// Its room's index.
    pub room_index: u32,
    /// Messages it sent (counters `0..sent`).
    pub sent: u64,
    /// Its acks, by counter.
    pub book: AckBook,
    /// `(seq, counter)` of every ack carrying a seq, in arrival order.
    pub seqs: Vec<(u64, u64)>,
    /// Fan-out `message` frames it received.
    pub fanout: u64,
    /// `error` envelopes the server sent it.
    pub error_envelopes: u64,
    /// The first of them, in full.
    pub first_error_envelope: Option<String>,
    /// The close code, when the server closed it before the end of the run.
    pub close_code: Option<u16>,
    /// What went wrong, if anything did before the end of the run.
    pub error: Option<String>,
}

impl CommitterEnd {
    /// The end of a committer that never joined.
    pub fn not_joined(index: usize, room_index: u32, error: String) -> Self {
        Self {
            index,
            room_index,
            error: Some(error),
            ..Self::default()
        }
    }
}

/// A committer's loop state.
struct Committer {
    role: Role,
    shared: Arc<Shared>,
    /// `{prefix}:{index}:`, what every key of this committer starts with.
    key_stem: String,
    /// Counters sent and not yet answered, oldest first, with their send times (µs since the
    /// wire epoch). The server handles one connection's messages in order, so the answer to
    /// the front is the usual case.
    in_flight: VecDeque<(u64, u64)>,
    latency: LatencyRecorder,
    end: CommitterEnd,
    /// Messages fed since the last flush.
    unflushed: bool,
}

/// Runs one joined committer until [`Shared::stop`], then closes it.
pub async fn run(mut ws: Ws, role: Role, shared: Arc<Shared>) -> CommitterEnd {
    let mut window_rx = shared.window.clone();
    let mut window = *window_rx.borrow_and_update();
    let mut c = Committer {
        key_stem: format!("{}:{}:", shared.key_prefix, role.index),
        in_flight: VecDeque::with_capacity(shared.in_flight),
        latency: LatencyRecorder::new(shared.latency.clone()),
        end: CommitterEnd {
            index: role.index,
            room_index: role.room_index,
            ..CommitterEnd::default()
        },
        unflushed: false,
        role,
        shared: shared.clone(),
    };
    let mut started = false;
    // Created once, not per frame (see `client::run`).
    let stop = shared.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let far_future = tokio::time::Instant::from_std(shared.hard_deadline);
    let deadline = tokio::time::sleep_until(far_future);
    tokio::pin!(deadline);
    let start_timer = tokio::time::sleep_until(window.map_or(far_future, |w| w.start.into()));
    tokio::pin!(start_timer);
    loop {
        let result = tokio::select! {
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
                c.end.error = Some("still running at the hard deadline".to_owned());
                break;
            }
            // The scenario opens the window once every committer has joined.
            changed = window_rx.changed(), if window.is_none() => {
                if changed.is_ok() {
                    window = *window_rx.borrow_and_update();
                    if let Some(w) = window {
                        start_timer.as_mut().reset(w.start.into());
                    }
                }
                Ok(true)
            }
            // The window's start: put `in_flight` messages on the wire.
            () = &mut start_timer, if window.is_some() && !started => {
                started = true;
                let w = window.expect("checked by the guard");
                c.fill(&mut ws, &w).await.map(|()| true)
            }
            // Frames from the server: everything already read, then one flush.
            frame = ws.next() => c.on_frames(&mut ws, frame, window.as_ref()).await,
        };
        match result {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => {
                c.end.error = Some(format!("send: {err}"));
                break;
            }
        }
    }
    c.latency.flush();
    c.end
}

impl Committer {
    /// Sends messages until `in_flight` are outstanding (or the window or budget ends).
    async fn fill(&mut self, ws: &mut Ws, window: &Window) -> Result<(), tungstenite::Error> {
        while self.in_flight.len() < self.shared.in_flight && self.feed_next(ws, window).await? {}
        self.flush(ws).await
    }

    /// Feeds the next message if the window is open and the budget allows; `false` if not.
    async fn feed_next(
        &mut self,
        ws: &mut Ws,
        window: &Window,
    ) -> Result<bool, tungstenite::Error> {
        let now = Instant::now();
        if now < window.start || now >= window.end || !take_one(&self.shared.budget) {
            return Ok(false);
        }
        let counter = self.end.sent;
        let sent_us = wire::micros_since_epoch(now);
        let id = MsgId {
            publisher: u32::try_from(self.role.index).expect("publishers are bounded by the CLI"),
            seq: counter,
            sent_us,
        };
        let key = format!("{}{counter}", self.key_stem);
        let text = wire::keyed_message(&self.role.room, id, self.shared.payload, &key);
        ws.feed(Message::text(text)).await?;
        self.in_flight.push_back((counter, sent_us));
        self.end.sent += 1;
        self.unflushed = true;
        Ok(true)
    }

    async fn flush(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        if self.unflushed {
            self.unflushed = false;
            ws.flush().await?;
            self.shared.sent.set(self.role.index, self.end.sent);
        }
        Ok(())
    }

    /// Handles `first` and every frame already buffered behind it (at most [`MAX_BATCH`]),
    /// then flushes what their acks released. `Ok(false)` when the connection ended.
    async fn on_frames(
        &mut self,
        ws: &mut Ws,
        first: Option<Result<Message, tungstenite::Error>>,
        window: Option<&Window>,
    ) -> Result<bool, tungstenite::Error> {
        let mut frame = first;
        let mut handled = 0;
        let alive = loop {
            let Some(released) = self.on_frame(frame) else {
                break false;
            };
            if released > 0
                && let Some(w) = window
            {
                for _ in 0..released {
                    if !self.feed_next(ws, w).await? {
                        break;
                    }
                }
            }
            handled += 1;
            if handled >= MAX_BATCH {
                break true;
            }
            // Only what is already buffered: a pending read ends the batch (the stream is
            // cancel-safe, so dropping the poll loses nothing).
            match ws.next().now_or_never() {
                Some(next) => frame = next,
                None => break true,
            }
        };
        if alive {
            self.flush(ws).await?;
        }
        self.shared
            .acked
            .set(self.role.index, self.end.book.distinct);
        self.shared.fanout.set(self.role.index, self.end.fanout);
        Ok(alive)
    }

    /// Handles one frame; returns how many in-flight slots it freed, or `None` when the
    /// connection ended.
    fn on_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Option<usize> {
        match frame {
            Some(Ok(Message::Text(text))) => Some(match wire::kind(&text) {
                Some("message") => {
                    self.end.fanout += 1;
                    0
                }
                Some("ack") => self.on_ack(&text),
                Some("error") => {
                    // The server answers one connection's messages in order: an error is the
                    // answer to the oldest one in flight, which will never be acked.
                    self.end.error_envelopes += 1;
                    self.end
                        .first_error_envelope
                        .get_or_insert_with(|| text.to_string());
                    usize::from(self.in_flight.pop_front().is_some())
                }
                _ => 0,
            }),
            Some(Ok(Message::Close(frame))) => {
                self.end.close_code = Some(frame.map_or(1005, |f| f.code.into()));
                self.end.error = Some("closed by the server".to_owned());
                None
            }
            Some(Ok(_)) => Some(0),
            Some(Err(err)) => {
                self.end.error = Some(err.to_string());
                None
            }
            None => {
                self.end.error = Some("connection ended".to_owned());
                None
            }
        }
    }

    /// Books an ack; returns 1 when it answered a message in flight.
    fn on_ack(&mut self, text: &str) -> usize {
        let ack = wire::ack(text);
        let counter = ack
            .client_msg_id
            .and_then(|key| key.strip_prefix(self.key_stem.as_str()))
            .and_then(|c| c.parse::<u64>().ok());
        let first = self.end.book.record(counter, self.end.sent);
        let (Some(counter), true) = (counter, first) else {
            return 0;
        };
        if let Some(seq) = ack.seq {
            self.end.seqs.push((seq, counter));
        }
        let position = match self.in_flight.front() {
            Some(&(c, _)) if c == counter => Some(0),
            _ => self.in_flight.iter().position(|&(c, _)| c == counter),
        };
        let Some(position) = position else {
            return 0;
        };
        let (_, sent_us) = self
            .in_flight
            .remove(position)
            .expect("position is in range");
        self.latency.record(wire::now_us().saturating_sub(sent_us));
        1
    }
}

/// Takes one message from the shared budget; `false` when it is spent.
fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_overspent() {
        let budget = AtomicU64::new(2);
        assert!(take_one(&budget));
        assert!(take_one(&budget));
        assert!(!take_one(&budget));
        assert_eq!(budget.load(Ordering::Relaxed), 0);
    }
}
