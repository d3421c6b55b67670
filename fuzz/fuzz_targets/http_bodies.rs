//! The HTTP API's request bodies and query strings (`crates/roomcast-server/src/api/`), read by
//! the same extractors the server runs: `axum::Json::from_bytes` (serde_json, as `ApiJson`
//! does after the content-type check) for every body type, and `axum::extract::Query` for
//! every query type, then the checks the handlers apply first. A rejection is turned into the
//! `ApiError` (status and message) the server would answer with; building the response itself
//! (one JSON string) is left out: it halved the executions per second.
//!
//! Input: the bytes are tried as each body, and (when they make a valid URI after `/?`) as
//! each query string.
#![no_main]

use axum::Json;
use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use roomcast::RoomName;
use roomcast_server::api::ApiError;
use roomcast_server::api::accounts::{Credentials, RefreshRequest, validate_username};
use roomcast_server::api::codes::{CreateRoomQuery, JoinRoomQuery};
use roomcast_server::api::rooms::{AddMember, CreateRoom, HistoryQuery, RoomListQuery};
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    if let Some(body) = body::<Credentials>(data) {
        let _ = validate_username(&body.username).map_err(|err| err.to_string());
    }
    let _ = body::<RefreshRequest>(data);
    if let Some(body) = body::<CreateRoom>(data) {
        let _ = RoomName::new(&body.name).map_err(|err| err.to_string());
    }
    let _ = body::<AddMember>(data);

    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/?{query}").parse::<Uri>() else {
        return;
    };
    let _ = query_of::<CreateRoomQuery>(&uri);
    let _ = query_of::<JoinRoomQuery>(&uri);
    let _ = query_of::<HistoryQuery>(&uri);
    let _ = query_of::<RoomListQuery>(&uri);
});

fn body<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    Json::<T>::from_bytes(data)
        .map(|Json(body)| body)
        .map_err(|rejection| ApiError::from(rejection).to_string())
        .ok()
}

fn query_of<T: DeserializeOwned>(uri: &Uri) -> Option<T> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::from(rejection).to_string())
        .ok()
}
