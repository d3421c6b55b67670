//! Seed 001's `MyChatWebSocket`: announce arrivals, chat with everyone, join rooms, talk in a
//! room, send a direct message; plus a `/stats` HTTP route showing the hub's queries.
//!
//! Run it with the secret your tokens are signed with (HS256):
//!
//! ```text
//! export JWT_SECRET=change-me-to-a-secret-of-at-least-32-bytes
//! cargo run -p roomcast --example chat            # listens on 127.0.0.1:8080 (PORT=… to change)
//! ```
//!
//! Mint a token per user with the same secret and connect each, e.g. with websocat:
//!
//! ```text
//! TOKEN=$(ROOMCAST_JWT_SECRET=$JWT_SECRET cargo run -q -p roomcast-server -- token --sub alice)
//! websocat "ws://127.0.0.1:8080/ws?token=$TOKEN"
//! curl http://127.0.0.1:8080/stats
//! ```
//!
//! The exchange, one JSON object per frame:
//!
//! ```text
//! (on connect)                             → everyone: {"type":"user_joined","user_id":"alice"}
//! {"type":"chat","text":"hi"}              → everyone: {"from":"alice","text":"hi"}
//! {"type":"join_room","room":"rust"}       → alice:    {"type":"joined","room":"rust"}
//! {"type":"leave_room","room":"rust"}      → alice:    {"type":"left","room":"rust"}
//! {"type":"room","room":"rust","text":"x"} → members:  {"from":"alice","room":"rust","text":"x"}
//! {"type":"dm","to":"bob","text":"psst"}   → bob:      {"from":"alice","to":"bob","text":"psst"}
//! anything else                            → alice:    {"type":"error","error":"…"}
//! ```
//!
//! `join_room` puts every connection of the user in the room (seed 001's `join_room(user_id,
//! room)`); a direct message reaches every connection (tab, device) of its recipient.

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use roomcast::{
    Authenticator, CloseReason, Frame, Handler, Hub, Incoming, RoomName, Session, SessionConfig,
    UserId,
};
use serde::Deserialize;
use serde_json::json;

/// What a client may send, by its `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    /// Say something to everyone connected.
    Chat { text: String },
    /// Join a room (every connection of the user).
    JoinRoom { room: RoomName },
    /// Leave a room.
    LeaveRoom { room: RoomName },
    /// Say something to a room's members.
    Room { room: RoomName, text: String },
    /// Say something to one user.
    Dm { to: UserId, text: String },
}

/// The hooks. All state lives in the hub each session reaches through `cx.hub()`.
struct Chat;

impl Handler for Chat {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
        let joined = json!({ "type": "user_joined", "user_id": cx.user_id() });
        cx.hub().broadcast(Frame::json(&joined)?, &[]).await?;
        Ok(())
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        let request = match msg.json::<Request>() {
            Ok(request) => request,
            // A malformed request is the client's mistake: say so and keep the connection.
            Err(err) => return cx.send_json(&json!({ "type": "error", "error": err.to_string() })),
        };
        let hub = cx.hub();
        let me = cx.user_id();
        match request {
            Request::Chat { text } => {
                hub.broadcast(Frame::json(&json!({ "from": me, "text": text }))?, &[])
                    .await?;
            }
            Request::JoinRoom { room } => {
                hub.join_room(me, &room).await?;
                cx.send_json(&json!({ "type": "joined", "room": room }))?;
            }
            Request::LeaveRoom { room } => {
                hub.leave_room(me, &room).await?;
                cx.send_json(&json!({ "type": "left", "room": room }))?;
            }
            Request::Room { room, text } => {
                if !hub.is_member(me, &room) {
                    let error = format!("join {room} before talking in it");
                    return cx.send_json(&json!({ "type": "error", "error": error }));
                }
                let said = json!({ "from": me, "room": room, "text": text });
                hub.broadcast_to_room(&room, Frame::json(&said)?).await?;
            }
            Request::Dm { to, text } => {
                let said = json!({ "from": me, "to": to, "text": text });
                if hub.send_to(&to, Frame::json(&said)?).await? == 0 {
                    let error = format!("{to} is not connected");
                    cx.send_json(&json!({ "type": "error", "error": error }))?;
                }
            }
        }
        Ok(())
    }

    async fn on_disconnect(&self, cx: &Session, reason: &CloseReason) {
        // Rooms are left by the hub after this hook; `cx.rooms()` still lists them here.
        eprintln!("{} left ({reason}), was in {:?}", cx.user_id(), cx.rooms());
    }
}

/// `GET /stats`: seed 000's connection-management queries, as JSON.
async fn stats(State(hub): State<Hub>) -> impl IntoResponse {
    let mut users = hub.connected_users();
    users.sort();
    let mut rooms = hub.rooms();
    rooms.sort();
    let rooms: serde_json::Map<String, serde_json::Value> = rooms
        .into_iter()
        .map(|room| (room.to_string(), json!(hub.room_members(&room))))
        .collect();
    let body = json!({
        "connected_users": users,
        "connection_count": hub.connection_count(),
        "rooms": rooms,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("JWT_SECRET").context(
        "JWT_SECRET is not set: export the HS256 secret your tokens are signed with \
         (at least 32 bytes), e.g. JWT_SECRET=change-me-to-a-secret-of-at-least-32-bytes",
    )?;
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .with_context(|| format!("PORT: expected a port number like 8080, got {port:?}"))?,
        Err(_) => 8080,
    };

    let hub = Hub::new(SessionConfig::default());
    let auth = Authenticator::hs256(secret);
    let app = axum::Router::new()
        .route("/ws", roomcast::route(hub.clone(), auth, Chat))
        .route("/stats", get(stats))
        .with_state(hub);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("PORT: cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    println!("chat: ws://{addr}/ws?token=<jwt>, stats at http://{addr}/stats");
    axum::serve(listener, app).await.context("serving")
}
