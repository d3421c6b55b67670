//! The admin API: only `"role": "admin"` tokens, values asserted.

use serde_json::{Value, json};

use crate::common::{TestServer, capitalize, http, now, sign};

/// An access token for `user` (added to the store) with `"role": "admin"`.
async fn admin_token(server: &TestServer, user: &str) -> String {
    server.add_user(user).await;
    sign(&json!({
        "sub": user, "username": capitalize(user), "type": "access",
        "exp": now() + 600, "role": "admin",
    }))
}

#[tokio::test]
async fn the_admin_api_refuses_other_tokens_with_403_and_no_token_with_401() {
    let server = TestServer::start().await;
    let user = server.user_token("bob").await;
    let other_role = {
        server.add_user("eve").await;
        sign(&json!({"sub": "eve", "type": "access", "exp": now() + 600, "role": "moderator"}))
    };
    let routes = [
        ("GET", "/admin/rooms", None),
        ("GET", "/admin/rooms/lobby/connections", None),
        ("POST", "/admin/users/bob/disconnect", Some(json!({}))),
        (
            "POST",
            "/admin/rooms/lobby/messages",
            Some(json!({"content": "hi"})),
        ),
        ("POST", "/admin/broadcast", Some(json!({"content": "hi"}))),
    ];
    for (method, path, body) in routes {
        for token in [&user, &other_role] {
            let (status, answer) = http(&server, method, path, Some(token), body.clone()).await;
            assert_eq!(status, 403, "{method} {path}: {answer}");
        }
        let (status, _) = http(&server, method, path, None, body.clone()).await;
        assert_eq!(status, 401, "{method} {path} without a token");
    }
}

#[tokio::test]
async fn admins_see_rooms_and_connections_and_disconnect_exactly_one_users_connections() {
    let server = TestServer::start().await;
    let admin = admin_token(&server, "root").await;
    // Ann twice (two tabs), Bob once, in the lobby; Cat elsewhere.
    let mut ann1 = server.connect_as("/ws/auth", "ann").await;
    let mut ann2 = server.connect_as("/ws/auth/lobby", "ann").await;
    let mut bob = server.connect_as("/ws/auth", "bob").await;
    let mut cat = server.connect_as("/ws/auth", "cat").await;
    ann1.join("lobby").await;
    ann2.recv_type("user_list").await;
    bob.join("lobby").await;
    cat.join("garden").await;

    let (status, rooms) = http(&server, "GET", "/admin/rooms", Some(&admin), None).await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(
        rooms,
        json!({"rooms": [
            {"room": "garden", "connections": 1, "members": [
                {"user_id": "cat", "username": "Cat", "connections": 1}]},
            {"room": "lobby", "connections": 3, "members": [
                {"user_id": "ann", "username": "Ann", "connections": 2},
                {"user_id": "bob", "username": "Bob", "connections": 1}]},
        ]})
    );

    let (status, listed) = http(
        &server,
        "GET",
        "/admin/rooms/lobby/connections",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let conns = listed["connections"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = conns
        .iter()
        .map(|c| {
            (
                c["user_id"].as_str().unwrap(),
                c["endpoint"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ann", "/ws/auth"),
            ("ann", "/ws/auth/{room}"),
            ("bob", "/ws/auth")
        ],
        "oldest first, each with its endpoint"
    );
    let start = i64::try_from(now()).unwrap() * 1000;
    for conn in conns {
        assert_eq!(conn["client_ip"], "127.0.0.1");
        let since = conn["connected_at"].as_i64().unwrap();
        assert!(
            (start - 60_000..=start + 1_000).contains(&since),
            "{since} vs {start}"
        );
        assert!(conn["id"].as_u64().is_some());
    }
    let (status, _) = http(
        &server,
        "GET",
        "/admin/rooms/nowhere/connections",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = http(
        &server,
        "GET",
        "/admin/rooms/bad%20name/connections",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 404, "no room can have that name");

    // Out-of-range codes are refused and close nothing.
    for code in [
        json!(1000),
        json!(3999),
        json!(5000),
        json!(4000.5),
        json!("4001"),
    ] {
        let (status, _) = http(
            &server,
            "POST",
            "/admin/users/ann/disconnect",
            Some(&admin),
            Some(json!({"code": code})),
        )
        .await;
        assert!(matches!(status, 400 | 422), "code {code}: {status}");
    }
    let (status, answer) = http(
        &server,
        "POST",
        "/admin/users/ann/disconnect",
        Some(&admin),
        Some(json!({"code": 4003, "reason": "take a break"})),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"connections": 2})));
    for client in [&mut ann1, &mut ann2] {
        let frame = client.expect_close(4003).await;
        assert_eq!(frame.reason.as_str(), "take a break");
    }
    // Bob sees Ann leave once and stays; Cat is untouched.
    let left = bob.recv_type("leave").await;
    assert_eq!(left["user_id"], "ann");
    server.wait_for(|hub| hub.connection_count() == 2).await;
    bob.send_json(json!({"type": "ping"})).await;
    assert_eq!(bob.recv_type("pong").await["type"], "pong");
    cat.send_json(json!({"type": "ping"})).await;
    assert_eq!(cat.recv_type("pong").await["type"], "pong");

    // No body: the default 4001.
    let (status, answer) = http(
        &server,
        "POST",
        "/admin/users/bob/disconnect",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, answer), (200, json!({"connections": 1})));
    bob.expect_close(4001).await;
    let (_, answer) = http(
        &server,
        "POST",
        "/admin/users/nobody/disconnect",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(answer, json!({"connections": 0}));
}

#[tokio::test]
async fn a_system_message_is_stored_and_sequenced_like_any_other_and_a_notice_reaches_everyone() {
    let server = TestServer::start().await;
    let admin = admin_token(&server, "root").await;
    let mut ann = server.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    ann.send_json(json!({"type": "message", "room": "lobby", "content": "first"}))
        .await;
    assert_eq!(ann.recv_type("message").await["seq"], 1);

    let (status, stored) = http(
        &server,
        "POST",
        "/admin/rooms/lobby/messages",
        Some(&admin),
        Some(json!({"content": "the lobby closes at 22:00", "data": {"level": "info"}})),
    )
    .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["seq"], 2);
    assert_eq!(stored["user_id"], "system");
    let live = ann.recv_type("message").await;
    assert_eq!(
        (
            &live["seq"],
            &live["user_id"],
            &live["content"],
            &live["data"]
        ),
        (
            &json!(2),
            &json!("system"),
            &json!("the lobby closes at 22:00"),
            &json!({"level": "info"})
        )
    );
    // In the history, in order.
    let (_, page) = http(&server, "GET", "/rooms/lobby/messages", Some(&admin), None).await;
    let contents: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"])
        .collect();
    assert_eq!(
        contents,
        [&json!("first"), &json!("the lobby closes at 22:00")]
    );

    for (body, status) in [
        (json!({"content": "   "}), 422),
        (json!({"content": "x".repeat(2001)}), 422),
        (json!({"text": "hi"}), 422),
        (json!({"content": "hi", "data": [1, 2]}), 422),
    ] {
        let (got, _) = http(
            &server,
            "POST",
            "/admin/rooms/lobby/messages",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}");
    }
    let (status, _) = http(
        &server,
        "POST",
        "/admin/rooms/nowhere/messages",
        Some(&admin),
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(status, 404);

    // A notice reaches every connection, in each one's dialect, and is not stored.
    let mut guest = server.connect("/ws").await;
    let (room_code, tokens) = crate::common::room_codes(&server, "dan", &[]).await;
    let mut scoped = server
        .connect(&format!("/ws/chat?token={}", tokens[0]))
        .await;
    let channels_token = server.user_token("eve").await;
    let mut channels = server
        .connect(&format!("/ws/chat/{room_code}/?token={channels_token}"))
        .await;
    channels.recv_json().await; // room_users_list
    server.wait_for(|hub| hub.connection_count() == 4).await;
    let (status, answer) = http(
        &server,
        "POST",
        "/admin/broadcast",
        Some(&admin),
        Some(json!({"content": "restart in 5 minutes"})),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"connections": 4})));
    for client in [&mut ann, &mut guest] {
        let notice = client.recv_type("system").await;
        assert_eq!(
            (&notice["content"], &notice["user_id"]),
            (&json!("restart in 5 minutes"), &json!("system"))
        );
    }
    let notice = scoped.recv_json().await;
    assert_eq!(
        (&notice["name"], &notice["message"]),
        (&json!("system"), &json!("restart in 5 minutes"))
    );
    let notice = loop {
        let frame = channels.recv_json().await;
        if frame["type"] == "chat_message" {
            break frame;
        }
    };
    assert_eq!(
        (&notice["sender_username"], &notice["message"]),
        (&json!("system"), &json!("restart in 5 minutes"))
    );
    let (_, page) = http(&server, "GET", "/rooms/lobby/messages", Some(&admin), None).await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        2,
        "a notice is not stored"
    );
}
