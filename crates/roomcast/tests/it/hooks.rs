//! The `Handler` hooks: when they run, what they receive, and how their errors close.

use serde_json::json;

use crate::common::{SILENCE, TestClient, TestServer, room, token, user};

#[tokio::test]
async fn on_connect_runs_after_authentication_and_can_send_a_welcome() {
    let server = TestServer::start().await;
    let url = server.url(&format!("/ws?token={}", token("alice")));
    let mut alice = TestClient::connect(url, "alice").await;

    let welcome = alice.recv_json().await;
    assert_eq!(
        welcome,
        json!({
            "type": "welcome",
            "user_id": "alice",
            "username": "Name of alice",
            "guest": false,
            "room": null,
            "registered": true,
        }),
        "on_connect sees the token's identity and a connection the hub already lists"
    );
}

#[tokio::test]
async fn on_message_receives_text_and_binary_messages_as_they_came() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;

    alice.send_text("hello").await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "got", "kind": "text", "payload": "hello" })
    );

    alice.send_binary(&[0, 1, 2, 255]).await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "got", "kind": "binary", "payload": [0, 1, 2, 255] })
    );

    // Bytes that happen to be UTF-8 are still a binary message.
    alice.send_binary(b"hi").await;
    assert_eq!(
        alice.recv_json().await,
        json!({ "type": "got", "kind": "binary", "payload": [104, 105] })
    );
}

#[tokio::test]
async fn on_disconnect_runs_when_the_client_closes_and_the_hub_forgets_the_connection() {
    let mut server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    alice
        .send_json(&json!({ "cmd": "join", "room": "lobby" }))
        .await;
    assert_eq!(alice.recv_json().await["type"], "joined");

    alice.close().await;

    let seen = server.disconnected().await;
    assert_eq!(seen.user, user("alice"));
    assert_eq!(
        seen.reason.code(),
        1000,
        "the client's close code reaches the hook"
    );
    assert_eq!(
        seen.rooms,
        [room("lobby")],
        "the hook runs before the rooms are left"
    );
    server.wait_for_connections(0).await;
    assert!(!server.hub.is_connected(&user("alice")));
    assert!(server.hub.connected_users().is_empty());
    assert!(server.hub.room_members(&room("lobby")).is_empty());
    assert!(server.hub.user_rooms(&user("alice")).is_empty());
}

#[tokio::test]
async fn on_disconnect_sees_1006_when_the_connection_drops_without_a_close_frame() {
    let mut server = TestServer::start().await;
    let alice = server.connect_as("alice").await;

    // A crashed tab or a lost network: the TCP connection ends, no close handshake.
    drop(alice);

    let seen = server.disconnected().await;
    assert_eq!(
        (seen.reason.code(), seen.reason.reason()),
        (1006, "connection lost"),
        "RFC 6455 §7.1.5: a connection closed without a close frame is 1006, not a protocol error"
    );
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn an_error_with_a_close_code_from_on_message_closes_with_that_code() {
    let mut server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;

    alice
        .send_json(&json!({ "cmd": "fail", "code": 4000 }))
        .await;

    assert_eq!(alice.expect_close(4000).await, "told to fail");
    assert_eq!(server.disconnected().await.reason.code(), 4000);
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn any_other_error_from_on_message_closes_with_1011() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;

    alice.send_json(&json!({ "cmd": "fail" })).await;

    let reason = alice.expect_close(1011).await;
    assert_eq!(
        reason, "internal error",
        "the error's text is not sent to the client"
    );
}

#[tokio::test]
async fn an_error_closes_only_the_connection_whose_hook_returned_it() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    alice
        .send_json(&json!({ "cmd": "fail", "code": 4000 }))
        .await;
    alice.expect_close(4000).await;

    bob.expect_silence(SILENCE).await;
    bob.send_text("still here").await;
    assert_eq!(bob.recv_json().await["payload"], "still here");
}

#[tokio::test]
async fn an_error_from_on_connect_closes_with_its_code_before_any_message() {
    let mut server = TestServer::builder().path("/ws/{room}").start().await;
    let url = server.url(&format!("/ws/missing?token={}", token("alice")));
    let mut alice = TestClient::connect(url, "alice").await;

    assert_eq!(alice.expect_close(4000).await, "room not found");
    assert_eq!(server.disconnected().await.reason.code(), 4000);
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_panicking_hook_closes_only_its_connection_with_1011_and_is_counted() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    alice.send_json(&json!({ "cmd": "panic" })).await;
    assert_eq!(alice.expect_close(1011).await, "internal error");
    assert_eq!(server.hub.stats().hook_panics_total, 1);

    // The process and the other connection go on.
    bob.send_text("still here").await;
    assert_eq!(bob.recv_json().await["payload"], "still here");
    let _carol = server.connect_as("carol").await;
    crate::common::eventually("alice unregistered", || {
        !server.hub.is_connected(&user("alice"))
    })
    .await;
}
