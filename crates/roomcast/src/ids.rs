//! Identifier newtypes shared by every module: users, connections, rooms and nodes.
//!
//! Names are `Arc<str>` so the hub, sessions and events share one allocation per name.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A user's id: the token's `sub`, or a generated `guest-…` id for a guest.
///
/// ```
/// let alice = roomcast::UserId::from("alice");
/// assert_eq!(alice.as_str(), "alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Arc<str>);

impl UserId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self(id.into())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection's id, unique within one node for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A node's id: one per [`Hub`](crate::Hub), carried by every broker event so a node can drop its
/// own events when they come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A random node id.
    pub fn random() -> Self {
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        Self(high ^ low)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Longest room name accepted, in bytes (and characters: names are ASCII).
pub const MAX_ROOM_NAME_BYTES: usize = 64;

/// The rule of [`RoomName`] as a regular expression, for schemas (the HTTP API's OpenAPI).
pub const ROOM_NAME_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// A validated room name: 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `:` (the pattern
/// [`ROOM_NAME_PATTERN`]).
///
/// The character set keeps names safe in URLs (`/ws/{room}`), logs and broker channel names,
/// and exact to state in a schema: one character is one byte.
///
/// ```
/// use roomcast::RoomName;
/// assert!(RoomName::new("general").is_ok());
/// assert!(RoomName::new("").is_err());
/// assert!(RoomName::new("no spaces").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(Arc<str>);

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoomName {
    /// The name was empty.
    #[error("room name is empty")]
    Empty,
    /// The name was longer than [`MAX_ROOM_NAME_BYTES`].
    #[error("room name is longer than {MAX_ROOM_NAME_BYTES} bytes")]
    TooLong,
    /// The name held a character outside ASCII letters, digits, `-`, `_`, `.` and `:`.
    #[error("room name may only contain ASCII letters, digits, '-', '_', '.' and ':'")]
    BadCharacter,
}

impl RoomName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidRoomName`] says which rule the name broke.
    pub fn new(name: &str) -> Result<Self, InvalidRoomName> {
        if name.is_empty() {
            return Err(InvalidRoomName::Empty);
        }
        if name.len() > MAX_ROOM_NAME_BYTES {
            return Err(InvalidRoomName::TooLong);
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(InvalidRoomName::BadCharacter);
        }
        Ok(Self(name.into()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RoomName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        RoomName::new(&name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
