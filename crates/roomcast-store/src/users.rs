//! Accounts and refresh tokens: the `users` and `refresh_tokens` tables.
//!
//! Each operation is one statement on the pool (two on a conflict, to say what is taken); none
//! goes through the writer task, since account traffic is tiny next to messages.

use crate::error::{Result, StoreError, is_foreign_key_violation, is_unique_violation};
use crate::records::{RefreshToken, User, check_key, check_text, now_ms};
use crate::store::{Store, with_pool};

const USER_COLUMNS: &str = "id, username, password_hash, created_at";

/// Whether `key` passes `check_key`. A lookup by a key that could never have been stored
/// answers "not there" instead of asking the database (PostgreSQL would reject a NUL with an
/// error, SQLite would not: this keeps the backends alike).
pub(crate) fn could_exist(key: &str) -> bool {
    check_key("key", key).is_ok()
}

impl Store {
    /// Creates a user.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the username or the id is taken; [`StoreError::Invalid`]
    /// for an empty or over-long (255 bytes) id or username, or a NUL in any field;
    /// [`StoreError::Backend`] when the database fails.
    pub async fn create_user(
        &self,
        id: &str,
        username: &str,
        password_hash: Option<&str>,
    ) -> Result<User> {
        check_key("user id", id)?;
        check_key("username", username)?;
        if let Some(hash) = password_hash {
            check_text("password hash", hash)?;
        }
        let user = User {
            id: id.to_owned(),
            username: username.to_owned(),
            password_hash: password_hash.map(str::to_owned),
            created_at: now_ms(),
        };
        let inserted = with_pool!(self.backend(), |pool| {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map(drop)
        });
        match inserted {
            Ok(()) => Ok(user),
            Err(err) if is_unique_violation(&err) => Err(self.user_conflict(id, username).await),
            Err(err) => Err(err.into()),
        }
    }

    /// Returns the user with id `id`, creating it (without a password) if there is none. Used by
    /// `roomcast token` and by deployments whose users come from another identity provider.
    ///
    /// An existing user is returned as it is, even when its username differs from `username`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the user is missing and `username` belongs to another id;
    /// [`StoreError::Invalid`] as for [`Store::create_user`]; [`StoreError::Backend`] when the
    /// database fails.
    pub async fn ensure_user(&self, id: &str, username: &str) -> Result<User> {
        check_key("user id", id)?;
        check_key("username", username)?;
        let inserted = with_pool!(self.backend(), |pool| {
            sqlx::query(
                "INSERT INTO users (id, username, password_hash, created_at) \
                 VALUES ($1, $2, NULL, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(username)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(drop)
        });
        match inserted {
            Ok(()) => {}
            Err(err) if is_unique_violation(&err) => {
                return Err(StoreError::Conflict(format!(
                    "username {username:?} is taken"
                )));
            }
            Err(err) => return Err(err.into()),
        }
        // Users are never deleted, so the row inserted or found above is still there.
        self.user_by_id(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id:?}")))
    }

    /// Looks a user up by id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        if !could_exist(id) {
            return Ok(None);
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let user = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, User>(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(user)
    }

    /// Looks a user up by username (exact, case-sensitive match).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        if !could_exist(username) {
            return Ok(None);
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        let user = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, User>(&sql)
                .bind(username)
                .fetch_optional(pool)
                .await
        })?;
        Ok(user)
    }

    /// Whether a user with id `id` exists: the check behind the `UserDirectory` (a valid token
    /// whose user is gone is refused).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn user_exists(&self, id: &str) -> Result<bool> {
        if !could_exist(id) {
            return Ok(false);
        }
        let exists = with_pool!(self.backend(), |pool| {
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
                .bind(id)
                .fetch_one(pool)
                .await
        })?;
        Ok(exists)
    }

    /// Records an issued refresh token, identified by its JWT id, valid until `expires_at` (unix
    /// milliseconds).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the user does not exist; [`StoreError::Conflict`] when the
    /// `jti` was recorded before; [`StoreError::Invalid`] for an empty or over-long `jti` or user
    /// id; [`StoreError::Backend`] when the database fails.
    pub async fn insert_refresh_token(
        &self,
        jti: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        check_key("refresh token id", jti)?;
        check_key("user id", user_id)?;
        let inserted = with_pool!(self.backend(), |pool| {
            sqlx::query(
                "INSERT INTO refresh_tokens (jti, user_id, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(jti)
            .bind(user_id)
            .bind(expires_at)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(drop)
        });
        match inserted {
            Ok(()) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict(format!(
                "refresh token {jti:?} already exists"
            ))),
            Err(err) if is_foreign_key_violation(&err) => {
                Err(StoreError::NotFound(format!("user {user_id:?}")))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Consumes a refresh token: marks it used and returns its user's id, atomically, so that of
    /// two concurrent presentations exactly one succeeds.
    ///
    /// `None` means the token must be refused: unknown, already used (a replay: see
    /// [`Store::refresh_token`] for whose, and [`Store::revoke_user_refresh_tokens`] for the
    /// usual answer), revoked, or expired.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn consume_refresh_token(&self, jti: &str) -> Result<Option<String>> {
        if !could_exist(jti) {
            return Ok(None);
        }
        // One conditional UPDATE: the row lock (PostgreSQL) or the write lock (SQLite) makes the
        // check and the mark one step.
        let user_id = with_pool!(self.backend(), |pool| {
            sqlx::query_scalar::<_, String>(
                "UPDATE refresh_tokens SET used_at = $2 \
                 WHERE jti = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
                 RETURNING user_id",
            )
            .bind(jti)
            .bind(now_ms())
            .fetch_optional(pool)
            .await
        })?;
        Ok(user_id)
    }

    /// Revokes a refresh token (logout). Returns whether a live token was revoked: `false` when
    /// it is unknown, used or already revoked, which a logout can ignore.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn revoke_refresh_token(&self, jti: &str) -> Result<bool> {
        if !could_exist(jti) {
            return Ok(false);
        }
        let revoked = with_pool!(self.backend(), |pool| {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 \
                 WHERE jti = $1 AND used_at IS NULL AND revoked_at IS NULL",
            )
            .bind(jti)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(revoked > 0)
    }

    /// Revokes every live refresh token of a user, e.g. when one of them is replayed (the
    /// token family is presumed stolen). Returns how many were revoked.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn revoke_user_refresh_tokens(&self, user_id: &str) -> Result<u64> {
        if !could_exist(user_id) {
            return Ok(0);
        }
        let revoked = with_pool!(self.backend(), |pool| {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 \
                 WHERE user_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
            )
            .bind(user_id)
            .bind(now_ms())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(revoked)
    }

    /// Looks a refresh token's record up, whatever its state: tells a replay (`used_at` set)
    /// from an unknown, revoked or expired token.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn refresh_token(&self, jti: &str) -> Result<Option<RefreshToken>> {
        if !could_exist(jti) {
            return Ok(None);
        }
        let token = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, RefreshToken>(
                "SELECT jti, user_id, expires_at, created_at, used_at, revoked_at \
                 FROM refresh_tokens WHERE jti = $1",
            )
            .bind(jti)
            .fetch_optional(pool)
            .await
        })?;
        Ok(token)
    }

    /// Says which of `id` and `username` made a user insert conflict.
    async fn user_conflict(&self, id: &str, username: &str) -> StoreError {
        match self.user_by_username(username).await {
            Ok(Some(_)) => StoreError::Conflict(format!("username {username:?} is taken")),
            Ok(None) => StoreError::Conflict(format!("user id {id:?} already exists")),
            Err(err) => err,
        }
    }
}
