//! Dialects: how hub events become frames, and frames become requests.
//!
//! The [`Hub`](crate::Hub) passes dialect-neutral [`Event`]s; each connection has a [`Dialect`]
//! chosen by its endpoint, which encodes an event into the bytes that connection's clients
//! expect. A broadcast encodes once per dialect present among the recipients, never once per
//! recipient. The hub never sees a JSON field name.
//!
//! - [`native`]: the envelope of seed 002 (`{type, room, content, user_id, username, …}`).
//! - [`Raw`]: no encoding of its own; only [`Event::Frame`] reaches such connections. Library
//!   users who speak their own format use it.

pub mod native;

use std::sync::Arc;

use crate::frame::Frame;
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

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
