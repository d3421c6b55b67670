//! RFC 6455 framing, server side: decode the client's masked frames into messages, encode ours.
//!
//! The decoder holds no buffer between frames. It parses frames straight out of whatever slice
//! it is given (usually a stack buffer the socket was just read into) and copies bytes only for
//! what it must keep: the payload of a complete message, the unparsed tail of a frame that
//! arrived in pieces, or the fragments of a message still being assembled. All three are empty,
//! with no capacity, while a connection is idle.
//!
//! What it enforces (each violation names the close code the session answers with):
//! - client frames are masked, RSV2 and RSV3 are clear, opcodes are known, control frames are
//!   final and at most 125 bytes: otherwise 1002;
//! - RSV1 marks a compressed message (permessage-deflate, [`super::deflate`]): only where the
//!   connection negotiated it, and only on the first frame of a text or binary message, never
//!   on a continuation or control frame: otherwise 1002;
//! - continuation frames continue a message, and a new message does not start inside one: 1002;
//! - a message (all its fragments together) is at most `max_message` bytes: 1009, decided from
//!   the frame header, so an oversized payload is skipped, never buffered; a compressed one is
//!   at most that (plus deflate's worst-case overhead, [`compressed_limit`]) on the wire and
//!   at most `max_message` bytes inflated, inflation stopping where it passes the limit;
//! - compressed data inflates: otherwise 1007;
//! - text messages and close reasons are valid UTF-8: 1007; close codes are valid: 1002.

use bytes::Bytes;

use super::deflate::{self, InflateError};
use crate::Utf8Bytes;
use crate::frame::close_code;

const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Longest header a server frame can have: 2 + 8, unmasked.
pub(crate) const MAX_SERVER_HEADER: usize = 10;

/// RSV1, the first reserved bit: set on the first frame of a compressed message.
const RSV1: u8 = 0x40;

/// A message or control frame from the peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A complete text message, valid UTF-8.
    Text(Utf8Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping; the session answers with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (only proves the peer is alive).
    Pong,
    /// A close frame: its code and reason, or `None` when it carried no code (1005).
    Close(Option<(u16, String)>),
}

/// Why the peer's bytes were refused; each maps to the close code the session sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The message is larger than the limit (1009).
    #[error("message too big")]
    TooBig,
    /// A text message or close reason is not UTF-8 (1007).
    #[error("invalid UTF-8")]
    Utf8,
    /// The frames break RFC 6455 (1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A compressed message is not valid deflate data (1007).
    #[error("invalid compressed data")]
    Inflate,
}

impl DecodeError {
    /// The close code this error ends the connection with.
    pub(crate) fn close_code(self) -> u16 {
        match self {
            Self::TooBig => close_code::TOO_BIG,
            Self::Utf8 | Self::Inflate => 1007,
            Self::Protocol(_) => 1002,
        }
    }
}

/// A data message being assembled from fragments.
#[derive(Debug)]
struct Fragments {
    binary: bool,
    /// The first frame had RSV1: `data` is compressed, to be inflated once complete.
    compressed: bool,
    data: Vec<u8>,
}

/// The decoding state of one connection.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    max_message: usize,
    /// A fragmented message in progress. Boxed: rare, and an idle connection's decoder
    /// should be small (it lives in the connection's task).
    fragments: Option<Box<Fragments>>,
    /// Payload bytes of a refused (oversized) frame still to be skipped, so that a peer's
    /// close reply after it can still be found.
    skip: u64,
}

/// A parsed frame header.
struct Header {
    fin: bool,
    /// A compressed message's first frame.
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header length in bytes.
    len: usize,
    payload: u64,
}

impl Decoder {
    /// A decoder that refuses messages longer than `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            fragments: None,
            skip: 0,
        }
    }

    /// Decodes from the front of `input`, advancing it past every byte used. Returns the first
    /// event, or `None` when `input` ends inside a frame (the caller keeps the rest and calls
    /// again with more). Non-final fragments are consumed into the decoder on the way.
    /// `compression`: the connection negotiated permessage-deflate, so RSV1 marks a compressed
    /// message (passed in rather than kept here: the decoder lives in every connection's task).
    pub(crate) fn decode(
        &mut self,
        input: &mut &[u8],
        compression: bool,
    ) -> Result<Option<Event>, DecodeError> {
        loop {
            if self.skip > 0 {
                let skipped = input
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                *input = &input[skipped..];
                self.skip -= skipped as u64;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            let Some(header) = parse_header(input, compression)? else {
                return Ok(None);
            };
            if let Err(err) = self.check_size(&header) {
                // Past the header: what follows is the refused payload, which is skipped.
                *input = &input[header.len..];
                return Err(err);
            }
            // `check_size` bounds the payload by `max_message` (or 125 for control frames).
            let payload_len = header.payload as usize;
            let Some(frame) = input.get(header.len..header.len + payload_len) else {
                return Ok(None);
            };
            *input = &input[header.len + payload_len..];
            if let Some(event) = self.frame(&header, frame)? {
                return Ok(Some(event));
            }
        }
    }

    /// Bytes of a fragmented message held so far (the fuzz targets bound it).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn fragment_bytes(&self) -> usize {
        self.fragments.as_ref().map_or(0, |f| f.data.len())
    }

    /// Refuses a frame that would take the message over the limit, and arranges to skip its
    /// payload.
    fn check_size(&mut self, header: &Header) -> Result<(), DecodeError> {
        if header.opcode >= OP_CLOSE {
            // Control frames are checked in `parse_header` (≤ 125 bytes).
            return Ok(());
        }
        let (so_far, compressed) = match &self.fragments {
            Some(fragments) => (fragments.data.len() as u64, fragments.compressed),
            None => (0, header.rsv1),
        };
        let limit = if compressed {
            compressed_limit(self.max_message)
        } else {
            self.max_message
        };
        if so_far + header.payload > limit as u64 {
            self.fragments = None;
            self.skip = header.payload;
            return Err(DecodeError::TooBig);
        }
        Ok(())
    }

    /// Handles one complete frame; `masked` is its payload as sent.
    fn frame(&mut self, header: &Header, masked: &[u8]) -> Result<Option<Event>, DecodeError> {
        match header.opcode {
            OP_PING => Ok(Some(Event::Ping(Bytes::from(unmask(masked, header.mask))))),
            OP_PONG => Ok(Some(Event::Pong)),
            OP_CLOSE => close_event(&unmask(masked, header.mask)).map(Some),
            OP_TEXT | OP_BINARY => {
                if self.fragments.is_some() {
                    return Err(DecodeError::Protocol("new message inside a fragmented one"));
                }
                let binary = header.opcode == OP_BINARY;
                let data = unmask(masked, header.mask);
                if header.fin {
                    return self.message(binary, header.rsv1, data).map(Some);
                }
                self.fragments = Some(Box::new(Fragments {
                    binary,
                    compressed: header.rsv1,
                    data,
                }));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(DecodeError::Protocol("continuation without a message"));
                };
                let start = fragments.data.len();
                fragments.data.extend_from_slice(masked);
                unmask_in_place(&mut fragments.data[start..], header.mask);
                if !header.fin {
                    return Ok(None);
                }
                let Fragments {
                    binary,
                    compressed,
                    data,
                } = *self.fragments.take().expect("checked above");
                self.message(binary, compressed, data).map(Some)
            }
            _ => unreachable!("parse_header refuses unknown opcodes"),
        }
    }

    /// A complete message: inflated when compressed (at most `max_message` bytes), then
    /// checked as text or taken as binary.
    fn message(&self, binary: bool, compressed: bool, data: Vec<u8>) -> Result<Event, DecodeError> {
        let data = if compressed {
            deflate::inflate(&data, self.max_message).map_err(|err| match err {
                InflateError::TooBig => DecodeError::TooBig,
                InflateError::Invalid => DecodeError::Inflate,
            })?
        } else {
            data
        };
        message(binary, data)
    }
}

/// Most bytes a compressed message may take on the wire when it may inflate to `max_message`:
/// incompressible data grows a little when deflated (stored blocks cost 5 bytes per 16-64 KiB,
/// plus a block header or two), and a client that compresses everything must still be able to
/// send a message of the full size. A message that passes this is refused from its header, as
/// a plain one is; the inflated size is then checked on its own.
pub(crate) fn compressed_limit(max_message: usize) -> usize {
    max_message.saturating_add(max_message / 1024 + 64)
}

/// Parses a frame header from the front of `input`, or `None` when it is not all there yet.
/// `compression`: RSV1 may mark a compressed message.
fn parse_header(input: &[u8], compression: bool) -> Result<Option<Header>, DecodeError> {
    let [b0, b1, ..] = *input else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(DecodeError::Protocol("reserved bits set"));
    }
    let rsv1 = b0 & RSV1 != 0;
    if rsv1 && !compression {
        // RFC 6455 §5.2: a reserved bit no extension gave a meaning.
        return Err(DecodeError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_TEXT | OP_BINARY => {}
        // RFC 7692 §6.1: RSV1 only on a message's first frame, never on a control frame.
        OP_CONTINUATION if rsv1 => {
            return Err(DecodeError::Protocol("RSV1 set on a continuation frame"));
        }
        OP_CONTINUATION => {}
        OP_CLOSE | OP_PING | OP_PONG if rsv1 => {
            return Err(DecodeError::Protocol("RSV1 set on a control frame"));
        }
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(DecodeError::Protocol("fragmented control frame"));
            }
            if b1 & 0x7F > 125 {
                return Err(DecodeError::Protocol("control frame longer than 125 bytes"));
            }
        }
        _ => return Err(DecodeError::Protocol("unknown opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(DecodeError::Protocol("client frame not masked"));
    }
    let (payload, at) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = input.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = input.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(DecodeError::Protocol("payload length has its top bit set"));
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let Some(mask) = input.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask: mask.try_into().expect("4 bytes"),
        len: at + 4,
        payload,
    }))
}

fn message(binary: bool, data: Vec<u8>) -> Result<Event, DecodeError> {
    if binary {
        return Ok(Event::Binary(Bytes::from(data)));
    }
    String::from_utf8(data)
        .map(|text| Event::Text(Utf8Bytes::from(text)))
        .map_err(|_| DecodeError::Utf8)
}

fn close_event(payload: &[u8]) -> Result<Event, DecodeError> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(DecodeError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !valid_close_code(code) {
                return Err(DecodeError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| DecodeError::Utf8)?;
            Ok(Event::Close(Some((code, reason.to_owned()))))
        }
    }
}

/// Codes a peer may send in a close frame (RFC 6455 §7.4, the IANA registry, and the ranges
/// for libraries and applications). 1005, 1006 and 1015 are never sent on the wire.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn unmask(masked: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut data = masked.to_vec();
    unmask_in_place(&mut data, mask);
    data
}

fn unmask_in_place(data: &mut [u8], mask: [u8; 4]) {
    // Eight bytes at a time; the tail byte by byte. The mask repeats every four bytes, so a
    // word-sized mask lines up with every word-aligned chunk of the payload.
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Appends the header of an unmasked server frame (FIN set) with `len` payload bytes.
pub(crate) fn encode_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    encode_first_byte(out, 0x80 | opcode, len);
}

/// Appends the header of a compressed message's only frame: FIN and RSV1 set, `len` bytes of
/// deflated payload.
pub(crate) fn encode_compressed_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    encode_first_byte(out, 0x80 | RSV1 | opcode, len);
}

fn encode_first_byte(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The payload of a close frame: the code, then the reason (already ≤ 123 bytes).
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
        let mut input = bytes;
        let mut events = Vec::new();
        while let Some(event) = decoder.decode(&mut input, false)? {
            events.push(event);
        }
        assert!(input.is_empty(), "{} bytes left undecoded", input.len());
        Ok(events)
    }

    fn text(s: &str) -> Event {
        Event::Text(Utf8Bytes::from(s))
    }

    #[test]
    fn a_masked_text_frame_decodes() {
        let mut decoder = Decoder::new(1024);
        let events = decode_all(&mut decoder, &client_frame(true, OP_TEXT, b"hello")).unwrap();
        assert_eq!(events, [text("hello")]);
    }

    #[test]
    fn every_length_encoding_decodes() {
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut decoder = Decoder::new(100_000);
            let events =
                decode_all(&mut decoder, &client_frame(true, OP_BINARY, &payload)).unwrap();
            assert_eq!(
                events,
                [Event::Binary(Bytes::from(payload))],
                "length {len}"
            );
        }
    }

    #[test]
    fn a_frame_split_at_every_byte_decodes_once_complete() {
        let frame = client_frame(true, OP_TEXT, "héllo wörld, a bit longer".as_bytes());
        for split in 0..frame.len() {
            let mut decoder = Decoder::new(1024);
            let mut first = &frame[..split];
            assert_eq!(
                decoder.decode(&mut first, false).unwrap(),
                None,
                "split {split}"
            );
            // The caller keeps what was not consumed and appends the rest.
            let mut joined = first.to_vec();
            joined.extend_from_slice(&frame[split..]);
            let events = decode_all(&mut decoder, &joined).unwrap();
            assert_eq!(events, [text("héllo wörld, a bit longer")], "split {split}");
        }
    }

    #[test]
    fn fragments_are_assembled_with_control_frames_between_them() {
        let mut bytes = client_frame(false, OP_TEXT, b"he");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"ll"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"o"));
        bytes.extend(client_frame(true, OP_BINARY, &[1, 2]));
        let events = decode_all(&mut Decoder::new(1024), &bytes).unwrap();
        assert_eq!(
            events,
            [
                Event::Ping(Bytes::from_static(b"p")),
                text("hello"),
                Event::Binary(Bytes::from_static(&[1, 2]))
            ]
        );
    }

    #[test]
    fn a_multibyte_character_split_across_fragments_is_valid() {
        let bytes = "é".as_bytes();
        let mut frames = client_frame(false, OP_TEXT, &bytes[..1]);
        frames.extend(client_frame(true, OP_CONTINUATION, &bytes[1..]));
        assert_eq!(
            decode_all(&mut Decoder::new(16), &frames).unwrap(),
            [text("é")]
        );
    }

    #[test]
    fn protocol_violations_are_refused_with_1002() {
        let unmasked = {
            let mut frame = client_frame(true, OP_TEXT, b"hi");
            frame[1] &= 0x7F;
            frame
        };
        let reserved = {
            let mut frame = client_frame(true, OP_TEXT, b"hi");
            frame[0] |= 0x40;
            frame
        };
        let mut long_control = client_frame(true, OP_PING, &[0; 126]);
        long_control[1] = 0x80 | 126;
        let cases: [(&str, Vec<u8>); 8] = [
            ("unmasked", unmasked),
            ("reserved bit", reserved),
            ("unknown opcode", client_frame(true, 0x3, b"")),
            ("fragmented ping", client_frame(false, OP_PING, b"")),
            ("long control", long_control),
            (
                "orphan continuation",
                client_frame(true, OP_CONTINUATION, b"x"),
            ),
            ("one-byte close", client_frame(true, OP_CLOSE, &[3])),
            (
                "close code 1005",
                client_frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
            ),
        ];
        for (name, bytes) in cases {
            let err = decode_all(&mut Decoder::new(1024), &bytes).unwrap_err();
            assert_eq!(err.close_code(), 1002, "{name}: {err}");
        }
        let mut interleaved = client_frame(false, OP_TEXT, b"a");
        interleaved.extend(client_frame(true, OP_TEXT, b"b"));
        let err = decode_all(&mut Decoder::new(1024), &interleaved).unwrap_err();
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn invalid_utf8_is_refused_with_1007() {
        let err = decode_all(
            &mut Decoder::new(64),
            &client_frame(true, OP_TEXT, &[0xff, 0xfe]),
        )
        .unwrap_err();
        assert_eq!(err.close_code(), 1007);
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.push(0xff);
        let err =
            decode_all(&mut Decoder::new(64), &client_frame(true, OP_CLOSE, &close)).unwrap_err();
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_header_and_skipped() {
        let mut decoder = Decoder::new(10);
        let mut bytes = client_frame(true, OP_TEXT, &[b'a'; 11]);
        bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        // The header and two payload bytes have arrived: refused already, past the header.
        let mut input = &bytes[..8];
        assert_eq!(decoder.decode(&mut input, false), Err(DecodeError::TooBig));
        assert_eq!(input, &bytes[6..8]);
        // The rest of the refused payload is skipped and the close after it is found.
        let mut rest = &bytes[6..];
        assert_eq!(
            decoder.decode(&mut rest, false).unwrap(),
            Some(Event::Close(Some((1000, String::new()))))
        );
        // Fragments count together.
        let mut fragmented = client_frame(false, OP_BINARY, &[0; 6]);
        fragmented.extend(client_frame(true, OP_CONTINUATION, &[0; 5]));
        let err = decode_all(&mut Decoder::new(10), &fragmented).unwrap_err();
        assert_eq!(err.close_code(), 1009);
    }

    /// A client frame with RSV1 set.
    fn compressed_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = client_frame(fin, opcode, payload);
        frame[0] |= RSV1;
        frame
    }

    fn decode_deflate(max: usize, bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
        let mut decoder = Decoder::new(max);
        let mut input = bytes;
        let mut events = Vec::new();
        while let Some(event) = decoder.decode(&mut input, true)? {
            events.push(event);
        }
        assert!(input.is_empty(), "{} bytes left undecoded", input.len());
        Ok(events)
    }

    #[test]
    fn a_compressed_message_is_inflated_whole_or_in_fragments() {
        let text = "a compressed hello, hello, hello, hello".repeat(4);
        let deflated = deflate::tests::client_deflate(text.as_bytes());
        assert_eq!(
            decode_deflate(1024, &compressed_frame(true, OP_TEXT, &deflated)).unwrap(),
            [Event::Text(Utf8Bytes::from(text.clone()))]
        );
        // RSV1 on the first frame only; a ping between the fragments is not compressed.
        let (head, tail) = deflated.split_at(deflated.len() / 2);
        let mut bytes = compressed_frame(false, OP_BINARY, head);
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, tail));
        bytes.extend(client_frame(true, OP_TEXT, b"plain"));
        assert_eq!(
            decode_deflate(1024, &bytes).unwrap(),
            [
                Event::Ping(Bytes::from_static(b"p")),
                Event::Binary(Bytes::from(text.into_bytes())),
                Event::Text(Utf8Bytes::from("plain")),
            ]
        );
    }

    #[test]
    fn rsv1_follows_rfc_7692() {
        let deflated = deflate::tests::client_deflate(b"hello hello hello");
        // Not negotiated: a reserved bit (1002).
        let err = decode_all(
            &mut Decoder::new(1024),
            &compressed_frame(true, OP_TEXT, &deflated),
        )
        .unwrap_err();
        assert_eq!(err.close_code(), 1002);
        // Negotiated, but on a continuation or a control frame (1002).
        let mut continued = compressed_frame(false, OP_TEXT, &deflated[..2]);
        continued.extend(compressed_frame(true, OP_CONTINUATION, &deflated[2..]));
        for (name, bytes) in [
            ("continuation", continued),
            ("ping", compressed_frame(true, OP_PING, b"")),
            (
                "close",
                compressed_frame(true, OP_CLOSE, &1000u16.to_be_bytes()),
            ),
        ] {
            let err = decode_deflate(1024, &bytes).unwrap_err();
            assert_eq!(err.close_code(), 1002, "{name}: {err}");
        }
        // RSV2 and RSV3 stay reserved.
        let mut rsv2 = client_frame(true, OP_TEXT, b"x");
        rsv2[0] |= 0x20;
        assert_eq!(decode_deflate(1024, &rsv2).unwrap_err().close_code(), 1002);
    }

    #[test]
    fn a_zip_bomb_is_refused_with_1009_and_bad_deflate_data_with_1007() {
        let bomb = deflate::tests::client_deflate(&vec![b'0'; 1 << 20]);
        assert!(bomb.len() < 4096);
        let err = decode_deflate(4096, &compressed_frame(true, OP_TEXT, &bomb)).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        // Refused after the whole frame was read: the next frame still parses.
        let mut decoder = Decoder::new(4096);
        let mut bytes = compressed_frame(true, OP_TEXT, &bomb);
        bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut input = &bytes[..];
        assert_eq!(decoder.decode(&mut input, true), Err(DecodeError::TooBig));
        assert_eq!(
            decoder.decode(&mut input, true).unwrap(),
            Some(Event::Close(Some((1000, String::new()))))
        );
        let err = decode_deflate(4096, &compressed_frame(true, OP_TEXT, &[0xff; 3])).unwrap_err();
        assert_eq!(err.close_code(), 1007);
        // Inflated text is checked as text.
        let latin1 = deflate::tests::client_deflate(&[0xe9; 200]);
        let err = decode_deflate(4096, &compressed_frame(true, OP_TEXT, &latin1)).unwrap_err();
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn close_frames_carry_their_code_and_reason() {
        let events = decode_all(
            &mut Decoder::new(64),
            &client_frame(true, OP_CLOSE, &close_payload(4001, "bye")),
        )
        .unwrap();
        assert_eq!(events, [Event::Close(Some((4001, "bye".into())))]);
        let events = decode_all(&mut Decoder::new(64), &client_frame(true, OP_CLOSE, b"")).unwrap();
        assert_eq!(events, [Event::Close(None)]);
    }

    #[test]
    fn server_headers_use_the_shortest_length_encoding() {
        for (len, expected) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            encode_header(&mut out, OP_TEXT, len);
            assert_eq!(out, expected, "length {len}");
            assert!(out.len() <= MAX_SERVER_HEADER);
        }
    }

    #[test]
    fn unmasking_matches_the_bytewise_definition() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i: u8| i.wrapping_mul(7)).collect();
            let expected: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmask(&data, mask), expected);
        }
    }
}
