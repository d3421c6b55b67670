//! [`Handler`]: the application's hooks, called on each connection's own task.

use std::future::Future;

use crate::frame::CloseReason;
use crate::session::{Incoming, Session};

/// The hooks an application writes: the counterpart of the seed's `BaseWebSocket`.
///
/// Hooks run on the connection's task, one at a time, so a connection's messages arrive in
/// order. They should not block: a slow hook delays only its own connection, but while it runs
/// that connection neither reads nor writes. Hand long work to another task.
///
/// Returning an error from `on_connect` or `on_message` closes the connection with the error's
/// [close reason](crate::Error::close_reason) (1011 unless the error names another code).
///
/// ```
/// use roomcast::{Handler, Incoming, Session};
///
/// struct Echo;
/// impl Handler for Echo {
///     async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
///         cx.send_json(&serde_json::json!({ "echo": msg.text() }))
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// After the connection is authenticated and registered. Default: nothing.
    ///
    /// Use it to greet, to join default rooms, to log.
    fn on_connect(&self, cx: &Session) -> impl Future<Output = crate::Result<()>> + Send {
        let _ = cx;
        async { Ok(()) }
    }

    /// For each text or binary message the client sends.
    fn on_message(
        &self,
        cx: &Session,
        msg: Incoming,
    ) -> impl Future<Output = crate::Result<()>> + Send;

    /// After the connection has closed, before it leaves its rooms (so `cx.rooms()` still
    /// lists them). Default: nothing.
    fn on_disconnect(&self, cx: &Session, reason: &CloseReason) -> impl Future<Output = ()> + Send {
        let _ = (cx, reason);
        async {}
    }
}
