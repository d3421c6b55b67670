//! Minting tokens: `roomcast token --sub alice --username Alice --ttl 1h`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::config::{JwtAlgorithm, TokenArgs};

impl TokenArgs {
    /// An access token for `--sub` signed with the configured key.
    ///
    /// # Errors
    ///
    /// A missing or unreadable signing key, naming the variable.
    pub fn mint(&self) -> anyhow::Result<String> {
        let (algorithm, key) = match self.jwt.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = self.jwt.jwt_secret.as_ref().context(
                    "ROOMCAST_JWT_SECRET: set it to the secret the server uses, to sign the token",
                )?;
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(secret.as_bytes()),
                )
            }
            algorithm => {
                let path =
                    self.jwt.jwt_private_key.as_ref().context(
                        "ROOMCAST_JWT_PRIVATE_KEY: required to sign RS256 or ES256 tokens",
                    )?;
                let pem = std::fs::read(path).with_context(|| {
                    format!("ROOMCAST_JWT_PRIVATE_KEY: cannot read {}", path.display())
                })?;
                if algorithm == JwtAlgorithm::Rs256 {
                    (
                        Algorithm::RS256,
                        EncodingKey::from_rsa_pem(&pem).context("ROOMCAST_JWT_PRIVATE_KEY")?,
                    )
                } else {
                    (
                        Algorithm::ES256,
                        EncodingKey::from_ec_pem(&pem).context("ROOMCAST_JWT_PRIVATE_KEY")?,
                    )
                }
            }
        };
        let mut claims = access_claims(
            &self.sub,
            self.username.as_deref().unwrap_or(&self.sub),
            self.ttl,
        );
        if let Some(issuer) = &self.jwt.jwt_issuer {
            claims["iss"] = json!(issuer);
        }
        if let Some(audience) = &self.jwt.jwt_audience {
            claims["aud"] = json!(audience);
        }
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).context("signing the token")
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
