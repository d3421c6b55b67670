//! Seed 003: `/create-room`, `/join-room` and `GET /ws/chat?token=` with room tokens, on the
//! default configuration (`ROOMCAST_USER_DIRECTORY=store`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

const QUIET: Duration = Duration::from_millis(300);

/// Connects to `/ws/chat` with `token` and waits until the connection is in `room`.
async fn chat(server: &TestServer, room: &str, token: &str, members: usize) -> TestClient {
    let client = server.connect(&format!("/ws/chat?token={token}")).await;
    let room = roomcast::RoomName::new(room).unwrap();
    server
        .wait_for(|hub| hub.room_members(&room).len() >= members)
        .await;
    client
}

fn assert_line(value: &Value, name: &str, message: &str) {
    assert_eq!(value["name"], name, "{value}");
    assert_eq!(value["message"], message, "{value}");
    let timestamp = value["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("{value}"));
    assert!(
        timestamp.ends_with('Z') && timestamp.contains('T'),
        "{timestamp}"
    );
}

#[tokio::test]
async fn two_clients_of_create_room_and_join_room_chat_and_the_sender_is_left_out() {
    let server = TestServer::start().await;
    let (room, tokens) = room_codes(&server, "Ann", &["Bob"]).await;
    let mut ann = chat(&server, &room, &tokens[0], 1).await;
    let mut bob = chat(&server, &room, &tokens[1], 2).await;

    ann.send_text("hi Bob").await;
    assert_line(&bob.recv_json().await, "Ann", "hi Bob");
    ann.expect_silence(QUIET).await;

    // The seed's React component sends `JSON.stringify(input)`: the string is unwrapped.
    bob.send_text(r#""hello \"Ann\"""#).await;
    let line = ann.recv_json().await;
    assert_line(&line, "Bob", r#"hello "Ann""#);
    assert_eq!(line["seq"], 2, "persisted in the room's sequence");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_joiner_gets_the_rooms_history_in_the_same_format() {
    let server = TestServer::start().await;
    let (room, tokens) = room_codes(&server, "Ann", &["Bob"]).await;
    let mut ann = chat(&server, &room, &tokens[0], 1).await;
    ann.send_text("first").await;
    ann.send_text("second").await;
    // Wait until both are stored: the history a joiner gets comes from the store.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.store.history(&room, None, 10).await.unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages not stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut bob = chat(&server, &room, &tokens[1], 2).await;
    assert_line(&bob.recv_json().await, "Ann", "first");
    assert_line(&bob.recv_json().await, "Ann", "second");
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn no_token_closes_with_1008_token_required() {
    let server = TestServer::start().await;
    let mut client = server.connect("/ws/chat").await;
    let close = client.expect_close(1008).await;
    assert_eq!(close.reason, "Token required");
}

#[tokio::test]
async fn a_forged_expired_or_access_token_closes_with_1008() {
    let server = TestServer::start().await;
    let (room, _) = room_codes(&server, "Ann", &[]).await;
    let claims = |exp: u64| json!({"sub": "c1", "client_id": "c1", "room_id": room, "name": "Eve", "type": "room", "exp": exp});
    let forged = sign_with(
        &claims(now() + 600),
        b"not-the-server-secret-not-the-server",
    );
    let expired = sign(&claims(now() - 60));
    let access = server.user_token("ann").await;
    for (token, reason) in [
        (forged, "Invalid token"),
        (expired, "Token expired"),
        (access, "Invalid token"),
        ("garbage".to_owned(), "Invalid token"),
    ] {
        let mut client = server.connect(&format!("/ws/chat?token={token}")).await;
        let close = client.expect_close(1008).await;
        assert_eq!(close.reason, reason);
    }
}

#[tokio::test]
async fn a_room_token_opens_nothing_but_its_room_on_ws_chat() {
    let server = TestServer::start().await;
    let (room, tokens) = room_codes(&server, "Ann", &[]).await;
    let token = &tokens[0];
    for path in [
        "/ws/auth",
        "/ws",
        &format!("/ws/{room}"),
        "/ws/chat/general/",
    ] {
        let mut client = server.connect(&format!("{path}?token={token}")).await;
        let close = client.expect_close(4001).await;
        assert_eq!(close.reason, "wrong token type", "{path}");
    }
    for path in [
        "/me".to_owned(),
        format!("/rooms/{room}/messages"),
        format!("/rooms/{room}"),
    ] {
        let (status, body) = http(&server, "GET", &path, Some(token), None).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_room_token_for_a_room_that_is_gone_closes_with_4000_when_rooms_are_not_created() {
    let server = TestServer::start_with(|config| config.auto_create_rooms = false).await;
    let token = sign(
        &json!({"sub": "c1", "client_id": "c1", "room_id": "VANISHED",
                             "name": "Eve", "type": "room", "exp": now() + 600}),
    );
    let mut client = server.connect(&format!("/ws/chat?token={token}")).await;
    client.expect_close(4000).await;
}

#[tokio::test]
async fn an_empty_or_oversized_message_gets_an_error_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let (room, tokens) = room_codes(&server, "Ann", &["Bob"]).await;
    let mut ann = chat(&server, &room, &tokens[0], 1).await;
    let mut bob = chat(&server, &room, &tokens[1], 2).await;
    let too_long = "x".repeat(roomcast_server::DEFAULT_MAX_MESSAGE_CHARS + 1);
    for (frame, expected) in [
        ("", "message is empty"),
        ("  \t ", "message is empty"),
        (r#""""#, "message is empty"),
        (too_long.as_str(), "longer than 2000 characters"),
    ] {
        ann.send_text(frame).await;
        let answer = ann.recv_json().await;
        assert_eq!(answer, json!({"error": answer["error"]}), "only the error");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(expected), "{error}");
    }
    ann.send_binary(vec![0xff]).await;
    assert!(ann.recv_json().await["error"].is_string());
    bob.expect_silence(QUIET).await;

    ann.send_text("fine now").await;
    let line = bob.recv_json().await;
    assert_line(&line, "Ann", "fine now");
    assert_eq!(line["seq"], 1, "nothing bad was stored");
}
