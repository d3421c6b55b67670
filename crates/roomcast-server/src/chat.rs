//! The native dialect's handler (seed 002) and the echo handler.
//!
//! [`NativeChat`] decodes each envelope, checks it against the session (a client speaks only
//! for itself and only in rooms it joined) and answers through the hub: `join` and `leave` are
//! announced to the room by the hub, the joiner gets the `user_list`, a `message` is published
//! to the room with the server's identity, id and time. Anything malformed gets an `error`
//! envelope and the connection stays open.

use std::sync::Arc;

use roomcast::protocol::native::{self, NATIVE, Request};
use roomcast::protocol::{ChatMessage, Dialect, Event, now_ms};
use roomcast::{Handler, Incoming, RoomName, Session, close_code};

/// Seed 002's chat over the native envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeChat;

impl Handler for NativeChat {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
        if let Some(room) = cx.path_param("room") {
            let room = RoomName::new(room).map_err(|err| {
                roomcast::Error::close(close_code::ROOM_NOT_FOUND, err.to_string())
            })?;
            join(cx, &room).await?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        let request = match msg.text() {
            Some(text) => native::decode(text),
            None => Err(native::DecodeError::Binary),
        };
        let request = match request {
            Ok(request) => request,
            Err(err) => return Ok(cx.send(native::error(&err.to_string(), None))?),
        };
        match request {
            Request::Join { room, since: _ } => join(cx, &room).await,
            Request::Leave { room } => {
                if cx.leave(&room).await? {
                    // The hub tells the others; the leaver gets the same envelope as a receipt.
                    let left = Event::Left {
                        room,
                        user: cx.user().clone(),
                        timestamp_ms: now_ms(),
                    };
                    if let Some(frame) = NATIVE.encode(&left) {
                        cx.send(frame)?;
                    }
                    Ok(())
                } else {
                    Ok(cx.send(native::error(&not_in_room(&room), Some(&room)))?)
                }
            }
            Request::Message {
                room,
                content,
                data,
                client_msg_id: _,
            } => {
                if !cx.is_in_room(&room) {
                    return Ok(cx.send(native::error(&not_in_room(&room), Some(&room)))?);
                }
                let message = ChatMessage {
                    id: uuid::Uuid::now_v7().to_string().into(),
                    seq: None,
                    room: room.clone(),
                    sender: cx.user().clone(),
                    content,
                    data,
                    timestamp_ms: now_ms(),
                };
                cx.hub()
                    .publish(&room, Event::Message(Arc::new(message)), &[])
                    .await?;
                Ok(())
            }
            Request::UserList { room } => {
                if cx.is_in_room(&room) {
                    Ok(cx.send(native::user_list(&room, &cx.hub().room_users(&room)))?)
                } else {
                    Ok(cx.send(native::error(&not_in_room(&room), Some(&room)))?)
                }
            }
            Request::Ping => Ok(cx.send(native::pong())?),
            Request::Pong => Ok(()),
        }
    }
}

/// Joins `room` (announced by the hub when the user is new there), then sends the joiner the
/// room's member list.
async fn join(cx: &Session, room: &RoomName) -> roomcast::Result<()> {
    cx.join(room).await?;
    cx.send(native::user_list(room, &cx.hub().room_users(room)))?;
    Ok(())
}

fn not_in_room(room: &RoomName) -> String {
    format!("not in room '{room}': join it first")
}

/// Echoes every text and binary message back as it came (`/ws/echo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        Ok(cx.send(msg.to_frame())?)
    }
}
