//! Presence modes (`ROOMCAST_PRESENCE_MODE`): full, batched, counts and auto, on the native
//! envelope and on seed 004's endpoint. The interval is long (60 s) so that the timer never
//! fires during a test: each test hands the batches out with `Hub::flush_presence`, which is
//! what the timer does, at the moment it chooses; one test lets the timer do it.

use std::time::Duration;

use roomcast::{PresenceConfig, PresenceMode, UserId};
use serde_json::{Value, json};

use crate::common::*;

const QUIET: Duration = Duration::from_millis(300);

async fn server(mode: PresenceMode, batch_above: usize, interval: Duration) -> TestServer {
    TestServer::start_with(|config| {
        config.session.presence = PresenceConfig {
            mode,
            batch_above,
            interval,
            ..PresenceConfig::default()
        };
    })
    .await
}

/// A native client of `user` in `room`, with everything the join sent it read.
async fn member(server: &TestServer, user: &str, room: &str) -> TestClient {
    let mut client = server.connect_as("/ws/auth", user).await;
    client.join(room).await;
    client
}

/// Leaves `room` and waits for the receipt: the leave is in the room's batch by then.
async fn leave(client: &mut TestClient, room: &str) {
    client
        .send_json(json!({"type": "leave", "room": room}))
        .await;
    client.recv_type("leave").await;
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list, got {list}"))
        .iter()
        .map(|user| user.get("id").unwrap_or(user).as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_batched_room_coalesces_a_join_and_a_leave_into_nothing() {
    let server = server(PresenceMode::Batched, 0, Duration::from_secs(60)).await;
    let mut ann = member(&server, "ann", "lobby").await;
    server.hub.flush_presence().await;
    assert_eq!(
        ids(&ann.recv_type("presence").await["data"]["joined"]),
        ["ann"]
    );

    let mut bob = member(&server, "bob", "lobby").await;
    leave(&mut bob, "lobby").await;
    ann.expect_silence(QUIET).await;
    server.hub.flush_presence().await;
    ann.expect_silence(QUIET).await;

    // What stays is announced once, without bob.
    let _carol = member(&server, "carol", "lobby").await;
    server.hub.flush_presence().await;
    let update = ann.recv_json().await;
    assert_eq!(update["type"], "presence", "{update}");
    assert_eq!(update["room"], "lobby");
    assert_eq!(
        update["data"],
        json!({"joined": [{"id": "carol", "username": "Carol"}], "left": [], "count": 2})
    );
    ann.expect_silence(QUIET).await;
}

#[tokio::test]
async fn each_member_gets_one_presence_frame_per_interval_with_every_change_in_it() {
    let server = server(PresenceMode::Batched, 0, Duration::from_secs(60)).await;
    let mut ann = member(&server, "ann", "lobby").await;
    server.hub.flush_presence().await;
    ann.recv_type("presence").await;
    let mut others = Vec::new();
    for user in ["bob", "carol", "dan"] {
        others.push(member(&server, user, "lobby").await);
    }
    leave(&mut others[2], "lobby").await;
    ann.expect_silence(QUIET).await;
    server.hub.flush_presence().await;
    let update = ann.recv_json().await;
    assert_eq!(update["type"], "presence", "{update}");
    assert_eq!(ids(&update["data"]["joined"]), ["bob", "carol"]);
    assert_eq!(update["data"]["left"], json!([]));
    assert_eq!(update["data"]["count"], 3);
    ann.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_member_that_joined_during_the_interval_gets_only_what_came_after_its_list() {
    let server = server(PresenceMode::Batched, 0, Duration::from_secs(60)).await;
    let mut ann = member(&server, "ann", "lobby").await;
    server.hub.flush_presence().await;
    ann.recv_type("presence").await;

    let mut bob = member(&server, "bob", "lobby").await;
    let mut carol = server.connect_as("/ws/auth", "carol").await;
    let list = carol.join("lobby").await;
    assert_eq!(
        list["data"],
        json!(["ann", "bob", "carol"]),
        "exact in every mode"
    );
    leave(&mut bob, "lobby").await;
    server.hub.flush_presence().await;

    // ann's last update had ann only: carol is new, bob came and went.
    let update = ann.recv_type("presence").await;
    assert_eq!(ids(&update["data"]["joined"]), ["carol"]);
    assert_eq!(update["data"]["left"], json!([]));
    // carol's list named bob: she learns that he left, and of her own join.
    let update = carol.recv_type("presence").await;
    assert_eq!(ids(&update["data"]["joined"]), ["carol"]);
    assert_eq!(update["data"]["left"], json!(["bob"]));
    assert_eq!(update["data"]["count"], 2);
    // The member list on request stays exact.
    carol
        .send_json(json!({"type": "user_list", "room": "lobby"}))
        .await;
    assert_eq!(
        carol.recv_type("user_list").await["data"],
        json!(["ann", "carol"])
    );
}

#[tokio::test]
async fn the_presence_timer_hands_batches_out_by_itself() {
    let server = server(PresenceMode::Batched, 0, Duration::from_millis(50)).await;
    let mut ann = member(&server, "ann", "lobby").await;
    let _bob = member(&server, "bob", "lobby").await;
    // Bounded by `recv`'s wait; ann's own join may come in an update of its own first.
    for _ in 0..2 {
        let update = ann.recv_type("presence").await;
        if ids(&update["data"]["joined"]).contains(&"bob") {
            return;
        }
    }
    panic!("bob's join was not handed out by the timer");
}

#[tokio::test]
async fn a_counts_room_sends_only_the_count_and_only_when_it_changed() {
    let server = server(PresenceMode::Counts, 0, Duration::from_secs(60)).await;
    let mut ann = member(&server, "ann", "hall").await;
    server.hub.flush_presence().await;
    let update = ann.recv_json().await;
    assert_eq!(update["type"], "presence", "{update}");
    assert_eq!(update["data"], json!({"count": 1}));

    let mut bob = member(&server, "bob", "hall").await;
    server.hub.flush_presence().await;
    assert_eq!(ann.recv_json().await["data"], json!({"count": 2}));
    // A join and a leave that leave the count as it was: nothing.
    let mut carol = member(&server, "carol", "hall").await;
    leave(&mut carol, "hall").await;
    server.hub.flush_presence().await;
    ann.expect_silence(QUIET).await;

    leave(&mut bob, "hall").await;
    server.hub.flush_presence().await;
    assert_eq!(ann.recv_json().await["data"], json!({"count": 1}));
    // No `join` or `leave` announcement ever reached ann.
    ann.expect_silence(QUIET).await;
}

#[tokio::test]
async fn auto_switches_a_room_to_batched_above_the_threshold() {
    let server = server(PresenceMode::Auto, 2, Duration::from_secs(60)).await;
    let mut ann = member(&server, "ann", "lobby").await;
    let _bob = member(&server, "bob", "lobby").await;
    // Two members: full, as it happens.
    let join = ann.recv_json().await;
    assert_eq!(
        (&join["type"], &join["user_id"]),
        (&json!("join"), &json!("bob"))
    );

    // The third is above 2: batched.
    let _carol = member(&server, "carol", "lobby").await;
    ann.expect_silence(QUIET).await;
    server.hub.flush_presence().await;
    let update = ann.recv_json().await;
    assert_eq!(update["type"], "presence", "{update}");
    assert_eq!(ids(&update["data"]["joined"]), ["carol"]);
    assert_eq!(update["data"]["count"], 3);
}

#[tokio::test]
async fn seed_004_clients_in_a_batched_room_get_the_net_changes_as_their_own_events() {
    let server = server(PresenceMode::Batched, 0, Duration::from_secs(60)).await;
    let connect = |user: &'static str| {
        let server = &server;
        async move {
            let token = server.user_token(user).await;
            let mut client = server
                .connect(&format!("/ws/chat/general/?token={token}"))
                .await;
            assert_eq!(client.recv_json().await["type"], "room_users_list");
            client
        }
    };
    let mut ann = connect("ann").await;
    server.hub.flush_presence().await;
    ann.expect_silence(QUIET).await; // her own join: seed 004 does not announce it to her

    let mut bob = connect("bob").await;
    let dan = connect("dan").await;
    dan.close().await;
    server
        .wait_for(|hub| !hub.is_connected(&UserId::from("dan")))
        .await;
    server.hub.flush_presence().await;
    // dan came and went: not announced. bob is, as seed 004 says.
    assert_eq!(
        ann.recv_json().await,
        json!({"type": "user_join", "user_id": "bob", "username": "Bob"})
    );
    ann.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;

    bob.close().await;
    server
        .wait_for(|hub| !hub.is_connected(&UserId::from("bob")))
        .await;
    server.hub.flush_presence().await;
    assert_eq!(
        ann.recv_json().await,
        json!({"type": "user_leave", "user_id": "bob", "username": "Bob"})
    );
}

#[tokio::test]
async fn seed_004_clients_in_a_counts_room_get_nothing_they_cannot_parse() {
    let server = server(PresenceMode::Counts, 0, Duration::from_secs(60)).await;
    let token = server.user_token("ann").await;
    let mut ann = server
        .connect(&format!("/ws/chat/general/?token={token}"))
        .await;
    assert_eq!(ann.recv_json().await["type"], "room_users_list");
    let token = server.user_token("bob").await;
    let mut bob = server
        .connect(&format!("/ws/chat/general/?token={token}"))
        .await;
    let list = bob.recv_json().await;
    assert_eq!(list["users"].as_array().unwrap().len(), 2, "exact: {list}");
    server.hub.flush_presence().await;
    ann.expect_silence(QUIET).await;
    // Messages still flow.
    bob.send_json(json!({"message": "hi"})).await;
    assert_eq!(ann.recv_json().await["type"], "chat_message");
}
