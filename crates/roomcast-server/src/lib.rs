//! # roomcast-server
//!
//! `roomcast serve`: a ready chat backend on the [`roomcast`] library. [`run`] is what `main`
//! calls and what the tests start on an ephemeral port, so both exercise the same server.
//!
//! ## Layout
//!
//! - [`config`]: flags and environment variables (`WEBSOCKET_*`, `ROOMCAST_*`, `DATABASE_URL`),
//!   start-up checks.
//! - [`chat`]: a [`roomcast::Handler`] per wire format, sharing one path to the store and the
//!   hub: [`chat::NativeChat`] (seed 002: join with history and resume, leave, message, ping,
//!   user_list, errors), [`chat::ChannelsChat`] (seed 004, `/ws/chat/{room_name}/`),
//!   [`chat::TokenChat`] (seed 003, `/ws/chat?token=` with room tokens).
//! - [`token`]: signing tokens ([`token::TokenIssuer`], `roomcast token`).
//! - `directory`: [`StoreDirectory`], the user directory backed by the store.
//! - [`logging`]: `ROOMCAST_LOG_FORMAT` (text or JSON lines), token redaction in logged URIs.
//! - `web`: the chat page at `/`, built from `clients/ts` and embedded.
//! - this file: shared state ([`AppState`]), the router ([`Server::router`]) and the life
//!   cycle ([`Server::run`]).

pub mod api;
pub mod chat;
pub mod config;
mod directory;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod redis_broker;
mod serve;
mod web;

pub use serve::HttpLimits;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use roomcast::protocol::channels::CHANNELS;
use roomcast::protocol::native::NATIVE;
use roomcast::protocol::token_scoped::TOKEN_SCOPED;
use roomcast::{AllowedOrigins, Authenticator, Endpoint, Hub, SessionConfig, TrustTokens};
use roomcast_store::{Store, StoreError, StoreOptions};
use tokio::net::TcpListener;

pub use directory::StoreDirectory;
use token::TokenIssuer;

/// Who decides that a token's user exists (`ROOMCAST_USER_DIRECTORY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DirectoryMode {
    /// The user must have a row in roomcast's store (accounts API or `roomcast token`).
    #[default]
    Store,
    /// Any valid token's user exists: for tokens from an external identity provider.
    Token,
}

/// Where the store lives and how it batches.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://FILE` or `postgres://…` (`DATABASE_URL`).
    pub url: String,
    /// Batching and, for tests, a PostgreSQL schema.
    pub options: StoreOptions,
}

impl StoreConfig {
    /// The store at `url` with default options.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            options: StoreOptions::default(),
        }
    }
}

/// Default of `ROOMCAST_MAX_MESSAGE_CHARS`: a long chat message, well inside the default
/// `WEBSOCKET_MAX_MESSAGE_SIZE` (4096 bytes) when written in ASCII.
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 2000;

/// Default of `ROOMCAST_DRAIN_TIMEOUT`: long enough for clients to finish what they were sending
/// and reconnect, short enough for a rolling deploy (Kubernetes waits 30 s before SIGKILL).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`ServerConfig::shutdown_timeout`]: after the drain, how long the 1001 closes and
/// the HTTP requests still open are waited for. A close is one write and a reply of at most a
/// second; a client that does not read is cut off at this bound.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the server needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (`ROOMCAST_LISTEN`).
    pub listen: SocketAddr,
    /// Per-connection limits and timers (`WEBSOCKET_*`).
    pub session: SessionConfig,
    /// Token rules (`ROOMCAST_JWT_*`).
    pub auth: Authenticator,
    /// Signs the tokens the accounts API hands out; `None` when only a public key is known.
    pub issuer: Option<TokenIssuer>,
    /// The store (`DATABASE_URL`).
    pub store: StoreConfig,
    /// Messages a joiner receives before live ones (`ROOMCAST_HISTORY_LIMIT`).
    pub history_limit: usize,
    /// Most messages a `join` with `since` replays (`ROOMCAST_REPLAY_LIMIT`).
    pub replay_limit: usize,
    /// Whether joining a room that does not exist creates it, on every endpoint that joins by
    /// name (`ROOMCAST_AUTO_CREATE_ROOMS`).
    pub auto_create_rooms: bool,
    /// Most characters in a chat message, whatever the endpoint; `0`: no bound beyond
    /// `WEBSOCKET_MAX_MESSAGE_SIZE` (`ROOMCAST_MAX_MESSAGE_CHARS`).
    pub max_message_chars: usize,
    /// Who decides that a token's user exists (`ROOMCAST_USER_DIRECTORY`).
    pub user_directory: DirectoryMode,
    /// Abuse limits: connection and message rates, rooms per connection, room size,
    /// connections per user (`ROOMCAST_CONNECT_RATE`, …).
    pub limits: limits::LimitsConfig,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` names the client
    /// (`ROOMCAST_TRUSTED_PROXIES`); empty: the socket's peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve the WebSocket endpoints (`WEBSOCKET_ENABLED`).
    pub websocket_enabled: bool,
    /// Refuse guests on `/ws` and `/ws/{room}` (`WEBSOCKET_REQUIRE_AUTH`).
    pub require_auth: bool,
    /// Browser origins allowed (`WEBSOCKET_ALLOWED_ORIGINS`).
    pub allowed_origins: AllowedOrigins,
    /// Serve `/ws/echo` (`ROOMCAST_ECHO_ENDPOINT`).
    pub echo_endpoint: bool,
    /// On the shutdown signal, how long clients get to leave after being asked to reconnect,
    /// while `/readyz` answers 503 and new WebSocket connections are refused
    /// (`ROOMCAST_DRAIN_TIMEOUT`, formerly `ROOMCAST_SHUTDOWN_TIMEOUT`; default 10 s).
    pub drain_timeout: Duration,
    /// After the drain, how long the remaining sessions' 1001 closes and the HTTP requests
    /// still open are waited for ([`DEFAULT_CLOSE_TIMEOUT`]; no variable of its own).
    pub shutdown_timeout: Duration,
    /// Bounds on a connection's HTTP phase (`ROOMCAST_HEADER_TIMEOUT`,
    /// `ROOMCAST_MAX_HANDSHAKES`).
    pub http: HttpLimits,
    /// `GET /metrics` (`ROOMCAST_METRICS`, `ROOMCAST_METRICS_TOKEN`).
    pub metrics: metrics::MetricsConfig,
    /// The Redis that joins this node to others (`REDIS_URL`, `ROOMCAST_REDIS_PREFIX`); `None`:
    /// one node.
    pub redis: Option<RedisConfig>,
}

/// Where the nodes meet.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (`REDIS_URL`).
    pub url: String,
    /// Prefix of every channel and key (`ROOMCAST_REDIS_PREFIX`): nodes talk only to nodes
    /// with the same one.
    pub prefix: String,
    /// How long a node's presence lease lives without a heartbeat (`ROOMCAST_PRESENCE_TTL`):
    /// a killed node's users leave everyone's lists about this long after its last one.
    pub presence_ttl: Duration,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or migrated (`DATABASE_URL`).
    #[error("DATABASE_URL: {0}")]
    Store(#[from] StoreError),
    /// Redis did not answer (`REDIS_URL`).
    #[error("REDIS_URL: {0}")]
    Broker(#[from] roomcast::broker::BrokerError),
}

impl ServerConfig {
    /// Defaults for everything but the HS256 secret and the store (what tests and embedders
    /// start from).
    ///
    /// ```
    /// let config = roomcast_server::ServerConfig::new(
    ///     b"a secret of at least 32 bytes, please!",
    ///     roomcast_server::StoreConfig::new("sqlite://chat.db"),
    /// );
    /// assert!(config.websocket_enabled);
    /// ```
    pub fn new(secret: &[u8], store: StoreConfig) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            session: SessionConfig::default(),
            auth: Authenticator::hs256(secret),
            issuer: Some(TokenIssuer::hs256(secret)),
            store,
            history_limit: 50,
            replay_limit: 1000,
            auto_create_rooms: true,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
            user_directory: DirectoryMode::Store,
            limits: limits::LimitsConfig::default(),
            trusted_proxies: Vec::new(),
            websocket_enabled: true,
            require_auth: false,
            allowed_origins: AllowedOrigins::Any,
            echo_endpoint: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            shutdown_timeout: DEFAULT_CLOSE_TIMEOUT,
            http: HttpLimits::default(),
            metrics: metrics::MetricsConfig {
                enabled: true,
                token: None,
            },
            redis: None,
        }
    }
}

/// What every route and handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Connections and rooms.
    pub hub: Hub,
    /// Users, rooms, messages.
    pub store: Store,
    /// Signs tokens; `None` when only a public key is configured.
    pub issuer: Option<TokenIssuer>,
    /// Token rules (the user directory included), to read refresh tokens.
    pub auth: Authenticator,
    /// Messages a joiner receives before live ones.
    pub history_limit: usize,
    /// Most messages a resume replays.
    pub replay_limit: usize,
    /// Whether joining a missing room creates it.
    pub auto_create_rooms: bool,
    /// Most characters in a chat message (`0`: no bound).
    pub max_message_chars: usize,
    /// Who may enter which room; remembers public rooms.
    pub(crate) rooms: Arc<chat::RoomGate>,
    /// Rate limiters and bounds on what one client may do.
    pub(crate) limits: Arc<limits::Limits>,
    /// Bounds the argon2 work of sign-ups and sign-ins.
    pub(crate) passwords: Arc<api::accounts::PasswordWork>,
    /// Broadcasts what the store has committed, a group at a time.
    pub(crate) deliveries: chat::Deliveries,
    /// Whether the Redis subscription is up, on a node of several (`/readyz`).
    pub(crate) redis: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The Redis broker of a node of several, for what only it can answer: connections per
    /// user on every node, the admin API's questions to every node. `None` on a single node,
    /// whose paths then make no Redis call.
    pub(crate) cluster: Option<Arc<redis_broker::RedisBroker>>,
}

/// A server: its hub, store and configuration. [`Server::start`] it, read [`Server::hub`] if
/// needed, then [`Server::run`] it.
pub struct Server {
    state: AppState,
    config: ServerConfig,
    /// Stops the presence heartbeat of a node of several, once its sessions are gone.
    presence: Option<tokio_util::sync::CancellationToken>,
    /// Takes only seed 003's room tokens (`/ws/chat`).
    room_auth: Authenticator,
}

impl Server {
    /// Connects the store (running its migrations) and builds the hub: a single node, or, with
    /// [`ServerConfig::redis`], one node of several.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened or migrated, or Redis does not answer.
    pub async fn start(mut config: ServerConfig) -> Result<Self, StartError> {
        let store = Store::connect_with(&config.store.url, config.store.options.clone()).await?;
        // Room tokens name a generated client, never a stored user: the directory is not
        // asked. Taken before the store directory is set on `auth`.
        let room_auth = config
            .auth
            .clone()
            .token_type("room")
            .directory(TrustTokens);
        if config.user_directory == DirectoryMode::Store {
            config.auth = config
                .auth
                .clone()
                .directory(StoreDirectory::new(store.clone()));
        }
        let mut redis_health = None;
        let mut presence = None;
        let mut cluster = None;
        let hub = match &config.redis {
            None => Hub::new(config.session.clone()),
            Some(redis) => {
                let broker = Arc::new(
                    redis_broker::RedisBroker::connect(
                        &redis.url,
                        &redis.prefix,
                        redis.presence_ttl,
                    )
                    .await?,
                );
                redis_health = Some(broker.health());
                let hub = Hub::builder(config.session.clone())
                    .broker(broker.clone())
                    .presence(broker.clone())
                    .history(Arc::new(redis_broker::StoreHistory(store.clone())))
                    .build()
                    .await?;
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(broker.clone().keep_presence(stop.clone()));
                let answering = hub.clone();
                tokio::spawn(broker.clone().serve_queries(
                    move |question| api::admin::answer(&answering, question),
                    stop.clone(),
                ));
                presence = Some(stop);
                cluster = Some(broker);
                hub
            }
        };
        let state = AppState {
            deliveries: chat::Deliveries::start(hub.clone(), &store),
            hub,
            store,
            issuer: config.issuer.clone(),
            auth: config.auth.clone(),
            history_limit: config.history_limit,
            replay_limit: config.replay_limit,
            auto_create_rooms: config.auto_create_rooms,
            max_message_chars: config.max_message_chars,
            rooms: Arc::default(),
            passwords: Arc::default(),
            redis: redis_health,
            cluster,
            limits: Arc::new(limits::Limits::new(
                config.limits,
                config.trusted_proxies.clone(),
            )),
        };
        state.limits.spawn_pruning();
        Ok(Self {
            state,
            config,
            room_auth,
            presence,
        })
    }

    /// The hub: connections, rooms, sends.
    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The shared state, for routes added by an embedding application.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let config = &self.config;
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .merge(self.metrics_router())
            // Seed 004 links its HTTP API documentation here.
            .route("/swagger", get(|| async { Redirect::permanent("/docs") }))
            .route("/swagger/", get(|| async { Redirect::permanent("/docs") }))
            .merge(api::router(self.state.clone()))
            .merge(web::router());
        if config.websocket_enabled {
            let mut ws = Router::new();
            let native = |path: &'static str, guests: bool| {
                let chat = chat::NativeChat::new(self.state.clone());
                let endpoint = Endpoint::new(self.state.hub.clone(), config.auth.clone(), chat)
                    .name(path)
                    .dialect(&NATIVE)
                    .allow_guests(guests)
                    .allowed_origins(config.allowed_origins.clone())
                    .into_route();
                (path, endpoint)
            };
            let guests = !config.require_auth;
            for (path, endpoint) in [
                native("/ws", guests),
                native("/ws/{room}", guests),
                native("/ws/auth", false),
                native("/ws/auth/{room}", false),
            ] {
                ws = ws.route(path, endpoint);
            }
            let channels = |path: &'static str| {
                let chat = chat::ChannelsChat::new(self.state.clone());
                let endpoint = Endpoint::new(self.state.hub.clone(), config.auth.clone(), chat)
                    .name(path)
                    .dialect(&CHANNELS)
                    .allowed_origins(config.allowed_origins.clone())
                    .into_route();
                (path, endpoint)
            };
            let token_chat = chat::TokenChat::new(self.state.clone());
            let token_chat =
                Endpoint::new(self.state.hub.clone(), self.room_auth.clone(), token_chat)
                    .name("/ws/chat")
                    .dialect(&TOKEN_SCOPED)
                    .claims_as_params(&[chat::ROOM_CLAIM])
                    .auth_refusal(chat::TokenChat::refusal)
                    .allowed_origins(config.allowed_origins.clone());
            for (path, endpoint) in [
                channels("/ws/chat/{room_name}/"),
                channels("/ws/chat/{room_name}"),
            ] {
                ws = ws.route(path, endpoint);
            }
            ws = ws.route("/ws/chat", token_chat.into_route());
            if config.echo_endpoint {
                let echo = Endpoint::new(self.state.hub.clone(), config.auth.clone(), chat::Echo)
                    .name("/ws/echo")
                    .allow_guests(true)
                    .allowed_origins(config.allowed_origins.clone());
                ws = ws.route("/ws/echo", echo.into_route());
            }
            // Connection attempts per IP, before the upgrade, on every WebSocket route.
            ws = ws.route_layer(axum::middleware::from_fn_with_state(
                self.state.limits.clone(),
                limits::connect_rate,
            ));
            router = router.merge(ws);
        }
        // At `debug`: every request, its URI's tokens redacted.
        router.layer(axum::middleware::from_fn(logging::log_requests))
    }

    /// `GET /metrics` with every instrument of this server, unless `ROOMCAST_METRICS=false`.
    fn metrics_router(&self) -> Router {
        let settings = &self.config.metrics;
        if !settings.enabled {
            return Router::new();
        }
        let mut registry = prometheus_client::registry::Registry::default();
        self.state.hub.register_metrics(&mut registry);
        self.state.store.register_metrics(&mut registry);
        self.state.limits.register_metrics(&mut registry);
        metrics::Exporter::new(registry, settings.token.clone()).router()
    }

    /// Serves on `listener` until `shutdown` completes; then drains, stops accepting, closes
    /// the remaining sessions with 1001 and closes the store.
    ///
    /// ```text
    /// shutdown ─▶ drain: /readyz 503, WebSockets refused (1001), native clients get
    ///             {"type":"reconnect"}; HTTP still served; ≤ drain_timeout for clients to go
    ///          ─▶ stop accepting; the rest closed with 1001 (≤ shutdown_timeout)
    ///          ─▶ Store::close (commits what is queued) ─▶ return
    /// ```
    ///
    /// HTTP is served during the drain because a load balancer polls `/readyz` to see the node
    /// leave, and clients that reconnect may first call the API (a token refresh).
    ///
    /// # Errors
    ///
    /// I/O errors of the listener.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        tracing::info!(addr = %listener.local_addr()?, store = self.state.store.backend_name(), "roomcast listening");
        // The accept loop stops when the drain has ended, not at the signal.
        let (hub, drain_timeout) = (self.state.hub.clone(), self.config.drain_timeout);
        let drained = async move {
            shutdown.await;
            if !hub.drain(drain_timeout).await {
                tracing::info!(
                    left = hub.connection_count(),
                    "drain deadline passed: closing the remaining connections with 1001"
                );
            }
        };
        serve::serve(
            listener,
            router,
            self.config.http,
            drained,
            self.config.shutdown_timeout,
        )
        .await?;
        // The accept loop does not wait for upgraded sockets: close them ourselves.
        let hub = &self.state.hub;
        if !hub.shutdown_sessions(self.config.shutdown_timeout).await {
            tracing::warn!("some sessions were still closing at the shutdown deadline");
        }
        // Every acknowledged message is committed already; this drains the writer and closes
        // the pool.
        // Every session has left its rooms (presence counted down): the lease can go.
        if let Some(presence) = &self.presence {
            presence.cancel();
        }
        self.state.store.close().await;
        tracing::info!("roomcast stopped");
        Ok(())
    }
}

/// Starts a server with `config` and runs it on `listener` until `shutdown` completes.
///
/// # Errors
///
/// Store errors at start, I/O errors of the listener.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = Server::start(config).await.map_err(std::io::Error::other)?;
    server.run(listener, shutdown).await
}

impl AppState {
    /// Checks a chat message's length against `ROOMCAST_MAX_MESSAGE_CHARS`.
    ///
    /// # Errors
    ///
    /// What to tell the client when it is too long.
    pub fn check_length(&self, content: &str) -> Result<(), String> {
        let max = self.max_message_chars;
        if !roomcast::protocol::within_chars(content, max) {
            return Err(format!("message is longer than {max} characters"));
        }
        Ok(())
    }
}

/// `GET /healthz`: the process is up. (Liveness; `/readyz` says whether to send it traffic.)
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up: `{\"status\":\"ok\"}`",
               body = api::health::Health)))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}
