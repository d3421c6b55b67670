//! The crate's [`Error`]: one umbrella over the per-concern errors, each of which knows the close
//! code it ends a connection with.

use std::borrow::Cow;

use crate::auth::AuthError;
use crate::broker::BrokerError;
use crate::frame::{CloseReason, close_code};
use crate::session::SendError;

/// Everything that can go wrong in roomcast. A hook that returns an error ends its connection
/// with [`Error::close_reason`].
///
/// ```
/// use roomcast::{Error, close_code};
/// // A hook can end its connection with a code of its choosing:
/// let err = Error::close(close_code::ROOM_NOT_FOUND, "room not found");
/// assert_eq!(err.close_reason().code(), 4000);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A frame could not be queued for a connection.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The broker could not publish or subscribe.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A value could not be encoded or decoded as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The connection should close with this code and reason.
    #[error("closing: {0}")]
    Close(CloseReason),
    /// Any other failure of an application hook; closes with 1011.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An error that closes the connection with `code` and `reason`.
    pub fn close(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Close(CloseReason::new(code, reason))
    }

    /// Wraps an application error; the connection closes with 1011.
    pub fn other(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Other(err.into())
    }

    /// The code and reason this error closes a connection with.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            Self::Auth(err) => err.close_reason(),
            Self::Send(SendError::Full) => CloseReason::slow_consumer(),
            Self::Send(SendError::Closed) => CloseReason::normal(),
            Self::Close(reason) => reason.clone(),
            Self::Broker(_) | Self::Json(_) | Self::Other(_) => {
                CloseReason::new(close_code::INTERNAL, "internal error")
            }
        }
    }
}

/// `Result` with roomcast's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
