//! The HTTP/1.1 upgrade handshake (RFC 6455 §4.2): check the request, answer 101 with
//! `Sec-WebSocket-Accept`, and hand over the upgraded connection.
//!
//! The checks are the ones axum's `WebSocketUpgrade` makes, with the same status codes: a
//! request that is not a WebSocket upgrade gets a 4xx with a one-line reason and never reaches
//! authentication.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;

pub(crate) use super::socket::Io;

/// A valid upgrade request, waiting for its answer.
pub(crate) struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
    protocol: Option<HeaderValue>,
    /// The accepted extension (permessage-deflate's parameters), if any.
    extensions: Option<HeaderValue>,
}

/// Why a request is not a WebSocket upgrade: a status and a one-line reason.
#[derive(Debug)]
pub(crate) struct Rejected(StatusCode, &'static str);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejected> {
        use StatusCode as Status;
        if parts.method != Method::GET {
            return Err(Rejected(
                Status::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET request",
            ));
        }
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(Rejected(
                Status::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(Rejected(
                Status::BAD_REQUEST,
                "Upgrade header did not include 'websocket'",
            ));
        }
        if !has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(Rejected(
                Status::UPGRADE_REQUIRED,
                "Sec-WebSocket-Version must be 13",
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(Rejected(
                Status::BAD_REQUEST,
                "Sec-WebSocket-Key header missing",
            ));
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).expect("base64 is a valid header value");
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(Rejected(
                Status::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Self {
            accept,
            on_upgrade,
            protocol: None,
            extensions: None,
        })
    }
}

impl Upgrade {
    /// Selects `protocol` in the answer's `Sec-WebSocket-Protocol`.
    pub(crate) fn select_protocol(&mut self, protocol: HeaderValue) {
        self.protocol = Some(protocol);
    }

    /// Answers with `extensions` in `Sec-WebSocket-Extensions`: the extensions accepted.
    pub(crate) fn select_extensions(&mut self, extensions: HeaderValue) {
        self.extensions = Some(extensions);
    }

    /// The 101 answer, and the future that yields the connection once it has been sent.
    pub(crate) fn accept(self) -> (Response, OnUpgrade) {
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(protocol) = self.protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        if let Some(extensions) = self.extensions {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        (response, self.on_upgrade)
    }
}

/// Whether the comma-separated header `name` lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn header_tokens_are_matched_in_lists_and_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!has_token(&headers, header::CONNECTION, "close"));
        assert!(!has_token(&headers, header::UPGRADE, "websocket"));
    }
}
