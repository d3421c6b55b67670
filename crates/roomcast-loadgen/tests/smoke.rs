//! Smoke test: a few-second fan-out against the bare reference server and against the real
//! roomcast server, both started in this process on ephemeral loopback ports. It checks
//! correctness only (every message reaches every member once); timing is never asserted.

use std::net::SocketAddr;
use std::time::Duration;

use roomcast_loadgen::cli::Shape;
use roomcast_loadgen::reference;
use roomcast_loadgen::scenario::fanout::{self, FanoutOutcome, FanoutPlan};
use roomcast_loadgen::target::{Endpoint, Target};
use roomcast_server::{DirectoryMode, Server, ServerConfig, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SECRET: &str = "roomcast-loadgen-smoke-secret-0123456789";

fn target(label: &str, addr: SocketAddr) -> Target {
    Target {
        label: label.to_owned(),
        endpoint: Endpoint::parse(&format!("ws://{addr}/ws/auth")).unwrap(),
        server_pid: None,
        secret: SECRET.to_owned(),
        sources: 4,
        setup_concurrency: 16,
        setup_timeout: Duration::from_secs(30),
        drain: Duration::from_secs(10),
    }
}

/// A generous rate: a few hundred deliveries a second on a debug build.
fn plan(rooms: u32) -> FanoutPlan {
    FanoutPlan {
        shape: Shape {
            rooms,
            clients: 20,
            publishers: 2 * rooms,
            payload: 64,
        },
        rate: 100,
        duration: Duration::from_secs(2),
    }
}

fn assert_every_message_delivered_once(outcome: &FanoutOutcome) {
    let d = &outcome.delivery;
    assert!(d.messages_sent > 0, "nothing was sent: {outcome:#?}");
    assert_eq!(d.received, d.expected, "lost deliveries: {outcome:#?}");
    assert_eq!(d.lost, 0, "{outcome:#?}");
    assert_eq!(d.duplicates, 0, "{outcome:#?}");
    assert_eq!(d.misrouted, 0, "{outcome:#?}");
    assert_eq!(d.incomplete_messages, 0, "{outcome:#?}");
    assert!(outcome.closed.is_empty(), "clients closed: {outcome:#?}");
    assert!(outcome.errors.is_empty(), "client errors: {outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_the_reference_server_delivers_every_message_once() {
    let (addr, stop) = reference::spawn_local().await.unwrap();
    // The reference server has one room: a single room keeps the accounting meaningful.
    let outcome = fanout::run(&target("reference", addr), &plan(1), "smoke-ref")
        .await
        .unwrap();
    assert_every_message_delivered_once(&outcome);
    assert_eq!(
        outcome.delivery.expected,
        outcome.delivery.messages_sent * 20
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_roomcast_delivers_every_message_once() {
    // The real server as `roomcast serve` runs it, on a SQLite file of its own. The load
    // generator's users have no account: their tokens are trusted as an external identity
    // provider's would be (`ROOMCAST_USER_DIRECTORY=token`).
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roomcast.db").display());
    let mut config = ServerConfig::new(SECRET.as_bytes(), StoreConfig::new(url));
    config.user_directory = DirectoryMode::Token;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start(config).await.expect("server starts");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let outcome = fanout::run(&target("roomcast", addr), &plan(2), "smoke-rc")
        .await
        .unwrap();
    assert_every_message_delivered_once(&outcome);
    assert_eq!(
        outcome.delivery.expected,
        outcome.delivery.messages_sent * 20
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server stopped in time")
        .expect("server task")
        .expect("server ran");
}
