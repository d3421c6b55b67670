//! Seed 001's sends through the `Hub`: `broadcast` with exclude, `send_to`, `send_to_many`,
//! `join_room` / `leave_room` and `broadcast_to_room`.

use roomcast::Frame;
use serde_json::json;

use crate::common::{SILENCE, TestServer, expect_silence, room, user};

fn news(text: &str) -> Frame {
    Frame::json(&json!({ "news": text })).expect("JSON values encode")
}

#[tokio::test]
async fn broadcast_reaches_every_connection_but_the_excluded_users() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;
    let mut carol_tab = server.connect_as("carol").await;
    let mut carol_phone = server.connect_as("carol").await;

    let reached = server
        .hub
        .broadcast(news("for all but bob"), &[user("bob")])
        .await
        .expect("a single node cannot fail to broadcast");

    assert_eq!(reached, 3);
    for client in [&mut alice, &mut carol_tab, &mut carol_phone] {
        assert_eq!(
            client.recv_json().await,
            json!({ "news": "for all but bob" })
        );
    }
    bob.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn broadcast_without_exclusions_reaches_everyone() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    assert_eq!(server.hub.broadcast(news("all"), &[]).await.unwrap(), 2);

    assert_eq!(alice.recv_json().await, json!({ "news": "all" }));
    assert_eq!(bob.recv_json().await, json!({ "news": "all" }));
}

#[tokio::test]
async fn send_to_reaches_every_connection_of_the_user_and_nobody_else() {
    let server = TestServer::start().await;
    let mut alice_tab = server.connect_as("alice").await;
    let mut alice_phone = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    let reached = server
        .hub
        .send_to(&user("alice"), news("for alice"))
        .await
        .unwrap();

    assert_eq!(reached, 2);
    assert_eq!(alice_tab.recv_json().await, json!({ "news": "for alice" }));
    assert_eq!(
        alice_phone.recv_json().await,
        json!({ "news": "for alice" })
    );
    bob.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn send_to_a_user_who_is_not_connected_reaches_nobody() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;

    let reached = server
        .hub
        .send_to(&user("ghost"), news("boo"))
        .await
        .unwrap();

    assert_eq!(reached, 0);
    alice.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn send_to_many_reaches_only_the_listed_users() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;
    let mut carol = server.connect_as("carol").await;

    let reached = server
        .hub
        .send_to_many(&[user("alice"), user("carol")], news("for two"))
        .await
        .unwrap();

    assert_eq!(reached, 2);
    assert_eq!(alice.recv_json().await, json!({ "news": "for two" }));
    assert_eq!(carol.recv_json().await, json!({ "news": "for two" }));
    bob.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn broadcast_to_room_reaches_only_the_members_the_hub_joined() {
    let server = TestServer::start().await;
    let hub = &server.hub;
    let lobby = room("lobby");
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;
    let mut carol = server.connect_as("carol").await;

    assert!(
        hub.join_room(&user("alice"), &lobby).await.unwrap(),
        "alice is new in the lobby"
    );
    assert!(hub.join_room(&user("bob"), &lobby).await.unwrap());
    assert!(
        !hub.join_room(&user("bob"), &lobby).await.unwrap(),
        "bob is already in"
    );
    assert_eq!(hub.room_members(&lobby), [user("alice"), user("bob")]);

    assert_eq!(
        hub.broadcast_to_room(&lobby, news("lobby only"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(alice.recv_json().await, json!({ "news": "lobby only" }));
    assert_eq!(bob.recv_json().await, json!({ "news": "lobby only" }));
    carol.expect_silence(SILENCE).await;

    assert!(
        hub.leave_room(&user("bob"), &lobby).await.unwrap(),
        "bob was in the lobby"
    );
    assert!(
        !hub.leave_room(&user("bob"), &lobby).await.unwrap(),
        "bob is out already"
    );
    assert_eq!(hub.room_members(&lobby), [user("alice")]);

    assert_eq!(
        hub.broadcast_to_room(&lobby, news("bob left"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(alice.recv_json().await, json!({ "news": "bob left" }));
    expect_silence(&mut [&mut bob, &mut carol]).await;
}

#[tokio::test]
async fn hub_join_room_puts_every_connection_of_the_user_in_the_room() {
    let server = TestServer::start().await;
    let lobby = room("lobby");
    let mut alice_tab = server.connect_as("alice").await;
    let mut alice_phone = server.connect_as("alice").await;

    server.hub.join_room(&user("alice"), &lobby).await.unwrap();

    assert_eq!(
        server
            .hub
            .broadcast_to_room(&lobby, news("hi"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(alice_tab.recv_json().await, json!({ "news": "hi" }));
    assert_eq!(alice_phone.recv_json().await, json!({ "news": "hi" }));
}

#[tokio::test]
async fn a_binary_frame_is_delivered_as_binary() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;

    server
        .hub
        .send_to(&user("alice"), Frame::binary(vec![1_u8, 2, 3]))
        .await
        .unwrap();

    assert_eq!(alice.recv_binary().await, [1, 2, 3]);
}

#[tokio::test]
async fn a_sender_reaches_its_connection_after_the_hook_returned_and_fails_once_it_is_gone() {
    let mut server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    alice.send_text(r#"{"cmd":"keep_sender"}"#).await;
    assert_eq!(alice.recv_json().await["type"], "kept");
    let sender = server
        .senders
        .lock()
        .unwrap()
        .pop()
        .expect("the probe kept one");

    sender.send(news("later")).expect("the connection is open");
    assert_eq!(alice.recv_json().await, json!({ "news": "later" }));

    drop(alice);
    server.disconnected().await;
    assert_eq!(
        sender.send(news("too late")),
        Err(roomcast::SendError::Closed)
    );
}

/// A connection roomcast cannot take apart (a TLS layer in front of the application, say) has
/// no write side in its queue: deliverers wake its task, which writes as before. Broadcasts and
/// room messages reach it all the same, once each and in order.
#[tokio::test]
async fn a_stream_that_is_not_a_plain_tcp_socket_is_served_all_the_same() {
    let server = TestServer::builder().wrapped().start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;
    let lobby = room("lobby");
    for who in ["alice", "bob"] {
        server.hub.join_room(&user(who), &lobby).await.unwrap();
    }
    for n in 0..20 {
        let reached = server
            .hub
            .broadcast_to_room(&lobby, news(&n.to_string()))
            .await
            .unwrap();
        assert_eq!(reached, 2);
    }
    assert_eq!(server.hub.broadcast(news("all"), &[]).await.unwrap(), 2);
    for client in [&mut alice, &mut bob] {
        for n in 0..20 {
            assert_eq!(client.recv_json().await, json!({ "news": n.to_string() }));
        }
        assert_eq!(client.recv_json().await, json!({ "news": "all" }));
    }
    expect_silence(&mut [&mut alice, &mut bob]).await;
}
