//! `Hub::shutdown_sessions`: every session closes with 1001 and new clients are turned away.

use crate::common::{TestClient, TestServer, WAIT, token};

#[tokio::test]
async fn shutdown_closes_every_session_with_1001_and_refuses_new_ones() {
    let server = TestServer::start().await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    let (finished, alice_reason, bob_reason) = tokio::join!(
        server.hub.shutdown_sessions(WAIT),
        alice.expect_close(1001),
        bob.expect_close(1001),
    );

    assert!(finished, "every session finished within {WAIT:?}");
    assert_eq!(alice_reason, "server shutting down");
    assert_eq!(bob_reason, "server shutting down");
    assert_eq!(server.hub.connection_count(), 0);
    assert!(server.hub.is_shutting_down());

    let url = server.url(&format!("/ws?token={}", token("carol")));
    let mut carol = TestClient::connect(url, "carol").await;
    carol.expect_close(1001).await;
}
