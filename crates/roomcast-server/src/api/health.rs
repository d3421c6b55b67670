//! `GET /readyz`: whether a load balancer should send this node traffic.
//!
//! `/healthz` (liveness) says the process is up; `/readyz` says it can serve: the store answers
//! a trivial query within [`STORE_TIMEOUT`], the node is not draining, and, on a node of several
//! (`REDIS_URL`), its Redis subscription is up (without it, other nodes' events do not reach
//! this node's clients: degraded, so a load balancer sends new clients elsewhere).
//!
//! ```text
//! GET /readyz ─▶ draining (SIGTERM)?          ─▶ 503 {"status":"draining"}
//!             ─▶ Redis subscription down?       ─▶ 503 {"status":"degraded", …}
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
    /// `ok`, `draining` (the node is shutting down), `degraded` (Redis is away) or
    /// `unavailable` (the store does not answer).
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
        (status = 503, description = "Draining (shutting down), Redis away, or the store does not answer", body = Health),
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
    if state
        .redis
        .as_ref()
        .is_some_and(|up| !up.load(std::sync::atomic::Ordering::Relaxed))
    {
        return unavailable(
            "degraded",
            Some("Redis is away: other nodes' events do not arrive"),
        );
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
