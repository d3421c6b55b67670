//! The HTTP API: accounts, rooms, history, seed 003's room codes, OpenAPI.
//!
//! - [`accounts`]: `POST /auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`,
//!   `GET /me`.
//! - [`rooms`]: `POST /rooms`, `GET /rooms`, `GET /rooms/{room}`,
//!   `POST /rooms/{room}/members`, `GET /rooms/{room}/messages`.
//! - [`codes`]: seed 003's `GET /create-room` and `GET /join-room`.
//! - [`admin`]: `GET /admin/rooms`, `GET /admin/rooms/{room}/connections`,
//!   `POST /admin/users/{user_id}/disconnect`, `POST /admin/rooms/{room}/messages`,
//!   `POST /admin/broadcast`, for tokens with `"role": "admin"`.
//! - [`openapi`]: `GET /openapi.json` and `GET /docs`.
//! - [`health`]: `GET /readyz` (`/healthz` is mounted by the server itself).
//! - [`error`]: [`ApiError`], answered as `{"error": "..."}`; [`extract`]: who is calling.

pub mod accounts;
pub mod admin;
pub mod codes;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod rooms;

use axum::Router;
use axum::routing::{get, post};

pub use error::{ApiError, ApiJson};
pub use extract::{AuthUser, MaybeUser};

use crate::AppState;

/// The API's routes, over the shared state.
pub fn router(state: AppState) -> Router {
    // What a script would hammer: password checks and room codes, per client IP.
    let limited = Router::new()
        .route("/auth/register", post(accounts::register))
        .route("/auth/login", post(accounts::login))
        .route("/create-room", get(codes::create_room))
        .route("/join-room", get(codes::join_room))
        .route_layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            crate::limits::auth_rate,
        ));
    Router::new()
        .merge(limited)
        .route("/auth/refresh", post(accounts::refresh))
        .route("/auth/logout", post(accounts::logout))
        .route("/me", get(accounts::me))
        .route("/rooms", post(rooms::create_room).get(rooms::list_rooms))
        .route("/rooms/{room}", get(rooms::get_room))
        .route("/rooms/{room}/members", post(rooms::add_member))
        .route("/rooms/{room}/messages", get(rooms::messages))
        .route("/admin/rooms", get(admin::rooms))
        .route(
            "/admin/rooms/{room}/connections",
            get(admin::room_connections),
        )
        .route("/admin/rooms/{room}/messages", post(admin::room_message))
        .route("/admin/users/{user_id}/disconnect", post(admin::disconnect))
        .route("/admin/broadcast", post(admin::broadcast))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}
