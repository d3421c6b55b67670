//! roomcast's integration tests: real WebSocket clients over loopback against the library's
//! route and hub, one module per behaviour. One binary, so the suite links once.
//!
//! [`common`] holds the test server, the probe handler, token helpers and the client.

mod common;

mod auth;
mod frames;
mod heartbeats;
mod hooks;
mod hub_queries;
mod limits;
mod multi_node;
mod origins;
mod path_params;
mod room_announcements;
mod sends;
mod shutdown;
mod subprotocol;
