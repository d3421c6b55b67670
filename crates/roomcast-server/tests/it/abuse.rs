//! Hostile input and abuse limits: each refused at its point, with a clear answer, and
//! recovered from after.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::common::*;

#[tokio::test]
async fn a_type_cut_inside_a_multibyte_character_is_an_error_and_the_connection_lives_on() {
    let server = TestServer::start().await;
    let mut client = server.connect("/ws").await;
    let kind = format!("a{}", "é".repeat(40));
    client.send_json(json!({ "type": kind })).await;
    let error = client.recv_type("error").await;
    let content = error["content"].as_str().unwrap();
    assert!(
        content.starts_with("unsupported message type: aéé"),
        "{content}"
    );
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv_json().await["type"], "pong");
    assert_eq!(server.hub.stats().hook_panics_total, 0);
}

#[tokio::test]
async fn a_message_flood_gets_errors_then_1008_while_the_room_keeps_receiving() {
    let server = TestServer::start_with(|config| {
        config.limits.message_rate = 1;
        config.limits.message_burst = 4;
    })
    .await;
    let mut flooder = server.connect_as("/ws", "flooder").await;
    flooder.join("lobby").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.join("lobby").await;
    let mut carol = server.connect_as("/ws", "carol").await;
    carol.join("lobby").await;

    // Bounded: the burst, every strike, and a few more.
    for n in 0..60 {
        let message = json!({"type": "message", "room": "lobby", "content": format!("spam {n}")});
        flooder.send_json(message).await;
    }
    let mut errors = 0;
    loop {
        match flooder.recv().await {
            tungstenite::Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "error" {
                    assert!(value["content"].as_str().unwrap().contains("rate limited"));
                    errors += 1;
                }
            }
            tungstenite::Message::Close(Some(frame)) => {
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (1008, "rate limited")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(errors >= 20, "the dropped ones were answered: {errors}");

    // What passed the limiter reached the room (the burst of 4, less the join's frame, plus
    // what the rate refilled meanwhile); the rest was neither stored nor broadcast. Carol's
    // message is queued to the store after all of them, so it arrives after them.
    carol
        .send_json(json!({"type": "message", "room": "lobby", "content": "after"}))
        .await;
    let mut passed = 0;
    loop {
        let message = bob.recv_type("message").await;
        if message["content"] == "after" {
            break;
        }
        passed += 1;
    }
    assert!((3..=6).contains(&passed), "{passed} passed");
    let stored = server.store.history("lobby", None, 100).await.unwrap();
    assert_eq!(stored.len(), passed + 1, "only those were stored");
}

#[tokio::test]
async fn past_the_connect_rate_an_address_gets_429_with_retry_after_then_gets_in_again() {
    let server = TestServer::start_with(|config| config.limits.connect_rate = 1).await;
    // A burst of four times the rate.
    let mut admitted = Vec::new();
    for _ in 0..4 {
        admitted.push(server.connect("/ws").await);
    }
    let refused = server
        .try_connect(server.url("/ws").into_client_request().unwrap())
        .await;
    let Err(tungstenite::Error::Http(response)) = refused else {
        panic!("the fifth attempt within a second was let in");
    };
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Recovers: one more attempt a second later.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut again = server.connect("/ws").await;
    again.send_json(json!({"type": "ping"})).await;
    assert_eq!(again.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn a_connection_joins_at_most_the_configured_number_of_rooms() {
    let server = TestServer::start_with(|config| config.limits.max_rooms_per_connection = 2).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("a").await;
    ann.join("b").await;
    ann.send_json(json!({"type": "join", "room": "c"})).await;
    let error = ann.recv_type("error").await;
    assert_eq!(
        error["content"],
        "too many rooms: a connection may be in at most 2"
    );
    assert!(
        server.store.room("c").await.unwrap().is_none(),
        "no room was created"
    );
    ann.send_json(json!({"type": "leave", "room": "a"})).await;
    ann.recv_type("leave").await;
    ann.join("c").await;
}

#[tokio::test]
async fn a_full_room_refuses_one_more_user_on_every_endpoint_until_someone_leaves() {
    let server = TestServer::start_with(|config| config.limits.max_room_members = 2).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("small").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.join("small").await;

    let mut carol = server.connect_as("/ws", "carol").await;
    carol
        .send_json(json!({"type": "join", "room": "small"}))
        .await;
    assert_eq!(
        carol.recv_type("error").await["content"],
        "room full: at most 2 users"
    );
    let dave = server.user_token("dave").await;
    let mut channels = server
        .connect(&format!("/ws/chat/small/?token={dave}"))
        .await;
    let close = channels.expect_close(1013).await;
    assert_eq!(close.reason, "room full: at most 2 users");
    // A member's second tab is no new user.
    let mut ann_again = server.connect_as("/ws", "ann").await;
    ann_again.join("small").await;

    bob.send_json(json!({"type": "leave", "room": "small"}))
        .await;
    bob.recv_type("leave").await;
    carol.join("small").await;
}

#[tokio::test]
async fn a_user_past_the_connection_limit_is_closed_with_1013_and_may_reconnect_after() {
    let server = TestServer::start_with(|config| config.limits.max_connections_per_user = 2).await;
    let first = server.connect_as("/ws", "ann").await;
    let _second = server.connect_as("/ws", "ann").await;
    let mut third = server.connect_as("/ws", "ann").await;
    let close = third.expect_close(1013).await;
    assert_eq!(close.reason, "too many connections");
    first.close().await;
    let ann = roomcast::UserId::from("ann");
    server
        .wait_for(|hub| hub.user_connection_count(&ann) == 1)
        .await;
    let mut fourth = server.connect_as("/ws", "ann").await;
    fourth.send_json(json!({"type": "ping"})).await;
    assert_eq!(fourth.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn room_codes_and_sign_ins_past_the_auth_rate_get_429_with_retry_after() {
    // 4 a minute: a burst of one, then one every 15 s.
    let server = TestServer::start_with(|config| config.limits.auth_rate = 4).await;
    let (status, _, _) = http_raw(&server, "GET", "/create-room?name=Ann", &[], "").await;
    assert_eq!(status, 200);
    for path in ["/create-room?name=Bob", "/auth/login"] {
        let method = if path.starts_with("/auth") {
            "POST"
        } else {
            "GET"
        };
        let (status, head, _) = http_raw(&server, method, path, &[], "").await;
        assert_eq!(status, 429, "{path}: {head}");
        let retry_after = head
            .lines()
            .find_map(|line| line.strip_prefix("retry-after: "))
            .unwrap_or_else(|| panic!("no Retry-After: {head}"));
        assert!(
            (1..=15).contains(&retry_after.parse::<u64>().unwrap()),
            "{retry_after}"
        );
    }
    // Other routes are not counted.
    let (status, _) = http(&server, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_an_untrusted_peer_and_used_from_a_trusted_one() {
    /// Five attempts "from" five clients behind the peer: the statuses.
    async fn five_clients(server: &TestServer) -> Vec<u16> {
        let mut statuses = Vec::new();
        for n in 1..=5 {
            let forwarded = format!("203.0.113.{n}");
            let (status, _, _) = http_raw(
                server,
                "GET",
                "/join-room?name=X&room_id=NOPE",
                &[("X-Forwarded-For", &forwarded)],
                "",
            )
            .await;
            statuses.push(status);
        }
        statuses
    }
    // 4 a minute: a burst of one per client address.
    let untrusted = TestServer::start_with(|config| config.limits.auth_rate = 4).await;
    assert_eq!(
        five_clients(&untrusted).await,
        [404, 429, 429, 429, 429],
        "all one peer"
    );

    let behind_proxy = TestServer::start_with(|config| {
        config.limits.auth_rate = 4;
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    assert_eq!(five_clients(&behind_proxy).await, [404; 5], "five clients");
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_while_others_connect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server =
        TestServer::start_with(|config| config.http.header_timeout = Duration::from_millis(500))
            .await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: roomcast\r\n")
        .await
        .unwrap();
    // One header line every 100 ms, bounded: 50 lines, 5 s, ten times the timeout.
    let mut cut_off = false;
    for n in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow
            .write_all(format!("X-Slow-{n}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
        let mut answer = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(5), slow.read(&mut answer)).await {
            Err(_) => {} // nothing yet
            Ok(Ok(_) | Err(_)) => {
                cut_off = true; // closed, or answered without waiting for the rest
                break;
            }
        }
    }
    assert!(
        cut_off,
        "a client trickling headers for 5 s was never cut off"
    );
    let mut client = server.connect("/ws").await;
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn past_the_handshake_bound_a_connection_is_closed_at_once_and_the_bound_recovers() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|config| config.http.max_handshakes = 2).await;
    // Two connections that never send a byte hold both places.
    let idle: Vec<_> = [
        tokio::net::TcpStream::connect(server.addr).await.unwrap(),
        tokio::net::TcpStream::connect(server.addr).await.unwrap(),
    ]
    .into();
    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, third.read(&mut byte))
        .await
        .expect("the third connection was neither served nor closed");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a word: {read:?}"
    );

    drop(idle);
    // The places come back as the server sees the two close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let request = server.url("/ws").into_client_request().unwrap();
        if let Ok(mut client) = server.try_connect(request).await {
            client.send_json(json!({"type": "ping"})).await;
            assert_eq!(client.recv_json().await["type"], "pong");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bound never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rooms_created_by_joining_are_counted_per_user_and_for_guests_per_address() {
    let server = TestServer::start_with(|config| config.limits.room_create_rate = 2).await;
    let mut ann = server.connect_as("/ws", "ann").await;
    ann.join("made-1").await;
    ann.join("made-2").await;
    ann.send_json(json!({"type": "join", "room": "made-3"}))
        .await;
    let error = ann.recv_type("error").await;
    assert!(
        error["content"]
            .as_str()
            .unwrap()
            .contains("created rooms too fast"),
        "{error}"
    );
    assert!(server.store.room("made-3").await.unwrap().is_none());
    // Existing rooms stay open to join, and another user has an allowance of its own.
    ann.join("made-1").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    bob.join("made-3").await;
    // Seed 004's endpoint: the room could not be created, 4000.
    let ann_token = server.user_token("ann").await;
    let mut channels = server
        .connect(&format!("/ws/chat/made-4/?token={ann_token}"))
        .await;
    channels.expect_close(4000).await;

    // Guests are new users on every connection: they are counted by address.
    let mut first = server.connect("/ws").await;
    first.join("guest-1").await;
    first.join("guest-2").await;
    let mut second = server.connect("/ws").await;
    second
        .send_json(json!({"type": "join", "room": "guest-3"}))
        .await;
    assert!(
        second.recv_type("error").await["content"]
            .as_str()
            .unwrap()
            .contains("created rooms too fast")
    );
}
