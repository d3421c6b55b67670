//! What every test uses: a [`TestServer`] running the library's route on a loopback port with
//! the [`Probe`] handler (its protocol is in [`probe`]), token helpers, and a [`TestClient`]
//! (in [`client`]) whose every wait is bounded.

mod client;
mod probe;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use roomcast::{Authenticator, Endpoint, Hub, RoomName, SessionConfig, UserId};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub(crate) use client::TestClient;
pub(crate) use probe::{Disconnected, Probe};

/// The HS256 secret of every test server.
pub(crate) const SECRET: &str = "roomcast-integration-tests-secret-0123456789";

/// The longest any single wait may take before the test fails with what it expected.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is watched for. Long enough for a frame already queued on
/// loopback to show up; the sends under test have completed before the watch starts.
pub(crate) const SILENCE: Duration = Duration::from_millis(300);

// ---- tokens ----

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Signs `claims` with HS256 and `secret`.
pub(crate) fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail for JSON claims")
}

/// A valid access token for `sub` (username `Name of <sub>`), valid for an hour.
pub(crate) fn token(sub: &str) -> String {
    sign(
        &json!({ "sub": sub, "username": format!("Name of {sub}"), "type": "access", "exp": now() + 3600 }),
        SECRET,
    )
}

/// An access token for `sub` that expired ten minutes ago (beyond the default 30 s leeway).
pub(crate) fn expired_token(sub: &str) -> String {
    sign(
        &json!({ "sub": sub, "username": sub, "type": "access", "exp": now() - 600 }),
        SECRET,
    )
}

/// A refresh token for `sub`: valid signature, wrong `type`.
pub(crate) fn refresh_token(sub: &str) -> String {
    sign(
        &json!({ "sub": sub, "username": sub, "type": "refresh", "exp": now() + 3600 }),
        SECRET,
    )
}

/// An access token for `sub` signed with another key.
pub(crate) fn foreign_token(sub: &str) -> String {
    sign(
        &json!({ "sub": sub, "username": sub, "type": "access", "exp": now() + 3600 }),
        "some-other-secret-some-other-secret-0123",
    )
}

/// The authenticator every test server uses unless told otherwise.
pub(crate) fn auth() -> Authenticator {
    Authenticator::hs256(SECRET)
}

/// A room name known to be valid.
pub(crate) fn room(name: &str) -> RoomName {
    RoomName::new(name).expect("test room names are valid")
}

/// A user id.
pub(crate) fn user(id: &str) -> UserId {
    UserId::from(id)
}

// ---- the server ----

/// Serves `app` on a fresh loopback port; the listener is bound before this returns, so clients
/// may connect at once. With `wrapped`, hyper gets each connection wrapped in a type of its own ([`Wrapped`]), as a TLS layer in front of an application would give it: roomcast
/// cannot take the TCP socket apart and serves the stream as it comes (no direct writes by
/// deliverers).
async fn serve(app: axum::Router, wrapped: bool) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let task = tokio::spawn(async move {
        let served = if wrapped {
            axum::serve(WrappingListener(listener), app).await
        } else {
            axum::serve(listener, app).await
        };
        served.expect("the test server runs");
    });
    (addr, task)
}

/// A listener whose connections are [`Wrapped`].
struct WrappingListener(tokio::net::TcpListener);

impl axum::serve::Listener for WrappingListener {
    type Io = Wrapped;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Wrapped, SocketAddr) {
        loop {
            if let Ok((tcp, addr)) = self.0.accept().await {
                return (Wrapped(tcp), addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream in a type roomcast does not know.
pub(crate) struct Wrapped(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Wrapped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Wrapped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type Configure = Box<dyn FnOnce(Endpoint<Probe>) -> Endpoint<Probe>>;

/// Builds a [`TestServer`]: path, hub, authenticator and endpoint options.
pub(crate) struct TestServerBuilder {
    path: &'static str,
    hub: Option<Hub>,
    auth: Authenticator,
    configure: Option<Configure>,
    wrapped: bool,
}

impl TestServerBuilder {
    /// Serves each connection wrapped in a type roomcast does not know ([`serve`]).
    pub(crate) fn wrapped(mut self) -> Self {
        self.wrapped = true;
        self
    }

    /// The route's path (default `/ws`), e.g. `/ws/{room}`.
    pub(crate) fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }

    /// Serves this hub (default: a fresh single-node hub).
    pub(crate) fn hub(mut self, hub: Hub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Authenticates with this (default: [`auth()`]).
    pub(crate) fn auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    /// Mounts an [`Endpoint`] configured by `configure` instead of [`roomcast::route`].
    pub(crate) fn endpoint(
        mut self,
        configure: impl FnOnce(Endpoint<Probe>) -> Endpoint<Probe> + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    pub(crate) async fn start(self) -> TestServer {
        let hub = self
            .hub
            .unwrap_or_else(|| Hub::new(SessionConfig::default()));
        let (disconnected_tx, disconnected_rx) = mpsc::unbounded_channel();
        let senders = Arc::default();
        let probe = Probe {
            disconnected_tx,
            senders: Arc::clone(&senders),
        };
        let route = match self.configure {
            Some(configure) => configure(Endpoint::new(hub.clone(), self.auth, probe)).into_route(),
            None => roomcast::route(hub.clone(), self.auth, probe),
        };
        let app = axum::Router::new().route(self.path, route);
        let (addr, task) = serve(app, self.wrapped).await;
        TestServer {
            addr,
            hub,
            disconnected_rx,
            senders,
            task,
        }
    }
}

/// A running test server. Stops accepting when dropped.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) hub: Hub,
    disconnected_rx: mpsc::UnboundedReceiver<Disconnected>,
    /// `Sender`s the probe kept (`{"cmd":"keep_sender"}`).
    pub(crate) senders: Arc<Mutex<Vec<roomcast::Sender>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub(crate) fn builder() -> TestServerBuilder {
        TestServerBuilder {
            path: "/ws",
            hub: None,
            auth: auth(),
            configure: None,
            wrapped: false,
        }
    }

    /// `/ws` through [`roomcast::route`], tokens required, a fresh hub.
    pub(crate) async fn start() -> Self {
        Self::builder().start().await
    }

    /// `ws://<addr><path_and_query>`.
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr)
    }

    /// Connects to `/ws` as `sub` and waits for the welcome, so the hub has registered the
    /// connection when this returns.
    pub(crate) async fn connect_as(&self, sub: &str) -> TestClient {
        self.connect_to_as("/ws", sub).await
    }

    /// Connects to `path` as `sub` and waits for the welcome.
    pub(crate) async fn connect_to_as(&self, path: &str, sub: &str) -> TestClient {
        let url = self.url(&format!("{path}?token={}", token(sub)));
        let mut client = TestClient::connect(url, sub).await;
        let welcome = client.recv_json().await;
        assert_eq!(
            welcome["type"], "welcome",
            "{sub}: expected the welcome first"
        );
        assert_eq!(welcome["user_id"], sub, "{sub}: welcomed as someone else");
        client
    }

    /// The next `on_disconnect` call, within [`WAIT`].
    pub(crate) async fn disconnected(&mut self) -> Disconnected {
        tokio::time::timeout(WAIT, self.disconnected_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("expected on_disconnect to run within {WAIT:?}"))
            .expect("the probe lives as long as the server")
    }

    /// Waits until the hub has `count` connections.
    pub(crate) async fn wait_for_connections(&self, count: usize) {
        eventually(&format!("the hub to hold {count} connection(s)"), || {
            self.hub.connection_count() == count
        })
        .await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fails if any of `clients` receives a message within [`SILENCE`]; watches them all at once.
pub(crate) async fn expect_silence(clients: &mut [&mut TestClient]) {
    futures_util::future::join_all(
        clients
            .iter_mut()
            .map(|client| client.expect_silence(SILENCE)),
    )
    .await;
}

/// Polls `done` every 10 ms until it holds, failing after [`WAIT`] with `what`.
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {what} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
