//! [`RedisBroker`]: room events between nodes over Redis pub/sub (`REDIS_URL`).
//!
//! Channels, all under `ROOMCAST_REDIS_PREFIX` (default `roomcast:`): `{prefix}room:{name}` per
//! room, subscribed while this node has members in it; `{prefix}all` and `{prefix}users`,
//! always subscribed, for broadcasts and sends to users. Events are
//! [`roomcast::broker::wire`] JSON carrying their origin node, which the hub uses to drop its
//! own echoes.
//!
//! Two connections: one multiplexed connection publishes (rebuilt after a failure), and one
//! subscriber connection is owned by a task that applies subscribe and unsubscribe requests in
//! the order they were made and forwards messages to the hub. When the subscriber's connection
//! drops (Redis restarted, `CLIENT KILL`), the task reconnects with backoff (0.1 s doubling to
//! 5 s) and subscribes again to everything it had. Redis pub/sub is at-most-once: what was
//! published meanwhile is lost to this node; sequenced messages are recovered from the store by
//! the hub's reorder step, and the node reports itself degraded ([`RedisBroker::is_connected`],
//! `/readyz`) until it is back.
//!
//! Subscriptions are counted per room: the hub asks to subscribe when a room gets its first
//! local member and to unsubscribe when it loses its last, after releasing its lock, so two such
//! requests can arrive in either order; a count (subscribed while above zero) makes the order
//! irrelevant.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use roomcast::broker::{BoxFuture, Broker, BrokerError, Presence, RoomEvent, Target, wire};
use roomcast::protocol::{Event, UserInfo};
use roomcast::{NodeId, RoomName, UserId};
use tokio::sync::{Mutex, mpsc};

/// Default of `ROOMCAST_REDIS_PREFIX`.
pub const DEFAULT_PREFIX: &str = "roomcast:";

/// Default of `ROOMCAST_PRESENCE_TTL`: how long a node's presence lease lives without a
/// heartbeat (renewed every third of it). Long enough that a stalled second (a GC-free process
/// still meets a busy disk, a Redis failover) does not make a live node's users leave; short
/// enough that a killed node's users leave everyone's lists within about this long.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(10);

/// Longest a connection attempt or a command may take before Redis counts as away.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: from this, doubling…
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A [`Broker`] over Redis pub/sub.
pub struct RedisBroker {
    client: redis::Client,
    prefix: String,
    /// Publishes; `None` until first used and after a failure.
    publisher: Mutex<Option<MultiplexedConnection>>,
    /// Requests for the subscriber task, in order.
    requests: mpsc::UnboundedSender<Request>,
    /// Taken by `start`.
    requests_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    /// Whether the subscriber task holds a live connection.
    connected: Arc<AtomicBool>,
    /// Whether the last publish failed (to log a failure once, not per message).
    failing: AtomicBool,
    /// This node, once started.
    node: std::sync::OnceLock<NodeId>,
    /// How long this node's presence lease lives without a heartbeat.
    presence_ttl: Duration,
}

enum Request {
    Subscribe(RoomName),
    Unsubscribe(RoomName),
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
}

fn unavailable(err: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(err.to_string())
}

impl RedisBroker {
    /// A broker on the Redis at `url`, its channels under `prefix`. Connects once to check the
    /// URL and that Redis answers.
    ///
    /// # Errors
    ///
    /// A malformed URL, or a Redis that does not answer.
    pub async fn connect(
        url: &str,
        prefix: &str,
        presence_ttl: Duration,
    ) -> Result<Self, BrokerError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let publisher = client
            .get_multiplexed_async_connection_with_config(&config())
            .await
            .map_err(unavailable)?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            publisher: Mutex::new(Some(publisher)),
            requests,
            requests_rx: std::sync::Mutex::new(Some(requests_rx)),
            connected: Arc::new(AtomicBool::new(false)),
            failing: AtomicBool::new(false),
            node: std::sync::OnceLock::new(),
            presence_ttl,
        })
    }

    /// Whether events are crossing nodes now: the subscriber's connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A handle that answers [`RedisBroker::is_connected`] after the broker has moved into the
    /// hub.
    pub fn health(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.connected)
    }

    fn channel(&self, target: &Target) -> String {
        match target {
            Target::Room(room) => room_channel(&self.prefix, room),
            Target::All => format!("{}all", self.prefix),
            Target::Users(_) => format!("{}users", self.prefix),
        }
    }

    /// Runs `cmd` on the publishing connection, made again after a failure.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BrokerError> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        let (answer,): (T,) = self.query_pipe(&pipe).await?;
        Ok(answer)
    }

    /// Runs `pipe` on the publishing connection, made again after a failure.
    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, BrokerError> {
        let mut publisher = self.publisher.lock().await;
        let conn = match publisher.as_mut() {
            Some(conn) => conn,
            None => publisher.insert(
                self.client
                    .get_multiplexed_async_connection_with_config(&config())
                    .await
                    .map_err(unavailable)?,
            ),
        };
        let answer: redis::RedisResult<T> = pipe.query_async(conn).await;
        answer.map_err(|err| {
            *publisher = None;
            unavailable(err)
        })
    }

    fn started_node(&self) -> Result<NodeId, BrokerError> {
        self.node
            .get()
            .copied()
            .ok_or_else(|| BrokerError::Unavailable("broker not started".into()))
    }

    fn key(&self, what: &str, name: impl std::fmt::Display) -> String {
        format!("{}{what}:{name}", self.prefix)
    }

    /// Takes `user`'s entry in `room` off `node`'s list and the room's count; returns the
    /// user's count of nodes in the room after it (0: gone from the room).
    async fn leave_on(
        &self,
        node: NodeId,
        room: &RoomName,
        user: &UserId,
    ) -> Result<i64, BrokerError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEAVE_SCRIPT)
            .arg(3)
            .arg(self.key("presence", room))
            .arg(self.key("names", room))
            .arg(self.key("node", node.0))
            .arg(user.as_str())
            .arg(entry(room, user));
        self.query(&cmd).await
    }

    /// One heartbeat: renews this node's lease, then reaps every node whose lease lapsed (one
    /// surviving node per dead one, by a lock with the lease's lifetime), announcing the
    /// leaves of users who were only there.
    async fn heartbeat(&self, node: NodeId) -> Result<(), BrokerError> {
        let ttl = u64::try_from(self.presence_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut lease = redis::cmd("SET");
        lease
            .arg(self.key("lease", node.0))
            .arg(1)
            .arg("PX")
            .arg(ttl);
        self.query::<()>(&lease).await?;
        let mut join = redis::cmd("SADD");
        join.arg(format!("{}nodes", self.prefix)).arg(node.0);
        self.query::<i64>(&join).await?;
        let mut nodes = redis::cmd("SMEMBERS");
        nodes.arg(format!("{}nodes", self.prefix));
        let nodes: Vec<u64> = self.query(&nodes).await?;
        for other in nodes.into_iter().filter(|other| *other != node.0) {
            let mut alive = redis::cmd("EXISTS");
            alive.arg(self.key("lease", other));
            if self.query::<i64>(&alive).await? == 1 {
                continue;
            }
            let mut lock = redis::cmd("SET");
            lock.arg(self.key("reaping", other))
                .arg(node.0)
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            let locked: Option<String> = self.query(&lock).await?;
            if locked.is_some() {
                self.reap(NodeId(other)).await?;
            }
        }
        Ok(())
    }

    /// Takes a dead node's users out of its rooms and announces each leave that leaves a user
    /// on no node, as if the dead node had (origin: the dead node, so every live node,
    /// this one included, delivers it).
    async fn reap(&self, dead: NodeId) -> Result<(), BrokerError> {
        let mut entries = redis::cmd("SMEMBERS");
        entries.arg(self.key("node", dead.0));
        let entries: Vec<String> = self.query(&entries).await?;
        let mut announced = 0;
        for entry in &entries {
            let Some((room, user)) = entry.split_once('\n') else {
                continue;
            };
            let (Ok(room), user) = (RoomName::new(room), UserId::from(user)) else {
                continue;
            };
            let mut name = redis::cmd("HGET");
            name.arg(self.key("names", &room)).arg(user.as_str());
            let username: Option<String> = self.query(&name).await?;
            if self.leave_on(dead, &room, &user).await? != 0 {
                continue;
            }
            let event = RoomEvent {
                origin: dead,
                target: Target::Room(room.clone()),
                exclude: Vec::new(),
                event: Event::Left {
                    room,
                    user: UserInfo {
                        username: Arc::from(username.as_deref().unwrap_or(user.as_str())),
                        id: user,
                    },
                    timestamp_ms: roomcast::protocol::now_ms(),
                },
            };
            self.publish_many(vec![event]).await?;
            announced += 1;
        }
        let mut forget = redis::cmd("SREM");
        forget.arg(format!("{}nodes", self.prefix)).arg(dead.0);
        self.query::<i64>(&forget).await?;
        let mut clear = redis::cmd("DEL");
        clear.arg(self.key("node", dead.0));
        self.query::<i64>(&clear).await?;
        tracing::info!(node = %dead, entries = entries.len(), announced, "reaped a node whose presence lease lapsed");
        Ok(())
    }
}

/// A node's entry for `user` in `room` (room names cannot hold a newline).
fn entry(room: &RoomName, user: &UserId) -> String {
    format!("{room}\n{user}")
}

/// KEYS: the room's counts, the room's names, the node's entries; ARGV: user, name, entry.
/// Returns the user's count of nodes in the room.
const JOIN_SCRIPT: &str = r"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return n";

/// KEYS as for `JOIN_SCRIPT`; ARGV: user, entry. Takes the node's entry off and counts the
/// user down; at 0 the user is gone from the room. An entry already gone (reaped, or lost
/// with a Redis restart) only reports the count, 0 when that is gone too.
const LEAVE_SCRIPT: &str = r"
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then
  return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
return n";

fn room_channel(prefix: &str, room: &RoomName) -> String {
    format!("{prefix}room:{room}")
}

impl Broker for RedisBroker {
    fn start(
        &self,
        node: NodeId,
        deliver: mpsc::Sender<RoomEvent>,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let requests = self
            .requests_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Box::pin(async move {
            let requests = requests
                .ok_or_else(|| BrokerError::Unavailable("broker already started".into()))?;
            let _ = self.node.set(node);
            // The first heartbeat before any member joins, so that this node's entries are
            // never without a lease.
            self.heartbeat(node).await?;
            let subscriber = Subscriber {
                client: self.client.clone(),
                prefix: self.prefix.clone(),
                node,
                deliver,
                connected: Arc::clone(&self.connected),
                rooms: HashMap::new(),
                resubscribing: false,
            };
            tokio::spawn(subscriber.run(requests));
            Ok(())
        })
    }

    fn publish(&self, event: RoomEvent) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.publish_many(vec![event])
    }

    fn publish_many(&self, events: Vec<RoomEvent>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            // One pipeline: one round trip to Redis for all of them, in order.
            let mut pipe = redis::pipe();
            for event in &events {
                pipe.cmd("PUBLISH")
                    .arg(self.channel(&event.target))
                    .arg(wire::encode(event))
                    .ignore();
            }
            let result = self.query_pipe(&pipe).await;
            let failed = result.is_err();
            if self.failing.swap(failed, Ordering::Relaxed) != failed {
                match &result {
                    Err(err) => {
                        tracing::warn!(error = %err, "publishing to Redis failed; other nodes miss events until it is back")
                    }
                    Ok(()) => tracing::info!("publishing to Redis again"),
                }
            }
            result
        })
    }

    fn subscribe(&self, room: RoomName) -> BoxFuture<'_, Result<(), BrokerError>> {
        let sent = self.requests.send(Request::Subscribe(room));
        Box::pin(async move { sent.map_err(|_| BrokerError::Unavailable("broker stopped".into())) })
    }

    fn unsubscribe(&self, room: RoomName) -> BoxFuture<'_, Result<(), BrokerError>> {
        let sent = self.requests.send(Request::Unsubscribe(room));
        Box::pin(async move { sent.map_err(|_| BrokerError::Unavailable("broker stopped".into())) })
    }
}

/// The task that owns the subscriber connection.
struct Subscriber {
    client: redis::Client,
    prefix: String,
    node: NodeId,
    deliver: mpsc::Sender<RoomEvent>,
    connected: Arc<AtomicBool>,
    /// Subscribe requests less unsubscribe requests, per room; subscribed while above zero.
    rooms: HashMap<RoomName, i64>,
    /// Set after the first subscription: every later one follows a lost connection.
    resubscribing: bool,
}

/// How a connected session of the subscriber ended.
enum Ended {
    /// The connection dropped: reconnect.
    Lost,
    /// The hub is gone (its receiver or the request sender closed): stop.
    Stopped,
}

impl Subscriber {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session(&mut requests).await {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Lost) => {
                    tracing::warn!("the Redis subscription dropped; reconnecting");
                    backoff = BACKOFF_MIN;
                }
                Err(err) => {
                    tracing::debug!(error = %err, ?backoff, "cannot subscribe to Redis yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            self.connected.store(false, Ordering::Relaxed);
        }
    }

    /// One connection's life: connect, subscribe to everything wanted, then serve requests and
    /// messages until the connection drops.
    async fn session(
        &mut self,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> redis::RedisResult<Ended> {
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
            })??;
        let (mut sink, mut stream) = pubsub.split();
        sink.subscribe(&[
            format!("{}all", self.prefix),
            format!("{}users", self.prefix),
        ])
        .await?;
        let wanted: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(room, _)| room_channel(&self.prefix, room))
            .collect();
        if !wanted.is_empty() {
            sink.subscribe(&wanted).await?;
        }
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(rooms = wanted.len(), "subscribed to Redis");
        }
        if std::mem::replace(&mut self.resubscribing, true) {
            // Events published while the subscription was down are lost to this node: the hub
            // re-reads its rooms' tails from the store.
            let resync = RoomEvent {
                origin: self.node,
                target: Target::All,
                exclude: Vec::new(),
                event: Event::Resync,
            };
            if self.deliver.send(resync).await.is_err() {
                return Ok(Ended::Stopped);
            }
        }
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return Ok(Ended::Stopped) };
                    self.apply(&mut sink, request).await?;
                }
                message = stream.next() => {
                    let Some(message) = message else { return Ok(Ended::Lost) };
                    let event = match wire::decode(message.get_payload_bytes()) {
                        Ok(event) => event,
                        Err(err) => {
                            tracing::debug!(channel = message.get_channel_name(), error = %err, "skipped a message");
                            continue;
                        }
                    };
                    if event.origin == self.node {
                        continue;
                    }
                    if self.deliver.send(event).await.is_err() {
                        return Ok(Ended::Stopped);
                    }
                }
            }
        }
    }

    async fn apply(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        request: Request,
    ) -> redis::RedisResult<()> {
        let (room, delta) = match request {
            Request::Subscribe(room) => (room, 1),
            Request::Unsubscribe(room) => (room, -1),
        };
        let count = self.rooms.entry(room.clone()).or_insert(0);
        let was = *count > 0;
        *count += delta;
        let is = *count > 0;
        if *count == 0 {
            self.rooms.remove(&room);
        }
        let channel = room_channel(&self.prefix, &room);
        match (was, is) {
            (false, true) => sink.subscribe(channel).await,
            (true, false) => sink.unsubscribe(channel).await,
            _ => Ok(()),
        }
    }
}

/// The store as the hub's [`roomcast::History`]: where a node reads the messages its broker
/// lost (the nodes share the store, so every committed message is there).
#[derive(Clone)]
pub struct StoreHistory(pub roomcast_store::Store);

/// Most messages one gap read returns; a longer gap is read in several.
const MAX_GAP_READ: u64 = 1000;

impl roomcast::History for StoreHistory {
    fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> BoxFuture<'_, Result<Vec<Arc<roomcast::protocol::ChatMessage>>, BrokerError>> {
        let room = room.clone();
        Box::pin(async move {
            let upto = upto.min(after.saturating_add(MAX_GAP_READ));
            let count = usize::try_from(upto.saturating_sub(after)).unwrap_or(usize::MAX);
            let stored = self
                .0
                .messages_since(room.as_str(), roomcast_store::Seq(after), count)
                .await
                .map_err(|err| BrokerError::Unavailable(err.to_string()))?;
            Ok(stored
                .into_iter()
                .filter(|message| message.seq.0 <= upto)
                .map(|message| crate::chat::to_chat(&room, message))
                .collect())
        })
    }
}

impl RedisBroker {
    /// Renews this node's presence lease every third of its lifetime and reaps dead nodes,
    /// until `stop` is cancelled. Run it once, after the hub is built.
    pub async fn keep_presence(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Ok(node) = self.started_node() else {
            return;
        };
        let mut ticks =
            tokio::time::interval((self.presence_ttl / 3).max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => break,
            }
            match self.heartbeat(node).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("presence heartbeats reach Redis again");
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot renew the presence lease");
                }
                Err(_) => {}
            }
        }
        // A node that stops says so at once rather than after its lease.
        let mut release = redis::cmd("DEL");
        release.arg(self.key("lease", node.0));
        let _ = self.query::<i64>(&release).await;
    }
}

impl Presence for RedisBroker {
    fn joined(&self, room: &RoomName, user: &UserInfo) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let (room, user) = (room.clone(), user.clone());
        Box::pin(async move {
            let node = self.started_node()?;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(JOIN_SCRIPT)
                .arg(3)
                .arg(self.key("presence", &room))
                .arg(self.key("names", &room))
                .arg(self.key("node", node.0))
                .arg(user.id.as_str())
                .arg(user.username.as_ref())
                .arg(entry(&room, &user.id));
            let nodes: i64 = self.query(&cmd).await?;
            Ok(nodes == 1)
        })
    }

    fn left(&self, room: &RoomName, user: &UserId) -> BoxFuture<'_, Result<bool, BrokerError>> {
        let (room, user) = (room.clone(), user.clone());
        Box::pin(async move {
            let node = self.started_node()?;
            Ok(self.leave_on(node, &room, &user).await? == 0)
        })
    }

    fn members(&self, room: &RoomName) -> BoxFuture<'_, Result<Vec<UserInfo>, BrokerError>> {
        let room = room.clone();
        Box::pin(async move {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(self.key("names", &room));
            let names: HashMap<String, String> = self.query(&cmd).await?;
            let mut users: Vec<UserInfo> = names
                .into_iter()
                .map(|(id, username)| UserInfo {
                    id: UserId::from(id),
                    username: Arc::from(username),
                })
                .collect();
            users.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(users)
        })
    }
}
