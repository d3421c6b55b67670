//! Heartbeats: protocol pings with PONG_WAIT, the application heartbeat, the idle timeout.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn fast_heartbeat(config: &mut roomcast_server::ServerConfig) {
    config.session.ping_period = Duration::from_millis(100);
    config.session.pong_wait = Duration::from_millis(400);
}

#[tokio::test]
async fn a_peer_that_ignores_pings_is_closed_after_pong_wait() {
    let server = TestServer::start_with(fast_heartbeat).await;
    let mut client = server.connect_as("/ws", "ann").await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let frame = client.expect_close(1001).await;
    assert_eq!(frame.reason.as_str(), "ping timeout");
    server.wait_for(|hub| hub.connection_count() == 0).await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let server = TestServer::start_with(fast_heartbeat).await;
    let mut client = server.connect_as("/ws", "ann").await;
    // Reading lets the client answer each ping with a pong; it sends nothing else.
    client.expect_silence(Duration::from_millis(1200)).await;
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.recv_json().await["type"], "pong");
}

#[tokio::test]
async fn the_application_heartbeat_is_sent_at_its_interval() {
    let server = TestServer::start_with(|config| {
        config.session.heartbeat_interval = Duration::from_millis(150);
    })
    .await;
    let mut client = server.connect_as("/ws", "ann").await;
    for _ in 0..2 {
        assert_eq!(client.recv_json().await, json!({"type": "ping"}));
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_connection_timeout() {
    let server = TestServer::start_with(|config| {
        config.session.connection_timeout = Duration::from_millis(300);
        config.session.heartbeat_interval = Duration::from_millis(100);
    })
    .await;
    let mut talker = server.connect_as("/ws", "ann").await;
    let mut silent = server.connect_as("/ws", "bob").await;
    // The talker answers each heartbeat with a pong, which counts as a message.
    for _ in 0..6 {
        assert_eq!(talker.recv_json().await["type"], "ping");
        talker.send_json(json!({"type": "pong"})).await;
    }
    let frame = silent.expect_close(1001).await;
    assert_eq!(frame.reason.as_str(), "connection timeout");
    talker.send_json(json!({"type": "ping"})).await;
    talker.recv_type("pong").await;
}
