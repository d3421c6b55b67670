//! Integration tests of `roomcast serve`: a real server on an ephemeral loopback port, real
//! WebSocket clients. One binary (link time on 2 cores), one module per area.

// Test helpers are `pub` for the sibling modules, not an API.
#![allow(unreachable_pub, missing_docs)]
mod abuse;
mod admin;
mod api;
mod auth;
mod channels;
mod cluster;
mod common;
mod compression;
mod dialects;
mod expiry;
mod heartbeat;
mod history;
mod lifecycle;
mod limits;
mod metrics;
mod native;
mod ops;
mod postgres;
mod presence;
mod redis_batching;
mod token_chat;
