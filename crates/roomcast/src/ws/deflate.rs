//! permessage-deflate (RFC 7692): the answer to a client's offer, inflating its messages under
//! the size cap, and deflating ours.
//!
//! **No context takeover, either way.** Every answer says `server_no_context_takeover;
//! client_no_context_takeover` (RFC 7692 §7.1.1 lets the server add both whatever the offer
//! said), so each message is compressed on its own and no deflate state lives in a connection
//! between messages. Two reasons:
//!
//! - **Memory.** zlib's state with context takeover and 15-bit windows is ~300 KB per
//!   connection; here a connection that negotiated compression holds one byte more than one
//!   that did not (the server's window size, [`Deflate`]). The compressor and the decompressor
//!   are borrowed per message from one pair per thread ([`COMPRESSOR`], [`DECOMPRESSOR`]) and
//!   reset before they are given back.
//! - **Broadcasts compressed once.** A message that depends on no connection's history is the
//!   same bytes for every member of a room, so a broadcast is deflated once and shared, like
//!   the plain framing (`hub::state`, `EncodeOnce`).
//!
//! ```text
//! client: Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits,
//!                                   permessage-deflate; server_max_window_bits=10
//! server: Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;
//!                                   client_no_context_takeover
//! ```
//!
//! The first offer the server can honour wins: an offer with an unknown or repeated
//! parameter, or a bad window size, is declined, and no offer at all leaves the connection
//! uncompressed (never an error). `server_max_window_bits=N` is echoed and kept by deflating
//! at most 2^N bytes per reset compressor; `client_max_window_bits` needs no answer, as the
//! inflater takes any window up to 15 bits.
//!
//! **Inflating** (RFC 7692 §7.2.2): the message's compressed bytes plus the `00 00 ff ff` the
//! sender removed, into a buffer that never grows past `max_message_bytes + 1`: a message that
//! inflates past the limit is refused with 1009 at that point, however small it was on the wire
//! (a zip bomb costs the limit, not its inflated size).
//!
//! **Deflating** (§7.2.1): raw deflate, a sync flush, the trailing `00 00 ff ff` removed. A
//! message under [`MIN_DEFLATE_BYTES`], or one that would not get smaller, is sent as it is,
//! with RSV1 clear (§6: an endpoint may send any message uncompressed).

use std::cell::RefCell;
use std::num::NonZeroU8;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What RFC 7692 §7.2.1 removes from the end of each compressed message and §7.2.2 puts back:
/// the empty stored block a sync flush ends with.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Messages shorter than this are sent uncompressed. Under ~100 bytes deflate saves a few bytes
/// at best (a JSON envelope of 64 bytes, the native `ack` or `pong`, comes out at 55-70 bytes
/// with its fixed Huffman block) while it costs a compressor reset (~160 KB of tables cleared)
/// per message; at 128 bytes a chat envelope compresses by a fifth or more. The receiver
/// cannot tell the difference: a compressed connection may carry plain messages (RSV1 clear).
pub(crate) const MIN_DEFLATE_BYTES: usize = 128;

/// Most compressor resets one message may take to keep a window the client narrowed
/// (`server_max_window_bits` under 15): with 8 bits, messages up to 1 KiB are compressed.
const MAX_WINDOW_PIECES: usize = 4;

/// Largest LZ77 window permessage-deflate allows (and the only one the compressor uses): 32 KiB.
const MAX_WINDOW_BITS: u8 = 15;

/// The extension as one connection negotiated it: the largest window (in bits, 8 to 15) the
/// client lets the server's messages use. One byte, in the connection's task and its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    server_window_bits: NonZeroU8,
}

impl Deflate {
    /// Window size in bits for the server's messages.
    pub(crate) fn server_window_bits(self) -> u8 {
        self.server_window_bits.get()
    }
}

/// The answer to the offers in a request's `Sec-WebSocket-Extensions` headers: the
/// first `permessage-deflate` offer the server can honour, and the header value that accepts
/// it. `None` (no extension) when there is no such offer.
pub(crate) fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
) -> Option<(Deflate, String)> {
    headers
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .find_map(accept)
}

/// Accepts one offer (`name; param; param=value`), or declines it with `None`.
fn accept(offer: &str) -> Option<(Deflate, String)> {
    let mut params = offer.split(';');
    let name = params.next()?.trim();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    // Each parameter at most once (§7: an offer repeating one is declined).
    let mut seen = [false; 4];
    let mut server_window_bits = None;
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
            None => (param.trim(), None),
        };
        let at = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ]
        .iter()
        .position(|known| key.eq_ignore_ascii_case(known))?;
        if std::mem::replace(&mut seen[at], true) {
            return None;
        }
        match (at, value) {
            // The two takeover flags have no value.
            (0 | 1, None) => {}
            // server_max_window_bits must have one; the client's may go without.
            (2, Some(value)) => server_window_bits = Some(window_bits(value)?),
            (3, None) => {}
            (3, Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
    }
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_window_bits {
        // §7.1.2.1: an offer that limits the server's window is accepted by echoing the limit.
        answer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let bits = server_window_bits.unwrap_or(MAX_WINDOW_BITS);
    let deflate = Deflate {
        server_window_bits: NonZeroU8::new(bits).expect("8 to 15"),
    };
    Some((deflate, answer))
}

/// A parameter's value without the quotes of a quoted string (§7.1: `"10"` is `10`).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size: 8 to 15, decimal, no leading zero (§7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse()
        .ok()
        .filter(|bits| (8..=MAX_WINDOW_BITS).contains(bits))
}

thread_local! {
    /// One compressor per thread, reset before each message: with no context takeover nothing
    /// carries over, so the ~230 KB of miniz_oxide state is per thread, not per connection.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
    /// One decompressor per thread (~43 KB, its 32 KiB window included), reset after each
    /// message.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// The compressed payload of a message (raw deflate, the final `00 00 ff ff` removed) with
/// back-references at most 2^`window_bits` bytes apart, or `None` when it should go as it is:
/// shorter than [`MIN_DEFLATE_BYTES`], or not smaller compressed.
pub(crate) fn deflate(payload: &[u8], window_bits: u8) -> Option<Vec<u8>> {
    if payload.len() < MIN_DEFLATE_BYTES {
        return None;
    }
    COMPRESSOR.with_borrow_mut(|slot| {
        // Level 1 (miniz_oxide's fast, greedy path): a few percent larger than the default
        // level on chat-sized messages for about a third of the time.
        let compress = slot.get_or_insert_with(|| Compress::new(Compression::fast(), false));
        // miniz_oxide's window is 32 KiB (15 bits). A smaller window the client asked for is
        // kept by starting afresh every 2^bits bytes: no match can reach back past a reset.
        // A reset clears ~250 KB of tables, so a message that would take more than
        // MAX_WINDOW_PIECES of them goes plain instead (browsers never ask for a smaller
        // server window; a client that does gets its short messages compressed).
        let piece = if window_bits >= MAX_WINDOW_BITS {
            payload.len()
        } else {
            1 << window_bits
        };
        if payload.len().div_ceil(piece) > MAX_WINDOW_PIECES {
            return None;
        }
        let mut out = Vec::new();
        // The compressor is fresh or was reset after its last message: one reset per piece.
        for input in payload.chunks(piece) {
            sync_flush(compress, input, &mut out);
            compress.reset();
        }
        if !out.ends_with(&TAIL) {
            debug_assert!(false, "a sync flush ends with an empty stored block");
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < payload.len()).then_some(out)
    })
}

/// Compresses `input` into `out` and ends with a sync flush (a byte-aligned empty stored block).
///
/// Room for deflate's worst case is reserved first, so one call normally does it all. When the
/// output does fill up, miniz_oxide keeps the rest and hands it out on the next call, and only
/// a call that starts with nothing held back performs the flush: so the loop ends after a call
/// that had taken all the input and ended with room to spare, following one that did too.
fn sync_flush(compress: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) {
    // Stored blocks cost 5 bytes per 64 KiB; a fixed-Huffman block at most 9 bits a byte.
    out.reserve(input.len() + input.len() / 8 + 64);
    let mut held_back = false;
    loop {
        let before = compress.total_in();
        compress
            .compress_vec(input, out, FlushCompress::Sync)
            .expect("deflating into memory does not fail");
        let used = usize::try_from(compress.total_in() - before).expect("a slice's length");
        input = &input[used..];
        let full = out.capacity() - out.len() < 16;
        if input.is_empty() && !full && !held_back {
            return;
        }
        held_back = full;
        if full {
            out.reserve(out.capacity().max(256));
        }
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the limit (1009).
    TooBig,
    /// It is not valid deflate data (1007).
    Invalid,
}

/// Inflates one message's compressed payload (the sender removed the final `00 00 ff ff`;
/// it is put back here), refusing output over `max` bytes as soon as it is reached.
pub(crate) fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompress = slot.get_or_insert_with(|| Decompress::new(false));
        let inflated = inflate_with(decompress, compressed, max);
        decompress.reset(false);
        inflated
    })
}

fn inflate_with(
    decompress: &mut Decompress,
    compressed: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    // Room for one byte over the limit: reaching it is how an oversized message shows.
    let cap = max.saturating_add(1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).max(64).min(cap));
    for mut input in [compressed, &TAIL[..]] {
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                out.reserve_exact(out.len().max(1024).min(cap - out.len()));
            }
            let (before_in, before_out) = (decompress.total_in(), decompress.total_out());
            let status = decompress
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            let used = usize::try_from(decompress.total_in() - before_in).expect("a length");
            let produced = decompress.total_out() - before_out;
            input = &input[used..];
            match status {
                // A final block (§7.2.3: the sender may end with one): nothing follows.
                Status::StreamEnd => return Ok(out),
                _ if input.is_empty() && out.len() < out.capacity() => break,
                // Input left, room left, and no progress: the data is cut short or broken.
                _ if used == 0 && produced == 0 && out.len() < out.capacity() => {
                    return Err(InflateError::Invalid);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a client sends: raw deflate, a sync flush, the tail removed.
    pub(crate) fn client_deflate(payload: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new(Compression::default(), false);
        let mut out = Vec::new();
        sync_flush(&mut compress, payload, &mut out);
        out.truncate(out.len() - 4);
        out
    }

    fn offer(value: &str) -> Option<(u8, String)> {
        negotiate([value.as_bytes()])
            .map(|(deflate, answer)| (deflate.server_window_bits(), answer))
    }

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn an_offer_without_parameters_is_answered_without_context_takeover() {
        assert_eq!(offer("permessage-deflate"), Some((15, PLAIN.into())));
        assert_eq!(offer("  Permessage-Deflate  "), Some((15, PLAIN.into())));
    }

    #[test]
    fn offered_parameters_are_honoured_in_the_answer() {
        // What browsers send.
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits"),
            Some((15, PLAIN.into()))
        );
        assert_eq!(
            offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            Some((15, PLAIN.into()))
        );
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"),
            Some((10, format!("{PLAIN}; server_max_window_bits=10")))
        );
        assert_eq!(
            offer(r#"permessage-deflate; server_max_window_bits="8""#),
            Some((8, format!("{PLAIN}; server_max_window_bits=8")))
        );
    }

    #[test]
    fn the_first_offer_that_can_be_honoured_wins() {
        assert_eq!(
            offer(
                "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=9"
            ),
            Some((9, format!("{PLAIN}; server_max_window_bits=9")))
        );
        // Across header lines too.
        let answer = negotiate([&b"foo"[..], b"permessage-deflate"]).map(|(_, a)| a);
        assert_eq!(answer.as_deref(), Some(PLAIN));
    }

    #[test]
    fn a_malformed_or_missing_offer_means_no_extension() {
        for bad in [
            "",
            "deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=ten",
            "permessage-deflate; client_max_window_bits=20",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; server_max_window_bits=\"9",
        ] {
            assert_eq!(offer(bad), None, "{bad:?}");
        }
        assert_eq!(negotiate([&[0xff, 0xfe][..]]), None, "not UTF-8");
        assert_eq!(negotiate(std::iter::empty()), None);
    }

    #[test]
    fn a_message_deflated_here_inflates_back() {
        let text =
            "{\"type\":\"message\",\"room\":\"lobby\",\"data\":\"hello hello hello\"}".repeat(16);
        for bits in [8, 9, 12, 15] {
            let compressed = deflate(text.as_bytes(), bits).expect("compressible");
            assert!(
                compressed.len() < text.len() / 3,
                "window {bits}: {}",
                compressed.len()
            );
            assert!(!compressed.ends_with(&TAIL), "the tail is removed");
            assert_eq!(inflate(&compressed, text.len()).unwrap(), text.as_bytes());
            // (That no reference reaches further back than 2^bits is checked by Autobahn's
            // cases 13.3 and 13.5, whose client inflates with zlib and an 8-bit window.)
        }
    }

    #[test]
    fn small_or_incompressible_messages_are_sent_as_they_are() {
        assert_eq!(deflate(b"{\"type\":\"pong\"}", 15), None);
        assert_eq!(deflate(&[b'a'; MIN_DEFLATE_BYTES - 1], 15), None);
        assert!(deflate(&[b'a'; MIN_DEFLATE_BYTES], 15).is_some());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(deflate(&noise, 15), None);
        // Larger incompressible messages (stored blocks), whole and with windows.
        for len in [16_384, 65_536, 131_072, 1 << 20] {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            assert_eq!(deflate(&noise, 15), None, "{len} bytes of noise");
            let mut half = noise.clone();
            half[..len / 2].fill(b'a');
            let compressed = deflate(&half, 15).expect("half compressible");
            assert_eq!(inflate(&compressed, len).unwrap(), half);
        }
        // A narrowed window: compressed up to four windows' worth, plain beyond.
        assert!(deflate(&[b'a'; 1024], 8).is_some());
        assert_eq!(deflate(&[b'a'; 1025], 8), None);
        assert!(deflate(&[b'a'; 100_000], 15).is_some());
    }

    /// Autobahn's 12.* cases send a thousand slices of an image or a PDF in a row: partly
    /// compressible, often bigger compressed than the first guess at the output's size. Every
    /// one must end with its sync flush (it did not when the output filled up: the compressor
    /// held bytes back, and the flush waits for a call that starts with none held).
    #[test]
    fn messages_in_a_row_of_every_kind_inflate_back() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for round in 0..40usize {
            let len = [300, 4096, 16_384, 65_536, 131_072][round % 5];
            let payload: Vec<u8> = (0..len)
                .map(|i| match (i / 97 + round) % 4 {
                    0 => b'a',
                    1 => (i % 13) as u8,
                    _ => noise(),
                })
                .collect();
            for bits in [15, 9] {
                if let Some(compressed) = deflate(&payload, bits) {
                    assert_eq!(
                        inflate(&compressed, len).unwrap(),
                        payload,
                        "round {round}, {len} bytes, window {bits}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_tail_is_put_back_and_a_final_block_is_accepted() {
        let payload = b"Hello, hello, hello, hello, hello!";
        let compressed = client_deflate(payload);
        assert_eq!(inflate(&compressed, 100).unwrap(), payload);
        // RFC 7692 §7.2.3.1's example: "Hello" as one final fixed-Huffman block.
        let example = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&example, 100).unwrap(), b"Hello");
        // A sender that did not remove the tail: one empty stored block more, harmless.
        let mut with_tail = compressed.clone();
        with_tail.extend_from_slice(&TAIL);
        assert_eq!(inflate(&with_tail, 100).unwrap(), payload);
        // The decompressor is reset between messages: the same bytes inflate again.
        assert_eq!(inflate(&compressed, 100).unwrap(), payload);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let payload = vec![b'x'; 1 << 20];
        let bomb = client_deflate(&payload);
        assert!(
            bomb.len() < 2048,
            "a megabyte of one byte is a small bomb: {}",
            bomb.len()
        );
        assert_eq!(inflate(&bomb, 4096), Err(InflateError::TooBig));
        assert_eq!(inflate(&bomb, payload.len() - 1), Err(InflateError::TooBig));
        assert_eq!(inflate(&bomb, payload.len()).unwrap().len(), payload.len());
        // Exactly at the limit is fine.
        let exact = client_deflate(&[b'y'; 4096]);
        assert_eq!(inflate(&exact, 4096).unwrap().len(), 4096);
    }

    #[test]
    fn inflating_never_holds_more_than_the_limit() {
        let bomb = client_deflate(&vec![0u8; 8 << 20]);
        let mut decompress = Decompress::new(false);
        let err = inflate_with(&mut decompress, &bomb, 10_000).unwrap_err();
        assert_eq!(err, InflateError::TooBig);
        // It stopped at the limit, not after inflating the whole bomb.
        assert!(
            decompress.total_out() <= 10_001 + 32 * 1024,
            "{}",
            decompress.total_out()
        );
    }

    #[test]
    fn broken_deflate_data_is_refused() {
        // BTYPE 11 is reserved.
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Invalid)
        );
    }
}
