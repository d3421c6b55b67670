//! [`TestClient`]: a WebSocket client over loopback whose every wait is bounded by [`WAIT`] and
//! fails saying what it expected.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

/// A WebSocket client over loopback. Every wait is bounded by [`WAIT`] and fails saying what it
/// expected; `label` names the client in those messages.
pub(crate) struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The handshake response (status 101 and its headers).
    pub(crate) response: Response,
    label: String,
}

impl TestClient {
    /// Opens a connection to `request` (a URL or a built request). The handshake must succeed;
    /// refusals arrive afterwards as close frames.
    pub(crate) async fn connect(request: impl IntoClientRequest + Unpin, label: &str) -> Self {
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .unwrap_or_else(|_| panic!("{label}: expected the handshake within {WAIT:?}"))
            .unwrap_or_else(|err| panic!("{label}: expected the handshake to succeed: {err}"));
        Self {
            ws,
            response,
            label: label.to_owned(),
        }
    }

    /// Connects to `url` with `Sec-WebSocket-Protocol: <protocols>`.
    pub(crate) async fn connect_with_protocols(url: &str, protocols: &str, label: &str) -> Self {
        let mut request = url.into_client_request().expect("a valid ws:// URL");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).expect("protocols are a valid header value"),
        );
        Self::connect(request, label).await
    }

    pub(crate) async fn send_json(&mut self, value: &Value) {
        self.send(Message::text(value.to_string())).await;
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub(crate) async fn send_binary(&mut self, bytes: &[u8]) {
        self.send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await;
    }

    async fn send(&mut self, message: Message) {
        let label = &self.label;
        tokio::time::timeout(WAIT, self.ws.send(message))
            .await
            .unwrap_or_else(|_| panic!("{label}: expected to send within {WAIT:?}"))
            .unwrap_or_else(|err| panic!("{label}: expected to send: {err}"));
    }

    /// The next data message, skipping protocol pings and pongs.
    async fn next_data(&mut self, expected: &str) -> Result<Message, String> {
        let label = &self.label;
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{label}: expected {expected} within {WAIT:?}"));
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(message)) => return Ok(message),
                Some(Err(err)) => return Err(format!("the connection failed: {err}")),
                None => return Err("the connection ended".to_owned()),
            }
        }
    }

    /// The next message, which must be a JSON text frame.
    pub(crate) async fn recv_json(&mut self) -> Value {
        let label = self.label.clone();
        match self.next_data("a JSON message").await {
            Ok(Message::Text(text)) => serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{label}: expected JSON, got {text:?}: {err}")),
            Ok(Message::Close(frame)) => {
                panic!("{label}: expected a JSON message, the server closed: {frame:?}")
            }
            Ok(other) => panic!("{label}: expected a JSON text message, got {other:?}"),
            Err(err) => panic!("{label}: expected a JSON message, {err}"),
        }
    }

    /// The next message, which must be a binary frame.
    pub(crate) async fn recv_binary(&mut self) -> Vec<u8> {
        let label = self.label.clone();
        match self.next_data("a binary message").await {
            Ok(Message::Binary(bytes)) => bytes.to_vec(),
            Ok(other) => panic!("{label}: expected a binary message, got {other:?}"),
            Err(err) => panic!("{label}: expected a binary message, {err}"),
        }
    }

    /// The next message, which must be a close frame with `code`. Returns its reason, once the
    /// close handshake has finished (the client's reply is written on its next read).
    pub(crate) async fn expect_close(&mut self, code: u16) -> String {
        let label = self.label.clone();
        let expected = format!("a close frame with code {code}");
        match self.next_data(&expected).await {
            Ok(Message::Close(Some(CloseFrame { code: got, reason }))) => {
                assert_eq!(
                    u16::from(got),
                    code,
                    "{label}: expected close code {code}, got {got} ({reason})"
                );
                tokio::time::timeout(WAIT, async {
                    while let Some(Ok(_)) = self.ws.next().await {}
                })
                .await
                .unwrap_or_else(|_| {
                    panic!("{label}: expected the connection to end after the close")
                });
                reason.to_string()
            }
            Ok(Message::Close(None)) => {
                panic!("{label}: expected close code {code}, got a close frame without a code")
            }
            Ok(other) => panic!("{label}: expected {expected}, got {other:?}"),
            Err(err) => panic!("{label}: expected {expected}, {err} without one"),
        }
    }

    /// Fails if a data message (or a close) arrives within `duration`.
    pub(crate) async fn expect_silence(&mut self, duration: Duration) {
        let label = &self.label;
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                Ok(other) => panic!("{label}: expected nothing for {duration:?}, got {other:?}"),
            }
        }
    }

    /// Closes with 1000 and waits for the server's answering close frame and the end of the
    /// connection.
    pub(crate) async fn close(mut self) {
        let normal = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        self.send(Message::Close(Some(normal))).await;
        self.expect_close(1000).await;
    }
}
