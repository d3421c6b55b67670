//! Abuse limits: what one client may do, whatever endpoint it came through.
//!
//! | setting | what it bounds | over it |
//! | --- | --- | --- |
//! | `ROOMCAST_CONNECT_RATE` | connection attempts per client IP and second (burst: 4×) | HTTP 429 with `Retry-After`, before the upgrade |
//! | `ROOMCAST_AUTH_RATE` | `/auth/login`, `/auth/register`, `/create-room`, `/join-room` per client IP and minute (burst: a quarter of it) | HTTP 429 with `Retry-After` |
//! | `ROOMCAST_MESSAGE_RATE`, `ROOMCAST_MESSAGE_BURST` | frames per connection and second | the frame is dropped with an error; sustained, 1008 `rate limited` |
//! | `ROOMCAST_MAX_ROOMS_PER_CONNECTION` | rooms one connection is in | the join is refused with an error |
//! | `ROOMCAST_MAX_ROOM_MEMBERS` | users in one room | `room full`: an error, or 1013 at connect |
//! | `ROOMCAST_MAX_CONNECTIONS_PER_USER` | one user's connections on this node | 1013 `too many connections` |
//! | `ROOMCAST_ROOM_CREATE_RATE` | rooms created by joining, per user (guests: per client IP) and minute | the join is refused: an error, or 4000 at connect |
//!
//! Every one of them is `0` to turn it off (benchmarks that open thousands of connections from
//! one address do). Rates are GCRA limiters from `governor`, keyed by IP or connection id: one
//! timestamp per key, pruned every minute of the keys that are back to a full burst.
//!
//! The client IP is the socket's peer. `X-Forwarded-For` (or `Forwarded: for=`) is believed
//! only when the peer is one of `ROOMCAST_TRUSTED_PROXIES`: then the client is the rightmost
//! address in the chain that is not itself a trusted proxy ([`client_ip`]). Every request to a
//! limited route runs in a span carrying `client_ip`, so each refusal's log line names it.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use roomcast::ConnId;
use tracing::Instrument;

/// The limits' settings. `0` turns each off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connection attempts per client IP and second (`ROOMCAST_CONNECT_RATE`); bursts of four
    /// times that pass.
    pub connect_rate: u32,
    /// Sign-ins, sign-ups and room codes per client IP and minute (`ROOMCAST_AUTH_RATE`);
    /// bursts of a quarter of that pass.
    pub auth_rate: u32,
    /// Frames per connection and second (`ROOMCAST_MESSAGE_RATE`).
    pub message_rate: u32,
    /// Frames a connection may send at once before the rate applies
    /// (`ROOMCAST_MESSAGE_BURST`).
    pub message_burst: u32,
    /// Rooms one connection may be in (`ROOMCAST_MAX_ROOMS_PER_CONNECTION`).
    pub max_rooms_per_connection: usize,
    /// Users one room may hold (`ROOMCAST_MAX_ROOM_MEMBERS`).
    pub max_room_members: usize,
    /// Connections one user may hold, on all nodes together when several share Redis
    /// (`ROOMCAST_MAX_CONNECTIONS_PER_USER`).
    pub max_connections_per_user: usize,
    /// Rooms one user (a guest: one client IP) may create by joining, per minute
    /// (`ROOMCAST_ROOM_CREATE_RATE`); as many may be created at once.
    pub room_create_rate: u32,
}

impl Default for LimitsConfig {
    /// Generous for people, tight for scripts: see the README's configuration table.
    fn default() -> Self {
        Self {
            connect_rate: 20,
            auth_rate: 60,
            message_rate: 10,
            message_burst: 30,
            max_rooms_per_connection: 100,
            max_room_members: 10_000,
            max_connections_per_user: 20,
            room_create_rate: 10,
        }
    }
}

impl LimitsConfig {
    /// Every limit off: for benchmarks and tests that need none.
    ///
    /// ```
    /// let off = roomcast_server::limits::LimitsConfig::off();
    /// assert_eq!(off.message_rate, 0);
    /// ```
    pub fn off() -> Self {
        Self {
            connect_rate: 0,
            auth_rate: 0,
            message_rate: 0,
            message_burst: 0,
            max_rooms_per_connection: 0,
            max_room_members: 0,
            max_connections_per_user: 0,
            room_create_rate: 0,
        }
    }
}

/// How many refusals in a row a connection may earn before it is closed: a client that goes
/// on sending at twice its rate is closed within a few seconds; one that sent a burst too many
/// is told and goes on.
const STRIKES_PER_MINUTE: u32 = 30;

/// Who creates a room, as `ROOMCAST_ROOM_CREATE_RATE` counts: a user, or a guest by its address
/// (each guest connection is a new user, so its id would count nothing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Creator {
    /// An authenticated user.
    User(roomcast::UserId),
    /// A guest, by client IP.
    Guest(IpAddr),
    /// A guest whose address is unknown: all such guests share one allowance.
    UnknownGuest,
}

/// What a frame is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate.
    Allowed,
    /// Over the rate: drop it and tell the client.
    Dropped,
    /// Over the rate for too long: close with 1008.
    Abusive,
}

/// The rate limiters of one server. Cheap to share (`Arc`).
pub struct Limits {
    config: LimitsConfig,
    /// Peers whose `X-Forwarded-For` / `Forwarded` is believed.
    trusted_proxies: Vec<IpNet>,
    connects: Option<DefaultKeyedRateLimiter<IpAddr>>,
    auths: Option<DefaultKeyedRateLimiter<IpAddr>>,
    messages: Option<DefaultKeyedRateLimiter<ConnId>>,
    /// Refusals per connection: when this limiter refuses too, the connection is closed.
    strikes: Option<DefaultKeyedRateLimiter<ConnId>>,
    rooms_created: Option<DefaultKeyedRateLimiter<Creator>>,
    /// `roomcast_rate_limited_total{limit}`: requests and messages refused by each rate.
    refused: Family<LimitLabel, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limiters for `config`, believing forwarding headers from `trusted_proxies`.
    pub fn new(config: LimitsConfig, trusted_proxies: Vec<IpNet>) -> Self {
        let connects = NonZeroU32::new(config.connect_rate).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(4).expect("4 is not zero"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let auths = NonZeroU32::new(config.auth_rate).map(|rate| {
            let burst = NonZeroU32::new(rate.get() / 4).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        let messages = NonZeroU32::new(config.message_rate).map(|rate| {
            let burst = NonZeroU32::new(config.message_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst.max(rate)))
        });
        let strikes = messages.as_ref().map(|_| {
            let per_minute = NonZeroU32::new(STRIKES_PER_MINUTE).expect("not zero");
            RateLimiter::keyed(Quota::per_minute(per_minute))
        });
        let rooms_created = NonZeroU32::new(config.room_create_rate)
            .map(|rate| RateLimiter::keyed(Quota::per_minute(rate)));
        Self {
            config,
            trusted_proxies,
            connects,
            auths,
            messages,
            strikes,
            rooms_created,
            refused: Family::default(),
        }
    }

    /// Registers `roomcast_rate_limited_total{limit}` (`connect`, `auth`, `message`,
    /// `room_create`) with `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "roomcast_rate_limited",
            "Requests, connection attempts and messages refused by a rate limit, by limit",
            self.refused.clone(),
        );
    }

    fn count(&self, limit: &'static str) {
        self.refused.get_or_create(&LimitLabel { limit }).inc();
    }

    /// The settings.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Counts a connection attempt from `ip`: `Err(wait)` when over `ROOMCAST_CONNECT_RATE`.
    ///
    /// # Errors
    ///
    /// How long until the next attempt from `ip` would pass.
    pub fn connect(&self, ip: IpAddr) -> Result<(), Duration> {
        check(self.connects.as_ref(), ip).inspect_err(|_| self.count("connect"))
    }

    /// Counts a sign-in, sign-up or room-code request from `ip`: `Err(wait)` when over
    /// `ROOMCAST_AUTH_RATE`.
    ///
    /// # Errors
    ///
    /// How long until the next request from `ip` would pass.
    pub fn auth(&self, ip: IpAddr) -> Result<(), Duration> {
        check(self.auths.as_ref(), ip).inspect_err(|_| self.count("auth"))
    }

    /// Counts a room `creator` is about to create: false when over `ROOMCAST_ROOM_CREATE_RATE`.
    pub fn create_room(&self, creator: &Creator) -> bool {
        let allowed = self
            .rooms_created
            .as_ref()
            .is_none_or(|limiter| limiter.check_key(creator).is_ok());
        if !allowed {
            self.count("room_create");
        }
        allowed
    }

    /// Counts a frame from `conn` against `ROOMCAST_MESSAGE_RATE`.
    pub fn message(&self, conn: ConnId) -> Verdict {
        let (Some(messages), Some(strikes)) = (&self.messages, &self.strikes) else {
            return Verdict::Allowed;
        };
        if messages.check_key(&conn).is_ok() {
            return Verdict::Allowed;
        }
        self.count("message");
        if strikes.check_key(&conn).is_ok() {
            Verdict::Dropped
        } else {
            Verdict::Abusive
        }
    }

    /// Forgets the keys whose limiters are back to a full burst (they behave as new ones).
    fn prune(&self) {
        for limiter in [&self.connects, &self.auths].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [&self.messages, &self.strikes].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.rooms_created {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Prunes every minute while the limits are in use.
    pub(crate) fn spawn_pruning(self: &Arc<Self>) {
        let limits: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                let Some(limits) = limits.upgrade() else {
                    return;
                };
                limits.prune();
            }
        });
    }
}

fn check(limiter: Option<&DefaultKeyedRateLimiter<IpAddr>>, ip: IpAddr) -> Result<(), Duration> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(&ip)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the rightmost address of
/// `X-Forwarded-For` (else `Forwarded: for=`) that is not a trusted proxy itself. Proxies append
/// on the right, so everything left of the first untrusted hop is the client's to write and is
/// never believed.
///
/// ```
/// use std::net::IpAddr;
/// use axum::http::HeaderMap;
/// use roomcast_server::limits::client_ip;
/// let proxies = vec!["10.0.0.0/8".parse().unwrap()];
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2".parse().unwrap());
/// let (proxy, stranger): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [198, 51, 100, 1].into());
/// // From the proxy: the hop before it. From anyone else: the peer, whatever it claims.
/// assert_eq!(client_ip(proxy, &headers, &proxies), IpAddr::from([203, 0, 113, 7]));
/// assert_eq!(client_ip(stranger, &headers, &proxies), stranger);
/// ```
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    if chain.is_empty() {
        chain = headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(forwarded_for)
            .collect();
    }
    chain
        .iter()
        .rev()
        .find(|hop| !is_trusted(hop))
        .copied()
        .unwrap_or(peer)
}

/// The address of one `Forwarded` element's `for=` (RFC 7239: `for=192.0.2.60`,
/// `for="[2001:db8::17]:4711"`, `for="192.0.2.60:8080"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.eq_ignore_ascii_case("for")
            .then_some(value.trim().trim_matches('"'))
    })?;
    if let Some(bracketed) = value.strip_prefix('[') {
        return bracketed.split(']').next()?.parse().ok();
    }
    value
        .parse()
        .ok()
        .or_else(|| value.rsplit_once(':')?.0.parse().ok())
}

/// Which limit a route's middleware applies.
#[derive(Debug, Clone, Copy)]
enum Gate {
    Connect,
    Auth,
}

/// Middleware on the WebSocket routes: refuses an address over `ROOMCAST_CONNECT_RATE` with
/// 429 and `Retry-After` before the upgrade.
pub(crate) async fn connect_rate(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    gate(&limits, Gate::Connect, request, next).await
}

/// Middleware on `/auth/login`, `/auth/register`, `/create-room` and `/join-room`: refuses an
/// address over `ROOMCAST_AUTH_RATE` with 429 and `Retry-After`.
pub(crate) async fn auth_rate(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    gate(&limits, Gate::Auth, request, next).await
}

/// Resolves the client's address, counts the request, and runs the route in a span naming the
/// address (so a refusal inside, an origin or a token, logs it).
async fn gate(limits: &Limits, gate: Gate, request: Request, next: Next) -> Response {
    // Without `ConnectInfo` (a router called directly, as some tests do) nothing is counted.
    let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
    else {
        return next.run(request).await;
    };
    let ip = client_ip(peer, request.headers(), &limits.trusted_proxies);
    let counted = match gate {
        Gate::Connect => limits.connect(ip),
        Gate::Auth => limits.auth(ip),
    };
    if let Err(wait) = counted {
        tracing::debug!(client_ip = %ip, limit = ?gate, "rate exceeded");
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        let retry_after = HeaderValue::from_str(&format!("{seconds:.0}"))
            .unwrap_or(HeaderValue::from_static("1"));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after)],
            "too many requests; retry later",
        )
            .into_response();
    }
    let span = tracing::info_span!("client", client_ip = %ip);
    // The WebSocket route keeps it for the connection (`Session::client_addr`).
    let mut request = request;
    request.extensions_mut().insert(roomcast::ClientAddr(ip));
    next.run(request).instrument(span).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_dropped_then_closed_and_a_burst_within_limits_passes() {
        let limits = Limits::new(
            LimitsConfig {
                message_rate: 1,
                message_burst: 5,
                ..LimitsConfig::off()
            },
            Vec::new(),
        );
        let conn = ConnId(1);
        for _ in 0..5 {
            assert_eq!(limits.message(conn), Verdict::Allowed);
        }
        for _ in 0..STRIKES_PER_MINUTE {
            assert_eq!(limits.message(conn), Verdict::Dropped);
        }
        assert_eq!(limits.message(conn), Verdict::Abusive);
        assert_eq!(
            limits.message(ConnId(2)),
            Verdict::Allowed,
            "per connection"
        );
    }

    #[test]
    fn connection_attempts_are_counted_per_address_with_a_burst_of_four_times_the_rate() {
        let limits = Limits::new(
            LimitsConfig {
                connect_rate: 2,
                ..LimitsConfig::off()
            },
            Vec::new(),
        );
        let ip: IpAddr = [127, 0, 0, 9].into();
        for _ in 0..8 {
            assert!(limits.connect(ip).is_ok());
        }
        let wait = limits.connect(ip).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limits.connect([127, 0, 0, 10].into()).is_ok());
    }

    #[test]
    fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let headers = |name: &'static str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.parse().unwrap());
            headers
        };
        let proxy: IpAddr = [10, 1, 2, 3].into();
        let stranger: IpAddr = [198, 51, 100, 9].into();
        let xff = headers("x-forwarded-for", "1.1.1.1, 203.0.113.7");
        assert_eq!(
            client_ip(proxy, &xff, &proxies),
            IpAddr::from([203, 0, 113, 7])
        );
        assert_eq!(client_ip(stranger, &xff, &proxies), stranger, "not trusted");
        let all_proxies = headers("x-forwarded-for", "10.0.0.5");
        assert_eq!(client_ip(proxy, &all_proxies, &proxies), proxy);
        let garbage = headers("x-forwarded-for", "not an address");
        assert_eq!(client_ip(proxy, &garbage, &proxies), proxy);
        let forwarded = headers(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#,
        );
        let v6: IpAddr = "2001:db8:cafe::17".parse().unwrap();
        assert_eq!(client_ip(proxy, &forwarded, &proxies), v6);
        let with_port = headers("forwarded", r#"for="192.0.2.60:8080""#);
        assert_eq!(
            client_ip(proxy, &with_port, &proxies),
            IpAddr::from([192, 0, 2, 60])
        );
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &[]),
            proxy,
            "none trusted"
        );
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let limits = Limits::new(LimitsConfig::off(), Vec::new());
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..10_000 {
            assert!(limits.connect(ip).is_ok());
            assert_eq!(limits.message(ConnId(1)), Verdict::Allowed);
        }
    }
}
