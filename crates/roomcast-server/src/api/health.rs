//! `GET /readyz`: whether a load balancer should send this node traffic.
//!
//! `/healthz` (liveness) says the process is up; `/readyz` says it can serve: the store answers
//! a trivial query within [`STORE_TIMEOUT`], and the node is not draining. When the server
//! gains a Redis broker, its ping joins the check here; `roomcast serve` uses no Redis today.
//!
//! ```text
//! GET /readyz ─▶ draining (SIGTERM)?          ─▶ 503 {"status":"draining"}
//!             ─▶ store answers SELECT 1 in 2 s? ─ no ─▶ 503 {"status":"unavailable", …}
//!             ─▶ 200 {"status":"ok"}
//! ```

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use roomcast::LogSampler;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// Longest the store may take to answer a readiness check. Load balancers usually give a
/// probe 1-5 s; an answer slower than this is a store that cannot serve chat either.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `/healthz` and `/readyz`.
///
/// ```
/// let ready = roomcast_server::api::health::Health::ok();
/// assert_eq!(serde_json::to_string(&ready).unwrap(), r#"{"status":"ok"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `draining` (the node is shutting down) or `unavailable`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Why the node is unavailable; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl Health {
    /// `{"status":"ok"}`.
    pub fn ok() -> Self {
        Self {
            status: "ok",
            reason: None,
        }
    }
}

/// Whether this node should get traffic: 200 when the store answers and the node is not
/// draining, 503 otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: the store answers and the node is not draining", body = Health),
        (status = 503, description = "Draining (shutting down) or the store does not answer", body = Health),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    static STORE_DOWN: LogSampler = LogSampler::new(1, Duration::from_secs(60));
    let unavailable = |status, reason| {
        let health = Health { status, reason };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(health))
    };
    if state.hub.is_draining() {
        return unavailable("draining", None);
    }
    let reason = match tokio::time::timeout(STORE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => return (StatusCode::OK, axum::Json(Health::ok())),
        Ok(Err(err)) => {
            // Once a minute: a load balancer polls every few seconds while the store is down.
            if let Some(suppressed) = STORE_DOWN.sample() {
                tracing::warn!(error = %err, suppressed, "not ready: the store does not answer");
            }
            "the store does not answer"
        }
        Err(_) => {
            if let Some(suppressed) = STORE_DOWN.sample() {
                tracing::warn!(timeout = ?STORE_TIMEOUT, suppressed, "not ready: the store is too slow");
            }
            "the store is too slow"
        }
    };
    unavailable("unavailable", Some(reason))
}
