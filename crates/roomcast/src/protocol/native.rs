//! The native envelope of seed 002.
//!
//! Every frame is one JSON object:
//!
//! ```text
//! {"type": "...", "room": "...", "content": "...", "user_id": "...", "username": "...",
//!  "timestamp": 1234567890, "data": {...}}
//! ```
//!
//! Client → server: `join` (optional `since`), `leave`, `message` (optional `data`,
//! `client_msg_id`), `ping`, `pong`, `user_list` (asks for a room's members again), `refresh`
//! (`token`: a fresh access token for the connection).
//! Server → client: `join` and `leave` announcements, `message` (with `id`, and `seq` when
//! persisted), `user_list` (`data` is the list of user ids, `users` adds their names), `pong`,
//! `ping` (the heartbeat), `error` (`content` says what was wrong; the connection stays open),
//! `token_expiring` and `refreshed` (`data.expires_at`, see below).
//! `reconnect` (the node is draining: connect again, to another node; sent once, then a 1001
//! close at the end of the drain).
//! `presence` instead of `join` / `leave` in a batched or counted room
//! ([`PresenceMode`](crate::PresenceMode)): `data` is `{"joined": [{"id", "username"}, …],
//! "left": [ids…], "count": n}`, the net changes since the client's last update or `user_list`,
//! or only `{"count": n}` in counts mode ([`presence`]).
//! `user_id`, `username`, `timestamp`, `id` and `seq` always come from the server: whatever a
//! client puts there is ignored. `timestamp` is seconds since the Unix epoch, as in the seed.
//!
//! A connection lives as long as its access token ([`Session::refresh_token`]):
//!
//! ```text
//! client                                                  server
//!   │ connected with a token whose exp is T                 │
//!   │◀── {"type":"token_expiring","data":{"expires_at":T}} ─│ at T − ROOMCAST_TOKEN_EXPIRY_NOTICE
//!   │── {"type":"refresh","token":"<new access token>"} ───▶│ same user, valid: new exp T2
//!   │◀── {"type":"refreshed","data":{"expires_at":T2}} ─────│
//!   │   … or no (valid) refresh: at T + leeway ─────────────│──▶ close 4001 "token expired"
//! ```
//!
//! [`Session::refresh_token`]: crate::Session::refresh_token

use serde::{Deserialize, Serialize};

use super::{Dialect, Event, UserInfo};
use crate::frame::Frame;
use crate::ids::{InvalidRoomName, RoomName};

/// The native dialect. Use the [`NATIVE`] instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

/// The native dialect, as endpoints take it.
pub static NATIVE: Native = Native;

/// A request a client sent, decoded and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Join a room; with `since`, replay what was said after that sequence number first.
    Join {
        /// The room.
        room: RoomName,
        /// Replay messages after this sequence number.
        since: Option<u64>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: RoomName,
    },
    /// Say something in a room.
    Message {
        /// The room.
        room: RoomName,
        /// The text.
        content: String,
        /// Optional structured payload.
        data: Option<serde_json::Value>,
        /// The client's idempotency key.
        client_msg_id: Option<String>,
    },
    /// Application-level ping; answered with `pong`.
    Ping,
    /// Application-level pong (the answer to the server's heartbeat).
    Pong,
    /// Ask for a room's member list again.
    UserList {
        /// The room.
        room: RoomName,
    },
    /// Replace the connection's access token with a fresh one, before the old one expires
    /// (see [`Session::refresh_token`](crate::Session::refresh_token)).
    Refresh {
        /// The new access token.
        token: ClientToken,
    },
}

/// A token a client sent in a message. Its `Debug` output hides it, so that logging a
/// [`Request`] never logs a credential.
///
/// ```
/// use roomcast::protocol::native::{decode, Request};
/// let Ok(Request::Refresh { token }) = decode(r#"{"type":"refresh","token":"eyJ.x.y"}"#) else {
///     panic!("a refresh");
/// };
/// assert_eq!(token.as_str(), "eyJ.x.y");
/// assert_eq!(format!("{token:?}"), "ClientToken(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken(String);

impl ClientToken {
    /// The token, to validate.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientToken(..)")
    }
}

/// Why a client frame could not be understood. Answered with an `error` envelope; the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a JSON object of the envelope's shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A `type` this endpoint does not take.
    #[error("unsupported message type: {0}")]
    UnknownType(String),
    /// The type needs a `room`.
    #[error("'{0}' needs a room")]
    MissingRoom(&'static str),
    /// The room name is not valid.
    #[error("invalid room: {0}")]
    InvalidRoom(#[from] InvalidRoomName),
    /// A `message` without `content`.
    #[error("'message' needs a content")]
    MissingContent,
    /// A `refresh` without a `token`.
    #[error("'refresh' needs a token")]
    MissingToken,
    /// A binary frame on a text protocol.
    #[error("binary frames are not supported on this endpoint; send JSON text")]
    Binary,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    client_msg_id: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Decodes one client frame.
///
/// ```
/// use roomcast::protocol::native::{decode, Request};
/// let request = decode(r#"{"type":"join","room":"general"}"#).unwrap();
/// assert!(matches!(request, Request::Join { since: None, .. }));
/// assert!(decode("not json").is_err());
/// ```
///
/// # Errors
///
/// [`DecodeError`] says what was wrong, in words fit for the `error` envelope.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    let raw: RawRequest =
        serde_json::from_str(text).map_err(|err| DecodeError::Malformed(err.to_string()))?;
    let room = |kind: &'static str| -> Result<RoomName, DecodeError> {
        let name = raw.room.as_deref().ok_or(DecodeError::MissingRoom(kind))?;
        Ok(RoomName::new(name)?)
    };
    Ok(match raw.kind.as_str() {
        "join" => Request::Join {
            room: room("join")?,
            since: raw.since,
        },
        "leave" => Request::Leave {
            room: room("leave")?,
        },
        "message" => Request::Message {
            room: room("message")?,
            content: raw.content.clone().ok_or(DecodeError::MissingContent)?,
            data: raw.data.clone(),
            client_msg_id: raw.client_msg_id.clone(),
        },
        "user_list" => Request::UserList {
            room: room("user_list")?,
        },
        "refresh" => Request::Refresh {
            token: ClientToken(raw.token.ok_or(DecodeError::MissingToken)?),
        },
        "ping" => Request::Ping,
        "pong" => Request::Pong,
        other => return Err(DecodeError::UnknownType(clip(other, 64).to_owned())),
    })
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary: a
/// client's string echoed in an error must not split a character (which `String::truncate`
/// would panic on).
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One server envelope. Absent fields are left out of the JSON.
#[derive(Serialize, Default)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<Vec<UserEntry<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_msg_id: Option<&'a str>,
}

#[derive(Serialize)]
struct UserEntry<'a> {
    user_id: &'a str,
    username: &'a str,
}

/// The sender named on operator notices and system messages.
const SYSTEM: &str = "system";

fn seconds(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(1000)
}

fn encode(envelope: &Envelope<'_>) -> Frame {
    Frame::json(envelope).expect("envelopes hold only strings, numbers and JSON values")
}

/// A `user_list` envelope: `data` is the list of user ids, `users` pairs ids with names.
pub fn user_list(room: &RoomName, users: &[UserInfo]) -> Frame {
    let ids: serde_json::Value = users.iter().map(|u| u.id.as_str()).collect();
    encode(&Envelope {
        kind: "user_list",
        room: Some(room.as_str()),
        data: Some(&ids),
        users: Some(
            users
                .iter()
                .map(|u| UserEntry {
                    user_id: u.id.as_str(),
                    username: &u.username,
                })
                .collect(),
        ),
        timestamp: seconds(super::now_ms()),
        ..Default::default()
    })
}

/// An `error` envelope; `content` says what was wrong.
pub fn error(message: &str, room: Option<&RoomName>) -> Frame {
    error_envelope(message, room, None)
}

/// An `error` envelope that also says in `data` what a program needs to act on it, beside the
/// text for people in `content`. `roomcast serve` sends one when a resume (`join` with
/// `since`) is further behind than its replay limit: `data` is
/// `{"skipped": {"first": 3, "last": 7}}`, the seqs left out, which a client reads over the
/// HTTP API (`GET /rooms/{room}/messages?before=8`).
///
/// ```
/// use roomcast::RoomName;
/// use roomcast::protocol::native;
///
/// let room = RoomName::new("lobby").unwrap();
/// let skipped = serde_json::json!({"skipped": {"first": 3, "last": 7}});
/// let frame = native::error_with_data("messages 3 to 7 were not replayed", Some(&room), &skipped);
/// let sent: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
/// assert_eq!(sent["type"], "error");
/// assert_eq!(sent["room"], "lobby");
/// assert_eq!(sent["data"]["skipped"]["last"], 7);
/// ```
pub fn error_with_data(message: &str, room: Option<&RoomName>, data: &serde_json::Value) -> Frame {
    error_envelope(message, room, Some(data))
}

fn error_envelope(
    message: &str,
    room: Option<&RoomName>,
    data: Option<&serde_json::Value>,
) -> Frame {
    encode(&Envelope {
        kind: "error",
        room: room.map(RoomName::as_str),
        content: Some(message),
        timestamp: seconds(super::now_ms()),
        data,
        ..Default::default()
    })
}

/// A `pong` envelope, the answer to a client's `ping`.
pub fn pong() -> Frame {
    encode(&Envelope {
        kind: "pong",
        timestamp: seconds(super::now_ms()),
        ..Default::default()
    })
}

/// An `ack` envelope telling the sender its message was accepted, with its `id` and `seq`.
pub fn ack(
    room: &RoomName,
    id: &str,
    seq: Option<u64>,
    client_msg_id: Option<&str>,
    timestamp_ms: i64,
) -> Frame {
    encode(&Envelope {
        kind: "ack",
        room: Some(room.as_str()),
        id: Some(id),
        seq,
        client_msg_id,
        timestamp: seconds(timestamp_ms),
        ..Default::default()
    })
}

/// The `data` of a `presence` envelope.
#[derive(Serialize)]
struct PresenceData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<Vec<PresenceUser<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left: Option<Vec<&'a str>>,
    count: usize,
}

#[derive(Serialize)]
struct PresenceUser<'a> {
    id: &'a str,
    username: &'a str,
}

/// A `presence` envelope: a batched room's net joins and leaves since the member's last update,
/// with the count; or, in counts mode, only the count.
///
/// ```text
/// {"type":"presence","room":"lobby","timestamp":1700000000,
///  "data":{"joined":[{"id":"u7","username":"ann"}],"left":["u3"],"count":42}}
/// {"type":"presence","room":"huge","timestamp":1700000000,"data":{"count":12000}}
/// ```
///
/// ```
/// use roomcast::protocol::{PresenceUpdate, UserInfo};
/// use roomcast::RoomName;
/// let ann = UserInfo { id: "u7".into(), username: "ann".into() };
/// let bob = UserInfo { id: "u3".into(), username: "bob".into() };
/// let update = PresenceUpdate::diff(RoomName::new("lobby").unwrap(), vec![ann], vec![bob], 42, 0);
/// let frame = roomcast::protocol::native::presence(&update);
/// let value: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
/// assert_eq!(value["type"], "presence");
/// assert_eq!(value["data"]["joined"][0]["username"], "ann");
/// assert_eq!(value["data"]["left"][0], "u3");
/// assert_eq!(value["data"]["count"], 42);
/// ```
pub fn presence(update: &super::PresenceUpdate) -> Frame {
    let diff = !update.counts_only();
    let data = PresenceData {
        joined: diff.then(|| {
            update
                .joined
                .iter()
                .map(|user| PresenceUser {
                    id: user.id.as_str(),
                    username: &user.username,
                })
                .collect()
        }),
        left: diff.then(|| update.left.iter().map(|user| user.id.as_str()).collect()),
        count: update.count,
    };
    let data = serde_json::to_value(data).expect("strings and a number");
    encode(&Envelope {
        kind: "presence",
        room: Some(update.room.as_str()),
        data: Some(&data),
        timestamp: seconds(update.timestamp_ms),
        ..Default::default()
    })
}

/// The `data` of `token_expiring` and `refreshed`.
#[derive(Serialize)]
struct Expiry {
    expires_at: u64,
}

/// An envelope of `kind` whose `data` is `{"expires_at": expires_at}`.
fn expiry_envelope(kind: &str, expires_at: u64) -> Frame {
    let data = serde_json::to_value(Expiry { expires_at }).expect("a struct of one number");
    encode(&Envelope {
        kind,
        data: Some(&data),
        timestamp: seconds(super::now_ms()),
        ..Default::default()
    })
}

/// A `token_expiring` envelope: the connection's access token expires at `expires_at` (seconds
/// since the Unix epoch), and the connection is closed then (plus the leeway) unless the client
/// sends a `refresh` first. Queued by the hub's sweep ([`Dialect::token_expiring`]).
///
/// ```
/// let frame = roomcast::protocol::native::token_expiring(1_700_000_060);
/// let value: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
/// assert_eq!(value["type"], "token_expiring");
/// assert_eq!(value["data"]["expires_at"], 1_700_000_060);
/// ```
pub fn token_expiring(expires_at: u64) -> Frame {
    expiry_envelope("token_expiring", expires_at)
}

/// A `refreshed` envelope: the answer to an accepted `refresh`; the connection now lasts until
/// the new token's `expires_at` (seconds since the Unix epoch).
///
/// ```
/// let frame = roomcast::protocol::native::refreshed(1_700_000_900);
/// let value: serde_json::Value = serde_json::from_str(frame.as_text().unwrap()).unwrap();
/// assert_eq!(value["type"], "refreshed");
/// assert_eq!(value["data"]["expires_at"], 1_700_000_900);
/// ```
pub fn refreshed(expires_at: u64) -> Frame {
    expiry_envelope("refreshed", expires_at)
}

impl Dialect for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn encode_presence(&self, update: &super::PresenceUpdate) -> Vec<Frame> {
        vec![presence(update)]
    }

    fn encode(&self, event: &Event) -> Option<Frame> {
        Some(match event {
            Event::Close(_) | Event::Resync => return None,
            Event::Joined {
                room,
                user,
                timestamp_ms,
            }
            | Event::Left {
                room,
                user,
                timestamp_ms,
            } => encode(&Envelope {
                kind: if matches!(event, Event::Joined { .. }) {
                    "join"
                } else {
                    "leave"
                },
                room: Some(room.as_str()),
                user_id: Some(user.id.as_str()),
                username: Some(&user.username),
                timestamp: seconds(*timestamp_ms),
                ..Default::default()
            }),
            Event::Message(message) => encode(&Envelope {
                kind: "message",
                room: Some(message.room.as_str()),
                content: Some(&message.content),
                user_id: Some(message.sender.id.as_str()),
                username: Some(&message.sender.username),
                timestamp: seconds(message.timestamp_ms),
                data: message.data.as_ref(),
                id: Some(&message.id),
                seq: message.seq,
                ..Default::default()
            }),
            Event::Frame(frame) => frame.clone(),
            Event::Notice {
                content,
                timestamp_ms,
            } => encode(&Envelope {
                kind: "system",
                content: Some(content),
                user_id: Some(SYSTEM),
                username: Some(SYSTEM),
                timestamp: seconds(*timestamp_ms),
                ..Default::default()
            }),
        })
    }

    fn heartbeat(&self) -> Option<Frame> {
        Some(Frame::from(r#"{"type":"ping"}"#))
    }

    fn token_expiring(&self, expires_at: u64) -> Option<Frame> {
        Some(token_expiring(expires_at))
    }

    /// `{"type":"reconnect"}`: this node is draining; connect again (a load balancer sends
    /// the new connection to another node). Static like the heartbeat: sent to every
    /// connection at once, it is one shared buffer.
    fn reconnect(&self) -> Option<Frame> {
        Some(Frame::from(r#"{"type":"reconnect"}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChatMessage;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_text().unwrap()).unwrap()
    }

    #[test]
    fn every_client_type_decodes() {
        let room = RoomName::new("r1").unwrap();
        let cases = [
            (
                json!({"type": "join", "room": "r1", "since": 4}),
                Request::Join {
                    room: room.clone(),
                    since: Some(4),
                },
            ),
            (
                json!({"type": "leave", "room": "r1"}),
                Request::Leave { room: room.clone() },
            ),
            (
                json!({"type": "user_list", "room": "r1"}),
                Request::UserList { room: room.clone() },
            ),
            (json!({"type": "ping"}), Request::Ping),
            (
                json!({"type": "refresh", "token": "a.b.c"}),
                Request::Refresh {
                    token: ClientToken("a.b.c".into()),
                },
            ),
            (json!({"type": "pong"}), Request::Pong),
            (
                json!({"type": "message", "room": "r1", "content": "hi", "user_id": "mallory", "username": "Admin"}),
                Request::Message {
                    room: room.clone(),
                    content: "hi".into(),
                    data: None,
                    client_msg_id: None,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(&input.to_string()), Ok(expected));
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(matches!(decode("{"), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode("[]"), Err(DecodeError::Malformed(_))));
        assert_eq!(
            decode(r#"{"type":"dance"}"#),
            Err(DecodeError::UnknownType("dance".into()))
        );
        assert_eq!(
            decode(r#"{"type":"join"}"#),
            Err(DecodeError::MissingRoom("join"))
        );
        assert_eq!(
            decode(r#"{"type":"message","room":"a"}"#),
            Err(DecodeError::MissingContent)
        );
        assert_eq!(
            decode(r#"{"type":"refresh"}"#),
            Err(DecodeError::MissingToken)
        );
        assert_eq!(
            decode(r#"{"type":"join","room":"a b"}"#),
            Err(DecodeError::InvalidRoom(InvalidRoomName::BadCharacter))
        );
    }

    #[test]
    fn an_unknown_type_is_clipped_on_a_character_boundary() {
        // 1 + 2 × 40 bytes: byte 64 falls inside an 'é'.
        let kind = format!("a{}", "é".repeat(40));
        let Err(DecodeError::UnknownType(echoed)) = decode(&json!({"type": kind}).to_string())
        else {
            panic!("an unknown type is an error");
        };
        assert_eq!(echoed, format!("a{}", "é".repeat(31)));
        assert_eq!(clip("abc", 64), "abc");
    }

    #[test]
    fn message_envelope_has_the_seed_fields() {
        let message = ChatMessage {
            id: "m1".into(),
            seq: Some(7),
            room: RoomName::new("r1").unwrap(),
            sender: UserInfo {
                id: "u1".into(),
                username: "Ann".into(),
            },
            content: "hello".into(),
            data: Some(json!({"k": 1})),
            timestamp_ms: 1_234_567_890_123,
        };
        let value = parse(&NATIVE.encode(&Event::Message(Arc::new(message))).unwrap());
        assert_eq!(
            value,
            json!({"type": "message", "room": "r1", "content": "hello", "user_id": "u1",
                   "username": "Ann", "timestamp": 1_234_567_890, "data": {"k": 1}, "id": "m1", "seq": 7})
        );
    }

    #[test]
    fn user_list_carries_ids_in_data() {
        let users = [UserInfo {
            id: "u1".into(),
            username: "Ann".into(),
        }];
        let value = parse(&user_list(&RoomName::new("r").unwrap(), &users));
        assert_eq!(value["type"], "user_list");
        assert_eq!(value["data"], json!(["u1"]));
        assert_eq!(
            value["users"],
            json!([{"user_id": "u1", "username": "Ann"}])
        );
    }

    #[test]
    fn the_expiry_notice_and_the_refresh_answer_carry_expires_at_in_data() {
        let notice = parse(&NATIVE.token_expiring(1_700_000_060).unwrap());
        assert_eq!(notice["type"], "token_expiring");
        assert_eq!(notice["data"], json!({"expires_at": 1_700_000_060}));
        let answer = parse(&refreshed(1_700_000_900));
        assert_eq!(answer["type"], "refreshed");
        assert_eq!(answer["data"], json!({"expires_at": 1_700_000_900}));
        assert_eq!(
            NATIVE.token_expired(),
            crate::CloseReason::new(4001, "token expired")
        );
    }
}
