//! [`Outbound`]: one connection's bounded queue of encoded frames, and its close signal.
//!
//! Everyone who sends to a connection (broadcasts, direct sends, its own hooks) calls
//! [`Outbound::try_send`] or a variant of it, which never waits (a reply to the connection,
//! [`Outbound::try_send_now`], also ends the session's write interval): a full queue records "slow consumer" (1013) as the
//! close reason and wakes the session, which closes; it never slows the sender. The session task
//! swaps the queue out and writes the batch, then flushes once. A room's group of messages
//! arrives already framed for the wire, shared by every member ([`Outbound::try_send_framed`]),
//! and counts against the bound as the messages it holds. When such a group finds the queue
//! empty and the connection is a TCP socket, the deliverer may write it itself instead of waking
//! the session ([`Outbound::send_framed`], [`Outbound::write_queued`]): the queue also holds the
//! socket's write side and says who writes when, so the two never interleave.
//!
//! Why not `tokio::sync::mpsc`: its first block of 32 slots is allocated when the channel is
//! created, ~1.3 KB per idle connection for `Frame`s (measured; docs/PERFORMANCE.md). This queue is a
//! `VecDeque` that allocates on the first frame, plus an `AtomicWaker`; the whole contract (bounded,
//! non-blocking, 1013 on overflow, batch then flush) lives in this one type so the choice stays
//! local.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use tokio::time::{Duration, Instant};

use crate::frame::{CloseReason, Frame};
use crate::protocol::Dialect;
use crate::ws::socket::Writer;
use crate::ws::{Deflate, Framed, Outgoing};

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection's queue was full: it reads too slowly and is being closed with 1013.
    #[error("connection queue full (slow consumer); it is being closed")]
    Full,
    /// The connection is closing or gone.
    #[error("connection closed")]
    Closed,
}

/// One connection's outbound queue. Cheap to clone; the hub holds one clone, the session one.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    shared: Arc<Shared>,
}

struct Shared {
    /// Frames and the close reason under one short lock: never held across an `.await`.
    queue: Mutex<Queue>,
    /// Wakes the session when a frame is queued or a close is requested. Readiness is the
    /// queue's state, not a stored permit, so a wake-up between two polls cannot be lost; and
    /// the session's wait is a 8-byte `poll_fn` rather than tokio's `Notified` (80 bytes in
    /// every idle connection's task).
    wake: AtomicWaker,
    /// A `u32`, like `replay`: this struct is allocated for every connection.
    capacity: u32,
    /// permessage-deflate as the connection negotiated it: broadcasts queued here take the
    /// group's compressed framing (`hub::state`). One byte, beside `capacity`.
    deflate: Option<Deflate>,
    /// What the connection's frames are encoded for. Here rather than in the hub's entry for
    /// the connection: a room's delivery reaches a member through its queue alone, and this
    /// struct had 16 bytes to spare in its allocation (144 of 160).
    dialect: &'static dyn Dialect,
    /// When the peer last sent any frame (a pong included), on the hub's clock (ms). The hub's
    /// sweep closes the connection when this is `pong_wait` old.
    last_read: AtomicU64,
    /// When the peer last sent a data message (text or binary), on the hub's clock (ms): the
    /// idle deadline (`connection_timeout`).
    last_data: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("queue", &self.queue)
            .field("capacity", &self.capacity)
            .field("deflate", &self.deflate)
            .field("dialect", &self.dialect.name())
            .field("last_read", &self.last_read)
            .field("last_data", &self.last_data)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Outgoing>,
    /// Messages queued: a [`Framed`] entry counts as the messages it holds.
    messages: u32,
    /// Frames of a history replay still queued: they may exceed `capacity` (a replay is
    /// bounded by its own limit), and live frames get the usual room on top of them.
    replay: u32,
    /// Set once: the first reason wins.
    /// Boxed: rare, and 24 bytes less in every connection's queue.
    close: Option<Box<CloseReason>>,
    /// The hub's sweep asks for a protocol ping; the session writes it with its next batch.
    ping: bool,
    /// A reply to this connection is queued ([`Outbound::try_send_now`], a replay): the next
    /// batch leaves without waiting out the write interval. Cleared by [`Outbound::take`].
    urgent: bool,
    /// The session took a batch ([`Outbound::take`]) and is writing it, outside this lock,
    /// until [`Outbound::written`]: nobody else writes to the socket meanwhile.
    writing: bool,
    /// The front entry is what a deliverer's write left of a group: it must go before any
    /// other byte, a control frame's too ([`Outbound::claim`]).
    partial: bool,
    /// When the last batch left, by the session or by a deliverer
    /// ([`Outbound::write_queued`]): the next waits out the write interval after it.
    last_write: Option<Instant>,
    /// The socket's write side, when the connection is a TCP socket: a deliverer writes
    /// through it under this lock when the session is not writing. Dropped when a close is
    /// recorded (the session writes from then on, through its own side).
    writer: Option<Writer>,
}

impl Queue {
    /// Whether the next batch leaves without waiting out the write interval: a close is
    /// pending or a reply is queued.
    fn at_once(&self) -> bool {
        self.close.is_some() || self.urgent
    }
}

/// What [`Outbound::take`] hands the session.
#[derive(Debug)]
pub(crate) struct Taken {
    /// Everything queued, in order.
    pub(crate) frames: VecDeque<Outgoing>,
    /// A protocol ping is due.
    pub(crate) ping: bool,
    /// A close was requested ([`Outbound::close_reason`] has the reason); the frames queued
    /// before it are still to be written first.
    pub(crate) closing: bool,
}

/// A group a deliverer queued into an empty queue without waking the session
/// ([`Outbound::send_framed`]): [`PendingWrite::write`] writes it from the deliverer's thread
/// once the hub's lock is released. Dropped unused, it wakes the session, which writes it as
/// usual: nothing queued is ever left without a writer.
#[derive(Debug)]
pub(crate) struct PendingWrite(Option<Outbound>);

impl PendingWrite {
    /// Writes what the connection has queued, if that can be done now
    /// ([`Outbound::write_queued`]), or wakes its session. Returns whether it was all written.
    pub(crate) fn write(mut self, now: Instant, interval: Duration) -> bool {
        self.0
            .take()
            .is_some_and(|outbound| outbound.write_queued(now, interval))
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if let Some(outbound) = &self.0 {
            outbound.shared.wake.wake();
        }
    }
}

impl Outbound {
    /// An empty queue for a native connection that opened at `now` on the hub's clock (ms).
    #[cfg(test)]
    pub(crate) fn new(capacity: usize, now: u64) -> Self {
        Self::for_dialect(capacity, now, &crate::protocol::native::NATIVE)
    }

    /// An empty queue for a connection speaking `dialect`.
    #[cfg(test)]
    pub(crate) fn for_dialect(capacity: usize, now: u64, dialect: &'static dyn Dialect) -> Self {
        Self::with_writer(capacity, now, dialect, None, None)
    }

    /// An empty queue for a native connection that opened at `now` on the hub's clock (ms) and
    /// negotiated permessage-deflate as `deflate` says.
    #[cfg(test)]
    pub(crate) fn with_deflate(capacity: usize, now: u64, deflate: Option<Deflate>) -> Self {
        Self::with_writer(
            capacity,
            now,
            &crate::protocol::native::NATIVE,
            deflate,
            None,
        )
    }

    /// An empty queue for a connection that opened at `now` on the hub's clock (ms), speaks
    /// `dialect` and negotiated permessage-deflate as `deflate` says, with the socket's write
    /// side, through which deliverers may write what they queue ([`Outbound::write_queued`]).
    pub(crate) fn with_writer(
        capacity: usize,
        now: u64,
        dialect: &'static dyn Dialect,
        deflate: Option<Deflate>,
        writer: Option<Writer>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    writer,
                    ..Queue::default()
                }),
                wake: AtomicWaker::new(),
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
                deflate,
                dialect,
                last_read: AtomicU64::new(now),
                last_data: AtomicU64::new(now),
            }),
        }
    }

    /// permessage-deflate as the connection negotiated it, if it did.
    pub(crate) fn deflate(&self) -> Option<Deflate> {
        self.shared.deflate
    }

    /// What the connection's frames are encoded for.
    pub(crate) fn dialect(&self) -> &'static dyn Dialect {
        self.shared.dialect
    }

    /// Records that the peer sent a frame at `now` (ms on the hub's clock); `data` when it was
    /// a text or binary message. Two relaxed stores: the sweep only needs a recent value.
    pub(crate) fn heard_from(&self, now: u64, data: bool) {
        self.shared.last_read.store(now, Ordering::Relaxed);
        if data {
            self.shared.last_data.store(now, Ordering::Relaxed);
        }
    }

    /// When the peer last sent any frame, and a data message (ms on the hub's clock).
    pub(crate) fn last_heard(&self) -> (u64, u64) {
        (
            self.shared.last_read.load(Ordering::Relaxed),
            self.shared.last_data.load(Ordering::Relaxed),
        )
    }

    /// Asks the session to send a protocol ping. Nothing happens when it is closing.
    pub(crate) fn request_ping(&self) {
        let mut queue = self.lock();
        if queue.close.is_some() || queue.ping {
            return;
        }
        queue.ping = true;
        drop(queue);
        self.shared.wake.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (push/swap only).
        self.shared
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `frame` without waiting: a broadcast, which waits out the write interval.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), SendError> {
        self.push(frame, false)
    }

    /// Queues `frame`, a reply this connection waits for (an ack, an error, a direct answer), to
    /// be written without waiting out the write interval, with whatever is queued before it.
    pub(crate) fn try_send_now(&self, frame: Frame) -> Result<(), SendError> {
        self.push(frame, true)
    }

    /// Queues one frame; `urgent` ends the session's write interval.
    fn push(&self, frame: Frame, urgent: bool) -> Result<(), SendError> {
        let mut queue = self.lock();
        self.make_room(&mut queue, 1)?;
        // The first frame into an empty queue wakes the session; so does the first reply, as
        // the session may be waiting out the interval with frames queued.
        let wake = queue.frames.is_empty() || (urgent && !queue.urgent);
        queue.urgent |= urgent;
        queue.frames.push_back(Outgoing::Frame(frame));
        drop(queue);
        self.wake_if(wake);
        Ok(())
    }

    /// Queues every frame of `frames` (emptying it) under one lock and with one wake-up: a
    /// group of messages for one member costs what one costs. When they do not all fit, the
    /// connection is a slow consumer, exactly as if [`Outbound::try_send`] had queued them one
    /// by one. Returns how many were queued.
    pub(crate) fn try_send_many(&self, frames: &mut Vec<Frame>) -> Result<usize, SendError> {
        let mut queue = self.lock();
        if let Err(err) = self.make_room(&mut queue, frames.len()) {
            frames.clear();
            return Err(err);
        }
        let queued = frames.len();
        let wake = queue.frames.is_empty();
        queue.frames.extend(frames.drain(..).map(Outgoing::Frame));
        drop(queue);
        self.wake_if(wake);
        Ok(queued)
    }

    /// Queues messages already framed for the wire (a group shared by a room's members), as
    /// one entry that counts as the messages it holds: all of them, or a slow consumer, as
    /// with [`Outbound::try_send_many`]. Returns how many were queued.
    pub(crate) fn try_send_framed(&self, framed: Framed) -> Result<usize, SendError> {
        let (messages, pending) = self.send_framed(framed)?;
        drop(pending);
        Ok(messages)
    }

    /// [`Outbound::try_send_framed`] for a deliverer that may write the group itself: when the
    /// queue was empty and the socket's write side is here, the session is not woken; the
    /// [`PendingWrite`] returned instead writes the queue once the deliverer has let go of
    /// the hub's lock (or wakes the session, if it is dropped unused). Returns how many
    /// messages were queued.
    pub(crate) fn send_framed(
        &self,
        framed: Framed,
    ) -> Result<(usize, Option<PendingWrite>), SendError> {
        let messages = framed.messages();
        let mut queue = self.lock();
        self.make_room(&mut queue, messages)?;
        let first = queue.frames.is_empty();
        queue.frames.push_back(Outgoing::Framed(framed));
        let direct = first && !queue.writing && queue.writer.is_some();
        drop(queue);
        if direct {
            return Ok((messages, Some(PendingWrite(Some(self.clone())))));
        }
        self.wake_if(first);
        Ok((messages, None))
    }

    /// Writes what is queued straight to the socket, from the caller's thread, when that is
    /// the session's next write anyway: nobody is writing, no close, reply or ping is pending
    /// (the session has those to do), the write interval since the last batch has passed
    /// (`interval`, the hub's pace, at `now`), and every entry is already framed. The write is
    /// one non-blocking system call per entry under the queue's lock; what the socket does
    /// not take now stays queued, in front, and the session is woken to write it. In every
    /// other case the session is woken, as if this had not been tried.
    ///
    /// Returns whether everything queued was written here.
    pub(crate) fn write_queued(&self, now: Instant, interval: Duration) -> bool {
        let mut queue = self.lock();
        if queue.frames.is_empty() {
            // Taken by the session, or written with a later group.
            return false;
        }
        let paced = queue.last_write.is_some_and(|last| now < last + interval);
        let framed = queue
            .frames
            .iter()
            .all(|out| matches!(out, Outgoing::Framed(_)));
        let writable = !queue.writing && !queue.ping && !queue.at_once() && !paced && framed;
        if !writable || queue.writer.is_none() {
            drop(queue);
            self.shared.wake.wake();
            return false;
        }
        queue.last_write = Some(now);
        let queue = &mut *queue;
        let writer = queue.writer.as_ref().expect("checked above");
        while let Some(Outgoing::Framed(framed)) = queue.frames.front_mut() {
            match writer.try_write(framed.as_bytes()) {
                Ok(written) if written == framed.len() => {
                    queue.messages = queue.messages.saturating_sub(framed.messages() as u32);
                    queue.frames.pop_front();
                }
                Ok(written) => {
                    // The socket's buffer is full: the rest waits for the session.
                    framed.advance(written);
                    queue.partial = true;
                    break;
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    tracing::debug!(error = %err, "write failed");
                    queue.close = Some(Box::new(CloseReason::new(1006, "write failed")));
                    queue.writer = None;
                    queue.frames = VecDeque::new();
                    queue.messages = 0;
                    break;
                }
            }
        }
        let done = queue.frames.is_empty() && queue.close.is_none();
        if queue.frames.is_empty() {
            // Give the memory back: an idle connection holds no queue.
            queue.frames = VecDeque::new();
        }
        if !done {
            self.shared.wake.wake();
        }
        done
    }

    /// Wakes the session for frames just queued, when the queue was empty before them. When
    /// it was not, the session has been woken for those earlier frames already, or it is
    /// waiting out the write interval with them (`driver`) and takes these too when the wait
    /// ends: waking it again would only poll it for nothing, once per member per group.
    fn wake_if(&self, was_empty: bool) {
        if was_empty {
            self.shared.wake.wake();
        }
    }

    /// Makes room for `count` more messages, counting them as queued. A closing connection
    /// takes none; one whose queue would overflow is a slow consumer: its close (1013) is
    /// recorded, its backlog dropped and its session woken to close.
    fn make_room(&self, queue: &mut Queue, count: usize) -> Result<(), SendError> {
        if queue.close.is_some() {
            return Err(SendError::Closed);
        }
        let room = self.shared.capacity as usize + queue.replay as usize;
        let messages = queue.messages as usize + count;
        if messages > room {
            queue.close = Some(Box::new(CloseReason::slow_consumer()));
            queue.writer = None;
            queue.frames = VecDeque::new();
            queue.messages = 0;
            self.shared.wake.wake();
            return Err(SendError::Full);
        }
        queue.messages = u32::try_from(messages).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Queues a history replay without counting it against the capacity.
    pub(crate) fn push_replay(&self, frames: Vec<Frame>) -> Result<(), SendError> {
        let mut queue = self.lock();
        if queue.close.is_some() {
            return Err(SendError::Closed);
        }
        let count = u32::try_from(frames.len()).unwrap_or(u32::MAX);
        queue.replay = queue.replay.saturating_add(count);
        queue.messages = queue.messages.saturating_add(count);
        queue.frames.extend(frames.into_iter().map(Outgoing::Frame));
        // The answer to a join: it leaves without waiting out the write interval.
        queue.urgent = true;
        drop(queue);
        self.shared.wake.wake();
        Ok(())
    }

    /// Asks the session to close with `reason`. Returns false when a reason was already set.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        self.close_first(reason).1
    }

    /// Records `reason` unless one was recorded first; returns the reason in force and
    /// whether it is this one.
    pub(crate) fn close_first(&self, reason: CloseReason) -> (CloseReason, bool) {
        let mut queue = self.lock();
        if let Some(first) = &queue.close {
            return ((**first).clone(), false);
        }
        queue.close = Some(Box::new(reason.clone()));
        // From here the session writes what is left, and its close frame, itself.
        queue.writer = None;
        drop(queue);
        self.shared.wake.wake();
        (reason, true)
    }

    /// Waits until something was queued or a close was requested.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only looks at the queue, so dropping it loses nothing.
    #[cfg(test)]
    pub(crate) async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// [`Outbound::ready`] as a poll: `Ready` once something was queued or a close was
    /// requested, and then whether the batch should leave at once (a close is pending or a
    /// reply is queued) rather than after the write interval.
    pub(crate) fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        // Register first, then look: a frame queued in between wakes the new waker.
        self.shared.wake.register(cx.waker());
        let queue = self.lock();
        if queue.frames.is_empty() && queue.close.is_none() && !queue.ping {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(queue.at_once())
        }
    }

    /// While the session waits out the write interval: `Ready` once a close was requested or a
    /// reply queued, which end the wait.
    pub(crate) fn poll_urgent(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.shared.wake.register(cx.waker());
        if self.lock().at_once() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// When the last batch left (the session's or a deliverer's write): the next one waits
    /// until `interval` after it.
    pub(crate) fn last_write(&self) -> Option<Instant> {
        self.lock().last_write
    }

    /// [`Outbound::take`] for a batch that leaves at `now`: the next one is paced from here.
    pub(crate) fn take_at(&self, now: Instant) -> Taken {
        self.take_leaving(Some(now))
    }

    /// Takes every queued frame, buffer and all (the queue is left with no allocation, and the
    /// session frees the batch once written, so an idle connection holds no queue memory: one
    /// allocation per batch, against a system call per batch), with the ping and close requests.
    /// The session writes them: until it calls [`Outbound::written`], nobody else writes to
    /// the socket.
    pub(crate) fn take(&self) -> Taken {
        self.take_leaving(None)
    }

    /// [`Outbound::take`], recording `now`, when given, as the last write's time (one lock).
    fn take_leaving(&self, now: Option<Instant>) -> Taken {
        let mut queue = self.lock();
        if now.is_some() {
            queue.last_write = now;
        }
        queue.replay = 0;
        queue.messages = 0;
        queue.urgent = false;
        queue.writing = true;
        queue.partial = false;
        Taken {
            frames: std::mem::take(&mut queue.frames),
            ping: std::mem::take(&mut queue.ping),
            closing: queue.close.is_some(),
        }
    }

    /// Takes the writer's turn for a control frame (a pong) without taking the queued frames,
    /// which go on waiting out the write interval: only the rest of a deliverer's partial
    /// write, if there is one, is handed over, to be written before the control frame. The
    /// session calls [`Outbound::written`] after.
    pub(crate) fn claim(&self) -> Option<Outgoing> {
        let mut queue = self.lock();
        queue.writing = true;
        if !std::mem::take(&mut queue.partial) {
            return None;
        }
        let rest = queue.frames.pop_front()?;
        if let Outgoing::Framed(framed) = &rest {
            queue.messages = queue.messages.saturating_sub(framed.messages() as u32);
        }
        Some(rest)
    }

    /// The session has written what it took: deliverers may write again.
    pub(crate) fn written(&self) {
        self.lock().writing = false;
    }

    /// The close reason recorded first, if any.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close.as_deref().cloned()
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
