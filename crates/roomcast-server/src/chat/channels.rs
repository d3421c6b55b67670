//! Seed 004's chat at `GET /ws/chat/{room_name}/`, in the style of Django Channels.
//!
//! ```text
//! client                                   server
//!   │ GET /ws/chat/general/ (Bearer or ?token=)│ token refused → close 4001
//!   │                                          │ room missing and not creatable, or private
//!   │                                          │ and not a member → close 4000
//!   │◀── room_users_list ──────────────────────│ the members, the joiner included
//!   │◀── chat_message × history (oldest first) │ ROOMCAST_HISTORY_LIMIT
//!   │── {"message": "Hi!"} ───────────────────▶│ persisted, then to every member:
//!   │◀── chat_message ─────────────────────────│ (the sender too)
//!   │── {"nope": 1} ──────────────────────────▶│
//!   │◀── {"error": "'message' is required"} ───│ and the connection stays open
//! ```
//!
//! The others see `user_join` when a user's first connection enters and `user_leave` when its
//! last one goes. Messages share the room's store and `seq` with the other endpoints.

use roomcast::protocol::channels;
use roomcast::{Frame, Handler, Incoming, RoomName, Session, close_code};
use roomcast_store::{StoreError, StoredMessage};

use super::{Greeting, enter_one_room, failure_text, release_user_connection, say_in_one_room};
use crate::AppState;

/// Seed 004's chat: one room per connection, named by the path.
#[derive(Clone)]
pub struct ChannelsChat {
    state: AppState,
}

impl ChannelsChat {
    /// A handler over the server's shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The connection's room, from the path (`{room_name}`), as `on_connect` checked it.
fn room_of(cx: &Session) -> roomcast::Result<RoomName> {
    let name = cx.path_param("room_name").unwrap_or_default();
    RoomName::new(name)
        .map_err(|err| roomcast::Error::close(close_code::ROOM_NOT_FOUND, err.to_string()))
}

impl Handler for ChannelsChat {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
        // A private room looks missing to those outside it: 4000 either way.
        let room = room_of(cx)?;
        enter_one_room(&self.state, cx, &room, Greeting::MembersThenHistory).await
    }

    async fn on_disconnect(&self, cx: &Session, _reason: &roomcast::CloseReason) {
        release_user_connection(&self.state, cx).await;
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        let max_chars = self.state.max_message_chars;
        let decoded = || match msg.text() {
            Some(text) => channels::decode(text, max_chars),
            None => Err(channels::DecodeError::Binary),
        };
        let room = room_of(cx)?;
        say_in_one_room(&self.state, cx, room, decoded, channels::error, reply).await
    }
}

/// The sender sees its message as everyone does, in the broadcast: only a failure is answered.
fn reply(room: &RoomName, outcome: Result<&StoredMessage, &StoreError>) -> Option<Frame> {
    outcome
        .err()
        .map(|err| channels::error(&failure_text(room, err)))
}
