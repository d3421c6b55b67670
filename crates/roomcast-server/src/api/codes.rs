//! Seed 003's room codes: `GET /create-room?name=` makes a public room with a short generated
//! code and hands back a room token; `GET /join-room?name=&room_id=` hands out a room token for
//! an existing public room.
//!
//! A room token (`"type": "room"`, claims `client_id`, `room_id`, `name`) opens `/ws/chat` for
//! its room and nothing else: not the other WebSocket endpoints, not the HTTP API. Its client
//! is generated and has no account (display names here need not be unique), so `/ws/chat`
//! does not ask the user directory about it, whatever `ROOMCAST_USER_DIRECTORY` says.

use std::time::Duration;

use axum::extract::State;
use roomcast_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::AppState;

/// Characters of a room code: no `0`/`O` or `1`/`I` to confuse. 32 of them, so a byte modulo 32
/// picks one without bias.
const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// Length of a room code.
pub const CODE_LEN: usize = 8;
/// Lifetime of a seed-003 token.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest display name, in characters.
pub const MAX_NAME: usize = 64;

/// `GET /create-room` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateRoomQuery {
    /// The creator's display name, 1 to 64 characters, not blank, no control characters.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
}

/// `GET /join-room` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JoinRoomQuery {
    /// The joiner's display name, 1 to 64 characters, not blank, no control characters.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// The room code from `/create-room`.
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub room_id: String,
}

/// `GET /create-room`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedRoom {
    /// Always `success`.
    pub status: &'static str,
    /// A room token (1 h) with claims `client_id`, `room_id`, `name`, `type: "room"`.
    pub token: String,
    /// The room's code.
    pub room_id: String,
}

/// `GET /join-room`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinedRoom {
    /// Always `success`.
    pub status: &'static str,
    /// A room token (1 h) with claims `client_id`, `room_id`, `name`, `type: "room"`.
    pub token: String,
}

/// A fresh room code.
pub fn room_code() -> String {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[..CODE_LEN]
        .iter()
        .map(|byte| char::from(CODE_ALPHABET[usize::from(*byte) % CODE_ALPHABET.len()]))
        .collect()
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let len = name.trim().chars().count();
    if len == 0 || name.chars().count() > MAX_NAME {
        return Err(ApiError::Invalid(format!(
            "name must be 1 to {MAX_NAME} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "name may not contain control characters".into(),
        ));
    }
    Ok(())
}

fn client_token(state: &AppState, name: &str, room_id: &str) -> Result<String, ApiError> {
    let issuer = super::accounts::issuer(state)?;
    let client_id = uuid::Uuid::new_v4().simple().to_string();
    Ok(issuer.room(&client_id, room_id, name, TOKEN_TTL))
}

/// Creates a public room with a generated code, and a token for its creator.
#[utoipa::path(
    get,
    path = "/create-room",
    tag = "room codes",
    params(CreateRoomQuery),
    responses(
        (status = 200, description = "Room created", body = CreatedRoom),
        (status = 400, description = "Missing name", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (`ROOMCAST_AUTH_RATE`)"),
        (status = 503, description = "Token issuing not configured", body = ErrorBody),
    )
)]
pub async fn create_room(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CreateRoomQuery>,
) -> Result<axum::Json<CreatedRoom>, ApiError> {
    validate_name(&query.name)?;
    // Fail before creating a room nobody can get a token for.
    super::accounts::issuer(&state)?;
    let mut attempts = 0;
    let room_id = loop {
        let code = room_code();
        match state.store.create_room(&code, false, None).await {
            Ok(room) => break room.name,
            // 40 bits of code: a collision is rare, two in a row rarer still.
            Err(StoreError::Conflict(_)) if attempts < 5 => attempts += 1,
            Err(err) => return Err(err.into()),
        }
    };
    let token = client_token(&state, &query.name, &room_id)?;
    Ok(axum::Json(CreatedRoom {
        status: "success",
        token,
        room_id,
    }))
}

/// A room token for an existing public room. A private room (`POST /rooms`) is not found
/// here: a room code must not be a way into it.
#[utoipa::path(
    get,
    path = "/join-room",
    tag = "room codes",
    params(JoinRoomQuery),
    responses(
        (status = 200, description = "Token for the room", body = JoinedRoom),
        (status = 400, description = "Missing name or room_id", body = ErrorBody),
        (status = 404, description = "Room not found", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (`ROOMCAST_AUTH_RATE`)"),
    )
)]
pub async fn join_room(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JoinRoomQuery>,
) -> Result<axum::Json<JoinedRoom>, ApiError> {
    validate_name(&query.name)?;
    match state.store.room(&query.room_id).await? {
        Some(room) if !room.private => {}
        _ => return Err(ApiError::NotFound("Room not found".into())),
    }
    let token = client_token(&state, &query.name, &query.room_id)?;
    Ok(axum::Json(JoinedRoom {
        status: "success",
        token,
    }))
}
