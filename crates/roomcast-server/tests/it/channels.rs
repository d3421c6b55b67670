//! Seed 004: `GET /ws/chat/{room_name}/`, Django Channels style, with the document's field
//! names and close codes.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

const QUIET: Duration = Duration::from_millis(300);

/// Connects to seed 004's endpoint for `room` with `Authorization: Bearer`, as the document
/// recommends.
async fn connect_bearer(server: &TestServer, room: &str, token: &str) -> TestClient {
    let mut request = server
        .url(&format!("/ws/chat/{room}/"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    server
        .try_connect(request)
        .await
        .expect("seed 004 handshake")
}

/// `2024-03-14T12:00:00Z`, with or without milliseconds: ISO 8601 in UTC.
fn assert_iso8601_utc(timestamp: &Value) {
    let text = timestamp.as_str().expect("timestamp is a string");
    let bytes = text.as_bytes();
    assert!(text.ends_with('Z'), "{text}");
    assert!(text.len() >= 20, "{text}");
    assert_eq!(
        (bytes[4], bytes[7], bytes[10], bytes[13], bytes[16]),
        (b'-', b'-', b'T', b':', b':'),
        "{text}"
    );
    assert!(text.starts_with("20"), "{text}");
}

fn assert_chat_message(value: &Value, message: &str, sender_id: &str, sender_username: &str) {
    assert_eq!(value["type"], "chat_message", "{value}");
    assert_eq!(value["message"], message, "{value}");
    assert_eq!(value["sender_id"], sender_id, "{value}");
    assert_eq!(value["sender_username"], sender_username, "{value}");
    assert_iso8601_utc(&value["timestamp"]);
}

#[tokio::test]
async fn the_example_flow_users_list_history_messages_joins_and_leaves() {
    let server = TestServer::start().await;
    // 1. Connect with a valid JWT; 2. the list of current users, then the history.
    let mut ann = connect_bearer(&server, "general", &server.user_token("ann").await).await;
    assert_eq!(
        ann.recv_json().await,
        json!({"type": "room_users_list", "users": [{"id": "ann", "username": "Ann"}]})
    );
    // 3. Send a message: every user in the room receives a chat_message, the sender too.
    ann.send_json(json!({"message": "Hi!"})).await;
    let echoed = ann.recv_json().await;
    assert_chat_message(&echoed, "Hi!", "ann", "Ann");
    assert_eq!(
        echoed["seq"], 1,
        "persisted and sequenced like native messages"
    );

    // The token may also come as `?token=`, and the trailing slash is optional.
    let bob_token = server.user_token("bob").await;
    let mut bob = server
        .connect(&format!("/ws/chat/general?token={bob_token}"))
        .await;
    let list = bob.recv_json().await;
    assert_eq!(list["type"], "room_users_list");
    assert_eq!(
        list["users"],
        json!([{"id": "ann", "username": "Ann"}, {"id": "bob", "username": "Bob"}])
    );
    assert_chat_message(&bob.recv_json().await, "Hi!", "ann", "Ann");
    // 4. The others see the join; the joiner is not told of itself.
    assert_eq!(
        ann.recv_json().await,
        json!({"type": "user_join", "user_id": "bob", "username": "Bob"})
    );
    bob.expect_silence(QUIET).await;

    bob.send_json(json!({"message": "hello ann"})).await;
    for client in [&mut ann, &mut bob] {
        let message = client.recv_json().await;
        assert_chat_message(&message, "hello ann", "bob", "Bob");
        assert_eq!(message["seq"], 2);
    }

    bob.close().await;
    assert_eq!(
        ann.recv_json().await,
        json!({"type": "user_leave", "user_id": "bob", "username": "Bob"})
    );
}

#[tokio::test]
async fn a_users_second_tab_is_not_announced_and_only_its_last_leave_is() {
    let server = TestServer::start().await;
    let mut ann = connect_bearer(&server, "tabs", &server.user_token("ann").await).await;
    ann.recv_json().await;
    let bob_token = server.user_token("bob").await;
    let mut first = connect_bearer(&server, "tabs", &bob_token).await;
    first.recv_json().await;
    assert_eq!(ann.recv_json().await["type"], "user_join");
    let mut second = connect_bearer(&server, "tabs", &bob_token).await;
    let list = second.recv_json().await;
    assert_eq!(
        list["users"].as_array().unwrap().len(),
        2,
        "bob once: {list}"
    );
    ann.expect_silence(QUIET).await;

    first.close().await;
    ann.expect_silence(QUIET).await;
    second.close().await;
    assert_eq!(ann.recv_json().await["type"], "user_leave");
}

#[tokio::test]
async fn a_missing_bad_or_expired_token_closes_with_4001() {
    let server = TestServer::start().await;
    server.add_user("ann").await;
    let expired =
        sign(&json!({"sub": "ann", "username": "Ann", "type": "access", "exp": now() - 60}));
    let refresh = sign(&json!({"sub": "ann", "type": "refresh", "exp": now() + 600}));
    let (_, room_tokens) = room_codes(&server, "Ann", &[]).await;
    let forged = sign_with(
        &json!({"sub": "ann", "type": "access", "exp": now() + 600}),
        b"not-the-server-secret-not-the-server",
    );
    for query in [
        String::new(),
        "?token=garbage".to_owned(),
        format!("?token={expired}"),
        format!("?token={refresh}"),
        format!("?token={forged}"),
        format!("?token={}", room_tokens[0]),
    ] {
        let mut client = server.connect(&format!("/ws/chat/general/{query}")).await;
        client.expect_close(4001).await;
    }
    let mut client = connect_bearer(&server, "general", "not.a.jwt").await;
    client.expect_close(4001).await;
}

#[tokio::test]
async fn a_room_that_may_not_be_created_closes_with_4000() {
    let server = TestServer::start_with(|config| config.auto_create_rooms = false).await;
    let token = server.user_token("ann").await;
    let mut client = connect_bearer(&server, "nowhere", &token).await;
    let close = client.expect_close(4000).await;
    assert_eq!(close.reason, "room not found");
    assert!(server.store.room("nowhere").await.unwrap().is_none());

    server
        .store
        .create_room("somewhere", false, None)
        .await
        .unwrap();
    let mut client = connect_bearer(&server, "somewhere", &token).await;
    assert_eq!(client.recv_json().await["type"], "room_users_list");
}

#[tokio::test]
async fn an_invalid_room_name_closes_with_4000() {
    let server = TestServer::start().await;
    let token = server.user_token("ann").await;
    let mut client = connect_bearer(&server, "no%20spaces", &token).await;
    client.expect_close(4000).await;
}

#[tokio::test]
async fn a_private_room_closes_with_4000_for_those_outside_it() {
    let server = TestServer::start().await;
    let ann = server.user_token("ann").await;
    let bob = server.user_token("bob").await;
    server
        .store
        .create_room("hideout", true, Some("ann"))
        .await
        .unwrap();
    let mut outsider = connect_bearer(&server, "hideout", &bob).await;
    let close = outsider.expect_close(4000).await;
    assert_eq!(close.reason, "room not found", "does not say it exists");
    let mut member = connect_bearer(&server, "hideout", &ann).await;
    assert_eq!(member.recv_json().await["type"], "room_users_list");
}

#[tokio::test]
async fn every_bad_frame_is_answered_with_an_error_and_the_connection_keeps_working() {
    let server = TestServer::start().await;
    let mut ann = connect_bearer(&server, "errors", &server.user_token("ann").await).await;
    ann.recv_json().await;
    let too_long = json!({"message": "a".repeat(roomcast_server::DEFAULT_MAX_MESSAGE_CHARS + 1)});
    let cases = [
        ("not json".to_owned(), "not JSON"),
        ("[1, 2]".to_owned(), "JSON object"),
        ("{}".to_owned(), "'message' is required"),
        (json!({"text": "hi"}).to_string(), "'message' is required"),
        (json!({"message": 5}).to_string(), "must be a string"),
        (json!({"message": ""}).to_string(), "'message' is empty"),
        (json!({"message": "   "}).to_string(), "'message' is empty"),
        (too_long.to_string(), "longer than 2000 characters"),
    ];
    for (frame, expected) in cases {
        ann.send_text(&frame).await;
        let answer = ann.recv_json().await;
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(error.contains(expected), "{frame:.40}: {error}");
        assert_eq!(
            answer.as_object().unwrap().len(),
            1,
            "only the error: {answer}"
        );
    }
    ann.send_binary(vec![1, 2, 3]).await;
    assert!(ann.recv_json().await["error"].is_string());

    ann.send_json(json!({"message": "still here"})).await;
    let message = ann.recv_json().await;
    assert_chat_message(&message, "still here", "ann", "Ann");
    assert_eq!(message["seq"], 1, "nothing bad was stored");
}

#[tokio::test]
async fn history_on_connect_is_the_rooms_recent_messages_oldest_first() {
    let server = TestServer::start_with(|config| config.history_limit = 3).await;
    let mut ann = connect_bearer(&server, "log", &server.user_token("ann").await).await;
    ann.recv_json().await;
    for n in 1..=5 {
        ann.send_json(json!({"message": format!("m{n}")})).await;
        ann.recv_json().await;
    }
    let mut bob = connect_bearer(&server, "log", &server.user_token("bob").await).await;
    assert_eq!(bob.recv_json().await["type"], "room_users_list");
    for (n, seq) in [(3, 3), (4, 4), (5, 5)] {
        let message = bob.recv_json().await;
        assert_chat_message(&message, &format!("m{n}"), "ann", "Ann");
        assert_eq!(message["seq"], seq);
    }
    bob.expect_silence(QUIET).await;
}
