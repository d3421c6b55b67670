//! Tokens on live connections (issue #18, item 4): a connection is told before its access
//! token expires (`token_expiring`, native only), closed at `exp` plus the leeway (4001; seed
//! 003: 1008) unless it sent a `refresh` with a fresh token of the same user.
//!
//! The test server runs with a leeway of 0 and its sweep once a second; tokens here expire in
//! about 3 s. Nothing is timed: a test waits for the event (bounded by `WAIT`) and, where it
//! needs the first expiry to have passed, for another connection with the same token to be
//! closed, which proves the sweep has looked at the clock past it.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::common::{TestClient, TestServer, capitalize, now, room_codes, sign};

/// Far enough ahead to still be valid at the end of a test, short enough to tell apart.
const SHORT: u64 = 3;

/// An access token for `sub` expiring at `exp`.
fn access_token(sub: &str, exp: u64) -> String {
    sign(&json!({"sub": sub, "username": capitalize(sub), "type": "access", "exp": exp}))
}

/// A server whose users `users` exist.
async fn server_with(users: &[&str], notice: Option<Duration>) -> TestServer {
    let server = TestServer::start_with(|config| {
        if let Some(notice) = notice {
            config.session.token_expiry_notice = notice;
        }
    })
    .await;
    for user in users {
        server.add_user(user).await;
    }
    server
}

/// Connects to `/ws/auth` with `token`.
async fn connect(server: &TestServer, token: &str) -> TestClient {
    server.connect(&format!("/ws/auth?token={token}")).await
}

/// Sends `{"type":"refresh","token":token}` and returns the answer (`refreshed` or `error`).
async fn refresh(client: &mut TestClient, token: &str) -> Value {
    client
        .send_json(json!({"type": "refresh", "token": token}))
        .await;
    loop {
        let answer = client.recv_json().await;
        if answer["type"] == "refreshed" || answer["type"] == "error" {
            return answer;
        }
    }
}

/// Every data message up to the close frame (bounded by `recv`'s wait each), and the close.
async fn messages_until_close(client: &mut TestClient) -> (Vec<Value>, CloseFrame) {
    let mut seen = Vec::new();
    loop {
        match client.recv().await {
            Message::Text(text) => seen.push(serde_json::from_str(&text).unwrap()),
            Message::Close(Some(close)) => return (seen, close),
            other => panic!("expected data or a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_token_expiring_in_3s_gets_token_expiring_then_4001_token_expired() {
    let server = server_with(&["ann"], Some(Duration::from_secs(3))).await;
    let exp = now() + SHORT;
    let mut ann = connect(&server, &access_token("ann", exp)).await;

    let notice = ann.recv_type("token_expiring").await;
    assert_eq!(notice["data"], json!({"expires_at": exp}), "{notice}");

    let close = ann.expect_close(4001).await;
    assert_eq!(close.reason, "token expired");
    assert!(now() >= exp, "closed before its token expired");
}

#[tokio::test]
async fn a_refresh_for_the_same_user_keeps_the_connection_open_past_the_first_expiry() {
    let server = server_with(&["ann"], None).await;
    let exp = now() + SHORT;
    let first = access_token("ann", exp);
    let mut ann = connect(&server, &first).await;
    // The same token, not refreshed: its close shows the sweep has passed `exp`.
    let mut witness = connect(&server, &first).await;
    assert_eq!(
        ann.recv_type("token_expiring").await["data"]["expires_at"],
        exp
    );

    let later = now() + 600;
    let answer = refresh(&mut ann, &access_token("ann", later)).await;
    assert_eq!(answer["type"], "refreshed", "{answer}");
    assert_eq!(answer["data"], json!({"expires_at": later}));

    witness.expect_close(4001).await;
    assert!(now() >= exp);
    // Still open, sending and receiving.
    ann.join("lobby").await;
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "still here"}))
        .await;
    let message = ann.recv_type("message").await;
    assert_eq!(message["content"], "still here");
    ann.recv_type("ack").await;
}

#[tokio::test]
async fn a_refresh_with_another_users_token_is_refused_and_the_connection_still_expires() {
    let server = server_with(&["ann", "bob"], None).await;
    let exp = now() + SHORT;
    let mut ann = connect(&server, &access_token("ann", exp)).await;

    let answer = refresh(&mut ann, &access_token("bob", now() + 600)).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["content"], "token is for another user");

    let (seen, close) = messages_until_close(&mut ann).await;
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(now() >= exp);
    assert!(
        seen.iter().all(|message| message["type"] != "refreshed"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn invalid_refresh_and_foreign_tokens_get_an_error_and_change_nothing() {
    let server = server_with(&["ann"], None).await;
    let exp = now() + 600;
    let mut ann = connect(&server, &access_token("ann", exp)).await;
    let cases = [
        ("garbage".to_owned(), "invalid token"),
        (
            crate::common::sign_with(
                &json!({"sub": "ann", "type": "access", "exp": now() + 900}),
                b"another-secret-another-secret-1234",
            ),
            "invalid token",
        ),
        (
            sign(&json!({"sub": "ann", "type": "refresh", "jti": "r1", "exp": now() + 900})),
            "wrong token type",
        ),
        (
            sign(
                &json!({"sub": "ann", "client_id": "ann", "room_id": "K7PQ2XHM", "name": "Ann",
                         "type": "room", "exp": now() + 900}),
            ),
            "wrong token type",
        ),
        (access_token("ann", now() - 60), "token expired"),
        (access_token("ghost", now() + 900), "unknown user"),
    ];
    for (token, reason) in cases {
        let answer = refresh(&mut ann, &token).await;
        assert_eq!(answer["type"], "error", "{reason}: {answer}");
        assert_eq!(answer["content"], reason);
    }
    // A `refresh` without a token is a malformed request.
    ann.send_json(json!({"type": "refresh"})).await;
    assert_eq!(
        ann.recv_type("error").await["content"],
        "'refresh' needs a token"
    );
    // The connection kept its token: a good refresh still works, and moves `expires_at`.
    let later = now() + 1200;
    let answer = refresh(&mut ann, &access_token("ann", later)).await;
    assert_eq!(answer["data"]["expires_at"], later, "{answer}");
}

#[tokio::test]
async fn a_seed_004_connection_closes_with_4001_at_expiry_without_a_notice() {
    let server = server_with(&["ann"], None).await;
    let exp = now() + SHORT;
    let token = access_token("ann", exp);
    let mut ann = server
        .connect(&format!("/ws/chat/general/?token={token}"))
        .await;

    let (seen, close) = messages_until_close(&mut ann).await;
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert_eq!(close.reason, "token expired");
    assert!(now() >= exp);
    assert_eq!(seen[0]["type"], "room_users_list", "{seen:?}");
    assert!(
        seen.iter()
            .all(|message| message["type"] != "token_expiring"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_seed_003_room_token_connection_closes_with_1008_at_expiry() {
    let server = server_with(&[], None).await;
    let (room_id, _) = room_codes(&server, "Ann", &[]).await;
    let exp = now() + SHORT;
    let token = sign(&json!({"sub": "c1", "client_id": "c1", "room_id": room_id,
                             "name": "Bo", "type": "room", "exp": exp}));
    let mut bo = server.connect(&format!("/ws/chat?token={token}")).await;

    let (seen, close) = messages_until_close(&mut bo).await;
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert_eq!(close.reason, "Token expired");
    assert!(now() >= exp);
    assert!(seen.is_empty(), "no notice, no history: {seen:?}");
}

#[tokio::test]
async fn a_zero_notice_sends_no_token_expiring_but_still_closes() {
    let server = server_with(&["ann"], Some(Duration::ZERO)).await;
    let exp = now() + SHORT;
    let mut ann = connect(&server, &access_token("ann", exp)).await;

    let (seen, close) = messages_until_close(&mut ann).await;
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(seen.is_empty(), "{seen:?}");
}
