//! Finding and checking the token of an upgrade request: `auth::token::find_token` and
//! `subprotocol_token` on headers and a query string built from the input, then
//! `Authenticator::validate` (HS256) on what they found, and on fuzzed claims signed with the
//! authenticator's own secret, so that the checks after the signature are reached too.
//!
//! Input: lines. The first is the query string (empty: none). Each further line is a selector
//! byte, an optional space, and a value: `c` a `Cookie` header, `a` an `Authorization` header,
//! `p` a `Sec-WebSocket-Protocol` header (values `HeaderValue` refuses are skipped); `h` the
//! JOSE header and `s` the claims (JSON) of a token to sign and validate. Other lines are
//! ignored.
#![no_main]

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use roomcast::Authenticator;
use roomcast::auth::token::{find_token, subprotocol_token};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
static AUTH: LazyLock<Authenticator> = LazyLock::new(|| Authenticator::hs256(SECRET));
static KEY: LazyLock<EncodingKey> = LazyLock::new(|| EncodingKey::from_secret(SECRET));

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let query = lines.next().and_then(|line| std::str::from_utf8(line).ok());
    let query = query.filter(|query| !query.is_empty());
    let mut headers = HeaderMap::new();
    let mut jose: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;
    let mut claims = None;
    for line in lines {
        let [selector, value @ ..] = line else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let name = match selector {
            b'c' => header::COOKIE,
            b'a' => header::AUTHORIZATION,
            b'p' => header::SEC_WEBSOCKET_PROTOCOL,
            b'h' => {
                jose = value;
                continue;
            }
            b's' => {
                claims = Some(value);
                continue;
            }
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }

    if let Some(found) = find_token(&headers, query) {
        assert!(
            !found.token.is_empty(),
            "an empty token was found: {found:?}"
        );
        check(&found.token);
    }
    if let Some(token) = subprotocol_token(&headers) {
        assert!(!token.is_empty(), "an empty subprotocol token was found");
        check(token);
    }
    if let Some(claims) = claims {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(jose),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &KEY, Algorithm::HS256)
            .expect("HMAC signs anything");
        check(&format!("{message}.{signature}"));
    }
});

fn check(token: &str) {
    match AUTH.validate(token) {
        Ok(claims) => {
            assert!(
                !claims.sub.is_empty(),
                "a token with an empty subject passed"
            );
            assert_eq!(claims.token_type.as_deref(), Some("access"));
        }
        Err(err) => drop(err.close_reason()),
    }
}
