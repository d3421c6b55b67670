//! The cancellation token and task tracker every session of a hub shares.
//!
//! axum's graceful shutdown stops accepting but does not wait for upgraded sockets, so the hub
//! cancels its sessions itself (each writes a 1001 close) and waits for the tracker to empty.
//!
//! Before that, a node may drain (`Hub::drain`): new connections are refused, and the
//! tracker is closed so that waiting on it ends as soon as the clients have left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// One node's stop signal and the sessions it waits for.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    /// Cancelled once: the hub's sweep and broker loop select on it; sessions are closed
    /// through their queues (`Hub::shutdown_sessions`), and `register` refuses new ones.
    token: CancellationToken,
    /// Each session holds a tracker token for its lifetime, taken before its upgrade is
    /// answered (so a connection still upgrading is waited for too).
    tracker: TaskTracker,
    /// Set once by `Hub::drain`: the route refuses new connections and `register` asks a
    /// connection that slipped through to reconnect. Never cleared: a drain ends in shutdown.
    draining: AtomicBool,
}

impl Shutdown {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub(crate) fn track(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    pub(crate) fn cancel(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Starts draining; returns false when it had started already. Closing the tracker lets
    /// `wait` end once the tracked connections are gone, while the token stays live: sessions
    /// go on as usual until they leave or are cancelled.
    pub(crate) fn drain(&self) -> bool {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        self.tracker.close();
        first
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}
