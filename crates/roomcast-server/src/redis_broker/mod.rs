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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// Most per-connection writes (joins, leaves, connection counts) sent in one round trip: a
/// closing storm of thousands goes out in pipelines of this many, each answered in a few
/// milliseconds, rather than one pipeline whose answer would hold every caller until the last.
const MAX_BATCH: usize = 512;
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
    /// Round trips made on the publishing connection ([`RedisBroker::round_trips`]).
    round_trips: AtomicU64,
    /// This node, once started.
    node: std::sync::OnceLock<NodeId>,
    /// How long this node's presence lease lives without a heartbeat.
    presence_ttl: Duration,
    /// What this node has written to Redis's presence and connection counts, to write again
    /// when Redis has lost it. Changed only while `publisher` is held ([`RedisBroker::exclusive`],
    /// [`RedisBroker::batched`]), so its changes and the commands that mirror them reach Redis
    /// in one order.
    local: std::sync::Mutex<Local>,
    /// Per-connection writes waiting for the publishing connection, in the order they were
    /// made ([`RedisBroker::batched`]): whoever holds the connection next sends what has
    /// accumulated in one pipeline.
    ops: std::sync::Mutex<VecDeque<Op>>,
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

/// A per-connection write waiting its turn ([`RedisBroker::batched`]).
struct Op {
    /// What it does with a user's connection count in [`Local`].
    count: CountUse,
    /// Changes [`Local`] and returns the command that mirrors the change; run with the
    /// publishing connection held, in queue order.
    build: Build,
    /// Sees the command's answer (and may undo the change), then hands it to the caller.
    settle: Settle,
}

type Build = Box<dyn FnOnce(&RedisBroker, &mut Local) -> redis::Cmd + Send>;
type Settle = Box<dyn FnOnce(&mut Local, Result<redis::Value, BrokerError>) + Send>;

/// What a queued write does with a user's connection count in [`Local`]. An admission's
/// answer may undo its count (refused), so a later write that reads the same user's count
/// must not be built before that answer: it goes in the next round trip.
enum CountUse {
    /// Nothing (presence).
    None,
    /// Reads the user's count (a release).
    Reads(roomcast::UserId),
    /// Reads it, and its answer may undo its change (an admission).
    MayUndo(roomcast::UserId),
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
            round_trips: AtomicU64::new(0),
            node: std::sync::OnceLock::new(),
            presence_ttl,
            local: std::sync::Mutex::default(),
            ops: std::sync::Mutex::default(),
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

    /// How many round trips this node has made to Redis on its publishing connection (each
    /// pipeline one, whatever it carries: publishes, presence and connection counts, the
    /// heartbeat's commands); the subscriber's connection is not counted. Joins, leaves and
    /// connection counts made at the same moment share round trips, so a storm of closes
    /// costs far fewer than two per connection.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use roomcast_server::redis_broker::RedisBroker;
    /// let broker = RedisBroker::connect("redis://127.0.0.1:6379", "example:", Duration::from_secs(10))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(broker.round_trips(), 0, "connecting checks Redis, but is not a round trip");
    /// # }
    /// ```
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
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
        self.run_pipe(&mut publisher, pipe).await
    }

    async fn run_pipe<T: redis::FromRedisValue>(
        &self,
        publisher: &mut Option<MultiplexedConnection>,
        pipe: &redis::Pipeline,
    ) -> Result<T, BrokerError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
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
        let answer = self.run_pipe(&mut publisher, &pipe).await;
        settle(&mut self.local(), &answer);
        answer
    }

    /// [`RedisBroker::exclusive`] for one command, batched with the others waiting: the
    /// write is queued, and whoever takes the publishing connection next (this caller, or one
    /// already waiting for it) changes `Local` for every queued write in queue order and sends
    /// their commands in one pipeline (at most [`MAX_BATCH`]), then settles each with its own
    /// answer. So a storm of closes or joins costs a round trip per few hundred, not two per
    /// connection one after the other, and Redis still sees the commands in the order their
    /// `Local` changes were made: per user and room, the order of the calls.
    ///
    /// One exception to taking them in order: a write that reads a user's connection count
    /// waits for a later round trip than an admission of the same user before it
    /// ([`CountUse`]); the writes after it still go. Presence and connection counts are
    /// separate keys, and each user's counts keep their order among themselves.
    ///
    /// A failed round trip fails every write in it, each with the same error (Redis away: the
    /// callers fail open, as before); a command Redis refuses fails only its own write.
    async fn batched<T>(
        &self,
        count: CountUse,
        build: impl FnOnce(&Self, &mut Local) -> redis::Cmd + Send + 'static,
        settle: impl FnOnce(&mut Local, &Result<T, BrokerError>) + Send + 'static,
    ) -> Result<T, BrokerError>
    where
        T: redis::FromRedisValue + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let op = Op {
            count,
            build: Box::new(build),
            settle: Box::new(move |local, value| {
                let answer = value.and_then(|value| match value {
                    redis::Value::ServerError(err) => {
                        Err(unavailable(redis::RedisError::from(err)))
                    }
                    value => redis::from_redis_value(value)
                        .map_err(|err| BrokerError::Unavailable(err.to_string())),
                });
                settle(local, &answer);
                let _ = tx.send(answer);
            }),
        };
        self.ops().push_back(op);
        loop {
            let mut publisher = self.publisher.lock().await;
            // Taken and settled by an earlier holder, or still queued: the connection is only
            // ever released between round trips.
            match rx.try_recv() {
                Ok(answer) => return answer,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(BrokerError::Unavailable(
                        "the round trip carrying this write was cancelled".into(),
                    ));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            self.run_batch(&mut publisher).await;
        }
    }

    /// Sends the oldest queued writes (up to [`MAX_BATCH`]) in one pipeline, on `publisher`
    /// (held by the caller), and settles each.
    async fn run_batch(&self, publisher: &mut Option<MultiplexedConnection>) {
        let mut ops = Vec::new();
        {
            let mut queue = self.ops();
            // Users with an admission in this round trip, whose counts wait for its answer.
            let mut undecided = std::collections::HashSet::new();
            // Writes left for a later round trip, in their order.
            let mut later = VecDeque::new();
            while ops.len() < MAX_BATCH
                && let Some(op) = queue.pop_front()
            {
                match &op.count {
                    CountUse::Reads(user) | CountUse::MayUndo(user) if undecided.contains(user) => {
                        later.push_back(op);
                        continue;
                    }
                    CountUse::MayUndo(user) => {
                        undecided.insert(user.clone());
                    }
                    CountUse::Reads(_) | CountUse::None => {}
                }
                ops.push(op);
            }
            later.append(&mut *queue);
            *queue = later;
        }
        if ops.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        // One answer per command, a refused one as a `ServerError` of its own.
        pipe.ignore_errors();
        let mut settles = Vec::with_capacity(ops.len());
        {
            let mut local = self.local();
            for op in ops {
                pipe.add_command((op.build)(self, &mut local));
                settles.push(op.settle);
            }
        }
        let answer: Result<Vec<redis::Value>, BrokerError> = self.run_pipe(publisher, &pipe).await;
        let mut local = self.local();
        let why = match answer {
            Ok(values) if values.len() == settles.len() => {
                for (settle, value) in settles.into_iter().zip(values) {
                    settle(&mut local, Ok(value));
                }
                return;
            }
            Ok(values) => format!(
                "{} answers to a pipeline of {}",
                values.len(),
                settles.len()
            ),
            Err(BrokerError::Unavailable(why)) => why,
            Err(err) => err.to_string(),
        };
        for settle in settles {
            settle(&mut local, Err(BrokerError::Unavailable(why.clone())));
        }
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, VecDeque<Op>> {
        // Pushes and drains only: a panic cannot leave the queue half changed.
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
