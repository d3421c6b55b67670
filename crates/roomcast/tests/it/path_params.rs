//! Path parameters of the route reach the session: `/ws/{room}` exposes `cx.path_param("room")`.

use crate::common::{TestClient, TestServer, token};

#[tokio::test]
async fn a_route_with_a_room_segment_exposes_it_as_a_path_param() {
    let server = TestServer::builder().path("/ws/{room}").start().await;
    let url = server.url(&format!("/ws/lobby?token={}", token("alice")));
    let mut alice = TestClient::connect(url, "alice").await;

    let welcome = alice.recv_json().await;

    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["room"], "lobby");
}

#[tokio::test]
async fn a_route_without_segments_has_no_path_params() {
    let server = TestServer::start().await;
    let url = server.url(&format!("/ws?token={}", token("alice")));
    let mut alice = TestClient::connect(url, "alice").await;

    let welcome = alice.recv_json().await;

    assert_eq!(welcome["type"], "welcome");
    assert!(welcome["room"].is_null(), "got {welcome}");
}
