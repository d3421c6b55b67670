//! The upgrade handler: authenticate, check the origin, admit, then hand the socket to a
//! session.
//!
//! Everything that needs HTTP happens here, because the upgrade request is the last place the
//! headers exist. Refusals that have a close code (4001, 1008, 1013) upgrade first and close at
//! once with that code, since a browser cannot read the status of a failed upgrade.
//!
//! ```text
//! client                        route                               session
//!   │ GET /ws?token=… Upgrade     │                                    │
//!   │───────────────────────────▶│ find token → validate → directory  │
//!   │                             │ origin allowed? permit available?  │
//!   │◀── 101 (+ token.<jwt>) ────│                                    │
//!   │                             │── refused: close(4001/1008/1013)   │
//!   │                             │── admitted: register ─────────────▶│ on_connect, loop…
//! ```

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use futures_util::SinkExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::token::{SUBPROTOCOL_PREFIX, find_token, subprotocol_token};
use crate::auth::{AuthError, Authenticator, Identity};
use crate::frame::{CloseReason, close_code};
use crate::handler::Handler;
use crate::hub::Hub;
use crate::protocol::{Dialect, Raw};
use crate::session::{ConnGuard, Outbound, Session, driver};

/// Which browser origins may open a connection (the `Origin` header). Requests without an
/// `Origin` (non-browser clients) are always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`WEBSOCKET_ALLOWED_ORIGINS=*`, the default).
    #[default]
    Any,
    /// Only these origins, compared exactly (`https://app.example.com`).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses the comma-separated form of `WEBSOCKET_ALLOWED_ORIGINS`; `*` means any.
    ///
    /// ```
    /// use roomcast::AllowedOrigins;
    /// assert_eq!(AllowedOrigins::parse("*"), AllowedOrigins::Any);
    /// let list = AllowedOrigins::parse("https://a.example, https://b.example");
    /// assert!(list.allows("https://b.example"));
    /// assert!(!list.allows("https://evil.example"));
    /// ```
    pub fn parse(value: &str) -> Self {
        let origins: Vec<String> = value
            .split(',')
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        if origins.is_empty() || origins.iter().any(|origin| origin == "*") {
            Self::Any
        } else {
            Self::List(origins)
        }
    }

    /// Whether `origin` may connect.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(origins) => origins.iter().any(|allowed| allowed == origin),
        }
    }
}

/// How an endpoint authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// A valid token is required.
    Required,
    /// A token is used when present (and must then be valid); otherwise a guest is admitted.
    GuestsAllowed,
}

/// A WebSocket endpoint: hub, authentication, hooks and wire format. Turn it into an axum
/// route with [`Endpoint::into_route`], or use [`route`] for the common case.
///
/// ```no_run
/// use roomcast::{Authenticator, Endpoint, Handler, Hub, Incoming, Session, SessionConfig};
///
/// struct Echo;
/// impl Handler for Echo {
///     async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
///         Ok(cx.send(msg.to_frame())?)
///     }
/// }
///
/// # async fn run() {
/// let hub = Hub::new(SessionConfig::default());
/// let auth = Authenticator::hs256(b"a secret of at least 32 bytes, please!");
/// let app: axum::Router = axum::Router::new().route(
///     "/ws/{room}",
///     Endpoint::new(hub, auth, Echo).allow_guests(true).into_route(),
/// );
/// # }
/// ```
pub struct Endpoint<H> {
    inner: Arc<EndpointInner<H>>,
}

impl<H> Clone for Endpoint<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct EndpointInner<H> {
    hub: Hub,
    auth: Authenticator,
    handler: H,
    admission: Admission,
    dialect: &'static dyn Dialect,
    origins: AllowedOrigins,
}

impl<H: Handler> Endpoint<H> {
    /// An endpoint that requires a valid token and speaks [`Raw`] (only frames the handler and
    /// hub send explicitly).
    pub fn new(hub: Hub, auth: Authenticator, handler: H) -> Self {
        Self {
            inner: Arc::new(EndpointInner {
                hub,
                auth,
                handler,
                admission: Admission::Required,
                dialect: &Raw,
                origins: AllowedOrigins::Any,
            }),
        }
    }

    fn edit(mut self, change: impl FnOnce(&mut EndpointInner<H>)) -> Self {
        let inner = Arc::get_mut(&mut self.inner)
            .expect("endpoint builder methods run before the endpoint is cloned");
        change(inner);
        self
    }

    /// Admits clients without a token as guests (`guest-xxxxxxxx`). A token that is present
    /// must still be valid. Default: false.
    pub fn allow_guests(self, allow: bool) -> Self {
        self.edit(|inner| {
            inner.admission = if allow {
                Admission::GuestsAllowed
            } else {
                Admission::Required
            };
        })
    }

    /// The wire format of this endpoint's connections. Default: [`Raw`].
    pub fn dialect(self, dialect: &'static dyn Dialect) -> Self {
        self.edit(|inner| inner.dialect = dialect)
    }

    /// Which browser origins may connect. Default: any.
    pub fn allowed_origins(self, origins: AllowedOrigins) -> Self {
        self.edit(|inner| inner.origins = origins)
    }

    /// The axum route (a `GET` handler) serving this endpoint.
    pub fn into_route<S>(self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        get(upgrade::<H>).with_state(self)
    }
}

/// A route that requires a valid token, speaks [`Raw`] and calls `handler`'s hooks: seed 000's
/// `WebSocketRoute("/ws", MyWebSocket())`.
///
/// ```no_run
/// # use roomcast::{Authenticator, Handler, Hub, Incoming, Session, SessionConfig};
/// # struct Echo;
/// # impl Handler for Echo {
/// #     async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> { Ok(()) }
/// # }
/// let hub = Hub::new(SessionConfig::default());
/// let auth = Authenticator::hs256(b"a secret of at least 32 bytes, please!");
/// let app: axum::Router = axum::Router::new().route("/ws", roomcast::route(hub.clone(), auth, Echo));
/// ```
pub fn route<H: Handler, S>(hub: Hub, auth: Authenticator, handler: H) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    Endpoint::new(hub, auth, handler).into_route()
}

/// Who may connect, decided before the upgrade.
enum Verdict {
    Admit(Identity, OwnedSemaphorePermit),
    Refuse(CloseReason),
}

async fn upgrade<H: Handler>(
    State(endpoint): State<Endpoint<H>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    mut ws: WebSocketUpgrade,
) -> Response {
    let inner = &endpoint.inner;
    let config = inner.hub.config();
    ws = ws
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(config.write_buffer_bytes)
        // No cap on tungstenite's write buffer: what waits to be written is bounded by the
        // outbound queue (frames) and `write_wait`, and a cap below one frame (a user_list of
        // a big room) would drop the connection.
        .max_message_size(config.max_message_bytes)
        // A frame somewhat over the message limit is read whole and then refused with 1009, so
        // the stream stays in sync and the close frame reaches the client; only a frame far
        // beyond it is cut off at its header (the connection is then dropped, maybe with a
        // reset). 64 KiB bounds what a hostile client can make us buffer.
        .max_frame_size(config.max_message_bytes.saturating_mul(4).max(64 * 1024));

    let found = find_token(&headers, query.as_deref());
    // Browsers drop a connection whose requested subprotocol is not selected, whichever
    // source the token was finally taken from (a cookie wins over the subprotocol).
    if let Some(token) = subprotocol_token(&headers)
        && let Ok(protocol) = HeaderValue::from_str(&format!("{SUBPROTOCOL_PREFIX}{token}"))
    {
        ws.set_selected_protocol(protocol);
    }

    let verdict = admit(inner, &headers, found.map(|f| f.token)).await;
    let params: Vec<(String, String)> = params
        .map(|params| {
            params
                .iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        })
        .unwrap_or_default();

    let tracker = inner.hub.shutdown().track();
    ws.on_upgrade(move |socket| async move {
        let _tracked = tracker;
        match verdict {
            Verdict::Refuse(reason) => refuse(socket, &endpoint.inner.hub, reason).await,
            Verdict::Admit(identity, permit) => {
                let _permit = permit;
                let inner = &endpoint.inner;
                let hub = inner.hub.clone();
                let outbound = Outbound::new(hub.config().outbound_capacity);
                let conn = hub.register(&identity, inner.dialect, outbound.clone());
                let guard = ConnGuard::new(hub.clone(), conn);
                let span = tracing::info_span!("session", %conn, user = %identity.user_id);
                let session = Session::new(hub.clone(), conn, identity, outbound.clone(), params);
                let serve = driver::serve(
                    socket,
                    hub,
                    session,
                    outbound,
                    guard,
                    &inner.handler,
                    inner.dialect,
                );
                tracing::Instrument::instrument(serve, span).await;
            }
        }
    })
}

async fn admit<H>(inner: &EndpointInner<H>, headers: &HeaderMap, token: Option<String>) -> Verdict {
    if inner.hub.is_shutting_down() {
        return Verdict::Refuse(CloseReason::going_away());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !inner.origins.allows(origin) {
            tracing::info!(origin, "origin refused");
            return Verdict::Refuse(CloseReason::new(close_code::POLICY, "origin not allowed"));
        }
    }
    let identity = match (token, inner.admission) {
        (Some(token), _) => inner
            .auth
            .authenticate(&token)
            .await
            .map(|(identity, _)| identity),
        (None, Admission::GuestsAllowed) => Ok(Identity::guest()),
        (None, Admission::Required) => Err(AuthError::Missing),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(err) => {
            // The reason names the broken rule; the token itself is never logged.
            tracing::info!(reason = %err, "authentication refused");
            return Verdict::Refuse(err.close_reason());
        }
    };
    match inner.hub.permits().clone().try_acquire_owned() {
        Ok(permit) => Verdict::Admit(identity, permit),
        Err(_) => {
            tracing::warn!(
                max = inner.hub.config().max_connections,
                "connection limit reached"
            );
            Verdict::Refuse(CloseReason::new(close_code::TRY_AGAIN_LATER, "server full"))
        }
    }
}

async fn refuse(mut socket: WebSocket, hub: &Hub, reason: CloseReason) {
    hub.count_refused();
    let wait = hub.config().write_wait;
    let _ = tokio::time::timeout(wait, socket.send(reason.to_message())).await;
    let _ = tokio::time::timeout(wait, socket.close()).await;
}
