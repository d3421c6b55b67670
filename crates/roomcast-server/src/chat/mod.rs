//! The chat handlers: one per wire format, one path to the store and the hub for all of them.
//!
//! | endpoint | handler | dialect |
//! | --- | --- | --- |
//! | `/ws`, `/ws/{room}`, `/ws/auth`, `/ws/auth/{room}` | [`NativeChat`] | seed 002's envelope |
//! | `/ws/chat/{room_name}/` | [`ChannelsChat`] | seed 004's Channels style |
//! | `/ws/chat?token=` | [`TokenChat`] | seed 003's room tokens |
//!
//! Whatever the endpoint, a message takes the same path: checked by the handler, queued to
//! the store (`persist`), committed in a group with the other messages waiting at that
//! moment (the store assigns `id` and the room's next `seq`), then broadcast from the commit
//! path in `seq` order (`Deliveries`, through [`Hub::publish_now_many`]), where each member's
//! dialect gets the message encoded once for all its members. Then the sender gets its
//! dialect's answer (the native `ack`, or nothing). So a room has one sequence, and history
//! written through one endpoint replays through another in that one's format.
//!
//! ```text
//! client ─frame─▶ handler: decode (dialect) ─▶ persist ─▶ store queue ─▶ group commit
//!                                                                          │ seq 41, 42, 43
//!     native ◀─ {"type":"message",…} ─┐                                     ▼
//!   channels ◀─ {"type":"chat_message",…} ─┼── hub: encode once per dialect ◀─ Deliveries
//!  room token ◀─ {"name",…} (not the sender) ─┘
//! ```
//!
//! Rooms are checked by [`RoomGate`]: created on first use when `ROOMCAST_AUTO_CREATE_ROOMS`
//! allows, private ones only for their members.

mod channels;
mod gate;
mod native;
mod token_chat;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use roomcast::protocol::{ChatMessage, Event, UserInfo};
use roomcast::{Frame, Handler, Hub, Incoming, RoomName, Sender, Session, close_code};
use roomcast_store::{Appended, NewMessage, Seq, Store, StoreError, StoredMessage};

pub use channels::ChannelsChat;
pub use gate::RoomGate;
pub(crate) use gate::{
    Access, admit_frame, check_user_connections, release_user_connection, room_capacity,
};
pub use native::NativeChat;
pub(crate) use token_chat::ROOM_CLAIM;
pub use token_chat::TokenChat;

use crate::AppState;

/// The messages a joiner gets before live ones: every message after `since`, or the room's
/// recent history (`ROOMCAST_HISTORY_LIMIT`), oldest first.
///
/// # Errors
///
/// The store's, as a 1011 (internal) error.
pub(crate) async fn history(
    state: &AppState,
    room: &RoomName,
    since: Option<u64>,
) -> roomcast::Result<Vec<Arc<ChatMessage>>> {
    Ok(replay(state, room, since).await?.messages)
}

/// What a join replays, and what it left out.
pub(crate) struct Replay {
    /// Oldest first.
    pub(crate) messages: Vec<Arc<ChatMessage>>,
    /// With `since`: the seqs `(first, last)` that were not replayed because more than
    /// `ROOMCAST_REPLAY_LIMIT` messages followed `since`; the replay is then the latest
    /// messages, so that live ones follow it without a gap.
    pub(crate) skipped: Option<(u64, u64)>,
}

/// As [`history`], saying what a resume further behind than `ROOMCAST_REPLAY_LIMIT` left out:
/// it replays the room's latest messages (live ones follow them without a gap) and names the
/// range it skipped, for the client to read through the HTTP API. (It replayed the oldest ones
/// before, and the messages between them and the live ones were lost to the client, silently.)
///
/// # Errors
///
/// The store's, as a 1011 (internal) error.
pub(crate) async fn replay(
    state: &AppState,
    room: &RoomName,
    since: Option<u64>,
) -> roomcast::Result<Replay> {
    let store = &state.store;
    let to_chat_all = |stored: Vec<StoredMessage>| -> Vec<Arc<ChatMessage>> {
        stored
            .into_iter()
            .map(|stored| to_chat(room, stored))
            .collect()
    };
    let Some(since) = since else {
        let latest = store
            .history(room.as_str(), None, state.history_limit)
            .await
            .map_err(internal)?;
        return Ok(Replay {
            messages: to_chat_all(latest),
            skipped: None,
        });
    };
    let limit = state.replay_limit;
    let after = store
        .messages_since(room.as_str(), Seq(since), limit.saturating_add(1))
        .await
        .map_err(internal)?;
    if after.len() <= limit {
        return Ok(Replay {
            messages: to_chat_all(after),
            skipped: None,
        });
    }
    let latest = store
        .history(room.as_str(), None, limit)
        .await
        .map_err(internal)?;
    let first_replayed = latest.first().map_or(since + 1, |message| message.seq.0);
    let skipped = (first_replayed > since + 1).then(|| (since + 1, first_replayed - 1));
    Ok(Replay {
        messages: to_chat_all(latest),
        skipped,
    })
}

/// How a dialect answers the sender once the store has answered: the stored message (new or a
/// retry's original), or why it was not stored. `None`: nothing to send.
pub(crate) type Reply = fn(&RoomName, Result<&StoredMessage, &StoreError>) -> Option<Frame>;

/// A message a client sent, checked by its handler and ready for the store.
pub(crate) struct Outgoing {
    pub(crate) room: RoomName,
    pub(crate) content: String,
    pub(crate) data: Option<serde_json::Value>,
    pub(crate) client_msg_id: Option<String>,
}

/// Persists, broadcasts (from the store's commit path, in seq order), then answers the sender
/// with `reply`.
///
/// Returns once the message is in the store's queue, not when it is committed: a
/// connection's next message is read at once, so one client's messages share a group commit
/// instead of waiting an fsync each (with one message in flight per connection, a room's rate
/// was capped near publishers ÷ commit latency). Order is kept: seqs follow queue order, the
/// broadcast of a new message is sent from the commit hook, which runs in seq order, and the
/// answer from the outcome hook once the commit is durable. A retry (duplicate `client_msg_id`)
/// and a failed commit are answered from the outcome hook too: no task waits for a message (one
/// per message cost a spawn and a cross-thread wake-up). The store's bounded queue (`queue_capacity`) is what
/// stops a client that sends faster than the store commits.
///
/// # Errors
///
/// [`roomcast::Error`] when the answer cannot be queued (the connection is closing).
pub(crate) async fn persist(
    state: &AppState,
    cx: &Session,
    message: Outgoing,
    reply: Reply,
) -> roomcast::Result<()> {
    let arrived = std::time::Instant::now();
    let Outgoing {
        room,
        content,
        data,
        client_msg_id,
    } = message;
    let new = NewMessage {
        room: room.as_str().to_owned(),
        user_id: cx.user_id().as_str().to_owned(),
        username: cx.username().to_owned(),
        content,
        data,
        client_msg_id,
    };
    // The broadcast at the commit, the sender's answer once it is durable (the store's
    // `queue_message_written_then`): members need not wait for the `fsync`, the ack does.
    let broadcast = broadcast_at_commit(&state.deliveries, room.clone(), arrived);
    let deliveries = state.deliveries.clone();
    let sender = cx.sender();
    let answer = {
        let room = room.clone();
        move |outcome: roomcast_store::Result<(StoredMessage, Appended)>| {
            let reply = match outcome {
                Ok((stored, _)) => reply(&room, Ok(&stored)),
                Err(err) => {
                    if !matches!(err, StoreError::Invalid(_)) {
                        deliveries.0.hub.count_error("store");
                    }
                    reply(&room, Err(&err))
                }
            };
            deliveries.push(Answered {
                room,
                message: None,
                reply,
                sender: Some(sender),
                arrived,
            });
        }
    };
    let queued = state
        .store
        .queue_message_written_then(new, broadcast, answer)
        .await;
    if let Err(err) = queued
        && let Some(frame) = reply(&room, Err(&err))
    {
        cx.send(frame)?;
    }
    Ok(())
}

/// The store's commit hook for a message to `room` that arrived at `arrived`: hands it to
/// `deliveries`, which broadcasts it after the batch's hooks.
fn broadcast_at_commit(
    deliveries: &Deliveries,
    room: RoomName,
    arrived: std::time::Instant,
) -> impl FnOnce(&StoredMessage) + Send + 'static {
    let deliveries = deliveries.clone();
    move |stored: &StoredMessage| {
        deliveries.push(Answered {
            message: Some(to_chat(&room, stored.clone())),
            room,
            reply: None,
            sender: None,
            arrived,
        });
    }
}

/// The user id and name of operator messages (`POST /admin/rooms/{room}/messages`).
pub const SYSTEM_USER: &str = "system";

/// Stores an operator's message to `room` as user `system` and broadcasts it on the path every
/// chat message takes ([`Deliveries`]), so it has the room's next `seq` and reaches every
/// dialect in order. Returns it once durable (it is broadcast at its commit, as a client's is).
///
/// # Errors
///
/// The store's: [`StoreError::Invalid`] for content it refuses, others when it fails.
pub(crate) async fn persist_system(
    state: &AppState,
    room: &RoomName,
    content: String,
    data: Option<serde_json::Value>,
) -> Result<StoredMessage, StoreError> {
    let arrived = std::time::Instant::now();
    let new = NewMessage {
        room: room.as_str().to_owned(),
        user_id: SYSTEM_USER.to_owned(),
        username: SYSTEM_USER.to_owned(),
        content,
        data,
        client_msg_id: None,
    };
    let (stored_tx, stored_rx) = tokio::sync::oneshot::channel();
    let broadcast = broadcast_at_commit(&state.deliveries, room.clone(), arrived);
    let answer = move |outcome: roomcast_store::Result<(StoredMessage, Appended)>| {
        let _ = stored_tx.send(outcome.map(|(stored, _)| stored));
    };
    state
        .store
        .queue_message_written_then(new, broadcast, answer)
        .await?;
    stored_rx.await.map_err(|_| StoreError::Closed)?
}

/// Why a message was not stored, in words for its sender: a client mistake says what it was;
/// a server fault is logged here and told in general terms.
pub(crate) fn failure_text(room: &RoomName, err: &StoreError) -> String {
    match err {
        StoreError::Invalid(reason) => reason.clone(),
        err => {
            tracing::error!(error = %err, %room, "could not persist a message");
            "the message could not be saved".to_owned()
        }
    }
}

/// What a store hook hands over: a message for its room (at its commit), or an answer for its
/// sender (once the commit is durable).
struct Answered {
    room: RoomName,
    /// The message, from the commit hook (only a new message has one; a retry is only
    /// answered again).
    message: Option<Arc<ChatMessage>>,
    /// The sender's answer (the native `ack`, an error), if its dialect has one, from the
    /// outcome hook.
    reply: Option<Frame>,
    /// Who sent it; `None` for an operator's message (`persist_system`).
    sender: Option<Sender>,
    /// When its frame was handled: `roomcast_broadcast_seconds` runs from here.
    arrived: std::time::Instant,
}

/// Collects what the store's hooks answer and broadcasts it once per group commit.
///
/// The store answers a whole group commit at once; delivering each message on its own cost
/// every member of the room a lock, a push and a wake-up per message, the largest share of the
/// server's own CPU in a 1000-way fan-out. The hooks only collect; after the batch's last hook
/// ([`Store::after_each_batch`], on the same task) each room's new messages go to
/// [`Hub::publish_now_many`] (one queue operation per member for all of them), then the
/// replies are sent. The store runs a batch's commit hooks (the messages) before its outcome
/// hooks (the replies), once more after each: a sender still gets its message before its
/// answer, and each room's messages stay in `seq` order. On SQLite the replies wait for the
/// WAL's sync, the messages do not ([`StoreOptions::sqlite_hooks_before_sync`]).
///
/// [`StoreOptions::sqlite_hooks_before_sync`]: roomcast_store::StoreOptions::sqlite_hooks_before_sync
#[derive(Clone)]
pub(crate) struct Deliveries(Arc<Collected>);

struct Collected {
    hub: Hub,
    answered: Mutex<Vec<Answered>>,
}

impl Deliveries {
    /// Collects for `hub` and has `store` flush after each batch. `store` must be fresh: the
    /// server registers this once, on the store it has just connected.
    pub(crate) fn start(hub: Hub, store: &Store) -> Self {
        let collected = Arc::new(Collected {
            hub,
            answered: Mutex::new(Vec::new()),
        });
        let flushed = Arc::clone(&collected);
        let registered = store.after_each_batch(move || flushed.flush());
        assert!(registered, "a fresh store has no after-batch callback");
        Self(collected)
    }

    fn push(&self, answered: Answered) {
        self.0.lock().push(answered);
    }
}

impl Collected {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Answered>> {
        // Pushes and takes only: a panic cannot leave the list inconsistent.
        self.answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Broadcasts every new message collected so far, a room at a time, then sends the replies.
    fn flush(&self) {
        let mut answered = std::mem::take(&mut *self.lock());
        if answered.is_empty() {
            return;
        }
        let mut rooms: Vec<(RoomName, Vec<Event>)> = Vec::new();
        let mut index: HashMap<RoomName, usize> = HashMap::new();
        // Each message's arrival, by room: its broadcast time is observed once its room's
        // group is queued (once per message, never per recipient).
        let mut arrivals: Vec<Vec<std::time::Instant>> = Vec::new();
        for item in &mut answered {
            let Some(message) = item.message.take() else {
                continue;
            };
            let at = *index.entry(item.room.clone()).or_insert_with(|| {
                rooms.push((item.room.clone(), Vec::new()));
                arrivals.push(Vec::new());
                rooms.len() - 1
            });
            rooms[at].1.push(Event::Message(message));
            arrivals[at].push(item.arrived);
        }
        for ((room, events), arrived) in rooms.into_iter().zip(arrivals) {
            self.hub.publish_now_many(&room, events, &[]);
            for at in arrived {
                self.hub.record_broadcast(at.elapsed());
            }
        }
        for item in answered {
            if let (Some(reply), Some(sender)) = (item.reply, item.sender) {
                // A full queue closes that connection (1013); nothing else to do here.
                let _ = sender.send(reply);
            }
        }
    }
}

/// A stored message as the hub's dialect-neutral event payload.
pub(crate) fn to_chat(room: &RoomName, stored: StoredMessage) -> Arc<ChatMessage> {
    Arc::new(ChatMessage {
        id: stored.id.0.into(),
        seq: Some(stored.seq.0),
        room: room.clone(),
        sender: UserInfo {
            id: stored.user_id.into(),
            username: stored.username.into(),
        },
        content: stored.content,
        data: stored.data,
        timestamp_ms: stored.created_at,
    })
}

/// A store failure as the error that ends a hook: logged here, closed with 1011.
pub(crate) fn internal(err: StoreError) -> roomcast::Error {
    tracing::error!(error = %err, "store failed");
    roomcast::Error::other(err)
}

/// How a seed 003 or 004 connection enters its one room at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Greeting {
    /// The dialect's member list, then the history (seed 004's `room_users_list`).
    MembersThenHistory,
    /// The history only (seed 003).
    History,
}

/// Enters the one room of a seed 003 or 004 connection: the per-user and room bounds, the
/// room's gate (a missing room created when allowed), then the join with its greeting.
///
/// # Errors
///
/// A close: 1013 past a bound, 4000 for a room that is missing and may not be created, or
/// private to others (it looks missing to them); 1011 when the store fails.
pub(crate) async fn enter_one_room(
    state: &AppState,
    cx: &Session,
    room: &RoomName,
    greeting: Greeting,
) -> roomcast::Result<()> {
    check_user_connections(state, cx).await?;
    if let Some(refusal) = room_capacity(state, cx, room) {
        return Err(roomcast::Error::close(close_code::TRY_AGAIN_LATER, refusal));
    }
    let access = state
        .rooms
        .enter_as(state, cx, room)
        .await
        .map_err(internal)?;
    if access != Access::Open {
        return Err(roomcast::Error::close(
            close_code::ROOM_NOT_FOUND,
            "room not found",
        ));
    }
    let fetch = history(state, room, None);
    match greeting {
        Greeting::MembersThenHistory => cx.join_listed(room, 0, fetch).await?,
        Greeting::History => cx.join_replaying(room, 0, fetch).await?,
    };
    Ok(())
}

/// Says a seed 003 or 004 client's frame in its one room: counted against the message rate,
/// decoded by the dialect (a refusal answered with `error`), then persisted and broadcast.
///
/// # Errors
///
/// A close with 1008 past the message rate; as [`persist`].
pub(crate) async fn say_in_one_room<E: std::fmt::Display>(
    state: &AppState,
    cx: &Session,
    room: RoomName,
    decoded: impl FnOnce() -> Result<String, E>,
    error: fn(&str) -> Frame,
    reply: Reply,
) -> roomcast::Result<()> {
    if !admit_frame(state, cx, error)? {
        return Ok(());
    }
    let content = match decoded() {
        Ok(content) => content,
        Err(err) => return Ok(cx.send(error(&err.to_string()))?),
    };
    let message = Outgoing {
        room,
        content,
        data: None,
        client_msg_id: None,
    };
    persist(state, cx, message, reply).await
}

/// Echoes every text and binary message back as it came (`/ws/echo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        Ok(cx.send(msg.to_frame())?)
    }
}
