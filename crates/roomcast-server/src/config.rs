//! Command line and environment: every setting is a flag and a variable, with the seeds' names
//! (`WEBSOCKET_*`) and `ROOMCAST_*` for the server's own. A bad value stops start-up with a
//! message naming the variable.
//!
//! This is the server's start-up edge, so it uses `anyhow` for errors with context.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use roomcast::{AllowedOrigins, Authenticator, PresenceConfig, PresenceMode, SessionConfig};

use crate::token::TokenIssuer;
use crate::{DirectoryMode, ServerConfig, StoreConfig};

/// roomcast: authenticated real-time rooms over WebSocket.
#[derive(Debug, Parser)]
#[command(name = "roomcast", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(
        long = "log-format",
        env = "ROOMCAST_LOG_FORMAT",
        default_value = "text",
        global = true,
        ignore_case = true
    )]
    pub log_format: crate::logging::LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print an access token signed with the configured key, to try the server.
    Token(Box<TokenArgs>),
}

/// `roomcast serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long = "listen", env = "ROOMCAST_LISTEN", default_value = "127.0.0.1:8080",
          value_parser = parse_with::<SocketAddr>("ROOMCAST_LISTEN", "an address like 127.0.0.1:8080"))]
    pub listen: SocketAddr,

    /// Serve `GET /ws/echo`: no auth, every message echoed back (connectivity and conformance
    /// checks). Size limits still apply.
    #[arg(long = "echo-endpoint", env = "ROOMCAST_ECHO_ENDPOINT", default_value = "false",
          value_parser = bool_var("ROOMCAST_ECHO_ENDPOINT"), action = clap::ArgAction::Set)]
    pub echo_endpoint: bool,

    /// Redis joining this node to others (several `roomcast serve` behind one load
    /// balancer, sharing a PostgreSQL `DATABASE_URL`); unset: one node.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis channel and key: nodes talk only to nodes with the same one.
    #[arg(long = "redis-prefix", env = "ROOMCAST_REDIS_PREFIX",
          default_value = crate::redis_broker::DEFAULT_PREFIX)]
    pub redis_prefix: String,

    /// How long a node's presence lease lives without a heartbeat (renewed every third of
    /// it): a killed node's users leave the other nodes' lists this long after its last one.
    #[arg(long = "presence-ttl", env = "ROOMCAST_PRESENCE_TTL", default_value = "10s",
          value_parser = duration_var("ROOMCAST_PRESENCE_TTL"))]
    pub presence_ttl: Duration,

    /// Serve Prometheus metrics at `GET /metrics`.
    #[arg(long = "metrics", env = "ROOMCAST_METRICS", default_value = "true",
          value_parser = bool_var("ROOMCAST_METRICS"), action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// When set, `GET /metrics` requires `Authorization: Bearer <this value>`.
    #[arg(
        long = "metrics-token",
        env = "ROOMCAST_METRICS_TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,

    /// Longest a client may take to send an HTTP request's head (slowloris); an idle
    /// keep-alive connection is closed after that long too. `0`: no limit.
    #[arg(long = "header-timeout", env = "ROOMCAST_HEADER_TIMEOUT", default_value = "10s",
          value_parser = duration_var("ROOMCAST_HEADER_TIMEOUT"))]
    pub header_timeout: Duration,

    /// Most connections in their HTTP phase at once (before a WebSocket upgrade, or plain HTTP
    /// requests); past it a new connection is closed at once. `0`: no limit.
    #[arg(long = "max-handshakes", env = "ROOMCAST_MAX_HANDSHAKES", default_value = "1024",
          value_parser = parse_with::<usize>("ROOMCAST_MAX_HANDSHAKES", "a whole number"))]
    pub max_handshakes: usize,

    /// On SIGTERM or Ctrl-C: how long clients get to leave after being asked to reconnect
    /// (`/readyz` answers 503 meanwhile); the rest are then closed with 1001. [default: 10s]
    #[arg(long = "drain-timeout", env = "ROOMCAST_DRAIN_TIMEOUT",
          value_parser = duration_var("ROOMCAST_DRAIN_TIMEOUT"))]
    pub drain_timeout: Option<Duration>,

    /// Deprecated: the former name of `ROOMCAST_DRAIN_TIMEOUT`, used when that is not set.
    #[arg(long = "shutdown-timeout", env = "ROOMCAST_SHUTDOWN_TIMEOUT", hide = true,
          value_parser = duration_var("ROOMCAST_SHUTDOWN_TIMEOUT"))]
    pub shutdown_timeout: Option<Duration>,

    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Messages sent to a joiner before live ones.
    #[arg(long = "history-limit", env = "ROOMCAST_HISTORY_LIMIT", default_value = "50",
          value_parser = parse_with::<usize>("ROOMCAST_HISTORY_LIMIT", "a whole number"))]
    pub history_limit: usize,

    /// Most messages replayed by a `join` with `since`.
    #[arg(long = "replay-limit", env = "ROOMCAST_REPLAY_LIMIT", default_value = "1000",
          value_parser = parse_with::<usize>("ROOMCAST_REPLAY_LIMIT", "a whole number"))]
    pub replay_limit: usize,

    /// Whether joining a room that does not exist creates it (public), on every endpoint that
    /// joins by name (`/ws` `join`, `/ws/{room}`, `/ws/chat/{room_name}/`). When false, such a
    /// join is refused (4000, or an `error` envelope). `/create-room` always creates.
    #[arg(long = "auto-create-rooms", env = "ROOMCAST_AUTO_CREATE_ROOMS", default_value = "true",
          value_parser = bool_var("ROOMCAST_AUTO_CREATE_ROOMS"), action = clap::ArgAction::Set)]
    pub auto_create_rooms: bool,

    /// Most characters in one chat message, whatever the endpoint; longer ones are answered
    /// with an error and the connection stays open. `0`: no bound but the frame size.
    #[arg(long = "max-message-chars", env = "ROOMCAST_MAX_MESSAGE_CHARS", default_value = "2000",
          value_parser = parse_with::<usize>("ROOMCAST_MAX_MESSAGE_CHARS", "a whole number"))]
    pub max_message_chars: usize,

    /// Shortest time between the starts of two commits of chat messages while several
    /// clients send at once; messages that arrive meanwhile join the next commit. `0s` commits
    /// at once. At most 1 s.
    #[arg(long = "commit-interval", env = "ROOMCAST_COMMIT_INTERVAL", default_value = "5ms",
          value_parser = duration_var("ROOMCAST_COMMIT_INTERVAL"))]
    pub commit_interval: Duration,

    /// When a SQLite commit reaches the disk: `full` (every commit is synced before its
    /// messages are acknowledged; they survive power loss) or `normal` (an fsync less per
    /// commit; acknowledged messages survive a crash of the process, not of the machine).
    /// Ignored with PostgreSQL.
    #[arg(long = "sqlite-synchronous", env = "ROOMCAST_SQLITE_SYNCHRONOUS", default_value = "full",
          value_parser = sqlite_sync_var)]
    pub sqlite_synchronous: roomcast_store::SqliteSync,

    /// With SQLite and `full`: broadcast each group commit's messages as soon as it is
    /// written, and acknowledge them once the WAL is synced (on a thread of its own). `false`:
    /// the broadcast waits for the sync too. Acknowledged messages survive power loss either
    /// way; with `true` a power loss between a commit and its sync can lose a message members
    /// have already seen (its sender was not acknowledged). Ignored with PostgreSQL.
    #[arg(long = "broadcast-before-sync", env = "ROOMCAST_BROADCAST_BEFORE_SYNC",
          default_value = "true", value_parser = bool_var("ROOMCAST_BROADCAST_BEFORE_SYNC"),
          action = clap::ArgAction::Set)]
    pub broadcast_before_sync: bool,

    /// Lifetime of access tokens issued by the accounts API.
    #[arg(long = "access-token-ttl", env = "ROOMCAST_ACCESS_TOKEN_TTL", default_value = "15m",
          value_parser = duration_var("ROOMCAST_ACCESS_TOKEN_TTL"))]
    pub access_token_ttl: Duration,

    /// Lifetime of refresh tokens issued by the accounts API.
    #[arg(long = "refresh-token-ttl", env = "ROOMCAST_REFRESH_TOKEN_TTL", default_value = "30d",
          value_parser = duration_var("ROOMCAST_REFRESH_TOKEN_TTL"))]
    pub refresh_token_ttl: Duration,

    /// Token verification.
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// WebSocket limits and timers (seed 002's variables).
    #[command(flatten)]
    pub websocket: WebSocketArgs,

    /// Abuse limits.
    #[command(flatten)]
    pub limits: LimitsArgs,
}

/// JWT settings shared by `serve` and `token`.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 secret. If unset on a loopback address, a random one is generated for this run.
    #[arg(
        long = "jwt-secret",
        env = "ROOMCAST_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// Signing algorithm accepted (only this one).
    #[arg(
        long = "jwt-algorithm",
        env = "ROOMCAST_JWT_ALGORITHM",
        default_value = "HS256",
        ignore_case = true
    )]
    pub jwt_algorithm: JwtAlgorithm,

    /// PEM file with the public key, for RS256 and ES256.
    #[arg(long = "jwt-public-key", env = "ROOMCAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// PEM file with the private key, for `roomcast token` with RS256 and ES256.
    #[arg(long = "jwt-private-key", env = "ROOMCAST_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,

    /// Required `iss` claim.
    #[arg(long = "jwt-issuer", env = "ROOMCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long = "jwt-audience", env = "ROOMCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long = "jwt-leeway", env = "ROOMCAST_JWT_LEEWAY", default_value = "30s",
          value_parser = duration_var("ROOMCAST_JWT_LEEWAY"))]
    pub jwt_leeway: Duration,
}

/// The JWT algorithms roomcast accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `ROOMCAST_JWT_SECRET`.
    Hs256,
    /// RSA-SHA256 with `ROOMCAST_JWT_PUBLIC_KEY`.
    Rs256,
    /// ECDSA P-256 with `ROOMCAST_JWT_PUBLIC_KEY`.
    Es256,
}

/// `ROOMCAST_SQLITE_SYNCHRONOUS`: `full` or `normal`, in any case.
fn sqlite_sync_var(value: &str) -> Result<roomcast_store::SqliteSync, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "full" => Ok(roomcast_store::SqliteSync::Full),
        "normal" => Ok(roomcast_store::SqliteSync::Normal),
        _ => Err(format!(
            "ROOMCAST_SQLITE_SYNCHRONOUS: expected full or normal, got {value:?}"
        )),
    }
}

/// The longest `ROOMCAST_COMMIT_INTERVAL`: past it, a chat message waits noticeably.
const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Where the store is and who decides that users exist; shared by `serve` and `token`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where users, rooms and messages are kept: `sqlite://FILE` (created if missing) or
    /// `postgres://…`.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "sqlite://roomcast.db"
    )]
    pub database_url: String,
    /// Who decides that a token's user exists: `store` (a row in roomcast's users table) or
    /// `token` (any valid token; for tokens from an external identity provider).
    #[arg(
        long = "user-directory",
        env = "ROOMCAST_USER_DIRECTORY",
        default_value = "store",
        ignore_case = true
    )]
    pub user_directory: DirectoryMode,
}

/// Seed 002's WebSocket variables, with its names.
#[derive(Debug, Clone, Args)]
pub struct WebSocketArgs {
    /// Serve the WebSocket endpoints at all.
    #[arg(long = "websocket-enabled", env = "WEBSOCKET_ENABLED", default_value = "true",
          value_parser = bool_var("WEBSOCKET_ENABLED"), action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Most concurrent connections; one more is closed with 1013.
    #[arg(long = "websocket-max-connections", env = "WEBSOCKET_MAX_CONNECTIONS", default_value = "1000",
          value_parser = parse_with::<usize>("WEBSOCKET_MAX_CONNECTIONS", "a whole number"))]
    pub max_connections: usize,
    /// Most bytes taken from a socket per read (at most 8 KiB; nothing is held while idle).
    #[arg(long = "websocket-read-buffer-size", env = "WEBSOCKET_READ_BUFFER_SIZE", default_value = "1024",
          value_parser = parse_with::<usize>("WEBSOCKET_READ_BUFFER_SIZE", "a size in bytes"))]
    pub read_buffer_size: usize,
    /// Queued frames are coalesced into writes of up to this many bytes.
    #[arg(long = "websocket-write-buffer-size", env = "WEBSOCKET_WRITE_BUFFER_SIZE", default_value = "16384",
          value_parser = parse_with::<usize>("WEBSOCKET_WRITE_BUFFER_SIZE", "a size in bytes"))]
    pub write_buffer_size: usize,
    /// Shortest time between two writes to one connection; broadcasts queued meanwhile leave
    /// together (a frame after a quiet spell, an ack or another reply leaves at once). `0s`
    /// writes at once.
    #[arg(long = "websocket-write-interval", env = "WEBSOCKET_WRITE_INTERVAL", default_value = "40ms",
          value_parser = duration_var("WEBSOCKET_WRITE_INTERVAL"))]
    pub write_interval: Duration,
    /// Deliveries per second over the whole server at which `WEBSOCKET_WRITE_INTERVAL`
    /// applies in full; below it the interval shrinks in proportion. `0`: the full interval
    /// at any rate.
    #[arg(long = "websocket-write-interval-rate", env = "WEBSOCKET_WRITE_INTERVAL_RATE", default_value = "200000",
          value_parser = parse_with::<u64>("WEBSOCKET_WRITE_INTERVAL_RATE", "deliveries per second"))]
    pub write_interval_rate: u64,
    /// Largest message a client may send, bytes; bigger closes with 1009.
    #[arg(long = "websocket-max-message-size", env = "WEBSOCKET_MAX_MESSAGE_SIZE", default_value = "4096",
          value_parser = parse_with::<usize>("WEBSOCKET_MAX_MESSAGE_SIZE", "a size in bytes"))]
    pub max_message_size: usize,
    /// Longest a write may take.
    #[arg(long = "websocket-write-wait", env = "WEBSOCKET_WRITE_WAIT", default_value = "10s",
          value_parser = duration_var("WEBSOCKET_WRITE_WAIT"))]
    pub write_wait: Duration,
    /// Longest the server waits for any frame (pongs included) from a client.
    #[arg(long = "websocket-pong-wait", env = "WEBSOCKET_PONG_WAIT", default_value = "60s",
          value_parser = duration_var("WEBSOCKET_PONG_WAIT"))]
    pub pong_wait: Duration,
    /// How often the server sends a protocol ping.
    #[arg(long = "websocket-ping-period", env = "WEBSOCKET_PING_PERIOD", default_value = "54s",
          value_parser = duration_var("WEBSOCKET_PING_PERIOD"))]
    pub ping_period: Duration,
    /// Browser origins allowed to connect, comma-separated; `*` for any.
    #[arg(
        long = "websocket-allowed-origins",
        env = "WEBSOCKET_ALLOWED_ORIGINS",
        default_value = "*"
    )]
    pub allowed_origins: String,
    /// Refuse guests on `/ws` and `/ws/{room}` (the `/ws/auth` endpoints always require a token).
    #[arg(long = "websocket-require-auth", env = "WEBSOCKET_REQUIRE_AUTH", default_value = "false",
          value_parser = bool_var("WEBSOCKET_REQUIRE_AUTH"), action = clap::ArgAction::Set)]
    pub require_auth: bool,
    /// How often a `{"type":"ping"}` envelope is sent to native clients; 0 turns it off.
    #[arg(long = "websocket-heartbeat-interval", env = "WEBSOCKET_HEARTBEAT_INTERVAL", default_value = "30s",
          value_parser = duration_var("WEBSOCKET_HEARTBEAT_INTERVAL"))]
    pub heartbeat_interval: Duration,
    /// Frames that may wait for one slow client before it is closed with 1013.
    #[arg(long = "outbound-queue", env = "ROOMCAST_OUTBOUND_QUEUE", default_value = "1024",
          value_parser = parse_with::<usize>("ROOMCAST_OUTBOUND_QUEUE", "a whole number"))]
    pub outbound_queue: usize,
    /// Close a client that sent no message (a `pong` counts) for this long; 0 turns it off.
    #[arg(long = "websocket-connection-timeout", env = "WEBSOCKET_CONNECTION_TIMEOUT", default_value = "0s",
          value_parser = duration_var("WEBSOCKET_CONNECTION_TIMEOUT"))]
    pub connection_timeout: Duration,
    /// How long before a connection's access token expires a native client gets
    /// `token_expiring` (and may send `refresh`); at expiry plus `ROOMCAST_JWT_LEEWAY` the
    /// connection is closed. `0` turns the notice off, not the close.
    #[arg(long = "token-expiry-notice", env = "ROOMCAST_TOKEN_EXPIRY_NOTICE", default_value = "60s",
          value_parser = duration_var("ROOMCAST_TOKEN_EXPIRY_NOTICE"))]
    pub token_expiry_notice: Duration,
    /// Negotiate permessage-deflate with clients that offer it (always without context
    /// takeover: no deflate state per connection between messages).
    #[arg(long = "websocket-compression", env = "WEBSOCKET_COMPRESSION", default_value = "false",
          value_parser = bool_var("WEBSOCKET_COMPRESSION"), action = clap::ArgAction::Set)]
    pub compression: bool,
    /// How joins and leaves reach a room's members: `full` (each as it happens), `batched`
    /// (net changes once per `ROOMCAST_PRESENCE_INTERVAL`), `counts` (only the member count),
    /// or `auto` (full, then batched above `ROOMCAST_PRESENCE_BATCH_ABOVE` members, counts
    /// above `ROOMCAST_PRESENCE_COUNTS_ABOVE`).
    #[arg(long = "presence-mode", env = "ROOMCAST_PRESENCE_MODE", default_value = "auto",
          value_parser = parse_with::<PresenceMode>("ROOMCAST_PRESENCE_MODE", "auto, full, batched or counts"))]
    pub presence_mode: PresenceMode,
    /// With `auto`, rooms of more members than this (on one node) are batched.
    #[arg(long = "presence-batch-above", env = "ROOMCAST_PRESENCE_BATCH_ABOVE", default_value = "32",
          value_parser = parse_with::<usize>("ROOMCAST_PRESENCE_BATCH_ABOVE", "a number of members"))]
    pub presence_batch_above: usize,
    /// With `auto`, rooms of more members than this (on one node) get counts only.
    #[arg(long = "presence-counts-above", env = "ROOMCAST_PRESENCE_COUNTS_ABOVE", default_value = "1000",
          value_parser = parse_with::<usize>("ROOMCAST_PRESENCE_COUNTS_ABOVE", "a number of members"))]
    pub presence_counts_above: usize,
    /// How long a batched room's joins and leaves are gathered (10ms to 60s).
    #[arg(long = "presence-interval", env = "ROOMCAST_PRESENCE_INTERVAL", default_value = "1s",
          value_parser = duration_var("ROOMCAST_PRESENCE_INTERVAL"))]
    pub presence_interval: Duration,
}

/// `roomcast token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The display name (`username`); defaults to the id.
    #[arg(long)]
    pub username: Option<String>,
    /// Lifetime.
    #[arg(long, default_value = "1h", value_parser = duration_var("--ttl"))]
    pub ttl: Duration,
    /// A `role` claim; `admin` opens the admin API (`/admin/...`).
    #[arg(long)]
    pub role: Option<String>,
    /// The store where the user is created if missing (unless ROOMCAST_USER_DIRECTORY=token).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Signing keys and claims, as `serve` reads them.
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// Shortest HS256 secret accepted, in bytes: the length of the SHA-256 output (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Abuse limits; `0` turns each off (benchmarks that open thousands of connections from one
/// address must).
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Connection attempts per client IP and second, bursts of four times that; over it, HTTP
    /// 429 with `Retry-After` before the upgrade.
    #[arg(long = "connect-rate", env = "ROOMCAST_CONNECT_RATE", default_value = "20",
          value_parser = parse_with::<u32>("ROOMCAST_CONNECT_RATE", "a whole number per second"))]
    pub connect_rate: u32,

    /// `/auth/login`, `/auth/register`, `/create-room` and `/join-room` requests per client IP
    /// and minute, bursts of a quarter of that; over it, HTTP 429 with `Retry-After`.
    #[arg(long = "auth-rate", env = "ROOMCAST_AUTH_RATE", default_value = "60",
          value_parser = parse_with::<u32>("ROOMCAST_AUTH_RATE", "a whole number per minute"))]
    pub auth_rate: u32,

    /// Comma-separated addresses or CIDRs (`10.0.0.0/8,::1`) of reverse proxies whose
    /// `X-Forwarded-For` / `Forwarded` header names the client; from anyone else it is ignored.
    #[arg(long = "trusted-proxies", env = "ROOMCAST_TRUSTED_PROXIES", default_value = "",
          value_parser = parse_cidrs)]
    pub trusted_proxies: Cidrs,

    /// Frames per connection and second; over it a frame is dropped with an error, and a client
    /// that keeps on is closed with 1008.
    #[arg(long = "message-rate", env = "ROOMCAST_MESSAGE_RATE", default_value = "10",
          value_parser = parse_with::<u32>("ROOMCAST_MESSAGE_RATE", "a whole number per second"))]
    pub message_rate: u32,

    /// Frames a connection may send at once before `ROOMCAST_MESSAGE_RATE` applies.
    #[arg(long = "message-burst", env = "ROOMCAST_MESSAGE_BURST", default_value = "30",
          value_parser = parse_with::<u32>("ROOMCAST_MESSAGE_BURST", "a whole number"))]
    pub message_burst: u32,

    /// Rooms one connection may be in.
    #[arg(long = "max-rooms-per-connection", env = "ROOMCAST_MAX_ROOMS_PER_CONNECTION",
          default_value = "100",
          value_parser = parse_with::<usize>("ROOMCAST_MAX_ROOMS_PER_CONNECTION", "a whole number"))]
    pub max_rooms_per_connection: usize,

    /// Users one room may hold ("room full" past it).
    #[arg(long = "max-room-members", env = "ROOMCAST_MAX_ROOM_MEMBERS", default_value = "10000",
          value_parser = parse_with::<usize>("ROOMCAST_MAX_ROOM_MEMBERS", "a whole number"))]
    pub max_room_members: usize,

    /// Connections one user may hold (tabs, devices): on all nodes together with `REDIS_URL`.
    #[arg(long = "max-connections-per-user", env = "ROOMCAST_MAX_CONNECTIONS_PER_USER",
          default_value = "20",
          value_parser = parse_with::<usize>("ROOMCAST_MAX_CONNECTIONS_PER_USER", "a whole number"))]
    pub max_connections_per_user: usize,

    /// Rooms one user (a guest: one client IP) may create by joining, per minute; past it a
    /// join of a new room is refused (an error, or 4000 at connect).
    #[arg(long = "room-create-rate", env = "ROOMCAST_ROOM_CREATE_RATE", default_value = "10",
          value_parser = parse_with::<u32>("ROOMCAST_ROOM_CREATE_RATE", "a whole number per minute"))]
    pub room_create_rate: u32,
}

impl LimitsArgs {
    fn config(&self) -> crate::limits::LimitsConfig {
        crate::limits::LimitsConfig {
            connect_rate: self.connect_rate,
            auth_rate: self.auth_rate,
            message_rate: self.message_rate,
            message_burst: self.message_burst,
            max_rooms_per_connection: self.max_rooms_per_connection,
            max_room_members: self.max_room_members,
            max_connections_per_user: self.max_connections_per_user,
            room_create_rate: self.room_create_rate,
        }
    }
}

/// `ROOMCAST_TRUSTED_PROXIES`, parsed.
#[derive(Debug, Clone, Default)]
pub struct Cidrs(pub Vec<ipnet::IpNet>);

/// Addresses (`10.0.0.1`, taken as a /32 or /128) or CIDRs, comma-separated; empty: none.
fn parse_cidrs(value: &str) -> Result<Cidrs, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!(
                        "ROOMCAST_TRUSTED_PROXIES: expected addresses or CIDRs like 10.0.0.0/8, got {item:?}"
                    )
                })
        })
        .collect::<Result<_, _>>()
        .map(Cidrs)
}

/// A value parser for `T: FromStr` whose error names `variable` and what was expected.
fn parse_with<T>(
    variable: &'static str,
    expected: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr,
{
    move |value| {
        value
            .trim()
            .parse()
            .map_err(|_| format!("{variable}: expected {expected}, got {value:?}"))
    }
}

/// Durations like `10s`, `54s`, `1m30s`, `250ms`; a bare `0` means zero.
fn duration_var(
    variable: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| {
        let value = value.trim();
        if value == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(value)
            .map_err(|_| format!("{variable}: expected a duration like 60s, got {value:?}"))
    }
}

fn bool_var(
    variable: &'static str,
) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |value| match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{variable}: expected true or false, got {value:?}")),
    }
}

impl JwtArgs {
    /// The authenticator these settings describe. On a loopback `listen` address a missing
    /// HS256 secret is generated (and the log says so); elsewhere it is an error.
    ///
    /// # Errors
    ///
    /// A missing or unreadable key, naming the variable.
    pub fn keys(
        &self,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<(Authenticator, Option<TokenIssuer>)> {
        let (auth, issuer) = match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = match (&self.jwt_secret, listen) {
                    // RFC 7518 §3.2: an HS256 key at least as long as the hash, 256 bits.
                    (Some(secret), _) if secret.len() < MIN_HS256_SECRET_BYTES => {
                        bail!(
                            "ROOMCAST_JWT_SECRET: must be at least {MIN_HS256_SECRET_BYTES} bytes \
                             (RFC 7518 §3.2), got {}; generate one with: head -c 32 /dev/urandom | base64",
                            secret.len()
                        )
                    }
                    (Some(secret), _) => secret.clone(),
                    (None, Some(addr)) if addr.ip().is_loopback() => {
                        tracing::warn!(
                            "ROOMCAST_JWT_SECRET is not set: generated a random secret for this run. \
                             Tokens from other processes (`roomcast token`) will not validate; \
                             set ROOMCAST_JWT_SECRET to keep tokens across restarts."
                        );
                        random_secret()?
                    }
                    (None, Some(addr)) => bail!(
                        "ROOMCAST_JWT_SECRET: required when listening on a non-loopback address ({addr})"
                    ),
                    (None, None) => bail!(
                        "ROOMCAST_JWT_SECRET: required to sign tokens; set it to the secret \
                         `roomcast serve` uses (at least {MIN_HS256_SECRET_BYTES} bytes)"
                    ),
                };
                (
                    Authenticator::hs256(&secret),
                    Some(TokenIssuer::hs256(secret.as_bytes())),
                )
            }
            algorithm @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256) => {
                let path = self.jwt_public_key.as_ref().context(
                    "ROOMCAST_JWT_PUBLIC_KEY: required with ROOMCAST_JWT_ALGORITHM=RS256 or ES256",
                )?;
                let pem = std::fs::read(path).with_context(|| {
                    format!("ROOMCAST_JWT_PUBLIC_KEY: cannot read {}", path.display())
                })?;
                let auth = if algorithm == JwtAlgorithm::Rs256 {
                    Authenticator::rs256_pem(&pem)
                } else {
                    Authenticator::es256_pem(&pem)
                };
                (
                    auth.context("ROOMCAST_JWT_PUBLIC_KEY")?,
                    self.private_issuer(algorithm)?,
                )
            }
        };
        let issuer = issuer.map(|issuer| {
            issuer
                .with_issuer(self.jwt_issuer.clone())
                .with_audience(self.jwt_audience.clone())
        });
        let mut auth = auth.leeway(self.jwt_leeway);
        if let Some(issuer) = &self.jwt_issuer {
            auth = auth.issuer(issuer);
        }
        if let Some(audience) = &self.jwt_audience {
            auth = auth.audience(audience);
        }
        Ok((auth, issuer))
    }

    /// The signer for RS256 / ES256, when a private key is configured.
    fn private_issuer(&self, algorithm: JwtAlgorithm) -> anyhow::Result<Option<TokenIssuer>> {
        let Some(path) = &self.jwt_private_key else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .with_context(|| format!("ROOMCAST_JWT_PRIVATE_KEY: cannot read {}", path.display()))?;
        let (key, algorithm) = if algorithm == JwtAlgorithm::Rs256 {
            (
                jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
                jsonwebtoken::Algorithm::RS256,
            )
        } else {
            (
                jsonwebtoken::EncodingKey::from_ec_pem(&pem),
                jsonwebtoken::Algorithm::ES256,
            )
        };
        Ok(Some(TokenIssuer::new(
            key.context("ROOMCAST_JWT_PRIVATE_KEY")?,
            algorithm,
        )))
    }
}

fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no system randomness: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl WebSocketArgs {
    /// The library's session configuration.
    ///
    /// # Errors
    ///
    /// Values that cannot work together, naming the variable.
    pub fn session_config(&self) -> anyhow::Result<SessionConfig> {
        let config = SessionConfig {
            max_connections: self.max_connections,
            read_buffer_bytes: self.read_buffer_size,
            write_buffer_bytes: self.write_buffer_size,
            write_interval: self.write_interval,
            write_interval_rate: self.write_interval_rate,
            max_message_bytes: self.max_message_size,
            write_wait: self.write_wait,
            pong_wait: self.pong_wait,
            ping_period: self.ping_period,
            heartbeat_interval: self.heartbeat_interval,
            connection_timeout: self.connection_timeout,
            outbound_capacity: self.outbound_queue,
            token_expiry_notice: self.token_expiry_notice,
            compression: self.compression,
            presence: PresenceConfig {
                mode: self.presence_mode,
                batch_above: self.presence_batch_above,
                counts_above: self.presence_counts_above,
                interval: self.presence_interval,
            },
            ..SessionConfig::default()
        };
        config.validate().map_err(|err| {
            let variable = match err.field {
                "max_connections" => "WEBSOCKET_MAX_CONNECTIONS",
                "read_buffer_bytes" => "WEBSOCKET_READ_BUFFER_SIZE",
                "max_message_bytes" => "WEBSOCKET_MAX_MESSAGE_SIZE",
                "write_wait" => "WEBSOCKET_WRITE_WAIT",
                "write_interval" => "WEBSOCKET_WRITE_INTERVAL",
                "outbound_capacity" => "ROOMCAST_OUTBOUND_QUEUE",
                "ping_period" => "WEBSOCKET_PING_PERIOD",
                "pong_wait" => "WEBSOCKET_PONG_WAIT (must be longer than WEBSOCKET_PING_PERIOD)",
                "presence.interval" => "ROOMCAST_PRESENCE_INTERVAL",
                "presence.counts_above" => {
                    "ROOMCAST_PRESENCE_COUNTS_ABOVE (must be at least ROOMCAST_PRESENCE_BATCH_ABOVE)"
                }
                other => other,
            };
            anyhow::anyhow!("{variable}: {}", err.problem)
        })?;
        Ok(config)
    }
}

/// `ROOMCAST_DRAIN_TIMEOUT`, else the deprecated `ROOMCAST_SHUTDOWN_TIMEOUT` (with a warning),
/// else the default.
fn drain_timeout(drain: Option<Duration>, deprecated: Option<Duration>) -> Duration {
    match (drain, deprecated) {
        (Some(drain), _) => drain,
        (None, Some(deprecated)) => {
            tracing::warn!(
                "ROOMCAST_SHUTDOWN_TIMEOUT is deprecated: it sets ROOMCAST_DRAIN_TIMEOUT now; \
                 rename it"
            );
            deprecated
        }
        (None, None) => crate::DEFAULT_DRAIN_TIMEOUT,
    }
}

impl ServeArgs {
    /// The server configuration these arguments describe.
    ///
    /// # Errors
    ///
    /// A bad or inconsistent value, naming the variable.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let (auth, issuer) = self.jwt.keys(Some(self.listen))?;
        let issuer = issuer.map(|mut issuer| {
            issuer.access_ttl = self.access_token_ttl;
            issuer.refresh_ttl = self.refresh_token_ttl;
            issuer
        });
        if !(self.store.database_url.starts_with("sqlite:")
            || self.store.database_url.starts_with("postgres"))
        {
            bail!(
                "DATABASE_URL: expected sqlite://FILE or postgres://…, got {:?}",
                self.store.database_url
            );
        }
        if self.presence_ttl < Duration::from_secs(1) {
            bail!(
                "ROOMCAST_PRESENCE_TTL: at least 1s (a node renews its lease every third of it), got {:?}",
                self.presence_ttl
            );
        }
        if self.redis_url.as_deref().is_some_and(|url| !url.is_empty())
            && self.store.database_url.starts_with("sqlite:")
        {
            bail!(
                "REDIS_URL: several nodes need one shared store; set DATABASE_URL to a postgres:// URL (a SQLite file is one node's)"
            );
        }
        if self.commit_interval > MAX_COMMIT_INTERVAL {
            bail!(
                "ROOMCAST_COMMIT_INTERVAL: at most {MAX_COMMIT_INTERVAL:?}, got {:?}",
                self.commit_interval
            );
        }
        let mut store = StoreConfig::new(self.store.database_url);
        store.options.commit_interval = self.commit_interval;
        store.options.sqlite_sync = self.sqlite_synchronous;
        store.options.sqlite_hooks_before_sync = self.broadcast_before_sync;
        Ok(ServerConfig {
            listen: self.listen,
            session: self.websocket.session_config()?,
            auth,
            issuer,
            store,
            history_limit: self.history_limit,
            replay_limit: self.replay_limit,
            auto_create_rooms: self.auto_create_rooms,
            max_message_chars: self.max_message_chars,
            user_directory: self.store.user_directory,
            limits: self.limits.config(),
            trusted_proxies: self.limits.trusted_proxies.0.clone(),
            websocket_enabled: self.websocket.enabled,
            require_auth: self.websocket.require_auth,
            allowed_origins: AllowedOrigins::parse(&self.websocket.allowed_origins),
            echo_endpoint: self.echo_endpoint,
            drain_timeout: drain_timeout(self.drain_timeout, self.shutdown_timeout),
            shutdown_timeout: crate::DEFAULT_CLOSE_TIMEOUT,
            http: crate::HttpLimits {
                header_timeout: self.header_timeout,
                max_handshakes: self.max_handshakes,
            },
            metrics: crate::metrics::MetricsConfig {
                enabled: self.metrics,
                token: self.metrics_token.filter(|token| !token.is_empty()),
            },
            redis: self
                .redis_url
                .filter(|url| !url.is_empty())
                .map(|url| crate::RedisConfig {
                    url,
                    prefix: self.redis_prefix,
                    presence_ttl: self.presence_ttl,
                }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["roomcast", "serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => *args,
            Command::Token(_) => unreachable!("parsed serve"),
        })
    }

    #[test]
    fn presence_settings_reach_the_session_config_and_bad_ones_name_their_variable() {
        let config = serve(&[]).unwrap().websocket.session_config().unwrap();
        assert_eq!(config.presence, PresenceConfig::default());
        let args = serve(&[
            "--presence-mode",
            "Batched",
            "--presence-batch-above",
            "10",
            "--presence-interval",
            "250ms",
        ])
        .unwrap();
        let presence = args.websocket.session_config().unwrap().presence;
        assert_eq!(presence.mode, PresenceMode::Batched);
        assert_eq!(presence.batch_above, 10);
        assert_eq!(presence.interval, Duration::from_millis(250));
        let err = serve(&["--presence-mode", "sometimes"]).unwrap_err();
        assert!(err.to_string().contains("ROOMCAST_PRESENCE_MODE"), "{err}");
        let args = serve(&["--presence-interval", "0s"]).unwrap();
        let err = args.websocket.session_config().unwrap_err();
        assert!(
            err.to_string().contains("ROOMCAST_PRESENCE_INTERVAL"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = serve(&[]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.websocket.ping_period, Duration::from_secs(54));
        assert_eq!(args.websocket.pong_wait, Duration::from_secs(60));
        assert_eq!(args.websocket.write_wait, Duration::from_secs(10));
        assert_eq!(args.websocket.write_interval, Duration::from_millis(40));
        assert_eq!(args.websocket.write_interval_rate, 200_000);
        assert_eq!(args.commit_interval, Duration::from_millis(5));
        assert_eq!(args.sqlite_synchronous, roomcast_store::SqliteSync::Full);
        assert!(args.websocket.enabled);
        assert!(!args.websocket.require_auth);
        assert_eq!(
            args.limits.config(),
            crate::limits::LimitsConfig::default(),
            "the flags' defaults are the library of limits' own"
        );
        let config = args.into_config().unwrap();
        assert!(config.auto_create_rooms);
        assert_eq!(config.max_message_chars, crate::DEFAULT_MAX_MESSAGE_CHARS);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = serve(&["--websocket-pong-wait", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEBSOCKET_PONG_WAIT"), "{err}");
        let err = serve(&["--websocket-max-connections", "many"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEBSOCKET_MAX_CONNECTIONS"), "{err}");
        let err = serve(&["--websocket-require-auth", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEBSOCKET_REQUIRE_AUTH"), "{err}");
    }

    #[test]
    fn the_token_expiry_notice_reaches_the_session_config_and_zero_is_allowed() {
        let config = serve(&[]).unwrap().into_config().unwrap();
        assert_eq!(config.session.token_expiry_notice, Duration::from_secs(60));
        let config = serve(&["--token-expiry-notice", "0"])
            .unwrap()
            .into_config();
        assert_eq!(config.unwrap().session.token_expiry_notice, Duration::ZERO);
        let err = serve(&["--token-expiry-notice", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROOMCAST_TOKEN_EXPIRY_NOTICE"), "{err}");
    }

    #[test]
    fn inconsistent_values_name_the_variable() {
        let args = serve(&[
            "--websocket-pong-wait",
            "10s",
            "--websocket-ping-period",
            "20s",
        ])
        .unwrap();
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("WEBSOCKET_PONG_WAIT"), "{err}");
    }

    /// The error for a duration flag that parses but is out of range, and for one that does not
    /// parse at all.
    fn duration_errors(flag: &str) -> (String, String) {
        let too_long = serve(&[flag, "2s"])
            .unwrap()
            .into_config()
            .unwrap_err()
            .to_string();
        let unparsable = serve(&[flag, "soon"]).unwrap_err().to_string();
        (too_long, unparsable)
    }

    #[test]
    fn a_write_interval_over_a_second_is_refused_by_name() {
        let (too_long, unparsable) = duration_errors("--websocket-write-interval");
        assert!(too_long.contains("WEBSOCKET_WRITE_INTERVAL"), "{too_long}");
        assert!(
            unparsable.contains("WEBSOCKET_WRITE_INTERVAL"),
            "{unparsable}"
        );
        let args = serve(&["--websocket-write-interval", "0"]).unwrap();
        assert!(args.into_config().is_ok(), "0 turns pacing off");
    }

    #[test]
    fn the_commit_interval_reaches_the_store_and_is_bounded() {
        let config = serve(&[]).unwrap().into_config().unwrap();
        assert_eq!(
            config.store.options.commit_interval,
            Duration::from_millis(5)
        );
        let config = serve(&["--commit-interval", "0"]).unwrap().into_config();
        assert_eq!(
            config.unwrap().store.options.commit_interval,
            Duration::ZERO
        );
        let (too_long, unparsable) = duration_errors("--commit-interval");
        assert!(too_long.contains("ROOMCAST_COMMIT_INTERVAL"), "{too_long}");
        assert!(
            unparsable.contains("ROOMCAST_COMMIT_INTERVAL"),
            "{unparsable}"
        );
    }

    #[test]
    fn sqlite_durability_is_full_unless_normal_is_asked_for_by_name() {
        let sync = |args: &[&str]| serve(args).unwrap().into_config().unwrap().store.options;
        assert_eq!(sync(&[]).sqlite_sync, roomcast_store::SqliteSync::Full);
        let normal = sync(&["--sqlite-synchronous", "NORMAL"]).sqlite_sync;
        assert_eq!(normal, roomcast_store::SqliteSync::Normal);
        let err = serve(&["--sqlite-synchronous", "off"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROOMCAST_SQLITE_SYNCHRONOUS"), "{err}");
    }

    #[test]
    fn broadcasts_go_before_the_sync_unless_turned_off() {
        let options = |args: &[&str]| serve(args).unwrap().into_config().unwrap().store.options;
        assert!(options(&[]).sqlite_hooks_before_sync);
        let off = options(&["--broadcast-before-sync", "false"]);
        assert!(!off.sqlite_hooks_before_sync);
        assert_eq!(off.sqlite_sync, roomcast_store::SqliteSync::Full);
        let err = serve(&["--broadcast-before-sync", "sometimes"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROOMCAST_BROADCAST_BEFORE_SYNC"), "{err}");
    }

    #[test]
    fn a_missing_secret_is_refused_off_loopback() {
        let args = serve(&["--listen", "0.0.0.0:8080"]).unwrap();
        let err = args.into_config().unwrap_err().to_string();
        assert!(err.contains("ROOMCAST_JWT_SECRET"), "{err}");
        assert!(
            serve(&[]).unwrap().into_config().is_ok(),
            "generated on loopback"
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidrs_and_anything_else_is_named() {
        let args = serve(&["--trusted-proxies", "10.0.0.0/8, ::1,192.0.2.7"]).unwrap();
        let config = args.into_config().unwrap();
        let listed: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(listed, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let err = serve(&["--trusted-proxies", "10.0.0.0/99"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROOMCAST_TRUSTED_PROXIES"), "{err}");
        assert!(
            serve(&[])
                .unwrap()
                .into_config()
                .unwrap()
                .trusted_proxies
                .is_empty()
        );
    }

    #[test]
    fn the_drain_timeout_defaults_to_10s_and_the_old_name_still_sets_it() {
        let config = serve(&[]).unwrap().into_config().unwrap();
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        let config = serve(&["--shutdown-timeout", "3s"]).unwrap().into_config();
        assert_eq!(config.unwrap().drain_timeout, Duration::from_secs(3));
        let args = serve(&["--shutdown-timeout", "3s", "--drain-timeout", "20s"]).unwrap();
        let config = args.into_config().unwrap();
        assert_eq!(
            config.drain_timeout,
            Duration::from_secs(20),
            "the new name wins"
        );
        let err = serve(&["--drain-timeout", "soon"]).unwrap_err().to_string();
        assert!(err.contains("ROOMCAST_DRAIN_TIMEOUT"), "{err}");
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        let cli = Cli::try_parse_from(["roomcast", "serve", "--log-format", "JSON"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Json);
        let cli = Cli::try_parse_from(["roomcast", "token", "--sub", "a"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Text);
        assert!(Cli::try_parse_from(["roomcast", "serve", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn an_hs256_secret_shorter_than_32_bytes_is_refused_at_start_up() {
        let short = serve(&["--jwt-secret", "sixteen-bytes-xx"]).unwrap();
        let err = short.into_config().unwrap_err().to_string();
        assert!(err.contains("ROOMCAST_JWT_SECRET"), "{err}");
        assert!(err.contains("at least 32 bytes"), "{err}");
        let long = serve(&["--jwt-secret", &"k".repeat(32)]).unwrap();
        assert!(long.into_config().is_ok());
    }
}
