//! The records the store hands out and takes in (`User`, `Room`, `StoredMessage`, …), the `Seq`
//! and `MessageId` newtypes, and the input checks every operation applies before touching SQL.
//!
//! Records are plain data with public fields; none of them holds a connection. The private
//! `*Row` types mirror table rows for `sqlx::FromRow` and convert into the public records.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// A message's position in its room: 1 for the room's first message, then 2, 3, … with no gaps.
///
/// Assigned by the store when the message is committed; one sequence per room, whichever server
/// process accepted the message. Clients order and de-duplicate by it, and resume after it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Converts from the database's signed column; sequence numbers are never negative.
    pub(crate) fn from_db(value: i64) -> Seq {
        Seq(u64::try_from(value).unwrap_or(0))
    }

    /// Converts to the database's signed column, saturating: nothing reaches `i64::MAX`.
    pub(crate) fn to_db(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message's id: a UUID v7 in its hyphenated text form, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl MessageId {
    /// A fresh, time-ordered id.
    pub(crate) fn new_v7() -> MessageId {
        MessageId(uuid::Uuid::now_v7().to_string())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account.
///
/// Deliberately not `Serialize`: it carries the password hash, which must not reach a response.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Stable id, the JWT `sub`.
    pub id: String,
    /// Unique display and login name, stored as given (case-sensitive).
    pub username: String,
    /// The password hash (argon2id PHC string), `None` for users without a password (created by
    /// `roomcast token` or [`Store::ensure_user`](crate::Store::ensure_user)).
    pub password_hash: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// A refresh token's record, for telling why a token cannot be consumed (reuse, revocation,
/// expiry) and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshToken {
    /// The token's JWT id.
    pub jti: String,
    /// Whose token it is.
    pub user_id: String,
    /// Expiry, unix milliseconds.
    pub expires_at: i64,
    /// Issue time, unix milliseconds.
    pub created_at: i64,
    /// When it was consumed (exchanged for a new pair); a token is consumed at most once.
    pub used_at: Option<i64>,
    /// When it was revoked (logout), if it was.
    pub revoked_at: Option<i64>,
}

/// A room.
///
/// The name is the key. A seed 003 room code is a room whose name is the code: the store has no
/// separate code column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Unique name, stored as given.
    pub name: String,
    /// Private rooms admit only their members ([`Store::is_member`](crate::Store::is_member));
    /// the store records the flag, the server enforces it.
    pub private: bool,
    /// Who created it, if a user did.
    pub created_by: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// The seq of the room's latest message; `Seq(0)` while the room is empty.
    pub last_seq: Seq,
}

/// A message to persist, as [`Store::append_message`](crate::Store::append_message) takes it.
///
/// Identity fields come from the authenticated session, never from what the client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The room's name; the room must exist.
    pub room: String,
    /// The sender's id.
    pub user_id: String,
    /// The sender's name as it should appear in history (kept as it was when sent).
    pub username: String,
    /// The text, stored literally.
    pub content: String,
    /// Optional structured payload, stored as JSON text.
    pub data: Option<serde_json::Value>,
    /// The client's idempotency key: a second append with the same `(room, user_id,
    /// client_msg_id)` returns the first message instead of storing a new one.
    pub client_msg_id: Option<String>,
}

/// A persisted message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Store-assigned id.
    pub id: MessageId,
    /// The room's name.
    pub room: String,
    /// Store-assigned position in the room.
    pub seq: Seq,
    /// The sender's id.
    pub user_id: String,
    /// The sender's name when the message was sent.
    pub username: String,
    /// The text.
    pub content: String,
    /// The structured payload, if any.
    pub data: Option<serde_json::Value>,
    /// The client's idempotency key, if it sent one.
    pub client_msg_id: Option<String>,
    /// Commit time, unix milliseconds.
    pub created_at: i64,
}

/// Whether [`Store::append_message`](crate::Store::append_message) stored a new message or found
/// the one an earlier call with the same idempotency key stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with a new seq: broadcast it.
    New,
    /// A retry: the original message is returned and nothing was stored; do not broadcast again,
    /// only ack.
    Duplicate,
}

/// A `rooms` row.
#[derive(sqlx::FromRow)]
pub(crate) struct RoomRow {
    name: String,
    private: bool,
    created_by: Option<String>,
    created_at: i64,
    last_seq: i64,
}

impl From<RoomRow> for Room {
    fn from(row: RoomRow) -> Room {
        Room {
            name: row.name,
            private: row.private,
            created_by: row.created_by,
            created_at: row.created_at,
            last_seq: Seq::from_db(row.last_seq),
        }
    }
}

/// A `messages` row joined with its room's name.
#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub(crate) id: String,
    pub(crate) room: String,
    pub(crate) seq: i64,
    pub(crate) user_id: String,
    pub(crate) username: String,
    pub(crate) content: String,
    pub(crate) data: Option<String>,
    pub(crate) client_msg_id: Option<String>,
    pub(crate) created_at: i64,
}

impl MessageRow {
    /// Converts into the public record. `data` was written by `serde_json::to_string`, so a
    /// parse failure means the row was changed behind the store's back: it is reported as the
    /// driver reports a bad column.
    pub(crate) fn into_message(self) -> Result<StoredMessage, sqlx::Error> {
        let data = self
            .data
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
        Ok(StoredMessage {
            id: MessageId(self.id),
            room: self.room,
            seq: Seq::from_db(self.seq),
            user_id: self.user_id,
            username: self.username,
            content: self.content,
            data,
            client_msg_id: self.client_msg_id,
            created_at: self.created_at,
        })
    }
}

/// Longest id, name or key the store accepts, in bytes. Ids are UUIDs or JWT subjects and names
/// are human-sized; the bound keeps a hostile client from filling index pages.
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// Checks an id, name or key: non-empty, at most [`MAX_KEY_BYTES`], no NUL.
pub(crate) fn check_key(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "{what} is longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    check_text(what, value)
}

/// Checks free text: no NUL, which PostgreSQL's `TEXT` cannot hold. SQLite could, but both
/// backends must behave the same.
pub(crate) fn check_text(what: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{what} must not contain a NUL character"
        )));
    }
    Ok(())
}

/// The current time as unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
