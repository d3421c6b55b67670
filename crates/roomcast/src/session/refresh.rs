//! A fresh access token on a live connection: [`Session::refresh_token`].
//!
//! The hub keeps each authenticated connection's token `exp` and closes the connection when it
//! has passed (`hub::expiry`); a refresh validates a new token with the endpoint's own
//! [`Authenticator`](crate::Authenticator) (signature, time window, `type`, user directory),
//! checks that it names the same user, and moves the connection's `exp` to the new token's.
//! A refused refresh is a value, not an error that ends the connection: the handler answers it
//! and the connection keeps its old expiry.

use super::Session;
use crate::auth::AuthError;

/// Why [`Session::refresh_token`] refused a token. The connection is unchanged: it still
/// closes when its current token expires.
///
/// `Display` is short and fit to send to the client (it never contains the token or an
/// internal error).
///
/// ```
/// use roomcast::{AuthError, RefreshError};
/// assert_eq!(RefreshError::from(AuthError::Expired).to_string(), "token expired");
/// assert_eq!(RefreshError::OtherUser.to_string(), "token is for another user");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The token is not valid here: expired, badly signed, of another kind (a refresh or room
    /// token where an access token is needed), or its user does not exist. The reason is the
    /// one a connection with that token would be refused with.
    #[error("{}", .0.close_reason().reason())]
    Refused(#[from] AuthError),
    /// The token is valid but names another user: a connection never changes hands.
    #[error("token is for another user")]
    OtherUser,
    /// The connection is a guest's (or has no token): there is nothing to refresh.
    #[error("this connection has no token to refresh")]
    NoToken,
    /// The connection is gone.
    #[error("connection closed")]
    Closed,
}

impl Session {
    /// Replaces this connection's access token with `token`, so that the connection stays open
    /// past the old token's expiry: the hub closes a connection when its token's `exp` (plus
    /// the authenticator's leeway) has passed, after the dialect's notice
    /// ([`Dialect::token_expiring`](crate::protocol::Dialect::token_expiring)). Returns the
    /// new token's `exp`, seconds since the Unix epoch: the connection now lasts until then.
    ///
    /// `token` is checked as at connect, by the connection's endpoint's
    /// [`Authenticator`](crate::Authenticator), and must name this connection's user.
    /// The native handler calls this for `{"type":"refresh","token":"…"}` and answers with
    /// [`native::refreshed`](crate::protocol::native::refreshed) or an `error`.
    ///
    /// ```
    /// use roomcast::protocol::native::{self, Request};
    /// use roomcast::{Handler, Incoming, Session};
    ///
    /// struct Chat;
    /// impl Handler for Chat {
    ///     async fn on_message(&self, cx: &Session, msg: Incoming) -> roomcast::Result<()> {
    ///         if let Some(Ok(Request::Refresh { token })) = msg.text().map(native::decode) {
    ///             let answer = match cx.refresh_token(token.as_str()).await {
    ///                 Ok(expires_at) => native::refreshed(expires_at),
    ///                 Err(refused) => native::error(&refused.to_string(), None),
    ///             };
    ///             cx.send(answer)?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RefreshError`] says why the token was refused; the connection is left as it was.
    pub async fn refresh_token(&self, token: &str) -> Result<u64, RefreshError> {
        let (_, auth) = self
            .hub
            .token_expiry(self.conn)
            .ok_or(RefreshError::NoToken)?;
        let (identity, claims) = auth.authenticate(token).await.inspect_err(|err| {
            // The reason names the broken rule; the token itself is never logged.
            tracing::info!(conn = %self.conn, reason = %err, "token refresh refused");
        })?;
        if identity.user_id != self.user.id {
            tracing::info!(conn = %self.conn, "token refresh refused: another user's token");
            return Err(RefreshError::OtherUser);
        }
        if !self.hub.refresh_expiry(self.conn, claims.exp) {
            return Err(RefreshError::Closed);
        }
        tracing::debug!(conn = %self.conn, exp = claims.exp, "token refreshed");
        Ok(claims.exp)
    }

    /// When this connection's access token expires, seconds since the Unix epoch (the token's
    /// `exp`, or the last accepted [`Session::refresh_token`]'s); `None` for a guest, who never
    /// expires. The connection is closed once this plus the authenticator's leeway has passed.
    ///
    /// ```
    /// use roomcast::{Handler, Incoming, Session};
    ///
    /// struct Hello;
    /// impl Handler for Hello {
    ///     async fn on_connect(&self, cx: &Session) -> roomcast::Result<()> {
    ///         let until = match cx.token_expires_at() {
    ///             Some(exp) => format!("until {exp}, unless you refresh"),
    ///             None => "as a guest, for as long as you like".to_owned(),
    ///         };
    ///         cx.send(format!("connected {until}"))?;
    ///         Ok(())
    ///     }
    ///     async fn on_message(&self, _: &Session, _: Incoming) -> roomcast::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn token_expires_at(&self) -> Option<u64> {
        self.hub.token_expiry(self.conn).map(|(exp, _)| exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_matching_close_reasons_and_never_leak_internals() {
        let refused = |err: AuthError| RefreshError::from(err).to_string();
        assert_eq!(refused(AuthError::Expired), "token expired");
        assert_eq!(refused(AuthError::WrongType), "wrong token type");
        assert_eq!(
            refused(AuthError::Invalid("bad signature")),
            "invalid token"
        );
        assert_eq!(
            refused(AuthError::Directory(
                "connection refused (os error 111)".into()
            )),
            "authentication unavailable"
        );
        assert_eq!(
            RefreshError::OtherUser.to_string(),
            "token is for another user"
        );
    }
}
