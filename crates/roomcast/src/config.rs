//! [`SessionConfig`]: the sizes and durations every connection of a [`Hub`](crate::Hub) obeys.
//!
//! The names follow the seed's environment variables (`WEBSOCKET_*`), with units in the field
//! names. The server maps each variable onto a field; library users set them directly.

use std::time::Duration;

/// Per-connection limits and timers. Every field has a documented default.
///
/// The four durations (`ping_period`, `pong_wait`, `heartbeat_interval`, `connection_timeout`)
/// are enforced by one sweep over the hub's connections, every tenth of the shortest non-zero
/// one (between 5 ms and 1 s), rather than by a timer per connection: each fires up to one
/// sweep period late.
///
/// ```
/// use std::time::Duration;
/// let config = roomcast::SessionConfig {
///     max_message_bytes: 16 * 1024,
///     ping_period: Duration::from_secs(20),
///     pong_wait: Duration::from_secs(25),
///     ..Default::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Most connections served at once; one more is closed with 1013 "server full".
    /// `WEBSOCKET_MAX_CONNECTIONS`, default 1000.
    pub max_connections: usize,
    /// Most bytes taken from the socket per read, at most 8 KiB. Reads land in a buffer on the
    /// stack, so an idle connection holds no read buffer at all, whatever this is.
    /// `WEBSOCKET_READ_BUFFER_SIZE`, default 1024 (tungstenite's own default is a 128 KiB
    /// buffer allocated for every connection).
    pub read_buffer_bytes: usize,
    /// Queued frames are coalesced into writes of up to this many bytes (a larger frame is
    /// written on its own, without a copy); the buffer is sized to what is queued and freed
    /// once written, so an idle connection holds none of it.
    /// `WEBSOCKET_WRITE_BUFFER_SIZE`, default 16384 (the seed's example shows 1024). Every write
    /// is a syscall, the main cost of fan-out: at 1 KiB a busy member's queued frames left ~3
    /// at a time, and in `roomcast-loadgen` (1 room × 1000 clients, 900 msg/s) p99 went from
    /// 646 ms at 1 KiB to ~100 ms at 16 KiB, server CPU 1.14 to 0.89 cores.
    pub write_buffer_bytes: usize,
    /// Shortest time between two writes to one connection. Broadcast frames queued in between
    /// wait and leave together in the next write; a frame queued after a quiet spell (no write
    /// to that connection within the interval) leaves at once, so a lone message is never
    /// delayed, and a reply to the connection itself (`Session::send`, `Sender::send`, a
    /// join's replay) or a close cuts the wait short. Zero writes as soon as anything is
    /// queued. At most 1 s.
    /// `WEBSOCKET_WRITE_INTERVAL`, default 40 ms. A write is a system call (on loopback it
    /// also runs the receiver's TCP path), the main cost of fan-out: in `roomcast-loadgen`
    /// (1 room × 1000 clients, 800 msg/s) 20 ms took a member's writes from ~180k to ~47k a
    /// second and server CPU per delivery from 1.06 to 0.81 µs; 40 ms (1,600 msg/s) took
    /// 0.46 to 0.42 µs and the load generator's CPU from 1.0 to 0.86 cores
    /// (docs/PERFORMANCE.md).
    pub write_interval: Duration,
    /// Deliveries per second, over the whole hub, at which [`SessionConfig::write_interval`]
    /// applies in full; below it the interval shrinks in proportion (half the rate, half the
    /// interval), so writes are paced only as far as the load calls for. The rate is an
    /// estimate that forgets in about a quarter of a second. 0 paces by the full interval at
    /// any rate.
    /// `WEBSOCKET_WRITE_INTERVAL_RATE`, default 200,000 (200 msg/s into a room of 1000). At
    /// 50 msg/s into a room of 1000 (50,000 deliveries/s) the interval is 10 ms, shorter than
    /// the 20 ms between a member's messages, so each message leaves at once instead of
    /// waiting for the next write; from 200 msg/s the whole 40 ms applies, as before. Why not
    /// higher: on a shared 2-core VM a write costs ~4.5 µs, and at 200 msg/s writing every
    /// 8 ms (at 1,000,000) made three times the writes and a worse p50, not a better one
    /// (docs/PERFORMANCE.md). On a machine where system calls are cheaper, a higher rate
    /// lowers latency at moderate load for some CPU.
    pub write_interval_rate: u64,
    /// Largest message accepted from a client; a bigger one closes the connection with 1009.
    /// `WEBSOCKET_MAX_MESSAGE_SIZE`, default 4096.
    pub max_message_bytes: usize,
    /// Longest a single write (or a batch of queued frames and its flush) may take.
    /// `WEBSOCKET_WRITE_WAIT`, default 10 s.
    pub write_wait: Duration,
    /// Longest the server waits for any frame (a pong included) before it gives up on the peer.
    /// `WEBSOCKET_PONG_WAIT`, default 60 s. Must be longer than `ping_period`.
    pub pong_wait: Duration,
    /// How often the server sends a protocol ping. `WEBSOCKET_PING_PERIOD`, default 54 s.
    pub ping_period: Duration,
    /// How often an application-level heartbeat frame (the dialect's `ping`) is sent, for
    /// clients such as browsers that cannot see protocol pings. Zero turns it off.
    /// `WEBSOCKET_HEARTBEAT_INTERVAL`, default 30 s.
    pub heartbeat_interval: Duration,
    /// Longest a client may send no data message (text or binary, the reply to a heartbeat
    /// included) before it is closed with 1001. Zero turns it off.
    /// `WEBSOCKET_CONNECTION_TIMEOUT`, default 0 (off), so clients that never answer heartbeats
    /// are not cut off unless the operator asks for it.
    pub connection_timeout: Duration,
    /// Frames that may wait in one connection's outbound queue; one more closes it with 1013
    /// "slow consumer". Default 1024: about a second of backlog at 1000 messages/s, so a
    /// client starved of CPU for a moment is not cut off (the queue allocates only what is
    /// queued).
    pub outbound_capacity: usize,
    /// Refused connections (a bad token, a full server) being closed at once. A refusal is
    /// upgraded and closed with its code, which browsers can read, by a short task of its own
    /// (up to `write_wait` plus a second); past this many, a refusal is a plain HTTP status
    /// instead (401, 403, 503), which costs no task. Default 256.
    pub max_closing_refusals: usize,
    /// How long before a connection's access token expires its client is told so (the
    /// dialect's notice, [`Dialect::token_expiring`](crate::protocol::Dialect::token_expiring):
    /// `{"type":"token_expiring",...}` in the native one), so that it can send a fresh token
    /// ([`Session::refresh_token`](crate::Session::refresh_token)) before the connection is
    /// closed at the token's `exp` plus the authenticator's leeway. Zero turns the notice off,
    /// not the close. Checked by the same sweep as the other timers.
    /// `ROOMCAST_TOKEN_EXPIRY_NOTICE`, default 60 s: a minute is enough for a client to fetch
    /// a token from `/auth/refresh` over a slow network, and short next to the usual 15 min
    /// access token.
    pub token_expiry_notice: Duration,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it: their compressed
    /// messages are inflated (at most `max_message_bytes` inflated, a bigger one closes with
    /// 1009 as soon as it passes the limit) and messages of 128 bytes or more are sent
    /// compressed when that makes them smaller. Always without context takeover in either
    /// direction (the answer says `server_no_context_takeover; client_no_context_takeover`):
    /// each message is compressed on its own, so a connection keeps no deflate state between
    /// messages (context takeover costs ~300 KB per connection) and a room broadcast is
    /// compressed once for all its compressing members.
    /// `WEBSOCKET_COMPRESSION`, default false: compression costs CPU per message, and chat
    /// messages are small.
    ///
    /// ```
    /// let config = roomcast::SessionConfig { compression: true, ..Default::default() };
    /// assert!(config.validate().is_ok());
    /// ```
    pub compression: bool,
    /// How a room's joins and leaves reach its members: every one as it happens, coalesced
    /// per interval, or only the member count. See [`PresenceConfig`].
    pub presence: PresenceConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 16 * 1024,
            write_interval: Duration::from_millis(40),
            write_interval_rate: 200_000,
            max_message_bytes: 4096,
            write_wait: Duration::from_secs(10),
            pong_wait: Duration::from_secs(60),
            ping_period: Duration::from_secs(54),
            heartbeat_interval: Duration::from_secs(30),
            connection_timeout: Duration::ZERO,
            outbound_capacity: 1024,
            max_closing_refusals: 256,
            token_expiry_notice: Duration::from_secs(60),
            compression: false,
            presence: PresenceConfig::default(),
        }
    }
}

/// How a room's joins and leaves are announced to its members
/// ([`SessionConfig::presence`]).
///
/// Announcing every join to every member costs O(n²) frames when n clients join one room
/// (~500k frames for 1000 clients), so big rooms coalesce: in [`PresenceMode::Batched`] a
/// room's joins and leaves are gathered for `interval` and each member gets one update with
/// the net changes (a user who joined and left within the interval is not announced at all);
/// in [`PresenceMode::Counts`] members only get the member count, at most once per interval
/// and only when it changed. [`PresenceMode::Auto`] (the default) picks by the room's size on
/// this node: full up to `batch_above` members, batched above, counts above `counts_above`.
///
/// Member lists (the native `user_list`, seed 004's `room_users_list`) are exact in every mode:
/// they are taken when asked for, not from the batch.
///
/// ```
/// use std::time::Duration;
/// use roomcast::{PresenceConfig, PresenceMode, SessionConfig};
/// let config = SessionConfig {
///     presence: PresenceConfig {
///         mode: PresenceMode::Auto,
///         batch_above: 50,
///         interval: Duration::from_millis(500),
///         ..PresenceConfig::default()
///     },
///     ..SessionConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// assert_eq!(config.presence.mode_for(50), PresenceMode::Full);
/// assert_eq!(config.presence.mode_for(51), PresenceMode::Batched);
/// assert_eq!(config.presence.mode_for(1001), PresenceMode::Counts);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceConfig {
    /// The mode of every room, or [`PresenceMode::Auto`] to choose by size.
    /// `ROOMCAST_PRESENCE_MODE`, default `auto`.
    pub mode: PresenceMode,
    /// With `auto`, a room of more members than this (on this node) is batched.
    /// `ROOMCAST_PRESENCE_BATCH_ABOVE`, default 32. In `roomcast-loadgen` (10k connections
    /// joining rooms of N at once, release build), announcing every join made the set-up
    /// 1.3x as long as batching at N = 10, 1.6x at 32, 3.4x at 64 and 4.4x at 100 (637k and 1M
    /// frames against 29k and 31k): up to 32 members full presence costs little, and above
    /// it the n² frames take over (docs/PERFORMANCE.md, "Presence in big rooms").
    pub batch_above: usize,
    /// With `auto`, a room of more members than this (on this node) gets counts only.
    /// `ROOMCAST_PRESENCE_COUNTS_ABOVE`, default 1000. A batched update carries every change
    /// to every member, and a member that joined during the interval gets the changes after
    /// its own join: when m clients join one room within an interval, the flush queues ~27 B ×
    /// m² (1000 clients: 26 MB in one flush; 2000: 108 MB), where counts queue 0.1–0.3 MB.
    pub counts_above: usize,
    /// How long joins and leaves are gathered before a batched room's members get them (and
    /// how often a counts room's members may get the count). One timer per hub, not per room
    /// or connection. `ROOMCAST_PRESENCE_INTERVAL`, default 1 s, between 10 ms and 60 s.
    pub interval: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            mode: PresenceMode::Auto,
            batch_above: 32,
            counts_above: 1000,
            interval: Duration::from_secs(1),
        }
    }
}

impl PresenceConfig {
    /// The mode a room of `members` users (on this node) is in: never
    /// [`PresenceMode::Auto`].
    ///
    /// ```
    /// use roomcast::{PresenceConfig, PresenceMode};
    /// let auto = PresenceConfig::default(); // full up to 32, batched up to 1000, then counts
    /// assert_eq!(auto.mode_for(32), PresenceMode::Full);
    /// assert_eq!(auto.mode_for(33), PresenceMode::Batched);
    /// assert_eq!(auto.mode_for(1001), PresenceMode::Counts);
    /// let full = PresenceConfig { mode: PresenceMode::Full, ..PresenceConfig::default() };
    /// assert_eq!(full.mode_for(100_000), PresenceMode::Full);
    /// ```
    pub fn mode_for(&self, members: usize) -> PresenceMode {
        match self.mode {
            PresenceMode::Auto if members > self.counts_above => PresenceMode::Counts,
            PresenceMode::Auto if members > self.batch_above => PresenceMode::Batched,
            PresenceMode::Auto => PresenceMode::Full,
            mode => mode,
        }
    }

    /// Whether some room may be batched or counted, so the hub runs its presence timer.
    pub(crate) fn may_batch(&self) -> bool {
        self.mode != PresenceMode::Full
    }
}

/// How a room's joins and leaves reach its members ([`PresenceConfig`]).
///
/// ```
/// use roomcast::PresenceMode;
/// assert_eq!("batched".parse::<PresenceMode>(), Ok(PresenceMode::Batched));
/// assert_eq!(PresenceMode::Counts.to_string(), "counts");
/// assert!("sometimes".parse::<PresenceMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresenceMode {
    /// Full below [`PresenceConfig::batch_above`] members, batched above, counts above
    /// [`PresenceConfig::counts_above`].
    #[default]
    Auto,
    /// Every join and leave is announced to every member as it happens (seed 002 and 004's
    /// behaviour).
    Full,
    /// Joins and leaves are coalesced per room and interval: each member gets one update of
    /// the net changes (native: a `presence` frame; seed 004: its `user_join` / `user_leave`
    /// events, net changes only).
    Batched,
    /// Only the member count, at most once per interval and only when it changed (native: a
    /// `presence` frame with `count`; seeds 003 and 004 get nothing, as they have no such
    /// message).
    Counts,
}

impl std::fmt::Display for PresenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Full => "full",
            Self::Batched => "batched",
            Self::Counts => "counts",
        })
    }
}

/// A [`PresenceMode`] name that is not one of `auto`, `full`, `batched`, `counts`.
///
/// ```
/// let err = "sometimes".parse::<roomcast::PresenceMode>().unwrap_err();
/// assert_eq!(err.to_string(), "expected one of auto, full, batched, counts");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected one of auto, full, batched, counts")]
pub struct UnknownPresenceMode;

impl std::str::FromStr for PresenceMode {
    type Err = UnknownPresenceMode;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "full" => Ok(Self::Full),
            "batched" => Ok(Self::Batched),
            "counts" => Ok(Self::Counts),
            _ => Err(UnknownPresenceMode),
        }
    }
}

/// Bounds of [`PresenceConfig::interval`]: below 10 ms a batch is hardly a batch; above a
/// minute presence is stale.
const PRESENCE_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(60));

/// Longest [`SessionConfig::write_interval`]: frames wait that long at most, well inside the
/// outbound queue's room at any rate a client can read.
const MAX_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// A [`SessionConfig`] whose values cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The field (and so the variable) at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl SessionConfig {
    /// Checks that the values can work together.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] names the first field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, problem| Err(ConfigError { field, problem });
        if self.max_connections == 0 {
            return fail("max_connections", "must be at least 1");
        }
        if self.read_buffer_bytes == 0 {
            return fail("read_buffer_bytes", "must be at least 1");
        }
        if self.max_message_bytes == 0 {
            return fail("max_message_bytes", "must be at least 1");
        }
        if self.outbound_capacity == 0 {
            return fail("outbound_capacity", "must be at least 1");
        }
        if self.write_interval > MAX_WRITE_INTERVAL {
            return fail("write_interval", "must be at most 1 s");
        }
        if self.write_wait.is_zero() {
            return fail("write_wait", "must be longer than zero");
        }
        if self.ping_period.is_zero() {
            return fail("ping_period", "must be longer than zero");
        }
        if self.pong_wait <= self.ping_period {
            return fail("pong_wait", "must be longer than ping_period");
        }
        let (shortest, longest) = PRESENCE_INTERVAL;
        if self.presence.interval < shortest || self.presence.interval > longest {
            return fail("presence.interval", "must be between 10ms and 60s");
        }
        if self.presence.counts_above < self.presence.batch_above {
            return fail(
                "presence.counts_above",
                "must be at least presence.batch_above",
            );
        }
        Ok(())
    }
}
