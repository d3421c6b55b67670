//! Access tokens on live connections: each connection's token expiry, which the hub's sweep
//! turns into a notice and then a close, and the refresh that moves it.
//!
//! A token is checked once, at the upgrade; without this a connection would outlive its token
//! by hours (Socket.IO's users complain of exactly that; Centrifugo closes at expiry unless the
//! client refreshes). So each authenticated connection's entry in the hub's registry keeps its
//! token's `exp` ([`Expiry`]) and the endpoint's [`Authenticator`] (for the leeway and for
//! refreshes). On each pass the sweep (`State::sweep`) asks [`Expiry::due`]:
//!
//! ```text
//!  exp − notice              exp                 exp + leeway
//!  ──────┬────────────────────┬───────────────────────┬──────────▶ wall clock
//!        │ Dialect::           │                       │ Dialect::token_expired
//!        │ token_expiring(exp) │                       │ (4001, seed 003: 1008)
//!        │ once                │                       │
//!  a `refresh` with a valid token of the same user ─▶ exp := its exp, notice re-armed
//! ```
//!
//! Guests have no entry here and never expire. Nothing runs per connection between passes:
//! the check is one comparison of the pass's clock with `exp`; the leeway is read (through the
//! authenticator's `Arc`) only once `exp` has passed.
//!
//! `exp` is wall-clock time, so it is compared with the wall clock (`SystemTime`), read once
//! per pass, not converted to the hub's monotonic clock at registration: the authenticator
//! judges a token by the wall clock too, so a connection closes when its token would be refused
//! at the door, and a refreshed `exp` needs no conversion.

use std::time::Duration;

use super::Hub;
use crate::auth::Authenticator;
use crate::ids::ConnId;

/// A connection's access token expiry, kept in its hub entry. 24 bytes, `Option` included.
#[derive(Clone)]
pub(crate) struct Expiry {
    /// The token's `exp`, seconds since the Unix epoch.
    exp: u64,
    /// The endpoint's authenticator: its leeway delays the close, and a refresh is validated
    /// with it. A clone of the endpoint's (one `Arc`).
    auth: Authenticator,
    /// Whether this token's notice was queued (it is sent once per token).
    noticed: bool,
}

/// What the sweep does about a connection's expiry on one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Queue the dialect's notice (`token_expiring`) with this `exp`.
    Notice(u64),
    /// `exp` plus the leeway has passed: close with the dialect's `token_expired`.
    Close,
}

impl Expiry {
    pub(crate) fn new(exp: u64, auth: Authenticator) -> Self {
        Self {
            exp,
            auth,
            noticed: false,
        }
    }

    /// The token's `exp`, seconds since the Unix epoch.
    pub(crate) fn exp(&self) -> u64 {
        self.exp
    }

    /// The endpoint's authenticator, to validate a refresh with.
    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// A refresh was accepted: the connection now lasts as long as the new token, whose
    /// notice is still to come. The new `exp` replaces the old one even when it is earlier:
    /// the connection lives as long as the token its client last presented.
    pub(crate) fn refresh(&mut self, exp: u64) {
        self.exp = exp;
        self.noticed = false;
    }

    /// Whether something is due at `wall_ms` (ms since the Unix epoch), with the notice
    /// `notice_ms` before `exp` (`None`: no notice). Marks the notice as sent when it returns
    /// [`Due::Notice`]: the sweep queues it once.
    pub(crate) fn due(&mut self, wall_ms: u64, notice_ms: Option<u64>) -> Option<Due> {
        let exp_ms = self.exp.saturating_mul(1000);
        if wall_ms >= exp_ms {
            let leeway_ms = self.auth.leeway_secs().saturating_mul(1000);
            if wall_ms >= exp_ms.saturating_add(leeway_ms) {
                return Some(Due::Close);
            }
        }
        match notice_ms {
            Some(notice) if !self.noticed && wall_ms >= exp_ms.saturating_sub(notice) => {
                self.noticed = true;
                Some(Due::Notice(self.exp))
            }
            _ => None,
        }
    }
}

/// The wall clock, ms since the Unix epoch, as the sweep compares it with `exp`.
pub(crate) fn wall_ms() -> u64 {
    u64::try_from(crate::protocol::now_ms()).unwrap_or(0)
}

/// [`crate::SessionConfig::token_expiry_notice`] in ms; `None` when zero (no notice).
pub(crate) fn notice_ms(notice: Duration) -> Option<u64> {
    Some(u64::try_from(notice.as_millis()).unwrap_or(u64::MAX)).filter(|ms| *ms > 0)
}

impl Hub {
    /// Starts enforcing `exp` (the token's, seconds since the Unix epoch) on `conn`, with
    /// `auth`'s leeway; refreshes will be validated with `auth`. Called by the route right
    /// after `register`; a sweep in between sees no expiry yet, which only delays nothing.
    pub(crate) fn expire_at(&self, conn: ConnId, exp: u64, auth: &Authenticator) {
        if let Some(expiry) = self.state().expiry_mut(conn) {
            *expiry = Some(Expiry::new(exp, auth.clone()));
        }
    }

    /// The connection's token `exp` and the authenticator a refresh is validated with; `None`
    /// for a guest or a connection that is gone.
    pub(crate) fn token_expiry(&self, conn: ConnId) -> Option<(u64, Authenticator)> {
        let mut state = self.state();
        let expiry = state.expiry_mut(conn)?.as_ref()?;
        Some((expiry.exp(), expiry.authenticator().clone()))
    }

    /// A refresh was accepted: `conn` now expires at `exp`. Returns false when the connection
    /// is gone (or has no token).
    pub(crate) fn refresh_expiry(&self, conn: ConnId, exp: u64) -> bool {
        let mut state = self.state();
        match state.expiry_mut(conn) {
            Some(Some(expiry)) => {
                expiry.refresh(exp);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    fn expiry(exp: u64, leeway: u64) -> Expiry {
        let auth = Authenticator::hs256(SECRET).leeway(Duration::from_secs(leeway));
        Expiry::new(exp, auth)
    }

    #[test]
    fn the_notice_comes_once_before_exp_then_the_close_after_the_leeway() {
        let mut expiry = expiry(1_000, 5);
        assert_eq!(expiry.due(939_999, Some(60_000)), None, "61 s before exp");
        assert_eq!(expiry.due(940_000, Some(60_000)), Some(Due::Notice(1_000)));
        assert_eq!(expiry.due(950_000, Some(60_000)), None, "sent once");
        assert_eq!(
            expiry.due(1_000_000, Some(60_000)),
            None,
            "exp, within leeway"
        );
        assert_eq!(expiry.due(1_004_999, Some(60_000)), None);
        assert_eq!(expiry.due(1_005_000, Some(60_000)), Some(Due::Close));
    }

    #[test]
    fn a_token_already_inside_the_notice_window_is_told_at_once_and_zero_means_no_notice() {
        let mut expiry = self::expiry(1_000, 0);
        assert_eq!(expiry.due(997_000, Some(60_000)), Some(Due::Notice(1_000)));
        assert_eq!(expiry.due(1_000_000, Some(60_000)), Some(Due::Close));

        let mut silent = self::expiry(1_000, 0);
        assert_eq!(silent.due(999_999, None), None);
        assert_eq!(
            silent.due(1_000_000, None),
            Some(Due::Close),
            "0 keeps the close"
        );
    }

    #[test]
    fn a_refresh_moves_exp_and_re_arms_the_notice() {
        let mut expiry = self::expiry(1_000, 0);
        assert_eq!(expiry.due(990_000, Some(60_000)), Some(Due::Notice(1_000)));
        expiry.refresh(2_000);
        assert_eq!(expiry.exp(), 2_000);
        assert_eq!(expiry.due(1_000_000, Some(60_000)), None, "the old exp");
        assert_eq!(
            expiry.due(1_940_000, Some(60_000)),
            Some(Due::Notice(2_000))
        );
        assert_eq!(expiry.due(2_000_000, Some(60_000)), Some(Due::Close));
    }

    #[test]
    fn far_and_odd_values_saturate_instead_of_wrapping() {
        let mut far = self::expiry(u64::MAX, u64::MAX / 1000);
        assert_eq!(
            far.due(u64::MAX - 1, Some(u64::MAX)),
            Some(Due::Notice(u64::MAX))
        );
        assert_eq!(far.due(u64::MAX - 1, None), None);
        let mut past = self::expiry(0, 0);
        assert_eq!(past.due(0, None), Some(Due::Close));
        assert_eq!(notice_ms(Duration::ZERO), None);
        assert_eq!(notice_ms(Duration::from_secs(60)), Some(60_000));
    }

    #[test]
    fn an_expiry_costs_a_connection_entry_24_bytes() {
        assert_eq!(size_of::<Option<Expiry>>(), 24);
    }
}
