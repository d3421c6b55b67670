//! [`ApiError`]: every refusal of the HTTP API, answered as `{"error": "..."}` with its status,
//! and [`ApiJson`], the JSON body extractor whose rejections become `ApiError`s.

use std::fmt;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use roomcast::AuthError;
use roomcast_store::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    #[schema(example = "username taken")]
    pub error: String,
}

/// Why a request was refused. Client mistakes carry the message sent back; server faults carry
/// the cause, which is logged and replaced by a generic message.
#[derive(Debug)]
pub enum ApiError {
    /// A request the server could not read (malformed JSON, a bad query string): 400, or the
    /// status axum's rejection chose (415 for a missing content type, 413 for a huge body).
    BadRequest(StatusCode, String),
    /// No, an invalid or an expired token, or bad credentials: 401.
    Unauthorized(String),
    /// Authenticated but not allowed (a private room one is not a member of): 403.
    Forbidden(String),
    /// The thing named does not exist: 404.
    NotFound(String),
    /// A unique name is taken: 409.
    Conflict(String),
    /// A field's value breaks a rule (length, characters, range): 422.
    Invalid(String),
    /// The server cannot do this now or in this configuration (no signing key, the user
    /// directory is down): 503. The message is sent as is; `cause` is logged.
    Unavailable {
        /// Sent to the client.
        message: &'static str,
        /// Logged.
        cause: String,
    },
    /// Too much of this work at once (a flood of sign-ins): 503 with `Retry-After: 1`. Not
    /// logged: a flood would flood the log too.
    Busy(&'static str),
    /// A server fault (the database failed): 500 with a generic message; the cause is logged.
    Internal(String),
}

impl ApiError {
    /// A server fault with `cause` (logged, not sent).
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(status, _) => *status,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest(_, message)
            | Self::Unauthorized(message)
            | Self::Forbidden(message)
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::Invalid(message) => f.write_str(message),
            Self::Unavailable { message, cause } => write!(f, "{message}: {cause}"),
            Self::Busy(message) => f.write_str(message),
            Self::Internal(cause) => write!(f, "internal error: {cause}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match self {
            Self::BadRequest(_, message)
            | Self::Unauthorized(message)
            | Self::Forbidden(message)
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::Invalid(message) => {
                tracing::debug!(%status, %message, "request refused");
                message
            }
            Self::Unavailable { message, cause } => {
                tracing::error!(%status, %cause, "{message}");
                message.to_owned()
            }
            Self::Internal(cause) => {
                tracing::error!(%status, %cause, "request failed");
                "internal server error".to_owned()
            }
            Self::Busy(message) => {
                let body = Json(ErrorBody {
                    error: message.to_owned(),
                });
                return (status, [(header::RETRY_AFTER, "1")], body).into_response();
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(format!("not found: {what}")),
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Invalid(reason) => Self::Invalid(reason),
            StoreError::Closed => Self::Unavailable {
                message: "server shutting down",
                cause: "the store is closed".to_owned(),
            },
            other => Self::internal(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Directory(cause) => Self::Unavailable {
                message: "authentication unavailable",
                cause,
            },
            // The close reason is short and never contains the token.
            other => Self::Unauthorized(other.close_reason().reason().to_owned()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // axum's mapping: 400 for a syntax error, 422 for valid JSON of the wrong shape, 415
        // without `Content-Type: application/json`, 413 for a body over the limit.
        let status = rejection.status();
        let message = rejection.body_text();
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            Self::Invalid(message)
        } else {
            Self::BadRequest(status, message)
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.status(), rejection.body_text())
    }
}

/// A JSON body; a body that cannot be read is refused with an [`ApiError`] (as
/// `{"error": "..."}`), not axum's plain-text rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A query string; one that cannot be read is refused with an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}
