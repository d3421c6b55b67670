//! Finding the token in an upgrade request.
//!
//! Looked up in this order: `?token=`, the `access_token` cookie, the `token` cookie,
//! `Authorization: Bearer <jwt>`, and `Sec-WebSocket-Protocol: token.<jwt>`. When the token came
//! in the subprotocol header, the server must select that subprotocol in its answer, or browsers
//! drop the connection; [`FoundToken::source`] tells the route to do so.

use axum::http::{HeaderMap, header};

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `token` query parameter.
    Query,
    /// The `access_token` cookie.
    AccessTokenCookie,
    /// The `token` cookie.
    TokenCookie,
    /// `Authorization: Bearer <jwt>`.
    Bearer,
    /// `Sec-WebSocket-Protocol: token.<jwt>`.
    Subprotocol,
}

/// A token and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The raw JWT.
    pub token: String,
    /// Where it was found.
    pub source: TokenSource,
}

/// Prefix of a token carried as a WebSocket subprotocol.
pub const SUBPROTOCOL_PREFIX: &str = "token.";

/// Finds the token in the request's query string and headers. Empty values are ignored.
///
/// ```
/// use axum::http::HeaderMap;
/// use roomcast::auth::token::{find_token, TokenSource};
/// let found = find_token(&HeaderMap::new(), Some("room=a&token=abc.def.ghi")).unwrap();
/// assert_eq!(found.token, "abc.def.ghi");
/// assert_eq!(found.source, TokenSource::Query);
/// ```
pub fn find_token(headers: &HeaderMap, query: Option<&str>) -> Option<FoundToken> {
    let found = |token: String, source| Some(FoundToken { token, source });
    if let Some(query) = query {
        let token = form_urlencoded::parse(query.as_bytes())
            .find(|(key, value)| key == "token" && !value.is_empty());
        if let Some((_, token)) = token {
            return found(token.into_owned(), TokenSource::Query);
        }
    }
    for (name, source) in [
        ("access_token", TokenSource::AccessTokenCookie),
        ("token", TokenSource::TokenCookie),
    ] {
        if let Some(token) = cookie(headers, name) {
            return found(token.to_owned(), source);
        }
    }
    for value in headers.get_all(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        if let Some((scheme, token)) = value.trim().split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return found(token.trim().to_owned(), TokenSource::Bearer);
        }
    }
    subprotocol_token(headers).and_then(|token| found(token.to_owned(), TokenSource::Subprotocol))
}

/// The `token.<jwt>` entry of `Sec-WebSocket-Protocol`, without its prefix.
pub fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|protocol| protocol.trim().strip_prefix(SUBPROTOCOL_PREFIX))
        .find(|token| !token.is_empty())
}

/// The value of cookie `name`, from any `Cookie` header. A cookie line is `a=1; b=2`
/// (RFC 6265 §4.2.1); values may be quoted.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        // Empty once unquoted (`token=""`, `token="`): ignored like `token=`.
        .find(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn every_location_is_found() {
        let cases = [
            (
                headers(&[]),
                Some("token=q.q.q"),
                "q.q.q",
                TokenSource::Query,
            ),
            (
                headers(&[(header::COOKIE, "a=1; access_token=c.c.c")]),
                None,
                "c.c.c",
                TokenSource::AccessTokenCookie,
            ),
            (
                headers(&[(header::COOKIE, "token=\"t.t.t\"; other=x")]),
                None,
                "t.t.t",
                TokenSource::TokenCookie,
            ),
            (
                headers(&[(header::AUTHORIZATION, "Bearer b.b.b")]),
                None,
                "b.b.b",
                TokenSource::Bearer,
            ),
            (
                headers(&[(header::AUTHORIZATION, "bearer   b.b.b ")]),
                None,
                "b.b.b",
                TokenSource::Bearer,
            ),
            (
                headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "chat, token.s.s.s")]),
                None,
                "s.s.s",
                TokenSource::Subprotocol,
            ),
        ];
        for (map, query, token, source) in cases {
            let found = find_token(&map, query).unwrap();
            assert_eq!((found.token.as_str(), found.source), (token, source));
        }
    }

    #[test]
    fn query_wins_and_is_percent_decoded() {
        let map = headers(&[(header::AUTHORIZATION, "Bearer b.b.b")]);
        let found = find_token(&map, Some("x=1&token=a%2Eb.c")).unwrap();
        assert_eq!(found.token, "a.b.c");
    }

    #[test]
    fn empty_and_foreign_values_are_ignored() {
        let map = headers(&[
            (header::COOKIE, "token=; access_token="),
            (header::AUTHORIZATION, "Basic dXNlcjpwYXNz"),
            (header::SEC_WEBSOCKET_PROTOCOL, "chat, token."),
        ]);
        assert_eq!(find_token(&map, Some("token=")), None);
    }

    /// Found by the `token_extraction` fuzz target (its minimized input: a `Cookie: token="`
    /// line): a quoted empty cookie was found as an empty token, which shadowed a token in a
    /// later place.
    #[test]
    fn quoted_empty_cookies_are_ignored() {
        let map = headers(&[(header::COOKIE, "token=\"")]);
        assert_eq!(find_token(&map, None), None);
        let map = headers(&[
            (header::COOKIE, "access_token=\"\"; token=\"\""),
            (header::AUTHORIZATION, "Bearer b.b.b"),
        ]);
        let found = find_token(&map, None).unwrap();
        assert_eq!(
            (found.token.as_str(), found.source),
            ("b.b.b", TokenSource::Bearer)
        );
    }
}
