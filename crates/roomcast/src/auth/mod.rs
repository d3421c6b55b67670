//! Authentication: who is this connection?
//!
//! [`Authenticator`] holds the JWT rules (pinned algorithm, key, leeway, optional issuer and
//! audience, the token kind: `type == "access"` unless set otherwise) and a [`UserDirectory`] that says whether the token's user
//! exists (the seed's `AuthManager`). [`token::find_token`] finds the token in an upgrade
//! request. The route calls both before it upgrades; nothing here touches sockets.

pub mod token;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::frame::{CloseReason, close_code};
use crate::ids::UserId;

/// A boxed future, as object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a connection could not be authenticated. Every variant but [`AuthError::Directory`]
/// closes with 4001; the close reason is short and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in the query, cookies, `Authorization` header or subprotocol.
    #[error("token required")]
    Missing,
    /// The token's `exp` has passed (beyond the leeway). The client should refresh it.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's claim `type` is not the kind this authenticator takes: a refresh token or a
    /// room token where an access token is needed, or the other way round.
    #[error("wrong token type")]
    WrongType,
    /// The signature, algorithm, issuer, audience or format is wrong.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token is valid but its user does not exist (deleted, or never registered).
    #[error("unknown user")]
    UnknownUser,
    /// The user directory could not answer; closes with 1011, the client may retry.
    #[error("user directory unavailable: {0}")]
    Directory(String),
}

impl AuthError {
    /// A short fixed name of the broken rule: the `reason` label of
    /// `roomcast_auth_failures_total`, and what logs say.
    ///
    /// ```
    /// assert_eq!(roomcast::AuthError::Expired.kind(), "expired");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongType => "wrong_type",
            Self::Invalid(_) => "invalid",
            Self::UnknownUser => "unknown_user",
            Self::Directory(_) => "directory",
        }
    }

    /// The close code and reason sent to the client.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            Self::Directory(_) => {
                CloseReason::new(close_code::INTERNAL, "authentication unavailable")
            }
            Self::Missing => CloseReason::new(close_code::UNAUTHORIZED, "token required"),
            Self::Expired => CloseReason::new(close_code::UNAUTHORIZED, "token expired"),
            Self::NotYetValid => CloseReason::new(close_code::UNAUTHORIZED, "token not yet valid"),
            Self::WrongType => CloseReason::new(close_code::UNAUTHORIZED, "wrong token type"),
            Self::Invalid(_) => CloseReason::new(close_code::UNAUTHORIZED, "invalid token"),
            Self::UnknownUser => CloseReason::new(close_code::UNAUTHORIZED, "unknown user"),
        }
    }
}

/// The claims roomcast reads. Other claims are kept in `extra`.
///
/// `sub` is the user id; the display name comes from `username`, else `name`, else `sub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A display name, used when `username` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The token's kind: `"access"` for connections and the HTTP API, `"refresh"`, or `"room"`
    /// (seed 003's room tokens); an [`Authenticator`] takes one kind.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Every other claim (`iss`, `aud`, `iat`, application claims such as `room_id`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// The display name: `username`, else `name`, else `sub`.
    pub fn display_name(&self) -> &str {
        self.username
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or(&self.sub)
    }

    /// The string claim `name`, whether roomcast reads it (`sub`, `username`, `name`, `type`)
    /// or not (`extra`). `None` when it is absent or not a string.
    ///
    /// ```
    /// let claims: roomcast::Claims = serde_json::from_value(serde_json::json!({
    ///     "sub": "c1", "name": "Ann", "room_id": "K7PQ2XHM", "exp": 0, "n": 1
    /// })).unwrap();
    /// assert_eq!(claims.claim("room_id"), Some("K7PQ2XHM"));
    /// assert_eq!(claims.claim("name"), Some("Ann"));
    /// assert_eq!(claims.claim("n"), None);
    /// ```
    pub fn claim(&self, name: &str) -> Option<&str> {
        match name {
            "sub" => Some(&self.sub),
            "username" => self.username.as_deref(),
            "name" => self.name.as_deref(),
            "type" => self.token_type.as_deref(),
            other => self.extra.get(other).and_then(serde_json::Value::as_str),
        }
    }
}

/// An authenticated (or guest) connection's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user_id: UserId,
    /// The display name.
    pub username: Arc<str>,
    /// Whether this is an unauthenticated guest.
    pub guest: bool,
}

impl Identity {
    /// A guest with a generated id (`guest-` and 8 hex digits) and the same name.
    pub fn guest() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("guest-{}", &id[..8]);
        Self {
            username: id.as_str().into(),
            user_id: id.into(),
            guest: true,
        }
    }
}

/// Decides whether a token's user exists: the seed's `AuthManager`.
///
/// ```
/// use roomcast::auth::{BoxFuture, UserDirectory, AuthError};
/// use roomcast::UserId;
///
/// /// Only these users may connect.
/// struct Allowed(Vec<String>);
/// impl UserDirectory for Allowed {
///     fn exists<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, AuthError>> {
///         Box::pin(async move { Ok(self.0.iter().any(|u| u == user.as_str())) })
///     }
/// }
/// ```
pub trait UserDirectory: Send + Sync + 'static {
    /// Whether `user` exists.
    ///
    /// # Errors
    ///
    /// [`AuthError::Directory`] when the directory cannot answer (database down).
    fn exists<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// The default directory: every user named by a valid token exists. Right when the tokens come
/// from an identity provider roomcast trusts and has no user table of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustTokens;

impl UserDirectory for TrustTokens {
    fn exists<'a>(&'a self, _user: &'a UserId) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async { Ok(true) })
    }
}

/// JWT rules plus a user directory. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use roomcast::Authenticator;
/// let auth = Authenticator::hs256(b"a secret of at least 32 bytes, please!")
///     .leeway(Duration::from_secs(5))
///     .issuer("https://id.example.com");
/// ```
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthInner>,
}

#[derive(Clone)]
struct AuthInner {
    key: DecodingKey,
    validation: Validation,
    directory: Arc<dyn UserDirectory>,
    /// The claim `type` a token must carry: `"access"` unless [`Authenticator::token_type`].
    token_type: &'static str,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.inner.validation.algorithms)
            .field("leeway", &self.inner.validation.leeway)
            .finish_non_exhaustive()
    }
}

/// A key file that could not be read as PEM.
#[derive(Debug, thiserror::Error)]
#[error("not a valid {algorithm} public key in PEM format: {source}")]
pub struct KeyError {
    algorithm: &'static str,
    source: jsonwebtoken::errors::Error,
}

impl Authenticator {
    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        // Only the one configured algorithm is accepted: `alg: none` and algorithm confusion
        // (an HS256 token signed with an RSA public key as secret) are refused by construction.
        let mut validation = Validation::new(algorithm);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        Self {
            inner: Arc::new(AuthInner {
                key,
                validation,
                directory: Arc::new(TrustTokens),
                token_type: "access",
            }),
        }
    }

    /// HS256 with a shared secret (the default). Default leeway 30 s, no issuer or audience check.
    /// Use a secret of at least 32 random bytes (RFC 7518 §3.2); `roomcast serve` refuses a
    /// shorter one.
    ///
    /// # Panics
    ///
    /// When `secret` is empty: every token signed with an empty key would be accepted by
    /// anyone who guessed so.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        assert!(
            !secret.is_empty(),
            "Authenticator::hs256: the secret is empty"
        );
        Self::with_key(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 with an RSA public key in PEM format.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the PEM is not an RSA public key.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|source| KeyError {
            algorithm: "RS256",
            source,
        })?;
        Ok(Self::with_key(key, Algorithm::RS256))
    }

    /// ES256 with a P-256 public key in PEM format.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the PEM is not an EC public key.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_ec_pem(pem).map_err(|source| KeyError {
            algorithm: "ES256",
            source,
        })?;
        Ok(Self::with_key(key, Algorithm::ES256))
    }

    /// Changes this handle's rules; clones sharing the old rules keep them (copy on write).
    fn edit(mut self, change: impl FnOnce(&mut AuthInner)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (rounded down to seconds). Default 30 s.
    pub fn leeway(self, leeway: Duration) -> Self {
        self.edit(|inner| inner.validation.leeway = leeway.as_secs())
    }

    /// The leeway in seconds: how long past `exp` a connection is kept open (`hub::expiry`).
    pub(crate) fn leeway_secs(&self) -> u64 {
        self.inner.validation.leeway
    }

    /// Requires `iss` to equal `issuer`.
    pub fn issuer(self, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        self.edit(|inner| inner.validation.set_issuer(&[issuer]))
    }

    /// Requires `aud` to contain `audience`.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        self.edit(|inner| {
            inner.validation.set_audience(&[audience]);
            inner.validation.validate_aud = true;
        })
    }

    /// The kind of token this authenticator takes: the claim `type` every token must carry.
    /// Default `"access"`. An endpoint for seed 003's room tokens takes `"room"`, so that a room
    /// token opens nothing else and an access token does not open it.
    ///
    /// ```
    /// let rooms = roomcast::Authenticator::hs256(b"a secret of at least 32 bytes, please!")
    ///     .token_type("room");
    /// ```
    pub fn token_type(self, token_type: &'static str) -> Self {
        self.edit(|inner| inner.token_type = token_type)
    }

    /// The directory that decides whether a token's user exists. Default [`TrustTokens`].
    pub fn directory(self, directory: impl UserDirectory) -> Self {
        self.edit(|inner| inner.directory = Arc::new(directory))
    }

    /// Checks the token's signature, algorithm, time window, issuer, audience and `type` (see
    /// [`Authenticator::token_type`]).
    ///
    /// # Errors
    ///
    /// The [`AuthError`] that says which rule the token broke.
    pub fn validate(&self, token: &str) -> Result<Claims, AuthError> {
        self.validate_as(token, self.inner.token_type)
    }

    /// [`Authenticator::validate`] for a token whose claim `type` must be `token_type` (e.g.
    /// `"refresh"` on a refresh endpoint), whatever kind this authenticator takes otherwise.
    ///
    /// # Errors
    ///
    /// As [`Authenticator::validate`]; [`AuthError::WrongType`] when `type` differs.
    pub fn validate_as(&self, token: &str, token_type: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.inner.key, &self.inner.validation)
            .map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::Invalid("algorithm not allowed")
            }
            ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
            ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                AuthError::Invalid("missing or malformed claim")
            }
            _ => AuthError::Invalid("malformed token"),
        })?;
        let claims = data.claims;
        if claims.token_type.as_deref() != Some(token_type) {
            return Err(AuthError::WrongType);
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty subject"));
        }
        Ok(claims)
    }

    /// Validates the token, then asks the directory whether its user exists.
    ///
    /// # Errors
    ///
    /// Any error of [`Authenticator::validate`]; [`AuthError::UnknownUser`] when the directory
    /// says no; [`AuthError::Directory`] when it cannot answer.
    pub async fn authenticate(&self, token: &str) -> Result<(Identity, Claims), AuthError> {
        let claims = self.validate(token)?;
        let user_id = UserId::from(claims.sub.as_str());
        if !self.inner.directory.exists(&user_id).await? {
            return Err(AuthError::UnknownUser);
        }
        let identity = Identity {
            username: claims.display_name().into(),
            user_id,
            guest: false,
        };
        Ok((identity, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn valid_access_token_is_accepted() {
        let token = sign(
            json!({"sub": "u1", "username": "Ann", "type": "access", "exp": now() + 60}),
            SECRET,
        );
        let claims = Authenticator::hs256(SECRET).validate(&token).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.display_name(), "Ann");
    }

    #[test]
    fn name_claim_is_the_fallback_display_name() {
        let token = sign(
            json!({"sub": "u1", "name": "Bo", "type": "access", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(
            Authenticator::hs256(SECRET)
                .validate(&token)
                .unwrap()
                .display_name(),
            "Bo"
        );
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        let auth = Authenticator::hs256(SECRET).leeway(Duration::ZERO);
        let cases = [
            (
                json!({"sub": "u", "type": "access", "exp": now() - 10}),
                SECRET,
                AuthError::Expired,
            ),
            (
                json!({"sub": "u", "type": "access", "exp": now() + 60, "nbf": now() + 30}),
                SECRET,
                AuthError::NotYetValid,
            ),
            (
                json!({"sub": "u", "type": "refresh", "exp": now() + 60}),
                SECRET,
                AuthError::WrongType,
            ),
            (
                json!({"sub": "u", "exp": now() + 60}),
                SECRET,
                AuthError::WrongType,
            ),
            (
                json!({"sub": "u", "type": "access", "exp": now() + 60}),
                b"another-secret-another-secret-1234".as_slice(),
                AuthError::Invalid("bad signature"),
            ),
            (
                json!({"type": "access", "exp": now() + 60}),
                SECRET,
                AuthError::Invalid("missing or malformed claim"),
            ),
        ];
        for (claims, secret, expected) in cases {
            assert_eq!(
                auth.validate(&sign(claims.clone(), secret)),
                Err(expected),
                "{claims}"
            );
        }
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(json!({"sub": "u", "type": "access", "exp": now() + 60}).to_string());
        let token = format!("{header}.{body}.");
        assert!(matches!(
            Authenticator::hs256(SECRET).validate(&token),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let auth = Authenticator::hs256(SECRET).issuer("me").audience("chat");
        let good = sign(
            json!({"sub": "u", "type": "access", "exp": now() + 60, "iss": "me", "aud": "chat"}),
            SECRET,
        );
        let bad_iss = sign(
            json!({"sub": "u", "type": "access", "exp": now() + 60, "iss": "you", "aud": "chat"}),
            SECRET,
        );
        let bad_aud = sign(
            json!({"sub": "u", "type": "access", "exp": now() + 60, "iss": "me", "aud": "mail"}),
            SECRET,
        );
        assert!(auth.validate(&good).is_ok());
        assert_eq!(
            auth.validate(&bad_iss),
            Err(AuthError::Invalid("wrong issuer"))
        );
        assert_eq!(
            auth.validate(&bad_aud),
            Err(AuthError::Invalid("wrong audience"))
        );
    }

    #[test]
    #[should_panic(expected = "the secret is empty")]
    fn an_empty_hs256_secret_is_refused() {
        let _ = Authenticator::hs256(b"");
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let auth = Authenticator::hs256(SECRET);
        for token in ["", "a.b.c", "....", "ey.ey.ey", "\u{0}\u{1}"] {
            assert!(matches!(auth.validate(token), Err(AuthError::Invalid(_))));
        }
    }
}
