//! The WebSocket framing (RFC 6455, `crates/roomcast/src/ws/`): arbitrary bytes as a client's
//! stream after the upgrade, read the way a session reads them.
//!
//! Input: one byte choosing the message limit (16 B to 2 KiB: small, so that oversized messages
//! and the skipping of their payload are common), one byte choosing the read size (1 to 255
//! bytes, or 0 for whole 8 KiB reads), then the client's bytes. `decode_frames` panics if the
//! stream ever holds more than its bounds (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, bytes @ ..] = data else {
        return;
    };
    let max_message_bytes = 16 << (limit & 7);
    let read_chunk = match chunk {
        0 => 8192,
        n => usize::from(*n),
    };
    roomcast::fuzzing::decode_frames(bytes, max_message_bytes, read_chunk);
});
