//! Seed 003's chat at `GET /ws/chat?token=`: the room, the client's id and its name come from
//! a room token (`GET /create-room`, `GET /join-room`).
//!
//! ```text
//! client                                  server
//!   │ GET /ws/chat (no token)               │──▶ close 1008 "Token required"
//!   │ GET /ws/chat?token=<forged/expired>   │──▶ close 1008
//!   │ GET /ws/chat?token=<room token>       │ claims: client_id, room_id, name, type "room"
//!   │◀── {"name","message","timestamp"} × history (oldest first)
//!   │── hi ───────────────────────────────▶│ persisted, then to the OTHERS in the room:
//!   │                                       │   {"name": "Ann", "message": "hi", "timestamp": …}
//!   │── "" ───────────────────────────────▶│
//!   │◀── {"error": "message is empty"} ─────│ and the connection stays open
//! ```
//!
//! An unexpected server failure closes with 1011. The route only admits tokens of type
//! `room`, and every other endpoint refuses them.

use roomcast::protocol::token_scoped;
use roomcast::{AuthError, CloseReason, Frame, Handler, Incoming, RoomName, Session, close_code};
use roomcast_store::{StoreError, StoredMessage};

use super::{Greeting, enter_one_room, failure_text, release_user_connection, say_in_one_room};
use crate::AppState;

/// The token claim naming the room.
pub(crate) const ROOM_CLAIM: &str = "room_id";

/// Seed 003's chat over room tokens.
#[derive(Clone)]
pub struct TokenChat {
    state: AppState,
}

impl TokenChat {
    /// A handler over the server's shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// How the endpoint closes a connection whose token was refused: 1008, as the seed does,
    /// with `Token required` when there was none; 1011 when the check itself failed.
    pub fn refusal(err: &AuthError) -> CloseReason {
        match err {
            AuthError::Missing => CloseReason::new(close_code::POLICY, "Token required"),
            AuthError::Directory(_) => err.close_reason(),
            AuthError::Expired => CloseReason::new(close_code::POLICY, "Token expired"),
            _ => CloseReason::new(close_code::POLICY, "Invalid token"),
        }
    }
}

/// The connection's room, from its token's `room_id`.
fn room_of(cx: &Session) -> roomcast::Result<RoomName> {
    let name = cx.param(ROOM_CLAIM).unwrap_or_default();
    RoomName::new(name).map_err(|_| roomcast::Error::close(close_code::POLICY, "Invalid token"))
}

impl Handler for TokenChat {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
        let room = room_of(cx)?;
        enter_one_room(&self.state, cx, &room, Greeting::History).await
    }

    async fn on_disconnect(&self, cx: &Session, _reason: &roomcast::CloseReason) {
        release_user_connection(&self.state, cx).await;
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        let max_chars = self.state.max_message_chars;
        let decoded = || match msg.text() {
            Some(text) => token_scoped::decode(text, max_chars),
            None => Err(token_scoped::DecodeError::Binary),
        };
        let room = room_of(cx)?;
        say_in_one_room(&self.state, cx, room, decoded, token_scoped::error, reply).await
    }
}

/// The sender does not get its own message back, as in the seed: only a failure is answered.
fn reply(room: &RoomName, outcome: Result<&StoredMessage, &StoreError>) -> Option<Frame> {
    outcome
        .err()
        .map(|err| token_scoped::error(&failure_text(room, err)))
}
