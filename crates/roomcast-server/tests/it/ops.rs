//! Operations, on the real `roomcast` binary: logs that never show a token, the drain on
//! SIGTERM (`reconnect`, `/readyz` 503, 1001, exit 0, nothing acknowledged lost), and the one
//! line a person gets for a mistake in the settings.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomcast_store::{Seq, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::*;

/// The `roomcast` binary serving a SQLite file on a port the OS picked, its log (stderr, JSON
/// lines) collected as it is written. Killed when dropped.
pub(crate) struct Roomcast {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    /// The task copying stderr into `log`: it ends when the process has closed stderr.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Roomcast {
    /// Starts `roomcast serve` on `database_url` with `env` on top of the test settings, and
    /// waits (bounded) for its "roomcast listening" line, which names the port.
    pub(crate) async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        command
            .arg("serve")
            // One node: CI exports REDIS_URL for the cluster tests.
            .env_remove("REDIS_URL")
            .env("ROOMCAST_LISTEN", "127.0.0.1:0")
            .env("ROOMCAST_JWT_SECRET", SECRET)
            .env("ROOMCAST_USER_DIRECTORY", "token")
            .env("ROOMCAST_MESSAGE_RATE", "0")
            .env("ROOMCAST_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("DATABASE_URL", database_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the roomcast binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let written = Arc::clone(&log);
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = written.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let listening = log
                .lock()
                .unwrap()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| line["message"] == "roomcast listening");
            if let Some(line) = listening {
                break line["addr"].as_str().unwrap().parse().unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "roomcast did not say it was listening: {}",
                log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// Everything logged so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Connects a WebSocket client to `path_and_query`.
    pub(crate) async fn connect(&self, path_and_query: &str) -> TestClient {
        let url = format!("ws://{}{path_and_query}", self.addr);
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake timed out")
            .expect("handshake");
        TestClient { ws, response }
    }

    /// Kills the process with SIGKILL, as a crash or the OOM killer would, and reaps it.
    pub(crate) async fn sigkill(&mut self) {
        self.child.start_kill().expect("kill -9");
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM, as an orchestrator stopping the node would.
    async fn sigterm(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits (bounded) for the process to exit; its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("roomcast did not exit: {}", self.log()))
            .expect("wait for roomcast");
        // The process is gone but its last lines may still be in the pipe: read them all
        // before anyone looks at the log.
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }

    /// `GET path` with `headers`: the status and the body.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (status, _, body) =
            crate::common::http_raw_at(self.addr, "GET", path, headers, "").await;
        (status, body)
    }
}

fn sqlite(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("ops.db").display())
}

/// Sends `content` to `room` and waits for its `ack`.
async fn say_acked(client: &mut TestClient, room: &str, content: &str) -> Value {
    client
        .send_json(json!({"type": "message", "room": room, "content": content}))
        .await;
    client.recv_type("ack").await
}

#[tokio::test]
async fn sigterm_drains_reconnect_then_1001_readyz_503_exit_0_and_nothing_acknowledged_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Roomcast::start(&sqlite(&dir), &[("ROOMCAST_DRAIN_TIMEOUT", "3s")]).await;
    let (status, body) = server.get("/readyz", &[]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let mut ann = server
        .connect(&format!("/ws/auth?token={}", token("ann", "Ann")))
        .await;
    let mut bob = server
        .connect(&format!("/ws/auth?token={}", token("bob", "Bob")))
        .await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    for i in 1..=5 {
        say_acked(&mut ann, "lobby", &format!("before the drain {i}")).await;
    }

    server.sigterm().await;
    // Both are asked to go; the drain has begun once they are.
    ann.recv_type("reconnect").await;
    bob.recv_type("reconnect").await;
    let (status, body) = server.get("/readyz", &[]).await;
    assert_eq!((status, body.as_str()), (503, r#"{"status":"draining"}"#));
    // HTTP is still served, new WebSocket connections are not.
    assert_eq!(server.get("/healthz", &[]).await.0, 200);
    let mut late = server
        .connect(&format!("/ws/auth?token={}", token("cid", "Cid")))
        .await;
    late.expect_close(1001).await;

    // Ann finishes a message, then leaves as asked; Bob stays and keeps the drain open.
    say_acked(&mut ann, "lobby", "during the drain").await;
    ann.close().await;
    assert_eq!(server.get("/readyz", &[]).await.0, 503, "still draining");
    let frame = bob.expect_close(1001).await;
    assert_eq!(frame.reason.as_str(), "server shutting down");

    let status = server.exited().await;
    assert!(status.success(), "exit status {status:?}: {}", server.log());
    let log = server.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("roomcast stopped"), "{log}");

    // Every acknowledged message is in the store.
    let store = Store::connect(&sqlite(&dir)).await.unwrap();
    let stored: Vec<String> = store
        .messages_since("lobby", Seq(0), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|message| message.content)
        .collect();
    let mut expected: Vec<String> = (1..=5).map(|i| format!("before the drain {i}")).collect();
    expected.push("during the drain".to_owned());
    assert_eq!(stored, expected);
    store.close().await;
}

#[tokio::test]
async fn a_log_captured_while_clients_connect_with_tokens_contains_no_token() {
    let dir = tempfile::tempdir().unwrap();
    // `trace`: everything any crate logs, request URIs (`debug`) included.
    let mut server = Roomcast::start(
        &sqlite(&dir),
        &[("RUST_LOG", "trace"), ("ROOMCAST_DRAIN_TIMEOUT", "0s")],
    )
    .await;
    let ann = token("ann", "Ann");
    let expired =
        sign(&json!({"sub": "bob", "username": "Bob", "type": "access", "exp": now() - 3600}));
    let forged = sign_with(
        &json!({"sub": "eve", "type": "access", "exp": now() + 600}),
        b"not the server's secret, but long enough",
    );

    let mut client = server.connect(&format!("/ws/auth?token={ann}")).await;
    client.join("lobby").await;
    say_acked(&mut client, "lobby", "hello").await;
    let mut channels = server
        .connect(&format!("/ws/chat/lobby/?token={ann}&x=1"))
        .await;
    channels.recv_json().await;
    for refused in [&expired, &forged] {
        let mut client = server.connect(&format!("/ws/auth?token={refused}")).await;
        client.expect_close(4001).await;
    }
    let bearer = format!("Bearer {ann}");
    let cookie = format!("access_token={ann}");
    server
        .get("/me", &[("Authorization", &bearer), ("Cookie", &cookie)])
        .await;
    server.get(&format!("/rooms?access_token={ann}"), &[]).await;
    server.get(&format!("/healthz?token={forged}"), &[]).await;
    client.close().await;

    server.sigterm().await;
    channels.expect_close(1001).await;
    assert!(server.exited().await.success());
    let log = server.log();
    for secret in [&ann, &expired, &forged] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(secret.as_str()), "a token was logged: {log}");
        assert!(
            !log.contains(signature),
            "a token's signature was logged: {log}"
        );
    }

    // What was logged instead: the connections' events in their span, refusals with a
    // reason, request URIs redacted.
    let events: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let find = |message: &str| {
        events
            .iter()
            .find(|event| event["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} event in {log}"))
    };
    let connected = find("connected");
    assert_eq!(connected["span"]["user"], "ann");
    assert_eq!(connected["span"]["endpoint"], "/ws/auth");
    assert_eq!(connected["span"]["client_ip"], "127.0.0.1");
    assert!(connected["span"]["conn"].is_string());
    let disconnected = find("disconnected");
    assert!(disconnected["code"].is_u64() && disconnected["duration_ms"].is_u64());
    assert!(disconnected["reason"].is_string());
    assert_eq!(find("joined")["room"], "lobby");
    let refused = find("connection refused: authentication");
    assert!(
        refused["reason"].as_str().unwrap().contains("expired"),
        "{refused}"
    );
    assert!(log.contains("/rooms?access_token=[redacted]"), "{log}");
}

/// Runs the binary with only `env` (and `RUST_BACKTRACE=1`, as a curious user might): its
/// exit code and stderr.
async fn run_failing(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    command
        .args(args)
        .env_clear()
        .env("RUST_BACKTRACE", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("roomcast exits")
        .expect("roomcast runs");
    let stderr = String::from_utf8(output.stderr).unwrap();
    (output.status.code(), stderr)
}

/// A mistake a new user might make, and what `roomcast` must say about it.
struct Mistake {
    args: &'static [&'static str],
    env: Vec<(&'static str, String)>,
    /// The setting the line must start with.
    setting: &'static str,
    exit: i32,
}

#[tokio::test]
async fn each_mistake_in_the_settings_is_one_line_naming_the_setting_without_a_backtrace() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let secret = ("ROOMCAST_JWT_SECRET", SECRET.to_owned());
    let mistake = |args, env: &[(&'static str, &str)], setting, exit| Mistake {
        args,
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        setting,
        exit,
    };
    let mut port_in_use = mistake(
        &["serve"],
        &[("ROOMCAST_LISTEN", &taken)],
        "ROOMCAST_LISTEN",
        1,
    );
    port_in_use.env.push(secret.clone());
    // A closed port: nothing listens on port 1.
    let mut database_down = mistake(
        &["serve"],
        &[
            ("ROOMCAST_LISTEN", "127.0.0.1:0"),
            (
                "DATABASE_URL",
                "postgres://postgres:hunter2@127.0.0.1:1/roomcast",
            ),
        ],
        "DATABASE_URL",
        1,
    );
    database_down.env.push(secret);
    let cases = [
        mistake(&["token", "--sub", "alice"], &[], "ROOMCAST_JWT_SECRET", 2),
        mistake(
            &["serve"],
            &[("ROOMCAST_JWT_SECRET", "too short")],
            "ROOMCAST_JWT_SECRET",
            2,
        ),
        mistake(
            &["serve"],
            &[("WEBSOCKET_PONG_WAIT", "a minute")],
            "WEBSOCKET_PONG_WAIT",
            2,
        ),
        mistake(
            &["serve"],
            &[("ROOMCAST_LOG_FORMAT", "xml")],
            "ROOMCAST_LOG_FORMAT",
            2,
        ),
        port_in_use,
        database_down,
    ];
    for Mistake {
        args,
        env,
        setting,
        exit,
    } in cases
    {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stderr) = run_failing(args, &env).await;
        let case = format!("{args:?} {env:?}");
        assert_eq!(code, Some(exit), "{case}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{case}: one line, got {stderr}");
        let line = lines[0];
        assert!(
            line.starts_with(&format!("roomcast: {setting}")),
            "{case}: {line}"
        );
        for noise in [
            "backtrace",
            "Backtrace",
            "Stack",
            "at src/",
            "panicked",
            "Caused by",
        ] {
            assert!(!line.contains(noise), "{case}: {line}");
        }
        assert!(
            !line.contains("hunter2"),
            "{case}: the password was printed: {line}"
        );
    }
}
