//! Who is calling: [`AuthUser`] requires a valid access token in `Authorization: Bearer …`,
//! [`MaybeUser`] accepts anonymous callers too. Both refuse a present but invalid token with 401.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::AppState;

/// An authenticated caller: the token's `sub` and display name.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user id (`sub`).
    pub user_id: String,
    /// The display name.
    pub username: String,
}

/// A caller who may be anonymous.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<AuthUser>);

/// The bearer token of `parts`: `None` without an `Authorization` header, an error when the
/// header is not `Bearer <token>`.
pub(crate) fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>".into(),
        )),
    }
}

async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let (identity, _claims) = state.auth.authenticate(token).await?;
    Ok(AuthUser {
        user_id: identity.user_id.as_str().to_owned(),
        username: identity.username.to_string(),
    })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(parts)?.ok_or_else(|| ApiError::Unauthorized("token required".into()))?;
        authenticate(state, token).await
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match bearer(parts)? {
            Some(token) => Ok(Self(Some(authenticate(state, token).await?))),
            None => Ok(Self(None)),
        }
    }
}
