//! The hub's sweep: the deadlines it enforces on every connection (pings, the peer's silence,
//! idleness, heartbeats, token expiry), one pass at a time under the hub's lock.

use std::time::Duration;

use crate::config::SessionConfig;
use crate::frame::{CloseReason, close_code};
use crate::session::SendError;

use super::super::expiry::Due;
use super::State;

/// The connection deadlines the hub's sweep enforces, in ms of the hub's clock (see
/// `Hub::now_ms`), taken from the hub's [`SessionConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// A protocol ping is requested this long after the last one.
    pub(crate) ping_period: u64,
    /// No frame from the peer for this long closes it: 1001 "ping timeout".
    pub(crate) pong_wait: u64,
    /// The dialect's heartbeat is queued this long after the last one; `None`: off.
    pub(crate) heartbeat: Option<u64>,
    /// No data message for this long closes it: 1001 "connection timeout"; `None`: off.
    pub(crate) idle: Option<u64>,
    /// The dialect's `token_expiring` notice is queued this long before a token's `exp`;
    /// `None`: no notice (the close at expiry stays). Not a period: it does not set the
    /// sweep's pace.
    pub(crate) expiry_notice: Option<u64>,
}

impl Deadlines {
    pub(crate) fn new(config: &SessionConfig) -> Self {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let off_if_zero = |duration: Duration| Some(millis(duration)).filter(|ms| *ms > 0);
        Self {
            ping_period: millis(config.ping_period),
            pong_wait: millis(config.pong_wait),
            heartbeat: off_if_zero(config.heartbeat_interval),
            idle: off_if_zero(config.connection_timeout),
            expiry_notice: super::super::expiry::notice_ms(config.token_expiry_notice),
        }
    }

    /// How often the sweep runs: a tenth of the shortest deadline, between 5 ms and 1 s. With
    /// the defaults (pings every 54 s, heartbeats every 30 s) that is once a second, so a
    /// deadline fires at most a second late.
    pub(crate) fn sweep_period(&self) -> Duration {
        let shortest = [
            Some(self.ping_period),
            Some(self.pong_wait),
            self.heartbeat,
            self.idle,
        ]
        .into_iter()
        .flatten()
        .filter(|ms| *ms > 0)
        .min()
        .unwrap_or(1_000);
        Duration::from_millis(shortest / 10).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

impl State {
    /// One pass of the hub's sweep at `now`: closes connections past a deadline, asks for the
    /// pings and queues the heartbeats that are due. Never waits: each connection's part is a
    /// look at two atomics and, when something is due, a non-blocking queue operation. Returns
    /// how many heartbeats (or token expiry notices) found a full queue (slow consumers, now
    /// being closed with 1013). Token expiries are judged by the wall clock, read once for the pass (`hub::expiry`).
    pub(crate) fn sweep(&mut self, now: u64, deadlines: &Deadlines) -> usize {
        self.sweep_at(now, super::super::expiry::wall_ms(), deadlines)
    }

    /// [`State::sweep`] with the wall clock at `wall_ms` (ms since the Unix epoch).
    pub(crate) fn sweep_at(&mut self, now: u64, wall_ms: u64, deadlines: &Deadlines) -> usize {
        let mut slow = 0;
        for conn in self.conns.values_mut() {
            let (read, data) = conn.outbound.last_heard();
            if now.saturating_sub(read) >= deadlines.pong_wait {
                conn.outbound
                    .close(CloseReason::new(close_code::GOING_AWAY, "ping timeout"));
                continue;
            }
            if deadlines
                .idle
                .is_some_and(|idle| now.saturating_sub(data) >= idle)
            {
                conn.outbound.close(CloseReason::new(
                    close_code::GOING_AWAY,
                    "connection timeout",
                ));
                continue;
            }
            if let Some(expiry) = &mut conn.expiry {
                match expiry.due(wall_ms, deadlines.expiry_notice) {
                    Some(Due::Close) => {
                        conn.outbound.close(conn.outbound.dialect().token_expired());
                        continue;
                    }
                    Some(Due::Notice(exp)) => {
                        if let Some(frame) = conn.outbound.dialect().token_expiring(exp)
                            && conn.outbound.try_send(frame) == Err(SendError::Full)
                        {
                            slow += 1;
                        }
                    }
                    None => {}
                }
            }
            if now.saturating_sub(conn.pinged) >= deadlines.ping_period {
                conn.pinged = now;
                conn.outbound.request_ping();
            }
            if let Some(every) = deadlines.heartbeat
                && now.saturating_sub(conn.beat) >= every
            {
                conn.beat = now;
                if let Some(frame) = conn.outbound.dialect().heartbeat()
                    && conn.outbound.try_send(frame) == Err(SendError::Full)
                {
                    slow += 1;
                }
            }
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::one_conn;
    use super::*;
    use crate::frame::Frame;
    use crate::hub::expiry::Expiry;
    use crate::ids::ConnId;
    use crate::protocol::native::NATIVE;
    use crate::protocol::{Dialect, Raw};
    use crate::ws::Outgoing;

    const DEADLINES: Deadlines = Deadlines {
        ping_period: 100,
        pong_wait: 300,
        heartbeat: Some(150),
        idle: Some(1_000),
        expiry_notice: Some(500),
    };

    #[test]
    fn the_sweep_asks_for_pings_and_heartbeats_when_due_and_not_before() {
        let (mut state, outbound) = one_conn(&NATIVE, 1_000);
        assert_eq!(state.sweep(1_099, &DEADLINES), 0);
        let taken = outbound.take();
        assert!(!taken.ping && taken.frames.is_empty(), "nothing due yet");

        state.sweep(1_100, &DEADLINES);
        let taken = outbound.take();
        assert!(taken.ping && taken.frames.is_empty(), "the ping is due");

        outbound.heard_from(1_120, false);
        state.sweep(1_150, &DEADLINES);
        let taken = outbound.take();
        assert!(!taken.ping, "the next ping is a period after the last one");
        assert_eq!(taken.frames, [Frame::from(r#"{"type":"ping"}"#).into()]);
        assert!(!taken.closing);
    }

    #[test]
    fn a_peer_silent_for_pong_wait_is_closed_and_a_pong_keeps_it_open() {
        let (mut state, outbound) = one_conn(&Raw, 0);
        outbound.heard_from(250, false);
        state.sweep(549, &DEADLINES);
        assert!(!outbound.take().closing, "heard from 299 ms ago");
        state.sweep(550, &DEADLINES);
        assert!(outbound.take().closing);
        assert_eq!(
            outbound.close_reason(),
            Some(CloseReason::new(close_code::GOING_AWAY, "ping timeout"))
        );
    }

    #[test]
    fn only_data_messages_keep_a_connection_from_its_idle_timeout() {
        let (mut state, outbound) = one_conn(&Raw, 0);
        for now in (200..1_000).step_by(200) {
            outbound.heard_from(now, false);
            state.sweep(now, &DEADLINES);
            assert!(!outbound.take().closing, "pongs alone, {now} ms in");
        }
        outbound.heard_from(1_000, false);
        state.sweep(1_000, &DEADLINES);
        assert!(outbound.take().closing);
        assert_eq!(
            outbound.close_reason(),
            Some(CloseReason::new(
                close_code::GOING_AWAY,
                "connection timeout"
            ))
        );

        let (mut state, outbound) = one_conn(&Raw, 0);
        outbound.heard_from(900, true);
        outbound.heard_from(1_400, false);
        state.sweep(1_500, &DEADLINES);
        assert!(!outbound.take().closing, "a message 600 ms ago");
    }

    #[test]
    fn deadlines_come_from_the_config_and_set_the_sweep_period() {
        let defaults = Deadlines::new(&SessionConfig::default());
        assert_eq!(
            defaults,
            Deadlines {
                ping_period: 54_000,
                pong_wait: 60_000,
                heartbeat: Some(30_000),
                idle: None,
                expiry_notice: Some(60_000),
            }
        );
        assert_eq!(defaults.sweep_period(), Duration::from_secs(1));
        assert_eq!(DEADLINES.sweep_period(), Duration::from_millis(10));
        let tiny = Deadlines {
            ping_period: 20,
            ..DEADLINES
        };
        assert_eq!(tiny.sweep_period(), Duration::from_millis(5));
    }

    #[test]
    fn a_heartbeat_into_a_full_queue_is_counted_as_a_slow_consumer() {
        let (mut state, outbound) = one_conn(&NATIVE, 0);
        outbound.try_send(Frame::from("a")).unwrap();
        outbound.try_send(Frame::from("b")).unwrap();
        outbound.heard_from(150, false);
        assert_eq!(state.sweep(150, &DEADLINES), 1);
        assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
    }

    #[test]
    fn the_sweep_queues_the_dialects_expiry_notice_once_then_closes_with_its_reason() {
        use crate::protocol::token_scoped::TOKEN_SCOPED;
        let auth = crate::Authenticator::hs256(b"test-secret-test-secret-test-secret")
            .leeway(Duration::from_secs(1));
        // exp at wall 10 s; the notice (500 ms) from 9.5 s; the close from 11 s.
        for (dialect, notice, close) in [
            (
                &NATIVE as &'static dyn Dialect,
                Some(NATIVE.token_expiring(10).unwrap()),
                CloseReason::new(4001, "token expired"),
            ),
            (&Raw, None, CloseReason::new(4001, "token expired")),
            (&TOKEN_SCOPED, None, CloseReason::new(1008, "Token expired")),
        ] {
            let (mut state, outbound) = one_conn(dialect, 0);
            *state.expiry_mut(ConnId(1)).unwrap() = Some(Expiry::new(10, auth.clone()));
            outbound.heard_from(40, true);
            state.sweep_at(50, 9_499, &DEADLINES);
            assert!(
                outbound.take().frames.is_empty(),
                "{}: too early",
                dialect.name()
            );
            state.sweep_at(60, 9_500, &DEADLINES);
            let taken = outbound.take();
            let expected: Vec<Outgoing> = notice.clone().into_iter().map(Into::into).collect();
            assert_eq!(taken.frames, expected, "{}: the notice", dialect.name());
            assert!(!taken.closing);
            state.sweep_at(65, 9_600, &DEADLINES);
            assert!(
                outbound.take().frames.is_empty(),
                "{}: once",
                dialect.name()
            );
            state.sweep_at(70, 10_999, &DEADLINES);
            assert!(
                !outbound.take().closing,
                "{}: within the leeway",
                dialect.name()
            );
            state.sweep_at(80, 11_000, &DEADLINES);
            assert!(outbound.take().closing);
            assert_eq!(outbound.close_reason(), Some(close), "{}", dialect.name());
        }
    }

    #[test]
    fn a_guest_never_expires() {
        let (mut state, outbound) = one_conn(&NATIVE, 0);
        outbound.heard_from(40, true);
        state.sweep_at(50, u64::MAX, &DEADLINES);
        assert!(!outbound.take().closing);
    }
}
