//! Seed 004's wire format, in the style of Django Channels.
//!
//! The client sends `{"message": "..."}`; everything else it sends is answered with
//! `{"error": "..."}` and the connection stays open. The server sends:
//!
//! ```text
//! {"type": "room_users_list", "users": [{"id": "u1", "username": "ann"}, …]}   on connect
//! {"type": "chat_message", "message": "hi", "sender_username": "ann", "sender_id": "u1",
//!  "timestamp": "2024-03-14T12:00:00.000Z", "id": "…", "seq": 7}               history, then live
//! {"type": "user_join",  "user_id": "u2", "username": "bob"}                  to the others
//! {"type": "user_leave", "user_id": "u2", "username": "bob"}                  last tab closed
//! {"error": "..."}
//! ```
//!
//! `id` and `seq` are roomcast's additions (the message's id and its room's sequence number);
//! the seed's fields are never renamed or left out. A joiner is not announced to itself: its
//! `room_users_list` already names it ([`Dialect::shows_own`]).
//!
//! In a batched room ([`PresenceMode::Batched`](crate::PresenceMode::Batched)) the joins and
//! leaves come once per interval as these same `user_join` / `user_leave` events, net changes
//! only (the default [`Dialect::encode_presence`]); in a counts room none come, as the seed has
//! no message for a count. `room_users_list` stays exact in every mode.
//!
//! When the connection's access token expires (its `exp` plus the authenticator's leeway) the
//! connection is closed with **4001** `token expired`, the default of
//! [`Dialect::token_expired`]; the seed has no message to announce it or to refresh the token
//! on the connection, so the client reconnects with a new one.

use serde::{Deserialize, Serialize};

use super::{Dialect, Event, TextError, UserInfo, check_text, error_object, iso8601};
use crate::frame::Frame;
use crate::ids::RoomName;

/// The Channels-style dialect. Use the [`CHANNELS`] instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Channels;

/// The Channels-style dialect, as endpoints take it.
pub static CHANNELS: Channels = Channels;

/// Why a client frame was refused. Answered with `{"error": "..."}`; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("not JSON: send {{\"message\": \"...\"}}")]
    NotJson,
    /// JSON, but not an object.
    #[error("expected a JSON object like {{\"message\": \"...\"}}")]
    NotAnObject,
    /// An object without `message`.
    #[error("'message' is required")]
    MissingMessage,
    /// `message` is there but is not a string.
    #[error("'message' must be a string")]
    NotAString,
    /// `message` is empty or only whitespace.
    #[error("'message' is empty")]
    Empty,
    /// `message` has more characters than the server takes.
    #[error("'message' is longer than {max} characters")]
    TooLong {
        /// The most characters a message may have.
        max: usize,
    },
    /// A binary frame: this format is JSON text.
    #[error("binary frames are not supported; send JSON text")]
    Binary,
}

#[derive(Deserialize)]
struct ClientFrame {
    #[serde(default)]
    message: Option<serde_json::Value>,
}

/// Decodes a client frame into the message text. `max_chars` bounds its length in characters
/// (`0`: no bound).
///
/// ```
/// use roomcast::protocol::channels::{decode, DecodeError};
/// assert_eq!(decode(r#"{"message": "Hi!"}"#, 100), Ok("Hi!".to_owned()));
/// assert_eq!(decode(r#"{"message": 5}"#, 100), Err(DecodeError::NotAString));
/// assert_eq!(decode(r#"{"text": "Hi!"}"#, 100), Err(DecodeError::MissingMessage));
/// assert_eq!(decode("Hi!", 100), Err(DecodeError::NotJson));
/// ```
///
/// # Errors
///
/// [`DecodeError`] says what was wrong, in words fit for the `{"error"}` answer.
pub fn decode(text: &str, max_chars: usize) -> Result<String, DecodeError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| DecodeError::NotJson)?;
    if !value.is_object() {
        return Err(DecodeError::NotAnObject);
    }
    let frame = ClientFrame::deserialize(value).map_err(|_| DecodeError::NotAnObject)?;
    let message = match frame.message {
        None | Some(serde_json::Value::Null) => return Err(DecodeError::MissingMessage),
        Some(serde_json::Value::String(message)) => message,
        Some(_) => return Err(DecodeError::NotAString),
    };
    check_text(message, max_chars).map_err(|err| match err {
        TextError::Empty => DecodeError::Empty,
        TextError::TooLong { max } => DecodeError::TooLong { max },
    })
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Outgoing<'a> {
    ChatMessage {
        message: &'a str,
        sender_username: &'a str,
        sender_id: &'a str,
        timestamp: String,
        /// Empty on an operator's notice, which is not stored: left out then.
        #[serde(skip_serializing_if = "str::is_empty")]
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    UserJoin {
        user_id: &'a str,
        username: &'a str,
    },
    UserLeave {
        user_id: &'a str,
        username: &'a str,
    },
    RoomUsersList {
        users: Vec<ListedUser<'a>>,
    },
}

#[derive(Serialize)]
struct ListedUser<'a> {
    id: &'a str,
    username: &'a str,
}

fn encode(outgoing: &Outgoing<'_>) -> Frame {
    Frame::json(outgoing).expect("Channels frames hold only strings and numbers")
}

/// `{"type": "room_users_list", "users": [{"id", "username"}, …]}`.
pub fn room_users_list(users: &[UserInfo]) -> Frame {
    encode(&Outgoing::RoomUsersList {
        users: users
            .iter()
            .map(|user| ListedUser {
                id: user.id.as_str(),
                username: &user.username,
            })
            .collect(),
    })
}

/// `{"error": message}`.
pub fn error(message: &str) -> Frame {
    error_object(message)
}

impl Dialect for Channels {
    fn name(&self) -> &'static str {
        "channels"
    }

    fn encode(&self, event: &Event) -> Option<Frame> {
        Some(match event {
            Event::Close(_) | Event::Resync => return None,
            Event::Joined { user, .. } => encode(&Outgoing::UserJoin {
                user_id: user.id.as_str(),
                username: &user.username,
            }),
            Event::Left { user, .. } => encode(&Outgoing::UserLeave {
                user_id: user.id.as_str(),
                username: &user.username,
            }),
            Event::Message(message) => encode(&Outgoing::ChatMessage {
                message: &message.content,
                sender_username: &message.sender.username,
                sender_id: message.sender.id.as_str(),
                timestamp: iso8601(message.timestamp_ms),
                id: &message.id,
                seq: message.seq,
            }),
            Event::Frame(frame) => frame.clone(),
            Event::Notice {
                content,
                timestamp_ms,
            } => encode(&Outgoing::ChatMessage {
                message: content,
                sender_username: "system",
                sender_id: "system",
                timestamp: iso8601(*timestamp_ms),
                id: "",
                seq: None,
            }),
        })
    }

    /// A joiner learns who is there from `room_users_list`, itself included, not from a
    /// `user_join` of its own.
    fn shows_own(&self, event: &Event) -> bool {
        !matches!(event, Event::Joined { .. })
    }

    fn member_list(&self, _room: &RoomName, users: &[UserInfo]) -> Option<Frame> {
        Some(room_users_list(users))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::protocol::ChatMessage;

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_text().unwrap()).unwrap()
    }

    fn ann() -> UserInfo {
        UserInfo {
            id: "u1".into(),
            username: "ann".into(),
        }
    }

    #[test]
    fn chat_message_has_the_seed_fields_and_an_iso_timestamp() {
        let message = ChatMessage {
            id: "m1".into(),
            seq: Some(3),
            room: RoomName::new("general").unwrap(),
            sender: ann(),
            content: "Hello world!".into(),
            data: None,
            timestamp_ms: 1_710_417_600_250,
        };
        let value = parse(&CHANNELS.encode(&Event::Message(Arc::new(message))).unwrap());
        assert_eq!(
            value,
            json!({"type": "chat_message", "message": "Hello world!", "sender_username": "ann",
                   "sender_id": "u1", "timestamp": "2024-03-14T12:00:00.250Z", "id": "m1", "seq": 3})
        );
    }

    #[test]
    fn joins_leaves_and_lists_have_the_seed_fields() {
        let room = RoomName::new("general").unwrap();
        let joined = Event::Joined {
            room: room.clone(),
            user: ann(),
            timestamp_ms: 0,
        };
        assert_eq!(
            parse(&CHANNELS.encode(&joined).unwrap()),
            json!({"type": "user_join", "user_id": "u1", "username": "ann"})
        );
        let left = Event::Left {
            room: room.clone(),
            user: ann(),
            timestamp_ms: 0,
        };
        assert_eq!(
            parse(&CHANNELS.encode(&left).unwrap()),
            json!({"type": "user_leave", "user_id": "u1", "username": "ann"})
        );
        assert!(!CHANNELS.shows_own(&joined), "the joiner has its list");
        assert!(CHANNELS.shows_own(&left));
        let list = CHANNELS.member_list(&room, &[ann()]).unwrap();
        assert_eq!(
            parse(&list),
            json!({"type": "room_users_list", "users": [{"id": "u1", "username": "ann"}]})
        );
    }

    #[test]
    fn every_bad_frame_says_what_is_wrong() {
        let cases = [
            ("", DecodeError::NotJson),
            ("hello", DecodeError::NotJson),
            ("[1]", DecodeError::NotAnObject),
            (r#""hi""#, DecodeError::NotAnObject),
            ("{}", DecodeError::MissingMessage),
            (r#"{"message": null}"#, DecodeError::MissingMessage),
            (r#"{"message": ["hi"]}"#, DecodeError::NotAString),
            (r#"{"message": ""}"#, DecodeError::Empty),
            (r#"{"message": " \n "}"#, DecodeError::Empty),
            (r#"{"message": "abcdef"}"#, DecodeError::TooLong { max: 5 }),
        ];
        for (frame, expected) in cases {
            assert_eq!(decode(frame, 5), Err(expected), "{frame:?}");
        }
        assert_eq!(
            decode(r#"{"message": "éééé", "type": "x"}"#, 4),
            Ok("éééé".into())
        );
        assert_eq!(decode(r#"{"message": "abcdef"}"#, 0), Ok("abcdef".into()));
    }
}
