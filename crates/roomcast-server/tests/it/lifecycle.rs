//! Life cycle: health, shutdown with 1001, WEBSOCKET_ENABLED.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::common::*;

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let server = TestServer::start().await;
    let mut ann = server.connect_as("/ws/lobby", "ann").await;
    let mut bob = server.connect_as("/ws", "bob").await;
    let addr = server.addr;
    server.shutdown().await;
    for client in [&mut ann, &mut bob] {
        let frame = client.expect_close(1001).await;
        assert_eq!(frame.reason.as_str(), "server shutting down");
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn healthz_answers_ok() {
    let (router, _dir) = test_app(|_| {}).await;
    let response = router
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn websocket_endpoints_are_absent_when_disabled() {
    let (router, _dir) = test_app(|config| config.websocket_enabled = false).await;
    for path in ["/ws", "/ws/lobby", "/ws/auth", "/ws/auth/lobby"] {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
