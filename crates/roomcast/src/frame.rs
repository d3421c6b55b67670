//! Outgoing frames and close reasons.
//!
//! A [`Frame`] is a message already encoded for the wire. It holds reference-counted bytes, so a
//! room broadcast encodes once and every recipient's queue holds a clone of the same buffer.
//! [`CloseReason`] is what a session records when it ends, and [`close_code`] names every code
//! roomcast sends.

use std::borrow::Cow;

use bytes::Bytes;

use crate::Utf8Bytes;
use crate::ws::codec::{OP_BINARY, OP_TEXT};

/// The close codes roomcast sends, named once (RFC 6455 §7.4 and the seeds' application codes).
///
/// Which ones a client should retry is listed in the README's close code table: 1001, 1011 and
/// 1013 are worth a retry with backoff; 1008, 1009 and 4000 are not; 4001 only with a new token.
pub mod close_code {
    /// 1000: the session ended normally.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away (shutdown) or the peer stopped answering heartbeats.
    pub const GOING_AWAY: u16 = 1001;
    /// 1008: a policy was violated (token required, origin refused, rate limited).
    pub const POLICY: u16 = 1008;
    /// 1009: a message was bigger than `WEBSOCKET_MAX_MESSAGE_SIZE`.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: the server hit an internal error.
    pub const INTERNAL: u16 = 1011;
    /// 1013: try again later (server full, or this client read too slowly).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// 4000: the room was not found or could not be created.
    pub const ROOM_NOT_FOUND: u16 = 4000;
    /// 4001: unauthorized (missing, invalid or expired token, or unknown user).
    pub const UNAUTHORIZED: u16 = 4001;
}

/// An encoded outgoing message. Cloning it bumps a reference count; it never copies the bytes.
///
/// ```
/// use roomcast::Frame;
/// let frame = Frame::json(&serde_json::json!({ "hello": "world" })).unwrap();
/// assert_eq!(frame.as_text(), Some(r#"{"hello":"world"}"#));
/// let again = frame.clone(); // same bytes, shared
/// assert_eq!(again, frame);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A UTF-8 text frame.
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Frame {
    /// Encodes `value` as JSON into a text frame.
    ///
    /// # Errors
    ///
    /// Fails only when `value`'s `Serialize` implementation fails (e.g. a map with non-string keys).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::text(serde_json::to_string(value)?))
    }

    /// A text frame from a string.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(Utf8Bytes::from(text.into()))
    }

    /// A binary frame from bytes.
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Self::Binary(bytes.into())
    }

    /// The text, if this is a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.as_str()),
            Self::Binary(_) => None,
        }
    }

    /// Length of the payload in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's opcode and payload, as written on the wire.
    pub(crate) fn wire(&self) -> (u8, &[u8]) {
        match self {
            Self::Text(text) => (OP_TEXT, text.as_bytes()),
            Self::Binary(bytes) => (OP_BINARY, bytes),
        }
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<&'static str> for Frame {
    fn from(text: &'static str) -> Self {
        Self::Text(Utf8Bytes::from_static(text))
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes.into())
    }
}

/// Why a session ended: the close code and a short reason sent in the close frame.
///
/// Reasons are short (the protocol allows 123 bytes) and never contain secrets such as tokens.
///
/// ```
/// use roomcast::{CloseReason, close_code};
/// let reason = CloseReason::new(close_code::TRY_AGAIN_LATER, "slow consumer");
/// assert_eq!(reason.code(), 1013);
/// assert_eq!(reason.reason(), "slow consumer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    code: u16,
    reason: Cow<'static, str>,
}

impl CloseReason {
    /// A close reason with `code` and a short human-readable `reason`.
    pub fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        let mut reason = reason.into();
        // RFC 6455 §5.5: a control frame payload is at most 125 bytes, two of them the code.
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.to_mut().truncate(end);
        }
        Self { code, reason }
    }

    /// 1000, normal closure.
    pub fn normal() -> Self {
        Self::new(close_code::NORMAL, "")
    }

    /// 1001, the server is shutting down.
    pub fn going_away() -> Self {
        Self::new(close_code::GOING_AWAY, "server shutting down")
    }

    /// 1013, the client did not read fast enough and its queue filled up.
    pub fn slow_consumer() -> Self {
        Self::new(close_code::TRY_AGAIN_LATER, "slow consumer")
    }

    /// The close code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reason text.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} ({})", self.code, self.reason)
        }
    }
}
