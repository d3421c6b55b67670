//! The admin API, for access tokens whose claims carry `"role": "admin"` (`roomcast token
//! --role admin` mints one): who is connected where, disconnecting a user, and messages from
//! `system`. Any other valid token gets 403, no token 401.
//!
//! On a single node what it shows is the hub's registry. On a node of several (`REDIS_URL`),
//! `GET /admin/rooms` and `GET /admin/rooms/{room}/connections` ask every live node and merge
//! the answers (`everywhere`), saying which nodes answered; a disconnect reaches every node
//! through the broker. `POST /admin/rooms/{room}/messages` is stored and sequenced like any
//! chat message.

mod everywhere;

pub(crate) use everywhere::answer;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use roomcast::{CloseReason, ConnectionInfo, RoomName, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::extract::bearer;
use super::rooms::MessageView;
use crate::AppState;
use crate::chat::persist_system;

/// The claim and value that make a token an admin's.
pub const ADMIN_ROLE: (&str, &str) = ("role", "admin");

/// An authenticated caller whose token has `"role": "admin"`.
#[derive(Debug, Clone)]
pub struct AdminUser {
    /// The admin's user id (`sub`), for the log.
    pub user_id: String,
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(parts)?.ok_or_else(|| ApiError::Unauthorized("token required".into()))?;
        let (identity, claims) = state.auth.authenticate(token).await?;
        let (claim, role) = ADMIN_ROLE;
        if claims.claim(claim) != Some(role) {
            return Err(ApiError::Forbidden(
                "the admin API needs a token with \"role\": \"admin\"".into(),
            ));
        }
        Ok(Self {
            user_id: identity.user_id.as_str().to_owned(),
        })
    }
}

/// A user in a room, with how many of their connections are in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OnlineMember {
    /// The user's id.
    pub user_id: String,
    /// The user's display name.
    pub username: String,
    /// Their connections in the room.
    pub connections: usize,
}

/// A room with someone in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminRoom {
    /// The room's name.
    pub room: String,
    /// Connections in it.
    pub connections: usize,
    /// Users in it, by id.
    pub members: Vec<OnlineMember>,
}

/// `GET /admin/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminRooms {
    /// Every room with at least one connection, by name.
    pub rooms: Vec<AdminRoom>,
    /// On a node of several: which nodes the answer covers.
    #[serde(flatten)]
    pub coverage: Coverage,
}

/// Which nodes an answer covers. On a single node every field is absent.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Coverage {
    /// The nodes whose connections are counted, this one first (node ids as 16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Live nodes that did not answer within a second: their connections are not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
    /// Whether the answer may leave connections out: a node did not answer, or the nodes could
    /// not be asked (Redis unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

/// One connection.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminConnection {
    /// Its id on its node.
    pub id: u64,
    /// The node it is on (16 hex digits), on a node of several: ids are per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its user's id.
    pub user_id: String,
    /// Its user's display name.
    pub username: String,
    /// The endpoint it came through, e.g. `/ws/auth`.
    pub endpoint: String,
    /// The client's IP address (behind trusted proxies, the forwarded one); absent when unknown.
    pub client_ip: Option<String>,
    /// When it opened, Unix milliseconds.
    pub connected_at: i64,
}

/// `GET /admin/rooms/{room}/connections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminConnections {
    /// The room.
    pub room: String,
    /// Its connections, oldest first.
    pub connections: Vec<AdminConnection>,
    /// On a node of several: which nodes the answer covers.
    #[serde(flatten)]
    pub coverage: Coverage,
}

/// `POST /admin/users/{user_id}/disconnect`; both fields optional, the body may be empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Disconnect {
    /// The close code, 4000 to 4999; default 4001.
    #[schema(value_type = Option<u16>, minimum = 4000, maximum = 4999)]
    pub code: Option<f64>,
    /// The close reason, at most 123 bytes (30 characters always fit); default
    /// `disconnected by an administrator`.
    #[schema(max_length = 30)]
    pub reason: Option<String>,
}

/// How many connections were closed or reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct Affected {
    /// Connections on this node.
    pub connections: usize,
}

/// `POST /admin/rooms/{room}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SystemMessage {
    /// The text: not blank.
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub content: String,
    /// Structured data sent with it: a JSON object.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// `POST /admin/broadcast`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Notice {
    /// The text: not blank.
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub content: String,
}

/// The longest close reason a close frame holds (125 bytes less the code's two).
const MAX_CLOSE_REASON: usize = 123;

fn view(conn: ConnectionInfo, node: Option<String>) -> AdminConnection {
    AdminConnection {
        id: conn.id.0,
        node,
        user_id: conn.user.id.as_str().to_owned(),
        username: conn.user.username.to_string(),
        endpoint: conn.endpoint.to_owned(),
        client_ip: conn.client_addr.map(|ip| ip.to_string()),
        connected_at: conn.connected_at_ms,
    }
}

/// A room named in the path; a name no room can have is a room that does not exist (as in
/// the rooms API).
fn room_name(name: &str) -> Result<RoomName, ApiError> {
    RoomName::new(name).map_err(|_| ApiError::NotFound(format!("room '{name}' not found")))
}

fn check_text(state: &AppState, content: &str) -> Result<(), ApiError> {
    if content.trim().is_empty() {
        return Err(ApiError::Invalid("content is empty".into()));
    }
    state.check_length(content).map_err(ApiError::Invalid)
}

/// Every room with someone in it, on every node: its connections and online members. On a node
/// of several the other nodes are asked (for at most a second), and `nodes`, `missing` and
/// `partial` say which answered.
#[utoipa::path(
    get,
    path = "/admin/rooms",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rooms by name", body = AdminRooms),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Not an admin's token", body = ErrorBody),
    )
)]
pub async fn rooms(State(state): State<AppState>, _: AdminUser) -> axum::Json<AdminRooms> {
    let local = local_rooms(&state.hub);
    axum::Json(everywhere::rooms(&state, local).await)
}

/// The rooms with someone in them on this node.
fn local_rooms(hub: &roomcast::Hub) -> Vec<AdminRoom> {
    let mut names = hub.rooms();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let conns = hub.room_connections(&name);
            if conns.is_empty() {
                return None;
            }
            let mut members: Vec<OnlineMember> = Vec::new();
            for conn in &conns {
                match members
                    .iter_mut()
                    .find(|member| member.user_id == conn.user.id.as_str())
                {
                    Some(member) => member.connections += 1,
                    None => members.push(OnlineMember {
                        user_id: conn.user.id.as_str().to_owned(),
                        username: conn.user.username.to_string(),
                        connections: 1,
                    }),
                }
            }
            members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            Some(AdminRoom {
                room: name.as_str().to_owned(),
                connections: conns.len(),
                members,
            })
        })
        .collect()
}

/// The connections in a room on every node, oldest first. On a node of several the other
/// nodes are asked (for at most a second), each connection names its node, and `nodes`,
/// `missing` and `partial` say which answered.
#[utoipa::path(
    get,
    path = "/admin/rooms/{room}/connections",
    tag = "admin",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, description = "The room's connections", body = AdminConnections),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Not an admin's token", body = ErrorBody),
        (status = 404, description = "No such room, and no one in it", body = ErrorBody),
    )
)]
pub async fn room_connections(
    State(state): State<AppState>,
    _: AdminUser,
    Path(name): Path<String>,
) -> Result<axum::Json<AdminConnections>, ApiError> {
    let room = room_name(&name)?;
    let node = state
        .cluster
        .as_ref()
        .map(|_| state.hub.node_id().to_string());
    let local = state
        .hub
        .room_connections(&room)
        .into_iter()
        .map(|conn| view(conn, node.clone()))
        .collect();
    let answer = everywhere::connections(&state, &room, local).await;
    if answer.connections.is_empty() && state.store.room(room.as_str()).await?.is_none() {
        return Err(ApiError::NotFound(format!("room '{room}' not found")));
    }
    Ok(axum::Json(answer))
}

/// Closes every connection of a user, on every node, with 4001 or the code given; answers how
/// many were on this node.
#[utoipa::path(
    post,
    path = "/admin/users/{user_id}/disconnect",
    tag = "admin",
    security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The user's id")),
    request_body(content = Disconnect, description = "Optional: `{}` or no body for 4001"),
    responses(
        (status = 200, description = "How many connections were closed on this node (other nodes close theirs too)", body = Affected),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Not an admin's token", body = ErrorBody),
        (status = 422, description = "Code outside 4000-4999, or reason too long", body = ErrorBody),
    )
)]
pub async fn disconnect(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Affected>, ApiError> {
    let request: Disconnect = if body.iter().all(u8::is_ascii_whitespace) {
        Disconnect::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::BadRequest(StatusCode::BAD_REQUEST, err.to_string()))?
    };
    // A JSON number: `4003` and `4003.0` are the same integer.
    let code = match request.code {
        None => roomcast::close_code::UNAUTHORIZED,
        Some(code) if code.fract() == 0.0 && (4000.0..=4999.0).contains(&code) => code as u16,
        Some(_) => {
            return Err(ApiError::Invalid(
                "code must be a whole number between 4000 and 4999".into(),
            ));
        }
    };
    let reason = request
        .reason
        .unwrap_or_else(|| "disconnected by an administrator".to_owned());
    if reason.len() > MAX_CLOSE_REASON {
        return Err(ApiError::Invalid(format!(
            "reason is longer than {MAX_CLOSE_REASON} bytes"
        )));
    }
    let connections = state
        .hub
        .disconnect_user_everywhere(
            &UserId::from(user_id.as_str()),
            CloseReason::new(code, reason),
        )
        .await
        .map_err(|err| ApiError::internal(err.to_string()))?;
    tracing::info!(admin = %admin.user_id, user = %user_id, code, connections, "admin disconnected a user");
    Ok(axum::Json(Affected { connections }))
}

/// A message from `system` to a room: stored with the room's next `seq` and delivered like any
/// other, in every dialect.
#[utoipa::path(
    post,
    path = "/admin/rooms/{room}/messages",
    tag = "admin",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    request_body = SystemMessage,
    responses(
        (status = 201, description = "Stored and sent", body = MessageView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Not an admin's token", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "Blank or too long, or data not an object", body = ErrorBody),
    )
)]
pub async fn room_message(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SystemMessage>,
) -> Result<(StatusCode, axum::Json<MessageView>), ApiError> {
    let room = room_name(&name)?;
    check_text(&state, &body.content)?;
    if body
        .data
        .as_ref()
        .is_some_and(|data| !data.is_object() && !data.is_null())
    {
        return Err(ApiError::Invalid("data must be a JSON object".into()));
    }
    if state.store.room(room.as_str()).await?.is_none() {
        return Err(ApiError::NotFound(format!("room '{room}' not found")));
    }
    let stored = persist_system(&state, &room, body.content, body.data).await?;
    tracing::info!(admin = %admin.user_id, %room, seq = stored.seq.0, "admin sent a system message");
    Ok((StatusCode::CREATED, axum::Json(MessageView::from(stored))))
}

/// A notice to every connection on this node, shown as a message from `system` (not stored).
#[utoipa::path(
    post,
    path = "/admin/broadcast",
    tag = "admin",
    security(("bearer" = [])),
    request_body = Notice,
    responses(
        (status = 200, description = "How many connections it reached", body = Affected),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 403, description = "Not an admin's token", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "Blank or too long", body = ErrorBody),
    )
)]
pub async fn broadcast(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(body): ApiJson<Notice>,
) -> Result<axum::Json<Affected>, ApiError> {
    check_text(&state, &body.content)?;
    let connections = state
        .hub
        .notify_all(&body.content)
        .await
        .map_err(|err| ApiError::internal(err.to_string()))?;
    tracing::info!(admin = %admin.user_id, connections, "admin broadcast a notice");
    Ok(axum::Json(Affected { connections }))
}
