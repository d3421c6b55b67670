//! permessage-deflate (`WEBSOCKET_COMPRESSION=true`): negotiation, compressed round trips on
//! `/ws/echo` and in a native room, the inflated-size cap (1009) and RSV1 without negotiation
//! (1002). tokio-tungstenite does not speak permessage-deflate, so the compressing client here
//! is written out over a raw TCP stream, with flate2 for its deflate.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const RSV1: u8 = 0x40;

/// What RFC 7692 §7.2.1 removes from each compressed message.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Raw deflate with a sync flush, the tail removed: a compressed message's payload.
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    loop {
        let at = usize::try_from(compress.total_in()).unwrap();
        compress
            .compress_vec(&payload[at..], &mut out, FlushCompress::Sync)
            .unwrap();
        if compress.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

/// The tail put back, then inflated.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut decompress = Decompress::new(false);
    let mut out = Vec::with_capacity(64 * 1024);
    decompress
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's deflate data inflates");
    assert_eq!(decompress.total_in() as usize, input.len(), "all of it");
    out
}

/// A message from the server.
#[derive(Debug)]
struct Received {
    /// RSV1 was set: it came compressed.
    compressed: bool,
    opcode: u8,
    /// Inflated when it came compressed.
    payload: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        assert_eq!(self.opcode, TEXT, "a text frame: {self:?}");
        serde_json::from_slice(&self.payload).expect("JSON")
    }
}

/// A WebSocket client that speaks permessage-deflate, over a raw TCP stream.
struct DeflateClient {
    tcp: TcpStream,
    buffer: Vec<u8>,
    /// The server's `Sec-WebSocket-Extensions`, if it sent one.
    extensions: Option<String>,
}

impl DeflateClient {
    /// Upgrades `path` offering `offer` (`None`: no `Sec-WebSocket-Extensions` at all).
    async fn connect(server: &TestServer, path: &str, offer: Option<&str>) -> Self {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let offer = offer.map_or(String::new(), |offer| {
            format!("Sec-WebSocket-Extensions: {offer}\r\n")
        });
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = timeout(WAIT, tcp.read(&mut byte))
                .await
                .expect("the response head in time")
                .unwrap();
            assert_eq!(read, 1, "closed during the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        Self {
            tcp,
            buffer: Vec::new(),
            extensions,
        }
    }

    /// Sends one masked frame whose first byte is `first` (FIN, RSV bits, opcode).
    async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mask = [0x5a, 0x13, 0xc7, 0x08];
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// Sends a message in one frame, compressed.
    async fn send_compressed(&mut self, opcode: u8, payload: &[u8]) {
        self.send_frame(0x80 | RSV1 | opcode, &deflate(payload))
            .await;
    }

    async fn fill(&mut self, at_least: usize) -> bool {
        while self.buffer.len() < at_least {
            let mut chunk = [0u8; 8192];
            let read = timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("the server's frame in time")
                .unwrap_or(0);
            if read == 0 {
                return false;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        true
    }

    /// The next message (the server sends each in one frame).
    async fn recv(&mut self) -> Received {
        assert!(self.fill(2).await, "a frame, not the end of the connection");
        let (b0, b1) = (self.buffer[0], self.buffer[1]);
        assert_eq!(b0 & 0x80, 0x80, "final");
        assert_eq!(b1 & 0x80, 0, "unmasked");
        assert_eq!(b0 & 0x30, 0, "RSV2 and RSV3 clear");
        let (len, at) = match b1 & 0x7f {
            126 => {
                assert!(self.fill(4).await);
                (
                    usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                    4,
                )
            }
            127 => {
                assert!(self.fill(10).await);
                let len = u64::from_be_bytes(self.buffer[2..10].try_into().unwrap());
                (usize::try_from(len).unwrap(), 10)
            }
            len => (usize::from(len), 2),
        };
        assert!(self.fill(at + len).await, "closed inside a frame");
        let raw: Vec<u8> = self.buffer.drain(..at + len).skip(at).collect();
        let compressed = b0 & RSV1 != 0;
        let opcode = b0 & 0x0f;
        assert!(
            !(compressed && opcode >= CLOSE),
            "control frames are never compressed"
        );
        let payload = if compressed { inflate(&raw) } else { raw };
        Received {
            compressed,
            opcode,
            payload,
        }
    }

    /// The next message of type `kind` (native envelopes), skipping others.
    async fn recv_type(&mut self, kind: &str) -> (bool, Value) {
        loop {
            let received = self.recv().await;
            let value = received.json();
            if value["type"] == kind {
                return (received.compressed, value);
            }
        }
    }

    /// Expects a close frame with `code`.
    async fn expect_close(&mut self, code: u16) {
        let frame = self.recv().await;
        assert_eq!(frame.opcode, CLOSE, "a close frame: {frame:?}");
        assert_eq!(
            u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
            code
        );
    }
}

async fn echo_server(compression: bool) -> TestServer {
    TestServer::start_with(|config| {
        config.echo_endpoint = true;
        config.session.max_message_bytes = 64 * 1024;
        config.session.compression = compression;
    })
    .await
}

const ACCEPTED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[tokio::test]
async fn compression_is_negotiated_without_context_takeover_when_enabled_and_offered() {
    let server = echo_server(true).await;
    for (offer, answer) in [
        // What browsers offer.
        (
            Some("permessage-deflate; client_max_window_bits"),
            Some(ACCEPTED.to_owned()),
        ),
        (Some("permessage-deflate"), Some(ACCEPTED.to_owned())),
        (
            Some("permessage-deflate; server_max_window_bits=10; client_no_context_takeover"),
            Some(format!("{ACCEPTED}; server_max_window_bits=10")),
        ),
        // The first offer it can honour.
        (
            Some("permessage-deflate; server_max_window_bits=99, permessage-deflate"),
            Some(ACCEPTED.to_owned()),
        ),
        // No offer, another extension, a malformed offer: no extension, not an error.
        (None, None),
        (Some("x-webkit-deflate-frame"), None),
        (Some("permessage-deflate; server_max_window_bits"), None),
        (Some("permessage-deflate; bogus=1"), None),
    ] {
        let client = DeflateClient::connect(&server, "/ws/echo", offer).await;
        assert_eq!(client.extensions, answer, "offer {offer:?}");
    }
    let off = echo_server(false).await;
    let client = DeflateClient::connect(&off, "/ws/echo", Some("permessage-deflate")).await;
    assert_eq!(
        client.extensions, None,
        "WEBSOCKET_COMPRESSION is off by default"
    );
}

#[tokio::test]
async fn a_compressed_message_goes_round_the_echo_endpoint() {
    let server = echo_server(true).await;
    let mut client = DeflateClient::connect(&server, "/ws/echo", Some("permessage-deflate")).await;
    let text = "héllo, compressed wörld; ".repeat(40);
    client.send_compressed(TEXT, text.as_bytes()).await;
    let echoed = client.recv().await;
    assert!(echoed.compressed, "a long echo is compressed");
    assert_eq!((echoed.opcode, echoed.payload), (TEXT, text.into_bytes()));

    // Binary, and in fragments: RSV1 on the first frame only.
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    let deflated = deflate(&bytes);
    let (head, tail) = deflated.split_at(deflated.len() / 2);
    client.send_frame(RSV1 | BINARY, head).await;
    client.send_frame(0x80 | CONTINUATION, tail).await;
    let echoed = client.recv().await;
    assert!(echoed.compressed);
    assert_eq!((echoed.opcode, echoed.payload), (BINARY, bytes));

    // A short message comes back plain (RSV1 clear), compressed or not on the way in.
    client.send_compressed(TEXT, b"hi").await;
    let echoed = client.recv().await;
    assert!(!echoed.compressed, "under the threshold: plain");
    assert_eq!(echoed.payload, b"hi");
    client.send_frame(0x80 | TEXT, b"plain in").await;
    assert_eq!(client.recv().await.payload, b"plain in");
}

#[tokio::test]
async fn a_native_room_receives_a_broadcast_compressed_and_a_plain_member_plainly() {
    let server = TestServer::start_with(|config| config.session.compression = true).await;
    let mut members = Vec::new();
    for user in ["ann", "bob", "cid"] {
        let token = server.user_token(user).await;
        let path = format!("/ws?token={token}");
        let mut client = DeflateClient::connect(&server, &path, Some("permessage-deflate")).await;
        assert_eq!(client.extensions.as_deref(), Some(ACCEPTED));
        client
            .send_frame(0x80 | TEXT, br#"{"type":"join","room":"lobby"}"#)
            .await;
        client.recv_type("user_list").await;
        members.push(client);
    }
    let mut plain = server.connect_as("/ws", "dan").await;
    plain.join("lobby").await;

    let content = "a message long enough to be worth compressing, ".repeat(6);
    let message = json!({"type": "message", "room": "lobby", "content": content});
    members[0]
        .send_compressed(TEXT, message.to_string().as_bytes())
        .await;
    for member in &mut members {
        let (compressed, received) = member.recv_type("message").await;
        assert!(
            compressed,
            "a long broadcast reaches a compressing member compressed"
        );
        assert_eq!(received["content"], content.as_str());
        assert_eq!(received["user_id"], "ann");
    }
    let received = plain.recv_type("message").await;
    assert_eq!(received["content"], content.as_str());
}

#[tokio::test]
async fn a_zip_bomb_is_closed_with_1009_before_it_is_inflated() {
    let server = TestServer::start_with(|config| {
        config.echo_endpoint = true;
        config.session.max_message_bytes = 4096;
        config.session.compression = true;
    })
    .await;
    let mut client = DeflateClient::connect(&server, "/ws/echo", Some("permessage-deflate")).await;
    // 16 MiB of zeros: ~16 KB on the wire, well under the 4 KiB limit... inflated 4096 times
    // over. A message at the limit still passes.
    let bomb = deflate(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    client.send_compressed(BINARY, &vec![7u8; 4096]).await;
    assert_eq!(client.recv().await.payload.len(), 4096);
    client.send_frame(0x80 | RSV1 | BINARY, &bomb).await;
    client.expect_close(1009).await;
}

#[tokio::test]
async fn rsv1_without_negotiation_closes_with_1002() {
    for compression in [false, true] {
        let server = echo_server(compression).await;
        let mut client = DeflateClient::connect(&server, "/ws/echo", None).await;
        assert_eq!(client.extensions, None);
        client.send_compressed(TEXT, b"hello hello hello").await;
        client.expect_close(1002).await;
    }
    // Negotiated, but on a control frame.
    let server = echo_server(true).await;
    let mut client = DeflateClient::connect(&server, "/ws/echo", Some("permessage-deflate")).await;
    client.send_frame(0x80 | RSV1 | 0x9, b"").await;
    client.expect_close(1002).await;
}

#[tokio::test]
async fn the_plain_client_is_unaffected_by_compression_being_on() {
    let server = echo_server(true).await;
    let mut client = server.connect("/ws/echo").await;
    let text = "x".repeat(1000);
    client.send_text(&text).await;
    assert_eq!(client.recv().await, Message::text(text));
}
