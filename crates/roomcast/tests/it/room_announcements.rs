//! `Session::join` / `Session::leave` on an endpoint whose dialect encodes `Event::Joined` and
//! `Event::Left` (the native envelope): a user's join is announced once however many of their
//! connections join, and their leave only when the last one leaves.

use roomcast::protocol::native::NATIVE;
use serde_json::{Value, json};

use crate::common::{SILENCE, TestClient, TestServer, expect_silence, room, user};

async fn native_server() -> TestServer {
    TestServer::builder()
        .endpoint(|endpoint| endpoint.dialect(&NATIVE))
        .start()
        .await
}

async fn join(client: &mut TestClient, room: &str) -> Value {
    client
        .send_json(&json!({ "cmd": "join", "room": room }))
        .await;
    client.recv_json().await
}

async fn leave(client: &mut TestClient, room: &str) -> Value {
    client
        .send_json(&json!({ "cmd": "leave", "room": room }))
        .await;
    client.recv_json().await
}

/// Asserts `message` is a native `join`/`leave` announcement of `user_id` in `room`.
fn assert_announcement(message: &Value, kind: &str, room: &str, user_id: &str) {
    assert_eq!(
        (&message["type"], &message["room"], &message["user_id"]),
        (&json!(kind), &json!(room), &json!(user_id)),
        "expected a {kind} of {user_id} in {room}, got {message}"
    );
    assert_eq!(message["username"], format!("Name of {user_id}"));
}

#[tokio::test]
async fn a_join_is_announced_once_per_user_even_with_two_connections() {
    let server = native_server().await;
    let mut bob = server.connect_as("bob").await;
    let mut alice_tab = server.connect_as("alice").await;
    let mut alice_phone = server.connect_as("alice").await;

    // bob's own join is announced to the room, bob included, before the hook's reply.
    let announcement = join(&mut bob, "lobby").await;
    assert_announcement(&announcement, "join", "lobby", "bob");
    assert_eq!(bob.recv_json().await["announced"], true);

    let announcement = join(&mut alice_tab, "lobby").await;
    assert_announcement(&announcement, "join", "lobby", "alice");
    let reply = alice_tab.recv_json().await;
    assert_eq!(
        (&reply["type"], &reply["announced"]),
        (&json!("joined"), &json!(true))
    );
    assert_announcement(&bob.recv_json().await, "join", "lobby", "alice");

    // alice's second connection joins: nothing to announce, she is already in.
    let reply = join(&mut alice_phone, "lobby").await;
    assert_eq!(
        (
            &reply["type"],
            &reply["announced"],
            &reply["already_member"]
        ),
        (&json!("joined"), &json!(false), &json!(false))
    );
    expect_silence(&mut [&mut bob, &mut alice_tab]).await;

    // The same connection joining again changes nothing.
    let reply = join(&mut alice_phone, "lobby").await;
    assert_eq!(reply["already_member"], true);
    assert_eq!(
        server.hub.room_members(&room("lobby")),
        [user("alice"), user("bob")]
    );
}

#[tokio::test]
async fn a_leave_is_announced_only_when_the_last_connection_leaves() {
    let server = native_server().await;
    let mut bob = server.connect_as("bob").await;
    let mut alice_tab = server.connect_as("alice").await;
    let mut alice_phone = server.connect_as("alice").await;
    join(&mut bob, "lobby").await;
    bob.recv_json().await;
    join(&mut alice_tab, "lobby").await;
    alice_tab.recv_json().await;
    bob.recv_json().await;
    join(&mut alice_phone, "lobby").await;

    let reply = leave(&mut alice_tab, "lobby").await;
    assert_eq!(
        (&reply["type"], &reply["was_member"]),
        (&json!("left"), &json!(true))
    );
    bob.expect_silence(SILENCE).await;

    // alice's last connection leaves: now the room hears it. The leaving connection is out of
    // the room by then, so it gets only the hook's reply.
    let reply = leave(&mut alice_phone, "lobby").await;
    assert_eq!(
        (&reply["type"], &reply["was_member"]),
        (&json!("left"), &json!(true))
    );
    assert_announcement(&bob.recv_json().await, "leave", "lobby", "alice");
    alice_phone.expect_silence(SILENCE).await;
    assert_eq!(server.hub.room_members(&room("lobby")), [user("bob")]);
}

#[tokio::test]
async fn closing_the_last_connection_in_a_room_announces_the_leave() {
    let server = native_server().await;
    let mut bob = server.connect_as("bob").await;
    let mut alice_tab = server.connect_as("alice").await;
    let mut alice_phone = server.connect_as("alice").await;
    join(&mut bob, "lobby").await;
    bob.recv_json().await;
    join(&mut alice_tab, "lobby").await;
    alice_tab.recv_json().await;
    bob.recv_json().await;
    join(&mut alice_phone, "lobby").await;

    alice_tab.close().await;
    server.wait_for_connections(2).await;
    bob.expect_silence(SILENCE).await;

    alice_phone.close().await;
    assert_announcement(&bob.recv_json().await, "leave", "lobby", "alice");
}
