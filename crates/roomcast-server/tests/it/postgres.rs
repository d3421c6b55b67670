//! The server on PostgreSQL (`DATABASE_URL`), the store several nodes share: the same chat
//! guarantees as on SQLite. Skipped with a note when `DATABASE_URL` is unset; `.ci/run` sets it,
//! and an unreachable database fails the test.

use serde_json::json;
use sqlx::Connection;

use crate::common::*;

/// Runs `case` against a server whose store lives in a fresh schema, dropped afterwards.
async fn with_postgres_server<F, Fut>(case: F)
where
    F: FnOnce(TestServer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("note: DATABASE_URL is unset; skipping the server-on-PostgreSQL test");
        return;
    };
    let schema = format!("t_srv_{}", uuid::Uuid::new_v4().simple());
    let mut config = roomcast_server::ServerConfig::new(
        SECRET.as_bytes(),
        roomcast_server::StoreConfig::new(url.clone()),
    );
    config.store.options.pg_schema = Some(schema.clone());
    config.session.heartbeat_interval = std::time::Duration::ZERO;
    let server = TestServer::start_config(config, None).await;
    // On its own task, so a failing case still reaches the cleanup.
    let outcome = tokio::spawn(case(server)).await;
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("connecting to drop the test schema");
    // The schema name is ours (`t_srv_` and hex digits), not input.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .expect("dropping the test schema");
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test]
async fn on_postgresql_messages_are_sequenced_acked_and_resumed() {
    with_postgres_server(|server| async move {
        let mut ann = server.connect_as("/ws", "ann").await;
        ann.join("lobby").await;
        for i in 1..=5u64 {
            ann.send_json(json!({"type": "message", "room": "lobby", "content": format!("p{i}"), "client_msg_id": format!("k{i}")}))
                .await;
            assert_eq!(ann.recv_type("ack").await["seq"], i);
        }
        // A retry takes no seq.
        ann.send_json(json!({"type": "message", "room": "lobby", "content": "p1", "client_msg_id": "k1"}))
            .await;
        assert_eq!(ann.recv_type("ack").await["seq"], 1);

        let mut bob = server.connect_as("/ws", "bob").await;
        bob.send_json(json!({"type": "join", "room": "lobby", "since": 2}))
            .await;
        bob.recv_type("join").await;
        for i in 3..=5u64 {
            let message = bob.recv_json().await;
            assert_eq!((message["seq"].as_u64(), message["content"].as_str()), (Some(i), Some(format!("p{i}").as_str())));
        }
        assert_eq!(bob.recv_json().await["type"], "user_list");
    })
    .await;
}
