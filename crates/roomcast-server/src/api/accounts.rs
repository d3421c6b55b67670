//! Accounts: register, login, refresh (rotating, replay-refusing), logout, `GET /me`.
//!
//! Refresh tokens are JWTs with `type: "refresh"` and a `jti` the store records. The signature,
//! expiry, issuer and audience are checked by the server's [`roomcast::Authenticator`] (which
//! refuses every valid token whose type is not `access`, and so tells a valid refresh token
//! by that refusal); the store decides whether the `jti` is still live.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::State;
use axum::http::StatusCode;
use roomcast::AuthError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::extract::AuthUser;
use crate::AppState;
use crate::token::TokenIssuer;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD: usize = 8;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD: usize = 256;

/// `POST /auth/register` and `POST /auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    /// 3 to 32 characters: ASCII letters, digits, `_`, `.`, `-`.
    #[schema(
        example = "alice",
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9_.-]{3,32}$"
    )]
    pub username: String,
    /// 8 to 256 characters.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 256)]
    pub password: String,
}

/// `POST /auth/refresh` and `POST /auth/logout`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// A refresh token from register, login or refresh.
    pub refresh_token: String,
}

/// A fresh pair of tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub username: String,
    /// Short-lived; present as `Authorization: Bearer …` or `?token=` on the WebSocket.
    pub access_token: String,
    /// Long-lived, single use: trade it at `POST /auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// `GET /me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub username: String,
}

/// The signer, or 503 when only a public key is configured.
pub(super) fn issuer(state: &AppState) -> Result<&TokenIssuer, ApiError> {
    state.issuer.as_ref().ok_or(ApiError::Unavailable {
        message: "token issuing not configured",
        cause: "no signing key (only a public key is configured)".to_owned(),
    })
}

/// Checks a username: 3 to 32 characters among letters, digits, `_`, `.` and `-`.
///
/// # Errors
///
/// [`ApiError::Invalid`] saying which rule broke.
pub fn validate_username(username: &str) -> Result<(), ApiError> {
    let len = username.chars().count();
    if !(3..=32).contains(&len) {
        return Err(ApiError::Invalid(
            "username must be 3 to 32 characters".into(),
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ApiError::Invalid(
            "username may only contain letters, digits, '_', '.' and '-'".into(),
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(ApiError::Invalid(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Bounds the password work (argon2id, ~19 MiB and tens of ms of a core each): at most `slots`
/// hashes run at once, at most `queue` more wait for one, and the rest are answered 503 at
/// once. Without it a few hundred parallel logins took gigabytes of memory and every core.
/// One per server ([`crate::AppState`]).
#[derive(Debug)]
pub struct PasswordWork {
    /// Hashes running.
    slots: tokio::sync::Semaphore,
    /// Requests running or waiting for a slot: `slots + queue` permits.
    admission: tokio::sync::Semaphore,
}

impl PasswordWork {
    /// Waiting requests allowed per slot: with ~50 ms a hash, a waiter is answered within
    /// about 0.4 s.
    const QUEUE_PER_SLOT: usize = 8;

    /// One slot per core (at least 2), and a short queue behind them.
    pub fn new() -> Self {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Self::with_slots(slots, slots * Self::QUEUE_PER_SLOT)
    }

    /// `slots` at once, `queue` more waiting.
    pub fn with_slots(slots: usize, queue: usize) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots),
            admission: tokio::sync::Semaphore::new(slots + queue),
        }
    }

    /// Runs `work` on the blocking pool once a slot is free; 503 when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        // Both permits are released however this ends, a dropped request included.
        let Ok(_admitted) = self.admission.try_acquire() else {
            return Err(ApiError::Busy(
                "too many sign-ins at once; retry in a moment",
            ));
        };
        let _slot = self.slots.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ApiError::internal)
    }
}

impl Default for PasswordWork {
    fn default() -> Self {
        Self::new()
    }
}

/// Hashes `password` with argon2id (default parameters) off the async threads.
async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    state
        .passwords
        .run(move || {
            let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
                .map_err(ApiError::internal)?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(ApiError::internal)
        })
        .await?
}

/// Whether `password` matches `hash`, checked off the async threads. A hash that cannot be
/// parsed matches nothing.
async fn verify_password(
    state: &AppState,
    password: String,
    hash: String,
) -> Result<bool, ApiError> {
    state
        .passwords
        .run(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
}

/// A hash no password matches, checked for unknown users so that they take as long to refuse
/// as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
            .expect("16 bytes are a valid salt length");
        Argon2::default()
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes(), &salt)
            .expect("argon2 default parameters hash any input")
            .to_string()
    })
}

/// Signs an access token and a recorded refresh token for `user_id`.
async fn issue_tokens(
    state: &AppState,
    user_id: &str,
    username: &str,
) -> Result<TokenResponse, ApiError> {
    let issuer = issuer(state)?;
    let access_token = issuer.access(user_id, username);
    let jti = uuid::Uuid::new_v4().simple().to_string();
    let (refresh_token, exp) = issuer.refresh(user_id, username, &jti);
    let expires_at = i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX);
    state
        .store
        .insert_refresh_token(&jti, user_id, expires_at)
        .await?;
    Ok(TokenResponse {
        user_id: user_id.to_owned(),
        username: username.to_owned(),
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: issuer.access_ttl.as_secs(),
    })
}

/// Checks a refresh token's signature, time window, issuer, audience and type, and returns its
/// `jti`.
fn refresh_jti(state: &AppState, token: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::Unauthorized("invalid refresh token".into());
    let claims = match state.auth.validate_as(token, "refresh") {
        Ok(claims) => claims,
        Err(AuthError::WrongType) => {
            return Err(ApiError::Unauthorized("not a refresh token".into()));
        }
        Err(AuthError::Expired) => {
            return Err(ApiError::Unauthorized("refresh token expired".into()));
        }
        Err(_) => return Err(invalid()),
    };
    claims
        .extra
        .get("jti")
        .and_then(|jti| jti.as_str())
        .filter(|jti| !jti.is_empty())
        .map(str::to_owned)
        .ok_or_else(invalid)
}

/// Creates an account and signs it in.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Account created", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "Invalid username or password, or a field missing", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (`ROOMCAST_AUTH_RATE`)"),
        (status = 503, description = "Token issuing not configured, or too many sign-ins at once", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, axum::Json<TokenResponse>), ApiError> {
    issuer(&state)?;
    validate_username(&body.username)?;
    validate_password(&body.password)?;
    let hash = hash_password(&state, body.password).await?;
    let user_id = uuid::Uuid::new_v4().simple().to_string();
    match state
        .store
        .create_user(&user_id, &body.username, Some(&hash))
        .await
    {
        Ok(_) => {}
        Err(roomcast_store::StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict("username taken".into()));
        }
        Err(err) => return Err(err.into()),
    }
    let tokens = issue_tokens(&state, &user_id, &body.username).await?;
    Ok((StatusCode::CREATED, axum::Json(tokens)))
}

/// Signs in with a username and password.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Invalid username or password", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A field missing or of the wrong type", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (`ROOMCAST_AUTH_RATE`)"),
        (status = 503, description = "Token issuing not configured, or too many sign-ins at once", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    issuer(&state)?;
    let refused = || ApiError::Unauthorized("invalid username or password".into());
    let user = state.store.user_by_username(&body.username).await?;
    let hash = user
        .as_ref()
        .and_then(|user| user.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_owned());
    let matches = verify_password(&state, body.password, hash).await?;
    let user = user.filter(|user| user.password_hash.is_some() && matches);
    let Some(user) = user else {
        return Err(refused());
    };
    Ok(axum::Json(
        issue_tokens(&state, &user.id, &user.username).await?,
    ))
}

/// Trades a refresh token for a new pair. Each refresh token works once; presenting a used
/// one again revokes every refresh token of its user.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "accounts",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair of tokens", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A field missing or of the wrong type", body = ErrorBody),
        (status = 503, description = "Token issuing not configured", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    issuer(&state)?;
    let jti = refresh_jti(&state, &body.refresh_token)?;
    let Some(user_id) = state.store.consume_refresh_token(&jti).await? else {
        if let Some(record) = state.store.refresh_token(&jti).await?
            && record.used_at.is_some()
        {
            let revoked = state
                .store
                .revoke_user_refresh_tokens(&record.user_id)
                .await?;
            tracing::warn!(user = %record.user_id, revoked, "refresh token reused; user's refresh tokens revoked");
            return Err(ApiError::Unauthorized("refresh token already used".into()));
        }
        return Err(ApiError::Unauthorized(
            "refresh token revoked or expired".into(),
        ));
    };
    let Some(user) = state.store.user_by_id(&user_id).await? else {
        return Err(ApiError::Unauthorized("unknown user".into()));
    };
    Ok(axum::Json(
        issue_tokens(&state, &user.id, &user.username).await?,
    ))
}

/// Revokes a refresh token. Succeeds also when it was already used or revoked.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "accounts",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Not a valid refresh token", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A field missing or of the wrong type", body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let jti = refresh_jti(&state, &body.refresh_token)?;
    state.store.revoke_refresh_token(&jti).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(
    get,
    path = "/me",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
    )
)]
pub async fn me(user: AuthUser) -> axum::Json<Me> {
    axum::Json(Me {
        user_id: user.user_id,
        username: user.username,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Duration;

    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_slots_and_the_queue_password_work_is_refused_at_once_with_503() {
        let work = Arc::new(PasswordWork::with_slots(1, 1));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let blocked = |work: &Arc<PasswordWork>| {
            let (work, release_rx) = (Arc::clone(work), Arc::clone(&release_rx));
            tokio::spawn(async move {
                work.run(move || {
                    release_rx
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(5))
                })
                .await
            })
        };
        // One runs, one waits for its slot.
        let running = blocked(&work);
        let waiting = blocked(&work);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while work.admission.available_permits() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "both admitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The third is refused without waiting.
        let refused = tokio::time::timeout(Duration::from_secs(1), work.run(|| ()))
            .await
            .expect("refused at once");
        assert!(matches!(refused, Err(ApiError::Busy(_))));
        let response = refused.unwrap_err().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");

        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        assert!(running.await.unwrap().unwrap().is_ok());
        assert!(waiting.await.unwrap().unwrap().is_ok());
        assert!(work.run(|| 7).await.is_ok_and(|n| n == 7), "recovered");
    }
}
