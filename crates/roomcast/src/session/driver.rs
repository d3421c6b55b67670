//! The task that serves one connection: reads, writes, heartbeats and deadlines.
//!
//! ```text
//!            ┌──────────── select ────────────┐
//!   socket ──┤ frame in → hook (on_message)   │
//!   queue  ──┤ frames out → feed…, flush once │── socket
//!   timer  ──┤ ping / heartbeat / deadlines   │
//!            └────────────────────────────────┘
//! ```
//!
//! Every write is bounded by `write_wait`; any frame from the peer (a pong included) pushes the
//! read deadline `pong_wait` ahead; a data message pushes the idle deadline
//! (`connection_timeout`) ahead. One `Sleep` serves every timer: it is re-armed to the nearest
//! deadline, so a connection costs one timer entry.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};

use super::{Outbound, Session};
use crate::config::SessionConfig;
use crate::frame::{CloseReason, Frame, close_code};
use crate::handler::Handler;
use crate::hub::Hub;
use crate::protocol::Dialect;

/// Longest a closing session waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How a connection ended.
pub(crate) struct End {
    pub(crate) reason: CloseReason,
    /// Whether we still owe the peer a close frame (false when the peer closed first or the
    /// socket is gone).
    send_close: bool,
}

impl End {
    fn close(reason: CloseReason) -> Self {
        Self {
            reason,
            send_close: true,
        }
    }

    fn gone(reason: CloseReason) -> Self {
        Self {
            reason,
            send_close: false,
        }
    }
}

/// The socket and what the loop keeps between iterations.
pub(crate) struct Conn<'a> {
    socket: WebSocket,
    config: &'a SessionConfig,
    /// Frames taken from the queue, being written. Swapped with the queue's buffer.
    batch: VecDeque<Frame>,
}

/// Serves the connection until it ends, then runs `on_disconnect` and unregisters it.
pub(crate) async fn serve<H: Handler>(
    socket: WebSocket,
    hub: Hub,
    session: Session,
    outbound: Outbound,
    guard: super::ConnGuard,
    handler: &H,
    dialect: &'static dyn Dialect,
) {
    let mut conn = Conn {
        socket,
        config: hub.config(),
        batch: VecDeque::new(),
    };
    // Hook futures are boxed: inline, the largest one (a chat handler's, with its store calls)
    // would sit in every idle connection's task for its whole life (~2 KB measured). Boxing
    // costs one allocation per received message, off the fan-out path.
    let mut end = match Box::pin(handler.on_connect(&session)).await {
        Ok(()) => conn.run(&session, &outbound, handler, dialect).await,
        Err(err) => End::close(err.close_reason()),
    };
    // No more frames after this point: later sends fail with `Closed`. A reason recorded
    // earlier (shutdown, slow consumer) is the real one: a hook that failed because the
    // connection was already closing must not turn it into a 1000 or a 1011.
    end.reason = outbound.close_first(end.reason).0;
    if end.reason.code() == close_code::TRY_AGAIN_LATER {
        tracing::info!(reason = %end.reason, "closing a slow consumer");
    } else {
        tracing::debug!(reason = %end.reason, "session ended");
    }
    conn.finish(&outbound, &end).await;
    Box::pin(handler.on_disconnect(&session, &end.reason)).await;
    guard.release().await;
}

impl Conn<'_> {
    async fn run<H: Handler>(
        &mut self,
        session: &Session,
        outbound: &Outbound,
        handler: &H,
        dialect: &'static dyn Dialect,
    ) -> End {
        let config = self.config;
        let heartbeat = dialect
            .heartbeat()
            .filter(|_| !config.heartbeat_interval.is_zero());
        let idle_limit = Some(config.connection_timeout).filter(|limit| !limit.is_zero());
        let now = Instant::now();
        let mut next_ping = now + config.ping_period;
        let mut read_deadline = now + config.pong_wait;
        let mut next_heartbeat = heartbeat.as_ref().map(|_| now + config.heartbeat_interval);
        let mut idle_deadline = idle_limit.map(|limit| now + limit);
        let timer = sleep_until(now + config.ping_period);
        tokio::pin!(timer);

        loop {
            let wake = [
                Some(next_ping),
                Some(read_deadline),
                next_heartbeat,
                idle_deadline,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("the ping and read deadlines are always set");
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }

            tokio::select! {
                // Queue first: a requested close (shutdown, slow consumer) wins over reading.
                biased;

                // Something was queued, or a close was requested.
                () = outbound.ready() => {
                    let close = outbound.take(&mut self.batch);
                    if let Err(end) = self.write_batch().await {
                        return close.map_or(end, End::gone);
                    }
                    if let Some(reason) = close {
                        return End::close(reason);
                    }
                }

                // A frame from the peer, or the end of the stream.
                received = self.socket.next() => {
                    let now = Instant::now();
                    read_deadline = now + config.pong_wait;
                    let incoming = match received {
                        Some(Ok(Message::Text(text))) => super::Incoming::Text(text),
                        Some(Ok(Message::Binary(bytes))) => super::Incoming::Binary(bytes),
                        Some(Ok(Message::Ping(_))) => {
                            // tungstenite queued the pong; send it now, not with the next write.
                            if let Err(end) = self.flush().await {
                                return end;
                            }
                            continue;
                        }
                        Some(Ok(Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(frame))) => {
                            let reason = frame.map_or_else(
                                || CloseReason::new(1005, ""),
                                |f| CloseReason::new(f.code, f.reason.to_string()),
                            );
                            return End::gone(reason);
                        }
                        Some(Err(err)) => return read_error(err),
                        None => return End::gone(CloseReason::new(1006, "connection lost")),
                    };
                    if let Some(limit) = idle_limit {
                        idle_deadline = Some(now + limit);
                    }
                    session.hub().count_message();
                    if let Err(err) = Box::pin(handler.on_message(session, incoming)).await {
                        let reason = err.close_reason();
                        if reason.code() == close_code::INTERNAL {
                            tracing::error!(error = %err, "on_message failed");
                        }
                        return End::close(reason);
                    }
                }

                // The nearest deadline.
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= read_deadline {
                        return End::close(CloseReason::new(close_code::GOING_AWAY, "ping timeout"));
                    }
                    if idle_deadline.is_some_and(|at| now >= at) {
                        return End::close(CloseReason::new(close_code::GOING_AWAY, "connection timeout"));
                    }
                    if now >= next_ping {
                        next_ping = now + config.ping_period;
                        if let Err(end) = self.send(Message::Ping(Bytes::new())).await {
                            return end;
                        }
                    }
                    if let (Some(at), Some(frame)) = (next_heartbeat, &heartbeat)
                        && now >= at
                    {
                        next_heartbeat = Some(now + config.heartbeat_interval);
                        if let Err(end) = self.send(frame.clone().into_message()).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    /// Writes every frame of the batch, then flushes once, within `write_wait`.
    async fn write_batch(&mut self) -> Result<(), End> {
        let Self {
            socket,
            batch,
            config,
        } = self;
        let write = async {
            while let Some(frame) = batch.pop_front() {
                socket.feed(frame.into_message()).await?;
            }
            socket.flush().await
        };
        bounded(config.write_wait, write).await
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        bounded(self.config.write_wait, self.socket.send(message)).await
    }

    async fn flush(&mut self) -> Result<(), End> {
        bounded(self.config.write_wait, self.socket.flush()).await
    }

    /// Writes what is still queued (unless the client is a slow consumer), then the close
    /// frame, all within `write_wait`.
    async fn finish(&mut self, outbound: &Outbound, end: &End) {
        if !end.send_close {
            let _ = timeout(self.config.write_wait, self.socket.flush()).await;
            return;
        }
        self.batch.clear();
        outbound.take(&mut self.batch);
        if end.reason.code() == close_code::TRY_AGAIN_LATER {
            self.batch.clear();
        }
        if self.write_batch().await.is_err() {
            return;
        }
        if self.send(end.reason.to_message()).await.is_err() {
            return;
        }
        // Wait briefly for the peer's close reply, reading (and discarding) what it still
        // sends. Dropping a socket with unread input makes the kernel send a reset, which can
        // destroy our close frame before the peer reads it.
        let linger = self.config.write_wait.min(CLOSE_LINGER);
        let _ = timeout(linger, async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

async fn bounded(
    limit: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), End> {
    match timeout(limit, write).await {
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
fn read_error(err: axum::Error) -> End {
    use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
    let inner = err.into_inner();
    match inner.downcast_ref::<WsError>() {
        // The peer vanished without a close frame (crashed tab, lost network): not a
        // protocol violation, and there is no one left to send a close frame to.
        Some(
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed,
        ) => End::gone(CloseReason::new(1006, "connection lost")),
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            End::close(CloseReason::new(close_code::TOO_BIG, "message too big"))
        }
        Some(WsError::Capacity(_)) => {
            End::close(CloseReason::new(close_code::TOO_BIG, "frame too big"))
        }
        Some(WsError::Utf8(_)) => End::close(CloseReason::new(1007, "invalid UTF-8")),
        Some(WsError::Protocol(_)) => End::close(CloseReason::new(1002, "protocol error")),
        _ => End::gone(CloseReason::new(1006, "connection lost")),
    }
}
