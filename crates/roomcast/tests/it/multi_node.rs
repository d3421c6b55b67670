//! Two nodes in one process: two hubs joined by one `MemoryBus`, each serving its own router on
//! its own port, as two servers behind a load balancer would.

use std::sync::Arc;

use roomcast::broker::memory::MemoryBus;
use roomcast::protocol::native::NATIVE;
use roomcast::{Frame, Hub, SessionConfig};
use serde_json::json;

use crate::common::{SILENCE, TestClient, TestServer, expect_silence, room, user};

async fn node(bus: &MemoryBus) -> Hub {
    Hub::builder(SessionConfig::default())
        .broker(Arc::new(bus.broker()))
        .build()
        .await
        .expect("a memory broker starts")
}

/// Two servers on one bus.
async fn two_nodes() -> (TestServer, TestServer) {
    let bus = MemoryBus::new();
    let a = TestServer::builder().hub(node(&bus).await).start().await;
    let b = TestServer::builder().hub(node(&bus).await).start().await;
    assert_ne!(a.addr, b.addr);
    assert_ne!(a.hub.node_id(), b.hub.node_id());
    (a, b)
}

async fn join(client: &mut TestClient, room: &str) {
    client
        .send_json(&json!({ "cmd": "join", "room": room }))
        .await;
    let reply = client.recv_json().await;
    assert_eq!(reply["type"], "joined", "got {reply}");
}

#[tokio::test]
async fn broadcast_to_room_on_one_node_reaches_members_on_the_other_once() {
    let (a, b) = two_nodes().await;
    let mut alice = a.connect_as("alice").await;
    let mut bob = b.connect_as("bob").await;
    let mut carol = b.connect_as("carol").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;

    let said = Frame::json(&json!({ "from": "node a" })).unwrap();
    let reached = a.hub.broadcast_to_room(&room("lobby"), said).await.unwrap();

    assert_eq!(reached, 1, "the count is of node A's own connections");
    assert_eq!(alice.recv_json().await, json!({ "from": "node a" }));
    assert_eq!(bob.recv_json().await, json!({ "from": "node a" }));
    // Delivered once: no echo back to A, no second copy on B, nothing for non-members.
    expect_silence(&mut [&mut alice, &mut bob, &mut carol]).await;
    // Membership stays node-local.
    assert_eq!(a.hub.room_members(&room("lobby")), [user("alice")]);
    assert_eq!(b.hub.room_members(&room("lobby")), [user("bob")]);
}

#[tokio::test]
async fn a_node_whose_members_all_left_no_longer_receives_the_room() {
    let (a, b) = two_nodes().await;
    let mut alice = a.connect_as("alice").await;
    let mut bob = b.connect_as("bob").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;

    bob.send_json(&json!({ "cmd": "leave", "room": "lobby" }))
        .await;
    assert_eq!(bob.recv_json().await["was_member"], true);
    let said = Frame::json(&json!({ "from": "node a" })).unwrap();
    a.hub.broadcast_to_room(&room("lobby"), said).await.unwrap();

    assert_eq!(alice.recv_json().await, json!({ "from": "node a" }));
    bob.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn send_to_and_broadcast_reach_users_on_the_other_node() {
    let (a, b) = two_nodes().await;
    let mut alice = a.connect_as("alice").await;
    let mut bob = b.connect_as("bob").await;
    let mut dave = b.connect_as("dave").await;

    let direct = Frame::json(&json!({ "dm": "for bob" })).unwrap();
    assert_eq!(a.hub.send_to(&user("bob"), direct).await.unwrap(), 0);
    assert_eq!(bob.recv_json().await, json!({ "dm": "for bob" }));
    dave.expect_silence(SILENCE).await;

    let all = Frame::json(&json!({ "all": "but dave" })).unwrap();
    assert_eq!(a.hub.broadcast(all, &[user("dave")]).await.unwrap(), 1);
    assert_eq!(alice.recv_json().await, json!({ "all": "but dave" }));
    assert_eq!(bob.recv_json().await, json!({ "all": "but dave" }));
    expect_silence(&mut [&mut alice, &mut bob, &mut dave]).await;
}

#[tokio::test]
async fn a_join_on_one_node_is_announced_to_members_on_the_other() {
    let bus = MemoryBus::new();
    let native = |endpoint: roomcast::Endpoint<_>| endpoint.dialect(&NATIVE);
    let a = TestServer::builder()
        .hub(node(&bus).await)
        .endpoint(native)
        .start()
        .await;
    let b = TestServer::builder()
        .hub(node(&bus).await)
        .endpoint(native)
        .start()
        .await;
    let mut bob = b.connect_as("bob").await;
    bob.send_json(&json!({ "cmd": "join", "room": "lobby" }))
        .await;
    assert_eq!(bob.recv_json().await["type"], "join");
    assert_eq!(bob.recv_json().await["type"], "joined");

    let mut alice = a.connect_as("alice").await;
    alice
        .send_json(&json!({ "cmd": "join", "room": "lobby" }))
        .await;

    let announcement = bob.recv_json().await;
    assert_eq!(
        (
            &announcement["type"],
            &announcement["room"],
            &announcement["user_id"]
        ),
        (&json!("join"), &json!("lobby"), &json!("alice"))
    );
    assert_eq!(alice.recv_json().await["type"], "join");
    assert_eq!(alice.recv_json().await["type"], "joined");
    // Once each: bob's node does not send alice's join back to her node.
    expect_silence(&mut [&mut alice, &mut bob]).await;
}

/// A node whose rooms are all batched, with a presence interval long enough that only
/// `Hub::flush_presence` hands batches out.
async fn batched_node(bus: &MemoryBus) -> Hub {
    let config = SessionConfig {
        presence: roomcast::PresenceConfig {
            mode: roomcast::PresenceMode::Batched,
            interval: std::time::Duration::from_secs(60),
            ..roomcast::PresenceConfig::default()
        },
        ..SessionConfig::default()
    };
    Hub::builder(config)
        .broker(Arc::new(bus.broker()))
        .build()
        .await
        .expect("a memory broker starts")
}

#[tokio::test]
async fn in_a_batched_room_each_node_hands_its_own_members_the_other_nodes_joins_once() {
    let bus = MemoryBus::new();
    let native = |endpoint: roomcast::Endpoint<_>| endpoint.dialect(&NATIVE);
    let a = TestServer::builder()
        .hub(batched_node(&bus).await)
        .endpoint(native)
        .start()
        .await;
    let b = TestServer::builder()
        .hub(batched_node(&bus).await)
        .endpoint(native)
        .start()
        .await;
    let mut alice = a.connect_as("alice").await;
    alice
        .send_json(&json!({ "cmd": "join", "room": "lobby" }))
        .await;
    // No `join` announcement in a batched room: the hook's reply comes first.
    assert_eq!(alice.recv_json().await["type"], "joined");
    a.hub.flush_presence().await;
    let own = alice.recv_json().await;
    assert_eq!(own["type"], "presence", "{own}");
    assert_eq!(
        own["data"]["joined"],
        json!([{"id": "alice", "username": "Name of alice"}])
    );

    let mut bob = b.connect_as("bob").await;
    bob.send_json(&json!({ "cmd": "join", "room": "lobby" }))
        .await;
    assert_eq!(bob.recv_json().await["type"], "joined");
    // Node B batches for its own member: bob's own join, once B flushes.
    b.hub.flush_presence().await;
    let update = bob.recv_json().await;
    assert_eq!(update["type"], "presence", "{update}");
    assert_eq!(update["data"]["joined"][0]["id"], "bob");

    // Node A gets bob's join through the broker and batches it for alice: flushed until it
    // arrives (bounded), it reaches her once, as a `presence` update.
    let mut seen = None;
    for _ in 0..200 {
        a.hub.flush_presence().await;
        if let Ok(next) =
            tokio::time::timeout(std::time::Duration::from_millis(25), alice.recv_json()).await
        {
            seen = Some(next);
            break;
        }
    }
    let update = seen.expect("bob's join reached node A's batch");
    assert_eq!(update["type"], "presence", "{update}");
    assert_eq!(
        update["data"],
        json!({"joined": [{"id": "bob", "username": "Name of bob"}], "left": [], "count": 1}),
        "the count is node A's own without a Presence"
    );
    a.hub.flush_presence().await;
    b.hub.flush_presence().await;
    expect_silence(&mut [&mut alice, &mut bob]).await;
}
