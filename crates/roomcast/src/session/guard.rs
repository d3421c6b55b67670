//! [`ConnGuard`]: removes a connection from the hub even when its task panics or is cancelled.

use tokio::sync::OwnedSemaphorePermit;

use crate::hub::Hub;
use crate::ids::ConnId;

/// Unregisters its connection when dropped, unless [`ConnGuard::release`] already did, and
/// holds the connection's permit (`max_connections`) until then.
pub(crate) struct ConnGuard {
    hub: Hub,
    conn: ConnId,
    armed: bool,
    _permit: OwnedSemaphorePermit,
}

impl ConnGuard {
    pub(crate) fn new(hub: Hub, conn: ConnId, permit: OwnedSemaphorePermit) -> Self {
        Self {
            hub,
            conn,
            armed: true,
            _permit: permit,
        }
    }

    /// The normal path: unregister, announcing leaves and reaching other nodes.
    pub(crate) async fn release(mut self) {
        self.armed = false;
        self.hub.unregister(self.conn).await;
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The task died (panic or cancellation) before `release`: finish the cleanup on a new
        // task, since it may need to reach the broker.
        let hub = self.hub.clone();
        let conn = self.conn;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    hub.unregister(conn).await;
                });
            }
            Err(_) => {
                tracing::error!(%conn, "connection dropped outside a runtime; not unregistered")
            }
        }
    }
}
