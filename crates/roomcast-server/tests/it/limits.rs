//! Limits: message size (1009), slow consumers (1013), the connection cap (1013), the echo
//! endpoint, and the hub's queries as seed 000's table states them.

use std::time::Duration;

use roomcast::{RoomName, UserId};
use serde_json::json;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let server = TestServer::start_with(|config| config.session.max_message_bytes = 1024).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "x".repeat(900)}))
        .await;
    ann.recv_type("message").await; // under the limit: fine
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "x".repeat(2000)}))
        .await;
    ann.expect_close(1009).await;
    server.wait_for(|hub| hub.connection_count() == 0).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_while_others_keep_receiving() {
    // Bounded: enough 32 KiB messages to fill any loopback socket buffer many times over.
    const MAX_MESSAGES: usize = 2000;
    let server = TestServer::start_with(|config| {
        config.session.max_message_bytes = 64 * 1024;
        config.session.outbound_capacity = 16;
        // 32 KiB messages: no bound on characters, only the frame size; faster than a person.
        config.max_message_chars = 0;
        config.limits.message_rate = 0;
    })
    .await;

    // The slow client's socket has a tiny receive buffer, so the server's writes back up fast.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = server.url(&format!("/ws?token={}", server.user_token("slow").await));
    let (ws, response) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut slow = TestClient { ws, response };
    slow.join("lobby").await;
    let mut fast = server.connect_as("/ws", "fast").await;
    fast.join("lobby").await;
    let mut publisher = server.connect_as("/ws", "pub").await;
    publisher.join("lobby").await;
    slow.recv_type("join").await;
    slow.recv_type("join").await;

    // The slow client stops reading. The publisher talks, a burst at a time, until the server
    // gives up on it; the fast client receives every message meanwhile, in order.
    const BURST: usize = 8;
    let content = "y".repeat(32 * 1024);
    let mut sent = 0;
    while server.hub.stats().slow_consumers_total == 0 {
        assert!(
            sent < MAX_MESSAGES,
            "no slow consumer detected after {sent} messages"
        );
        for i in sent..sent + BURST {
            let message =
                json!({"type": "message", "room": "lobby", "content": format!("{i}:{content}")});
            publisher.send_json(message).await;
        }
        for i in sent..sent + BURST {
            let got = fast.recv_type("message").await;
            assert!(
                got["content"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{i}:"))
            );
            publisher.recv_type("ack").await;
        }
        sent += BURST;
    }
    // The room goes on without the slow client.
    publisher
        .send_json(json!({"type": "message", "room": "lobby", "content": "after"}))
        .await;
    assert_eq!(fast.recv_type("message").await["content"], "after");

    // The slow client reads again: what was already written, then the close.
    let frame = slow.expect_close(1013).await;
    assert_eq!(frame.reason.as_str(), "slow consumer");
    server
        .wait_for(|hub| !hub.is_connected(&UserId::from("slow")))
        .await;
    assert!(server.hub.is_connected(&UserId::from("fast")));
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_with_1013() {
    let server = TestServer::start_with(|config| config.session.max_connections = 2).await;
    let first = server.connect_as("/ws", "ann").await;
    let _second = server.connect_as("/ws", "bob").await;
    let mut third = server
        .connect(&format!("/ws?token={}", server.user_token("cat").await))
        .await;
    let frame = third.expect_close(1013).await;
    assert_eq!(frame.reason.as_str(), "server full");
    first.close().await;
    server.wait_for(|hub| hub.connection_count() == 1).await;
    // The freed permit admits the next one.
    let mut fourth = server.connect_as("/ws", "dan").await;
    fourth.send_json(json!({"type": "ping"})).await;
    assert_eq!(fourth.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn hub_queries_answer_what_the_seed_tables_say() {
    let server = TestServer::start().await;
    let hub = &server.hub;
    let (ann, bob) = (UserId::from("ann"), UserId::from("bob"));
    let (red, blue) = (
        RoomName::new("red").unwrap(),
        RoomName::new("blue").unwrap(),
    );
    assert_eq!(hub.connection_count(), 0);
    assert!(!hub.is_connected(&ann));

    let mut ann1 = server.connect_as("/ws", "ann").await;
    let mut ann2 = server.connect_as("/ws", "ann").await;
    let mut bob1 = server.connect_as("/ws", "bob").await;
    ann1.join("red").await;
    ann2.join("blue").await;
    bob1.join("red").await;

    let mut users = hub.connected_users();
    users.sort();
    assert_eq!(
        users,
        [ann.clone(), bob.clone()],
        "get_connected_users: each user once"
    );
    assert!(hub.is_connected(&ann) && hub.is_connected(&bob));
    assert!(!hub.is_connected(&UserId::from("nobody")));
    assert_eq!(
        hub.room_members(&red),
        [ann.clone(), bob.clone()],
        "get_room_members"
    );
    assert_eq!(hub.room_members(&blue), vec![ann.clone()]);
    assert_eq!(
        hub.user_rooms(&ann),
        [blue.clone(), red.clone()],
        "get_user_rooms: through every connection"
    );
    assert_eq!(hub.user_rooms(&bob), vec![red.clone()]);
    assert_eq!(
        hub.connection_count(),
        3,
        "connection_count counts connections, not users"
    );

    ann2.close().await;
    server.wait_for(|hub| hub.connection_count() == 2).await;
    assert_eq!(hub.user_rooms(&ann), vec![red.clone()]);
    assert!(hub.room_members(&blue).is_empty());
    bob1.close().await;
    ann1.close().await;
    server.wait_for(|hub| hub.connection_count() == 0).await;
    assert!(hub.connected_users().is_empty());
    assert!(hub.rooms().is_empty(), "empty rooms are cleaned up");
}

#[tokio::test]
async fn the_echo_endpoint_echoes_text_and_binary_when_enabled() {
    let server = TestServer::start_with(|config| {
        config.echo_endpoint = true;
        config.session.max_message_bytes = 1024;
    })
    .await;
    let mut client = server.connect("/ws/echo").await;
    client.send_text("héllo").await;
    assert_eq!(client.recv().await, Message::text("héllo"));
    client.send_binary(vec![0, 159, 146, 150]).await;
    assert_eq!(client.recv().await, Message::binary(vec![0, 159, 146, 150]));
    client.send_text(&"z".repeat(2048)).await;
    client.expect_close(1009).await;
}

#[tokio::test]
async fn the_echo_endpoint_is_off_by_default() {
    let server = TestServer::start().await;
    let mut client = server.connect("/ws/echo").await;
    // Without ROOMCAST_ECHO_ENDPOINT, /ws/echo is the native /ws/{room} endpoint.
    assert_eq!(client.recv_json().await["type"], "join");
    client.send_text("hello").await;
    client.recv_type("error").await;
    client.expect_silence(Duration::from_millis(200)).await;
}
