//! The `Sec-WebSocket-Protocol: token.<jwt>` path: browsers cannot set headers, so they carry
//! the token as a subprotocol, and drop the connection unless the server selects it.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{COOKIE, SEC_WEBSOCKET_PROTOCOL};

use crate::common::{TestClient, TestServer, token};

#[tokio::test]
async fn a_token_subprotocol_authenticates_and_the_handshake_selects_exactly_that_subprotocol() {
    let server = TestServer::start().await;
    let offered = format!("token.{}", token("alice"));

    let mut alice = TestClient::connect_with_protocols(&server.url("/ws"), &offered, "alice").await;

    let selected = alice.response.headers().get(SEC_WEBSOCKET_PROTOCOL);
    assert_eq!(
        selected.and_then(|value| value.to_str().ok()),
        Some(offered.as_str())
    );
    let welcome = alice.recv_json().await;
    assert_eq!(welcome["user_id"], "alice");
}

#[tokio::test]
async fn the_token_subprotocol_is_selected_among_several_offered() {
    let server = TestServer::start().await;
    let jwt = token("alice");
    let offered = format!("chat.v1, token.{jwt}");

    let mut alice = TestClient::connect_with_protocols(&server.url("/ws"), &offered, "alice").await;

    let selected = alice.response.headers().get(SEC_WEBSOCKET_PROTOCOL);
    assert_eq!(
        selected.and_then(|value| value.to_str().ok()),
        Some(format!("token.{jwt}").as_str())
    );
    assert_eq!(alice.recv_json().await["user_id"], "alice");
}

#[tokio::test]
async fn the_token_subprotocol_is_selected_even_when_a_cookie_also_carries_a_token() {
    // A browser sends the site's cookies with the upgrade whatever the page asked for: a page
    // that authenticates through the subprotocol on a site with an `access_token` cookie must
    // still see its subprotocol selected, or the browser fails the connection.
    let server = TestServer::start().await;
    let offered = format!("token.{}", token("alice"));
    let mut request = server
        .url("/ws")
        .into_client_request()
        .expect("a valid URL");
    let headers = request.headers_mut();
    headers.insert(SEC_WEBSOCKET_PROTOCOL, offered.parse().unwrap());
    headers.insert(
        COOKIE,
        format!("access_token={}", token("alice")).parse().unwrap(),
    );

    let mut alice = TestClient::connect(request, "alice with a cookie").await;

    let selected = alice.response.headers().get(SEC_WEBSOCKET_PROTOCOL);
    assert_eq!(
        selected.and_then(|value| value.to_str().ok()),
        Some(offered.as_str())
    );
    assert_eq!(alice.recv_json().await["user_id"], "alice");
}
