//! The origin check: browsers send `Origin`, and an endpoint may list the ones it accepts.

use roomcast::AllowedOrigins;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{TestClient, TestServer, token};

async fn connect_from(server: &TestServer, origin: &str) -> TestClient {
    let url = server.url(&format!("/ws?token={}", token("alice")));
    let mut request = url.into_client_request().expect("a valid URL");
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("a valid header value"));
    TestClient::connect(request, origin).await
}

#[tokio::test]
async fn an_origin_outside_the_allowed_list_is_refused_with_1008() {
    let server = TestServer::builder()
        .endpoint(|endpoint| endpoint.allowed_origins(AllowedOrigins::parse("https://app.example")))
        .start()
        .await;

    let mut evil = connect_from(&server, "https://evil.example").await;
    assert_eq!(evil.expect_close(1008).await, "origin not allowed");

    let mut app = connect_from(&server, "https://app.example").await;
    assert_eq!(app.recv_json().await["type"], "welcome");
}
