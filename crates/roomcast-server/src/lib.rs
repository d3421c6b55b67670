//! # roomcast-server
//!
//! `roomcast serve`: a ready chat backend on the [`roomcast`] library. [`run`] is what `main`
//! calls and what the tests start on an ephemeral port, so both exercise the same server.
//!
//! ## Layout
//!
//! - [`config`]: flags and environment variables (`WEBSOCKET_*`, `ROOMCAST_*`), start-up checks.
//! - [`chat`]: the native dialect's [`roomcast::Handler`] (seed 002): join, leave, message,
//!   ping, user_list, errors.
//! - [`token`]: minting access tokens (`roomcast token`).
//! - this file: the router ([`Server::router`]) and the life cycle ([`Server::run`]).

pub mod chat;
pub mod config;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use roomcast::protocol::native::NATIVE;
use roomcast::{AllowedOrigins, Authenticator, Endpoint, Hub, SessionConfig};
use tokio::net::TcpListener;

/// Everything the server needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (`ROOMCAST_LISTEN`).
    pub listen: SocketAddr,
    /// Per-connection limits and timers (`WEBSOCKET_*`).
    pub session: SessionConfig,
    /// Token rules (`ROOMCAST_JWT_*`).
    pub auth: Authenticator,
    /// Serve the WebSocket endpoints (`WEBSOCKET_ENABLED`).
    pub websocket_enabled: bool,
    /// Refuse guests on `/ws` and `/ws/{room}` (`WEBSOCKET_REQUIRE_AUTH`).
    pub require_auth: bool,
    /// Browser origins allowed (`WEBSOCKET_ALLOWED_ORIGINS`).
    pub allowed_origins: AllowedOrigins,
    /// Serve `/ws/echo` (`ROOMCAST_ECHO_ENDPOINT`).
    pub echo_endpoint: bool,
    /// How long shutdown waits for sessions (`ROOMCAST_SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for everything but the authenticator (what tests and embedders start from).
    ///
    /// ```
    /// let auth = roomcast::Authenticator::hs256(b"a secret of at least 32 bytes, please!");
    /// let config = roomcast_server::ServerConfig::new(auth);
    /// assert!(config.websocket_enabled);
    /// ```
    pub fn new(auth: Authenticator) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            session: SessionConfig::default(),
            auth,
            websocket_enabled: true,
            require_auth: false,
            allowed_origins: AllowedOrigins::Any,
            echo_endpoint: false,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// A server: its hub and its configuration. Build it, read [`Server::hub`] if needed, then
/// [`Server::run`] it.
pub struct Server {
    hub: Hub,
    config: ServerConfig,
}

impl Server {
    /// A server with a single-node hub.
    pub fn new(config: ServerConfig) -> Self {
        let hub = Hub::new(config.session.clone());
        Self { hub, config }
    }

    /// The hub: connections, rooms, sends.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let config = &self.config;
        let mut router = Router::new().route("/healthz", get(healthz));
        if config.websocket_enabled {
            let native = |guests: bool| {
                Endpoint::new(self.hub.clone(), config.auth.clone(), chat::NativeChat)
                    .dialect(&NATIVE)
                    .allow_guests(guests)
                    .allowed_origins(config.allowed_origins.clone())
                    .into_route()
            };
            let guests = !config.require_auth;
            router = router
                .route("/ws", native(guests))
                .route("/ws/{room}", native(guests))
                .route("/ws/auth", native(false))
                .route("/ws/auth/{room}", native(false));
            if config.echo_endpoint {
                let echo = Endpoint::new(self.hub.clone(), config.auth.clone(), chat::Echo)
                    .allow_guests(true)
                    .allowed_origins(config.allowed_origins.clone());
                router = router.route("/ws/echo", echo.into_route());
            }
        }
        router
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, closes every
    /// session with 1001 and waits up to the shutdown timeout for them.
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
        tracing::info!(addr = %listener.local_addr()?, "roomcast listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        // axum's graceful shutdown does not wait for upgraded sockets: close them ourselves.
        if !self
            .hub
            .shutdown_sessions(self.config.shutdown_timeout)
            .await
        {
            tracing::warn!("some sessions were still closing at the shutdown deadline");
        }
        tracing::info!("roomcast stopped");
        Ok(())
    }
}

/// Runs a server with `config` on `listener` until `shutdown` completes.
///
/// # Errors
///
/// I/O errors of the listener.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Server::new(config).run(listener, shutdown).await
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}
