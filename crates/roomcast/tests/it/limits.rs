//! Per-connection limits from `SessionConfig` that end a connection with their own close code.

use roomcast::{Hub, SessionConfig};

use crate::common::TestServer;

#[tokio::test]
async fn a_message_bigger_than_max_message_bytes_is_closed_with_1009() {
    let config = SessionConfig {
        max_message_bytes: 1024,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    let mut alice = server.connect_as("alice").await;

    alice.send_text(&"x".repeat(512)).await;
    assert_eq!(
        alice.recv_json().await["kind"],
        "text",
        "a message under the limit passes"
    );

    alice.send_text(&"x".repeat(4096)).await;
    alice.expect_close(1009).await;
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_client_over_max_connections_is_closed_with_1013() {
    let config = SessionConfig {
        max_connections: 1,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    let _alice = server.connect_as("alice").await;

    let url = server.url(&format!("/ws?token={}", crate::common::token("bob")));
    let mut bob = crate::common::TestClient::connect(url, "bob").await;

    assert_eq!(bob.expect_close(1013).await, "server full");
    assert!(!server.hub.is_connected(&roomcast::UserId::from("bob")));
}

/// A server that admits one connection at a time.
async fn one_connection_at_a_time() -> TestServer {
    let config = SessionConfig {
        max_connections: 1,
        ..SessionConfig::default()
    };
    TestServer::builder().hub(Hub::new(config)).start().await
}

#[tokio::test]
async fn a_closed_connection_gives_its_place_back() {
    let server = one_connection_at_a_time().await;
    let alice = server.connect_as("alice").await;
    alice.close().await;
    server.wait_for_connections(0).await;
    // Welcomed, not refused with 1013: alice's permit came back.
    let _bob = server.connect_as("bob").await;
}

#[tokio::test]
async fn a_connection_whose_hook_panics_is_unregistered_and_gives_its_place_back() {
    let server = one_connection_at_a_time().await;
    let mut alice = server.connect_as("alice").await;
    // The probe panics on a command it does not know: the connection's task dies.
    alice
        .send_json(&serde_json::json!({ "cmd": "no such command" }))
        .await;
    server.wait_for_connections(0).await;
    assert!(!server.hub.is_connected(&roomcast::UserId::from("alice")));
    let _bob = server.connect_as("bob").await;
}

#[tokio::test]
async fn a_client_whose_queue_overflows_is_closed_with_1013_slow_consumer() {
    let config = SessionConfig {
        outbound_capacity: 4,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    let mut alice = server.connect_as("alice").await;

    // The test runtime has one thread and a broker-less send never yields, so the session
    // cannot drain its queue between these sends: the fifth overflows it.
    for n in 0..8 {
        server
            .hub
            .send_to(&roomcast::UserId::from("alice"), format!("frame {n}"))
            .await
            .unwrap();
    }

    assert_eq!(alice.expect_close(1013).await, "slow consumer");
    assert_eq!(server.hub.stats().slow_consumers_total, 1);
}

#[tokio::test]
async fn past_the_refusals_being_closed_a_refusal_is_a_plain_http_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

    let config = SessionConfig {
        max_closing_refusals: 1,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    // A refused client that never answers the close: its refusal is being closed for a while.
    let mut lingering = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws?token=bad HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    lingering.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    lingering.read_exact(&mut head).await.unwrap();
    assert_eq!(
        &head, b"HTTP/1.1 101",
        "the first refusal is upgraded and closed"
    );

    let url = server.url("/ws?token=bad");
    let refused =
        tokio_tungstenite::connect_async(url.as_str().into_client_request().unwrap()).await;
    let Err(tungstenite::Error::Http(response)) = refused else {
        panic!("expected a plain HTTP refusal, got {refused:?}");
    };
    assert_eq!(response.status().as_u16(), 401);

    // The lingering one is closed within a second; refusals are upgraded again.
    drop(lingering);
    crate::common::eventually("the refusal slot back", || {
        server.hub.stats().refused_total >= 2
    })
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                use futures_util::StreamExt;
                let close = ws.next().await;
                let Some(Ok(tungstenite::Message::Close(Some(frame)))) = close else {
                    panic!("expected a close, got {close:?}");
                };
                assert_eq!(u16::from(frame.code), 4001);
                break;
            }
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "no slot came back");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
