//! The HTTP API: accounts, rooms, history, seed 003's room codes, OpenAPI.

use axum::Router;

use crate::AppState;

/// The API's routes, over the shared state.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
