//! # roomcast
//!
//! JWT-authenticated WebSocket rooms for [axum]: hooks, presence, broadcasting and targeted
//! messages, heartbeats and limits. The Rust counterpart of the `BaseWebSocket` / `ChatBase`
//! classes: write a [`Handler`], mount a route, and reach connections through the [`Hub`].
//!
//! ```no_run
//! use roomcast::{Authenticator, Handler, Hub, Incoming, Session, SessionConfig};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
//!         cx.send_json(&serde_json::json!({ "echo": msg.text() }))
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let hub = Hub::new(SessionConfig::default());
//! let auth = Authenticator::hs256(std::env::var("JWT_SECRET").unwrap());
//! let app = axum::Router::new().route("/ws", roomcast::route(hub.clone(), auth, Echo));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! ## Layout
//!
//! - [`route`] / [`Endpoint`]: the upgrade handler. Finds the token (`?token=`, the
//!   `access_token` or `token` cookie, `Authorization: Bearer`, `Sec-WebSocket-Protocol:
//!   token.<jwt>`), validates it with the [`Authenticator`], checks the origin, takes a
//!   connection permit, upgrades. Refusals close with 4001, 1008 or 1013.
//! - [`session`]: one task per connection selecting over the socket, a bounded outbound queue
//!   of encoded [`Frame`]s and one timer (ping, heartbeat, deadlines). Hooks run there.
//!   The WebSocket framing (RFC 6455) is roomcast's own: reads land in a stack buffer and
//!   writes in a buffer freed once written, so an idle connection holds no I/O buffer.
//! - [`Hub`]: connections by user, room membership and local presence under one lock that is
//!   never held across an `.await`. Broadcasts encode once per [`protocol::Dialect`] and share
//!   the bytes; a full queue closes that one connection with 1013. A big room's joins and
//!   leaves are batched or only counted ([`PresenceMode`]), flushed by one timer per hub.
//! - [`broker`]: carries room events between nodes ([`broker::memory`] in one process).
//! - [`protocol`]: the wire formats: [`protocol::native`] (seed 002's envelope),
//!   [`protocol::channels`] (seed 004's Django Channels style), [`protocol::token_scoped`]
//!   (seed 003's room-token chat). One hub serves all of them at once.
//! - [`Error`] and [`close_code`]: every failure knows the close code it ends a connection with.
//! - Logs: each hook runs in a `session` span (connection id, user, endpoint, client IP);
//!   connects, disconnects (code, reason, duration), joins and leaves are `info` events in it.
//!   Refusals say why, sampled by a [`LogSampler`]. Tokens are never logged.

pub mod auth;
pub mod broker;
mod config;
mod error;
mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod hub;
mod ids;
mod metrics;
mod origin;
pub mod protocol;
mod route;
mod sampler;
pub mod session;
mod shutdown;
mod ws;

pub use auth::{AuthError, Authenticator, Claims, Identity, TrustTokens, UserDirectory};
pub use config::{ConfigError, PresenceConfig, PresenceMode, SessionConfig, UnknownPresenceMode};
pub use error::{Error, Result};
pub use frame::{CloseReason, Frame, close_code};
pub use handler::Handler;
pub use hub::{ConnectionInfo, History, Hub, HubBuilder, HubStats, JoinOutcome};
pub use ids::{
    ConnId, InvalidRoomName, MAX_ROOM_NAME_BYTES, NodeId, ROOM_NAME_PATTERN, RoomName, UserId,
};
pub use origin::AllowedOrigins;
pub use route::{ClientAddr, Endpoint, route};
pub use sampler::LogSampler;
pub use session::{Incoming, RefreshError, SendError, Sender, Session};

pub use bytes::Bytes;
/// Re-exported so applications name the same `Utf8Bytes` and `Bytes` the frames hold.
pub use tungstenite::Utf8Bytes;
