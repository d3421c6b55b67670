//! The native dialect's client frames (seed 002's envelope): `protocol::native::decode` on
//! arbitrary UTF-8, and the error text a refusal is answered with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::native::{DecodeError, decode};

fuzz_target!(|text: &str| {
    match decode(text) {
        Ok(request) => drop(format!("{request:?}")),
        Err(err) => {
            let message = err.to_string();
            if let DecodeError::UnknownType(kind) = &err {
                // Clipped to 64 bytes on a character boundary before it is echoed.
                assert!(kind.len() <= 64, "{message}");
            }
        }
    }
});
