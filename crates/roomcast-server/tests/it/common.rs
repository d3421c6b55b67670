//! The test harness: a real server on an ephemeral loopback port, real WebSocket clients, and
//! tokens of every kind. Every wait is bounded and fails saying what it expected.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use roomcast::Hub;
use roomcast_server::{Server, ServerConfig, StoreConfig};
use roomcast_store::Store;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "roomcast-test-secret-0123456789abcdef";
/// Long enough for a loaded CI machine, short enough to fail fast.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: &Value) -> String {
    sign_with(claims, SECRET.as_bytes())
}

pub fn sign_with(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// A valid access token for `sub` with display name `username`.
pub fn token(sub: &str, username: &str) -> String {
    sign(&json!({"sub": sub, "username": username, "type": "access", "exp": now() + 600}))
}

/// The server's router, for HTTP tests through `tower::ServiceExt::oneshot`; the directory
/// holds its SQLite file and must outlive it.
pub async fn test_app(edit: impl FnOnce(&mut ServerConfig)) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("roomcast.db").display());
    let mut config = ServerConfig::new(SECRET.as_bytes(), StoreConfig::new(url));
    edit(&mut config);
    let server = Server::start(config).await.expect("server starts");
    (server.router(), dir)
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub store: Store,
    /// The SQLite file lives here; removed when the server is dropped.
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts the real server (`roomcast_server::Server::run`, as `main` does) after `edit`
    /// adjusted the configuration.
    pub async fn start_with(edit: impl FnOnce(&mut ServerConfig)) -> Self {
        // `RUST_LOG=roomcast=debug cargo test …` shows the server's log for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("roomcast.db").display());
        let mut config = ServerConfig::new(SECRET.as_bytes(), StoreConfig::new(url));
        config.auth = config.auth.leeway(Duration::ZERO);
        config.session.heartbeat_interval = Duration::ZERO;
        // Stop at once: the drain is tested on the binary (`ops.rs`).
        config.drain_timeout = Duration::ZERO;
        edit(&mut config);
        Self::start_config(config, Some(dir)).await
    }

    /// Starts the server with exactly `config`.
    pub async fn start_config(config: ServerConfig, dir: Option<tempfile::TempDir>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::start(config).await.expect("server starts");
        let hub = server.hub().clone();
        let store = server.store().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hub,
            store,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connects to `path` (which may carry a query) with no credentials.
    pub async fn connect(&self, path: &str) -> TestClient {
        self.try_connect(self.url(path).into_client_request().unwrap())
            .await
            .unwrap_or_else(|err| panic!("connecting to {path}: {err}"))
    }

    /// Makes sure `user` (display name: capitalized) exists in the store.
    pub async fn add_user(&self, user: &str) {
        self.store
            .ensure_user(user, &capitalize(user))
            .await
            .expect("user created");
    }

    /// A valid token for `user`, who is added to the store.
    pub async fn user_token(&self, user: &str) -> String {
        self.add_user(user).await;
        token(user, &capitalize(user))
    }

    /// Connects to `path` as `user` (token in the query) and waits until the server has
    /// registered the connection.
    pub async fn connect_as(&self, path: &str, user: &str) -> TestClient {
        // Accepted connections only grow, unlike the open count (a dropped one may be leaving).
        let before = self.hub.stats().accepted_total;
        let sep = if path.contains('?') { '&' } else { '?' };
        let token = self.user_token(user).await;
        let client = self.connect(&format!("{path}{sep}token={token}")).await;
        self.wait_for(|hub| hub.stats().accepted_total > before)
            .await;
        client
    }

    pub async fn try_connect(
        &self,
        request: tungstenite::handshake::client::Request,
    ) -> Result<TestClient, tungstenite::Error> {
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake timed out")?;
        Ok(TestClient { ws, response })
    }

    /// Waits (bounded) until `condition` holds for the hub.
    pub async fn wait_for(&self, condition: impl Fn(&Hub) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition(&self.hub) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hub condition not reached in {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A minimal HTTP/1.1 client for a [`TestServer`]: one request per connection. Returns the
/// status, the head (status line and headers) and the body.
pub async fn http_raw(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    http_raw_at(server.addr, method, path, headers, body).await
}

/// [`http_raw`] to any address: a `roomcast serve` process as well as an in-process server.
pub async fn http_raw_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// [`http_raw`] with an optional bearer token and JSON body; the answer as JSON (`null` when
/// empty).
pub async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = Vec::new();
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let (status, _, body) = http_raw(server, method, path, &headers, &body).await;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
    };
    (status, value)
}

/// `GET /create-room?name=` then, for each of `joiners`, `GET /join-room`: the room code and
/// the room tokens, the creator's first.
pub async fn room_codes(
    server: &TestServer,
    creator: &str,
    joiners: &[&str],
) -> (String, Vec<String>) {
    let (status, created) = http(
        server,
        "GET",
        &format!("/create-room?name={creator}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let room_id = created["room_id"].as_str().unwrap().to_owned();
    let mut tokens = vec![created["token"].as_str().unwrap().to_owned()];
    for name in joiners {
        let path = format!("/join-room?name={name}&room_id={room_id}");
        let (status, joined) = http(server, "GET", &path, None, None).await;
        assert_eq!(status, 200, "{joined}");
        tokens.push(joined["token"].as_str().unwrap().to_owned());
    }
    (room_id, tokens)
}

pub fn capitalize(user: &str) -> String {
    let mut chars = user.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

pub struct TestClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub response: tungstenite::handshake::client::Response,
}

impl TestClient {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send failed");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send failed");
    }

    /// The next data message, as JSON. Protocol pings and pongs are skipped.
    pub async fn recv_json(&mut self) -> Value {
        match self.recv().await {
            Message::Text(text) => serde_json::from_str(&text).expect("server sent invalid JSON"),
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }

    /// The next data or close message; protocol pings and pongs are skipped.
    pub async fn recv(&mut self) -> Message {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {WAIT:?}"));
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return message,
                Some(Err(err)) => panic!("connection failed while waiting for a message: {err}"),
                None => panic!("connection ended while waiting for a message"),
            }
        }
    }

    /// Reads messages until one has `"type": kind`, and returns it. Fails on a close.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let value = self.recv_json().await;
            if value["type"] == kind {
                return value;
            }
        }
    }

    /// Reads until the close frame and checks its code. Data messages before it are skipped.
    pub async fn expect_close(&mut self, code: u16) -> CloseFrame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no close {code} within {WAIT:?}"));
            match next {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(
                        u16::from(frame.code),
                        code,
                        "close reason: {:?}",
                        frame.reason
                    );
                    return frame;
                }
                Some(Ok(Message::Close(None))) => panic!("closed without a code, expected {code}"),
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("connection failed before close {code}: {err}"),
                None => panic!("connection ended without close {code}"),
            }
        }
    }

    /// Asserts no data message arrives within `duration`.
    pub async fn expect_silence(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Joins `room` and reads up to the `user_list` the server sends the joiner.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send_json(json!({"type": "join", "room": room})).await;
        self.recv_type("user_list").await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close reply, so the server sees a clean close.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
