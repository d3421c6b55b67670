//! Smoke test: a few-second fan-out against the bare reference server and against the real
//! roomcast server, and a few-second `history` run against roomcast, every server started in
//! this process on ephemeral loopback ports. It checks correctness only (every message reaches
//! every member once; every persisted message is acked once, gap-free, and reads back);
//! timing is never asserted.

use std::net::SocketAddr;
use std::time::Duration;

use roomcast_loadgen::cli::Shape;
use roomcast_loadgen::scenario::fanout::{self, FanoutOutcome, FanoutPlan};
use roomcast_loadgen::scenario::history::{self, HistoryPlan};
use roomcast_loadgen::target::{Endpoint, Target};
use roomcast_loadgen::{reference, report, scenario};
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
    // Every delivery is also counted under the second its message was sent in: the two
    // seconds of the window (a third when it does not start on a second).
    let seconds = &outcome.latency_by_second;
    assert!((2..=3).contains(&seconds.len()), "{seconds:?}");
    let per_second: u64 = seconds.iter().map(|s| s.count).sum();
    assert_eq!(per_second, outcome.latency.count, "{seconds:?}");
    assert_eq!(per_second, d.received, "{seconds:?}");
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
async fn rounds_alternate_which_server_runs_first_and_report_both_every_round() {
    let (a, stop_a) = reference::spawn_local().await.unwrap();
    let (b, stop_b) = reference::spawn_local().await.unwrap();
    let targets = [target("first", a), target("second", b)];
    let plan = FanoutPlan {
        duration: Duration::from_secs(1),
        ..plan(1)
    };
    let mut ran: Vec<String> = Vec::new();
    let rounds = scenario::compare(
        "fanout",
        serde_json::json!(plan),
        &targets,
        Duration::from_millis(100),
        2,
        async |t, ns| {
            ran.push(t.label.clone());
            let outcome = fanout::run(t, &plan, &ns).await?;
            let d = &outcome.delivery;
            assert!(d.messages_sent > 0, "nothing was sent: {outcome:#?}");
            assert_eq!((d.received, d.lost), (d.expected, 0), "{outcome:#?}");
            Ok(outcome.report())
        },
    )
    .await
    .unwrap();
    assert_eq!(ran, ["first", "second", "second", "first"]);
    let firsts: Vec<&str> = rounds.iter().map(|r| r.first.as_str()).collect();
    assert_eq!(firsts, ["first", "second"]);
    for round in &rounds {
        // Reported in the targets' order, whichever ran first.
        let labels: Vec<&str> = round.runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["first", "second"]);
    }
    // Every figure of the rounds is summarized; both servers delivered everything.
    let summary = report::summarize(&rounds);
    let delivered = summary.iter().find(|s| s.key == "received").unwrap();
    assert_eq!(delivered.per_round.len(), 2);
    assert!(
        delivered.per_round.iter().all(|r| r.is_some()),
        "{delivered:?}"
    );
    stop_a.cancel();
    stop_b.cancel();
}

/// The real server as `roomcast serve` runs it, on a SQLite file of its own, until the
/// sender is dropped or sent to. The load generator's users have no account: their tokens are
/// trusted as an external identity provider's would be (`ROOMCAST_USER_DIRECTORY=token`).
struct RealServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl RealServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("roomcast.db").display());
        let mut config = ServerConfig::new(SECRET.as_bytes(), StoreConfig::new(url));
        config.user_directory = DirectoryMode::Token;
        // Hundreds of connections from one address, publishers far above a person's rate.
        config.limits = roomcast_server::limits::LimitsConfig::off();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::start(config).await.expect("server starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stopped in time")
            .expect("server task")
            .expect("server ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_roomcast_delivers_every_message_once() {
    let server = RealServer::start().await;
    let outcome = fanout::run(&target("roomcast", server.addr), &plan(2), "smoke-rc")
        .await
        .unwrap();
    assert_every_message_delivered_once(&outcome);
    assert_eq!(
        outcome.delivery.expected,
        outcome.delivery.messages_sent * 20
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_against_roomcast_acks_every_message_once_without_gaps() {
    let server = RealServer::start().await;
    let plan = HistoryPlan {
        publishers: 12,
        rooms: 3,
        window: 4,
        duration: Duration::from_secs(2),
        payload: 64,
        max_messages: 100_000,
        verify_history: true,
        verify_messages: 100_000,
    };
    let outcome = history::run(&target("roomcast", server.addr), &plan, "smokehist")
        .await
        .unwrap();
    assert_eq!(outcome.why_not_exact(), None, "{outcome:#?}");
    let acks = &outcome.acks;
    assert!(acks.sent > 0, "{outcome:#?}");
    assert_eq!(acks.acked, acks.sent, "{outcome:#?}");
    assert_eq!(acks.rooms_not_from_1, 0, "{outcome:#?}");
    assert_eq!(outcome.rooms.len(), 3);
    for room in &outcome.rooms {
        assert!(room.is_gap_free(), "{room:?}");
        assert_eq!(room.first, Some(1), "{room:?}");
        assert_eq!(room.last, Some(room.acked), "{room:?}");
    }
    // Every member (4 per room) got every message of its room.
    assert_eq!(outcome.fanout_expected, acks.acked * 4);
    assert_eq!(outcome.fanout_received, outcome.fanout_expected);
    // Everything persisted was read back, at the seq its sender was told.
    let readback = outcome.readback.as_ref().expect("read back");
    assert_eq!(readback.error, None);
    assert_eq!(readback.persisted, acks.acked);
    assert_eq!(readback.read, acks.acked);
    assert_eq!(readback.matched, acks.acked);
    server.stop().await;
}
