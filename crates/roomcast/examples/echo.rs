//! Seed 000's `MyWebSocket`: every message a client sends comes back as `{"echo": <message>}`.
//!
//! Run it with the secret your tokens are signed with (HS256):
//!
//! ```text
//! export JWT_SECRET=change-me-to-a-secret-of-at-least-32-bytes
//! cargo run -p roomcast --example echo            # listens on 127.0.0.1:8080 (PORT=… to change)
//! ```
//!
//! Mint a token with the same secret and connect, e.g. with websocat:
//!
//! ```text
//! TOKEN=$(ROOMCAST_JWT_SECRET=$JWT_SECRET cargo run -q -p roomcast-server -- token --sub alice)
//! websocat "ws://127.0.0.1:8080/ws?token=$TOKEN"
//! {"hello": "world"}                 ← you type
//! {"echo":{"hello":"world"}}         ← the server answers
//! ```
//!
//! A text message that is JSON is echoed as JSON, any other text as a string; a binary message
//! comes back as the same bytes. Without a valid token the connection is closed with 4001.

use anyhow::Context;
use roomcast::{Authenticator, Handler, Hub, Incoming, Session, SessionConfig};
use serde_json::{Value, json};

/// The handler: only `on_message`; `on_connect` and `on_disconnect` keep their defaults.
struct Echo;

impl Handler for Echo {
    async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
        match &msg {
            Incoming::Text(text) => {
                // Seed 000 echoes the decoded message; plain text is echoed as a string.
                let message = serde_json::from_str::<Value>(text)
                    .unwrap_or_else(|_| Value::String(text.to_string()));
                cx.send_json(&json!({ "echo": message }))
            }
            // Bytes are not JSON: send them back as they came (sharing the buffer).
            Incoming::Binary(_) => Ok(cx.send(msg.to_frame())?),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("JWT_SECRET").context(
        "JWT_SECRET is not set: export the HS256 secret your tokens are signed with \
         (at least 32 bytes), e.g. JWT_SECRET=change-me-to-a-secret-of-at-least-32-bytes",
    )?;
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .with_context(|| format!("PORT: expected a port number like 8080, got {port:?}"))?,
        Err(_) => 8080,
    };

    let hub = Hub::new(SessionConfig::default());
    let auth = Authenticator::hs256(secret);
    let app = axum::Router::new().route("/ws", roomcast::route(hub, auth, Echo));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("PORT: cannot listen on 127.0.0.1:{port}"))?;
    println!("echo: ws://{}/ws?token=<jwt>", listener.local_addr()?);
    axum::serve(listener, app).await.context("serving")
}
