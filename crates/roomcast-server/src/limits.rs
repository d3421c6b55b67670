//! Abuse limits: what one client may do, whatever endpoint it came through.
//!
//! | setting | what it bounds | over it |
//! | --- | --- | --- |
//! | `ROOMCAST_CONNECT_RATE` | connection attempts per client IP and second (burst: 4×) | HTTP 429 with `Retry-After`, before the upgrade |
//! | `ROOMCAST_MESSAGE_RATE`, `ROOMCAST_MESSAGE_BURST` | frames per connection and second | the frame is dropped with an error; sustained, 1008 `rate limited` |
//! | `ROOMCAST_MAX_ROOMS_PER_CONNECTION` | rooms one connection is in | the join is refused with an error |
//! | `ROOMCAST_MAX_ROOM_MEMBERS` | users in one room | `room full`: an error, or 1013 at connect |
//! | `ROOMCAST_MAX_CONNECTIONS_PER_USER` | one user's connections on this node | 1013 `too many connections` |
//!
//! Every one of them is `0` to turn it off (benchmarks that open thousands of connections from
//! one address do). Rates are GCRA limiters from `governor`, keyed by IP or connection id: one
//! timestamp per key, pruned every minute of the keys that are back to a full burst.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use roomcast::ConnId;

/// The limits' settings. `0` turns each off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connection attempts per client IP and second (`ROOMCAST_CONNECT_RATE`); bursts of four
    /// times that pass.
    pub connect_rate: u32,
    /// Frames per connection and second (`ROOMCAST_MESSAGE_RATE`).
    pub message_rate: u32,
    /// Frames a connection may send at once before the rate applies
    /// (`ROOMCAST_MESSAGE_BURST`).
    pub message_burst: u32,
    /// Rooms one connection may be in (`ROOMCAST_MAX_ROOMS_PER_CONNECTION`).
    pub max_rooms_per_connection: usize,
    /// Users one room may hold (`ROOMCAST_MAX_ROOM_MEMBERS`).
    pub max_room_members: usize,
    /// Connections one user may hold on this node (`ROOMCAST_MAX_CONNECTIONS_PER_USER`).
    pub max_connections_per_user: usize,
}

impl Default for LimitsConfig {
    /// Generous for people, tight for scripts: see the README's configuration table.
    fn default() -> Self {
        Self {
            connect_rate: 20,
            message_rate: 10,
            message_burst: 30,
            max_rooms_per_connection: 100,
            max_room_members: 10_000,
            max_connections_per_user: 20,
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
            message_rate: 0,
            message_burst: 0,
            max_rooms_per_connection: 0,
            max_room_members: 0,
            max_connections_per_user: 0,
        }
    }
}

/// How many refusals in a row a connection may earn before it is closed: a client that goes
/// on sending at twice its rate is closed within a few seconds; one that sent a burst too many
/// is told and goes on.
const STRIKES_PER_MINUTE: u32 = 30;

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
    connects: Option<DefaultKeyedRateLimiter<IpAddr>>,
    messages: Option<DefaultKeyedRateLimiter<ConnId>>,
    /// Refusals per connection: when this limiter refuses too, the connection is closed.
    strikes: Option<DefaultKeyedRateLimiter<ConnId>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limiters for `config`.
    pub fn new(config: LimitsConfig) -> Self {
        let connects = NonZeroU32::new(config.connect_rate).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(4).expect("4 is not zero"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let messages = NonZeroU32::new(config.message_rate).map(|rate| {
            let burst = NonZeroU32::new(config.message_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst.max(rate)))
        });
        let strikes = messages.as_ref().map(|_| {
            let per_minute = NonZeroU32::new(STRIKES_PER_MINUTE).expect("not zero");
            RateLimiter::keyed(Quota::per_minute(per_minute))
        });
        Self {
            config,
            connects,
            messages,
            strikes,
        }
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
        let Some(connects) = &self.connects else {
            return Ok(());
        };
        connects
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Counts a frame from `conn` against `ROOMCAST_MESSAGE_RATE`.
    pub fn message(&self, conn: ConnId) -> Verdict {
        let (Some(messages), Some(strikes)) = (&self.messages, &self.strikes) else {
            return Verdict::Allowed;
        };
        if messages.check_key(&conn).is_ok() {
            Verdict::Allowed
        } else if strikes.check_key(&conn).is_ok() {
            Verdict::Dropped
        } else {
            Verdict::Abusive
        }
    }

    /// Forgets the keys whose limiters are back to a full burst (they behave as new ones).
    fn prune(&self) {
        if let Some(connects) = &self.connects {
            connects.retain_recent();
            connects.shrink_to_fit();
        }
        for limiter in [&self.messages, &self.strikes].into_iter().flatten() {
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

/// Middleware on the WebSocket routes: refuses an address over `ROOMCAST_CONNECT_RATE` with
/// 429 and `Retry-After` (whole seconds, at least 1) before the upgrade. The address is the
/// socket's peer.
pub(crate) async fn connect_rate(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(ip) = peer
        && let Err(wait) = limits.connect(ip)
    {
        tracing::debug!(%ip, "connection rate exceeded");
        let seconds = wait.as_secs_f64().ceil().max(1.0);
        let retry_after = HeaderValue::from_str(&format!("{seconds:.0}"))
            .unwrap_or(HeaderValue::from_static("1"));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after)],
            "too many connection attempts; retry later",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_dropped_then_closed_and_a_burst_within_limits_passes() {
        let limits = Limits::new(LimitsConfig {
            message_rate: 1,
            message_burst: 5,
            ..LimitsConfig::off()
        });
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
        let limits = Limits::new(LimitsConfig {
            connect_rate: 2,
            ..LimitsConfig::off()
        });
        let ip: IpAddr = [127, 0, 0, 9].into();
        for _ in 0..8 {
            assert!(limits.connect(ip).is_ok());
        }
        let wait = limits.connect(ip).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limits.connect([127, 0, 0, 10].into()).is_ok());
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let limits = Limits::new(LimitsConfig::off());
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..10_000 {
            assert!(limits.connect(ip).is_ok());
            assert_eq!(limits.message(ConnId(1)), Verdict::Allowed);
        }
    }
}
