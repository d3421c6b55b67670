//! [`StoreDirectory`]: the seed's `AuthManager` backed by roomcast's store: a valid token whose
//! user has no row (deleted, never registered) is refused with 4001.

use roomcast::UserId;
use roomcast::auth::{AuthError, BoxFuture, UserDirectory};
use roomcast_store::Store;

/// Says a user exists when the store has a row for it.
#[derive(Clone)]
pub struct StoreDirectory {
    store: Store,
}

impl StoreDirectory {
    /// A directory over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl UserDirectory for StoreDirectory {
    fn exists<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            self.store.user_exists(user.as_str()).await.map_err(|err| {
                tracing::error!(error = %err, "user directory lookup failed");
                AuthError::Directory("store unavailable".into())
            })
        })
    }
}
