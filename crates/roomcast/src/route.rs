//! The upgrade handler: authenticate, check the origin, admit, then hand the socket to a
//! session.
//!
//! Everything that needs HTTP happens here, because the upgrade request is the last place the
//! headers exist. A refused origin is answered before the upgrade, with HTTP 403 (a page on
//! another site has no business reading why); refusals that have a close code (4001, 1008,
//! 1013) upgrade first and close at once with that code, since a browser cannot read the
//! status of a failed upgrade.
//!
//! ```text
//! client                        route                               session
//!   │ GET /ws?token=… Upgrade     │                                    │
//!   │───────────────────────────▶│ origin allowed? cookie same-site?  │
//!   │◀── 403 (refused origin) ────│ find token → validate → directory  │
//!   │                             │ permit available?                  │
//!   │◀── 101 (+ token.<jwt>) ────│                                    │
//!   │                             │── refused: close(4001/1008/1013)   │
//!   │                             │── admitted: register ─────────────▶│ on_connect, loop…
//! ```

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use hyper::upgrade::OnUpgrade;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::LogSampler;
use crate::auth::token::{SUBPROTOCOL_PREFIX, TokenSource, find_token, subprotocol_token};
use crate::auth::{AuthError, Authenticator, Claims, Identity};
use crate::frame::{CloseReason, close_code};
use crate::handler::Handler;
use crate::hub::Hub;
use crate::origin::{AllowedOrigins, check_origin};
use crate::protocol::{Dialect, Raw};
use crate::session::{ConnGuard, Outbound, Session, driver};
use crate::ws::handshake::{Io, Upgrade};
use crate::ws::socket::Opened;
use crate::ws::{Deflate, WsStream, deflate};

/// A request extension: the client's address as a middleware in front of the route resolved it
/// (behind trusted reverse proxies, from their forwarding headers). Without it the route takes
/// the socket's peer from axum's `ConnectInfo<SocketAddr>` (present when the app is served with
/// `into_make_service_with_connect_info`), and without that, the connection has no address.
/// Hooks read it with [`Session::client_addr`].
///
/// ```
/// use axum::http::Request;
/// let mut request = Request::new(());
/// request.extensions_mut().insert(roomcast::ClientAddr([203, 0, 113, 7].into()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client's address of an upgrade request: [`ClientAddr`], else the socket's peer.
struct PeerAddr(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let extensions = &parts.extensions;
        let addr = extensions
            .get::<ClientAddr>()
            .map(|ClientAddr(ip)| *ip)
            .or_else(|| {
                extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip())
            });
        Ok(Self(addr))
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
    /// Token claims copied into the session's parameters; empty for most endpoints.
    claim_params: &'static [&'static str],
    /// The close reason of a connection whose token was refused.
    auth_refusal: fn(&AuthError) -> CloseReason,
    /// The name in metrics and the admin API.
    name: &'static str,
    /// What each connection's task reads: limits, the dialect's name.
    served: driver::Served,
}

impl<H: Handler> Endpoint<H> {
    /// An endpoint that requires a valid token and speaks [`Raw`] (only frames the handler and
    /// hub send explicitly).
    pub fn new(hub: Hub, auth: Authenticator, handler: H) -> Self {
        let served = driver::Served {
            config: hub.config().clone(),
            dialect: Raw.name(),
            endpoint: "ws",
        };
        Self {
            inner: Arc::new(EndpointInner {
                name: "ws",
                served,
                hub,
                auth,
                handler,
                admission: Admission::Required,
                dialect: &Raw,
                origins: AllowedOrigins::Any,
                claim_params: &[],
                auth_refusal: AuthError::close_reason,
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
        self.edit(|inner| {
            inner.dialect = dialect;
            inner.served.dialect = dialect.name();
        })
    }

    /// The endpoint's name: the `endpoint` label of its connections in metrics
    /// (`roomcast_connections{endpoint="/ws"}`) and what the admin API shows. Usually its path
    /// pattern. Default: `"ws"`.
    ///
    /// ```no_run
    /// # use roomcast::{Authenticator, Endpoint, Handler, Hub, Incoming, Session, SessionConfig};
    /// # struct Echo;
    /// # impl Handler for Echo {
    /// #     async fn on_message(&self, _: &Session, _: Incoming) -> roomcast::Result<()> { Ok(()) }
    /// # }
    /// let hub = Hub::new(SessionConfig::default());
    /// let auth = Authenticator::hs256(b"a secret of at least 32 bytes, please!");
    /// let route: axum::routing::MethodRouter =
    ///     Endpoint::new(hub, auth, Echo).name("/ws/echo").into_route();
    /// ```
    pub fn name(self, name: &'static str) -> Self {
        self.edit(|inner| {
            inner.name = name;
            inner.served.endpoint = name;
        })
    }

    /// Which browser origins may connect; others get HTTP 403 before the upgrade. Default:
    /// any. A token taken from a cookie is accepted only from an allowed origin, and with
    /// [`AllowedOrigins::Any`] only from the same origin (the `Origin`'s host is the `Host`):
    /// a cookie is sent by the browser whichever site opens the socket (cross-site WebSocket
    /// hijacking). Requests without an `Origin` (not a browser) and tokens in the query, the
    /// `Authorization` header or the subprotocol are not affected.
    pub fn allowed_origins(self, origins: AllowedOrigins) -> Self {
        self.edit(|inner| inner.origins = origins)
    }

    /// Copies these string claims of each connection's token into its session's parameters,
    /// where hooks read them with [`Session::param`]: seed 003's room tokens name their room
    /// in `room_id`. A token without one of them is refused as invalid. Default: none.
    ///
    /// ```no_run
    /// # use roomcast::{Authenticator, Endpoint, Handler, Hub, Incoming, Session, SessionConfig};
    /// struct Scoped;
    /// impl Handler for Scoped {
    ///     async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
    ///         let room = cx.param("room_id").expect("the endpoint requires the claim");
    ///         Ok(())
    ///     }
    ///     async fn on_message(&self, _: &Session, _: Incoming) -> roomcast::Result<()> { Ok(()) }
    /// }
    /// let hub = Hub::new(SessionConfig::default());
    /// let auth = Authenticator::hs256(b"a secret of at least 32 bytes, please!").token_type("room");
    /// let route: axum::routing::MethodRouter =
    ///     Endpoint::new(hub, auth, Scoped).claims_as_params(&["room_id"]).into_route();
    /// ```
    pub fn claims_as_params(self, claims: &'static [&'static str]) -> Self {
        self.edit(|inner| inner.claim_params = claims)
    }

    /// How a connection whose token was refused is closed. Default:
    /// [`AuthError::close_reason`] (4001, or 1011 when the user directory cannot answer).
    /// Seed 003's endpoint closes with 1008 instead.
    ///
    /// ```
    /// use roomcast::{AuthError, CloseReason, close_code};
    /// fn policy(err: &AuthError) -> CloseReason {
    ///     match err {
    ///         AuthError::Missing => CloseReason::new(close_code::POLICY, "Token required"),
    ///         other => CloseReason::new(close_code::POLICY, other.to_string()),
    ///     }
    /// }
    /// # let _ = policy;
    /// ```
    pub fn auth_refusal(self, refusal: fn(&AuthError) -> CloseReason) -> Self {
        self.edit(|inner| inner.auth_refusal = refusal)
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
    /// With the claims the endpoint copies into the session's parameters.
    Admit(
        Identity,
        OwnedSemaphorePermit,
        Vec<(String, String)>,
        TokenExpiry,
    ),
    Refuse(CloseReason),
}

async fn upgrade<H: Handler>(
    State(endpoint): State<Endpoint<H>>,
    PeerAddr(addr): PeerAddr,
    params: Result<RawPathParams, RawPathParamsRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    mut ws: Upgrade,
) -> Response {
    let found = find_token(&headers, query.as_deref());
    let from_cookie = found.as_ref().is_some_and(|found| {
        matches!(
            found.source,
            TokenSource::AccessTokenCookie | TokenSource::TokenCookie
        )
    });
    if let Some(refusal) = check_origin(&endpoint.inner.origins, &headers, from_cookie) {
        endpoint.inner.hub.count_refused();
        return (StatusCode::FORBIDDEN, refusal).into_response();
    }
    // Browsers drop a connection whose requested subprotocol is not selected, whichever
    // source the token was finally taken from (a cookie wins over the subprotocol).
    if let Some(token) = subprotocol_token(&headers)
        && let Ok(protocol) = HeaderValue::from_str(&format!("{SUBPROTOCOL_PREFIX}{token}"))
    {
        ws.select_protocol(protocol);
    }

    let verdict = admit(&endpoint.inner, found.map(|f| f.token)).await;
    let params: Vec<(String, String)> = params
        .map(|params| {
            params
                .iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        })
        .unwrap_or_default();

    // Past the bound on refusals being closed, a refusal is a plain HTTP answer: no upgrade,
    // no task.
    let refusal_permit = match &verdict {
        Verdict::Refuse(reason) => {
            match endpoint.inner.hub.refusals().clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    endpoint.inner.hub.count_refused();
                    return (refusal_status(reason.code()), reason.reason().to_owned())
                        .into_response();
                }
            }
        }
        Verdict::Admit(..) => None,
    };
    // permessage-deflate, when enabled and offered: only for admitted connections (a refusal
    // sends nothing but its close frame).
    let deflate = match &verdict {
        Verdict::Admit(..) if endpoint.inner.hub.config().compression => {
            let offers = headers.get_all(axum::http::header::SEC_WEBSOCKET_EXTENSIONS);
            deflate::negotiate(offers.iter().map(HeaderValue::as_bytes)).and_then(
                |(deflate, answer)| {
                    let answer = HeaderValue::from_str(&answer).ok()?;
                    ws.select_extensions(answer);
                    Some(deflate)
                },
            )
        }
        _ => None,
    };
    // Tracked from before the answer leaves, so a shutdown waits for this connection too.
    let tracked = endpoint.inner.hub.shutdown().track();
    let (response, on_upgrade) = ws.accept();
    // A refused connection gets a task of its own: its future (the close handshake) is larger
    // than a session's, and as one branch of every connection's task it would set that size.
    match verdict {
        Verdict::Admit(identity, permit, claims, expires_at) => {
            // The token's claims first: `Session::param` takes the first match, and a path
            // segment is the client's to choose, a signed claim is not.
            let mut params = params;
            params.splice(0..0, claims);
            let admitted = Box::new(Admitted {
                identity,
                permit,
                params,
                addr,
                expires_at,
                deflate,
            });
            tokio::spawn(connection(endpoint, on_upgrade, admitted, tracked));
        }
        Verdict::Refuse(reason) => {
            tokio::spawn(refused(
                endpoint,
                on_upgrade,
                reason,
                tracked,
                refusal_permit,
            ));
        }
    }
    response
}

/// What the upgrade request admitted, carried to the connection's task. Boxed until the
/// connection is up, so the task keeps one pointer to it rather than a copy.
struct Admitted {
    identity: Identity,
    permit: OwnedSemaphorePermit,
    params: Vec<(String, String)>,
    /// The client's address, kept by the hub for the connection's life.
    addr: Option<IpAddr>,
    /// When the token expires; the hub closes the connection then (`hub::expiry`).
    expires_at: TokenExpiry,
    /// permessage-deflate, if it was negotiated in the 101.
    deflate: Option<Deflate>,
}

/// The token's `exp`, seconds since the Unix epoch; `None` for a guest, who never expires.
type TokenExpiry = Option<u64>;

/// One connection's task, from the upgraded socket to the end of its session.
///
/// Its future lives as long as the connection, so it is kept small: a plain function returning
/// a block (an `async fn` would keep its arguments twice, rust-lang/rust#62958), the upgrade's
/// result taken apart before the session starts (a `match` on it would keep it, as the
/// scrutinee, beside the session's future), and the session's future built by a plain
/// function ([`start`]) and awaited directly.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
fn connection<H: Handler>(
    endpoint: Endpoint<H>,
    on_upgrade: OnUpgrade,
    admitted: Box<Admitted>,
    tracked: TaskTrackerToken,
) -> impl Future<Output = ()> + Send {
    async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        start(&endpoint.inner, Io::open(upgraded), unbox(admitted)).await;
        // Shutdown waits for this connection until here.
        drop(tracked);
    }
}

/// Moves what was admitted out of its box and frees the box now. (`*admitted` in the task would
/// free it only when the task ends: a moved-out box is deallocated at the end of its scope.)
#[allow(clippy::boxed_local, reason = "unboxing is the point")]
fn unbox(admitted: Box<Admitted>) -> Admitted {
    *admitted
}

/// The future that serves an admitted, upgraded connection.
fn start<'a, H: Handler>(
    inner: &'a EndpointInner<H>,
    opened: Opened,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send + 'a {
    let Opened { io, writer, unread } = opened;
    let Admitted {
        identity,
        permit,
        params,
        addr,
        expires_at,
        deflate,
    } = admitted;
    let hub = &inner.hub;
    let capacity = hub.config().outbound_capacity;
    let outbound = Outbound::with_writer(capacity, hub.now_ms(), inner.dialect, deflate, writer);
    let conn = hub.register(&identity, outbound.clone(), addr, inner.name);
    if let Some(exp) = expires_at {
        hub.expire_at(conn, exp, &inner.auth);
    }
    let guard = ConnGuard::new(hub.clone(), conn, permit);
    let session = Session::new(hub.clone(), conn, identity, outbound, params);
    // No span for the connection's life: see `driver::hook_span`.
    driver::serve(
        driver::Conn::new(io, &unread, &inner.served, deflate),
        session,
        guard,
        &inner.handler,
    )
}

/// The task of a refused connection: once upgraded, it is closed with the verdict's reason.
async fn refused<H: Handler>(
    endpoint: Endpoint<H>,
    on_upgrade: OnUpgrade,
    reason: CloseReason,
    tracked: TaskTrackerToken,
    permit: Option<OwnedSemaphorePermit>,
) {
    match on_upgrade.await {
        Ok(upgraded) => {
            let hub = &endpoint.inner.hub;
            let Opened { io, unread, .. } = Io::open(upgraded);
            let socket = driver::stream(io, hub.config()).with_unread(&unread);
            refuse(socket, hub, reason).await;
        }
        Err(err) => tracing::debug!(error = %err, "upgrade failed"),
    }
    drop(permit);
    drop(tracked);
}

/// The HTTP status of a refusal answered without an upgrade (see
/// [`SessionConfig::max_closing_refusals`](crate::SessionConfig::max_closing_refusals)).
fn refusal_status(code: u16) -> StatusCode {
    match code {
        close_code::UNAUTHORIZED => StatusCode::UNAUTHORIZED,
        close_code::POLICY => StatusCode::FORBIDDEN,
        close_code::ROOM_NOT_FOUND => StatusCode::NOT_FOUND,
        close_code::INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// One sampler per kind of refusal logged here: see [`LogSampler`].
static DRAINING: LogSampler = crate::sampler::refusals();
static AUTH_REFUSED: LogSampler = crate::sampler::refusals();
static FULL: LogSampler = crate::sampler::refusals();

async fn admit<H>(inner: &EndpointInner<H>, token: Option<String>) -> Verdict {
    if inner.hub.is_draining() {
        if let Some(suppressed) = DRAINING.sample() {
            tracing::info!(suppressed, "connection refused: the node is draining");
        }
        return Verdict::Refuse(CloseReason::going_away());
    }
    let authenticated = match (token, inner.admission) {
        (Some(token), _) => inner
            .auth
            .authenticate(&token)
            .await
            .and_then(|(identity, claims)| {
                let params = claim_params(inner, &claims)?;
                Ok((identity, params, Some(claims.exp)))
            }),
        (None, Admission::GuestsAllowed) => Ok((Identity::guest(), Vec::new(), None)),
        (None, Admission::Required) => Err(AuthError::Missing),
    };
    let (identity, claims, expires_at) = match authenticated {
        Ok(authenticated) => authenticated,
        Err(err) => {
            // The reason names the broken rule; the token itself is never logged.
            inner.hub.count_auth_failure(err.kind());
            if let Some(suppressed) = AUTH_REFUSED.sample() {
                tracing::info!(reason = %err, suppressed, "connection refused: authentication");
            }
            return Verdict::Refuse((inner.auth_refusal)(&err));
        }
    };
    match inner.hub.permits().clone().try_acquire_owned() {
        Ok(permit) => Verdict::Admit(identity, permit, claims, expires_at),
        Err(_) => {
            if let Some(suppressed) = FULL.sample() {
                tracing::warn!(
                    max = inner.hub.config().max_connections,
                    suppressed,
                    "connection refused: connection limit reached"
                );
            }
            Verdict::Refuse(CloseReason::new(close_code::TRY_AGAIN_LATER, "server full"))
        }
    }
}

/// The claims the endpoint copies into the session's parameters; every one must be present.
fn claim_params<H>(
    inner: &EndpointInner<H>,
    claims: &Claims,
) -> Result<Vec<(String, String)>, AuthError> {
    inner
        .claim_params
        .iter()
        .map(|name| match claims.claim(name) {
            Some(value) => Ok(((*name).to_owned(), value.to_owned())),
            None => Err(AuthError::Invalid("missing or malformed claim")),
        })
        .collect()
}

async fn refuse(mut socket: WsStream<Io>, hub: &Hub, reason: CloseReason) {
    hub.count_refused();
    let wait = hub.config().write_wait;
    if let Ok(Ok(())) = tokio::time::timeout(wait, socket.write_close(&reason)).await {
        let linger = wait.min(std::time::Duration::from_secs(1));
        let _ = tokio::time::timeout(linger, socket.await_close_reply(true)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Incoming;

    struct Nop;
    impl Handler for Nop {
        async fn on_message(&self, _: &Session, _: Incoming) -> crate::Result<()> {
            Ok(())
        }
    }

    fn future_size<F: Future>(
        _: fn(Endpoint<Nop>, OnUpgrade, Box<Admitted>, TaskTrackerToken) -> F,
    ) -> usize {
        size_of::<F>()
    }

    /// Every idle connection carries its task for its whole life. tokio's task is the future
    /// plus 104 bytes (header 32, scheduler and id 16, stage 8, trailer 48), aligned to 128
    /// bytes, so at 408 bytes the task is 512 and at 409 it is 640: a field or a local kept
    /// across an `.await` in the session loop can cost every connection 128 bytes. This fails
    /// when the future grows past 408; measure with `roomcast-loadgen idle` before raising it.
    #[test]
    fn an_idle_connections_task_stays_within_its_budget() {
        let size = future_size(connection::<Nop>);
        assert!(size <= 408, "the connection's future is {size} bytes");
    }
}
