//! `StoreError`, the one error type of the store, and the mapping from database errors to it.
//!
//! Expected outcomes are not errors: a lookup that finds nothing is `Ok(None)`, a reused refresh
//! token is `Ok(None)`, a retried message is `Ok((_, Appended::Duplicate))`. What is left is what
//! the caller must refuse (`NotFound`, `Conflict`, `Invalid`: client mistakes, HTTP 404 / 409 /
//! 422) or report as a server fault (`Backend`, `BatchFailed`, `Closed`: HTTP 500 / close 1011).

use std::sync::Arc;

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Something the operation refers to does not exist (a room a message is appended to, the
    /// user a refresh token is issued for). Create it first, or answer 404.
    #[error("not found: {0}")]
    NotFound(String),

    /// A unique name or id is already taken (username, user id, room name, refresh token id).
    /// Pick another one, or answer 409.
    #[error("conflict: {0}")]
    Conflict(String),

    /// An argument the store will not keep, with the reason: empty or over-long ids and names,
    /// a NUL character (PostgreSQL cannot store one, so neither backend accepts it), an
    /// unsupported database URL. Fix the input, or answer 422.
    #[error("invalid: {0}")]
    Invalid(String),

    /// The store was closed with [`Store::close`](crate::Store::close) (or its writer task is
    /// gone): the server is shutting down. Stop writing; nothing was persisted.
    #[error("the store is closed")]
    Closed,

    /// The group commit this write was part of failed as a whole (its `BEGIN` or its `COMMIT`),
    /// so every write of the batch gets this same error. The batch was rolled back
    /// unless the connection died during `COMMIT`, when the outcome is unknown: retry with the
    /// same `client_msg_id` and the store answers with the original message if it was kept.
    /// Usually the database is down or the disk is full. Also the answer when the `fsync` of
    /// a SQLite WAL after its commit failed (`StoreOptions::sqlite_hooks_before_sync`): the
    /// messages are in the database, but whether they are on disk is unknown.
    #[error("group commit failed: {0}")]
    BatchFailed(#[source] Arc<sqlx::Error>),

    /// The database driver failed: connection refused or lost (check `DATABASE_URL` and that the
    /// server is up), the SQLite file cannot be opened or created (check the path and its
    /// directory's permissions), a migration does not apply, or a query failed.
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(err.into())
    }
}

/// Whether `err` is the database refusing a duplicate key.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether `err` is the database refusing a reference to a missing row.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
