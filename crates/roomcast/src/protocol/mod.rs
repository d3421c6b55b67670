//! Dialects: how hub events become frames, and frames become requests.
//!
//! The [`Hub`](crate::Hub) passes dialect-neutral [`Event`]s; each connection has a [`Dialect`]
//! chosen by its endpoint, which encodes an event into the bytes that connection's clients
//! expect. A broadcast encodes once per dialect present among the recipients, never once per
//! recipient. The hub never sees a JSON field name.
//!
//! - [`native`]: the envelope of seed 002 (`{type, room, content, user_id, username, …}`).
//! - [`channels`]: seed 004's Django Channels style (`chat_message`, `user_join`, `user_leave`,
//!   `room_users_list`, `{"error": …}`).
//! - [`token_scoped`]: seed 003's room-token chat (`{name, message, timestamp}` to the others).
//! - [`Raw`]: no encoding of its own; only [`Event::Frame`] reaches such connections. Library
//!   users who speak their own format use it.

pub mod channels;
pub mod native;
pub mod token_scoped;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::frame::{CloseReason, Frame, close_code};
use crate::ids::{RoomName, UserId};

/// A user as events show them: id and display name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user id.
    pub id: UserId,
    /// The display name.
    pub username: Arc<str>,
}

/// A chat message as the server accepted it: identity, time, id and sequence come from the
/// server, never from the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Server-assigned message id.
    pub id: Arc<str>,
    /// Per-room sequence number, when the message was persisted.
    pub seq: Option<u64>,
    /// The room it was sent to.
    pub room: RoomName,
    /// Who sent it (from the authenticated session).
    pub sender: UserInfo,
    /// The text.
    pub content: String,
    /// Optional structured payload the client attached.
    pub data: Option<serde_json::Value>,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Something that happened in a room, before any dialect has encoded it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A user joined the room (their first connection in it).
    Joined {
        /// The room.
        room: RoomName,
        /// The user who joined.
        user: UserInfo,
        /// When, milliseconds since the Unix epoch.
        timestamp_ms: i64,
    },
    /// A user left the room (their last connection in it).
    Left {
        /// The room.
        room: RoomName,
        /// The user who left.
        user: UserInfo,
        /// When, milliseconds since the Unix epoch.
        timestamp_ms: i64,
    },
    /// A chat message.
    Message(Arc<ChatMessage>),
    /// An already-encoded frame, delivered as it is whatever the dialect.
    Frame(Frame),
    /// Asks the connections it reaches to close with this reason (an operator disconnecting a
    /// user on every node: [`Hub::disconnect_user_everywhere`](crate::Hub::disconnect_user_everywhere)).
    /// No dialect encodes it.
    Close(crate::frame::CloseReason),
    /// From a broker to its own node: events may have been lost (its connection dropped and
    /// came back), so the hub re-reads, from its [`History`](crate::History), every room's
    /// persisted messages after the last it delivered. No dialect encodes it.
    Resync,
    /// An operator's notice to every connection ([`Hub::notify_all`](crate::Hub::notify_all)),
    /// shown by each dialect as a message from `system`: native `{"type": "system", …}`,
    /// seed 004's `chat_message`, seed 003's `{"name": "system", …}`.
    Notice {
        /// The text.
        content: Arc<str>,
        /// When, milliseconds since the Unix epoch.
        timestamp_ms: i64,
    },
}

/// What a room's members get instead of single joins and leaves when the room's presence is
/// batched or counted ([`PresenceMode`](crate::PresenceMode)): the net changes since the
/// member's last update (batched), or only the count (counts). Built by the hub once per room
/// and interval; [`Dialect::encode_presence`] turns it into frames.
///
/// ```
/// use roomcast::protocol::{PresenceUpdate, UserInfo};
/// use roomcast::RoomName;
/// let ann = UserInfo { id: "ann".into(), username: "Ann".into() };
/// let update = PresenceUpdate::diff(RoomName::new("lobby").unwrap(), vec![ann], vec![], 7, 0);
/// assert!(!update.counts_only());
/// let counts = PresenceUpdate::count(RoomName::new("lobby").unwrap(), 7, 0);
/// assert!(counts.counts_only() && counts.joined.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceUpdate {
    /// The room.
    pub room: RoomName,
    /// Users in the room now who were not at the member's last update (or member list).
    pub joined: Vec<UserInfo>,
    /// Users no longer in the room who were at the member's last update (or member list).
    pub left: Vec<UserInfo>,
    /// Members now: on one node exact; with a [`Presence`](crate::broker::Presence), every
    /// node's, as it listed them at the flush.
    pub count: usize,
    /// When the update was made, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Only `count` is news ([`PresenceMode::Counts`](crate::PresenceMode::Counts)).
    counts_only: bool,
}

impl PresenceUpdate {
    /// A batched update: who joined and who left since the last one, and the count now.
    ///
    /// ```
    /// use roomcast::protocol::{PresenceUpdate, UserInfo};
    /// let bob = UserInfo { id: "bob".into(), username: "Bob".into() };
    /// let update = PresenceUpdate::diff(roomcast::RoomName::new("r").unwrap(), vec![], vec![bob], 3, 0);
    /// assert_eq!((update.left.len(), update.count), (1, 3));
    /// ```
    pub fn diff(
        room: RoomName,
        joined: Vec<UserInfo>,
        left: Vec<UserInfo>,
        count: usize,
        timestamp_ms: i64,
    ) -> Self {
        Self {
            room,
            joined,
            left,
            count,
            timestamp_ms,
            counts_only: false,
        }
    }

    /// A counts-only update.
    ///
    /// ```
    /// let update = roomcast::protocol::PresenceUpdate::count(roomcast::RoomName::new("r").unwrap(), 12, 0);
    /// assert!(update.counts_only());
    /// assert_eq!(update.count, 12);
    /// ```
    pub fn count(room: RoomName, count: usize, timestamp_ms: i64) -> Self {
        Self {
            room,
            joined: Vec::new(),
            left: Vec::new(),
            count,
            timestamp_ms,
            counts_only: true,
        }
    }

    /// Whether only the count is news (the room is in counts mode).
    ///
    /// ```
    /// use roomcast::protocol::PresenceUpdate;
    /// let room = roomcast::RoomName::new("r").unwrap();
    /// assert!(!PresenceUpdate::diff(room.clone(), vec![], vec![], 0, 0).counts_only());
    /// assert!(PresenceUpdate::count(room, 0, 0).counts_only());
    /// ```
    pub fn counts_only(&self) -> bool {
        self.counts_only
    }
}

impl Event {
    /// The user who caused the event: who joined, left or sent; `None` for a raw frame or a
    /// notice.
    pub fn actor(&self) -> Option<&UserId> {
        match self {
            Self::Joined { user, .. } | Self::Left { user, .. } => Some(&user.id),
            Self::Message(message) => Some(&message.sender.id),
            Self::Frame(_) | Self::Notice { .. } | Self::Close(_) | Self::Resync => None,
        }
    }
}

/// Turns events into frames for one wire format.
///
/// ```
/// use roomcast::protocol::{Dialect, Event};
/// use roomcast::Frame;
///
/// /// Shows only raw frames and a custom heartbeat.
/// struct Plain;
/// impl Dialect for Plain {
///     fn name(&self) -> &'static str { "plain" }
///     fn encode(&self, event: &Event) -> Option<Frame> {
///         match event {
///             Event::Frame(frame) => Some(frame.clone()),
///             _ => None,
///         }
///     }
///     fn heartbeat(&self) -> Option<Frame> { Some(Frame::from("hb")) }
/// }
/// ```
pub trait Dialect: Send + Sync + 'static {
    /// A short unique name; broadcasts encode once per name.
    fn name(&self) -> &'static str;

    /// Encodes `event`, or `None` when this dialect does not show it.
    fn encode(&self, event: &Event) -> Option<Frame>;

    /// The application-level heartbeat frame sent every `heartbeat_interval`, if this dialect
    /// has one.
    fn heartbeat(&self) -> Option<Frame> {
        None
    }

    /// Whether the connections of the user who caused `event` ([`Event::actor`]) receive it.
    /// Default: true. Seed 003's chat does not echo a sender's own messages; seed 004's does not
    /// announce a joiner to itself (its member list already names it).
    ///
    /// Asked once per event and dialect, not per recipient: a dialect that returns true for
    /// everything costs its recipients nothing.
    fn shows_own(&self, event: &Event) -> bool {
        let _ = event;
        true
    }

    /// The member list a connection gets when it joins a room through
    /// [`Session::join_listed`](crate::Session::join_listed): `users` are the room's members
    /// right after the join, the joiner included. `None` (the default): no list.
    ///
    /// The hub calls this under its lock, in the same step as the join, so that no join or
    /// leave announcement can fall between the list and the events that follow it. Only encode
    /// here.
    fn member_list(&self, room: &RoomName, users: &[UserInfo]) -> Option<Frame> {
        let _ = (room, users);
        None
    }

    /// The notice a connection gets once, [`SessionConfig::token_expiry_notice`] before its
    /// access token's `exp` (`expires_at`, seconds since the Unix epoch), so that its client
    /// can send a fresh one in time. `None` (the default): the connection is closed at expiry
    /// without notice, as seeds 003 and 004 have no such message.
    ///
    /// The hub's sweep calls this under its lock: only encode here.
    ///
    /// ```
    /// use roomcast::protocol::{Dialect, Event};
    /// use roomcast::Frame;
    ///
    /// /// Raw frames only, and a plain-text warning before the token expires.
    /// struct Plain;
    /// impl Dialect for Plain {
    ///     fn name(&self) -> &'static str { "plain" }
    ///     fn encode(&self, event: &Event) -> Option<Frame> {
    ///         match event {
    ///             Event::Frame(frame) => Some(frame.clone()),
    ///             _ => None,
    ///         }
    ///     }
    ///     fn token_expiring(&self, expires_at: u64) -> Option<Frame> {
    ///         Some(Frame::text(format!("token expires at {expires_at}")))
    ///     }
    /// }
    /// assert_eq!(Plain.token_expiring(60).unwrap().as_text(), Some("token expires at 60"));
    /// ```
    ///
    /// [`SessionConfig::token_expiry_notice`]: crate::SessionConfig::token_expiry_notice
    fn token_expiring(&self, expires_at: u64) -> Option<Frame> {
        let _ = expires_at;
        None
    }

    /// How a connection whose access token has expired (its `exp` plus the authenticator's
    /// leeway has passed, with no refresh) is closed. Default: 4001 `token expired`, what a
    /// client gets when it connects with an expired token, so it knows to fetch a new one.
    ///
    /// ```
    /// use roomcast::protocol::{Dialect, Raw};
    /// assert_eq!(Raw.token_expired().code(), roomcast::close_code::UNAUTHORIZED);
    /// ```
    fn token_expired(&self) -> CloseReason {
        CloseReason::new(close_code::UNAUTHORIZED, "token expired")
    }

    /// The frame that asks a client to reconnect (to another node) because this one is
    /// draining: [`Hub::drain`](crate::Hub::drain) queues it to every connection whose dialect
    /// has one. `None` (the default): the dialect has no such message, and its connections
    /// only see the 1001 close at the end of the drain.
    ///
    /// ```
    /// use roomcast::protocol::{Dialect, Raw};
    /// use roomcast::protocol::native::NATIVE;
    /// assert!(Raw.reconnect().is_none());
    /// let frame = NATIVE.reconnect().unwrap();
    /// assert!(frame.as_text().unwrap().contains(r#""type":"reconnect""#));
    /// ```
    fn reconnect(&self) -> Option<Frame> {
        None
    }

    /// The frames a member of a batched or counted room gets for `update`
    /// ([`PresenceMode`](crate::PresenceMode)), in order. The hub calls this under its lock,
    /// once per dialect and update (a member for whom the update differs, one that joined
    /// during the interval, gets its own): only encode here.
    ///
    /// Default: each of `joined` as this dialect's [`Event::Joined`] and each of `left` as its
    /// [`Event::Left`], so a dialect without a presence message of its own delivers the net
    /// changes as the joins and leaves it knows; a counts-only update gives no frame.
    ///
    /// ```
    /// use roomcast::protocol::{Dialect, PresenceUpdate, UserInfo};
    /// use roomcast::protocol::channels::CHANNELS;
    /// use roomcast::protocol::native::NATIVE;
    /// use roomcast::RoomName;
    /// let room = RoomName::new("lobby").unwrap();
    /// let ann = UserInfo { id: "ann".into(), username: "Ann".into() };
    /// let bob = UserInfo { id: "bob".into(), username: "Bob".into() };
    /// let update = PresenceUpdate::diff(room.clone(), vec![ann], vec![bob], 1, 0);
    /// // Seed 004: its own events, one per change.
    /// let frames = CHANNELS.encode_presence(&update);
    /// assert_eq!(frames.len(), 2);
    /// assert!(frames[0].as_text().unwrap().contains("user_join"));
    /// assert!(frames[1].as_text().unwrap().contains("user_leave"));
    /// // Native: one `presence` frame.
    /// assert_eq!(NATIVE.encode_presence(&update).len(), 1);
    /// // Counts only: nothing seed 004 could not parse.
    /// assert!(CHANNELS.encode_presence(&PresenceUpdate::count(room, 1, 0)).is_empty());
    /// ```
    fn encode_presence(&self, update: &PresenceUpdate) -> Vec<Frame> {
        let joined = update.joined.iter().map(|user| Event::Joined {
            room: update.room.clone(),
            user: user.clone(),
            timestamp_ms: update.timestamp_ms,
        });
        let left = update.left.iter().map(|user| Event::Left {
            room: update.room.clone(),
            user: user.clone(),
            timestamp_ms: update.timestamp_ms,
        });
        joined
            .chain(left)
            .filter_map(|event| self.encode(&event))
            .collect()
    }
}

/// The dialect of endpoints that speak their own format: only [`Event::Frame`] is delivered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Dialect for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn encode(&self, event: &Event) -> Option<Frame> {
        match event {
            Event::Frame(frame) => Some(frame.clone()),
            _ => None,
        }
    }
}

/// `timestamp_ms` (milliseconds since the Unix epoch) as ISO 8601 in UTC with milliseconds and
/// a `Z`, the form seeds 003 and 004 show.
///
/// ```
/// assert_eq!(roomcast::protocol::iso8601(1_710_417_600_000), "2024-03-14T12:00:00.000Z");
/// ```
pub fn iso8601(timestamp_ms: i64) -> String {
    let ms = u64::try_from(timestamp_ms).unwrap_or(0);
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `{"error": message}`: how seeds 003 and 004 report a bad client message.
pub(crate) fn error_object(message: &str) -> Frame {
    #[derive(serde::Serialize)]
    struct ErrorObject<'a> {
        error: &'a str,
    }
    Frame::json(&ErrorObject { error: message }).expect("a struct of one string encodes")
}

/// What [`check_text`] refuses.
pub(crate) enum TextError {
    /// Empty or only whitespace.
    Empty,
    /// Longer than `max` characters.
    TooLong { max: usize },
}

/// A chat text is not blank and has at most `max_chars` characters (`0`: any number).
pub(crate) fn check_text(text: String, max_chars: usize) -> Result<String, TextError> {
    if text.trim().is_empty() {
        return Err(TextError::Empty);
    }
    if !within_chars(&text, max_chars) {
        return Err(TextError::TooLong { max: max_chars });
    }
    Ok(text)
}

/// Whether `text` has at most `max_chars` characters (`0`: any number). Counting stops one past
/// the bound: a hostile megabyte costs no more than a legal message.
///
/// ```
/// use roomcast::protocol::within_chars;
/// assert!(within_chars("éé", 2));
/// assert!(!within_chars("ééé", 2));
/// assert!(within_chars("anything", 0));
/// ```
pub fn within_chars(text: &str, max_chars: usize) -> bool {
    max_chars == 0 || text.chars().take(max_chars + 1).count() <= max_chars
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
