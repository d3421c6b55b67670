//! `GET /metrics`: the counters move by exactly what the clients did.

use std::collections::HashMap;

use serde_json::json;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{TestServer, http_raw, now, sign};

/// One scrape: each sample's `name{labels}` and its value.
#[derive(Debug)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn take(server: &TestServer) -> Self {
        let (status, head, body) = http_raw(server, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(
            body.ends_with("# EOF\n"),
            "an OpenMetrics exposition ends with # EOF"
        );
        Self::parse(&body)
    }

    fn parse(body: &str) -> Self {
        let samples = body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (key, value) = line.rsplit_once(' ').expect("a sample has a value");
                (key.to_owned(), value.parse().expect("a numeric value"))
            })
            .collect();
        Self(samples)
    }

    /// The sample's value; 0 when the series does not exist yet (a label not seen so far).
    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

#[tokio::test]
async fn connections_messages_closes_and_auth_failures_are_counted_exactly() {
    let server = TestServer::start().await;
    let before = Scrape::take(&server).await;

    // N = 3 connections join one room; M = 3 chat messages, each reaching all three.
    let users = ["ann", "bob", "cat"];
    let mut clients = Vec::new();
    for user in users {
        let mut client = server.connect_as("/ws/auth", user).await;
        client.join("lobby").await;
        clients.push(client);
    }
    for (at, client) in clients.iter_mut().enumerate() {
        client
            .send_json(json!({"type": "message", "room": "lobby", "content": format!("m{at}")}))
            .await;
    }
    for client in &mut clients {
        for _ in 0..users.len() {
            client.recv_type("message").await;
        }
    }
    let during = Scrape::take(&server).await;
    let moved = |key: &str| during.get(key) - before.get(key);
    assert_eq!(
        during.get(r#"roomcast_connections{endpoint="/ws/auth"}"#),
        3.0
    );
    assert_eq!(
        moved(r#"roomcast_connections_opened_total{endpoint="/ws/auth"}"#),
        3.0
    );
    // Three joins and three chat messages: every data message a client sent.
    assert_eq!(
        moved(r#"roomcast_messages_received_total{dialect="native"}"#),
        6.0
    );
    assert!(moved("roomcast_received_bytes_total") > 0.0);
    // Each message reached three members (presence announcements come on top).
    assert!(moved("roomcast_messages_delivered_total") >= 9.0);
    assert!(moved("roomcast_delivered_bytes_total") > 0.0);
    // One broadcast observation per message, and the store wrote exactly those three.
    assert_eq!(moved("roomcast_broadcast_seconds_count"), 3.0);
    assert_eq!(moved("roomcast_store_batch_size_sum"), 3.0);
    assert!(moved("roomcast_store_commit_seconds_count") >= 1.0);
    assert_eq!(during.get("roomcast_rooms"), 1.0);
    // Each scrape samples every room once: the one room of three members is in `le="5"`, not
    // in `le="2"`.
    assert_eq!(
        moved(r#"roomcast_room_members_bucket{le="5.0"}"#)
            - moved(r#"roomcast_room_members_bucket{le="2.0"}"#),
        1.0
    );

    // Closes by code: a clean close without a code (1005, as the peer's close frame had none)
    // and a message over the size limit (1009).
    let mut clients = clients.into_iter();
    clients.next().unwrap().close().await;
    let mut oversized = clients.next().unwrap();
    oversized.send_text(&"x".repeat(64 * 1024)).await;
    oversized.expect_close(1009).await;
    server.wait_for(|hub| hub.connection_count() == 1).await;

    // Auth failures by reason: none, a bad signature, an expired token.
    let expired = sign(&json!({"sub": "ann", "type": "access", "exp": now() - 3600}));
    let forged = crate::common::sign_with(
        &json!({"sub": "ann", "type": "access", "exp": now() + 600}),
        b"another secret, not the server's, 32+ bytes",
    );
    for query in [
        String::new(),
        format!("?token={forged}"),
        format!("?token={expired}"),
    ] {
        let mut refused = server.connect(&format!("/ws/auth{query}")).await;
        refused.expect_close(4001).await;
    }

    let after = Scrape::take(&server).await;
    let moved = |key: &str| after.get(key) - before.get(key);
    assert_eq!(
        after.get(r#"roomcast_connections{endpoint="/ws/auth"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"roomcast_connections_closed_total{code="1005"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"roomcast_connections_closed_total{code="1009"}"#),
        1.0
    );
    assert_eq!(moved(r#"roomcast_errors_total{kind="protocol"}"#), 1.0);
    assert_eq!(moved("roomcast_connection_duration_seconds_count"), 2.0);
    assert_eq!(
        moved(r#"roomcast_auth_failures_total{reason="missing"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"roomcast_auth_failures_total{reason="invalid"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"roomcast_auth_failures_total{reason="expired"}"#),
        1.0
    );
    assert_eq!(moved("roomcast_connections_refused_total"), 3.0);
}

#[tokio::test]
async fn a_metrics_token_is_required_when_set_and_metrics_can_be_turned_off() {
    let server = TestServer::start_with(|config| {
        config.metrics.token = Some("scrape-secret-0123".to_owned());
    })
    .await;
    let (status, head, _) = http_raw(&server, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    let wrong = [("Authorization", "Bearer scrape-secret-0124")];
    assert_eq!(
        http_raw(&server, "GET", "/metrics", &wrong, "").await.0,
        401
    );
    let right = [("Authorization", "Bearer scrape-secret-0123")];
    let (status, _, body) = http_raw(&server, "GET", "/metrics", &right, "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE roomcast_messages_delivered counter"),
        "{body}"
    );

    let off = TestServer::start_with(|config| config.metrics.enabled = false).await;
    assert_eq!(http_raw(&off, "GET", "/metrics", &[], "").await.0, 404);
}

#[tokio::test]
async fn each_refusal_of_a_rate_limit_is_counted_under_its_limit() {
    let server = TestServer::start_with(|config| config.limits.connect_rate = 1).await;
    let before = Scrape::take(&server).await;
    let mut admitted = Vec::new();
    let mut refused = 0;
    // A burst of four is allowed; the rest of these eight, sent at once, are refused.
    for _ in 0..8 {
        match server
            .try_connect(server.url("/ws").into_client_request().unwrap())
            .await
        {
            Ok(client) => admitted.push(client),
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429);
                refused += 1;
            }
            Err(err) => panic!("{err}"),
        }
    }
    assert!(refused >= 3, "{refused} of 8 refused");
    let after = Scrape::take(&server).await;
    assert_eq!(
        after.get(r#"roomcast_rate_limited_total{limit="connect"}"#)
            - before.get(r#"roomcast_rate_limited_total{limit="connect"}"#),
        f64::from(refused)
    );
}

/// At light load a room's message is written to each member's socket by the thread that
/// delivered it, without waking each member's task (`roomcast_direct_writes_total`); every
/// member still gets every message once, in order, and the replies the sender waits for.
#[tokio::test]
async fn a_quiet_rooms_messages_are_written_by_the_delivering_thread() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for at in 0..10 {
        let mut client = server.connect_as("/ws/auth", &format!("quiet{at}")).await;
        client.join("quiet").await;
        clients.push(client);
    }
    let before = Scrape::take(&server).await;
    for n in 0..5 {
        let content = format!("m{n}");
        clients[0]
            .send_json(json!({"type": "message", "room": "quiet", "content": content}))
            .await;
        for client in &mut clients {
            let message = client.recv_type("message").await;
            assert_eq!(message["content"], content.as_str());
        }
        clients[0].recv_type("ack").await;
    }
    let after = Scrape::take(&server).await;
    let direct =
        after.get("roomcast_direct_writes_total") - before.get("roomcast_direct_writes_total");
    // 50 deliveries, each into an empty queue long after its member's last write: nearly all
    // go straight to the socket (a member whose task happened to be writing is woken instead).
    assert!(
        (9.0..=50.0).contains(&direct),
        "{direct} of 50 deliveries written directly"
    );
}

/// Sends `count` messages to a room of two on `server` and returns the WAL syncs made apart
/// from the writer meanwhile (`roomcast_store_sync_seconds_count`); each message is received by
/// both members and acked.
async fn syncs_for_messages(server: &TestServer, count: usize) -> f64 {
    let mut alice = server.connect_as("/ws/auth", "alice").await;
    let mut bob = server.connect_as("/ws/auth", "bob").await;
    alice.join("synced").await;
    bob.join("synced").await;
    let before = Scrape::take(server).await;
    for n in 0..count {
        let content = format!("m{n}");
        alice
            .send_json(json!({"type": "message", "room": "synced", "content": content}))
            .await;
        assert_eq!(bob.recv_type("message").await["content"], content.as_str());
        assert_eq!(
            alice.recv_type("message").await["content"],
            content.as_str()
        );
        alice.recv_type("ack").await;
    }
    let after = Scrape::take(server).await;
    let key = "roomcast_store_sync_seconds_count";
    after.get(key) - before.get(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_is_synced_after_the_broadcast_unless_the_setting_is_off() {
    // The default: every commit's WAL is synced by the syncer thread, before the ack.
    let server = TestServer::start().await;
    let syncs = syncs_for_messages(&server, 5).await;
    assert!((1.0..=5.0).contains(&syncs), "{syncs} syncs for 5 commits");
    // `ROOMCAST_BROADCAST_BEFORE_SYNC=false`: each commit syncs as it goes, nothing apart.
    let server = TestServer::start_with(|config| {
        config.store.options.sqlite_hooks_before_sync = false;
    })
    .await;
    assert_eq!(syncs_for_messages(&server, 5).await, 0.0);
}
