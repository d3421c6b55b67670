//! The task that serves one connection: reads, writes, pings and closes.
//!
//! ```text
//!            ┌──────────── select ─────────────┐
//!   socket ──┤ frame in → hook (on_message)    │
//!   queue  ──┤ frames out (+ ping) , flush once│── socket
//!            └─────────────────────────────────┘
//!                 ▲ ping due / deadline passed: the hub's sweep (`hub::sweep_loop`)
//! ```
//!
//! Every write is bounded by `write_wait`, and follows the connection's previous write by at
//! least the hub's present write interval (`write_interval` under load, less below it: see
//! `hub::pace`): frames queued sooner wait (reading goes on) and leave together, so a busy
//! member costs one system call per interval rather than one per group of frames, while at
//! light load a message is not held back (there, a room's message usually never reaches this
//! task: the thread that delivered it wrote it, `Outbound::write_queued`). A reply to the connection itself (`Session::send`, `Sender::send`, a join's replay) or a
//! close request cuts the wait short: what the client awaits is not held back.
//! Besides a blocked write's deadline, that wait is the only timer a connection has, and only
//! while frames wait. The connection records when its peer last sent a frame (any frame, a
//! pong included) and a data message, and the hub's sweep, one task for every connection, asks
//! for protocol pings, queues the dialect's heartbeat, and requests the close when `pong_wait`
//! or `connection_timeout` has passed.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt as _;

use tokio::time::error::Elapsed;
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tracing::Instrument;

use super::outbound::Taken;
use super::{Outbound, Session};
use crate::config::SessionConfig;
use crate::frame::{CloseReason, close_code};
use crate::handler::Handler;
use crate::hub::ConnTrace;
use crate::ws::codec::{OP_CLOSE, OP_PING, OP_PONG};
use crate::ws::handshake::Io;
use crate::ws::{Deflate, Event, Outgoing, ReadError, WsStream};

/// Longest a closing session waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How a connection ended.
pub(crate) struct End {
    pub(crate) reason: CloseReason,
    closing: Closing,
}

/// What is left of the closing handshake when the loop ends.
enum Closing {
    /// We close: send our close frame, then wait briefly for the reply. `in_sync` is false
    /// when the peer's last bytes could not be parsed.
    Initiate { in_sync: bool },
    /// The peer closed first: echo its code (RFC 6455 §5.5.1), then drop the connection.
    Reply(Option<u16>),
    /// The socket is gone or unusable: nothing more to send.
    Gone,
}

/// What the session loop's `select!` saw: the queue is ready to be written, or the peer sent
/// something.
enum Step {
    Write(Taken),
    Read(Result<Event, ReadError>),
}

impl End {
    fn close(reason: CloseReason) -> Self {
        Self {
            reason,
            closing: Closing::Initiate { in_sync: true },
        }
    }

    fn gone(reason: CloseReason) -> Self {
        Self {
            reason,
            closing: Closing::Gone,
        }
    }
}

/// The socket and what it is served with.
pub(crate) struct Conn<'a> {
    socket: WsStream<Io>,
    served: &'a Served,
}

/// What an endpoint's connections are served with, kept once per endpoint: each connection's
/// task holds one reference to it.
pub(crate) struct Served {
    /// The hub's limits and timers.
    pub(crate) config: SessionConfig,
    /// The dialect's name, a label of `roomcast_messages_received_total`.
    pub(crate) dialect: &'static str,
    /// The endpoint's name, in each message's log span.
    pub(crate) endpoint: &'static str,
}

/// Wraps an upgraded connection in the WebSocket stream `config` describes.
pub(crate) fn stream(io: Io, config: &SessionConfig) -> WsStream<Io> {
    WsStream::new(
        io,
        config.max_message_bytes,
        config.read_buffer_bytes,
        config.write_buffer_bytes,
    )
}

impl<'a> Conn<'a> {
    /// A connection ready to be served as `served` says, with permessage-deflate if it was
    /// negotiated (`deflate`); `unread` is what the peer sent that was read with its upgrade
    /// request.
    pub(crate) fn new(io: Io, unread: &[u8], served: &'a Served, deflate: Option<Deflate>) -> Self {
        Self {
            socket: stream(io, &served.config)
                .with_unread(unread)
                .with_deflate(deflate),
            served,
        }
    }
}

/// Serves the connection until it ends, then runs `on_disconnect` and unregisters it.
///
/// A plain function returning an `async move` block, not an `async fn`: an async fn keeps its
/// arguments twice in its future (as arguments and as the body's bindings, rust-lang/rust#62958),
/// ~340 bytes more in every connection's task; a block's captures are kept once.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
pub(crate) fn serve<'a, H: Handler>(
    mut conn: Conn<'a>,
    session: Session,
    guard: super::ConnGuard,
    handler: &'a H,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        // Hook futures are boxed: inline, the largest one (a chat handler's, with its store
        // calls) would sit in every idle connection's task for its whole life (~2 KB
        // measured). Boxing costs one allocation per received message, off the fan-out path.
        // `on_connect` runs inside `run`: awaited here, its result would be kept (as the
        // match's scrutinee) beside the loop's future for the connection's whole life.
        let end = conn.run(&session, handler).await;
        // Boxed, and one future: the end runs once, and `end` kept across several awaits
        // here would have its own slot in every idle connection's task.
        Box::pin(wind_up(conn, session, guard, handler, end)).await;
    }
}

/// After the loop: records the close reason, finishes the closing handshake, runs
/// `on_disconnect` and unregisters the connection.
async fn wind_up<H: Handler>(
    mut conn: Conn<'_>,
    session: Session,
    guard: super::ConnGuard,
    handler: &H,
    mut end: End,
) {
    let outbound = &session.outbound;
    // No more frames after this point: later sends fail with `Closed`. A reason recorded
    // earlier (shutdown, slow consumer) is the real one: a hook that failed because the
    // connection was already closing must not turn it into a 1000 or a 1011.
    end.reason = outbound.close_first(end.reason).0;
    let span = log_end(&session, &end.reason);
    conn.finish(outbound, &end).await;
    let disconnect = handler.on_disconnect(&session, &end.reason);
    let disconnect = disconnect.map(|()| Ok(()));
    // A panic here has nothing left to close; `guarded` counts and logs it.
    let _ = guarded(disconnect.instrument(span), &session, "on_disconnect").await;
    guard.release(end.reason.code()).await;
}

impl Conn<'_> {
    /// The session loop, until the connection ends.
    ///
    /// Everything an idle connection's task carries is here, so it is kept small: a block, not
    /// an `async fn`, for the reason `serve` gives; the limits are read from `self.served` where
    /// they are used rather than copied into locals; and nothing is awaited inside the
    /// `select!`: it only says what happened ([`Step`]), and the step runs in its own boxed
    /// future, so neither the select's output nor a received frame has a slot in the task
    /// while it waits. (This future went from 272 to 128 bytes; see the task budget test in
    /// `route`: every connection's task went from 768 to 512 bytes.)
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would store its arguments twice"
    )]
    fn run<'s, H: Handler>(
        &'s mut self,
        session: &'s Session,
        handler: &'s H,
    ) -> impl Future<Output = End> + Send + 's {
        async move {
            let outbound = &session.outbound;
            let connect = connect(session, handler);
            if let Err(err) = Box::pin(guarded(connect, session, "on_connect")).await {
                return End::close(err.close_reason());
            }
            // While frames wait out `write_interval` after the last batch (which the queue
            // records: a deliverer may have written it, `Outbound::write_queued`), the timer
            // they wait for (boxed: an idle connection holds only the `None`).
            let mut pause: Option<Pin<Box<Sleep>>> = None;
            loop {
                let step = tokio::select! {
                    // Queue first: a requested close (shutdown, slow consumer, a deadline the
                    // hub's sweep saw pass) wins over reading.
                    biased;

                    // Something was queued, a ping is due, or a close was requested; and the
                    // write interval since the last batch has passed (as long as the hub's
                    // load calls for, read when the frames arrive), or a close or a reply
                    // (`Session::send`) cut it short. Reading goes on meanwhile.
                    at_once = std::future::poll_fn(|cx| match pause.as_mut() {
                        Some(sleep) => match outbound.poll_urgent(cx) {
                            std::task::Poll::Ready(()) => std::task::Poll::Ready(true),
                            std::task::Poll::Pending => sleep.as_mut().poll(cx).map(|()| false),
                        },
                        None => outbound.poll_ready(cx),
                    }) => {
                        let now = Instant::now();
                        if pause.take().is_none()
                            && !at_once
                            && let Some(due) = outbound.last_write().map(|last| last + session.hub().write_interval())
                            && due > now
                        {
                            pause = Some(Box::pin(sleep_until(due)));
                            continue;
                        }
                        Step::Write(outbound.take_at(now))
                    }

                    // A frame from the peer, or the end of the stream.
                    received = self.socket.next() => Step::Read(received),
                };
                // One allocation per batch written or frame received.
                if let Some(end) = self.step(step, session, handler).await {
                    return end;
                }
            }
        }
    }

    /// Runs one [`Step`] of the loop in a boxed future; `Some` ends the connection.
    fn step<'s, H: Handler>(
        &'s mut self,
        step: Step,
        session: &'s Session,
        handler: &'s H,
    ) -> Pin<Box<dyn Future<Output = Option<End>> + Send + 's>> {
        match step {
            Step::Write(taken) => Box::pin(self.write_step(taken, &session.outbound)),
            Step::Read(received) => Box::pin(self.read_step(received, session, handler)),
        }
    }

    /// Writes a batch taken from the queue; ends the connection when a close was requested
    /// with it, or when the write fails.
    async fn write_step(&mut self, taken: Taken, outbound: &Outbound) -> Option<End> {
        let Taken {
            frames,
            ping,
            closing,
        } = taken;
        let written = self.write_batch(frames, ping).await;
        outbound.written();
        if closing {
            let reason = outbound.close_reason().expect("a close was requested");
            return Some(if written.is_ok() {
                End::close(reason)
            } else {
                End::gone(reason)
            });
        }
        written.err()
    }

    /// Handles a frame from the peer: a message goes to `on_message`, a ping is answered, a
    /// close or a read error ends the connection.
    async fn read_step<H: Handler>(
        &mut self,
        received: Result<Event, ReadError>,
        session: &Session,
        handler: &H,
    ) -> Option<End> {
        // Any frame (a pong included) keeps the connection alive; a data message also keeps
        // it from being idle. The hub's sweep reads both.
        let data = matches!(received, Ok(Event::Text(_) | Event::Binary(_)));
        session.outbound.heard_from(session.hub().now_ms(), data);
        let incoming = match received {
            Ok(Event::Text(text)) => super::Incoming::Text(text),
            Ok(Event::Binary(bytes)) => super::Incoming::Binary(bytes),
            Ok(Event::Ping(payload)) => {
                // The socket is shared with deliverers' writes: take the writer's turn, and
                // write the rest of a partial write first if one is in front.
                let rest = session.outbound.claim().into_iter().collect();
                let mut done = self.write_batch(rest, false).await;
                if done.is_ok() {
                    let pong = self.socket.write_control(OP_PONG, &payload);
                    done = written(timeout(self.served.config.write_wait, pong).await);
                }
                session.outbound.written();
                return done.err();
            }
            Ok(Event::Pong) => return None,
            Ok(Event::Close(frame)) => {
                let code = frame.as_ref().map(|(code, _)| *code);
                let reason = frame.map_or_else(
                    || CloseReason::new(1005, ""),
                    |(code, reason)| CloseReason::new(code, reason),
                );
                return Some(End {
                    reason,
                    closing: Closing::Reply(code),
                });
            }
            Err(err) => {
                let end = read_error(err);
                if matches!(end.reason.code(), 1002 | 1007 | 1009) {
                    session.hub().count_error("protocol");
                }
                return Some(end);
            }
        };
        session
            .hub()
            .count_message(self.served.dialect, incoming.as_bytes().len());
        let hook = handler
            .on_message(session, incoming)
            .instrument(message_span(session, self.served));
        if let Err(err) = guarded(hook, session, "on_message").await {
            let reason = err.close_reason();
            if reason.code() == close_code::INTERNAL {
                session.hub().count_error("hook_error");
                tracing::error!(
                    conn = %session.conn_id(),
                    user = %session.user_id(),
                    error = %err,
                    "on_message failed"
                );
            }
            return Some(End::close(reason));
        }
        None
    }

    /// Writes every frame of the batch, then flushes once, within `write_wait`.
    /// The batch is dropped when written (or abandoned): an idle connection keeps no buffer.
    /// A protocol ping, when due, follows the batch.
    async fn write_batch(&mut self, mut batch: VecDeque<Outgoing>, ping: bool) -> Result<(), End> {
        let wait = self.served.config.write_wait;
        if !batch.is_empty() {
            written(timeout(wait, self.socket.write_frames(&mut batch)).await)?;
        }
        if ping {
            written(timeout(wait, self.socket.write_control(OP_PING, &[])).await)?;
        }
        Ok(())
    }

    /// Finishes the closing handshake: writes what is still queued (unless the client is a
    /// slow consumer) and our close frame, or echoes the peer's close, all within
    /// `write_wait`.
    async fn finish(&mut self, outbound: &Outbound, end: &End) {
        let wait = self.served.config.write_wait;
        let in_sync = match end.closing {
            Closing::Gone => return,
            Closing::Reply(code) => {
                let payload = code.map(|code| code.to_be_bytes()).unwrap_or_default();
                let len = if code.is_some() { 2 } else { 0 };
                let echo = self.socket.write_control(OP_CLOSE, &payload[..len]);
                let _ = timeout(wait, echo).await;
                return;
            }
            Closing::Initiate { in_sync } => in_sync,
        };
        let mut batch = outbound.take().frames;
        if end.reason.code() == close_code::TRY_AGAIN_LATER {
            batch.clear();
        }
        if self.write_batch(batch, false).await.is_err() {
            return;
        }
        if written(timeout(wait, self.socket.write_close(&end.reason)).await).is_err() {
            return;
        }
        let linger = wait.min(CLOSE_LINGER);
        let _ = timeout(linger, self.socket.await_close_reply(in_sync)).await;
    }
}

/// Logs how a session ended, in its span (returned for `on_disconnect`): `info` with the close
/// code, the reason and how long the connection lasted. The connection is still registered
/// (it is removed after `on_disconnect`), so the hub still knows when it opened.
fn log_end(session: &Session, reason: &CloseReason) -> tracing::Span {
    let hub = session.hub();
    let trace = hub.conn_trace(session.conn_id());
    let span = span_with(session, trace);
    let duration_ms = trace.map(|trace| hub.now_ms().saturating_sub(trace.opened));
    let (code, why) = (reason.code(), reason.reason());
    span.in_scope(|| {
        if code == close_code::TRY_AGAIN_LATER {
            tracing::info!(
                code,
                reason = why,
                duration_ms,
                "disconnected: slow consumer"
            );
        } else {
            tracing::info!(code, reason = why, duration_ms, "disconnected");
        }
    });
    span
}

/// `on_connect`, in the connection's span, after the `connected` event. A plain function, so
/// that the span and the event leave nothing in the session loop's future (see `Conn::run`).
fn connect<'s, H: Handler>(
    session: &'s Session,
    handler: &'s H,
) -> impl Future<Output = crate::Result<()>> + Send + 's {
    let span = hook_span(session);
    span.in_scope(|| tracing::info!("connected"));
    handler.on_connect(session).instrument(span)
}

/// Runs a hook; a panic inside it becomes an error that closes this connection with 1011
/// `internal error`, counted in [`HubStats::hook_panics_total`](crate::HubStats) and logged
/// here, once. The process and every other connection go on: the hub's lock is never held
/// while a hook runs, and the connection is unregistered as usual.
async fn guarded<F>(hook: F, session: &Session, name: &'static str) -> crate::Result<()>
where
    F: Future<Output = crate::Result<()>>,
{
    match AssertUnwindSafe(hook).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            session.hub().count_panic();
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a non-string panic payload");
            tracing::error!(
                conn = %session.conn_id(),
                user = %session.user_id(),
                hook = name,
                panic = message,
                "a hook panicked: the connection is closed with 1011"
            );
            Err(crate::Error::close(close_code::INTERNAL, "internal error"))
        }
    }
}

/// The span a hook runs in, naming its connection, user, endpoint and client IP, so whatever
/// the hook logs says which connection it was for.
///
/// One span per hook call rather than one for the connection's life: a live span costs every
/// idle connection its registry slot and formatted fields (~360 bytes measured at the default
/// `info` level), and a `Span` kept in the task would grow every connection's future (see the
/// task budget test in `route`), while a call's span is gone when the hook returns.
/// The endpoint and address are looked up in the hub (one short lock) only when the span is
/// enabled: once per connection, for `on_connect`; each message's span ([`message_span`])
/// takes only what needs no lock.
fn hook_span(session: &Session) -> tracing::Span {
    let span = span_with(session, None);
    if !span.is_disabled()
        && let Some(trace) = session.hub().conn_trace(session.conn_id())
    {
        record(&span, trace);
    }
    span
}

/// The span `on_message` runs in: the connection, its user and its endpoint, without the
/// hub's lock (taken for every message received, it would be contended by every fan-out);
/// the client's address is in the connection's `connected` and `disconnected` lines.
fn message_span(session: &Session, served: &Served) -> tracing::Span {
    let span = span_with(session, None);
    span.record("endpoint", served.endpoint);
    span
}

/// The connection's span, with what `trace` says when it is known.
fn span_with(session: &Session, trace: Option<ConnTrace>) -> tracing::Span {
    let span = tracing::info_span!(
        "session",
        conn = %session.conn_id(),
        user = %session.user_id(),
        endpoint = tracing::field::Empty,
        client_ip = tracing::field::Empty,
    );
    if let Some(trace) = trace {
        record(&span, trace);
    }
    span
}

fn record(span: &tracing::Span, trace: ConnTrace) {
    span.record("endpoint", trace.endpoint);
    if let Some(ip) = trace.addr {
        span.record("client_ip", tracing::field::display(ip));
    }
}

/// How a write bounded by `write_wait` ended. (A plain function over the awaited result, not an
/// async wrapper: an async fn would keep its argument future and the `Timeout` holding it, two
/// copies, in every connection's task.)
fn written(result: Result<std::io::Result<()>, Elapsed>) -> Result<(), End> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::gone(CloseReason::new(1006, "write failed"))),
        Err(_) => Err(End::gone(CloseReason::new(
            close_code::GOING_AWAY,
            "write timeout",
        ))),
    }
}

/// Maps a read error to how the connection ends: an oversized message closes with 1009,
/// a protocol violation with 1002, bad UTF-8 with 1007; a broken socket just ends.
fn read_error(err: ReadError) -> End {
    match err {
        // The peer vanished without a close frame (crashed tab, lost network): not a
        // protocol violation, and there is no one left to send a close frame to.
        ReadError::Eof => End::gone(CloseReason::new(1006, "connection lost")),
        ReadError::Io(err) => {
            tracing::debug!(error = %err, "read failed");
            End::gone(CloseReason::new(1006, "connection lost"))
        }
        ReadError::Decode(err) => End {
            reason: CloseReason::new(err.close_code(), err.to_string()),
            // An oversized frame is skipped, so the peer's close reply can still be parsed.
            closing: Closing::Initiate {
                in_sync: err.close_code() == close_code::TOO_BIG,
            },
        },
    }
}
