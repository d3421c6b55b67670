//! The bare reference server: what a plain axum + tokio-tungstenite broadcast server does on
//! the same machine, so every roomcast figure can be given as a ratio to it in the same run.
//!
//! No auth (the token is ignored), no store, one room whatever the name, the library's default
//! settings (axum's `WebSocketUpgrade` as it comes: tungstenite's default buffers). It speaks
//! just enough of the native envelope for the load generator's scenarios:
//!
//! ```text
//! > {"type":"join","room":"r"}      < {"type":"join",…}  < {"type":"user_list","room":"r","data":[…]}
//! > {"type":"message","room":"r","content":"…"}  → to every joined connection, the sender too:
//!                                   < {"type":"message","room":"r","content":"…","user_id":…,"username":…,"timestamp":…,"id":…}
//! > {"type":"leave","room":"r"}     < {"type":"leave",…}
//! > {"type":"ping"}                 < {"type":"pong",…}
//! ```
//!
//! Fan-out is a `tokio::sync::broadcast` channel of encoded frames (encoded once, shared by
//! reference count), one task per connection selecting over its socket and the channel; a
//! task writes every frame that is ready, then flushes once. A connection that falls more than
//! [`BROADCAST_CAPACITY`] frames behind loses the ones it missed (counted as loss).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cli::ReferenceArgs;

/// Frames the room's channel holds for the slowest connection (the channel's ring size).
pub const BROADCAST_CAPACITY: usize = 1024;

/// Most ready frames a connection writes before it flushes.
const MAX_BATCH: usize = 64;

/// The room and its members.
#[derive(Debug)]
struct Room {
    /// Encoded `message` envelopes for every joined connection.
    tx: broadcast::Sender<Utf8Bytes>,
    /// Connection id to user id, for `user_list`.
    members: Mutex<BTreeMap<u64, String>>,
    /// Next connection id (and message id).
    next_id: AtomicU64,
    /// Frames connections missed because they fell behind.
    lagged: AtomicU64,
    /// Ends every session at shutdown.
    stop: CancellationToken,
}

/// The reference server's routes: `/ws`, `/ws/auth` (and `/{room}` variants), `/healthz`.
pub fn router(stop: CancellationToken) -> Router {
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let room = Arc::new(Room {
        tx,
        members: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
        lagged: AtomicU64::new(0),
        stop,
    });
    Router::new()
        .route("/ws", get(upgrade))
        .route("/ws/{room}", get(upgrade))
        .route("/ws/auth", get(upgrade))
        .route("/ws/auth/{room}", get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(room)
}

/// Serves on `listener` until `shutdown` completes, then closes every session. Accepted
/// sockets are left as axum leaves them (Nagle on), as an untuned server would be.
///
/// # Errors
///
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, false, shutdown).await
}

/// [`serve`], with `TCP_NODELAY` set on every accepted socket when `nodelay` is true (a
/// diagnostic: it shows how much of the latency is Nagle's algorithm meeting delayed ACKs).
///
/// # Errors
///
/// I/O errors of the listener.
pub async fn serve_with(
    listener: TcpListener,
    nodelay: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let app = router(stop.clone());
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // axum does not wait for upgraded sockets: end them.
    stop.cancel();
    result
}

/// `roomcast-loadgen reference`: serves until Ctrl-C, SIGTERM or `--max-duration`.
///
/// # Errors
///
/// The address cannot be bound.
pub async fn run_cli(args: ReferenceArgs) -> anyhow::Result<()> {
    let limit = crate::scenario::nofile_limit();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "reference server on ws://{}/ws/auth (pid {}, RLIMIT_NOFILE {limit}, TCP_NODELAY {}); stops after {}",
        listener.local_addr()?,
        std::process::id(),
        args.nodelay,
        humantime::format_duration(args.max_duration)
    );
    let max = args.max_duration;
    serve_with(listener, args.nodelay, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate() => {}
            () = tokio::time::sleep(max) => eprintln!("reference server: --max-duration reached"),
        }
    })
    .await?;
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn upgrade(ws: WebSocketUpgrade, State(room): State<Arc<Room>>) -> Response {
    ws.on_upgrade(move |socket| session(socket, room))
}

#[derive(Deserialize)]
struct Request {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One connection: its requests and the room's frames, until either side ends or shutdown.
async fn session(mut socket: WebSocket, room: Arc<Room>) {
    let conn = room.next_id.fetch_add(1, Ordering::Relaxed);
    let user = format!("ref-{conn}");
    // Subscribed on join: `None` until then.
    let mut rx: Option<broadcast::Receiver<Utf8Bytes>> = None;
    let stop = room.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
                break;
            }
            // A frame for the room.
            frame = recv(&mut rx) => match frame {
                Ok(frame) => {
                    if write_batch(&mut socket, frame, rx.as_mut(), &room).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    room.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // A request from the client.
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                if handle(&mut socket, &text, &user, conn, &mut rx, &room).await.is_err() {
                    break;
                }
            }
        }
    }
    room.members
        .lock()
        .expect("members lock poisoned")
        .remove(&conn);
}

async fn recv(
    rx: &mut Option<broadcast::Receiver<Utf8Bytes>>,
) -> Result<Utf8Bytes, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and every frame already waiting (up to [`MAX_BATCH`]), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: Option<&mut broadcast::Receiver<Utf8Bytes>>,
    room: &Room,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    if let Some(rx) = rx {
        for _ in 1..MAX_BATCH {
            match rx.try_recv() {
                Ok(frame) => socket.feed(Message::Text(frame)).await?,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    room.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
    }
    socket.flush().await
}

/// Answers one client request.
async fn handle(
    socket: &mut WebSocket,
    text: &str,
    user: &str,
    conn: u64,
    rx: &mut Option<broadcast::Receiver<Utf8Bytes>>,
    room: &Room,
) -> Result<(), axum::Error> {
    let Ok(request) = serde_json::from_str::<Request>(text) else {
        return reply(
            socket,
            json!({"type": "error", "content": "malformed message", "timestamp": now_secs()}),
        )
        .await;
    };
    let name = request.room.unwrap_or_else(|| "main".to_owned());
    match request.kind.as_str() {
        "join" => {
            if rx.is_none() {
                *rx = Some(room.tx.subscribe());
            }
            let ids: Vec<String> = {
                let mut members = room.members.lock().expect("members lock poisoned");
                members.insert(conn, user.to_owned());
                members.values().cloned().collect()
            };
            let ts = now_secs();
            socket
                .feed(text_frame(json!({"type": "join", "room": name, "user_id": user, "username": user, "timestamp": ts})))
                .await?;
            reply(socket, json!({"type": "user_list", "room": name, "data": ids, "timestamp": ts})).await
        }
        "leave" => {
            *rx = None;
            room.members
                .lock()
                .expect("members lock poisoned")
                .remove(&conn);
            reply(socket, json!({"type": "leave", "room": name, "user_id": user, "username": user, "timestamp": now_secs()})).await
        }
        "message" if rx.is_some() => {
            let id = room.next_id.fetch_add(1, Ordering::Relaxed);
            let frame = json!({
                "type": "message",
                "room": name,
                "content": request.content.unwrap_or_default(),
                "user_id": user,
                "username": user,
                "timestamp": now_secs(),
                "id": id.to_string(),
            })
            .to_string();
            // No receivers is not an error here.
            let _ = room.tx.send(Utf8Bytes::from(frame));
            Ok(())
        }
        "message" => reply(socket, json!({"type": "error", "room": name, "content": "join first", "timestamp": now_secs()})).await,
        "ping" => reply(socket, json!({"type": "pong", "timestamp": now_secs()})).await,
        "pong" => Ok(()),
        _ => reply(socket, json!({"type": "error", "content": "unsupported message type", "timestamp": now_secs()})).await,
    }
}

fn text_frame(value: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

async fn reply(socket: &mut WebSocket, value: serde_json::Value) -> Result<(), axum::Error> {
    socket.send(text_frame(value)).await
}

/// Starts the reference server on an ephemeral loopback port, for tests; it stops when the
/// returned token is cancelled.
///
/// # Errors
///
/// The port cannot be bound.
pub async fn spawn_local() -> std::io::Result<(SocketAddr, CancellationToken)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(serve(listener, async move { shutdown.cancelled().await }));
    Ok((addr, stop))
}
