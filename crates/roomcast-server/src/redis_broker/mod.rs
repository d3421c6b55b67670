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
//!
//! Beside the pub/sub: `presence` (who is where, node leases, the reaper, and writing this
//! node's part again after Redis lost it), `users` (`ROOMCAST_MAX_CONNECTIONS_PER_USER` over
//! every node) and `queries` (the admin API's questions to every node). What this node wrote
//! to Redis is also kept here (`Local`), so that it can be written again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use roomcast::broker::{BoxFuture, Broker, BrokerError, RoomEvent, Target, wire};
use roomcast::protocol::Event;
use roomcast::{NodeId, RoomName};
use tokio::sync::{Mutex, mpsc};

mod history;
mod presence;
mod queries;
mod users;

pub use history::StoreHistory;
pub use queries::Gathered;

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
    /// What this node has written to Redis's presence and connection counts, to write again
    /// when Redis has lost it. Changed only while `publisher` is held ([`RedisBroker::exclusive`]),
    /// so its changes and the commands that mirror them reach Redis in one order.
    local: std::sync::Mutex<Local>,
    /// Set when a heartbeat failed: the next one that succeeds writes this node's part again
    /// (Redis may have restarted meanwhile, and a write made meanwhile is missing).
    reassert_due: AtomicBool,
    /// Whether a heartbeat has set the lease once: a lease missing after that was lost.
    leased: AtomicBool,
    /// The admin API's questions this node is waiting for answers to (`queries`).
    pending: queries::Pending,
    /// Where the subscriber hands other nodes' questions; taken by `serve_queries`.
    questions_rx: std::sync::Mutex<Option<mpsc::Receiver<queries::Question>>>,
    questions_tx: mpsc::Sender<queries::Question>,
}

/// This node's part of Redis's presence and connection counts, as it wrote them.
#[derive(Debug, Default)]
struct Local {
    /// Each user in each room on this node, with their display name: one entry per
    /// (room, user), as `{prefix}node:{id}` has.
    members: HashMap<(RoomName, roomcast::UserId), Arc<str>>,
    /// Connections admitted under `ROOMCAST_MAX_CONNECTIONS_PER_USER`, per user
    /// (`{prefix}conns:{user}`'s field for this node).
    user_conns: HashMap<roomcast::UserId, u64>,
    /// Those connections, so that each is counted down once, and only if it was counted.
    admitted: std::collections::HashSet<roomcast::ConnId>,
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
        // Questions are rare (an operator's page); a full queue drops one, and the asking
        // node reports this one as missing.
        let (questions_tx, questions_rx) = mpsc::channel(64);
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
            local: std::sync::Mutex::default(),
            reassert_due: AtomicBool::new(false),
            leased: AtomicBool::new(false),
            pending: queries::Pending::default(),
            questions_rx: std::sync::Mutex::new(Some(questions_rx)),
            questions_tx,
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
        Self::run_pipe(&self.client, &mut publisher, pipe).await
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        client: &redis::Client,
        publisher: &mut Option<MultiplexedConnection>,
        pipe: &redis::Pipeline,
    ) -> Result<T, BrokerError> {
        let conn = match publisher.as_mut() {
            Some(conn) => conn,
            None => publisher.insert(
                client
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

    /// Changes [`Local`] and runs the commands that mirror the change, with the publishing
    /// connection held throughout: `build` changes `Local` and returns the pipeline, `settle`
    /// sees the answer (and may undo the change) before any other command can run. So the
    /// order of changes to `Local` is the order Redis sees, and a re-assertion
    /// ([`RedisBroker::reassert`], which reads `Local` the same way) never races a join or a
    /// leave into counting twice or resurrecting an entry.
    async fn exclusive<T: redis::FromRedisValue>(
        &self,
        build: impl FnOnce(&mut Local) -> redis::Pipeline,
        settle: impl FnOnce(&mut Local, &Result<T, BrokerError>),
    ) -> Result<T, BrokerError> {
        let mut publisher = self.publisher.lock().await;
        let pipe = build(&mut self.local());
        let answer = Self::run_pipe(&self.client, &mut publisher, &pipe).await;
        settle(&mut self.local(), &answer);
        answer
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        // Plain map updates under the lock: a panic cannot leave them half done.
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
}

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
                questions: self.questions_tx.clone(),
                pending: self.pending.clone(),
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
    /// Other nodes' questions (`{prefix}admin`), for `serve_queries`.
    questions: mpsc::Sender<queries::Question>,
    /// Answers to this node's questions (`{prefix}reply:{node}`) go to their askers here.
    pending: queries::Pending,
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
        let questions = queries::question_channel(&self.prefix);
        let answers = queries::answer_channel(&self.prefix, self.node);
        sink.subscribe(&[
            format!("{}all", self.prefix),
            format!("{}users", self.prefix),
            questions.clone(),
            answers.clone(),
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
                    let channel = message.get_channel_name();
                    if channel == questions {
                        queries::received_question(self.node, message.get_payload_bytes(), &self.questions);
                        continue;
                    }
                    if channel == answers {
                        self.pending.received(message.get_payload_bytes());
                        continue;
                    }
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
