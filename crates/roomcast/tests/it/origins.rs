//! The origin check: browsers send `Origin`, and an endpoint may list the ones it accepts.

use roomcast::AllowedOrigins;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::common::{TestClient, TestServer, token};

async fn connect_from(server: &TestServer, origin: &str) -> TestClient {
    let url = server.url(&format!("/ws?token={}", token("alice")));
    let mut request = url.into_client_request().expect("a valid URL");
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("a valid header value"));
    TestClient::connect(request, origin).await
}

/// The HTTP status of a refused upgrade.
async fn refused_status(server: &TestServer, origin: &str) -> u16 {
    let url = server.url(&format!("/ws?token={}", token("alice")));
    let mut request = url.into_client_request().expect("a valid URL");
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("a valid header value"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("expected an HTTP refusal, got {err}"),
        Ok(_) => panic!("{origin} was let in"),
    }
}

#[tokio::test]
async fn an_origin_outside_the_allowed_list_is_refused_with_403_before_the_upgrade() {
    let server = TestServer::builder()
        .endpoint(|endpoint| endpoint.allowed_origins(AllowedOrigins::parse("https://app.example")))
        .start()
        .await;

    assert_eq!(refused_status(&server, "https://evil.example").await, 403);

    let mut app = connect_from(&server, "https://app.example").await;
    assert_eq!(app.recv_json().await["type"], "welcome");
}
