//! RFC 6455 on the wire: a raw TCP client writes frames byte by byte as it likes (fragments,
//! control frames between them, broken frames) and reads the server's frames back. Client
//! libraries cannot send most of these, so the handshake and framing here are written out.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{TestServer, WAIT, token};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A WebSocket client with nothing between the test and the bytes.
struct RawClient {
    tcp: TcpStream,
    /// Bytes read past the last frame returned.
    buffer: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug)]
struct ServerFrame {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl ServerFrame {
    fn json(&self) -> Value {
        assert_eq!(self.opcode, TEXT, "expected a text frame, got {self:?}");
        serde_json::from_slice(&self.payload).expect("the server sends JSON")
    }

    fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, CLOSE, "expected a close frame, got {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

/// Sends `request` (the request line and headers, without the blank line) and returns the
/// response head.
async fn http_exchange(server: &TestServer, request: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(format!("{request}\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("the response head arrives in time")
            .expect("read the response");
        assert_eq!(read, 1, "connection closed during the response head");
        head.push(byte[0]);
    }
    (
        tcp,
        String::from_utf8(head).expect("an ASCII response head"),
    )
}

fn upgrade_request(server: &TestServer, user: &str) -> String {
    format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        token(user),
        server.addr
    )
}

impl RawClient {
    /// Connects as `user` and reads the probe's welcome.
    async fn connect(server: &TestServer, user: &str) -> Self {
        let (tcp, head) = http_exchange(server, &upgrade_request(server, user)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "the RFC 6455 §1.3 accept key: {head}"
        );
        let mut client = Self {
            tcp,
            buffer: Vec::new(),
        };
        assert_eq!(client.recv().await.json()["type"], "welcome");
        client
    }

    /// Writes one frame, masked as a client must (unless `masked` is false).
    async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.send_raw(&frame).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.tcp
            .write_all(bytes)
            .await
            .expect("write to the server");
    }

    async fn fill(&mut self, at_least: usize) -> bool {
        while self.buffer.len() < at_least {
            let mut chunk = [0u8; 4096];
            let read = timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("the server's frame arrives in time")
                .unwrap_or(0);
            if read == 0 {
                return false;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        true
    }

    /// The next frame, or `None` once the server closed the TCP connection.
    async fn try_recv(&mut self) -> Option<ServerFrame> {
        if !self.fill(2).await {
            return None;
        }
        let (b0, b1) = (self.buffer[0], self.buffer[1]);
        let (len, at) = match b1 & 0x7F {
            126 => {
                assert!(self.fill(4).await);
                (
                    u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                    4,
                )
            }
            127 => {
                assert!(self.fill(10).await);
                let bytes: [u8; 8] = self.buffer[2..10].try_into().unwrap();
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            len => (len as usize, 2),
        };
        assert!(
            self.fill(at + len).await,
            "connection closed inside a frame"
        );
        let payload = self.buffer[at..at + len].to_vec();
        self.buffer.drain(..at + len);
        Some(ServerFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            masked: b1 & 0x80 != 0,
            payload,
        })
    }

    async fn recv(&mut self) -> ServerFrame {
        let frame = self.try_recv().await.expect("a frame, not the end");
        assert!(
            frame.fin && !frame.masked,
            "server frames are final and unmasked"
        );
        frame
    }

    /// Expects a close frame with `code`, answers it, and expects the TCP connection to end.
    async fn expect_close(&mut self, code: u16) {
        let frame = self.recv().await;
        assert_eq!(frame.close_code(), code, "close reason: {frame:?}");
        self.send(true, CLOSE, &frame.payload[..2], true).await;
        assert!(
            self.try_recv().await.is_none(),
            "the server ends the connection after the closing handshake"
        );
    }
}

#[tokio::test]
async fn a_fragmented_message_with_a_ping_between_its_fragments_is_assembled() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(&server, "alice").await;

    client.send(false, TEXT, "frag".as_bytes(), true).await;
    client.send(true, PING, b"are you there", true).await;
    client
        .send(false, CONTINUATION, "men".as_bytes(), true)
        .await;
    // A character split between two fragments.
    let e_acute = "é".as_bytes();
    client.send(false, CONTINUATION, &e_acute[..1], true).await;
    client.send(true, CONTINUATION, &e_acute[1..], true).await;

    let pong = client.recv().await;
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"are you there"[..])
    );
    let got = client.recv().await.json();
    assert_eq!(
        (got["kind"].as_str(), got["payload"].as_str()),
        (Some("text"), Some("fragmené"))
    );
}

#[tokio::test]
async fn large_and_binary_messages_round_trip() {
    let server = TestServer::start().await;
    let mut client = RawClient::connect(&server, "alice").await;

    // 126..65535 bytes: the 16-bit length form, each way.
    let text = "y".repeat(3000);
    client.send(true, TEXT, text.as_bytes(), true).await;
    let got = client.recv().await.json();
    assert_eq!(got["payload"].as_str(), Some(text.as_str()));

    client.send(true, BINARY, &[0, 159, 255], true).await;
    assert_eq!(
        client.recv().await.json()["payload"],
        serde_json::json!([0, 159, 255])
    );
}

#[tokio::test]
async fn broken_frames_close_with_1002_and_bad_text_with_1007() {
    let server = TestServer::start().await;
    let cases: [(&str, u16, Vec<u8>); 5] = [
        // (what, expected code, raw bytes); masked frames use a zero mask for brevity.
        ("an unmasked frame", 1002, vec![0x81, 0x02, b'h', b'i']),
        ("a reserved bit", 1002, vec![0xC1, 0x80, 0, 0, 0, 0]),
        ("an unknown opcode", 1002, vec![0x83, 0x80, 0, 0, 0, 0]),
        (
            "a continuation without a message",
            1002,
            vec![0x80, 0x80, 0, 0, 0, 0],
        ),
        (
            "invalid UTF-8",
            1007,
            vec![0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28],
        ),
    ];
    for (what, code, bytes) in cases {
        let mut client = RawClient::connect(&server, "alice").await;
        client.send_raw(&bytes).await;
        let frame = client.recv().await;
        assert_eq!(frame.close_code(), code, "{what}: {frame:?}");
        assert!(
            client.try_recv().await.is_none(),
            "{what}: the server ends the connection"
        );
    }
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_message_over_the_limit_in_fragments_closes_with_1009_and_the_handshake_completes() {
    let config = roomcast::SessionConfig {
        max_message_bytes: 100,
        ..roomcast::SessionConfig::default()
    };
    let server = TestServer::builder()
        .hub(roomcast::Hub::new(config))
        .start()
        .await;
    let mut client = RawClient::connect(&server, "alice").await;
    client.send(false, TEXT, &[b'a'; 60], true).await;
    client.send(true, CONTINUATION, &[b'a'; 60], true).await;
    client.expect_close(1009).await;
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_client_close_is_echoed_with_its_code() {
    let mut server = TestServer::start().await;
    let mut client = RawClient::connect(&server, "alice").await;
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done here");
    client.send(true, CLOSE, &payload, true).await;
    let echo = client.recv().await;
    assert_eq!(echo.close_code(), 4321);
    assert!(
        client.try_recv().await.is_none(),
        "then the server hangs up"
    );
    let gone = server.disconnected().await;
    assert_eq!(gone.reason.code(), 4321);
    assert_eq!(gone.reason.reason(), "done here");
}

#[tokio::test]
async fn requests_that_are_not_websocket_upgrades_get_an_http_error() {
    let server = TestServer::start().await;
    let valid = upgrade_request(&server, "alice");
    let cases = [
        (
            "no key",
            valid.replace("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", ""),
            "400",
        ),
        (
            "version 8",
            valid.replace("Version: 13", "Version: 8"),
            "426",
        ),
        (
            "no upgrade header",
            valid.replace("Upgrade: websocket\r\n", ""),
            "400",
        ),
        ("a POST", valid.replacen("GET", "POST", 1), "405"),
    ];
    for (what, request, status) in cases {
        let (_tcp, head) = http_exchange(&server, &request).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {head}"
        );
        if status == "426" {
            assert!(
                head.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{head}"
            );
        }
    }
    // None of them became a connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.hub.stats().accepted_total, 0);
}

/// A server writing at most every `interval` whatever its load (`write_interval_rate` 0: the
/// full interval at any rate), alice connected to it, and a frame "b" queued for her. The
/// welcome was the connection's first write: nothing came before it, so it left at once
/// (`connect` reads it); "b", queued within `interval` of it, waits out the interval.
async fn a_frame_waiting(interval: Duration) -> (TestServer, RawClient, roomcast::UserId) {
    let config = roomcast::SessionConfig {
        write_interval: interval,
        write_interval_rate: 0,
        ..roomcast::SessionConfig::default()
    };
    let server = TestServer::builder()
        .hub(roomcast::Hub::new(config))
        .start()
        .await;
    let client = RawClient::connect(&server, "alice").await;
    let alice = roomcast::UserId::from("alice");
    assert_eq!(server.hub.send_to(&alice, "b").await.unwrap(), 1);
    (server, client, alice)
}

/// Reads exactly what one read returns: it returns as soon as anything arrives, so a frame
/// that left on its own comes alone.
async fn one_read(client: &mut RawClient) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    let read = timeout(WAIT, client.tcp.read(&mut chunk))
        .await
        .expect("the queued frames arrive in time")
        .expect("read from the server");
    chunk[..read].to_vec()
}

#[tokio::test]
async fn frames_queued_within_the_write_interval_leave_together_in_one_write() {
    let (server, mut client, alice) = a_frame_waiting(Duration::from_millis(800)).await;
    let hub = server.hub.clone();
    let later = tokio::spawn(async move {
        // Queued after "b" has been waiting a while: written at once, "b" would be gone.
        tokio::time::sleep(Duration::from_millis(150)).await;
        hub.send_to(&alice, "c").await.unwrap()
    });
    assert_eq!(
        one_read(&mut client).await,
        [0x81, 1, b'b', 0x81, 1, b'c'],
        "both frames in one write"
    );
    assert_eq!(later.await.unwrap(), 1);
}

/// A server whose full write interval is a second, reached at `write_interval_rate`
/// deliveries a second over the whole hub; alice connected to it (the welcome was her first
/// write).
async fn paced_by_the_load(write_interval_rate: u64) -> (TestServer, RawClient) {
    let config = roomcast::SessionConfig {
        write_interval: Duration::from_secs(1),
        write_interval_rate,
        ..roomcast::SessionConfig::default()
    };
    let server = TestServer::builder()
        .hub(roomcast::Hub::new(config))
        .start()
        .await;
    let client = RawClient::connect(&server, "alice").await;
    (server, client)
}

#[tokio::test]
async fn at_light_load_a_frame_right_after_a_write_leaves_at_once() {
    // A million deliveries a second for the full interval; this hub makes a handful.
    let (server, mut client) = paced_by_the_load(1_000_000).await;
    let alice = roomcast::UserId::from("alice");
    // Queued right after the welcome, well within the (full) interval of that write: paced by
    // a fixed interval it would wait a second; at this load the interval is microseconds.
    server.hub.send_to(&alice, "b").await.unwrap();
    let b = timeout(WELL_BEFORE_THE_INTERVAL, client.recv())
        .await
        .expect("at light load a frame is not held back");
    assert_eq!((b.opcode, b.payload.as_slice()), (TEXT, &b"b"[..]));
}

#[tokio::test]
async fn under_load_frames_wait_out_the_interval_and_leave_together() {
    // One delivery a second already calls for the full interval.
    let (server, mut client) = paced_by_the_load(1).await;
    let _bob = RawClient::connect(&server, "bob").await;
    // The hub is busy: a delivery to bob sets the pace before alice's frames are queued.
    let bob = roomcast::UserId::from("bob");
    assert_eq!(server.hub.send_to(&bob, "busy").await.unwrap(), 1);
    let alice = roomcast::UserId::from("alice");
    server.hub.send_to(&alice, "b").await.unwrap();
    let hub = server.hub.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        hub.send_to(&alice, "c").await.unwrap()
    });
    assert_eq!(
        one_read(&mut client).await,
        [0x81, 1, b'b', 0x81, 1, b'c'],
        "both frames in one write, as with a fixed interval"
    );
    assert_eq!(later.await.unwrap(), 1);
}

/// Held by the write interval, frames would arrive about a second after the welcome.
const WELL_BEFORE_THE_INTERVAL: Duration = Duration::from_millis(700);

/// Reads the waiting frame "b" and the frame after it, both well before the interval ends.
async fn b_then_the_next_frame(client: &mut RawClient, why: &str) -> ServerFrame {
    let (b, next) = timeout(WELL_BEFORE_THE_INTERVAL, async {
        (client.recv().await, client.recv().await)
    })
    .await
    .expect(why);
    let waiting = (b.opcode, b.payload.as_slice());
    assert_eq!(waiting, (TEXT, &b"b"[..]), "the waiting frame first");
    next
}

#[tokio::test]
async fn a_reply_is_not_held_back_by_the_write_interval_and_takes_what_waits_with_it() {
    let (_server, mut client, _) = a_frame_waiting(Duration::from_secs(1)).await;
    // The probe answers any other text with `Session::send`.
    client.send(true, TEXT, b"ask", true).await;
    let reply = b_then_the_next_frame(&mut client, "a reply leaves without waiting").await;
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["type"], "got");
    assert_eq!(reply["payload"], "ask");
}

#[tokio::test]
async fn a_close_is_not_held_back_by_the_write_interval() {
    let (server, mut client, _) = a_frame_waiting(Duration::from_secs(1)).await;
    let hub = server.hub.clone();
    tokio::spawn(async move { hub.shutdown_sessions(WAIT).await });
    let close = b_then_the_next_frame(&mut client, "a close request ends the wait").await;
    assert_eq!(close.opcode, CLOSE);
    assert_eq!(&close.payload[..2], &1001u16.to_be_bytes());
}

#[test]
fn the_write_interval_is_bounded() {
    let config = roomcast::SessionConfig {
        write_interval: Duration::from_secs(2),
        ..roomcast::SessionConfig::default()
    };
    assert_eq!(config.validate().unwrap_err().field, "write_interval");
}

#[tokio::test]
async fn the_connection_keeps_reading_while_frames_wait_out_the_write_interval() {
    let (_server, mut client, _) = a_frame_waiting(Duration::from_millis(800)).await;
    // The ping is read and answered while "b" waits.
    client.send(true, PING, b"still there?", true).await;
    let pong = client.recv().await;
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"still there?"[..])
    );
    let b = client.recv().await;
    assert_eq!((b.opcode, b.payload.as_slice()), (TEXT, &b"b"[..]));
}
