//! Redis writes made at once share round trips (`RedisBroker`'s batching): a lone broker's
//! joins, leaves and connection counts, and a closing storm on one node of two. Same services
//! and skipping rules as `cluster`.

use std::collections::HashMap;

use serde_json::json;

use crate::cluster::{Cluster, forget_everything_under, redis};

/// A [`RedisBroker`](roomcast_server::redis_broker::RedisBroker) of its own on a fresh prefix,
/// started as node `node`: the broker's presence and connection counts without a server.
/// `None` (with a note) when `REDIS_URL` is unset.
async fn lone_broker(
    node: roomcast::NodeId,
) -> Option<(
    roomcast_server::redis_broker::RedisBroker,
    String,
    tokio::sync::mpsc::Receiver<roomcast::broker::RoomEvent>,
)> {
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    // Nothing is published under the fresh prefix: the receiver only has to stay open.
    let (broker, events) = broker_on(node, &prefix, 16).await?;
    Some((broker, prefix, events))
}

/// A started broker as node `node` under `prefix` (2 s presence leases), delivering what its
/// subscriptions receive into a channel of `capacity`. `None` (with a note) when `REDIS_URL`
/// is unset.
async fn broker_on(
    node: roomcast::NodeId,
    prefix: &str,
    capacity: usize,
) -> Option<(
    roomcast_server::redis_broker::RedisBroker,
    tokio::sync::mpsc::Receiver<roomcast::broker::RoomEvent>,
)> {
    use roomcast::broker::Broker;
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("note: REDIS_URL is unset; skipping a cluster test");
        return None;
    };
    let broker = roomcast_server::redis_broker::RedisBroker::connect(
        &url,
        prefix,
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("Redis answers");
    let (deliver, events) = tokio::sync::mpsc::channel(capacity);
    broker
        .start(node, deliver)
        .await
        .expect("the broker starts");
    Some((broker, events))
}

#[tokio::test]
async fn a_dead_nodes_entries_are_reaped_in_a_few_round_trips_each_leave_announced_once() {
    use roomcast::broker::{Broker, Presence};
    use roomcast::protocol::{Event, UserInfo};
    use roomcast::{RoomName, UserId};

    const N: usize = 300;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let (dead_node, survivor_node) = (roomcast::NodeId::random(), roomcast::NodeId::random());
    let Some((dead, _)) = broker_on(dead_node, &prefix, 16).await else {
        return;
    };
    let Some((survivor, mut events)) = broker_on(survivor_node, &prefix, 2 * N).await else {
        return;
    };
    let survivor = std::sync::Arc::new(survivor);
    let rooms = [RoomName::new("a").unwrap(), RoomName::new("b").unwrap()];
    for room in &rooms {
        survivor.subscribe(room.clone()).await.unwrap();
    }
    // N users on the node about to die, spread over both rooms; the survivor holds "u000"
    // in room "a" too, so that user's leave there is not announced.
    let user = |i: usize| UserInfo {
        id: UserId::from(format!("u{i:03}")),
        username: format!("User {i}").into(),
    };
    for i in 0..N {
        assert!(dead.joined(&rooms[i % 2], &user(i)).await.unwrap());
    }
    assert!(!survivor.joined(&rooms[0], &user(0)).await.unwrap());
    assert_eq!(survivor.member_count(&rooms[0]).await.unwrap(), N / 2);

    // The node dies: it renews its lease no more (its heartbeats were never started), and the
    // survivor's heartbeats reap it once the lease lapses (2 s).
    drop(dead);
    let before = survivor.round_trips();
    let stop = tokio_util::sync::CancellationToken::new();
    let heartbeats = tokio::spawn(survivor.clone().keep_presence(stop.clone()));
    let mut left = std::collections::BTreeMap::new();
    // Bounded: the lease (2 s) and a heartbeat (0.7 s) away, with room to spare.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while left.len() < N - 1 {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("every leave within 15 s")
            .expect("the survivor's subscription stays open");
        assert_eq!(event.origin, dead_node, "announced as the dead node's");
        let Event::Left { room, user, .. } = event.event else {
            panic!("only leaves: {:?}", event.event);
        };
        let first = left.insert(user.id.to_string(), (room, user.username.to_string()));
        assert!(first.is_none(), "each leave once: {}", user.id);
    }
    let trips = survivor.round_trips() - before;
    stop.cancel();
    heartbeats.await.unwrap();
    eprintln!("reaping {N} entries: {trips} round trips, heartbeats included");
    // Three round trips an entry before the reaper was pipelined; a few per heartbeat now.
    assert!(trips < 60, "reaping {N} entries took {trips} round trips");
    assert!(!left.contains_key("u000"), "u000 is still on the survivor");
    for i in 1..N {
        let (room, name) = &left[&format!("u{i:03}")];
        assert_eq!(
            (room, name.as_str()),
            (&rooms[i % 2], format!("User {i}").as_str()),
            "each leave from its room, with the user's name"
        );
    }
    assert_eq!(survivor.member_count(&rooms[0]).await.unwrap(), 1);
    assert_eq!(survivor.member_count(&rooms[1]).await.unwrap(), 0);
    // Nothing more: no second leave.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );
    forget_everything_under(&prefix).await;
}

#[tokio::test]
async fn joins_leaves_and_connection_counts_made_at_once_share_round_trips_in_call_order() {
    use futures_util::future::{BoxFuture, join_all};
    use roomcast::broker::{BrokerError, Presence};
    use roomcast::protocol::UserInfo;
    use roomcast::{ConnId, RoomName, UserId};

    let node = roomcast::NodeId::random();
    let Some((broker, prefix, _events)) = lone_broker(node).await else {
        return;
    };
    const N: usize = 300;
    let room = RoomName::new("lobby").unwrap();
    let users: Vec<UserInfo> = (0..N)
        .map(|i| UserInfo {
            id: UserId::from(format!("u{i:03}")),
            username: format!("U{i}").into(),
        })
        .collect();
    // At most a few round trips where there were N, one after the other, before batching.
    let few = (N / 20) as u64;

    let before = broker.round_trips();
    let joined = join_all(users.iter().map(|user| broker.joined(&room, user))).await;
    let trips = broker.round_trips() - before;
    assert!(
        joined.iter().all(|first| matches!(first, Ok(true))),
        "each user's first entry is a join: {joined:?}"
    );
    eprintln!("{N} joins at once: {trips} round trips");
    assert!(trips <= few, "{N} joins at once took {trips} round trips");
    assert_eq!(broker.member_count(&room).await.unwrap(), N);
    assert_eq!(
        broker.members(&room).await.unwrap(),
        users,
        "the list, sorted"
    );

    // One user's leave, join and leave made at once reach Redis in that order: a leave, a
    // join, a leave (any other order answers differently).
    let u0 = &users[0];
    let steps: Vec<BoxFuture<'_, Result<bool, BrokerError>>> = vec![
        broker.left(&room, &u0.id),
        broker.joined(&room, u0),
        broker.left(&room, &u0.id),
    ];
    let answers: Vec<bool> = join_all(steps)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        answers,
        [true, true, true],
        "left, joined, left, in call order"
    );
    assert_eq!(broker.member_count(&room).await.unwrap(), N - 1);

    let before = broker.round_trips();
    let left = join_all(users[1..].iter().map(|user| broker.left(&room, &user.id))).await;
    let trips = broker.round_trips() - before;
    assert!(
        left.iter().all(|last| matches!(last, Ok(true))),
        "each user's last entry is a leave: {left:?}"
    );
    assert!(
        trips <= few,
        "{} leaves at once took {trips} round trips",
        N - 1
    );
    assert_eq!(broker.member_count(&room).await.unwrap(), 0);
    assert!(broker.members(&room).await.unwrap().is_empty());

    // Connection counts: admitted at once (two connections of each user, bound 2), a third
    // refused, then all released at once: every count gone from Redis.
    let conns: Vec<(ConnId, &UserId)> = users
        .iter()
        .enumerate()
        .flat_map(|(i, user)| {
            [
                (ConnId(2 * i as u64), &user.id),
                (ConnId(2 * i as u64 + 1), &user.id),
            ]
        })
        .collect();
    let before = broker.round_trips();
    let admitted = join_all(
        conns
            .iter()
            .map(|(conn, user)| broker.admit_user_conn(*conn, user, 2)),
    )
    .await;
    let trips = broker.round_trips() - before;
    assert!(admitted.iter().all(|admitted| matches!(admitted, Ok(true))));
    assert!(
        trips <= 2 * few,
        "{} admissions took {trips} round trips",
        2 * N
    );
    let extra = ConnId(u64::MAX);
    assert!(
        !broker
            .admit_user_conn(extra, &users[7].id, 2)
            .await
            .unwrap(),
        "a third connection is past the bound"
    );
    let before = broker.round_trips();
    let released = join_all(
        conns
            .iter()
            .map(|(conn, user)| broker.release_user_conn(*conn, user)),
    )
    .await;
    let trips = broker.round_trips() - before;
    assert!(released.iter().all(Result::is_ok));
    assert!(
        trips <= 2 * few,
        "{} releases took {trips} round trips",
        2 * N
    );
    let mut redis = redis().await;
    let mut pipe = redis::pipe();
    for user in &users {
        pipe.cmd("EXISTS").arg(format!("{prefix}conns:{}", user.id));
    }
    pipe.cmd("SCARD")
        .arg(format!("{prefix}nodeusers:{}", node.0));
    pipe.cmd("SCARD").arg(format!("{prefix}node:{}", node.0));
    let left_over: Vec<i64> = pipe.query_async(&mut redis).await.unwrap();
    assert!(
        left_over.iter().all(|n| *n == 0),
        "no count, node user or entry left: {left_over:?}"
    );
    forget_everything_under(&prefix).await;
}

#[tokio::test]
async fn a_closing_storm_on_one_node_leaves_presence_and_counts_exact_on_both() {
    const N: usize = 60;
    let Some(cluster) = Cluster::start_with(2, |config| {
        config.limits.max_connections_per_user = 3;
        // Each leave announced as it happens, so the watcher can count them.
        config.session.presence = roomcast::PresenceConfig {
            mode: roomcast::PresenceMode::Full,
            ..roomcast::PresenceConfig::default()
        };
    })
    .await
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let lobby = roomcast::RoomName::new("lobby").unwrap();
    let mut zed = b.connect_as("/ws/auth", "zed").await;
    zed.join("lobby").await;
    // Ann is on both nodes: her connection on A closing is not a leave.
    let mut ann_b = b.connect_as("/ws/auth", "ann").await;
    ann_b.join("lobby").await;
    let mut closing = Vec::new();
    for i in 0..N {
        let mut client = a.connect_as("/ws/auth", &format!("u{i:02}")).await;
        client.join("lobby").await;
        closing.push(client);
    }
    let mut ann_a = a.connect_as("/ws/auth", "ann").await;
    ann_a.join("lobby").await;
    closing.push(ann_a);
    for node in [a, b] {
        assert_eq!(node.hub.room_user_count_everywhere(&lobby).await, N + 2);
        assert_eq!(node.hub.room_users_everywhere(&lobby).await.len(), N + 2);
    }
    let mut joins = 0;
    while joins < N {
        assert_eq!(zed.recv_type("join").await["type"], "join");
        joins += 1;
    }

    // Every connection of node A goes at once.
    drop(closing);
    a.wait_for(|hub| hub.connection_count() == 0).await;
    let mut gone = std::collections::BTreeSet::new();
    while gone.len() < N {
        let leave = zed.recv_type("leave").await;
        assert!(
            gone.insert(leave["user_id"].as_str().unwrap().to_owned()),
            "each leave once: {leave}"
        );
    }
    assert!(!gone.contains("ann"), "Ann is still on node B");
    // Nothing more: no leave of Ann's, no second leave of anyone.
    zed.send_json(json!({"type": "ping"})).await;
    assert_eq!(zed.recv_json().await["type"], "pong");

    for node in [a, b] {
        assert_eq!(node.hub.room_user_count_everywhere(&lobby).await, 2);
    }
    zed.send_json(json!({"type": "user_list", "room": "lobby"}))
        .await;
    assert_eq!(
        zed.recv_type("user_list").await["data"],
        json!(["ann", "zed"])
    );
    let mut redis = redis().await;
    let prefix = &cluster.prefix;
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(format!("{prefix}presence:lobby"));
    pipe.cmd("HKEYS").arg(format!("{prefix}names:lobby"));
    pipe.cmd("SCARD")
        .arg(format!("{prefix}node:{}", a.hub.node_id().0));
    pipe.cmd("SCARD")
        .arg(format!("{prefix}nodeusers:{}", a.hub.node_id().0));
    pipe.cmd("HGETALL").arg(format!("{prefix}conns:ann"));
    type Counts = HashMap<String, i64>;
    let (presence, mut names, entries, counted, ann): (Counts, Vec<String>, i64, i64, Counts) =
        pipe.query_async(&mut redis).await.unwrap();
    names.sort();
    assert_eq!(
        presence,
        HashMap::from([("ann".to_owned(), 1), ("zed".to_owned(), 1)]),
        "one node each"
    );
    assert_eq!(names, ["ann", "zed"]);
    assert_eq!((entries, counted), (0, 0), "node A holds nothing");
    assert_eq!(
        ann,
        HashMap::from([(b.hub.node_id().0.to_string(), 1)]),
        "Ann's one connection, on node B"
    );
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("EXISTS").arg(format!("{prefix}conns:u{i:02}"));
    }
    let counts: Vec<i64> = pipe.query_async(&mut redis).await.unwrap();
    assert!(
        counts.iter().all(|n| *n == 0),
        "every count off: {counts:?}"
    );
    let prefix = cluster.prefix.clone();
    cluster.drop_schema().await;
    forget_everything_under(&prefix).await;
}
