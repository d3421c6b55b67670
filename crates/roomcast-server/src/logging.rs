//! Logs: the subscriber `main` installs (`ROOMCAST_LOG_FORMAT`, `RUST_LOG`) and the redaction
//! of tokens wherever a request's URI is logged.
//!
//! What the server logs, and where it comes from:
//!
//! - each connection's hooks run in a `session` span (`conn`, `user`, `endpoint`,
//!   `client_ip`); `connected`, `disconnected` (`code`, `reason`, `duration_ms`), `joined`
//!   and `left` are `info` events (the library's `session/driver.rs` and `hub/`);
//! - refusals say why (`connection refused: authentication`, `… origin not allowed`, rate
//!   limits), each kind sampled by a [`roomcast::LogSampler`] so a client retrying in a loop
//!   writes a line per interval, the next carrying `suppressed`;
//! - at `debug`, every HTTP request: method, URI with its token parameters redacted
//!   ([`redact_query`]), status and duration ([`log_requests`]).
//!
//! Tokens are never logged: the route keeps them out of its events, header values
//! (`Authorization`, `Cookie`, `Sec-WebSocket-Protocol`) are never logged, and a URI is only
//! ever logged through [`redact_uri`].
//!
//! `json` writes one object per line with the event's fields at the top level and the
//! connection's span under `span`, through `tracing-subscriber`'s `json` feature (it adds only
//! `tracing-serde`; serde and serde_json are dependencies already).

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`ROOMCAST_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, spans, message, fields.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the process's log subscriber: `RUST_LOG` filters (default `info`), `format` shapes
/// the lines, and they go to stderr.
///
/// ```no_run
/// roomcast_server::logging::init(roomcast_server::logging::LogFormat::Json)
///     .expect("no subscriber installed yet");
/// tracing::info!(port = 8080, "listening");
/// // {"timestamp":"…","level":"INFO","message":"listening","port":8080,"target":"…"}
/// ```
///
/// # Errors
///
/// When a global subscriber is installed already.
pub fn init(format: LogFormat) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.finish().try_init(),
        LogFormat::Json => builder
            .json()
            // The event's fields beside `message`, not under `fields`; the innermost span (a
            // connection's, with its id, user, endpoint and IP) under `span`, without the
            // list of every enclosing span, which repeats it.
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .try_init(),
    }
}

/// The query parameters whose values are secrets. `token` is where browsers put an access
/// token (a WebSocket cannot carry an `Authorization` header), `access_token` the OAuth name
/// for the same, `refresh_token` the one that mints the others.
const SECRET_PARAMS: [&str; 3] = ["token", "access_token", "refresh_token"];

/// What a redacted value is replaced with.
const REDACTED: &str = "[redacted]";

/// `query` (the part of a URI after `?`) with the values of `token`, `access_token` and
/// `refresh_token`, and any value shaped like a JWT, replaced by `[redacted]`. Parameter names
/// match case-insensitively and percent-encoded; everything else is kept as it was. Borrows
/// when there is nothing to redact.
///
/// ```
/// use roomcast_server::logging::redact_query;
/// assert_eq!(redact_query("room=lobby&token=eyJh.eyJz.sig"), "room=lobby&token=[redacted]");
/// assert_eq!(redact_query("since=4"), "since=4");
/// ```
pub fn redact_query(query: &str) -> Cow<'_, str> {
    if !query.split('&').any(is_secret) {
        return Cow::Borrowed(query);
    }
    let redacted: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            if is_secret(pair) {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                Cow::Owned(format!("{name}={REDACTED}"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    Cow::Owned(redacted.join("&"))
}

/// `uri`'s path and query, the query through [`redact_query`]: the only form in which the
/// server logs a request's URI.
///
/// ```
/// let uri: axum::http::Uri = "/ws/lobby?access_token=abc".parse().unwrap();
/// assert_eq!(roomcast_server::logging::redact_uri(&uri), "/ws/lobby?access_token=[redacted]");
/// ```
pub fn redact_uri(uri: &Uri) -> String {
    match uri.query() {
        Some(query) => format!("{}?{}", uri.path(), redact_query(query)),
        None => uri.path().to_owned(),
    }
}

/// Whether a `name=value` pair of a query carries a secret.
fn is_secret(pair: &str) -> bool {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let name = percent_decode(name);
    SECRET_PARAMS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
        || looks_like_jwt(value)
}

/// A compact JWT: `eyJ` (base64 of `{"`) and two dots, whatever the parameter's name.
fn looks_like_jwt(value: &str) -> bool {
    let value = percent_decode(value);
    value.starts_with("eyJ") && value.matches('.').count() == 2
}

/// `%XX` sequences decoded (invalid ones kept as they are), `+` left alone: enough to compare
/// a parameter's name, not a general decoder.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits make a byte: `high * 16 + low` is at most 255.
            out.push(u8::try_from(high * 16 + low).expect("two hex digits fit a byte"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Middleware: at `debug`, each request in an `http` span (method, redacted URI) and a
/// `request` event with its status and duration. Costs one level check when `debug` is off.
/// Headers are never logged: `Authorization` and `Cookie` carry tokens.
///
/// ```
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hi" }))
///     .layer(axum::middleware::from_fn(roomcast_server::logging::log_requests));
/// ```
pub async fn log_requests(request: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let span = tracing::debug_span!(
        "http",
        method = %request.method(),
        uri = %redact_uri(request.uri()),
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| tracing::debug!(status, elapsed_ms, "request"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_parameter_is_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_query("room=a&token=abc&since=3&access_token=def&refresh_token=ghi"),
            "room=a&token=[redacted]&since=3&access_token=[redacted]&refresh_token=[redacted]"
        );
        assert_eq!(redact_query("token="), "token=[redacted]");
        assert_eq!(redact_query("token"), "token=[redacted]");
        assert_eq!(redact_query("tokens=1&my_token=2"), "tokens=1&my_token=2");
    }

    #[test]
    fn names_match_whatever_their_case_or_encoding() {
        assert_eq!(redact_query("TOKEN=abc"), "TOKEN=[redacted]");
        assert_eq!(redact_query("%74oken=abc"), "%74oken=[redacted]");
        assert_eq!(
            redact_query("access%5Ftoken=abc%2Edef"),
            "access%5Ftoken=[redacted]"
        );
    }

    #[test]
    fn an_encoded_value_is_redacted_whole() {
        let query = "token=eyJhbGciOiJIUzI1NiJ9%2EeyJzdWIiOiJhIn0%2Esig%3D%3D&x=1";
        assert_eq!(redact_query(query), "token=[redacted]&x=1");
    }

    #[test]
    fn a_jwt_under_another_name_is_redacted_too() {
        assert_eq!(
            redact_query("jwt=eyJhbGci.eyJzdWIi.c2ln&room=a"),
            "jwt=[redacted]&room=a"
        );
        assert_eq!(redact_query("q=eyJ%2Ea%2Eb"), "q=[redacted]");
        assert_eq!(redact_query("q=eyJ"), "q=eyJ", "not a JWT");
    }

    #[test]
    fn nothing_to_redact_borrows() {
        assert!(matches!(redact_query("room=a&since=1"), Cow::Borrowed(_)));
        assert!(matches!(redact_query(""), Cow::Borrowed(_)));
    }

    /// A writer into a shared buffer, to read what was logged.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_logged_request_shows_no_token_header_or_cookie() {
        use tower::ServiceExt as _;
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = axum::Router::new()
            .route("/me", axum::routing::get(|| async { "hi" }))
            .layer(axum::middleware::from_fn(log_requests));
        let request = axum::http::Request::get("/me?token=SECRET-1&room=a")
            .header("Authorization", "Bearer SECRET-2")
            .header("Cookie", "access_token=SECRET-3")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains(r#""status":200"#), "{logged}");
        assert!(logged.contains("/me?token=[redacted]&room=a"), "{logged}");
        assert!(!logged.contains("SECRET"), "{logged}");
    }

    #[test]
    fn a_uri_keeps_its_path() {
        let uri: Uri = "/ws/chat?token=secret&room=a".parse().unwrap();
        assert_eq!(redact_uri(&uri), "/ws/chat?token=[redacted]&room=a");
        let uri: Uri = "/healthz".parse().unwrap();
        assert_eq!(redact_uri(&uri), "/healthz");
    }
}
