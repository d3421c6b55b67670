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

use super::{
    Access, Outgoing, admit_frame, check_user_connections, failure_text, history, internal,
    persist, room_capacity,
};
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
        let state = &self.state;
        check_user_connections(state, cx)?;
        let room = room_of(cx)?;
        if let Some(refusal) = room_capacity(state, cx, &room) {
            return Err(roomcast::Error::close(close_code::TRY_AGAIN_LATER, refusal));
        }
        let access = state
            .rooms
            .enter_as(state, cx, &room)
            .await
            .map_err(internal)?;
        if access != Access::Open {
            // A private room looks missing to those outside it.
            return Err(roomcast::Error::close(
                close_code::ROOM_NOT_FOUND,
                "room not found",
            ));
        }
        cx.join_listed(&room, 0, history(state, &room, None))
            .await?;
        Ok(())
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        if !admit_frame(&self.state, cx, channels::error)? {
            return Ok(());
        }
        let decoded = match msg.text() {
            Some(text) => channels::decode(text, self.state.max_message_chars),
            None => Err(channels::DecodeError::Binary),
        };
        let content = match decoded {
            Ok(content) => content,
            Err(err) => return Ok(cx.send(channels::error(&err.to_string()))?),
        };
        let message = Outgoing {
            room: room_of(cx)?,
            content,
            data: None,
            client_msg_id: None,
        };
        persist(&self.state, cx, message, reply).await
    }
}

/// The sender sees its message as everyone does, in the broadcast: only a failure is answered.
fn reply(room: &RoomName, outcome: Result<&StoredMessage, &StoreError>) -> Option<Frame> {
    outcome
        .err()
        .map(|err| channels::error(&failure_text(room, err)))
}
