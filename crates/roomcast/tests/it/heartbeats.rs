//! Heartbeats and deadlines, with short configured durations (paused time cannot drive real
//! sockets): the dialect's application ping, the idle timeout, the pong deadline.

use std::time::Duration;

use roomcast::protocol::native::NATIVE;
use roomcast::{Hub, SessionConfig};
use serde_json::json;

use crate::common::TestServer;

fn quick(config: SessionConfig) -> Hub {
    config.validate().expect("a valid test configuration");
    Hub::new(config)
}

#[tokio::test]
async fn the_native_dialect_sends_its_heartbeat_every_heartbeat_interval() {
    let hub = quick(SessionConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..SessionConfig::default()
    });
    let server = TestServer::builder()
        .hub(hub)
        .endpoint(|endpoint| endpoint.dialect(&NATIVE))
        .start()
        .await;
    let mut alice = server.connect_as("alice").await;

    assert_eq!(alice.recv_json().await, json!({ "type": "ping" }));
    assert_eq!(alice.recv_json().await, json!({ "type": "ping" }));
}

#[tokio::test]
async fn a_client_that_sends_no_data_is_closed_with_1001_after_connection_timeout() {
    let hub = quick(SessionConfig {
        connection_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    });
    let server = TestServer::builder().hub(hub).start().await;
    let mut alice = server.connect_as("alice").await;

    assert_eq!(alice.expect_close(1001).await, "connection timeout");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_1001_after_pong_wait() {
    let hub = quick(SessionConfig {
        ping_period: Duration::from_millis(100),
        pong_wait: Duration::from_millis(300),
        ..SessionConfig::default()
    });
    let mut server = TestServer::builder().hub(hub).start().await;
    // The client reads nothing from now on, so it answers no ping. (Reading later would not show
    // the close frame either: the client first writes the pongs it owes, to a closed socket.)
    let _alice = server.connect_as("alice").await;

    let seen = server.disconnected().await;
    assert_eq!(
        (seen.reason.code(), seen.reason.reason()),
        (1001, "ping timeout")
    );
    server.wait_for_connections(0).await;
}
