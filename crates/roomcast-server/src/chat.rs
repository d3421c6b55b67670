//! The native dialect's handler (seed 002) and the echo handler.
//!
//! [`NativeChat`] decodes each envelope, checks it against the session (a client speaks only
//! for itself and only in rooms it joined) and answers through the hub and the store:
//!
//! - `join`: the room is created on first use (public) or checked (a private room needs
//!   membership); the join is announced by the hub; the joiner gets the room's recent history
//!   (or, with `since`, every message after that seq) before any live message, then the
//!   `user_list`.
//! - `message`: persisted first (the store assigns `id` and `seq`, and de-duplicates a retried
//!   `client_msg_id`); each group commit's new messages are broadcast together right after it,
//!   in `seq` order ([`Deliveries`]); then each sender gets an `ack` with `id` and `seq`.
//!
//! Anything malformed gets an `error` envelope and the connection stays open.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use roomcast::protocol::native::{self, NATIVE, Request};
use roomcast::protocol::{ChatMessage, Dialect, Event, UserInfo, now_ms};
use roomcast::{Frame, Handler, Hub, Incoming, RoomName, Sender, Session, close_code};
use roomcast_store::{Appended, NewMessage, Seq, Store, StoreError, StoredMessage};

use crate::AppState;

/// Seed 002's chat over the native envelope, persisted in the store.
#[derive(Clone)]
pub struct NativeChat {
    state: AppState,
    public_rooms: Arc<PublicRooms>,
}

impl NativeChat {
    /// A handler over the server's shared state.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            public_rooms: Arc::default(),
        }
    }
}

/// Rooms this server has seen to exist and be public, so that joining one again needs no
/// store lookup (a join's first query; the history it sends is the second). Safe because a
/// room's privacy is fixed when it is created and rooms are never deleted: an entry cannot go
/// stale. Whoever adds deleting or re-marking rooms must clear it. Bounded: emptied when full.
#[derive(Default)]
struct PublicRooms(Mutex<HashSet<RoomName>>);

impl PublicRooms {
    /// Most rooms remembered (~100 bytes each) before the set starts over.
    const CAPACITY: usize = 100_000;

    fn contains(&self, room: &RoomName) -> bool {
        self.lock().contains(room)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<RoomName>> {
        // Inserts and clears only: a panic cannot leave the set inconsistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, room: &RoomName) {
        let mut rooms = self.lock();
        if rooms.len() >= Self::CAPACITY {
            rooms.clear();
        }
        rooms.insert(room.clone());
    }
}

impl Handler for NativeChat {
    async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
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

impl NativeChat {
    /// Joins `room`: checks or creates it, replays history, sends the member list.
    /// `Ok(Err(reason))` is a refusal to report to the client.
    async fn join(
        &self,
        cx: &Session,
        room: &RoomName,
        since: Option<u64>,
    ) -> roomcast::Result<Result<(), String>> {
        let store = &self.state.store;
        if !self.public_rooms.contains(room) {
            match store.room(room.as_str()).await {
                Ok(Some(record)) if record.private => {
                    let member = store
                        .is_member(room.as_str(), cx.user_id().as_str())
                        .await
                        .map_err(internal)?;
                    if !member {
                        return Ok(Err(format!("room '{room}' is private")));
                    }
                }
                Ok(Some(_)) => self.public_rooms.remember(room),
                Ok(None) => match store
                    .create_room(room.as_str(), false, Some(cx.user_id().as_str()))
                    .await
                {
                    Ok(_) => self.public_rooms.remember(room),
                    // Someone else created it meanwhile: fine. (Not remembered: they may have
                    // made it private.)
                    Err(StoreError::Conflict(_)) => {}
                    Err(err) => return Err(internal(err)),
                },
                Err(err) => return Err(internal(err)),
            }
        }
        let (history_limit, replay_limit) = (self.state.history_limit, self.state.replay_limit);
        let fetch = async {
            let messages = match since {
                Some(since) => {
                    store
                        .messages_since(room.as_str(), Seq(since), replay_limit)
                        .await
                }
                None => store.history(room.as_str(), None, history_limit).await,
            };
            Ok(messages
                .map_err(internal)?
                .into_iter()
                .map(|stored| to_chat(room, stored))
                .collect())
        };
        cx.join_replaying(room, since.unwrap_or(0), fetch).await?;
        cx.send(native::user_list(room, &cx.hub().room_users(room)))?;
        Ok(Ok(()))
    }

    /// Persists, broadcasts (from the store's commit path, in seq order), then acks.
    ///
    /// The hook returns once the message is in the store's queue, not when it is committed:
    /// a connection's next message is read at once, so one client's messages share a group
    /// commit instead of waiting an fsync each (with one message in flight per connection, a
    /// room's rate was capped near publishers ÷ commit latency). Order is kept: seqs follow
    /// queue order, and the broadcast and the ack of a new message are sent from the commit
    /// hook, which runs in seq order. A retry (duplicate `client_msg_id`) and a failed commit
    /// are answered from the same hook when the commit's outcome arrives: no task waits for a
    /// message (one per message cost a spawn and a cross-thread wake-up). The store's bounded queue
    /// (`queue_capacity`) is what stops a client that sends faster than the store commits.
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
        let new = NewMessage {
            room: room.as_str().to_owned(),
            user_id: cx.user_id().as_str().to_owned(),
            username: cx.username().to_owned(),
            content,
            data,
            client_msg_id,
        };
        let deliveries = self.state.deliveries.clone();
        let sender = cx.sender();
        let answer = {
            let room = room.clone();
            move |outcome: roomcast_store::Result<(StoredMessage, Appended)>| {
                let (reply, message) = match outcome {
                    Ok((stored, appended)) => {
                        let ack = ack(&room, &stored);
                        // The message moves into the broadcast: no copy per message.
                        let new = appended == Appended::New;
                        (ack, new.then(|| to_chat(&room, stored)))
                    }
                    Err(err) => (append_failed(&room, &err), None),
                };
                deliveries.push(Answered {
                    room,
                    message,
                    reply,
                    sender,
                });
            }
        };
        if let Err(err) = self.state.store.queue_message_then(new, answer).await {
            cx.send(append_failed(&room, &err))?;
        }
        Ok(())
    }
}

/// A message the store has answered: what goes to its room, and what goes to its sender.
struct Answered {
    room: RoomName,
    /// The message, when it is new (a retry is only acked again).
    message: Option<Arc<ChatMessage>>,
    /// Its `ack`, or the `error` envelope of a failed append.
    reply: Frame,
    sender: Sender,
}

/// Collects what the store's hooks answer and broadcasts it once per group commit.
///
/// The store answers a whole group commit at once; delivering each message on its own cost
/// every member of the room a lock, a push and a wake-up per message, the largest share of the
/// server's own CPU in a 1000-way fan-out. The hooks only collect; after the batch's last hook
/// ([`Store::after_each_batch`], on the same task) each room's new messages go to
/// [`Hub::publish_now_many`] (one queue operation per member for all of them), then the
/// replies are sent: a sender still gets its message before its `ack`, and each room's
/// messages stay in `seq` order.
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
        for item in &mut answered {
            let Some(message) = item.message.take() else {
                continue;
            };
            let at = *index.entry(item.room.clone()).or_insert_with(|| {
                rooms.push((item.room.clone(), Vec::new()));
                rooms.len() - 1
            });
            rooms[at].1.push(Event::Message(message));
        }
        for (room, events) in rooms {
            self.hub.publish_now_many(&room, events, &[]);
        }
        for item in answered {
            // A full queue closes that connection (1013); nothing else to do here.
            let _ = item.sender.send(item.reply);
        }
    }
}

/// The `ack` of a stored message.
fn ack(room: &RoomName, stored: &StoredMessage) -> Frame {
    native::ack(
        room,
        &stored.id.0,
        Some(stored.seq.0),
        stored.client_msg_id.as_deref(),
        stored.created_at,
    )
}

/// The `error` envelope for a message the store did not take.
fn append_failed(room: &RoomName, err: &StoreError) -> Frame {
    match err {
        StoreError::Invalid(reason) => native::error(reason, Some(room)),
        err => {
            tracing::error!(error = %err, %room, "could not persist a message");
            let reason = "the message could not be saved; retry with the same client_msg_id";
            native::error(reason, Some(room))
        }
    }
}

/// A stored message as the hub's dialect-neutral event payload.
fn to_chat(room: &RoomName, stored: StoredMessage) -> Arc<ChatMessage> {
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

fn internal(err: StoreError) -> roomcast::Error {
    tracing::error!(error = %err, "store failed");
    roomcast::Error::other(err)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_rooms_are_remembered_until_the_set_is_full_then_it_starts_over() {
        let rooms = PublicRooms::default();
        let first = RoomName::new("r0").unwrap();
        rooms.remember(&first);
        assert!(rooms.contains(&first));
        assert!(!rooms.contains(&RoomName::new("other").unwrap()));
        for n in 1..PublicRooms::CAPACITY {
            rooms.remember(&RoomName::new(&format!("r{n}")).unwrap());
        }
        assert!(rooms.contains(&first), "full, not yet over");
        let next = RoomName::new("one-more").unwrap();
        rooms.remember(&next);
        assert!(rooms.contains(&next));
        assert!(!rooms.contains(&first), "started over");
    }
}
