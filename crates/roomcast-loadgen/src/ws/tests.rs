//! The client against hand-made servers: what it reads, what it answers, what it refuses.

use super::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A server that accepts one upgrade by hand and then writes `frames` (raw bytes) and
/// returns what the client sent.
async fn serve_once(frames: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws?token=t", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut io, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            io.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("GET /ws?token=t HTTP/1.1\r\n"), "{head}");
        let key = head
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        // The first frames right behind the head, in the same write.
        let mut out = response.into_bytes();
        out.extend_from_slice(&frames);
        io.write_all(&out).await.unwrap();
        let mut sent = Vec::new();
        let _ = io.read_to_end(&mut sent).await;
        sent
    });
    (url, task)
}

fn unmasked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    if payload.len() < 126 {
        frame.push(payload.len() as u8);
    } else {
        frame.push(126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// Unmasks the client's frames: `(opcode, payload)` each.
fn client_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        assert_eq!(bytes[1] & 0x80, 0x80, "client frames are masked");
        let (header, len) = match bytes[1] & 0x7f {
            126 => (4, usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
            len => (2, usize::from(len)),
        };
        let mask = &bytes[header..header + 4];
        let payload = bytes[header + 4..header + 4 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        frames.push((bytes[0] & 0x0f, payload));
        bytes = &bytes[header + 4 + len..];
    }
    frames
}

#[tokio::test]
async fn frames_behind_the_upgrade_fragments_pings_and_the_close_come_through_in_order() {
    let big = "x".repeat(70_000);
    let mut frames = unmasked(true, 1, br#"{"type":"user_list"}"#);
    frames.extend(unmasked(false, 1, b"hel"));
    frames.extend(unmasked(true, 9, b"p"));
    frames.extend(unmasked(true, 0, b"lo"));
    frames.extend({
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&(big.len() as u64).to_be_bytes());
        f.extend_from_slice(big.as_bytes());
        f
    });
    frames.extend(unmasked(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']));
    let (url, server) = serve_once(frames).await;
    let io = TcpStream::connect(url[5..].split('/').next().unwrap())
        .await
        .unwrap();
    let mut ws = Ws::upgrade(io, &url).await.unwrap();
    ws.send(Message::text("join")).await.unwrap();
    let mut got = Vec::new();
    while let Some(message) = ws.next().await {
        got.push(message.unwrap());
    }
    assert_eq!(got[0], Message::text(r#"{"type":"user_list"}"#));
    assert_eq!(got[1], Message::Ping(Bytes::from_static(b"p")));
    assert_eq!(got[2], Message::text("hello"), "fragments assembled");
    assert_eq!(got[3], Message::text(big));
    assert!(
        matches!(&got[4], Message::Close(Some(f)) if u16::from(f.code) == 1000 && f.reason == "bye")
    );
    assert_eq!(got.len(), 5, "the stream ends after the close");
    drop(ws);
    let sent = client_frames(&server.await.unwrap());
    assert_eq!(sent[0], (1, b"join".to_vec()));
    assert_eq!(sent[1], (10, b"p".to_vec()), "the ping answered");
    assert_eq!(sent[2], (8, vec![0x03, 0xe8]), "the close echoed");
}

#[tokio::test]
async fn a_refused_upgrade_is_an_http_error_with_its_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut io, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = io.read(&mut buf).await;
        io.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
    });
    let io = TcpStream::connect(addr).await.unwrap();
    match Ws::upgrade(io, &format!("ws://{addr}/ws")).await {
        Err(Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_masked_frame_from_the_server_is_a_protocol_error() {
    let (url, _server) = serve_once(vec![0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1]).await;
    let io = TcpStream::connect(url[5..].split('/').next().unwrap())
        .await
        .unwrap();
    let mut ws = Ws::upgrade(io, &url).await.unwrap();
    assert!(matches!(
        ws.next().await,
        Some(Err(Error::Protocol(ProtocolError::MaskedFrameFromServer)))
    ));
}
