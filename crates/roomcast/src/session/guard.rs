//! [`ConnGuard`]: removes a connection from the hub even when its task panics or is cancelled.

use tokio::sync::OwnedSemaphorePermit;

use crate::hub::Hub;
use crate::ids::ConnId;

/// Unregisters its connection when dropped, unless [`ConnGuard::release`] already did, and
/// holds the connection's permit (`max_connections`) until then.
pub(crate) struct ConnGuard {
    hub: Hub,
    conn: ConnId,
    /// `None` once [`ConnGuard::release`] has run: the guard is disarmed. (An `Option`, not a
    /// flag beside the permit: 8 bytes less in every connection's task.)
    permit: Option<OwnedSemaphorePermit>,
}

impl ConnGuard {
    pub(crate) fn new(hub: Hub, conn: ConnId, permit: OwnedSemaphorePermit) -> Self {
        Self {
            hub,
            conn,
            permit: Some(permit),
        }
    }

    /// The normal path: unregister, announcing leaves and reaching other nodes; the permit
    /// is given back once the connection is gone from the hub.
    pub(crate) async fn release(mut self, code: u16) {
        let permit = self.permit.take();
        self.hub.unregister(self.conn, code).await;
        drop(permit);
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.permit.is_none() {
            return;
        }
        // The task died (panic or cancellation) before `release`: finish the cleanup on a new
        // task, since it may need to reach the broker.
        let hub = self.hub.clone();
        let conn = self.conn;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // No close frame was sent: counted as 1006, abnormal closure.
                    hub.unregister(conn, 1006).await;
                });
            }
            Err(_) => {
                tracing::error!(%conn, "connection dropped outside a runtime; not unregistered")
            }
        }
    }
}
