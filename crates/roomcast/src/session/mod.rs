//! One connection: [`Session`] (what hooks see), its `Outbound` queue, the task that serves
//! the socket (`driver`), and the guard that unregisters it whatever happens.
//!
//! A connection is served by one task that selects over the socket and its outbound queue; its
//! pings, heartbeats and deadlines are the hub's sweep's work (one task for all connections),
//! which reaches it through the queue. Hooks run on that
//! task, so a connection's messages stay in order and a slow hook slows only its own
//! connection. One task instead of a reader/writer pair saves a task and a lock per connection
//! (~0.9 KB measured; docs/PERFORMANCE.md gives today's figure per idle connection).

pub(crate) mod driver;
mod guard;
pub(crate) mod outbound;
mod refresh;

use crate::Utf8Bytes;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::auth::Identity;
use crate::frame::{CloseReason, Frame};
use crate::hub::{Hub, JoinOutcome};
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::UserInfo;
pub(crate) use guard::ConnGuard;
pub(crate) use outbound::Outbound;
pub use outbound::SendError;
pub use refresh::RefreshError;

/// A message a client sent: text or binary, as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame (valid UTF-8).
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Incoming {
    /// The text, if this is a text message.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.as_str()),
            Self::Binary(_) => None,
        }
    }

    /// The payload's bytes, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(bytes) => bytes,
        }
    }

    /// Parses the payload as JSON.
    ///
    /// # Errors
    ///
    /// When the payload is not JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.as_bytes())
    }

    /// The same payload as an outgoing frame (for echoing), sharing the bytes.
    pub fn to_frame(&self) -> Frame {
        match self {
            Self::Text(text) => Frame::Text(text.clone()),
            Self::Binary(bytes) => Frame::Binary(bytes.clone()),
        }
    }
}

/// Sends to one connection from outside its hooks: see [`Session::sender`].
#[derive(Debug, Clone)]
pub struct Sender {
    hub: Hub,
    conn: ConnId,
    outbound: Outbound,
}

impl Sender {
    /// Queues `frame` for the connection, as [`Session::send`] does: a reply, written without
    /// waiting out the write interval.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] when the queue is full (the connection is being closed with 1013),
    /// [`SendError::Closed`] when it is closing or gone.
    pub fn send(&self, frame: impl Into<Frame>) -> Result<(), SendError> {
        send(&self.hub, &self.outbound, frame.into())
    }

    /// The connection this sends to.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }
}

/// Queues `frame`, counting a queue that overflows (the connection is then closed with 1013).
fn send(hub: &Hub, outbound: &Outbound, frame: Frame) -> Result<(), SendError> {
    let sent = outbound.try_send_now(frame);
    if sent == Err(SendError::Full) {
        hub.count_slow_consumer();
    }
    sent
}

/// The connection a hook is called for: who it is, what it may do.
///
/// Sends never wait: they queue the frame. If this connection's queue is full it is being
/// closed with 1013 and the send fails with [`SendError::Full`].
pub struct Session {
    hub: Hub,
    conn: ConnId,
    user: UserInfo,
    guest: bool,
    outbound: Outbound,
    /// The route's path parameters (`/ws/{room}`) and the token claims the endpoint copies;
    /// empty for most routes, so no allocation.
    /// A boxed slice, not a `Vec`: 8 bytes less in every connection's task.
    params: Box<[(String, String)]>,
}

impl Session {
    pub(crate) fn new(
        hub: Hub,
        conn: ConnId,
        identity: Identity,
        outbound: Outbound,
        params: Vec<(String, String)>,
    ) -> Self {
        Self {
            hub,
            conn,
            user: UserInfo {
                id: identity.user_id,
                username: identity.username,
            },
            guest: identity.guest,
            outbound,
            params: params.into_boxed_slice(),
        }
    }

    /// The user's id (the token's `sub`, or a generated guest id).
    pub fn user_id(&self) -> &UserId {
        &self.user.id
    }

    /// The user's display name.
    pub fn username(&self) -> &str {
        &self.user.username
    }

    /// Id and display name together.
    pub fn user(&self) -> &UserInfo {
        &self.user
    }

    /// Whether the connection is an unauthenticated guest.
    pub fn is_guest(&self) -> bool {
        self.guest
    }

    /// The client's address: the socket's peer, or what a middleware in front of the route
    /// resolved ([`ClientAddr`](crate::ClientAddr)); `None` when the route could not tell.
    pub fn client_addr(&self) -> Option<std::net::IpAddr> {
        self.hub.conn_addr(self.conn)
    }

    /// This connection's id.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }

    /// The hub this connection belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// A path parameter of the route, e.g. `room` for `/ws/{room}`, or a token claim the
    /// endpoint copies ([`Endpoint::claims_as_params`](crate::Endpoint::claims_as_params)).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.path_param(name)
    }

    /// A path parameter of the route, e.g. `room` for `/ws/{room}`. (Claims an endpoint copies
    /// share the same list: [`Session::param`] is the name to read them by.)
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The rooms this connection is in.
    pub fn rooms(&self) -> Vec<RoomName> {
        self.hub.conn_rooms(self.conn)
    }

    /// Whether this connection is in `room`.
    pub fn is_in_room(&self, room: &RoomName) -> bool {
        self.hub.conn_in_room(self.conn, room)
    }

    /// Queues `frame` for this connection. It is a reply the client waits for, so it leaves
    /// without waiting out [`SessionConfig::write_interval`](crate::SessionConfig::write_interval),
    /// together with (after) whatever is queued already; broadcasts to rooms and users wait it
    /// out and leave in batches.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] when the queue is full (the connection is being closed with 1013),
    /// [`SendError::Closed`] when it is closing.
    pub fn send(&self, frame: impl Into<Frame>) -> Result<(), SendError> {
        send(&self.hub, &self.outbound, frame.into())
    }

    /// A handle that sends to this connection after the hook has returned: from a spawned
    /// task, or a callback that completes later (a store commit, say). Cheap to clone; sends
    /// fail with [`SendError::Closed`] once the connection is gone.
    ///
    /// ```
    /// use roomcast::{Handler, Incoming, Session};
    ///
    /// struct Later;
    /// impl Handler for Later {
    ///     async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
    ///         let sender = cx.sender();
    ///         tokio::spawn(async move {
    ///             // … some slow work, then:
    ///             let _ = sender.send(msg.to_frame());
    ///         });
    ///         Ok(()) // the next message is read at once
    ///     }
    /// }
    /// ```
    pub fn sender(&self) -> Sender {
        Sender {
            hub: self.hub.clone(),
            conn: self.conn,
            outbound: self.outbound.clone(),
        }
    }

    /// Encodes `value` as JSON and queues it.
    ///
    /// # Errors
    ///
    /// [`Error::Json`](crate::Error::Json) when `value` cannot be encoded, or a send error.
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> crate::Result<()> {
        self.send(Frame::json(value)?)?;
        Ok(())
    }

    /// Puts this connection in `room`; the join is announced when the user was not in it.
    ///
    /// # Errors
    ///
    /// A broker error, or [`SendError::Closed`] when the connection is gone.
    pub async fn join(&self, room: &RoomName) -> crate::Result<JoinOutcome> {
        self.hub.join_conn(self.conn, room).await
    }

    /// Puts this connection in `room` and replays history first: `fetch` returns the messages
    /// after `since` (0 for "the recent ones") in `seq` order; they are queued before any live
    /// message of the room, each `seq` exactly once, even when messages arrive meanwhile.
    /// Returns the join outcome and how many messages were replayed.
    ///
    /// # Errors
    ///
    /// `fetch`'s error (the connection then goes live without a replay), a broker error, or
    /// [`SendError::Closed`] when the connection is gone.
    pub async fn join_replaying<F>(
        &self,
        room: &RoomName,
        since: u64,
        fetch: F,
    ) -> crate::Result<(JoinOutcome, usize)>
    where
        F: std::future::Future<
                Output = crate::Result<Vec<std::sync::Arc<crate::protocol::ChatMessage>>>,
            >,
    {
        self.hub
            .join_replaying(self.conn, room, since, false, fetch)
            .await
    }

    /// [`Session::join_replaying`], preceded by the member list of this connection's dialect
    /// ([`Dialect::member_list`](crate::protocol::Dialect::member_list)): the room's members as
    /// of the join, this user included, queued in the same step as the join, so that every
    /// join or leave announcement that follows reaches the connection after the list. Then the
    /// replay, then live messages. Seed 004's `room_users_list`, then its history.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use roomcast::{Handler, Incoming, RoomName, Session};
    ///
    /// struct Lobby;
    /// impl Handler for Lobby {
    ///     async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
    ///         let room = RoomName::new("lobby").unwrap();
    ///         // No history store here: the list, then live messages.
    ///         cx.join_listed(&room, 0, async { Ok(Vec::new()) }).await?;
    ///         Ok(())
    ///     }
    ///     async fn on_message(&self, _: &Session, _: Incoming) -> roomcast::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Session::join_replaying`].
    pub async fn join_listed<F>(
        &self,
        room: &RoomName,
        since: u64,
        fetch: F,
    ) -> crate::Result<(JoinOutcome, usize)>
    where
        F: std::future::Future<
                Output = crate::Result<Vec<std::sync::Arc<crate::protocol::ChatMessage>>>,
            >,
    {
        self.hub
            .join_replaying(self.conn, room, since, true, fetch)
            .await
    }

    /// Takes this connection out of `room`. Returns whether it was in it.
    ///
    /// # Errors
    ///
    /// A broker error.
    pub async fn leave(&self, room: &RoomName) -> crate::Result<bool> {
        self.hub.leave_conn(self.conn, room).await
    }

    /// Closes the connection with `reason` after the frames already queued are written.
    pub fn close(&self, reason: CloseReason) {
        self.outbound.close(reason);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conn", &self.conn)
            .field("user", &self.user.id)
            .field("guest", &self.guest)
            .finish_non_exhaustive()
    }
}
