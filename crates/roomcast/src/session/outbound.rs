//! [`Outbound`]: one connection's bounded queue of encoded frames, and its close signal.
//!
//! Everyone who sends to a connection (broadcasts, direct sends, its own hooks) calls
//! [`Outbound::try_send`] or a variant of it, which never waits (a reply to the connection,
//! [`Outbound::try_send_now`], also ends the session's write interval): a full queue records "slow consumer" (1013) as the
//! close reason and wakes the session, which closes; it never slows the sender. The session task
//! is the only consumer: it swaps the queue out and writes the batch, then flushes once. A
//! room's group of messages arrives already framed for the wire, shared by every member
//! ([`Outbound::try_send_framed`]), and counts against the bound as the messages it holds.
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

use crate::frame::{CloseReason, Frame};
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

#[derive(Debug)]
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
    /// When the peer last sent any frame (a pong included), on the hub's clock (ms). The hub's
    /// sweep closes the connection when this is `pong_wait` old.
    last_read: AtomicU64,
    /// When the peer last sent a data message (text or binary), on the hub's clock (ms): the
    /// idle deadline (`connection_timeout`).
    last_data: AtomicU64,
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

impl Outbound {
    /// An empty queue for a connection that opened at `now` on the hub's clock (ms).
    #[cfg(test)]
    pub(crate) fn new(capacity: usize, now: u64) -> Self {
        Self::with_deflate(capacity, now, None)
    }

    /// An empty queue for a connection that opened at `now` on the hub's clock (ms) and
    /// negotiated permessage-deflate as `deflate` says.
    pub(crate) fn with_deflate(capacity: usize, now: u64, deflate: Option<Deflate>) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: AtomicWaker::new(),
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
                deflate,
                last_read: AtomicU64::new(now),
                last_data: AtomicU64::new(now),
            }),
        }
    }

    /// permessage-deflate as the connection negotiated it, if it did.
    pub(crate) fn deflate(&self) -> Option<Deflate> {
        self.shared.deflate
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
        let messages = framed.messages();
        let mut queue = self.lock();
        self.make_room(&mut queue, messages)?;
        let wake = queue.frames.is_empty();
        queue.frames.push_back(Outgoing::Framed(framed));
        drop(queue);
        self.wake_if(wake);
        Ok(messages)
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

    /// Takes every queued frame, buffer and all (the queue is left with no allocation, and the
    /// session frees the batch once written, so an idle connection holds no queue memory: one
    /// allocation per batch, against a system call per batch), with the ping and close requests.
    pub(crate) fn take(&self) -> Taken {
        let mut queue = self.lock();
        queue.replay = 0;
        queue.messages = 0;
        queue.urgent = false;
        Taken {
            frames: std::mem::take(&mut queue.frames),
            ping: std::mem::take(&mut queue.ping),
            closing: queue.close.is_some(),
        }
    }

    /// The close reason recorded first, if any.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().close.as_deref().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_records_slow_consumer_and_refuses_more() {
        let outbound = Outbound::new(2, 0);
        assert_eq!(outbound.try_send(Frame::from("a")), Ok(()));
        assert_eq!(outbound.try_send(Frame::from("b")), Ok(()));
        assert_eq!(outbound.try_send(Frame::from("c")), Err(SendError::Full));
        assert_eq!(outbound.try_send(Frame::from("d")), Err(SendError::Closed));
        let taken = outbound.take();
        assert!(taken.closing);
        assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
        assert!(
            taken.frames.is_empty(),
            "a slow consumer's backlog is dropped"
        );
    }

    #[test]
    fn a_group_is_queued_whole_or_makes_a_slow_consumer() {
        let outbound = Outbound::new(3, 0);
        outbound.try_send(Frame::from("a")).unwrap();
        let mut group = vec![Frame::from("b"), Frame::from("c")];
        assert_eq!(outbound.try_send_many(&mut group), Ok(2));
        assert!(group.is_empty());
        assert_eq!(
            outbound.take().frames,
            [Frame::from("a"), Frame::from("b"), Frame::from("c")].map(Outgoing::from)
        );
        outbound.try_send(Frame::from("d")).unwrap();
        let mut group = vec![Frame::from("e"), Frame::from("f"), Frame::from("g")];
        assert_eq!(outbound.try_send_many(&mut group), Err(SendError::Full));
        assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
        assert!(outbound.take().frames.is_empty(), "the backlog is dropped");
        let mut group = vec![Frame::from("h")];
        assert_eq!(outbound.try_send_many(&mut group), Err(SendError::Closed));
    }

    #[test]
    fn a_framed_group_counts_as_its_messages() {
        let outbound = Outbound::new(4, 0);
        outbound.try_send(Frame::from("a")).unwrap();
        let group = Framed::encode(&[Frame::from("b"), Frame::from("c")]);
        assert_eq!(outbound.try_send_framed(group.clone()), Ok(2));
        assert_eq!(
            outbound.take().frames,
            [Outgoing::from(Frame::from("a")), Outgoing::Framed(group)]
        );
        // Taking empties the count: four fit again, and a fifth message overflows.
        let three = Framed::encode(&[Frame::from("d"), Frame::from("e"), Frame::from("f")]);
        assert_eq!(outbound.try_send_framed(three), Ok(3));
        outbound.try_send(Frame::from("g")).unwrap();
        let one = Framed::encode(&[Frame::from("h")]);
        assert_eq!(outbound.try_send_framed(one.clone()), Err(SendError::Full));
        assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
        assert!(outbound.take().frames.is_empty(), "the backlog is dropped");
        assert_eq!(outbound.try_send_framed(one), Err(SendError::Closed));
    }

    /// A waker that counts its wake-ups.
    fn counting_waker() -> (std::task::Waker, Arc<std::sync::atomic::AtomicUsize>) {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waker = std::task::Waker::from(Arc::new(Count(Arc::clone(&count))));
        (waker, count)
    }

    #[test]
    fn only_the_first_frame_into_an_empty_queue_wakes_the_session() {
        let (waker, count) = counting_waker();
        let woken = || count.load(Ordering::Relaxed);
        let outbound = Outbound::new(8, 0);
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(outbound.poll_ready(&mut cx).is_pending());
        outbound.try_send(Frame::from("a")).unwrap();
        assert_eq!(woken(), 1);
        // The session was woken for "a" (or waits out the write interval with it).
        outbound.try_send(Frame::from("b")).unwrap();
        outbound
            .try_send_framed(Framed::encode(&[Frame::from("c")]))
            .unwrap();
        outbound.try_send_many(&mut vec![Frame::from("d")]).unwrap();
        assert_eq!(woken(), 1, "no wake-up for frames behind others");
        // The session writes them, then waits on the queue again.
        assert_eq!(outbound.take().frames.len(), 4);
        assert!(outbound.poll_ready(&mut cx).is_pending());
        outbound
            .try_send_framed(Framed::encode(&[Frame::from("e")]))
            .unwrap();
        assert_eq!(woken(), 2, "an emptied queue wakes the session again");
        outbound.take();
        assert!(outbound.poll_ready(&mut cx).is_pending());
        outbound.try_send_many(&mut vec![Frame::from("f")]).unwrap();
        assert_eq!(woken(), 3);
        assert!(outbound.poll_ready(&mut cx).is_ready());
        assert!(outbound.close(CloseReason::normal()));
        assert_eq!(woken(), 4, "a close always wakes");
    }

    #[test]
    fn a_reply_ends_the_write_interval_once_and_take_resets_it() {
        let (waker, count) = counting_waker();
        let woken = || count.load(Ordering::Relaxed);
        let mut cx = std::task::Context::from_waker(&waker);
        let outbound = Outbound::new(8, 0);
        // A broadcast frame waits out the interval: not urgent.
        outbound.try_send(Frame::from("a")).unwrap();
        assert_eq!(outbound.poll_ready(&mut cx), std::task::Poll::Ready(false));
        assert!(outbound.poll_urgent(&mut cx).is_pending());
        // A reply behind it wakes the waiting session once, and everything leaves at once.
        outbound.try_send_now(Frame::from("b")).unwrap();
        outbound.try_send_now(Frame::from("c")).unwrap();
        assert_eq!(woken(), 1, "the first reply wakes, the next does not");
        assert!(outbound.poll_urgent(&mut cx).is_ready());
        assert_eq!(outbound.poll_ready(&mut cx), std::task::Poll::Ready(true));
        let taken = outbound.take();
        assert_eq!(taken.frames.len(), 3);
        // Written: the next broadcast waits again.
        outbound.try_send(Frame::from("d")).unwrap();
        assert!(outbound.poll_urgent(&mut cx).is_pending());
        assert_eq!(outbound.poll_ready(&mut cx), std::task::Poll::Ready(false));
        // A replay answers a join, and a close request ends the wait too.
        outbound.push_replay(vec![Frame::from("e")]).unwrap();
        assert!(outbound.poll_urgent(&mut cx).is_ready());
        outbound.take();
        outbound.try_send(Frame::from("f")).unwrap();
        assert!(outbound.close(CloseReason::normal()));
        assert!(outbound.poll_urgent(&mut cx).is_ready());
        // Replies count against the bound like any frame.
        let full = Outbound::new(1, 0);
        full.try_send_now(Frame::from("g")).unwrap();
        assert_eq!(full.try_send_now(Frame::from("h")), Err(SendError::Full));
    }

    #[test]
    fn take_hands_over_frames_in_order_and_the_first_close_wins() {
        let outbound = Outbound::new(8, 0);
        outbound.try_send(Frame::from("a")).unwrap();
        outbound.try_send(Frame::from("b")).unwrap();
        assert!(outbound.close(CloseReason::normal()));
        assert!(!outbound.close(CloseReason::going_away()));
        let taken = outbound.take();
        assert!(taken.closing);
        assert_eq!(outbound.close_reason(), Some(CloseReason::normal()));
        assert_eq!(
            taken.frames,
            [Frame::from("a"), Frame::from("b")].map(Outgoing::from)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_ping_wakes_the_session_once() {
        let outbound = Outbound::new(8, 0);
        outbound.request_ping();
        outbound.request_ping();
        tokio::time::timeout(std::time::Duration::from_secs(1), outbound.ready())
            .await
            .expect("a ping request wakes the session");
        let taken = outbound.take();
        assert!(taken.ping && taken.frames.is_empty() && !taken.closing);
        assert!(!outbound.take().ping, "one request, one ping");
        assert!(outbound.close(CloseReason::normal()));
        outbound.request_ping();
        assert!(!outbound.take().ping, "no ping for a closing connection");
    }

    #[test]
    fn the_peers_last_frames_are_recorded_for_the_sweep() {
        let outbound = Outbound::new(8, 5);
        assert_eq!(outbound.last_heard(), (5, 5));
        outbound.heard_from(7, false);
        assert_eq!(outbound.last_heard(), (7, 5), "a pong is not data");
        outbound.heard_from(9, true);
        assert_eq!(outbound.last_heard(), (9, 9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_before_waiting_is_not_lost() {
        let outbound = Outbound::new(8, 0);
        outbound.try_send(Frame::from("a")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), outbound.ready())
            .await
            .expect("a frame queued before the wait is seen");
    }
}
