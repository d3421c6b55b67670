//! History, acks, idempotent retries and resume in the native dialect; crash safety.
