//! The chat page at `/`, embedded in the binary so that running the server needs no npm and no
//! files beside it.
//!
//! `assets/` is build output of `clients/ts` (`npm run build:web`), committed; CI rebuilds it
//! and fails when the committed copy is stale. Three files, three routes: `/` (`index.html`),
//! `/assets/app.js`, `/assets/app.css`. The page talks to the server only through its public
//! endpoints (`/auth/*`, `/rooms`, `/ws/auth`), like any other front end.
//!
//! Caching: each response carries a strong `ETag` (a hash of the embedded bytes) and
//! `Cache-Control: no-cache`, so a browser revalidates on every load and gets a 304 until the
//! binary changes: no stale page after an upgrade, and no fingerprinted file names to keep in
//! step between the build and the router.
//!
//! Headers: a `Content-Security-Policy` that lets the page run only its own script and style
//! and connect only to its own origin (the API and the WebSocket), `nosniff`, no referrer, and
//! no framing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `'self'` in `connect-src` covers `ws:`/`wss:` to the same host (CSP Level 3), which is all
/// the page opens. Styles set through the CSSOM (the avatars' hue) need no `'unsafe-inline'`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    /// `"<hash>"`, computed once from `bytes`.
    etag: LazyLock<HeaderValue>,
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {
        Asset {
            bytes: include_bytes!(concat!("assets/", $file)),
            content_type: $content_type,
            etag: LazyLock::new(|| etag(include_bytes!(concat!("assets/", $file)))),
        }
    };
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static SCRIPT: Asset = asset!("app.js", "text/javascript; charset=utf-8");
static STYLE: Asset = asset!("app.css", "text/css; charset=utf-8");

fn etag(bytes: &[u8]) -> HeaderValue {
    // Not a security boundary: any hash that changes with the bytes will do. `DefaultHasher::new`
    // has fixed keys, so the tag is the same across restarts of one binary.
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
        .expect("a quoted hex string is a valid header value")
}

/// The page's routes: `/`, `/assets/app.js`, `/assets/app.css`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { serve(&INDEX, &headers) }),
        )
        .route(
            "/assets/app.js",
            get(|headers: HeaderMap| async move { serve(&SCRIPT, &headers) }),
        )
        .route(
            "/assets/app.css",
            get(|headers: HeaderMap| async move { serve(&STYLE, &headers) }),
        )
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = &*asset.etag;
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let headers = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&HeaderValue>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).expect("a valid request"))
            .await
            .expect("the router is infallible")
    }

    #[tokio::test]
    async fn root_serves_the_chat_page_as_html_that_loads_its_own_script() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let html = String::from_utf8(body.to_vec()).expect("UTF-8");
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.contains(r#"src="/assets/app.js""#), "{html}");
        assert!(html.contains(r#"href="/assets/app.css""#), "{html}");
    }

    #[tokio::test]
    async fn assets_have_their_content_types_and_revalidate_with_their_etag() {
        for (path, content_type) in [
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/app.css", "text/css; charset=utf-8"),
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
            let tag = response.headers()[header::ETAG].clone();
            let again = get(path, Some(&tag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        }
    }
}
