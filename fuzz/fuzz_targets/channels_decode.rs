//! The Channels dialect's client frames (seed 004): `protocol::channels::decode`.
//!
//! Input: one byte for `max_chars` (`0`: no bound), then the frame's text (UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::channels::decode;

fuzz_target!(|data: &[u8]| {
    let [max_chars, text @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let max_chars = usize::from(*max_chars);
    match decode(text, max_chars) {
        Ok(message) => {
            assert!(!message.trim().is_empty(), "a blank message was accepted");
            assert!(
                max_chars == 0 || message.chars().count() <= max_chars,
                "a message over {max_chars} characters was accepted"
            );
        }
        Err(err) => drop(err.to_string()),
    }
});
