//! HS256 access tokens, minted here as an application's backend would mint them.
//!
//! Claims: `{sub, username, type: "access", exp}`; every connection gets its own user
//! (`lg-{namespace}-{index}`), so the server sees as many users as connections.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// How long minted tokens stay valid: longer than any bounded run (a sweep of 50 steps of
/// 10 minutes is the worst case).
const TOKEN_TTL_SECS: u64 = 12 * 3600;

/// Signs one token per connection with a shared secret.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    namespace: String,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of debug output.
        f.debug_struct("TokenMinter")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    username: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    exp: u64,
}

impl TokenMinter {
    /// A minter signing with `secret`; user ids are `lg-{namespace}-{index}`.
    pub fn new(secret: &[u8], namespace: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            namespace: namespace.to_owned(),
        }
    }

    /// The user id of connection `index`.
    pub fn user_id(&self, index: u64) -> String {
        format!("lg-{}-{index}", self.namespace)
    }

    /// A token for connection `index`.
    ///
    /// # Panics
    ///
    /// Never in practice: HS256 signing of these claims cannot fail.
    pub fn mint(&self, index: u64) -> String {
        let user = self.user_id(index);
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + TOKEN_TTL_SECS;
        let claims = Claims {
            sub: &user,
            username: &user,
            kind: "access",
            exp,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key)
            .expect("HS256 over a small JSON object does not fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn tokens_carry_the_access_claims() {
        let minter = TokenMinter::new(b"0123456789abcdef0123456789abcdef", "t1");
        let token = minter.mint(7);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &Validation::default(),
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "lg-t1-7");
        assert_eq!(data.claims["username"], "lg-t1-7");
        assert_eq!(data.claims["type"], "access");
    }
}
