//! The native dialect's handler (seed 002).
//!
//! [`NativeChat`] decodes each envelope, checks it against the session (a client speaks only
//! for itself and only in rooms it joined) and answers through the hub and the store:
//!
//! - `join`: the room is created on first use (public, when `ROOMCAST_AUTO_CREATE_ROOMS`
//!   allows) or checked (a private room needs membership); the join is announced by the hub; the joiner gets the room's recent history
//!   (or, with `since`, every message after that seq) before any live message, then the
//!   `user_list`.
//! - `message`: persisted first (the store assigns `id` and `seq`, and de-duplicates a retried
//!   `client_msg_id`); each group commit's new messages are broadcast together right after it,
//!   in `seq` order (`super::Deliveries`); then each sender gets an `ack` with `id` and `seq`.
//! - `refresh`: a fresh access token for the connection ([`Session::refresh_token`]), answered
//!   with `refreshed` and the new `expires_at`, or an `error`; the library sends the
//!   `token_expiring` notice before and closes with 4001 at expiry.
//!
//! Anything malformed gets an `error` envelope and the connection stays open.

use roomcast::protocol::native::{self, NATIVE, Request};
use roomcast::protocol::{Dialect, Event, now_ms};
use roomcast::{Frame, Handler, Incoming, RoomName, Session, close_code};
use roomcast_store::{StoreError, StoredMessage};

use super::{
    Access, Outgoing, admit_frame, check_user_connections, failure_text, internal, persist,
    release_user_connection, replay, room_capacity,
};
use crate::AppState;

/// Seed 002's chat over the native envelope, persisted in the store.
#[derive(Clone)]
pub struct NativeChat {
    state: AppState,
}

impl NativeChat {
    /// A handler over the server's shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Handler for NativeChat {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
        check_user_connections(&self.state, cx).await?;
        if let Some(room) = cx.path_param("room") {
            let room = RoomName::new(room).map_err(|err| {
                roomcast::Error::close(close_code::ROOM_NOT_FOUND, err.to_string())
            })?;
            if let Err(refusal) = self.join(cx, &room, None).await? {
                return Err(roomcast::Error::close(close_code::ROOM_NOT_FOUND, refusal));
            }
        }
        Ok(())
    }

    async fn on_disconnect(&self, cx: &Session, _reason: &roomcast::CloseReason) {
        release_user_connection(&self.state, cx).await;
    }

    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        if !admit_frame(&self.state, cx, |reason| native::error(reason, None))? {
            return Ok(());
        }
        let request = match msg.text() {
            Some(text) => native::decode(text),
            None => Err(native::DecodeError::Binary),
        };
        let request = match request {
            Ok(request) => request,
            Err(err) => return Ok(cx.send(native::error(&err.to_string(), None))?),
        };
        match request {
            Request::Join { room, since } => {
                if let Err(refusal) = self.join(cx, &room, since).await? {
                    cx.send(native::error(&refusal, Some(&room)))?;
                }
                Ok(())
            }
            Request::Leave { room } => {
                if !cx.leave(&room).await? {
                    return Ok(cx.send(native::error(&not_in_room(&room), Some(&room)))?);
                }
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
            }
            Request::Message {
                room,
                content,
                data,
                client_msg_id,
            } => self.message(cx, room, content, data, client_msg_id).await,
            Request::UserList { room } => {
                if cx.is_in_room(&room) {
                    Ok(cx.send(native::user_list(
                        &room,
                        &cx.hub().room_users_everywhere(&room).await,
                    ))?)
                } else {
                    Ok(cx.send(native::error(&not_in_room(&room), Some(&room)))?)
                }
            }
            Request::Refresh { token } => {
                let answer = match cx.refresh_token(token.as_str()).await {
                    Ok(expires_at) => native::refreshed(expires_at),
                    Err(refused) => native::error(&refused.to_string(), None),
                };
                Ok(cx.send(answer)?)
            }
            Request::Ping => Ok(cx.send(native::pong())?),
            Request::Pong => Ok(()),
        }
    }
}

impl NativeChat {
    /// Joins `room`: checks or creates it, replays history, sends the member list.
    /// `Ok(Err(reason))` is a refusal to report to the client.
    async fn join(
        &self,
        cx: &Session,
        room: &RoomName,
        since: Option<u64>,
    ) -> roomcast::Result<Result<(), String>> {
        let state = &self.state;
        if let Some(refusal) = room_capacity(state, cx, room) {
            return Ok(Err(refusal));
        }
        let access = state
            .rooms
            .enter_as(state, cx, room)
            .await
            .map_err(internal)?;
        match access {
            Access::Open => {}
            Access::Private => return Ok(Err(format!("room '{room}' is private"))),
            Access::Missing => return Ok(Err(format!("room '{room}' does not exist"))),
            Access::TooManyCreated => {
                return Ok(Err(format!(
                    "room '{room}' does not exist, and you have created rooms too fast: \
                     join an existing one or wait a minute"
                )));
            }
        }
        let fetch = async {
            let replay = replay(state, room, since).await?;
            if let Some((first, last)) = replay.skipped {
                // Before the replay (it waits for this future): the client learns of the gap
                // first, then gets the latest messages and the live ones.
                // The range again in `data`, for clients that fetch it themselves.
                cx.send(native::error_with_data(
                    &format!(
                        "messages {first} to {last} were not replayed: more than \
                         ROOMCAST_REPLAY_LIMIT ({}) followed seq {}; read them with \
                         GET /rooms/{room}/messages?before={}",
                        state.replay_limit,
                        first - 1,
                        last + 1
                    ),
                    Some(room),
                    &serde_json::json!({"skipped": {"first": first, "last": last}}),
                ))?;
            }
            Ok(replay.messages)
        };
        cx.join_replaying(room, since.unwrap_or(0), fetch).await?;
        cx.send(native::user_list(
            room,
            &cx.hub().room_users_everywhere(room).await,
        ))?;
        Ok(Ok(()))
    }

    /// Persists, broadcasts, then acks (see [`persist`]).
    async fn message(
        &self,
        cx: &Session,
        room: RoomName,
        content: String,
        data: Option<serde_json::Value>,
        client_msg_id: Option<String>,
    ) -> roomcast::Result<()> {
        if !cx.is_in_room(&room) {
            return Ok(cx.send(native::error(&not_in_room(&room), Some(&room)))?);
        }
        if let Err(reason) = self.state.check_length(&content) {
            return Ok(cx.send(native::error(&reason, Some(&room)))?);
        }
        let message = Outgoing {
            room,
            content,
            data,
            client_msg_id,
        };
        persist(&self.state, cx, message, reply).await
    }
}

/// The sender's answer: an `ack` with the message's `id` and `seq` (a retry's original ones),
/// or an `error` envelope.
fn reply(room: &RoomName, outcome: Result<&StoredMessage, &StoreError>) -> Option<Frame> {
    Some(match outcome {
        Ok(stored) => native::ack(
            room,
            &stored.id.0,
            Some(stored.seq.0),
            stored.client_msg_id.as_deref(),
            stored.created_at,
        ),
        Err(err @ StoreError::Invalid(_)) => native::error(&failure_text(room, err), Some(room)),
        Err(err) => {
            let reason = format!(
                "{}; retry with the same client_msg_id",
                failure_text(room, err)
            );
            native::error(&reason, Some(room))
        }
    })
}

fn not_in_room(room: &RoomName) -> String {
    format!("not in room '{room}': join it first")
}
