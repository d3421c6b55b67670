//! Several nodes as one server: real Redis (`REDIS_URL`) between them, one PostgreSQL schema
//! (`DATABASE_URL`) under them, each test on its own Redis prefix and schema.

use std::collections::HashMap;

use serde_json::json;
use sqlx::Connection;

use crate::common::*;

/// `n` servers sharing a fresh PostgreSQL schema and a fresh Redis prefix; the schema is
/// dropped when the returned guard is.
struct Cluster {
    nodes: Vec<TestServer>,
    url: String,
    schema: String,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let url =
            std::env::var("DATABASE_URL").expect("DATABASE_URL: the cluster tests need PostgreSQL");
        let redis = std::env::var("REDIS_URL").expect("REDIS_URL: the cluster tests need Redis");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("t_cluster_{id}");
        let mut nodes = Vec::new();
        for _ in 0..n {
            let mut config = roomcast_server::ServerConfig::new(
                SECRET.as_bytes(),
                roomcast_server::StoreConfig::new(url.clone()),
            );
            config.store.options.pg_schema = Some(schema.clone());
            config.session.heartbeat_interval = std::time::Duration::ZERO;
            config.redis = Some(roomcast_server::RedisConfig {
                url: redis.clone(),
                prefix: format!("test:{id}:"),
            });
            nodes.push(TestServer::start_config(config, None).await);
        }
        Self { nodes, url, schema }
    }

    async fn drop_schema(self) {
        let Self { nodes, url, schema } = self;
        drop(nodes);
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("connecting to PostgreSQL");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .expect("dropping the test schema");
    }
}

/// Reads `client`'s messages in `room` until it has `count`, and returns their `(seq, content)`.
async fn messages(client: &mut TestClient, count: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let frame = client.recv_type("message").await;
        seen.push((
            frame["seq"]
                .as_u64()
                .expect("a persisted message has a seq"),
            frame["content"].as_str().unwrap().to_owned(),
        ));
    }
    seen
}

#[tokio::test]
async fn a_message_sent_on_one_node_reaches_members_on_the_other_with_its_seq() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann = a.connect_as("/ws/auth", "ann").await;
    let mut bob = b.connect_as("/ws/auth", "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    // Bob's join crossed to node A.
    let joined = ann.recv_type("join").await;
    assert_eq!(joined["user_id"], "bob");

    ann.send_json(json!({"type": "message", "room": "lobby", "content": "from a"}))
        .await;
    assert_eq!(messages(&mut bob, 1).await, [(1, "from a".to_owned())]);
    bob.send_json(json!({"type": "message", "room": "lobby", "content": "from b"}))
        .await;
    assert_eq!(
        messages(&mut ann, 2).await,
        [(1, "from a".to_owned()), (2, "from b".to_owned())]
    );
    cluster.drop_schema().await;
}

#[tokio::test]
#[ignore = "needs the cross-node reorder step"]
async fn concurrent_publishers_on_two_nodes_are_seen_by_everyone_in_seq_order_with_none_lost() {
    let cluster = Cluster::start(2).await;
    let mut publishers = Vec::new();
    let mut readers = Vec::new();
    for (at, node) in cluster.nodes.iter().enumerate() {
        let mut publisher = node.connect_as("/ws/auth", &format!("p{at}")).await;
        publisher.join("lobby").await;
        publishers.push(publisher);
        let mut reader = node.connect_as("/ws/auth", &format!("r{at}")).await;
        reader.join("lobby").await;
        readers.push(reader);
    }
    const EACH: usize = 40;
    for i in 0..EACH {
        for (at, publisher) in publishers.iter_mut().enumerate() {
            publisher
                .send_json(
                    json!({"type": "message", "room": "lobby", "content": format!("{at}-{i}")}),
                )
                .await;
        }
    }
    let total = EACH * publishers.len();
    for reader in &mut readers {
        let seen = messages(reader, total).await;
        let seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=total as u64).collect::<Vec<_>>(),
            "every seq once, in order"
        );
        // Each publisher's messages in the order it sent them.
        let mut next: HashMap<char, usize> = HashMap::new();
        for (_, content) in &seen {
            let (from, i) = content.split_once('-').unwrap();
            let expected = next.entry(from.chars().next().unwrap()).or_insert(0);
            assert_eq!(i.parse::<usize>().unwrap(), *expected, "{content}");
            *expected += 1;
        }
    }
    cluster.drop_schema().await;
}
