//! One hub, three wire formats: a native client (seed 002), a Channels-style client (seed
//! 004) and a room-token client (seed 003) in the same room see each other's messages and
//! presence, each in its own format, and history written through one replays in the others'.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

const QUIET: Duration = Duration::from_millis(300);

/// The three clients in one room: ann (native, `/ws/auth`), bob (Channels style), carol
/// (room token). Returns them with the room's code and carol's client id.
async fn three_clients(
    server: &TestServer,
) -> (String, TestClient, TestClient, TestClient, String) {
    let (room, tokens) = room_codes(server, "Carol", &[]).await;
    let carol_id = {
        let auth = roomcast::Authenticator::hs256(SECRET.as_bytes()).token_type("room");
        auth.validate(&tokens[0]).unwrap().sub
    };
    let mut ann = server.connect_as("/ws/auth", "ann").await;
    ann.join(&room).await;
    let bob_token = server.user_token("bob").await;
    let mut bob = server
        .connect(&format!("/ws/chat/{room}/?token={bob_token}"))
        .await;
    assert_eq!(bob.recv_json().await["type"], "room_users_list");
    let announced = ann.recv_type("join").await;
    assert_eq!(announced["user_id"], "bob");
    let carol = server
        .connect(&format!("/ws/chat?token={}", tokens[0]))
        .await;
    let room_name = roomcast::RoomName::new(&room).unwrap();
    server
        .wait_for(|hub| hub.room_members(&room_name).len() == 3)
        .await;
    (room, ann, bob, carol, carol_id)
}

#[tokio::test]
async fn each_client_sees_the_others_messages_and_presence_in_its_own_format() {
    let server = TestServer::start().await;
    let (room, mut ann, mut bob, mut carol, carol_id) = three_clients(&server).await;

    // Carol's arrival, as each of the others sees it.
    let joined = ann.recv_type("join").await;
    assert_eq!(
        (joined["user_id"].as_str(), joined["username"].as_str()),
        (Some(carol_id.as_str()), Some("Carol"))
    );
    assert_eq!(
        bob.recv_json().await,
        json!({"type": "user_join", "user_id": carol_id, "username": "Carol"})
    );

    // One member list, whichever endpoint each came through.
    ann.send_json(json!({"type": "user_list", "room": room}))
        .await;
    let list = ann.recv_type("user_list").await;
    let mut ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec!["ann", "bob", carol_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // Native → everyone.
    ann.send_json(json!({"type": "message", "room": room, "content": "from ann"}))
        .await;
    let native = ann.recv_type("message").await;
    assert_eq!(
        (native["content"].as_str(), native["seq"].as_u64()),
        (Some("from ann"), Some(1))
    );
    assert_eq!(ann.recv_type("ack").await["seq"], 1);
    let channels = bob.recv_json().await;
    assert_eq!(
        (
            channels["type"].as_str(),
            channels["message"].as_str(),
            channels["sender_id"].as_str(),
            channels["sender_username"].as_str(),
            channels["seq"].as_u64()
        ),
        (
            Some("chat_message"),
            Some("from ann"),
            Some("ann"),
            Some("Ann"),
            Some(1)
        )
    );
    let line = carol.recv_json().await;
    assert_eq!(
        (line["name"].as_str(), line["message"].as_str()),
        (Some("Ann"), Some("from ann"))
    );

    // Channels → everyone, the sender included.
    bob.send_json(json!({"message": "from bob"})).await;
    let native = ann.recv_type("message").await;
    assert_eq!(
        (
            native["user_id"].as_str(),
            native["username"].as_str(),
            native["seq"].as_u64()
        ),
        (Some("bob"), Some("Bob"), Some(2))
    );
    assert_eq!(bob.recv_json().await["message"], "from bob");
    assert_eq!(carol.recv_json().await["name"], "Bob");

    // Room token → the others only.
    carol.send_text("from carol").await;
    let native = ann.recv_type("message").await;
    assert_eq!(
        (
            native["content"].as_str(),
            native["username"].as_str(),
            native["seq"].as_u64()
        ),
        (Some("from carol"), Some("Carol"), Some(3))
    );
    let channels = bob.recv_json().await;
    assert_eq!(
        (channels["message"].as_str(), channels["sender_id"].as_str()),
        (Some("from carol"), Some(carol_id.as_str()))
    );
    carol.expect_silence(QUIET).await;

    // Carol leaves: both others are told, each in its format.
    carol.close().await;
    let left = ann.recv_type("leave").await;
    assert_eq!(left["user_id"], carol_id.as_str());
    assert_eq!(
        bob.recv_json().await,
        json!({"type": "user_leave", "user_id": carol_id, "username": "Carol"})
    );
}

#[tokio::test]
async fn history_written_through_one_format_replays_in_each_of_the_others() {
    let server = TestServer::start().await;
    let (room, mut ann, mut bob, mut carol, _) = three_clients(&server).await;
    ann.send_json(json!({"type": "message", "room": room, "content": "one"}))
        .await;
    ann.recv_type("ack").await;
    bob.send_json(json!({"message": "two"})).await;
    assert_eq!(ann.recv_type("message").await["seq"], 2);
    carol.send_text("three").await;
    let last = ann.recv_type("message").await;
    assert_eq!(last["seq"], 3);
    let expected = [("one", "Ann"), ("two", "Bob"), ("three", "Carol")];

    // A late native client resumes from 0.
    let mut dave = server.connect_as("/ws/auth", "dave").await;
    dave.send_json(json!({"type": "join", "room": room, "since": 0}))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let value: Value = dave.recv_json().await;
        if value["type"] == "message" {
            seen.push((
                value["content"].as_str().unwrap().to_owned(),
                value["username"].as_str().unwrap().to_owned(),
                value["seq"].as_u64().unwrap(),
            ));
        }
    }
    for (n, (content, name)) in expected.iter().enumerate() {
        assert_eq!(
            seen[n],
            ((*content).to_owned(), (*name).to_owned(), n as u64 + 1)
        );
    }

    // A late Channels client: the list, then the history as chat_message.
    let erin_token = server.user_token("erin").await;
    let mut erin = server
        .connect(&format!("/ws/chat/{room}/?token={erin_token}"))
        .await;
    assert_eq!(erin.recv_json().await["type"], "room_users_list");
    for (content, name) in expected {
        let message = erin.recv_json().await;
        assert_eq!(
            (
                message["type"].as_str(),
                message["message"].as_str(),
                message["sender_username"].as_str()
            ),
            (Some("chat_message"), Some(content), Some(name))
        );
    }

    // A late room-token client: the history as {name, message, timestamp}.
    let (status, joined) = http(
        &server,
        "GET",
        &format!("/join-room?name=Finn&room_id={room}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut finn = server
        .connect(&format!(
            "/ws/chat?token={}",
            joined["token"].as_str().unwrap()
        ))
        .await;
    for (content, name) in expected {
        let line = finn.recv_json().await;
        assert_eq!(
            (line["name"].as_str(), line["message"].as_str()),
            (Some(name), Some(content))
        );
    }
    drop((bob, carol));
}
