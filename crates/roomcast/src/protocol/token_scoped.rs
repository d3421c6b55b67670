//! Seed 003's wire format: chat scoped by a room token.
//!
//! The room, the client's id and its display name all come from the token's claims
//! (`room_id`, `client_id`, `name`), so frames carry nothing but text. Each text frame the
//! client sends is a chat message, broadcast to the **others** in the room (the sender does not
//! get its own back):
//!
//! ```text
//! client A ── hi ─────────────▶ server ── {"name": "Ann", "message": "hi",
//!                                          "timestamp": "2024-03-14T12:00:00.000Z",
//!                                          "id": "…", "seq": 7} ──▶ every other client
//! ```
//!
//! A frame that is a JSON string literal (seed 003's React component sends
//! `JSON.stringify(input)`) is unwrapped, so the room sees `hi`, not `"hi"`. An empty or
//! oversized message gets `{"error": "..."}`. `id` and `seq` are roomcast's additions. Joins and
//! leaves are not shown: the seed's clients render every frame as a chat line.
//!
//! A connection is closed with **1008** `Token expired` when its room token expires (its `exp`
//! plus the authenticator's leeway), with no notice before: the seed has no message for it,
//! and a room token is never refreshed on the connection; the client gets a new one from
//! `/join-room`. 1008 is also what the seed answers an expired token with at connect.

use super::{Dialect, Event, TextError, check_text, error_object, iso8601};
use crate::frame::{CloseReason, Frame, close_code};

/// The token-scoped dialect. Use the [`TOKEN_SCOPED`] instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenScoped;

/// The token-scoped dialect, as endpoints take it.
pub static TOKEN_SCOPED: TokenScoped = TokenScoped;

/// Why a client frame was refused. Answered with `{"error": "..."}`; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message is empty or only whitespace.
    #[error("message is empty")]
    Empty,
    /// The message has more characters than the server takes.
    #[error("message is longer than {max} characters")]
    TooLong {
        /// The most characters a message may have.
        max: usize,
    },
    /// A binary frame: messages are text.
    #[error("binary frames are not supported; send text")]
    Binary,
}

/// Decodes a client frame into the message text: the frame itself, or the string a JSON
/// string literal holds. `max_chars` bounds its length in characters (`0`: no bound).
///
/// ```
/// use roomcast::protocol::token_scoped::{decode, DecodeError};
/// assert_eq!(decode("hi", 100), Ok("hi".to_owned()));
/// assert_eq!(decode(r#""hi""#, 100), Ok("hi".to_owned()), "JSON.stringify(input)");
/// assert_eq!(decode(r#"{"not": "a string"}"#, 100), Ok(r#"{"not": "a string"}"#.to_owned()));
/// assert_eq!(decode("  ", 100), Err(DecodeError::Empty));
/// ```
///
/// # Errors
///
/// [`DecodeError`] says what was wrong, in words fit for the `{"error"}` answer.
pub fn decode(text: &str, max_chars: usize) -> Result<String, DecodeError> {
    let trimmed = text.trim();
    let message = if trimmed.starts_with('"') {
        serde_json::from_str::<String>(trimmed).unwrap_or_else(|_| text.to_owned())
    } else {
        text.to_owned()
    };
    check_text(message, max_chars).map_err(|err| match err {
        TextError::Empty => DecodeError::Empty,
        TextError::TooLong { max } => DecodeError::TooLong { max },
    })
}

/// `{"error": message}`.
pub fn error(message: &str) -> Frame {
    error_object(message)
}

#[derive(serde::Serialize)]
struct Outgoing<'a> {
    name: &'a str,
    message: &'a str,
    timestamp: String,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

/// An operator's notice: a message from `system`, without id or seq (it is not stored).
#[derive(serde::Serialize)]
struct Notice<'a> {
    name: &'a str,
    message: &'a str,
    timestamp: String,
}

impl Dialect for TokenScoped {
    fn name(&self) -> &'static str {
        "token_scoped"
    }

    fn encode(&self, event: &Event) -> Option<Frame> {
        match event {
            Event::Message(message) => Some(
                Frame::json(&Outgoing {
                    name: &message.sender.username,
                    message: &message.content,
                    timestamp: iso8601(message.timestamp_ms),
                    id: &message.id,
                    seq: message.seq,
                })
                .expect("strings and numbers encode"),
            ),
            Event::Frame(frame) => Some(frame.clone()),
            Event::Notice {
                content,
                timestamp_ms,
            } => Some(
                Frame::json(&Notice {
                    name: "system",
                    message: content,
                    timestamp: iso8601(*timestamp_ms),
                })
                .expect("strings encode"),
            ),
            Event::Joined { .. } | Event::Left { .. } | Event::Close(_) | Event::Resync => None,
        }
    }

    /// A message goes to the others in the room, as in the seed's `broadcast_to_room`.
    fn shows_own(&self, event: &Event) -> bool {
        !matches!(event, Event::Message(_))
    }

    /// 1008, as the seed refuses an expired token at connect (`Token expired`).
    fn token_expired(&self) -> CloseReason {
        CloseReason::new(close_code::POLICY, "Token expired")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::RoomName;
    use crate::protocol::{ChatMessage, UserInfo};

    #[test]
    fn a_message_is_name_message_timestamp_and_hidden_from_its_sender() {
        let message = Event::Message(Arc::new(ChatMessage {
            id: "m1".into(),
            seq: Some(9),
            room: RoomName::new("K7PQ2XHM").unwrap(),
            sender: UserInfo {
                id: "c0ffee".into(),
                username: "Ann".into(),
            },
            content: "hi".into(),
            data: None,
            timestamp_ms: 1_710_417_600_000,
        }));
        let frame = TOKEN_SCOPED.encode(&message).unwrap();
        let value: Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
        assert_eq!(
            value,
            json!({"name": "Ann", "message": "hi", "timestamp": "2024-03-14T12:00:00.000Z",
                   "id": "m1", "seq": 9})
        );
        assert!(!TOKEN_SCOPED.shows_own(&message));
    }

    #[test]
    fn joins_and_leaves_are_not_shown() {
        let user = UserInfo {
            id: "c".into(),
            username: "C".into(),
        };
        let joined = Event::Joined {
            room: RoomName::new("r").unwrap(),
            user,
            timestamp_ms: 0,
        };
        assert_eq!(TOKEN_SCOPED.encode(&joined), None);
    }

    #[test]
    fn json_strings_are_unwrapped_and_everything_else_is_taken_as_it_is() {
        assert_eq!(decode(r#""say \"hi\"""#, 0), Ok(r#"say "hi""#.into()));
        assert_eq!(decode(r#""unterminated"#, 0), Ok(r#""unterminated"#.into()));
        assert_eq!(decode("42", 0), Ok("42".into()));
        assert_eq!(decode(r#""""#, 0), Err(DecodeError::Empty));
        assert_eq!(decode("", 0), Err(DecodeError::Empty));
        assert_eq!(decode("ééé", 2), Err(DecodeError::TooLong { max: 2 }));
        assert_eq!(decode("éé", 2), Ok("éé".into()));
    }

    #[test]
    fn an_expired_room_token_closes_with_1008_and_no_notice() {
        assert_eq!(TOKEN_SCOPED.token_expiring(1_710_417_600), None);
        let close = TOKEN_SCOPED.token_expired();
        assert_eq!((close.code(), close.reason()), (1008, "Token expired"));
    }
}
