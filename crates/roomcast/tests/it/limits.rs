//! Per-connection limits from `SessionConfig` that end a connection with their own close code.

use roomcast::{Hub, SessionConfig};

use crate::common::TestServer;

#[tokio::test]
async fn a_message_bigger_than_max_message_bytes_is_closed_with_1009() {
    let config = SessionConfig {
        max_message_bytes: 1024,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    let mut alice = server.connect_as("alice").await;

    alice.send_text(&"x".repeat(512)).await;
    assert_eq!(
        alice.recv_json().await["kind"],
        "text",
        "a message under the limit passes"
    );

    alice.send_text(&"x".repeat(4096)).await;
    alice.expect_close(1009).await;
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_client_over_max_connections_is_closed_with_1013() {
    let config = SessionConfig {
        max_connections: 1,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    let _alice = server.connect_as("alice").await;

    let url = server.url(&format!("/ws?token={}", crate::common::token("bob")));
    let mut bob = crate::common::TestClient::connect(url, "bob").await;

    assert_eq!(bob.expect_close(1013).await, "server full");
    assert!(!server.hub.is_connected(&roomcast::UserId::from("bob")));
}

/// A server that admits one connection at a time.
async fn one_connection_at_a_time() -> TestServer {
    let config = SessionConfig {
        max_connections: 1,
        ..SessionConfig::default()
    };
    TestServer::builder().hub(Hub::new(config)).start().await
}

#[tokio::test]
async fn a_closed_connection_gives_its_place_back() {
    let server = one_connection_at_a_time().await;
    let alice = server.connect_as("alice").await;
    alice.close().await;
    server.wait_for_connections(0).await;
    // Welcomed, not refused with 1013: alice's permit came back.
    let _bob = server.connect_as("bob").await;
}

#[tokio::test]
async fn a_connection_whose_hook_panics_is_unregistered_and_gives_its_place_back() {
    let server = one_connection_at_a_time().await;
    let mut alice = server.connect_as("alice").await;
    // The probe panics on a command it does not know: the connection's task dies.
    alice
        .send_json(&serde_json::json!({ "cmd": "no such command" }))
        .await;
    server.wait_for_connections(0).await;
    assert!(!server.hub.is_connected(&roomcast::UserId::from("alice")));
    let _bob = server.connect_as("bob").await;
}

#[tokio::test]
async fn a_client_whose_queue_overflows_is_closed_with_1013_slow_consumer() {
    let config = SessionConfig {
        outbound_capacity: 4,
        ..SessionConfig::default()
    };
    let server = TestServer::builder().hub(Hub::new(config)).start().await;
    let mut alice = server.connect_as("alice").await;

    // The test runtime has one thread and a broker-less send never yields, so the session
    // cannot drain its queue between these sends: the fifth overflows it.
    for n in 0..8 {
        server
            .hub
            .send_to(&roomcast::UserId::from("alice"), format!("frame {n}"))
            .await
            .unwrap();
    }

    assert_eq!(alice.expect_close(1013).await, "slow consumer");
    assert_eq!(server.hub.stats().slow_consumers_total, 1);
}
