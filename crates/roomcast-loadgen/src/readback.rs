//! Reading back what the server persisted, through its HTTP API, after a `history` run.
//!
//! The WebSocket endpoint's address is also the API's (same listener, so still loopback
//! only). Two public routes are enough, and the rooms of a run are public (created by their
//! first join), so no token is sent:
//!
//! ```text
//! GET /rooms/{room}                          → {"name", "last_seq", …}
//! GET /rooms/{room}/messages?limit=200       → {"messages": [{"seq", "content", …}]}, oldest first
//! GET /rooms/{room}/messages?limit=200&before=S   the page before seq S
//! ```
//!
//! The HTTP client is hyper's HTTP/1.1 connection (already in the tree through axum): one
//! connection per request, which is all a loopback GET of JSON needs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::wire;

/// Largest page the API serves (`rooms::MAX_PAGE` on the server).
pub const PAGE: usize = 200;

/// Longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body read (a page of 200 messages of 64 KiB would be 13 MiB).
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// `GET /rooms/{room}`, the part read here.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomSummary {
    /// The seq of the room's latest message (0 when empty).
    pub last_seq: u64,
}

/// One stored message, the part read here.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredMessage {
    /// Its position in the room.
    pub seq: u64,
    /// Its text.
    pub content: String,
}

#[derive(Deserialize)]
struct MessagePage {
    messages: Vec<StoredMessage>,
}

/// The server's HTTP API at the address of its WebSocket endpoint.
#[derive(Clone)]
pub struct Api {
    addr: SocketAddr,
    /// A valid access token for the server.
    token: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of debug output.
        f.debug_struct("Api")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API at `addr` (loopback: it comes from a checked [`crate::target::Endpoint`]),
    /// called with `token`.
    pub fn new(addr: SocketAddr, token: String) -> Self {
        Self { addr, token }
    }

    /// The room's summary.
    ///
    /// # Errors
    ///
    /// The request failed, the status was not 200, or the body was not a room.
    pub async fn room(&self, room: &str) -> anyhow::Result<RoomSummary> {
        let body = self.get(&format!("/rooms/{room}")).await?;
        serde_json::from_slice(&body).with_context(|| format!("GET /rooms/{room}: not a room"))
    }

    /// Up to [`PAGE`] messages of `room` with a seq below `before` (the latest when `None`),
    /// oldest first.
    ///
    /// # Errors
    ///
    /// As [`Api::room`].
    pub async fn messages(
        &self,
        room: &str,
        before: Option<u64>,
    ) -> anyhow::Result<Vec<StoredMessage>> {
        let path = match before {
            Some(seq) => format!("/rooms/{room}/messages?limit={PAGE}&before={seq}"),
            None => format!("/rooms/{room}/messages?limit={PAGE}"),
        };
        let body = self.get(&path).await?;
        let page: MessagePage =
            serde_json::from_slice(&body).with_context(|| format!("GET {path}: not a page"))?;
        Ok(page.messages)
    }

    /// `GET path`; the body of a 200.
    async fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.get_inner(path))
            .await
            .with_context(|| format!("GET {path}: no answer in {REQUEST_TIMEOUT:?}"))?
    }

    async fn get_inner(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|err| anyhow::anyhow!("GET {path}: reading the body: {err}"))?
            .to_bytes();
        drop(sender);
        let _ = connection.await;
        if status != hyper::StatusCode::OK {
            bail!(
                "GET {path}: status {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body.to_vec())
    }
}

/// What one room's read-back found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RoomReadback {
    /// The room's `last_seq` as the API reports it.
    pub last_seq: u64,
    /// Stored messages read back (the latest ones, up to the cap).
    pub read: u64,
    /// Of those, messages whose seq and content match the ack the sender got.
    pub matched: u64,
    /// Messages read whose seq was acked for another message, or not acked at all.
    pub mismatched: u64,
}

/// Reads back `room`: its `last_seq`, then pages of its latest messages (newest page first)
/// until `cap` messages were read or the room's start was reached. Each stored message must
/// sit at the seq its sender was acked for: `acked` maps seq to `(publisher, counter)`,
/// sorted by seq.
///
/// # Errors
///
/// A request that failed.
pub async fn verify_room(
    api: &Api,
    room: &str,
    acked: &[(u64, u32, u64)],
    cap: u64,
) -> anyhow::Result<RoomReadback> {
    let mut out = RoomReadback {
        last_seq: api.room(room).await?.last_seq,
        ..RoomReadback::default()
    };
    let mut before = None;
    while out.read < cap {
        let page = api.messages(room, before).await?;
        let Some(oldest) = page.first().map(|m| m.seq) else {
            break;
        };
        for message in page.iter().rev().take((cap - out.read) as usize) {
            out.read += 1;
            if matches_ack(message, acked) {
                out.matched += 1;
            } else {
                out.mismatched += 1;
            }
        }
        if oldest <= 1 || page.len() < PAGE {
            break;
        }
        before = Some(oldest);
    }
    Ok(out)
}

/// Whether the message stored at `message.seq` is the one whose ack carried that seq.
fn matches_ack(message: &StoredMessage, acked: &[(u64, u32, u64)]) -> bool {
    let Some(id) = wire::content_id(&message.content) else {
        return false;
    };
    acked
        .binary_search_by_key(&message.seq, |&(seq, _, _)| seq)
        .is_ok_and(|i| acked[i].1 == id.publisher && acked[i].2 == id.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_message_matches_only_its_own_ack() {
        let acked = [(1, 0, 0), (2, 1, 0), (3, 0, 1)];
        let stored = |seq: u64, content: &str| StoredMessage {
            seq,
            content: content.to_owned(),
        };
        assert!(matches_ack(&stored(2, "lg:1:0:99:xx"), &acked));
        assert!(
            !matches_ack(&stored(2, "lg:0:1:99:xx"), &acked),
            "wrong seq"
        );
        assert!(
            !matches_ack(&stored(4, "lg:0:2:99:xx"), &acked),
            "never acked"
        );
        assert!(!matches_ack(&stored(1, "hello"), &acked), "not ours");
    }
}
