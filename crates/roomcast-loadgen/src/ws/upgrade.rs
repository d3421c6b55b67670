//! The upgrade: the client's HTTP request and the check of the server's answer.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError, UrlError};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::{Error, http};

use super::READ_CHUNK;

/// Largest HTTP response head to the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Sends the upgrade request for `url` (`ws://host[:port]/path[?query]`) and reads the
/// response. Returns the key it sent and what came after the response head (the server's
/// first frames, if any).
pub(super) async fn handshake(io: &mut TcpStream, url: &str) -> Result<(String, BytesMut), Error> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or(Error::Url(UrlError::UnsupportedUrlScheme))?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await?;
    let mut read = BytesMut::with_capacity(READ_CHUNK);
    let head_len = loop {
        if let Some(at) = memchr::memmem::find(&read, b"\r\n\r\n") {
            break at + 4;
        }
        if read.len() >= MAX_RESPONSE_HEAD {
            return Err(Error::Capacity(CapacityError::TooManyHeaders));
        }
        if io.read_buf(&mut read).await? == 0 {
            return Err(Error::Protocol(ProtocolError::HandshakeIncomplete));
        }
    };
    let head = read.split_to(head_len);
    check_response(&head, &derive_accept_key(key.as_bytes()))?;
    Ok((key, read))
}

/// Checks the upgrade's response head: status `101` and the accept key for our key.
fn check_response(head: &[u8], accept: &str) -> Result<(), Error> {
    let text = std::str::from_utf8(head)
        .map_err(|_| Error::Protocol(ProtocolError::HandshakeIncomplete))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(Error::Protocol(ProtocolError::HandshakeIncomplete))?;
    if status != 101 {
        let response = http::Response::builder()
            .status(status)
            .body(None)
            .map_err(Error::HttpFormat)?;
        return Err(Error::Http(Box::new(response)));
    }
    let accepted = lines
        .filter_map(|line| line.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
        });
    if accepted {
        Ok(())
    } else {
        Err(Error::Protocol(
            ProtocolError::SecWebSocketAcceptKeyMismatch,
        ))
    }
}
