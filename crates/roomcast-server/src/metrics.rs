//! `GET /metrics`: the Prometheus exposition of the hub, the store writer and the rate limits
//! (`ROOMCAST_METRICS`, `ROOMCAST_METRICS_TOKEN`).
//!
//! One [`Registry`] per server, built at start: the hub's instruments
//! ([`roomcast::Hub::register_metrics`]), the store's ([`roomcast_store::Store::register_metrics`])
//! and the rate limiters' ([`crate::limits::Limits::register_metrics`]). A scrape encodes it
//! in the OpenMetrics text format, which Prometheus reads natively.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Whether `/metrics` is served, and the bearer token it requires.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (`ROOMCAST_METRICS`, default true).
    pub enabled: bool,
    /// When set, a scrape must send `Authorization: Bearer <token>` (`ROOMCAST_METRICS_TOKEN`).
    pub token: Option<String>,
}

/// What the `/metrics` route serves.
pub(crate) struct Exporter {
    registry: Registry,
    token: Option<String>,
}

/// The OpenMetrics text format's media type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Exporter {
    pub(crate) fn new(registry: Registry, token: Option<String>) -> Self {
        Self { registry, token }
    }

    /// The route: `GET /metrics`.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(Arc::new(self))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
    }
}

async fn scrape(State(exporter): State<Arc<Exporter>>, headers: HeaderMap) -> Response {
    if !exporter.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (ROOMCAST_METRICS_TOKEN)",
        )
            .into_response();
    }
    let mut text = String::with_capacity(16 * 1024);
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &exporter.registry) {
        tracing::error!(error = %err, "cannot encode the metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
}

/// Compares two secrets in time that depends only on their lengths: a scraper guessing the
/// token learns nothing from how fast it is refused.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_must_match_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
