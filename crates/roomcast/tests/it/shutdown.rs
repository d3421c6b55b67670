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

#[tokio::test]
async fn a_drain_asks_native_clients_to_reconnect_and_waits_for_them_to_leave() {
    use roomcast::protocol::native::NATIVE;
    let server = TestServer::builder()
        .endpoint(|endpoint| endpoint.dialect(&NATIVE))
        .start()
        .await;
    let mut alice = server.connect_as("alice").await;
    let mut bob = server.connect_as("bob").await;

    let hub = server.hub.clone();
    let drain = tokio::spawn(async move { hub.drain(WAIT).await });
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv_json().await["type"], "reconnect");
    }
    assert!(server.hub.is_draining() && !server.hub.is_shutting_down());
    // New connections are refused while the node drains.
    let url = server.url(&format!("/ws?token={}", token("carol")));
    TestClient::connect(url, "carol")
        .await
        .expect_close(1001)
        .await;

    // Alice leaves as asked; Bob does not and is closed by the shutdown that follows.
    alice.close().await;
    server.wait_for_connections(1).await;
    assert!(!drain.is_finished(), "the drain waits for every connection");
    let (finished, reason) =
        tokio::join!(server.hub.shutdown_sessions(WAIT), bob.expect_close(1001));
    assert!(finished);
    assert_eq!(reason, "server shutting down");
    assert!(
        drain.await.unwrap(),
        "the drain ends once every connection is gone"
    );
}

#[tokio::test]
async fn a_drain_without_connections_ends_at_once() {
    let server = TestServer::start().await;
    let started = tokio::time::Instant::now();
    assert!(server.hub.drain(WAIT).await);
    assert!(started.elapsed() < WAIT);
}
