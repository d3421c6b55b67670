//! Minting tokens: [`TokenIssuer`] signs access and refresh tokens for the accounts API, and
//! `roomcast token --sub alice --username Alice --ttl 1h` prints one from the command line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Signs tokens with the server's key, with the claims roomcast's [`roomcast::Authenticator`]
/// checks: `sub`, `username`, `type` (`access`, `refresh` or seed 003's `room`), `iat`, `exp`, and `iss` / `aud`
/// when configured. Refresh tokens also carry a `jti`, the handle the store rotates.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
    /// Lifetime of access tokens (`ROOMCAST_ACCESS_TOKEN_TTL`, default 15 min).
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens (`ROOMCAST_REFRESH_TOKEN_TTL`, default 30 days).
    pub refresh_ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("algorithm", &self.algorithm)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An HS256 issuer with `secret`, 15 min access tokens and 30 day refresh tokens.
    ///
    /// ```
    /// let issuer = roomcast_server::token::TokenIssuer::hs256(b"a secret of at least 32 bytes, please!");
    /// let token = issuer.access("alice", "Alice");
    /// let auth = roomcast::Authenticator::hs256(b"a secret of at least 32 bytes, please!");
    /// assert_eq!(auth.validate(&token).unwrap().sub, "alice");
    /// ```
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(EncodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// An issuer with any key and algorithm (RS256 / ES256 private keys).
    pub fn new(key: EncodingKey, algorithm: Algorithm) -> Self {
        Self {
            key,
            algorithm,
            issuer: None,
            audience: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }

    /// Adds `iss` to every token.
    #[must_use]
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Adds `aud` to every token.
    #[must_use]
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// An access token for `sub`, valid for `access_ttl`.
    pub fn access(&self, sub: &str, username: &str) -> String {
        self.sign(access_claims(sub, username, self.access_ttl))
    }

    /// An access token valid for `ttl` with extra claims merged in.
    pub fn access_with(
        &self,
        sub: &str,
        username: &str,
        ttl: Duration,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let mut claims = access_claims(sub, username, ttl);
        if let Some(object) = claims.as_object_mut() {
            object.extend(extra);
        }
        self.sign(claims)
    }

    /// A seed 003 room token: claims `client_id` (also `sub`), `room_id`, `name` and
    /// `"type": "room"`, valid for `ttl`. It opens `/ws/chat` for that room and nothing else;
    /// access tokens do not open `/ws/chat`.
    ///
    /// ```
    /// let secret = b"a secret of at least 32 bytes, please!";
    /// let issuer = roomcast_server::token::TokenIssuer::hs256(secret);
    /// let token = issuer.room("c0ffee", "K7PQ2XHM", "Ann", std::time::Duration::from_secs(60));
    /// let access = roomcast::Authenticator::hs256(secret);
    /// assert!(access.validate(&token).is_err(), "not an access token");
    /// let rooms = access.token_type("room");
    /// assert_eq!(rooms.validate(&token).unwrap().claim("room_id"), Some("K7PQ2XHM"));
    /// ```
    pub fn room(&self, client_id: &str, room_id: &str, name: &str, ttl: Duration) -> String {
        let mut claims = access_claims(client_id, name, ttl);
        if let Some(object) = claims.as_object_mut() {
            object.remove("username");
            object.insert("type".into(), json!("room"));
            object.insert("client_id".into(), json!(client_id));
            object.insert("room_id".into(), json!(room_id));
            object.insert("name".into(), json!(name));
        }
        self.sign(claims)
    }

    /// A refresh token for `sub` with id `jti`, valid for `refresh_ttl`. Returns the token and
    /// its expiry (seconds since the epoch).
    pub fn refresh(&self, sub: &str, username: &str, jti: &str) -> (String, u64) {
        let mut claims = access_claims(sub, username, self.refresh_ttl);
        claims["type"] = json!("refresh");
        claims["jti"] = json!(jti);
        let exp = claims["exp"].as_u64().unwrap_or_default();
        (self.sign(claims), exp)
    }

    fn sign(&self, mut claims: serde_json::Value) -> String {
        if let Some(issuer) = &self.issuer {
            claims["iss"] = json!(issuer);
        }
        if let Some(audience) = &self.audience {
            claims["aud"] = json!(audience);
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .expect("claims are a JSON object and the key matches its algorithm")
    }
}

/// The claims of an access token for `sub` valid for `ttl`.
///
/// ```
/// let claims = roomcast_server::token::access_claims("alice", "Alice", std::time::Duration::from_secs(60));
/// assert_eq!(claims["type"], "access");
/// assert_eq!(claims["sub"], "alice");
/// ```
pub fn access_claims(sub: &str, username: &str, ttl: Duration) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    json!({
        "sub": sub,
        "username": username,
        "type": "access",
        "iat": now,
        "exp": now + ttl.as_secs(),
    })
}
