//! The few native envelopes the load generator writes and reads, and the clock it stamps
//! messages with.
//!
//! A published message carries its identity and send time in `content`:
//!
//! ```text
//! {"type":"message","room":"lg-r0","content":"lg:3:1042:58211034:xxxxxxxx…"}
//!                                              │  │    │        └ padding up to --payload bytes
//!                                              │  │    └ scheduled send time, µs since this process's epoch
//!                                              │  └ counter, per publisher
//!                                              └ publisher
//! ```
//!
//! Receivers live in the same process, so the time is read on one monotonic clock. Frames from
//! the server are classified with a byte scan rather than a full JSON parse: the load generator
//! shares the machine with the server, and parsing a million frames a second would take a core.

use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use memchr::memmem::Finder;

/// The identity a receiver reads back from a message's `content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgId {
    /// Which publisher sent it (global index).
    pub publisher: u32,
    /// The publisher's counter, from 0.
    pub seq: u64,
    /// Scheduled send time, µs since [`epoch`].
    pub sent_us: u64,
}

/// What a server frame is, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A `message`; `None` when its content is not one of ours.
    Message(Option<MsgId>),
    /// A `user_list` for `room`.
    UserList {
        /// The room listed.
        room: &'a str,
    },
    /// An `error` envelope.
    Error,
    /// Any other envelope type (`join`, `leave`, `ping`, `pong`, …).
    Other(&'a str),
    /// Not an envelope.
    Unknown,
}

/// The instant all timestamps count from (set on first use).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// µs from [`epoch`] to `at` (0 if `at` is earlier).
pub fn micros_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_micros()).unwrap_or(u64::MAX)
}

/// µs since [`epoch`], now.
pub fn now_us() -> u64 {
    micros_since_epoch(Instant::now())
}

/// `{"type":"join","room":room}`.
pub fn join(room: &str) -> String {
    format!(r#"{{"type":"join","room":"{room}"}}"#)
}

/// The smallest `--payload` that holds any id (`lg:` + three 20-digit numbers + separators).
pub const MIN_PAYLOAD_BYTES: usize = 3 + 10 + 1 + 20 + 1 + 20 + 1;

/// A `message` envelope for `room` whose content is `id`, padded with `x` to `payload` bytes
/// (an id longer than `payload` is sent whole).
pub fn message(room: &str, id: MsgId, payload: usize) -> String {
    let mut content = format!("lg:{}:{}:{}:", id.publisher, id.seq, id.sent_us);
    let pad = payload.saturating_sub(content.len());
    content.extend(std::iter::repeat_n('x', pad));
    format!(r#"{{"type":"message","room":"{room}","content":"{content}"}}"#)
}

/// A `message` envelope for the `history` scenario: `content` as [`message`] makes it (so the
/// stored text still says who sent it and when), plus the idempotency key the server echoes in
/// its `ack`.
///
/// ```text
/// {"type":"message","room":"lg-x-r0","content":"lg:3:17:58211034:xx…","client_msg_id":"x:3:17"}
/// ```
pub fn keyed_message(room: &str, id: MsgId, payload: usize, client_msg_id: &str) -> String {
    let mut content = format!("lg:{}:{}:{}:", id.publisher, id.seq, id.sent_us);
    let pad = payload.saturating_sub(content.len());
    content.extend(std::iter::repeat_n('x', pad));
    format!(
        r#"{{"type":"message","room":"{room}","content":"{content}","client_msg_id":"{client_msg_id}"}}"#
    )
}

/// The server's `ack` of a persisted message, as far as the load generator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The message's position in its room (absent only from a server that stores nothing).
    pub seq: Option<u64>,
    /// The key the client sent with the message.
    pub client_msg_id: Option<&'a str>,
}

/// A frame's `type`, read with a byte scan (no JSON parse).
///
/// ```
/// assert_eq!(roomcast_loadgen::wire::kind(r#"{"type":"ack","seq":3}"#), Some("ack"));
/// assert_eq!(roomcast_loadgen::wire::kind("[]"), None);
/// ```
pub fn kind(text: &str) -> Option<&str> {
    string_field(text, &TYPE)
}

/// Reads an `ack` frame's `seq` and `client_msg_id` (the caller has checked [`kind`]).
///
/// ```
/// use roomcast_loadgen::wire::{ack, Ack};
/// let frame = r#"{"type":"ack","room":"r","timestamp":1,"id":"0199","seq":42,"client_msg_id":"a:1:7"}"#;
/// assert_eq!(ack(frame), Ack { seq: Some(42), client_msg_id: Some("a:1:7") });
/// ```
pub fn ack(text: &str) -> Ack<'_> {
    Ack {
        seq: number_field(text, &SEQ),
        client_msg_id: string_field(text, &CLIENT_MSG_ID),
    }
}

/// The id a stored message's `content` carries, when it is one of ours.
///
/// ```
/// use roomcast_loadgen::wire::{content_id, MsgId};
/// assert_eq!(content_id("lg:1:2:3:xx"), Some(MsgId { publisher: 1, seq: 2, sent_us: 3 }));
/// assert_eq!(content_id("hello"), None);
/// ```
pub fn content_id(content: &str) -> Option<MsgId> {
    parse_id(content)
}

/// Reads a frame's type and, for messages, our id.
///
/// ```
/// use roomcast_loadgen::wire::{classify, Inbound, MsgId};
/// let frame = r#"{"type":"message","room":"r","content":"lg:1:2:3:xx","user_id":"u"}"#;
/// let id = MsgId { publisher: 1, seq: 2, sent_us: 3 };
/// assert_eq!(classify(frame), Inbound::Message(Some(id)));
/// assert_eq!(classify(r#"{"type":"user_list","room":"r","data":[]}"#), Inbound::UserList { room: "r" });
/// ```
pub fn classify(text: &str) -> Inbound<'_> {
    let Some(kind) = string_field(text, &TYPE) else {
        return Inbound::Unknown;
    };
    match kind {
        "message" => Inbound::Message(string_field(text, &CONTENT).and_then(parse_id)),
        "user_list" => match string_field(text, &ROOM) {
            Some(room) => Inbound::UserList { room },
            None => Inbound::Other(kind),
        },
        "error" => Inbound::Error,
        other => Inbound::Other(other),
    }
}

/// A key to look for in a frame, with its searcher built once: every frame received is
/// scanned (a million a second at the top of a sweep), and building a substring searcher per
/// call was the load generator's largest cost.
type Key = LazyLock<Finder<'static>>;

static TYPE: Key = LazyLock::new(|| Finder::new("\"type\":\""));
static CONTENT: Key = LazyLock::new(|| Finder::new("\"content\":\""));
static ROOM: Key = LazyLock::new(|| Finder::new("\"room\":\""));
static CLIENT_MSG_ID: Key = LazyLock::new(|| Finder::new("\"client_msg_id\":\""));
static SEQ: Key = LazyLock::new(|| Finder::new("\"seq\":"));

/// Where the value after the first occurrence of `key` starts. A key right after the opening
/// brace (every server puts `type` there) is found without a search.
fn value_start(text: &str, key: &Key) -> Option<usize> {
    let needle = key.needle();
    let at = if text.as_bytes().get(1..=needle.len()) == Some(needle) {
        1
    } else {
        key.find(text.as_bytes())?
    };
    Some(at + needle.len())
}

/// The string value after the first occurrence of `key` (which ends with the opening quote),
/// up to the next quote. A `"key":"` sequence cannot occur inside a JSON string (its quotes
/// would be escaped), so the first match is a key. Values with escapes are not needed here.
fn string_field<'a>(text: &'a str, key: &Key) -> Option<&'a str> {
    let start = value_start(text, key)?;
    let len = memchr::memchr(b'"', &text.as_bytes()[start..])?;
    // Both ends are ASCII quotes, so both are character boundaries.
    Some(&text[start..start + len])
}

/// The unsigned integer after the first occurrence of `key` (which ends with the colon).
fn number_field(text: &str, key: &Key) -> Option<u64> {
    let start = value_start(text, key)?;
    let (value, _) = leading_number(&text.as_bytes()[start..])?;
    Some(value)
}

/// The decimal number `bytes` starts with, and what follows it; `None` without a digit or
/// past `u64::MAX`.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in &bytes[..digits] {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some((value, &bytes[digits..]))
}

/// `lg:{publisher}:{seq}:{sent_us}:…`.
fn parse_id(content: &str) -> Option<MsgId> {
    let rest = content.as_bytes().strip_prefix(b"lg:")?;
    let (publisher, rest) = leading_number(rest)?;
    let (seq, rest) = leading_number(rest.strip_prefix(b":")?)?;
    let (sent_us, rest) = leading_number(rest.strip_prefix(b":")?)?;
    rest.strip_prefix(b":")?;
    Some(MsgId {
        publisher: u32::try_from(publisher).ok()?,
        seq,
        sent_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_through_the_server_envelope() {
        let id = MsgId {
            publisher: 4_000_000_000,
            seq: u64::MAX,
            sent_us: u64::MAX,
        };
        let sent = message("room-1", id, MIN_PAYLOAD_BYTES);
        let value: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["room"], "room-1");
        let content = value["content"].as_str().unwrap();
        assert_eq!(content.len(), MIN_PAYLOAD_BYTES, "{content}");
        // What roomcast sends back: the same content among server fields.
        let echoed = serde_json::json!({
            "type": "message", "room": "room-1", "content": content,
            "user_id": "lg-a-1", "username": "lg-a-1", "timestamp": 1, "id": "0199"
        })
        .to_string();
        assert_eq!(classify(&echoed), Inbound::Message(Some(id)));
    }

    #[test]
    fn content_is_padded_to_the_payload() {
        let id = MsgId {
            publisher: 1,
            seq: 2,
            sent_us: 3,
        };
        let value: serde_json::Value = serde_json::from_str(&message("r", id, 200)).unwrap();
        assert_eq!(value["content"].as_str().unwrap().len(), 200);
    }

    #[test]
    fn a_keyed_message_and_its_ack_round_trip_through_json() {
        let id = MsgId {
            publisher: 9,
            seq: 12,
            sent_us: 345,
        };
        let sent = keyed_message("r1", id, 64, "ns:9:12");
        let value: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(value["client_msg_id"], "ns:9:12");
        assert_eq!(content_id(value["content"].as_str().unwrap()), Some(id));
        // roomcast's ack, field order as the server writes it.
        let acked = serde_json::json!({
            "type": "ack", "room": "r1", "timestamp": 17, "id": "0199-ab", "seq": 18_446_744_073_709_551_615u64,
            "client_msg_id": "ns:9:12"
        })
        .to_string();
        assert_eq!(kind(&acked), Some("ack"));
        assert_eq!(
            ack(&acked),
            Ack {
                seq: Some(u64::MAX),
                client_msg_id: Some("ns:9:12")
            }
        );
        assert_eq!(
            ack(r#"{"type":"ack","room":"r"}"#),
            Ack {
                seq: None,
                client_msg_id: None
            }
        );
    }

    #[test]
    fn other_frames_are_told_apart() {
        assert_eq!(
            classify(r#"{"type":"join","room":"r","user_id":"u","timestamp":1}"#),
            Inbound::Other("join")
        );
        assert_eq!(
            classify(r#"{"type":"error","content":"not in room"}"#),
            Inbound::Error
        );
        assert_eq!(
            classify(r#"{"type":"message","room":"r","content":"hello"}"#),
            Inbound::Message(None)
        );
        assert_eq!(classify("[]"), Inbound::Unknown);
        // `type` anywhere, not only first; ids must be whole and in range.
        assert_eq!(
            classify(r#"{"room":"r","type":"message","content":"lg:1:2:3:"}"#),
            Inbound::Message(Some(MsgId {
                publisher: 1,
                seq: 2,
                sent_us: 3
            }))
        );
        for content in [
            "lg:1:2:3",
            "lg:1::3:",
            "lg:4294967296:2:3:",
            "lg:1:2:99999999999999999999:",
        ] {
            let frame = format!(r#"{{"type":"message","content":"{content}"}}"#);
            assert_eq!(classify(&frame), Inbound::Message(None), "{content}");
        }
        assert_eq!(
            classify(r#"{"type":"user_list","room":"a","data":["u"],"users":[]}"#),
            Inbound::UserList { room: "a" }
        );
    }
}
