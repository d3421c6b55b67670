//! Authentication at the library level: tokens required or guests admitted, the JWT rules, and
//! the user directory (seed 000's `AuthManager`).

use roomcast::auth::{AuthError, BoxFuture, UserDirectory};
use roomcast::{Authenticator, UserId};
use serde_json::json;

use crate::common::{
    SECRET, TestClient, TestServer, expired_token, foreign_token, refresh_token, token,
};

/// A directory that knows only the listed users.
struct Known(&'static [&'static str]);

impl UserDirectory for Known {
    fn exists<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.0.contains(&user.as_str())) })
    }
}

#[tokio::test]
async fn a_client_without_a_token_is_refused_with_4001_when_guests_are_not_allowed() {
    let server = TestServer::builder()
        .endpoint(|endpoint| endpoint.allow_guests(false))
        .start()
        .await;
    let mut anonymous = TestClient::connect(server.url("/ws"), "anonymous").await;

    assert_eq!(anonymous.expect_close(4001).await, "token required");
    assert_eq!(server.hub.connection_count(), 0);
    assert_eq!(server.hub.stats().refused_total, 1);
}

#[tokio::test]
async fn the_default_route_requires_a_token() {
    let server = TestServer::start().await;
    let mut anonymous = TestClient::connect(server.url("/ws"), "anonymous").await;

    assert_eq!(anonymous.expect_close(4001).await, "token required");
}

#[tokio::test]
async fn a_client_without_a_token_is_admitted_as_a_guest_when_guests_are_allowed() {
    let server = TestServer::builder()
        .endpoint(|endpoint| endpoint.allow_guests(true))
        .start()
        .await;
    let mut guest = TestClient::connect(server.url("/ws"), "guest").await;

    let welcome = guest.recv_json().await;

    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["guest"], true);
    let id = welcome["user_id"].as_str().expect("a user id");
    assert!(id.starts_with("guest-"), "a guest id, got {id}");
    assert!(server.hub.is_connected(&UserId::from(id)));
}

#[tokio::test]
async fn a_token_is_still_used_when_guests_are_allowed() {
    let server = TestServer::builder()
        .endpoint(|endpoint| endpoint.allow_guests(true))
        .start()
        .await;

    let url = server.url(&format!("/ws?token={}", expired_token("alice")));
    let mut expired = TestClient::connect(url, "expired").await;
    assert_eq!(
        expired.expect_close(4001).await,
        "token expired",
        "a token that is present must be valid, even where guests are welcome"
    );
}

#[tokio::test]
async fn a_user_the_directory_does_not_know_is_refused_with_4001() {
    let server = TestServer::builder()
        .auth(Authenticator::hs256(SECRET).directory(Known(&["alice"])))
        .start()
        .await;

    let _alice = server.connect_as("alice").await;
    let url = server.url(&format!("/ws?token={}", token("mallory")));
    let mut mallory = TestClient::connect(url, "mallory").await;

    assert_eq!(mallory.expect_close(4001).await, "unknown user");
    assert!(!server.hub.is_connected(&UserId::from("mallory")));
}

#[tokio::test]
async fn a_token_that_breaks_a_rule_is_refused_with_4001_naming_the_rule() {
    let server = TestServer::start().await;
    let cases = [
        (expired_token("alice"), "token expired"),
        (refresh_token("alice"), "wrong token type"),
        (foreign_token("alice"), "invalid token"),
        ("not-a-jwt".to_owned(), "invalid token"),
    ];
    for (bad, reason) in cases {
        let url = server.url(&format!("/ws?token={bad}"));
        let mut client = TestClient::connect(url, reason).await;
        assert_eq!(client.expect_close(4001).await, reason);
    }
    assert_eq!(server.hub.connection_count(), 0);
}

#[tokio::test]
async fn a_token_is_found_in_the_query_the_cookies_and_the_authorization_header() {
    let server = TestServer::start().await;
    let jwt = token("alice");
    let headers = [
        ("cookie", format!("theme=dark; access_token={jwt}")),
        ("cookie", format!("token={jwt}")),
        ("authorization", format!("Bearer {jwt}")),
    ];
    for (name, value) in headers {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                server.url("/ws"),
            )
            .expect("a valid URL");
        request
            .headers_mut()
            .insert(name, value.parse().expect("a valid header value"));
        let mut client = TestClient::connect(request, name).await;
        let welcome = client.recv_json().await;
        assert_eq!(
            (&welcome["type"], &welcome["user_id"]),
            (&json!("welcome"), &json!("alice")),
            "token in {name}: {value}"
        );
    }
    // And the query, which the other tests use throughout.
    let _alice = server.connect_as("alice").await;
}
