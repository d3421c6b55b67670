//! Rooms: create (public or private), list, look up with occupancy, add members, page back
//! through history.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use roomcast::RoomName;
use roomcast_store::{Room, Seq, StoreError, StoredMessage};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use super::extract::{AuthUser, MaybeUser};
use crate::AppState;

/// Most messages one page of history holds.
pub const MAX_PAGE: usize = 200;
/// Messages a page holds when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// `POST /rooms`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRoom {
    /// 1 to 64 ASCII letters, digits, `-`, `_`, `.`, `:`.
    #[schema(
        example = "lobby",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_.:-]{1,64}$"
    )]
    pub name: String,
    /// Only members may read or join a private room. Default `false`.
    #[serde(default)]
    pub private: bool,
}

/// `POST /rooms/{room}/members`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMember {
    /// The user to add: not blank, no NUL, at most 255 bytes (63 characters always fit).
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub user_id: String,
}

/// A room as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomSummary {
    /// The room's name.
    pub name: String,
    /// Whether only members may read or join it.
    pub private: bool,
    /// Who created it, when known.
    pub created_by: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// The seq of its latest message (0 when empty).
    pub last_seq: u64,
    /// Connections in the room on this server now.
    pub occupancy: usize,
}

/// `GET /rooms`: one page.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    /// Public rooms, and the private ones the caller is a member of, oldest first.
    pub rooms: Vec<RoomSummary>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /rooms` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomListQuery {
    /// The `next` of the previous page; absent: the first page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub after: Option<String>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// A room with who is online.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDetail {
    /// The room.
    #[serde(flatten)]
    pub room: RoomSummary,
    /// The ids of the users connected to it, sorted, each once.
    pub online: Vec<String>,
}

/// `GET /rooms/{room}/messages` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages with a smaller seq (the oldest seq of the previous page).
    #[param(minimum = 0)]
    pub before: Option<u64>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// Its id (a UUID v7).
    pub id: String,
    /// Its position in the room, 1, 2, 3…
    pub seq: u64,
    /// The room.
    pub room: String,
    /// The sender's id.
    pub user_id: String,
    /// The sender's name.
    pub username: String,
    /// The text.
    pub content: String,
    /// Structured data sent with it: any JSON value the sender attached (the native dialect
    /// takes any; seed 003/004 messages have none).
    pub data: Option<serde_json::Value>,
    /// Commit time, Unix milliseconds.
    pub timestamp: i64,
}

/// `GET /rooms/{room}/messages`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// Oldest first.
    pub messages: Vec<MessageView>,
}

impl From<StoredMessage> for MessageView {
    fn from(message: StoredMessage) -> Self {
        Self {
            id: message.id.0,
            seq: message.seq.0,
            room: message.room,
            user_id: message.user_id,
            username: message.username,
            content: message.content,
            data: message.data,
            timestamp: message.created_at,
        }
    }
}

fn summary(state: &AppState, room: Room) -> RoomSummary {
    let occupancy = RoomName::new(&room.name)
        .map(|name| state.hub.room_user_count(&name))
        .unwrap_or(0);
    summarize(room, occupancy)
}

fn summarize(room: Room, occupancy: usize) -> RoomSummary {
    RoomSummary {
        occupancy,
        name: room.name,
        private: room.private,
        created_by: room.created_by,
        created_at: room.created_at,
        last_seq: room.last_seq.0,
    }
}

fn room_name(name: &str) -> Result<RoomName, ApiError> {
    RoomName::new(name).map_err(|err| ApiError::Invalid(err.to_string()))
}

async fn find_room(state: &AppState, name: &str) -> Result<Room, ApiError> {
    state
        .store
        .room(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("room '{name}' not found")))
}

/// Refuses a private room to a caller who is not a member (401 when anonymous).
async fn check_access(
    state: &AppState,
    room: &Room,
    user: Option<&AuthUser>,
) -> Result<(), ApiError> {
    if !room.private {
        return Ok(());
    }
    let Some(user) = user else {
        return Err(ApiError::Unauthorized(
            "token required for a private room".into(),
        ));
    };
    if state.store.is_member(&room.name, &user.user_id).await? {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "room '{}' is private",
            room.name
        )))
    }
}

/// Creates a room; its creator becomes its first member.
#[utoipa::path(
    post,
    path = "/rooms",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = CreateRoom,
    responses(
        (status = 201, description = "Room created", body = RoomSummary),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "Invalid room name, or a field missing", body = ErrorBody),
    )
)]
pub async fn create_room(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<(StatusCode, axum::Json<RoomSummary>), ApiError> {
    let name = room_name(&body.name)?;
    let room = match state
        .store
        .create_room(name.as_str(), body.private, Some(&user.user_id))
        .await
    {
        Ok(room) => room,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict(format!("room name '{name}' taken")));
        }
        Err(err) => return Err(err.into()),
    };
    state.store.add_member(&room.name, &user.user_id).await?;
    Ok((StatusCode::CREATED, axum::Json(summary(&state, room))))
}

/// Lists public rooms, and the private rooms the caller is a member of, a page at a time.
///
/// One store query per page, and the page's occupancy read from the hub under one lock.
#[utoipa::path(
    get,
    path = "/rooms",
    tag = "rooms",
    security((), ("bearer" = [])),
    params(RoomListQuery),
    responses(
        (status = 200, description = "A page of rooms, oldest first", body = RoomList),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Invalid token", body = ErrorBody),
        (status = 422, description = "Limit out of range, or a cursor not from this API", body = ErrorBody),
    )
)]
pub async fn list_rooms(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    ApiQuery(query): ApiQuery<RoomListQuery>,
) -> Result<axum::Json<RoomList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let cursor = match query.after.as_deref() {
        None => None,
        Some(after) => Some(
            after
                .parse::<i64>()
                .ok()
                .filter(|cursor| *cursor > 0)
                .ok_or_else(|| ApiError::Invalid("after: not a cursor from this API".into()))?,
        ),
    };
    let viewer = user.as_ref().map(|user| user.user_id.as_str());
    let (page, next) = state.store.room_page(viewer, cursor, limit).await?;
    let names: Vec<Option<RoomName>> = page
        .iter()
        .map(|room| RoomName::new(&room.name).ok())
        .collect();
    let occupancy = state.hub.room_user_counts(names.iter().flatten());
    let mut counts = occupancy.into_iter();
    let rooms = page
        .into_iter()
        .zip(&names)
        .map(|(room, name)| {
            let occupancy = name.as_ref().map_or(0, |_| counts.next().unwrap_or(0));
            summarize(room, occupancy)
        })
        .collect();
    Ok(axum::Json(RoomList {
        rooms,
        next: next.map(|cursor| cursor.to_string()),
    }))
}

/// A room with its occupancy and online members.
#[utoipa::path(
    get,
    path = "/rooms/{room}",
    tag = "rooms",
    security((), ("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, description = "The room", body = RoomDetail),
        (status = 401, description = "Private room, no or invalid token", body = ErrorBody),
        (status = 403, description = "Private room, caller not a member", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    )
)]
pub async fn get_room(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(name): Path<String>,
) -> Result<axum::Json<RoomDetail>, ApiError> {
    let room = find_room(&state, &name).await?;
    check_access(&state, &room, user.as_ref()).await?;
    let mut online: Vec<String> = RoomName::new(&room.name)
        .map(|name| state.hub.room_members(&name))
        .unwrap_or_default()
        .iter()
        .map(|user| user.as_str().to_owned())
        .collect();
    online.sort();
    online.dedup();
    Ok(axum::Json(RoomDetail {
        room: summary(&state, room),
        online,
    }))
}

/// Adds a member to a room. Only a member (or the room's creator) may add one.
#[utoipa::path(
    post,
    path = "/rooms/{room}/members",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    request_body = AddMember,
    responses(
        (status = 204, description = "Added (or already a member)"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Caller not a member", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "Invalid user id, or a field missing", body = ErrorBody),
    )
)]
pub async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<StatusCode, ApiError> {
    let room = find_room(&state, &name).await?;
    let creator = room.created_by.as_deref() == Some(user.user_id.as_str());
    if !creator && !state.store.is_member(&room.name, &user.user_id).await? {
        return Err(ApiError::Forbidden(format!(
            "only members of '{}' may add members",
            room.name
        )));
    }
    if body.user_id.trim().is_empty() {
        return Err(ApiError::Invalid("user_id is empty".into()));
    }
    state.store.add_member(&room.name, &body.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of a room's history, oldest first.
#[utoipa::path(
    get,
    path = "/rooms/{room}/messages",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name"), HistoryQuery),
    responses(
        (status = 200, description = "Messages in ascending seq", body = MessagePage),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Private room, caller not a member", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 422, description = "limit out of 1..=200", body = ErrorBody),
    )
)]
pub async fn messages(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<axum::Json<MessagePage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let room = find_room(&state, &name).await?;
    check_access(&state, &room, Some(&user)).await?;
    let messages = state
        .store
        .history(&room.name, query.before.map(Seq), limit)
        .await?;
    Ok(axum::Json(MessagePage {
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}
