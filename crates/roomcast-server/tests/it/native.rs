//! Seed 002's native envelope: rooms, announcements, messages, user lists, errors.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn two_users_in_a_room_see_each_other_join_talk_and_leave() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    let mut bob = server.connect_as("/ws", "bob").await;

    ann.send_json(json!({"type": "join", "room": "lobby"}))
        .await;
    let joined = ann.recv_json().await;
    assert_eq!(joined["type"], "join", "the joiner sees its own join first");
    assert_eq!(
        (joined["room"].as_str(), joined["user_id"].as_str()),
        (Some("lobby"), Some("ann"))
    );
    assert!(joined["timestamp"].as_i64().unwrap() > 1_600_000_000);
    let list = ann.recv_json().await;
    assert_eq!(list["type"], "user_list");
    assert_eq!(list["data"], json!(["ann"]));

    let list = bob.join("lobby").await;
    assert_eq!(list["data"], json!(["ann", "bob"]));
    let seen = ann.recv_json().await;
    assert_eq!(
        (
            seen["type"].as_str(),
            seen["user_id"].as_str(),
            seen["username"].as_str()
        ),
        (Some("join"), Some("bob"), Some("Bob"))
    );

    bob.send_json(json!({"type": "message", "room": "lobby", "content": "hi ann"}))
        .await;
    for client in [&mut ann, &mut bob] {
        let message = client.recv_type("message").await;
        assert_eq!(message["content"], "hi ann");
        assert_eq!(message["user_id"], "bob");
        assert_eq!(message["username"], "Bob");
        assert_eq!(message["room"], "lobby");
        assert!(
            message["id"].as_str().is_some_and(|id| !id.is_empty()),
            "every message has an id"
        );
        assert_eq!(message["seq"], 1, "persisted: the room's first seq");
    }
    let ack = bob.recv_json().await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1))
    );

    bob.send_json(json!({"type": "leave", "room": "lobby"}))
        .await;
    assert_eq!(
        bob.recv_json().await["type"],
        "leave",
        "the leaver gets a receipt"
    );
    let left = ann.recv_json().await;
    assert_eq!(
        (left["type"].as_str(), left["user_id"].as_str()),
        (Some("leave"), Some("bob"))
    );

    ann.send_json(json!({"type": "message", "room": "lobby", "content": "alone"}))
        .await;
    ann.recv_type("message").await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_room_in_the_path_is_joined_at_connect() {
    let server = TestServer::start().await;
    let mut ann = server
        .connect(&format!(
            "/ws/auth/kitchen?token={}",
            server.user_token("ann").await
        ))
        .await;
    let joined = ann.recv_json().await;
    assert_eq!(
        (joined["type"].as_str(), joined["room"].as_str()),
        (Some("join"), Some("kitchen"))
    );
    assert_eq!(ann.recv_json().await["type"], "user_list");
    assert_eq!(
        server.hub.user_rooms(&"ann".into()),
        vec![roomcast::RoomName::new("kitchen").unwrap()]
    );
}

#[tokio::test]
async fn an_invalid_room_in_the_path_closes_with_4000() {
    let server = TestServer::start().await;
    let mut client = server.connect(&format!("/ws/{}", "x".repeat(65))).await;
    client.expect_close(4000).await;
}

#[tokio::test]
async fn one_user_in_two_rooms_gets_each_rooms_messages() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    let mut cat = server.connect_as("/ws", "cat").await;
    ann.join("red").await;
    ann.join("blue").await;
    bob.join("red").await;
    cat.join("blue").await;
    ann.recv_type("join").await; // bob in red
    ann.recv_type("join").await; // cat in blue

    bob.send_json(json!({"type": "message", "room": "red", "content": "r"}))
        .await;
    cat.send_json(json!({"type": "message", "room": "blue", "content": "b"}))
        .await;
    let mut got = vec![];
    for _ in 0..2 {
        let message = ann.recv_type("message").await;
        got.push((
            message["room"].as_str().unwrap().to_owned(),
            message["content"].as_str().unwrap().to_owned(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [("blue".into(), "b".into()), ("red".into(), "r".into())]
    );
    assert_eq!(bob.recv_type("message").await["content"], "r");
    assert_eq!(bob.recv_json().await["type"], "ack");
    bob.expect_silence(QUIET).await;
    assert_eq!(cat.recv_type("message").await["content"], "b");
    assert_eq!(cat.recv_json().await["type"], "ack");
    cat.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_user_with_two_connections_joins_once_and_leaves_after_the_last() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    let mut bob_tab1 = server.connect_as("/ws", "bob").await;
    let mut bob_tab2 = server.connect_as("/ws", "bob").await;
    bob_tab1.join("lobby").await;
    bob_tab2.join("lobby").await;
    assert_eq!(ann.recv_json().await["user_id"], "bob");
    ann.expect_silence(QUIET).await; // the second tab is not announced

    // A message reaches both of bob's tabs.
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "both tabs"}))
        .await;
    assert_eq!(bob_tab1.recv_type("message").await["content"], "both tabs");
    assert_eq!(bob_tab2.recv_type("message").await["content"], "both tabs");
    ann.recv_type("message").await;
    ann.recv_type("ack").await;

    bob_tab1.close().await;
    server.wait_for(|hub| hub.connection_count() == 2).await;
    ann.expect_silence(QUIET).await;
    assert!(server.hub.is_connected(&"bob".into()));

    bob_tab2.close().await;
    let left = ann.recv_json().await;
    assert_eq!(
        (left["type"].as_str(), left["user_id"].as_str()),
        (Some("leave"), Some("bob"))
    );
    assert!(!server.hub.is_connected(&"bob".into()));
}

#[tokio::test]
async fn a_spoofed_identity_is_overwritten_by_the_server() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    ann.send_json(json!({
        "type": "message", "room": "lobby", "content": "trust me",
        "user_id": "admin", "username": "Administrator", "timestamp": 1, "id": "forged", "seq": 99
    }))
    .await;
    let message = ann.recv_type("message").await;
    assert_eq!(message["user_id"], "ann");
    assert_eq!(message["username"], "Ann");
    assert_ne!(message["id"], "forged");
    assert!(message["timestamp"].as_i64().unwrap() > 1);
    assert!(message.get("seq").is_none() || message["seq"] != 99);
}

#[tokio::test]
async fn bad_requests_get_an_error_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    let cases: [(&str, &str); 7] = [
        ("{not json", "malformed message"),
        (r#"{"type":"dance"}"#, "unsupported message type: dance"),
        (r#"{"type":"join"}"#, "'join' needs a room"),
        (r#"{"type":"join","room":"has space"}"#, "invalid room"),
        (
            r#"{"type":"message","room":"lobby"}"#,
            "'message' needs a content",
        ),
        (
            r#"{"type":"message","room":"lobby","content":"x"}"#,
            "not in room 'lobby'",
        ),
        (
            r#"{"type":"user_list","room":"lobby"}"#,
            "not in room 'lobby'",
        ),
    ];
    for (input, expected) in cases {
        ann.send_text(input).await;
        let error = ann.recv_json().await;
        assert_eq!(error["type"], "error", "{input}");
        let content = error["content"].as_str().unwrap();
        assert!(content.starts_with(expected), "{input}: {content}");
    }
    ann.send_binary(vec![1, 2, 3]).await;
    assert_eq!(ann.recv_json().await["type"], "error");
    ann.send_json(json!({"type": "leave", "room": "lobby"}))
        .await;
    assert_eq!(ann.recv_json().await["type"], "error");
    // Still open and working.
    ann.send_json(json!({"type": "ping"})).await;
    assert_eq!(ann.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn user_list_is_resent_on_request() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.send_json(json!({"type": "user_list", "room": "lobby"}))
        .await;
    let list = ann.recv_type("user_list").await;
    assert_eq!(list["data"], json!(["ann", "bob"]));
    assert_eq!(
        list["users"],
        json!([{"user_id": "ann", "username": "Ann"}, {"user_id": "bob", "username": "Bob"}])
    );
}

#[tokio::test]
async fn message_ids_are_unique() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    let mut ids = std::collections::HashSet::new();
    for i in 0..20 {
        ann.send_json(json!({"type": "message", "room": "lobby", "content": i.to_string()}))
            .await;
    }
    for i in 0..20 {
        let message = ann.recv_type("message").await;
        assert_eq!(message["content"], i.to_string(), "in order");
        assert!(ids.insert(message["id"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn a_message_longer_than_the_character_limit_gets_an_error_and_nothing_is_stored() {
    let server = TestServer::start_with(|config| config.max_message_chars = 10).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    // Ten characters of two bytes each: within the limit, which counts characters.
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "é".repeat(10)}))
        .await;
    assert_eq!(ann.recv_type("message").await["seq"], 1);
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "x".repeat(11)}))
        .await;
    let error = ann.recv_type("error").await;
    assert_eq!(error["content"], "message is longer than 10 characters");
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "ok"}))
        .await;
    assert_eq!(
        ann.recv_type("message").await["seq"],
        2,
        "the long one took no seq"
    );
}

#[tokio::test]
async fn without_auto_created_rooms_a_join_of_a_missing_room_is_refused() {
    let server = TestServer::start_with(|config| config.auto_create_rooms = false).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.send_json(json!({"type": "join", "room": "nowhere"}))
        .await;
    let error = ann.recv_type("error").await;
    assert_eq!(error["content"], "room 'nowhere' does not exist");
    assert!(server.store.room("nowhere").await.unwrap().is_none());

    let mut bob = server.connect_as("/ws/nowhere", "bob").await;
    bob.expect_close(4000).await;

    server
        .store
        .create_room("somewhere", false, None)
        .await
        .unwrap();
    ann.join("somewhere").await;
}
