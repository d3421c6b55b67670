//! Seed 000 / 002 authentication: every token location, every refusal with 4001, guests.

use serde_json::json;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::common::*;

/// Connects with `header: value` added and checks the server saw user `sub`.
async fn connects_as(
    server: &TestServer,
    path: &str,
    header: Option<(&'static str, String)>,
    sub: &str,
) {
    let mut request = server.url(path).into_client_request().unwrap();
    if let Some((name, value)) = header {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    let mut client = server.try_connect(request).await.expect("handshake");
    client
        .send_json(json!({"type": "join", "room": "lobby"}))
        .await;
    let joined = client.recv_type("join").await;
    assert_eq!(joined["user_id"], sub, "via {path}");
    assert_eq!(joined["username"], capitalize(sub));
}

#[tokio::test]
async fn every_token_location_is_accepted() {
    let server = TestServer::start().await;
    for sub in ["query", "cookie", "tcookie", "bearer", "proto"] {
        server.add_user(sub).await;
    }
    let t = |sub: &str| token(sub, &capitalize(sub));
    connects_as(
        &server,
        &format!("/ws/auth?token={}", t("query")),
        None,
        "query",
    )
    .await;
    connects_as(
        &server,
        "/ws/auth",
        Some(("cookie", format!("access_token={}", t("cookie")))),
        "cookie",
    )
    .await;
    connects_as(
        &server,
        "/ws/auth",
        Some(("cookie", format!("theme=dark; token={}", t("tcookie")))),
        "tcookie",
    )
    .await;
    connects_as(
        &server,
        "/ws/auth",
        Some(("authorization", format!("Bearer {}", t("bearer")))),
        "bearer",
    )
    .await;
    connects_as(
        &server,
        "/ws/auth",
        Some(("sec-websocket-protocol", format!("token.{}", t("proto")))),
        "proto",
    )
    .await;
}

#[tokio::test]
async fn a_subprotocol_token_is_selected_in_the_answer() {
    let server = TestServer::start().await;
    let protocol = format!("token.{}", server.user_token("ann").await);
    let mut request = server.url("/ws/auth").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&protocol).unwrap(),
    );
    let client = server.try_connect(request).await.expect("handshake");
    let selected = client
        .response
        .headers()
        .get("sec-websocket-protocol")
        .unwrap();
    assert_eq!(selected.to_str().unwrap(), protocol);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001() {
    let server = TestServer::start().await;
    let exp = now() + 600;
    let none_token = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(json!({"sub": "eve", "type": "access", "exp": exp}).to_string());
        format!("{header}.{body}.")
    };
    let cases = [
        (
            "expired",
            sign(&json!({"sub": "u", "type": "access", "exp": now() - 120})),
            "token expired",
        ),
        (
            "not yet valid",
            sign(&json!({"sub": "u", "type": "access", "exp": exp, "nbf": now() + 300})),
            "token not yet valid",
        ),
        (
            "wrong key",
            sign_with(
                &json!({"sub": "u", "type": "access", "exp": exp}),
                b"some-other-secret-some-other-secret",
            ),
            "invalid token",
        ),
        ("alg none", none_token, "invalid token"),
        (
            "refresh type",
            sign(&json!({"sub": "u", "type": "refresh", "exp": exp})),
            "wrong token type",
        ),
        (
            "no type",
            sign(&json!({"sub": "u", "exp": exp})),
            "wrong token type",
        ),
        ("garbage", "not-a-jwt".to_owned(), "invalid token"),
    ];
    for path in ["/ws/auth", "/ws"] {
        for (case, token, reason) in &cases {
            let mut client = server.connect(&format!("{path}?token={token}")).await;
            let frame = client.expect_close(4001).await;
            assert_eq!(frame.reason.as_str(), *reason, "{case} on {path}");
        }
    }
    assert_eq!(
        server.hub.connection_count(),
        0,
        "no refused client was registered"
    );
}

#[tokio::test]
async fn an_hs256_token_is_refused_when_rs256_is_configured() {
    // Algorithm confusion: the server pins RS256; an HS256 token signed with the public key's
    // bytes as the secret must not pass.
    let public_pem = include_bytes!("../fixtures/rsa_public.pem");
    let server = TestServer::start_with(|config| {
        config.auth = roomcast::Authenticator::rs256_pem(public_pem).unwrap();
    })
    .await;
    let forged = sign_with(
        &json!({"sub": "eve", "type": "access", "exp": now() + 600}),
        public_pem,
    );
    let mut client = server.connect(&format!("/ws/auth?token={forged}")).await;
    client.expect_close(4001).await;
}

#[tokio::test]
async fn the_auth_endpoints_require_a_token() {
    let server = TestServer::start().await;
    for path in ["/ws/auth", "/ws/auth/lobby"] {
        let mut client = server.connect(path).await;
        let frame = client.expect_close(4001).await;
        assert_eq!(frame.reason.as_str(), "token required");
    }
}

#[tokio::test]
async fn a_guest_is_admitted_on_ws_with_a_generated_identity() {
    let server = TestServer::start().await;
    let mut guest = server.connect("/ws").await;
    guest
        .send_json(json!({"type": "join", "room": "lobby"}))
        .await;
    let joined = guest.recv_type("join").await;
    let id = joined["user_id"].as_str().unwrap();
    assert!(id.starts_with("guest-") && id.len() == 14, "{id}");
    assert_eq!(joined["username"], id);
}

#[tokio::test]
async fn guests_are_refused_when_auth_is_required() {
    let server = TestServer::start_with(|config| config.require_auth = true).await;
    for path in ["/ws", "/ws/lobby"] {
        let mut client = server.connect(path).await;
        client.expect_close(4001).await;
    }
    // A token still works there.
    let mut member = server.connect_as("/ws", "ann").await;
    member.send_json(json!({"type": "ping"})).await;
    assert_eq!(member.recv_json().await["type"], "pong");
}

/// Opens `/ws/auth` with `origin` and, when given, `token` in the `access_token` cookie.
async fn connect_with_origin(
    server: &TestServer,
    path: &str,
    origin: &'static str,
    cookie: Option<&str>,
) -> Result<TestClient, tungstenite::Error> {
    let mut request = server.url(path).into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("origin", HeaderValue::from_static(origin));
    if let Some(token) = cookie {
        headers.insert("cookie", format!("access_token={token}").parse().unwrap());
    }
    server.try_connect(request).await
}

fn status_of(result: Result<TestClient, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("expected an HTTP refusal, got {err}"),
        Ok(_) => panic!("the connection was let in"),
    }
}

#[tokio::test]
async fn an_origin_not_allowed_is_refused_with_403_before_the_upgrade() {
    let server = TestServer::start_with(|config| {
        config.allowed_origins = roomcast::AllowedOrigins::parse("https://chat.example");
    })
    .await;
    let refused = connect_with_origin(&server, "/ws", "https://evil.example", None).await;
    assert_eq!(status_of(refused), 403);
    let mut allowed = connect_with_origin(&server, "/ws", "https://chat.example", None)
        .await
        .unwrap();
    allowed.send_json(json!({"type": "ping"})).await;
    assert_eq!(allowed.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn a_cookie_token_from_a_foreign_origin_is_refused_and_the_same_token_in_the_query_is_not() {
    // The default WEBSOCKET_ALLOWED_ORIGINS=*: a cookie is good only from the same origin.
    let server = TestServer::start().await;
    let token = server.user_token("ann").await;
    let foreign = connect_with_origin(&server, "/ws/auth", "https://evil.example", Some(&token));
    assert_eq!(
        status_of(foreign.await),
        403,
        "cross-site WebSocket hijacking"
    );

    let query = format!("/ws/auth?token={token}");
    let mut by_query = connect_with_origin(&server, &query, "https://evil.example", None)
        .await
        .expect("a token in the query is the page's own doing");
    by_query.send_json(json!({"type": "ping"})).await;
    assert_eq!(by_query.recv_json().await["type"], "pong");

    let same_origin: &'static str = Box::leak(format!("http://{}", server.addr).into_boxed_str());
    let mut own = connect_with_origin(&server, "/ws/auth", same_origin, Some(&token))
        .await
        .expect("the server's own page");
    own.send_json(json!({"type": "ping"})).await;
    assert_eq!(own.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn a_valid_token_for_a_user_the_store_does_not_know_is_refused_with_4001() {
    let server = TestServer::start().await;
    // Signed with the right key, but "ghost" never registered.
    let mut ghost = server
        .connect(&format!("/ws/auth?token={}", token("ghost", "Ghost")))
        .await;
    let frame = ghost.expect_close(4001).await;
    assert_eq!(frame.reason.as_str(), "unknown user");
    // Once the user exists, the same kind of token works.
    let mut ann = server.connect_as("/ws/auth", "ann").await;
    ann.send_json(json!({"type": "ping"})).await;
    assert_eq!(ann.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn with_the_token_directory_an_unregistered_user_is_admitted() {
    let server = TestServer::start_with(|config| {
        config.user_directory = roomcast_server::DirectoryMode::Token;
    })
    .await;
    let mut guest = server
        .connect(&format!("/ws/auth?token={}", token("idp-user", "Idp")))
        .await;
    guest
        .send_json(json!({"type": "join", "room": "lobby"}))
        .await;
    assert_eq!(guest.recv_type("join").await["user_id"], "idp-user");
}
