//! Which browser origins may open a connection, and the cross-site rule for cookie tokens: the
//! checks `route` makes on an upgrade request before anything else (a refusal is HTTP 403).

use crate::LogSampler;
use axum::http::{HeaderMap, header};

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

/// Why a browser request's origin is refused (`None`: it is not). A request without `Origin`
/// is not a browser's and passes. A token from a cookie needs an origin the list names, or,
/// with any origin allowed, the server's own.
pub(crate) fn check_origin(
    origins: &AllowedOrigins,
    headers: &HeaderMap,
    from_cookie: bool,
) -> Option<&'static str> {
    let origin = headers.get(header::ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some("origin not allowed");
    };
    // Sampled: a page on another site can make its visitors' browsers retry in a loop.
    static REFUSED: LogSampler = crate::sampler::refusals();
    static CROSS_SITE: LogSampler = crate::sampler::refusals();
    if !origins.allows(origin) {
        if let Some(suppressed) = REFUSED.sample() {
            tracing::info!(origin, suppressed, "connection refused: origin not allowed");
        }
        return Some("origin not allowed");
    }
    if from_cookie && *origins == AllowedOrigins::Any && !same_origin(origin, headers) {
        if let Some(suppressed) = CROSS_SITE.sample() {
            tracing::info!(origin, suppressed, "connection refused: cross-site cookie");
        }
        return Some("a cookie token is accepted only from the same origin");
    }
    None
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    // Default ports are left out by browsers in `Origin` and by most clients in `Host`.
    let default = match scheme {
        "https" | "wss" => ":443",
        _ => ":80",
    };
    let strip = |value: &str| value.trim_end_matches(default).to_ascii_lowercase();
    strip(origin_host) == strip(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin.parse().unwrap());
        headers.insert(header::HOST, host.parse().unwrap());
        headers
    }

    #[test]
    fn a_cookie_token_is_taken_only_from_the_same_origin_when_any_origin_is_allowed() {
        let any = AllowedOrigins::Any;
        let same = headers("http://chat.example:8080", "chat.example:8080");
        let foreign = headers("https://evil.example", "chat.example:8080");
        assert_eq!(check_origin(&any, &same, true), None);
        assert!(check_origin(&any, &foreign, true).is_some());
        assert_eq!(check_origin(&any, &foreign, false), None, "not a cookie");
        assert_eq!(
            check_origin(&any, &HeaderMap::new(), true),
            None,
            "not a browser"
        );
        let https = headers("https://Chat.Example", "chat.example:443");
        assert_eq!(
            check_origin(&any, &https, true),
            None,
            "default port, any case"
        );
        let listed = AllowedOrigins::parse("https://evil.example");
        assert_eq!(
            check_origin(&listed, &foreign, true),
            None,
            "listed: trusted"
        );
        assert!(check_origin(&listed, &same, false).is_some(), "not listed");
    }
}
