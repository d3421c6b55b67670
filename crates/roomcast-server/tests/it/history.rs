//! History, acks, idempotent retries and resume in the native dialect; crash safety.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

async fn say(client: &mut TestClient, room: &str, content: &str) -> Value {
    client
        .send_json(json!({"type": "message", "room": room, "content": content}))
        .await;
    client.recv_type("ack").await
}

#[tokio::test]
async fn a_joiner_gets_the_history_in_order_before_the_user_list() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    for i in 1..=5 {
        say(&mut ann, "lobby", &format!("m{i}")).await;
    }
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.send_json(json!({"type": "join", "room": "lobby"}))
        .await;
    assert_eq!(bob.recv_json().await["type"], "join");
    for i in 1..=5u64 {
        let message = bob.recv_json().await;
        assert_eq!(message["type"], "message");
        assert_eq!(message["seq"], i);
        assert_eq!(message["content"], format!("m{i}"));
        assert_eq!(message["user_id"], "ann");
    }
    assert_eq!(bob.recv_json().await["type"], "user_list");
}

#[tokio::test]
async fn history_on_join_is_limited_to_the_most_recent() {
    let server = TestServer::start_with(|config| config.history_limit = 3).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    for i in 1..=6 {
        say(&mut ann, "lobby", &format!("m{i}")).await;
    }
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.send_json(json!({"type": "join", "room": "lobby"}))
        .await;
    bob.recv_type("join").await;
    let seqs: Vec<Value> = [
        bob.recv_json().await,
        bob.recv_json().await,
        bob.recv_json().await,
    ]
    .iter()
    .map(|m| m["seq"].clone())
    .collect();
    assert_eq!(seqs, [json!(4), json!(5), json!(6)]);
    assert_eq!(bob.recv_json().await["type"], "user_list");
}

#[tokio::test]
async fn the_sender_gets_an_ack_with_the_id_and_seq_of_its_message() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    ann.send_json(
        json!({"type": "message", "room": "lobby", "content": "hi", "client_msg_id": "c-1"}),
    )
    .await;
    let message = ann.recv_json().await;
    let ack = ann.recv_json().await;
    assert_eq!(message["type"], "message", "the broadcast comes first");
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], message["id"]);
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["client_msg_id"], "c-1");
    assert_eq!(ack["room"], "lobby");
}

#[tokio::test]
async fn a_retry_with_the_same_client_msg_id_is_acked_again_but_not_duplicated() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.recv_type("join").await;
    let send =
        json!({"type": "message", "room": "lobby", "content": "once", "client_msg_id": "k1"});
    ann.send_json(send.clone()).await;
    let first = ann.recv_type("ack").await;
    // A reconnecting client retries on a new connection.
    drop(ann);
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    ann.send_json(send).await;
    let retry = ann.recv_type("ack").await;
    assert_eq!((&retry["id"], &retry["seq"]), (&first["id"], &first["seq"]));
    let seen = bob.recv_type("message").await;
    assert_eq!(seen["content"], "once");
    say(&mut ann, "lobby", "next").await;
    let next = bob.recv_type("message").await;
    assert_eq!(next["content"], "next", "the retry was not broadcast again");
    assert_eq!(next["seq"], 2, "the retry took no seq");
}

#[tokio::test]
async fn messages_sent_without_waiting_for_acks_keep_their_order() {
    // A client may pipeline: it sends many messages before the first ack. Each is persisted,
    // broadcast and acked in the order sent, a retry inside the burst is acked with the
    // original seq, and a message the store refuses is answered without stopping the rest.
    // Faster than a person types: the message rate is not what this tests.
    let server = TestServer::start_with(|config| config.limits.message_rate = 0).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.recv_type("join").await;
    let message = |i: usize| json!({"type": "message", "room": "lobby", "content": format!("p{i}"), "client_msg_id": format!("k{i}")});
    for i in 1..=30 {
        ann.send_json(message(i)).await;
    }
    // A retry of the fifth, and a message the store refuses (a NUL), in the same burst.
    ann.send_json(message(5)).await;
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "bad\u{0}"}))
        .await;
    ann.send_json(message(31)).await;

    let mut acks = Vec::new();
    let mut errors = 0;
    // The burst is committed in groups and each group broadcast together: ann still sees each
    // new message before its ack.
    let mut broadcast = Vec::new();
    while acks.len() < 32 || errors < 1 {
        let frame = ann.recv_json().await;
        match frame["type"].as_str() {
            Some("ack") => {
                assert!(
                    broadcast.contains(&frame["seq"]),
                    "the ack of seq {} came before its message",
                    frame["seq"]
                );
                acks.push((frame["client_msg_id"].clone(), frame["seq"].clone()));
            }
            Some("message") => broadcast.push(frame["seq"].clone()),
            Some("error") => errors += 1,
            _ => {}
        }
    }
    let in_order: Vec<_> = (1..=30)
        .map(|i| (json!(format!("k{i}")), json!(i)))
        .collect();
    assert_eq!(
        acks[..30],
        in_order[..],
        "new messages are acked in the order sent"
    );
    assert!(
        acks[30..].contains(&(json!("k5"), json!(5))),
        "the retry is acked with the original seq: {acks:?}"
    );
    assert!(acks[30..].contains(&(json!("k31"), json!(31))), "{acks:?}");
    for i in 1..=31u64 {
        let seen = bob.recv_type("message").await;
        assert_eq!(
            (&seen["seq"], &seen["content"]),
            (&json!(i), &json!(format!("p{i}")))
        );
    }
    bob.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_resumed_client_sees_every_seq_exactly_once_in_order_while_another_talks() {
    const TOTAL: u64 = 120;
    // Faster than a person types: the message rate is not what this tests.
    let server = TestServer::start_with(|config| config.limits.message_rate = 0).await;
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.join("lobby").await;
    let mut cat = server.connect_as("/ws", "cat").await;
    cat.join("lobby").await;

    // cat keeps talking, with its own pace, the whole time.
    let talker = tokio::spawn(async move {
        for i in 1..=TOTAL {
            cat.send_json(json!({"type": "message", "room": "lobby", "content": format!("c{i}")}))
                .await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        cat
    });

    // bob reads a few, then drops off.
    let mut last = 0u64;
    while last < 20 {
        let message = bob.recv_type("message").await;
        last = message["seq"].as_u64().unwrap();
    }
    drop(bob);

    // bob comes back and resumes after the last seq it saw, while cat still talks.
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.send_json(json!({"type": "join", "room": "lobby", "since": last}))
        .await;
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(last) < TOTAL {
        let message = bob.recv_json().await;
        if message["type"] == "message" {
            seen.push(message["seq"].as_u64().unwrap());
        }
    }
    let expected: Vec<u64> = (last + 1..=TOTAL).collect();
    assert_eq!(
        seen, expected,
        "every seq after {last} exactly once, in order"
    );
    let _cat = talker.await.unwrap(); // still connected: no leave announcement
    bob.expect_silence(Duration::from_millis(200)).await;
}

/// A server process killed with SIGKILL right after acking N messages comes back on the same
/// SQLite file with all N, in order.
#[tokio::test]
async fn acked_messages_survive_a_sigkill() {
    const N: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let mut server = Process::start(&db).await;
    let mut ann = server.connect("ann").await;
    ann.join("lobby").await;
    for i in 1..=N {
        ann.send_json(
            json!({"type": "message", "room": "lobby", "content": format!("durable {i}")}),
        )
        .await;
    }
    let mut acked = 0;
    while acked < N {
        if ann.recv_json().await["type"] == "ack" {
            acked += 1;
        }
    }
    server.kill().await;

    let server = Process::start(&db).await;
    let mut bob = server.connect("bob").await;
    bob.send_json(json!({"type": "join", "room": "lobby", "since": 0}))
        .await;
    bob.recv_type("join").await;
    for i in 1..=N {
        let message = bob.recv_json().await;
        assert_eq!(
            (message["seq"].as_u64(), message["content"].as_str()),
            (Some(i), Some(format!("durable {i}").as_str()))
        );
    }
}

/// The real `roomcast` binary, on a free loopback port.
struct Process {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl Process {
    async fn start(database_url: &str) -> Self {
        // Ask the OS for a free port, then hand it to the child (a tiny race, loopback only).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .arg("serve")
            // One node: CI exports REDIS_URL for the cluster tests.
            .env_remove("REDIS_URL")
            .env("ROOMCAST_LISTEN", addr.to_string())
            .env("ROOMCAST_JWT_SECRET", SECRET)
            .env("ROOMCAST_USER_DIRECTORY", "token")
            // Sends without waiting, faster than a person types.
            .env("ROOMCAST_MESSAGE_RATE", "0")
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("the roomcast binary starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "roomcast did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, addr }
    }

    async fn connect(&self, user: &str) -> TestClient {
        let url = format!(
            "ws://{}/ws/auth?token={}",
            self.addr,
            token(user, &capitalize(user))
        );
        let (ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        TestClient { ws, response }
    }

    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

#[tokio::test]
async fn a_message_the_store_refuses_gets_an_error_and_takes_no_seq() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("lobby").await;
    // PostgreSQL cannot store NUL, so neither store accepts it; an over-long key is refused too.
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "a\u{0}b"}))
        .await;
    let error = ann.recv_json().await;
    assert_eq!(error["type"], "error");
    assert!(
        error["content"].as_str().unwrap().contains("content"),
        "{error}"
    );
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "x", "client_msg_id": "k".repeat(300)}))
        .await;
    assert_eq!(ann.recv_json().await["type"], "error");
    // Nothing was stored or broadcast: the next message is the room's first.
    assert_eq!(say(&mut ann, "lobby", "fine").await["seq"], 1);
}

#[tokio::test]
async fn a_resume_further_behind_than_the_replay_limit_names_what_it_skipped_and_replays_the_latest()
 {
    let server = TestServer::start_with(|config| {
        config.replay_limit = 5;
        config.limits = roomcast_server::limits::LimitsConfig::off();
    })
    .await;
    let mut ann = server.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    for i in 1..=12 {
        ann.send_json(json!({"type": "message", "room": "lobby", "content": format!("m{i}")}))
            .await;
        assert_eq!(ann.recv_type("ack").await["seq"], i);
    }
    let mut bob = server.connect_as("/ws/auth", "bob").await;
    bob.send_json(json!({"type": "join", "room": "lobby", "since": 2}))
        .await;
    // Its own join announcement comes first, then the notice, before any replayed message.
    assert_eq!(bob.recv_json().await["type"], "join");
    let notice = bob.recv_json().await;
    assert_eq!(notice["type"], "error", "{notice}");
    let text = notice["content"].as_str().unwrap();
    assert!(
        text.contains("messages 3 to 7 were not replayed") && text.contains("before=8"),
        "{text}"
    );
    assert_eq!(
        notice["data"],
        json!({"skipped": {"first": 3, "last": 7}}),
        "the range for programs"
    );
    assert_eq!(notice["room"], "lobby");
    // The latest five, then the live ones with no gap between.
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(bob.recv_type("message").await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, [8, 9, 10, 11, 12]);
    bob.recv_type("user_list").await;
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "live"}))
        .await;
    assert_eq!(bob.recv_type("message").await["seq"], 13);
    // Within the limit nothing is skipped and no notice comes.
    let mut cat = server.connect_as("/ws/auth", "cat").await;
    cat.send_json(json!({"type": "join", "room": "lobby", "since": 10}))
        .await;
    let first = loop {
        let frame = cat.recv_json().await;
        assert_ne!(
            frame["type"], "error",
            "no notice within the limit: {frame}"
        );
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(first["seq"], 11);
}
