//! [`RoomEvent`]s as bytes, for brokers that cross a process boundary (Redis, NATS).
//!
//! JSON with one-letter keys, so that an operator can read a channel with `redis-cli
//! SUBSCRIBE` and a node of a later version can skip fields it does not know. (A binary frame
//! travels as an array of numbers: rare, since chat traffic is text.)

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{RoomEvent, Target};
use crate::frame::Frame;
use crate::ids::{NodeId, RoomName, UserId};
use crate::protocol::{ChatMessage, Event, UserInfo};

/// Why bytes could not be read as a [`RoomEvent`].
#[derive(Debug, thiserror::Error)]
#[error("not a room event: {0}")]
pub struct WireError(String);

/// Strings borrow when encoding; when decoding they are owned (a JSON string with escapes
/// cannot be borrowed).
type S<'a> = Cow<'a, str>;

#[derive(Serialize, Deserialize)]
struct WireEvent<'a> {
    /// The origin node.
    o: u64,
    t: WireTarget<'a>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    x: Vec<S<'a>>,
    e: WireKind<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum WireTarget<'a> {
    Room { r: S<'a> },
    All,
    Users { u: Vec<S<'a>> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum WireKind<'a> {
    Joined {
        r: S<'a>,
        u: S<'a>,
        n: S<'a>,
        ts: i64,
    },
    Left {
        r: S<'a>,
        u: S<'a>,
        n: S<'a>,
        ts: i64,
    },
    Message {
        id: S<'a>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        r: S<'a>,
        u: S<'a>,
        n: S<'a>,
        c: S<'a>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        d: Option<serde_json::Value>,
        ts: i64,
    },
    Text {
        f: S<'a>,
    },
    Binary {
        f: Vec<u8>,
    },
    Notice {
        c: S<'a>,
        ts: i64,
    },
    Close {
        code: u16,
        why: S<'a>,
    },
    Resync,
}

/// Encodes `event` for another node.
///
/// ```
/// use roomcast::broker::{RoomEvent, Target, wire};
/// use roomcast::protocol::Event;
/// use roomcast::{Frame, NodeId};
///
/// let event = RoomEvent {
///     origin: NodeId(7),
///     target: Target::All,
///     exclude: Vec::new(),
///     event: Event::Frame(Frame::text("hello")),
/// };
/// let bytes = wire::encode(&event);
/// assert_eq!(wire::decode(&bytes).unwrap(), event);
/// ```
pub fn encode(event: &RoomEvent) -> Vec<u8> {
    let t = match &event.target {
        Target::Room(room) => WireTarget::Room {
            r: room.as_str().into(),
        },
        Target::All => WireTarget::All,
        Target::Users(users) => WireTarget::Users {
            u: users.iter().map(|u| u.as_str().into()).collect(),
        },
    };
    let e = match &event.event {
        Event::Joined {
            room,
            user,
            timestamp_ms,
        } => WireKind::Joined {
            r: room.as_str().into(),
            u: user.id.as_str().into(),
            n: Cow::Borrowed(&user.username),
            ts: *timestamp_ms,
        },
        Event::Left {
            room,
            user,
            timestamp_ms,
        } => WireKind::Left {
            r: room.as_str().into(),
            u: user.id.as_str().into(),
            n: Cow::Borrowed(&user.username),
            ts: *timestamp_ms,
        },
        Event::Message(message) => WireKind::Message {
            id: Cow::Borrowed(&message.id),
            seq: message.seq,
            r: message.room.as_str().into(),
            u: message.sender.id.as_str().into(),
            n: Cow::Borrowed(&message.sender.username),
            c: message.content.as_str().into(),
            d: message.data.clone(),
            ts: message.timestamp_ms,
        },
        Event::Frame(Frame::Text(text)) => WireKind::Text {
            f: text.as_str().into(),
        },
        Event::Frame(Frame::Binary(bytes)) => WireKind::Binary { f: bytes.to_vec() },
        Event::Notice {
            content,
            timestamp_ms,
        } => WireKind::Notice {
            c: content.as_ref().into(),
            ts: *timestamp_ms,
        },
        Event::Close(reason) => WireKind::Close {
            code: reason.code(),
            why: reason.reason().into(),
        },
        Event::Resync => WireKind::Resync,
    };
    let wire = WireEvent {
        o: event.origin.0,
        t,
        x: event.exclude.iter().map(|u| u.as_str().into()).collect(),
        e,
    };
    serde_json::to_vec(&wire).expect("a room event encodes")
}

fn room(name: &str) -> Result<RoomName, WireError> {
    RoomName::new(name).map_err(|err| WireError(err.to_string()))
}

fn user(id: &str, name: &str) -> UserInfo {
    UserInfo {
        id: UserId::from(id),
        username: Arc::from(name),
    }
}

/// Reads what [`encode`] wrote.
///
/// # Errors
///
/// [`WireError`] for bytes that are not an encoded event (another program on the channel, a
/// truncated message).
pub fn decode(bytes: &[u8]) -> Result<RoomEvent, WireError> {
    let wire: WireEvent<'_> =
        serde_json::from_slice(bytes).map_err(|err| WireError(err.to_string()))?;
    let target = match wire.t {
        WireTarget::Room { r } => Target::Room(room(&r)?),
        WireTarget::All => Target::All,
        WireTarget::Users { u } => {
            Target::Users(u.iter().map(|u| UserId::from(u.as_ref())).collect())
        }
    };
    let event = match wire.e {
        WireKind::Joined { r, u, n, ts } => Event::Joined {
            room: room(&r)?,
            user: user(&u, &n),
            timestamp_ms: ts,
        },
        WireKind::Left { r, u, n, ts } => Event::Left {
            room: room(&r)?,
            user: user(&u, &n),
            timestamp_ms: ts,
        },
        WireKind::Message {
            id,
            seq,
            r,
            u,
            n,
            c,
            d,
            ts,
        } => Event::Message(Arc::new(ChatMessage {
            id: Arc::from(id.as_ref()),
            seq,
            room: room(&r)?,
            sender: user(&u, &n),
            content: c.into_owned(),
            data: d,
            timestamp_ms: ts,
        })),
        WireKind::Text { f } => Event::Frame(Frame::text(f.into_owned())),
        WireKind::Binary { f } => Event::Frame(Frame::binary(f)),
        WireKind::Notice { c, ts } => Event::Notice {
            content: Arc::from(c.as_ref()),
            timestamp_ms: ts,
        },
        WireKind::Close { code, why } => {
            Event::Close(crate::frame::CloseReason::new(code, why.into_owned()))
        }
        WireKind::Resync => Event::Resync,
    };
    Ok(RoomEvent {
        origin: NodeId(wire.o),
        target,
        exclude: wire.x.iter().map(|u| UserId::from(u.as_ref())).collect(),
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_event_survives_the_round_trip() {
        let lobby = RoomName::new("lobby").unwrap();
        let ann = user("ann", "Ann \"the\" first");
        let events = [
            Event::Joined {
                room: lobby.clone(),
                user: ann.clone(),
                timestamp_ms: 1,
            },
            Event::Left {
                room: lobby.clone(),
                user: ann.clone(),
                timestamp_ms: 2,
            },
            Event::Message(Arc::new(ChatMessage {
                id: Arc::from("m1"),
                seq: Some(41),
                room: lobby.clone(),
                sender: ann.clone(),
                content: "héllo \\ \"quoted\"\n".to_owned(),
                data: Some(serde_json::json!({"k": [1, 2]})),
                timestamp_ms: 3,
            })),
            Event::Frame(Frame::text(r#"{"type":"x"}"#)),
            Event::Frame(Frame::binary(vec![0u8, 255, 7])),
            Event::Notice {
                content: Arc::from("restart"),
                timestamp_ms: 4,
            },
            Event::Close(crate::frame::CloseReason::new(4003, "take a break")),
        ];
        for (at, event) in events.into_iter().enumerate() {
            let target = match at % 3 {
                0 => Target::Room(lobby.clone()),
                1 => Target::All,
                _ => Target::Users(vec![UserId::from("ann"), UserId::from("bob")]),
            };
            let sent = RoomEvent {
                origin: NodeId(u64::MAX),
                target,
                exclude: vec![UserId::from("bob")],
                event,
            };
            assert_eq!(decode(&encode(&sent)).unwrap(), sent);
        }
    }

    #[test]
    fn foreign_bytes_are_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{}", b"null", b"{\"o\":1,\"t\":{\"k\":\"room\",\"r\":\"bad name\"},\"e\":{\"k\":\"text\",\"f\":\"x\"}}"] {
            assert!(decode(bytes).is_err());
        }
    }
}
