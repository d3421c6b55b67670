//! The HTTP API: accounts, rooms, history, seed 003's room codes, OpenAPI, and how each error
//! is answered.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

const PASSWORD: &str = "correct horse battery";

/// Calls `app` with an optional bearer token and raw body; returns the status and body bytes.
async fn call_raw(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, content_type, bytes.to_vec())
}

/// Calls `app` with a JSON body; returns the status and the JSON answer (`null` when empty).
async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|b| b.to_string());
    let (status, _, bytes) = call_raw(app, method, path, token, body.as_deref()).await;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {bytes:?}"))
    };
    (status, value)
}

async fn app() -> (Router, tempfile::TempDir) {
    test_app(|_| {}).await
}

async fn register(app: &Router, username: &str) -> Value {
    let (status, body) = call(
        app,
        "POST",
        "/auth/register",
        None,
        Some(json!({"username": username, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn register_on(server: &TestServer, username: &str) -> Value {
    let (status, body) = http(
        server,
        "POST",
        "/auth/register",
        None,
        Some(json!({"username": username, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].is_string(), "not an error body: {body}");
}

// --- Accounts ---

#[tokio::test]
async fn registering_returns_a_user_id_and_a_pair_of_tokens() {
    let (app, _dir) = app().await;
    let body = register(&app, "alice").await;
    assert_eq!(body["username"], "alice");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let user_id = body["user_id"].as_str().unwrap();
    assert_eq!(user_id.len(), 32);
    let access = claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["sub"], user_id);
    assert_eq!(access["type"], "access");
    let refresh = claims(body["refresh_token"].as_str().unwrap());
    assert_eq!(refresh["type"], "refresh");
    assert!(refresh["jti"].is_string());
}

#[tokio::test]
async fn me_answers_the_caller_of_a_registered_access_token() {
    let (app, _dir) = app().await;
    let body = register(&app, "alice").await;
    let (status, me) = call(&app, "GET", "/me", body["access_token"].as_str(), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user_id"], body["user_id"]);
    assert_eq!(me["username"], "alice");
}

#[tokio::test]
async fn login_with_the_right_password_returns_fresh_tokens() {
    let (app, _dir) = app().await;
    let registered = register(&app, "alice").await;
    let (status, body) = call(
        &app,
        "POST",
        "/auth/login",
        None,
        Some(json!({"username": "alice", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], registered["user_id"]);
    let (status, _) = call(&app, "GET", "/me", body["access_token"].as_str(), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn login_refuses_a_wrong_password_and_an_unknown_user_with_the_same_401() {
    let (app, _dir) = app().await;
    register(&app, "alice").await;
    let (status, wrong) = call(
        &app,
        "POST",
        "/auth/login",
        None,
        Some(json!({"username": "alice", "password": "not the password"})),
    )
    .await;
    assert_error(status, &wrong, StatusCode::UNAUTHORIZED);
    let (status, unknown) = call(
        &app,
        "POST",
        "/auth/login",
        None,
        Some(json!({"username": "nobody", "password": PASSWORD})),
    )
    .await;
    assert_error(status, &unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_returns_a_working_access_token() {
    let (app, _dir) = app().await;
    let first = register(&app, "alice").await;
    let (status, second) = call(
        &app,
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": first["refresh_token"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["user_id"], first["user_id"]);
    let (status, _) = call(&app, "GET", "/me", second["access_token"].as_str(), None).await;
    assert_eq!(status, StatusCode::OK);
    // The rotated token works in turn.
    let (status, third) = call(
        &app,
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": second["refresh_token"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{third}");
}

#[tokio::test]
async fn a_reused_refresh_token_is_refused_and_revokes_the_users_other_refresh_tokens() {
    let (app, _dir) = app().await;
    let first = register(&app, "alice").await;
    let refresh = |token: Value| {
        let app = app.clone();
        async move {
            call(
                &app,
                "POST",
                "/auth/refresh",
                None,
                Some(json!({"refresh_token": token})),
            )
            .await
        }
    };
    let (status, second) = refresh(first["refresh_token"].clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(first["refresh_token"].clone()).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "refresh token already used");
    // The token the legitimate client got is revoked with the rest of the family.
    let (status, body) = refresh(second["refresh_token"].clone()).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let (app, _dir) = app().await;
    let tokens = register(&app, "alice").await;
    let body = json!({"refresh_token": tokens["refresh_token"]});
    let (status, _) = call(&app, "POST", "/auth/logout", None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, refused) = call(&app, "POST", "/auth/refresh", None, Some(body)).await;
    assert_error(status, &refused, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_access_token_is_not_accepted_as_a_refresh_token() {
    let (app, _dir) = app().await;
    let tokens = register(&app, "alice").await;
    let (status, body) = call(
        &app,
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": tokens["access_token"]})),
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refresh_token_with_a_forged_signature_is_refused() {
    let (app, _dir) = app().await;
    let tokens = register(&app, "alice").await;
    let mut forged = claims(tokens["refresh_token"].as_str().unwrap());
    forged["sub"] = json!("mallory");
    let forged = sign_with(&forged, b"another secret of at least 32 bytes!!");
    let (status, body) = call(
        &app,
        "POST",
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": forged})),
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refresh_token_is_not_accepted_as_an_access_token() {
    let (app, _dir) = app().await;
    let tokens = register(&app, "alice").await;
    let (status, body) = call(&app, "GET", "/me", tokens["refresh_token"].as_str(), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_from_register_connects_to_the_authenticated_websocket() {
    let server = TestServer::start().await;
    let tokens = register_on(&server, "alice").await;
    let token = tokens["access_token"].as_str().unwrap();
    let mut client = server.connect(&format!("/ws/auth?token={token}")).await;
    let list = client.join("lobby").await;
    assert!(
        list.to_string()
            .contains(tokens["user_id"].as_str().unwrap()),
        "{list}"
    );
    client.close().await;
}

#[tokio::test]
async fn without_a_signing_key_token_endpoints_answer_503() {
    let (app, _dir) = test_app(|config| config.issuer = None).await;
    let (status, body) = call(
        &app,
        "POST",
        "/auth/register",
        None,
        Some(json!({"username": "alice", "password": PASSWORD})),
    )
    .await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "token issuing not configured");
}

// --- Error statuses ---

#[tokio::test]
async fn malformed_json_is_refused_with_400_and_an_error_body() {
    let (app, _dir) = app().await;
    let (status, content_type, bytes) =
        call_raw(&app, "POST", "/auth/register", None, Some("{\"username\":")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_missing_token_is_refused_with_401() {
    let (app, _dir) = app().await;
    let (status, body) = call(&app, "GET", "/me", None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, "POST", "/rooms", None, Some(json!({"name": "x"}))).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_whose_user_does_not_exist_is_refused_with_401() {
    let (app, _dir) = app().await;
    let (status, body) = call(&app, "GET", "/me", Some(&token("ghost", "Ghost")), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_taken_username_is_refused_with_409() {
    let (app, _dir) = app().await;
    register(&app, "alice").await;
    let (status, body) = call(
        &app,
        "POST",
        "/auth/register",
        None,
        Some(json!({"username": "alice", "password": PASSWORD})),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(body["error"], "username taken");
}

#[tokio::test]
async fn an_invalid_username_or_password_is_refused_with_422() {
    let (app, _dir) = app().await;
    for (username, password) in [
        ("al", PASSWORD),
        ("has space", PASSWORD),
        (&"x".repeat(33) as &str, PASSWORD),
        ("alice", "short"),
    ] {
        let (status, body) = call(
            &app,
            "POST",
            "/auth/register",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test]
async fn an_invalid_room_name_is_refused_with_422_and_the_rule_it_broke() {
    let (app, _dir) = app().await;
    let alice = register(&app, "alice").await;
    let (status, body) = call(
        &app,
        "POST",
        "/rooms",
        alice["access_token"].as_str(),
        Some(json!({"name": "no spaces"})),
    )
    .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"].as_str().unwrap().contains("room name"),
        "{body}"
    );
}

#[tokio::test]
async fn a_taken_room_name_is_refused_with_409() {
    let (app, _dir) = app().await;
    let alice = register(&app, "alice").await;
    let token = alice["access_token"].as_str();
    let (status, _) = call(
        &app,
        "POST",
        "/rooms",
        token,
        Some(json!({"name": "lobby"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(
        &app,
        "POST",
        "/rooms",
        token,
        Some(json!({"name": "lobby"})),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_unknown_room_is_404() {
    let (app, _dir) = app().await;
    let alice = register(&app, "alice").await;
    let (status, body) = call(&app, "GET", "/rooms/nowhere", None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = call(
        &app,
        "GET",
        "/rooms/nowhere/messages",
        alice["access_token"].as_str(),
        None,
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_private_room_is_403_for_a_non_member() {
    let (app, _dir) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let (status, _) = call(
        &app,
        "POST",
        "/rooms",
        alice["access_token"].as_str(),
        Some(json!({"name": "secret", "private": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, room) = call(
        &app,
        "GET",
        "/rooms/secret",
        alice["access_token"].as_str(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    assert_eq!(room["private"], true);
    let bob_token = bob["access_token"].as_str();
    let (status, body) = call(&app, "GET", "/rooms/secret", bob_token, None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, "GET", "/rooms/secret/messages", bob_token, None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &app,
        "POST",
        "/rooms/secret/members",
        bob_token,
        Some(json!({"user_id": bob["user_id"]})),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN);
}

// --- Rooms ---

#[tokio::test]
async fn room_list_shows_public_rooms_and_only_the_callers_private_ones() {
    let (app, _dir) = app().await;
    let alice = register(&app, "alice").await;
    let bob = register(&app, "bob").await;
    let token = alice["access_token"].as_str();
    call(
        &app,
        "POST",
        "/rooms",
        token,
        Some(json!({"name": "lobby"})),
    )
    .await;
    call(
        &app,
        "POST",
        "/rooms",
        token,
        Some(json!({"name": "secret", "private": true})),
    )
    .await;
    let names = |body: &Value| -> Vec<String> {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|room| room["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, list) = call(&app, "GET", "/rooms", token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&list), ["lobby", "secret"]);
    assert_eq!(list["rooms"][0]["occupancy"], 0);
    let (_, list) = call(&app, "GET", "/rooms", bob["access_token"].as_str(), None).await;
    assert_eq!(names(&list), ["lobby"]);
    let (_, list) = call(&app, "GET", "/rooms", None, None).await;
    assert_eq!(names(&list), ["lobby"]);
    assert!(list.get("next").is_none(), "one page holds them all");
}

#[tokio::test]
async fn room_list_pages_with_a_cursor_and_refuses_bad_limits_and_cursors() {
    let (app, _dir) = app().await;
    let alice = register(&app, "alice").await;
    let token = alice["access_token"].as_str();
    for name in ["a1", "a2", "a3"] {
        let (status, _) = call(&app, "POST", "/rooms", token, Some(json!({"name": name}))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, first) = call(&app, "GET", "/rooms?limit=2", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["rooms"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = call(
        &app,
        "GET",
        &format!("/rooms?limit=2&after={next}"),
        None,
        None,
    )
    .await;
    assert_eq!(second["rooms"][0]["name"], "a3");
    assert!(second.get("next").is_none());
    for bad in [
        "/rooms?limit=0",
        "/rooms?limit=201",
        "/rooms?after=abc",
        "/rooms?after=-4",
    ] {
        let (status, body) = call(&app, "GET", bad, None, None).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[tokio::test]
async fn a_private_room_refuses_a_non_member_join_until_a_member_adds_them() {
    let server = TestServer::start().await;
    let alice = register_on(&server, "alice").await;
    let bob = register_on(&server, "bob").await;
    let (status, _) = http(
        &server,
        "POST",
        "/rooms",
        alice["access_token"].as_str(),
        Some(json!({"name": "secret", "private": true})),
    )
    .await;
    assert_eq!(status, 201);
    let bob_token = bob["access_token"].as_str().unwrap();
    let (status, _) = http(&server, "GET", "/rooms/secret", Some(bob_token), None).await;
    assert_eq!(status, 403);

    let mut client = server.connect(&format!("/ws/auth?token={bob_token}")).await;
    expect_private_refusal(&mut client, "secret").await;

    let (status, body) = http(
        &server,
        "POST",
        "/rooms/secret/members",
        alice["access_token"].as_str(),
        Some(json!({"user_id": bob["user_id"]})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    client.join("secret").await;
    let (status, room) = http(&server, "GET", "/rooms/secret", Some(bob_token), None).await;
    assert_eq!(status, 200);
    assert_eq!(room["occupancy"], 1);
    assert_eq!(room["online"], json!([bob["user_id"]]));
    client.close().await;
}

#[tokio::test]
async fn a_private_room_stays_private_however_often_members_join_it() {
    // Joins remember public rooms to skip the store's lookup; a private room must never be
    // remembered, whoever joined it before and however often.
    let server = TestServer::start().await;
    let alice = register_on(&server, "alice").await;
    let bob = register_on(&server, "bob").await;
    let alice_token = alice["access_token"].as_str().unwrap();
    let (status, _) = http(
        &server,
        "POST",
        "/rooms",
        Some(alice_token),
        Some(json!({"name": "secret", "private": true})),
    )
    .await;
    assert_eq!(status, 201);
    let mut member = server
        .connect(&format!("/ws/auth?token={alice_token}"))
        .await;
    member.join("secret").await;
    member.join("lobby").await;
    let bob_token = bob["access_token"].as_str().unwrap();
    let mut outsider = server.connect(&format!("/ws/auth?token={bob_token}")).await;
    outsider.join("lobby").await;
    for _ in 0..2 {
        expect_private_refusal(&mut outsider, "secret").await;
    }
    member.close().await;
    outsider.close().await;
}

/// Sends a join for `room` and expects the error envelope that refuses a private room.
async fn expect_private_refusal(client: &mut TestClient, room: &str) {
    client
        .send_json(json!({"type": "join", "room": room}))
        .await;
    let refusal = client.recv_type("error").await;
    assert!(
        refusal["content"].as_str().unwrap().contains("private"),
        "{refusal}"
    );
}

#[tokio::test]
async fn messages_page_back_through_history_with_before_and_limit() {
    let server = TestServer::start().await;
    let alice = register_on(&server, "alice").await;
    let token = alice["access_token"].as_str().unwrap();
    let mut client = server.connect(&format!("/ws/auth?token={token}")).await;
    client.join("lobby").await;
    for i in 1..=5 {
        client
            .send_json(json!({"type": "message", "room": "lobby", "content": format!("m{i}")}))
            .await;
        client.recv_type("ack").await;
    }
    let seqs = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    let (status, page) = http(
        &server,
        "GET",
        "/rooms/lobby/messages?limit=2",
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(seqs(&page), [4, 5]);
    let message = &page["messages"][1];
    assert_eq!(message["content"], "m5");
    assert_eq!(message["room"], "lobby");
    assert_eq!(message["user_id"], alice["user_id"]);
    assert_eq!(message["username"], "alice");
    assert!(message["id"].is_string());
    assert!(message["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let (_, page) = http(
        &server,
        "GET",
        "/rooms/lobby/messages?before=4&limit=2",
        Some(token),
        None,
    )
    .await;
    assert_eq!(seqs(&page), [2, 3]);
    let (_, page) = http(
        &server,
        "GET",
        "/rooms/lobby/messages?before=2",
        Some(token),
        None,
    )
    .await;
    assert_eq!(seqs(&page), [1]);
    let (_, page) = http(&server, "GET", "/rooms/lobby/messages", Some(token), None).await;
    assert_eq!(seqs(&page), [1, 2, 3, 4, 5]);
    for bad in ["limit=0", "limit=201"] {
        let (status, body) = http(
            &server,
            "GET",
            &format!("/rooms/lobby/messages?{bad}"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, _) = http(
        &server,
        "GET",
        "/rooms/lobby/messages?limit=many",
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 400);
    client.close().await;
}

// --- Seed 003 room codes ---

#[tokio::test]
async fn create_room_then_join_room_hand_out_tokens_with_the_room_claims() {
    let (app, _dir) = app().await;
    let (status, created) = call(&app, "GET", "/create-room?name=Ann", None, None).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["status"], "success");
    let room_id = created["room_id"].as_str().unwrap();
    assert_eq!(room_id.len(), 8);
    assert!(
        room_id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{room_id}"
    );
    let ann = claims(created["token"].as_str().unwrap());
    assert_eq!(ann["room_id"], room_id);
    assert_eq!(ann["name"], "Ann");
    assert_eq!(ann["sub"], ann["client_id"]);

    let (status, joined) = call(
        &app,
        "GET",
        &format!("/join-room?name=Bob&room_id={room_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["status"], "success");
    let bob = claims(joined["token"].as_str().unwrap());
    assert_eq!(bob["room_id"], room_id);
    assert_eq!(bob["name"], "Bob");
    assert_ne!(bob["client_id"], ann["client_id"]);

    // Room tokens: the room-token authenticator takes them, the access one does not.
    let access = roomcast::Authenticator::hs256(SECRET.as_bytes());
    let rooms = access.clone().token_type("room");
    for token in [&created["token"], &joined["token"]] {
        let token = token.as_str().unwrap();
        assert_eq!(claims(token)["type"], "room");
        assert_eq!(access.validate(token), Err(roomcast::AuthError::WrongType));
        assert_eq!(
            rooms.validate(token).unwrap().claim("room_id"),
            Some(room_id)
        );
    }
}

#[tokio::test]
async fn join_room_does_not_hand_out_tokens_for_a_private_room() {
    let (app, _dir) = app().await;
    let owner = register(&app, "owner").await;
    let token = owner["access_token"].as_str().unwrap();
    let (status, body) = call(
        &app,
        "POST",
        "/rooms",
        Some(token),
        Some(json!({"name": "hideout", "private": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(
        &app,
        "GET",
        "/join-room?name=Eve&room_id=hideout",
        None,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a room code is no way into a private room"
    );
    assert_eq!(body, json!({"error": "Room not found"}));
}

#[tokio::test]
async fn swagger_leads_to_the_api_docs() {
    let (app, _dir) = app().await;
    for path in ["/swagger/", "/swagger"] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(response.headers()["location"], "/docs");
    }
}

#[tokio::test]
async fn join_room_with_an_unknown_room_id_is_404() {
    let (app, _dir) = app().await;
    let (status, body) = call(
        &app,
        "GET",
        "/join-room?name=Bob&room_id=NOPE2345",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "Room not found"}));
}

#[tokio::test]
async fn create_room_refuses_an_empty_name_with_422_and_a_missing_one_with_400() {
    let (app, _dir) = app().await;
    let (status, body) = call(&app, "GET", "/create-room?name=", None, None).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = call(&app, "GET", "/create-room", None, None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
}

// --- OpenAPI ---

#[tokio::test]
async fn openapi_json_lists_every_path() {
    let (app, _dir) = app().await;
    let (status, doc) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/auth/register",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/me",
        "/rooms",
        "/rooms/{room}",
        "/rooms/{room}/members",
        "/rooms/{room}/messages",
        "/create-room",
        "/join-room",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["TokenResponse"].is_object());
}

#[tokio::test]
async fn a_stored_messages_data_may_be_any_json_value_as_the_native_dialect_takes() {
    let (app, _dir) = app().await;
    let (_, doc) = call(&app, "GET", "/openapi.json", None, None).await;
    let data = &doc["components"]["schemas"]["MessageView"]["properties"]["data"];
    assert!(data.is_object(), "MessageView.data is described: {data}");
    let types = data
        .get("type")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        !types.contains("object"),
        "a message sent with \"data\": [1, 2] or 3 is stored and served as sent: {data}"
    );
}

#[tokio::test]
async fn the_schema_states_the_rules_the_handlers_enforce() {
    let (app, _dir) = app().await;
    let (_, doc) = call(&app, "GET", "/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    let room_name = &schemas["CreateRoom"]["properties"]["name"];
    assert_eq!(room_name["pattern"], roomcast::ROOM_NAME_PATTERN);
    assert_eq!(room_name["maxLength"], roomcast::MAX_ROOM_NAME_BYTES);
    let credentials = &schemas["Credentials"]["properties"];
    assert_eq!(credentials["password"]["minLength"], 8);
    assert_eq!(credentials["password"]["maxLength"], 256);
    assert_eq!(credentials["username"]["maxLength"], 32);
    let login = &doc["paths"]["/auth/login"]["post"]["responses"];
    for status in ["415", "422", "429", "503"] {
        assert!(login[status].is_object(), "/auth/login documents {status}");
    }
    // What the schema calls valid, the handler takes (schemathesis checks many more in CI).
    let (status, _) = call(
        &app,
        "POST",
        "/auth/register",
        None,
        Some(json!({"username": "a.b-c_9", "password": "12345678"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn docs_is_a_self_contained_html_page_of_the_api() {
    let (app, _dir) = app().await;
    let (status, content_type, bytes) = call_raw(&app, "GET", "/docs", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = String::from_utf8(bytes).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("/auth/register"));
    assert!(html.contains("/rooms/{room}/messages"));
    assert!(!html.contains("<script src="), "no external assets");
}
