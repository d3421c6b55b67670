//! Several nodes as one server: real Redis (`REDIS_URL`) between them, one PostgreSQL schema
//! (`DATABASE_URL`) under them, each test on its own Redis prefix and schema. Skipped with a
//! note when either variable is unset (`cargo test` on a machine without the services);
//! `.ci/run` sets both, and an unreachable service fails the test.

use std::collections::HashMap;

use serde_json::json;
use sqlx::Connection;

use crate::common::*;

/// `n` servers sharing a fresh PostgreSQL schema and a fresh Redis prefix; the schema is
/// dropped when the returned guard is.
/// Redis databases of their own for the two tests that cut their nodes' subscriptions (see
/// [`kill_subscribers`]); every other test stays on the database `REDIS_URL` names.
const KILL_DB: u8 = 14;
const RESUBSCRIBE_DB: u8 = 15;

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<TestServer>,
    url: String,
    schema: String,
    /// The nodes' `ROOMCAST_REDIS_PREFIX`: every key and channel of this test.
    pub(crate) prefix: String,
}

impl Cluster {
    async fn start(n: usize) -> Option<Self> {
        Self::launch(n, None, |_| {}).await
    }

    /// Nodes whose Redis connections select database `db` (pub/sub ignores it; `CLIENT LIST`
    /// shows it), so a test can cut exactly its own nodes' subscriptions with
    /// [`kill_subscribers`] and leave every other test's running on the same Redis alone.
    async fn start_on(n: usize, db: Option<u8>) -> Option<Self> {
        Self::launch(n, db, |_| {}).await
    }

    /// As [`Cluster::start`], each node's configuration changed by `edit` last.
    pub(crate) async fn start_with(
        n: usize,
        edit: impl Fn(&mut roomcast_server::ServerConfig),
    ) -> Option<Self> {
        Self::launch(n, None, edit).await
    }

    async fn launch(
        n: usize,
        db: Option<u8>,
        edit: impl Fn(&mut roomcast_server::ServerConfig),
    ) -> Option<Self> {
        let (Ok(url), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
        else {
            eprintln!("note: DATABASE_URL or REDIS_URL is unset; skipping a cluster test");
            return None;
        };
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let redis = match db {
            Some(db) => with_db(&redis, db),
            None => redis,
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("t_cluster_{id}");
        let prefix = format!("test:{id}:");
        let mut nodes = Vec::new();
        for _ in 0..n {
            let mut config = roomcast_server::ServerConfig::new(
                SECRET.as_bytes(),
                roomcast_server::StoreConfig::new(url.clone()),
            );
            config.store.options.pg_schema = Some(schema.clone());
            config.session.heartbeat_interval = std::time::Duration::ZERO;
            // Publishers here send faster than a person may.
            config.limits = roomcast_server::limits::LimitsConfig::off();
            config.redis = Some(roomcast_server::RedisConfig {
                url: redis.clone(),
                prefix: prefix.clone(),
                presence_ttl: std::time::Duration::from_secs(2),
            });
            edit(&mut config);
            nodes.push(TestServer::start_config(config, None).await);
        }
        Some(Self {
            nodes,
            url,
            schema,
            prefix,
        })
    }

    /// A node on the same database that is not in the cluster: what it commits never crosses
    /// Redis, as if pub/sub had lost it.
    async fn lone_node(&self) -> TestServer {
        let mut config = roomcast_server::ServerConfig::new(
            SECRET.as_bytes(),
            roomcast_server::StoreConfig::new(self.url.clone()),
        );
        config.store.options.pg_schema = Some(self.schema.clone());
        config.limits = roomcast_server::limits::LimitsConfig::off();
        TestServer::start_config(config, None).await
    }

    pub(crate) async fn drop_schema(self) {
        let Self {
            nodes, url, schema, ..
        } = self;
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
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
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
async fn concurrent_publishers_on_two_nodes_are_seen_by_everyone_in_seq_order_with_none_lost() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
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

#[tokio::test]
async fn after_the_redis_subscription_drops_delivery_resumes_and_the_lost_messages_come_from_the_store()
 {
    let Some(cluster) = Cluster::start_on(2, Some(KILL_DB)).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut reader = a.connect_as("/ws/auth", "reader").await;
    reader.join("lobby").await;
    let mut publisher = b.connect_as("/ws/auth", "writer").await;
    publisher.join("lobby").await;
    let send = |i: usize| json!({"type": "message", "room": "lobby", "content": format!("m{i}")});
    for i in 1..=10 {
        publisher.send_json(send(i)).await;
    }
    assert_eq!(messages(&mut reader, 10).await.last().unwrap().0, 10);

    // Both nodes' subscriber connections are cut; they reconnect with backoff. Messages published meanwhile are lost to node A's subscription.
    let killed = kill_subscribers(KILL_DB).await;
    assert!(killed >= 2, "both nodes' subscribers were cut ({killed})");
    for i in 11..=30 {
        publisher.send_json(send(i)).await;
    }
    let seen = messages(&mut reader, 20).await;
    let seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (11..=30).collect::<Vec<_>>(),
        "every seq once, in order"
    );

    // Messages that never crossed Redis (committed by a node outside the cluster) reach the
    // reader from the store as soon as a later one shows the gap, in order, before it.
    let lone = cluster.lone_node().await;
    let mut outsider = lone.connect_as("/ws/auth", "outsider").await;
    outsider.join("lobby").await;
    for i in 31..=33 {
        outsider.send_json(send(i)).await;
        outsider.recv_type("ack").await;
    }
    publisher.send_json(send(34)).await;
    let seen = messages(&mut reader, 4).await;
    assert_eq!(
        seen,
        (31..=34).map(|i| (i, format!("m{i}"))).collect::<Vec<_>>(),
        "the lost three from the store, then the live one"
    );
    drop(lone);
    cluster.drop_schema().await;
}

#[tokio::test]
async fn the_user_list_names_members_of_every_node() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann = a.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    let mut bob = b.connect_as("/ws/auth", "bob").await;
    let list = bob.join("lobby").await;
    assert_eq!(list["data"], json!(["ann", "bob"]), "{list}");
    assert_eq!(
        list["users"],
        json!([{"user_id": "ann", "username": "Ann"}, {"user_id": "bob", "username": "Bob"}])
    );
    cluster.drop_schema().await;
}

#[tokio::test]
async fn a_user_on_two_nodes_is_joined_once_and_left_once() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut cat = b.connect_as("/ws/auth", "cat").await;
    cat.join("lobby").await;
    let mut ann_a = a.connect_as("/ws/auth", "ann").await;
    ann_a.join("lobby").await;
    assert_eq!(cat.recv_type("join").await["user_id"], "ann");
    // Ann's second tab, on the other node: no second join.
    let mut ann_b = b.connect_as("/ws/auth", "ann").await;
    ann_b.join("lobby").await;
    // Her first tab goes: she is still in the room (on node B), so no leave.
    ann_a.close().await;
    a.wait_for(|hub| hub.connection_count() == 0).await;
    cat.send_json(json!({"type": "ping"})).await;
    let next = cat.recv_json().await;
    assert_eq!(
        next["type"], "pong",
        "no join or leave for Ann's second tab: {next}"
    );
    // Her last tab goes: one leave.
    ann_b.close().await;
    let left = cat.recv_type("leave").await;
    assert_eq!(left["user_id"], "ann");
    cat.send_json(json!({"type": "ping"})).await;
    assert_eq!(cat.recv_json().await["type"], "pong", "one leave, no more");
    cluster.drop_schema().await;
}

/// A PostgreSQL database of its own, for `roomcast serve` processes (which take no schema);
/// dropped by [`drop_database`].
async fn fresh_database() -> Option<(String, String)> {
    let (Ok(url), Ok(_)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL")) else {
        eprintln!("note: DATABASE_URL or REDIS_URL is unset; skipping a cluster test");
        return None;
    };
    let name = format!("t_nodes_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("connecting to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    let (base, _) = url.rsplit_once('/').expect("a database URL ends in /name");
    Some((format!("{base}/{name}"), name))
}

async fn drop_database(name: &str) {
    let url = std::env::var("DATABASE_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("connecting to PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("dropping the test database");
}

/// Two `roomcast serve` processes sharing Redis (on a prefix of their own) and a database,
/// presence leases of 2 s.
async fn two_processes(database: &str) -> (crate::ops::Roomcast, crate::ops::Roomcast) {
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL: the cluster tests need Redis");
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let env = [
        ("REDIS_URL", redis.as_str()),
        ("ROOMCAST_REDIS_PREFIX", prefix.as_str()),
        ("ROOMCAST_PRESENCE_TTL", "2s"),
        ("WEBSOCKET_HEARTBEAT_INTERVAL", "0"),
    ];
    let a = crate::ops::Roomcast::start(database, &env).await;
    let b = crate::ops::Roomcast::start(database, &env).await;
    (a, b)
}

#[tokio::test]
async fn the_users_of_a_node_killed_with_sigkill_leave_everyones_list_within_the_ttl_once() {
    let Some((database, name)) = fresh_database().await else {
        return;
    };
    let (mut a, b) = two_processes(&database).await;
    let mut ann = a
        .connect(&format!("/ws/auth?token={}", token("ann", "Ann")))
        .await;
    ann.join("lobby").await;
    let mut bob = b
        .connect(&format!("/ws/auth?token={}", token("bob", "Bob")))
        .await;
    let list = bob.join("lobby").await;
    assert_eq!(list["data"], json!(["ann", "bob"]));

    a.sigkill().await;
    // The lease lapses 2 s after node A's last heartbeat; node B reaps it at its next one.
    let left = bob.recv_type("leave").await;
    assert_eq!(
        (&left["user_id"], &left["room"]),
        (&json!("ann"), &json!("lobby"))
    );
    bob.send_json(json!({"type": "ping"})).await;
    assert_eq!(bob.recv_json().await["type"], "pong", "announced once");
    // And a newcomer's list no longer has her.
    let mut cat = b
        .connect(&format!("/ws/auth?token={}", token("cat", "Cat")))
        .await;
    assert_eq!(cat.join("lobby").await["data"], json!(["bob", "cat"]));
    drop((ann, bob, cat, a, b));
    drop_database(&name).await;
}

#[tokio::test]
async fn a_user_who_reconnects_to_another_node_within_the_ttl_does_not_flap() {
    let Some((database, name)) = fresh_database().await else {
        return;
    };
    let (mut a, b) = two_processes(&database).await;
    let ann_token = token("ann", "Ann");
    let mut ann = a.connect(&format!("/ws/auth?token={ann_token}")).await;
    ann.join("lobby").await;
    let mut bob = b
        .connect(&format!("/ws/auth?token={}", token("bob", "Bob")))
        .await;
    bob.join("lobby").await;

    a.sigkill().await;
    drop(ann);
    let mut ann = b.connect(&format!("/ws/auth?token={ann_token}")).await;
    assert_eq!(ann.join("lobby").await["data"], json!(["ann", "bob"]));
    // Past the dead node's lease and its reaping: neither a leave nor a join for Ann.
    bob.expect_silence(std::time::Duration::from_secs(4)).await;
    drop((ann, bob, a, b));
    drop_database(&name).await;
}

#[tokio::test]
async fn an_admin_disconnect_closes_the_users_connections_on_every_node() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann_a = a.connect_as("/ws/auth", "ann").await;
    let mut ann_b = b.connect_as("/ws/auth", "ann").await;
    let mut bob = b.connect_as("/ws/auth", "bob").await;
    a.add_user("root").await;
    let admin = sign(&json!({
        "sub": "root", "type": "access", "exp": now() + 600, "role": "admin",
    }));
    let (status, answer) = http(
        a,
        "POST",
        "/admin/users/ann/disconnect",
        Some(&admin),
        Some(json!({"code": 4003, "reason": "take a break"})),
    )
    .await;
    assert_eq!(
        (status, answer),
        (200, json!({"connections": 1})),
        "one on this node"
    );
    for ann in [&mut ann_a, &mut ann_b] {
        assert_eq!(ann.expect_close(4003).await.reason.as_str(), "take a break");
    }
    bob.send_json(json!({"type": "ping"})).await;
    assert_eq!(bob.recv_json().await["type"], "pong", "Bob stays");
    cluster.drop_schema().await;
}

#[tokio::test]
async fn a_rooms_first_message_on_a_node_is_not_taken_for_its_start_when_an_earlier_one_is_late() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let b = &cluster.nodes[1];
    // The reader joins an empty room: its replay sent nothing, so the room starts at seq 1.
    let mut reader = b.connect_as("/ws/auth", "reader").await;
    reader.join("fresh").await;
    // Seq 1 never crosses Redis (committed outside the cluster: as if it were still on its
    // way); seq 2 is committed on the reader's own node and arrives first.
    let lone = cluster.lone_node().await;
    let mut outsider = lone.connect_as("/ws/auth", "outsider").await;
    outsider.join("fresh").await;
    outsider
        .send_json(json!({"type": "message", "room": "fresh", "content": "first"}))
        .await;
    assert_eq!(outsider.recv_type("ack").await["seq"], 1);
    let mut writer = b.connect_as("/ws/auth", "writer").await;
    writer.join("fresh").await;
    writer
        .send_json(json!({"type": "message", "room": "fresh", "content": "second"}))
        .await;
    assert_eq!(
        messages(&mut reader, 2).await,
        [(1, "first".to_owned()), (2, "second".to_owned())]
    );
    drop(lone);
    cluster.drop_schema().await;
}

#[tokio::test]
async fn after_a_resubscribe_a_quiet_rooms_lost_tail_is_read_from_the_store() {
    let Some(cluster) = Cluster::start_on(2, Some(RESUBSCRIBE_DB)).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut reader = a.connect_as("/ws/auth", "reader").await;
    reader.join("quiet").await;
    let mut writer = b.connect_as("/ws/auth", "writer").await;
    writer.join("quiet").await;
    writer
        .send_json(json!({"type": "message", "room": "quiet", "content": "seen"}))
        .await;
    assert_eq!(messages(&mut reader, 1).await, [(1, "seen".to_owned())]);
    // Seq 2 never crosses Redis (as if lost while a subscription was down), and nothing is
    // said after it: no later message will show the gap.
    let lone = cluster.lone_node().await;
    let mut outsider = lone.connect_as("/ws/auth", "outsider").await;
    outsider.join("quiet").await;
    outsider
        .send_json(json!({"type": "message", "room": "quiet", "content": "lost"}))
        .await;
    assert_eq!(outsider.recv_type("ack").await["seq"], 2);
    // The subscriptions drop and come back: the nodes re-read their rooms' tails.
    assert!(kill_subscribers(RESUBSCRIBE_DB).await >= 2);
    assert_eq!(messages(&mut reader, 1).await, [(2, "lost".to_owned())]);
    drop(lone);
    cluster.drop_schema().await;
}

/// `url` with its database number replaced by `db`.
fn with_db(url: &str, db: u8) -> String {
    let authority = url.find("://").map_or(0, |at| at + 3);
    let end = url[authority..]
        .find('/')
        .map_or(url.len(), |at| authority + at);
    format!("{}/{db}", &url[..end])
}

/// Cuts every pub/sub connection that selected database `db`: the nodes of one test started
/// with [`Cluster::start_on`], and nobody else's (`CLIENT KILL TYPE pubsub` would cut every
/// subscriber on this Redis, other tests' and benchmarks' too). Returns how many were cut.
async fn kill_subscribers(db: u8) -> usize {
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg(&["LIST", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let wanted = format!("db={db}");
    let ids: Vec<&str> = list
        .lines()
        .filter(|line| line.split(' ').any(|field| field == wanted))
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .collect();
    for id in &ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "ID", id])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    ids.len()
}

/// A connection to Redis, for what the tests do behind the nodes' backs.
pub(crate) async fn redis() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Deletes every key under `prefix`, in one `DEL` (atomic, as a Redis restart or a `FLUSHDB`
/// is: a node never sees half of it). Never `FLUSHALL`: other tests share this Redis.
pub(crate) async fn forget_everything_under(prefix: &str) -> usize {
    let mut conn = redis().await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    // Bounded: SCAN ends at cursor 0; 10,000 rounds of 1,000 is far past this test's keys.
    for _ in 0..10_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "SCAN finished");
    keys.sort();
    keys.dedup();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    keys.len()
}

/// Asks for `room`'s `user_list` until it names `expected` (bounded: 5 s); fails on any other
/// frame in between (a join or leave would be a spurious announcement).
async fn wait_for_user_list(client: &mut TestClient, room: &str, expected: &[&str]) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        client
            .send_json(json!({"type": "user_list", "room": room}))
            .await;
        let list = client.recv_json().await;
        assert_eq!(list["type"], "user_list", "nothing but the list: {list}");
        if list["data"] == json!(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the list did not come back to {expected:?}: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn after_redis_loses_its_data_each_node_writes_its_members_again_without_announcing() {
    let Some(cluster) = Cluster::start_with(2, |config| {
        config.limits.max_connections_per_user = 2;
    })
    .await
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann = a.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    let mut bob = b.connect_as("/ws/auth", "bob").await;
    bob.join("lobby").await;
    let mut cat = b.connect_as("/ws/auth", "cat").await;
    assert_eq!(
        cat.join("lobby").await["data"],
        json!(["ann", "bob", "cat"])
    );
    assert_eq!(ann.recv_type("join").await["user_id"], "bob");
    assert_eq!(ann.recv_type("join").await["user_id"], "cat");
    assert_eq!(bob.recv_type("join").await["user_id"], "cat");
    // Ann's second connection, on node B: her two are the bound over both nodes.
    let _ann_b = b.connect_as("/ws/auth", "ann").await;

    let deleted = forget_everything_under(&cluster.prefix).await;
    assert!(deleted > 0, "the nodes' keys were there");
    // Within a heartbeat (a third of the 2 s TTL) each node finds its lease gone and writes
    // its part again: every list names everyone, and no one was announced.
    wait_for_user_list(&mut ann, "lobby", &["ann", "bob", "cat"]).await;
    wait_for_user_list(&mut bob, "lobby", &["ann", "bob", "cat"]).await;
    // The connection counts came back too: a third connection of Ann's is refused.
    let mut third = b.connect_as("/ws/auth", "ann").await;
    assert_eq!(
        third.expect_close(1013).await.reason.as_str(),
        "too many connections"
    );
    // A leave after it is one, announced once (the counts are right, not doubled).
    cat.close().await;
    assert_eq!(ann.recv_type("leave").await["user_id"], "cat");
    assert_eq!(bob.recv_type("leave").await["user_id"], "cat");
    for client in [&mut ann, &mut bob] {
        client.send_json(json!({"type": "ping"})).await;
        assert_eq!(client.recv_json().await["type"], "pong", "nothing else");
    }
    cluster.drop_schema().await;
}

#[tokio::test]
async fn a_seed_004_joiner_is_listed_the_members_of_every_node() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann = a.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    let mut bob = b.connect_as("/ws/chat/lobby/", "bob").await;
    assert_eq!(
        bob.recv_json().await,
        json!({"type": "room_users_list", "users": [
            {"id": "ann", "username": "Ann"}, {"id": "bob", "username": "Bob"}]})
    );
    cluster.drop_schema().await;
}

#[tokio::test]
async fn a_users_connections_are_bounded_over_every_node() {
    let Some(cluster) = Cluster::start_with(2, |config| {
        config.limits.max_connections_per_user = 2;
    })
    .await
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ann_a = a.connect_as("/ws/auth", "ann").await;
    let _ann_b = b.connect_as("/ws/auth", "ann").await;
    // Two in all: a third is refused on either node, whichever endpoint.
    for (node, path) in [(b, "/ws/auth"), (a, "/ws/chat/lobby/")] {
        let mut third = node.connect_as(path, "ann").await;
        assert_eq!(
            third.expect_close(1013).await.reason.as_str(),
            "too many connections",
            "{path}"
        );
    }
    // Another user is not affected.
    let mut bob = b.connect_as("/ws/auth", "bob").await;
    bob.send_json(json!({"type": "ping"})).await;
    assert_eq!(bob.recv_json().await["type"], "pong");
    // One of Ann's goes: one more may come, on the other node. (A connection is counted
    // off in its `on_disconnect`, which ends before the hub lets it go.)
    ann_a.close().await;
    a.wait_for(|hub| !hub.is_connected(&"ann".into())).await;
    let mut again = b.connect_as("/ws/auth", "ann").await;
    assert!(
        admitted(&mut again).await,
        "a connection released on one node frees a place on the other"
    );
    cluster.drop_schema().await;
}

#[tokio::test]
async fn a_killed_nodes_connections_stop_counting_against_its_users_with_its_lease() {
    let Some((database, name)) = fresh_database().await else {
        return;
    };
    let redis_url = std::env::var("REDIS_URL").unwrap();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("ROOMCAST_REDIS_PREFIX", prefix.as_str()),
        ("ROOMCAST_PRESENCE_TTL", "2s"),
        ("ROOMCAST_MAX_CONNECTIONS_PER_USER", "1"),
        ("WEBSOCKET_HEARTBEAT_INTERVAL", "0"),
    ];
    let mut a = crate::ops::Roomcast::start(&database, &env).await;
    let b = crate::ops::Roomcast::start(&database, &env).await;
    let ann = format!("/ws/auth?token={}", token("ann", "Ann"));
    let mut first = a.connect(&ann).await;
    first.send_json(json!({"type": "ping"})).await;
    assert_eq!(first.recv_json().await["type"], "pong");
    b.connect(&ann).await.expect_close(1013).await;

    a.sigkill().await;
    drop(first);
    // Node A's lease lapses 2 s after its last heartbeat: from then on its count is not
    // counted (and its reaper takes it off). Retried, bounded: 8 s.
    let mut was_admitted = false;
    for _ in 0..40 {
        if admitted(&mut b.connect(&ann).await).await {
            was_admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(was_admitted, "a dead node's connections stop counting");
    drop((a, b));
    drop_database(&name).await;
}

/// Whether `client`'s connection was admitted: it answers a ping (a refused one is closed,
/// and a ping sent to it may fail or go unanswered).
async fn admitted(client: &mut TestClient) -> bool {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ping = Message::text(json!({"type": "ping"}).to_string());
    if client.ws.send(ping).await.is_err() {
        return false;
    }
    // Bounded: the answer or the close comes at once; 5 s is a stalled server.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains("pong") => return true,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return false,
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Err(_) => panic!("neither a pong nor a close within 5 s"),
        }
    }
}

fn admin_token() -> String {
    sign(&json!({"sub": "root", "type": "access", "exp": now() + 600, "role": "admin"}))
}

#[tokio::test]
async fn the_admin_api_lists_every_nodes_rooms_and_connections() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann = a.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    let mut ann_b = b.connect_as("/ws/auth", "ann").await;
    ann_b.join("lobby").await;
    let mut bob = b.connect_as("/ws/auth", "bob").await;
    bob.join("lobby").await;
    let mut cat = b.connect_as("/ws/auth", "cat").await;
    cat.join("garden").await;
    a.add_user("root").await;
    let admin = admin_token();
    let (node_a, node_b) = (a.hub.node_id().to_string(), b.hub.node_id().to_string());

    // Asked on node A, which has only Ann's first connection.
    let (status, rooms) = http(a, "GET", "/admin/rooms", Some(&admin), None).await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(
        rooms,
        json!({
            "rooms": [
                {"room": "garden", "connections": 1, "members": [
                    {"user_id": "cat", "username": "Cat", "connections": 1}]},
                {"room": "lobby", "connections": 3, "members": [
                    {"user_id": "ann", "username": "Ann", "connections": 2},
                    {"user_id": "bob", "username": "Bob", "connections": 1}]},
            ],
            "nodes": [node_a, node_b],
            "missing": [],
            "partial": false,
        })
    );
    let (status, listed) = http(
        a,
        "GET",
        "/admin/rooms/lobby/connections",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let mut seen: Vec<(String, String)> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["user_id"].as_str().unwrap().to_owned(),
                c["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = vec![
        ("ann".to_owned(), node_a.clone()),
        ("ann".to_owned(), node_b.clone()),
        ("bob".to_owned(), node_b.clone()),
    ];
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(listed["partial"], false);

    // A node that holds a live lease but never answers (stalled): the answer comes after
    // the bound, without it, marked partial.
    let silent = 0x5151_5151_u64;
    let mut conn = redis().await;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{}lease:{silent}", cluster.prefix))
        .arg(1)
        .arg("PX")
        .arg(30_000)
        .ignore()
        .cmd("SADD")
        .arg(format!("{}nodes", cluster.prefix))
        .arg(silent)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, rooms) = http(b, "GET", "/admin/rooms", Some(&admin), None).await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(rooms["partial"], true, "{rooms}");
    assert_eq!(
        rooms["missing"],
        json!([roomcast::NodeId(silent).to_string()])
    );
    assert_eq!(rooms["nodes"], json!([node_b, node_a]));
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 2, "{rooms}");
    let prefix = cluster.prefix.clone();
    cluster.drop_schema().await;
    // The silent node's lease would outlive the test.
    forget_everything_under(&prefix).await;
}

#[tokio::test]
async fn in_a_batched_room_each_node_hands_its_members_the_net_changes_with_every_nodes_count() {
    // A long interval: `Hub::flush_presence` hands the batches out when the test says.
    let Some(cluster) = Cluster::start_with(2, |config| {
        config.session.presence = roomcast::PresenceConfig {
            mode: roomcast::PresenceMode::Batched,
            interval: std::time::Duration::from_secs(60),
            ..roomcast::PresenceConfig::default()
        };
    })
    .await
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut ann = a.connect_as("/ws/auth", "ann").await;
    ann.join("lobby").await;
    a.hub.flush_presence().await;
    assert_eq!(
        ann.recv_type("presence").await["data"]["joined"][0]["id"],
        "ann"
    );

    let mut bob = b.connect_as("/ws/auth", "bob").await;
    let list = bob.join("lobby").await;
    assert_eq!(list["data"], json!(["ann", "bob"]), "exact, every node's");
    // The list is queued in the join's lock scope; the join enters the room's batch after the
    // join's presence write to Redis returns: flushed until it is handed out (bounded).
    let mut update = None;
    for _ in 0..200 {
        b.hub.flush_presence().await;
        let wait = std::time::Duration::from_millis(25);
        if let Ok(next) = tokio::time::timeout(wait, bob.recv_type("presence")).await {
            update = Some(next);
            break;
        }
    }
    let update = update.expect("bob's own join is handed out on node B");
    assert_eq!(
        update["data"]["joined"],
        json!([{"id": "bob", "username": "Bob"}])
    );
    assert_eq!(update["data"]["count"], 2, "the count is every node's");

    // Bob's join crosses Redis into node A's batch; flushed until it is handed out (bounded).
    let mut update = None;
    for _ in 0..200 {
        a.hub.flush_presence().await;
        if let Ok(next) =
            tokio::time::timeout(std::time::Duration::from_millis(25), ann.recv_json()).await
        {
            update = Some(next);
            break;
        }
    }
    let update = update.expect("bob's join reached node A");
    assert_eq!(update["type"], "presence", "not a `join`: {update}");
    assert_eq!(
        update["data"],
        json!({"joined": [{"id": "bob", "username": "Bob"}], "left": [], "count": 2})
    );
    // Once: nothing more on either node.
    a.hub.flush_presence().await;
    b.hub.flush_presence().await;
    ann.expect_silence(std::time::Duration::from_millis(300))
        .await;
    bob.expect_silence(std::time::Duration::from_millis(300))
        .await;
    cluster.drop_schema().await;
}
