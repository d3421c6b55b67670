//! Seed 000's connection-management queries: `connected_users`, `is_connected`,
//! `room_members`, `user_rooms`, `connection_count`, with one user holding two connections.

use serde_json::json;

use crate::common::{TestClient, TestServer, room, user};

async fn join(client: &mut TestClient, room: &str) {
    client
        .send_json(&json!({ "cmd": "join", "room": room }))
        .await;
    assert_eq!(client.recv_json().await["type"], "joined");
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

#[tokio::test]
async fn connected_users_lists_each_user_once_and_connection_count_counts_every_connection() {
    let server = TestServer::start().await;
    let hub = &server.hub;
    assert_eq!(hub.connection_count(), 0);
    assert!(hub.connected_users().is_empty());

    let _alice_tab = server.connect_as("alice").await;
    let _alice_phone = server.connect_as("alice").await;
    let _bob = server.connect_as("bob").await;

    assert_eq!(hub.connection_count(), 3);
    assert_eq!(sorted(hub.connected_users()), [user("alice"), user("bob")]);
    assert!(hub.is_connected(&user("alice")));
    assert!(hub.is_connected(&user("bob")));
    assert!(!hub.is_connected(&user("carol")));
}

#[tokio::test]
async fn a_user_stays_connected_until_their_last_connection_closes() {
    let server = TestServer::start().await;
    let hub = &server.hub;
    let alice_tab = server.connect_as("alice").await;
    let alice_phone = server.connect_as("alice").await;
    let _bob = server.connect_as("bob").await;

    alice_tab.close().await;
    server.wait_for_connections(2).await;
    assert!(
        hub.is_connected(&user("alice")),
        "alice still has her phone"
    );
    assert_eq!(sorted(hub.connected_users()), [user("alice"), user("bob")]);

    alice_phone.close().await;
    server.wait_for_connections(1).await;
    assert!(!hub.is_connected(&user("alice")));
    assert_eq!(hub.connected_users(), [user("bob")]);
}

#[tokio::test]
async fn room_members_and_user_rooms_follow_joins_and_leaves() {
    let server = TestServer::start().await;
    let hub = &server.hub;
    let (lobby, games) = (room("lobby"), room("games"));
    let mut alice_tab = server.connect_as("alice").await;
    let mut alice_phone = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    join(&mut alice_tab, "lobby").await;
    join(&mut alice_phone, "lobby").await;
    join(&mut bob, "lobby").await;
    join(&mut bob, "games").await;

    assert_eq!(
        hub.room_members(&lobby),
        [user("alice"), user("bob")],
        "alice is listed once although both her connections joined"
    );
    assert_eq!(hub.room_members(&games), [user("bob")]);
    assert_eq!(hub.user_rooms(&user("alice")), [room("lobby")]);
    assert_eq!(hub.user_rooms(&user("bob")), [room("games"), room("lobby")]);
    assert!(hub.user_rooms(&user("carol")).is_empty());
    assert!(hub.room_members(&room("nowhere")).is_empty());

    bob.send_json(&json!({ "cmd": "leave", "room": "games" }))
        .await;
    assert_eq!(bob.recv_json().await["was_member"], true);
    assert!(hub.room_members(&games).is_empty());
    assert_eq!(hub.user_rooms(&user("bob")), [room("lobby")]);

    alice_tab.close().await;
    server.wait_for_connections(2).await;
    assert_eq!(
        hub.room_members(&lobby),
        [user("alice"), user("bob")],
        "alice's phone is still in the lobby"
    );
    alice_phone.close().await;
    server.wait_for_connections(1).await;
    assert_eq!(hub.room_members(&lobby), [user("bob")]);
    assert!(hub.user_rooms(&user("alice")).is_empty());
}
