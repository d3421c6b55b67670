//! [`Hub`]: the node-local registry of connections, rooms and presence, and the handle every
//! send goes through.
//!
//! `Hub` is an `Arc` around [`Shared`]: one `std::sync::Mutex<State>` (see [`state`]) plus the
//! configuration, the broker, the shutdown token and counters. Methods that only read or change
//! the registry are plain `fn`s; methods that may reach other nodes are `async` and take the
//! lock only for their synchronous part: lock, change, collect what must happen next, unlock,
//! then await the broker.

mod cluster;
mod expiry;
mod membership;
mod order;
mod pace;
mod presence;
mod send;
mod state;

pub use order::History;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::broker::{Broker, BrokerError, Presence, RoomEvent};
use crate::config::SessionConfig;
use crate::frame::CloseReason;
use crate::ids::{ConnId, NodeId, RoomName, UserId};
use crate::metrics::HubMetrics;
use crate::protocol::UserInfo;
use crate::session::Outbound;
use crate::shutdown::Shutdown;
pub(crate) use state::ConnTrace;
use state::{Deadlines, State};

/// Handle to the node's connections and rooms. Cheap to clone: clones share one registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> roomcast::Result<()> {
/// use roomcast::{Hub, RoomName, SessionConfig, UserId};
/// let hub = Hub::new(SessionConfig::default());
/// assert_eq!(hub.connection_count(), 0);
/// assert!(!hub.is_connected(&UserId::from("alice")));
/// assert!(hub.room_members(&RoomName::new("general").unwrap()).is_empty());
/// // Sending to nobody is not an error: it reaches zero connections.
/// assert_eq!(hub.broadcast("hello", &[]).await?, 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// Connections, rooms and users; never locked across an `.await`.
    state: Mutex<State>,
    config: SessionConfig,
    node: NodeId,
    /// `None` on a single node: nothing is published.
    broker: Option<Arc<dyn Broker>>,
    /// Where gaps in a room's messages are read from (`order`); with a broker only.
    history: Option<Arc<dyn History>>,
    /// Cluster-wide membership: decides which joins and leaves are announced.
    presence: Option<Arc<dyn Presence>>,
    /// Feeds the events of [`Hub::publish_now`] and [`Hub::publish_now_many`] to the broker in
    /// order, from one task.
    ordered_tx: OnceLock<mpsc::UnboundedSender<RoomEvent>>,
    /// Cancelled on shutdown (the sweep and the broker loop stop on it); every session holds a
    /// tracker token, so shutdown can wait for it.
    shutdown: Shutdown,
    /// Admission: one permit per connection, `max_connections` in all.
    permits: Arc<Semaphore>,
    /// One permit per refused connection being closed, `max_closing_refusals` in all.
    refusals: Arc<Semaphore>,
    next_conn: AtomicU64,
    stats: Counters,
    /// What Prometheus scrapes ([`Hub::register_metrics`]).
    metrics: HubMetrics,
    /// The hub's clock starts here: connection deadlines are ms since this instant.
    epoch: Instant,
    /// The sweep task, started with the first connection (a hub may be built outside a
    /// runtime).
    sweep: OnceLock<()>,
    /// The write interval the hub's delivery rate calls for; fed by [`Hub::count`], read by
    /// every session with frames to write.
    pace: pace::Pace,
}

/// Totals for [`HubStats`] that the exported metrics keep only per label.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    messages_received: AtomicU64,
    hook_panics: AtomicU64,
}

/// A snapshot of the hub's counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HubStats {
    /// Connections open now.
    pub connections: usize,
    /// Rooms with at least one local connection.
    pub rooms: usize,
    /// Users with at least one connection.
    pub users: usize,
    /// Connections accepted since start.
    pub accepted_total: u64,
    /// Connections refused (auth, origin, full) since start.
    pub refused_total: u64,
    /// Connections closed as slow consumers (1013) since start.
    pub slow_consumers_total: u64,
    /// Data messages received from clients since start.
    pub messages_received_total: u64,
    /// Frames queued to connections since start.
    pub frames_queued_total: u64,
    /// Hooks that panicked since start (each closed its connection with 1011).
    pub hook_panics_total: u64,
}

/// One connection as [`Hub::room_connections`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id on its node.
    pub id: ConnId,
    /// Its user.
    pub user: UserInfo,
    /// The endpoint it came through ([`Endpoint::name`](crate::Endpoint::name)).
    pub endpoint: &'static str,
    /// The client's address, when the route knew it.
    pub client_addr: Option<std::net::IpAddr>,
    /// When it opened, milliseconds since the Unix epoch.
    pub connected_at_ms: i64,
}

/// Builds a [`Hub`] with a broker (for several nodes) or a fixed node id.
#[must_use]
pub struct HubBuilder {
    config: SessionConfig,
    broker: Option<Arc<dyn Broker>>,
    node: Option<NodeId>,
    history: Option<Arc<dyn History>>,
    presence: Option<Arc<dyn Presence>>,
}

impl HubBuilder {
    /// Joins other nodes through `broker`.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Reads the messages the broker lost from `history` (the store the nodes share): a
    /// room's persisted messages reach its members in `seq` order with no gap, whichever node
    /// committed them. Without one, a gap the broker leaves is skipped after a short wait,
    /// with an error logged.
    pub fn history(mut self, history: Arc<dyn History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Decides with `presence` which joins and leaves are announced, and lists every node's
    /// members ([`Hub::room_users_everywhere`], and the member list a dialect sends a joiner,
    /// [`Session::join_listed`](crate::Session::join_listed)).
    pub fn presence(mut self, presence: Arc<dyn Presence>) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Uses `node` as this hub's node id (default: random).
    pub fn node_id(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Builds the hub and, with a broker, starts its receive loop. Must run inside a Tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`BrokerError`] when the broker cannot start delivering to this node.
    pub async fn build(self) -> Result<Hub, BrokerError> {
        let node = self.node.unwrap_or_else(NodeId::random);
        let hub = Hub::with_parts(
            self.config,
            node,
            self.broker.clone(),
            self.history,
            self.presence,
        );
        if let Some(broker) = self.broker {
            // Bounded: a node that cannot keep up slows the publisher's broker, not memory.
            let (deliver_tx, deliver_rx) = mpsc::channel(1024);
            broker.start(node, deliver_tx).await?;
            tokio::spawn(cluster::receive_loop(
                Arc::downgrade(&hub.shared),
                deliver_rx,
                hub.shared.shutdown.token(),
            ));
            // Unbounded, but fed only by `publish_now` and `publish_now_many`, whose callers
            // (the store's commit path) are themselves bounded; one task keeps them in order.
            let (ordered_tx, mut ordered_rx) = mpsc::unbounded_channel::<RoomEvent>();
            let _ = hub.shared.ordered_tx.set(ordered_tx);
            tokio::spawn(async move {
                // What queued up while the last publish was on its way goes in one call.
                let mut batch = Vec::with_capacity(cluster::RECEIVE_BATCH);
                while ordered_rx
                    .recv_many(&mut batch, cluster::RECEIVE_BATCH)
                    .await
                    > 0
                {
                    let events = std::mem::take(&mut batch);
                    if let Err(err) = broker.publish_many(events).await {
                        tracing::warn!(error = %err, "could not publish to other nodes");
                    }
                }
            });
        }
        Ok(hub)
    }
}

/// What [`Hub::join_room`] and a session's join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JoinOutcome {
    /// The connection was already in the room; nothing changed.
    pub already_member: bool,
    /// The user was not in the room before: their join was announced (a batched room's members
    /// get it with the next presence update).
    pub announced: bool,
}

impl Hub {
    /// A single-node hub (no broker). Must be created inside a Tokio runtime only if sessions
    /// will run on it.
    pub fn new(config: SessionConfig) -> Self {
        Self::with_parts(config, NodeId::random(), None, None, None)
    }

    /// A builder, for a hub that joins other nodes through a broker.
    pub fn builder(config: SessionConfig) -> HubBuilder {
        HubBuilder {
            config,
            broker: None,
            node: None,
            history: None,
            presence: None,
        }
    }

    fn with_parts(
        config: SessionConfig,
        node: NodeId,
        broker: Option<Arc<dyn Broker>>,
        history: Option<Arc<dyn History>>,
        presence: Option<Arc<dyn Presence>>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let refusals = Arc::new(Semaphore::new(config.max_closing_refusals));
        let pace = pace::Pace::new(&config);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(
                    if broker.is_some() {
                        State::sequenced()
                    } else {
                        State::default()
                    }
                    .with_presence(config.presence.clone()),
                ),
                config,
                node,
                broker,
                history,
                presence,
                ordered_tx: OnceLock::new(),
                shutdown: Shutdown::new(),
                permits,
                refusals,
                next_conn: AtomicU64::new(1),
                stats: Counters::default(),
                metrics: HubMetrics::default(),
                epoch: Instant::now(),
                sweep: OnceLock::new(),
                pace,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // State changes cannot panic halfway (no user code runs under the lock), so a poisoned
        // lock still guards consistent maps.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The per-connection configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    // ---- queries (seed 000's connection management) ----

    /// Every user with at least one connection on this node.
    pub fn connected_users(&self) -> Vec<UserId> {
        self.state().connected_users()
    }

    /// Whether `user` has at least one connection on this node.
    pub fn is_connected(&self, user: &UserId) -> bool {
        self.state().is_connected(user)
    }

    /// The users in `room` (each once, however many connections they have in it).
    pub fn room_members(&self, room: &RoomName) -> Vec<UserId> {
        self.room_users(room).into_iter().map(|u| u.id).collect()
    }

    /// The users in `room` with their display names.
    pub fn room_users(&self, room: &RoomName) -> Vec<UserInfo> {
        let mut users = self.state().room_members(room);
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }

    /// How many users are in `room` (each once, however many connections they have in it).
    pub fn room_user_count(&self, room: &RoomName) -> usize {
        self.state().room_user_count(room)
    }

    /// How many users are in each of `rooms`, in order, read under one lock.
    ///
    /// ```
    /// use roomcast::{Hub, RoomName, SessionConfig};
    /// let hub = Hub::new(SessionConfig::default());
    /// let rooms = [RoomName::new("a").unwrap(), RoomName::new("b").unwrap()];
    /// assert_eq!(hub.room_user_counts(&rooms), [0, 0]);
    /// ```
    pub fn room_user_counts<'r>(
        &self,
        rooms: impl IntoIterator<Item = &'r RoomName>,
    ) -> Vec<usize> {
        let state = self.state();
        rooms
            .into_iter()
            .map(|room| state.room_user_count(room))
            .collect()
    }

    /// How many connections `user` has on this node.
    pub fn user_connection_count(&self, user: &UserId) -> usize {
        self.state().user_conn_count(user)
    }

    /// Whether `user` is in `room` through any of their connections.
    pub fn is_member(&self, user: &UserId, room: &RoomName) -> bool {
        self.state().is_member(user, room)
    }

    /// The rooms `user` is in, through any of their connections.
    pub fn user_rooms(&self, user: &UserId) -> Vec<RoomName> {
        self.state().user_rooms(user)
    }

    /// Rooms with at least one connection on this node.
    pub fn rooms(&self) -> Vec<RoomName> {
        self.state().rooms()
    }

    /// Connections open on this node.
    pub fn connection_count(&self) -> usize {
        self.state().connection_count()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> HubStats {
        let (connections, rooms, users) = {
            let state = self.state();
            (
                state.connection_count(),
                state.rooms().len(),
                state.connected_users().len(),
            )
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let stats = &self.shared.stats;
        HubStats {
            connections,
            rooms,
            users,
            accepted_total: load(&stats.accepted),
            refused_total: self.shared.metrics.refused_total(),
            slow_consumers_total: self.shared.metrics.slow_consumers.get(),
            messages_received_total: load(&stats.messages_received),
            frames_queued_total: self.shared.metrics.delivered.get(),
            hook_panics_total: load(&stats.hook_panics),
        }
    }

    // ---- connection life cycle (used by the route and the session) ----

    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.shared.permits
    }

    pub(crate) fn refusals(&self) -> &Arc<Semaphore> {
        &self.shared.refusals
    }

    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shared.shutdown
    }

    /// The hub's clock: ms since the hub was built. Connection deadlines are kept on it.
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.now_ms()
    }

    /// The shortest time between two writes to one connection at the hub's present rate of
    /// deliveries (`pace`): [`SessionConfig::write_interval`] under load, less below it.
    pub(crate) fn write_interval(&self) -> Duration {
        self.shared.pace.interval()
    }

    pub(crate) fn metrics(&self) -> &HubMetrics {
        &self.shared.metrics
    }

    pub(crate) fn downgrade(&self) -> WeakHub {
        WeakHub(Arc::downgrade(&self.shared))
    }

    /// How many users each room on this node has.
    pub(crate) fn room_sizes(&self) -> Vec<usize> {
        self.state().room_sizes()
    }

    pub(crate) fn count_refused(&self) {
        self.shared.metrics.refused();
    }

    /// A data message of `bytes` from a client of `dialect`.
    pub(crate) fn count_message(&self, dialect: &'static str, bytes: usize) {
        self.shared
            .stats
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.received(dialect, bytes);
    }

    pub(crate) fn count_panic(&self) {
        self.shared
            .stats
            .hook_panics
            .fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.error(crate::metrics::HOOK_PANIC);
    }

    pub(crate) fn count_slow_consumer(&self) {
        self.shared.metrics.slow_consumers.inc();
    }

    pub(crate) fn count_auth_failure(&self, reason: &'static str) {
        self.shared.metrics.auth_failure(reason);
    }

    /// Counts an error of `kind` in `roomcast_errors_total{kind}`: for an application's own
    /// failures beside the hub's (`protocol`, `hook_panic`, `hook_error`). Keep kinds few and
    /// fixed: each is a series.
    ///
    /// ```
    /// let hub = roomcast::Hub::new(roomcast::SessionConfig::default());
    /// hub.count_error("store");
    /// ```
    pub fn count_error(&self, kind: &'static str) {
        self.shared.metrics.error(kind);
    }

    /// Records, in `roomcast_broadcast_seconds`, how long a message took from its arrival to
    /// its last local recipient's queue: for applications that persist before they publish
    /// (the hub cannot see a message arrive), once per message, after
    /// [`Hub::publish_now_many`] returns.
    ///
    /// ```
    /// let hub = roomcast::Hub::new(roomcast::SessionConfig::default());
    /// let arrived = std::time::Instant::now();
    /// // … commit, then publish …
    /// hub.record_broadcast(arrived.elapsed());
    /// ```
    pub fn record_broadcast(&self, took: Duration) {
        self.shared.metrics.broadcast(took);
    }

    pub(crate) fn register(
        &self,
        identity: &Identity,
        outbound: Outbound,
        addr: Option<std::net::IpAddr>,
        endpoint: &'static str,
    ) -> ConnId {
        let conn = ConnId(self.shared.next_conn.fetch_add(1, Ordering::Relaxed));
        self.shared.sweep.get_or_init(|| {
            let deadlines = Deadlines::new(&self.shared.config);
            let stop = self.shared.shutdown.token();
            tokio::spawn(sweep_loop(
                Arc::downgrade(&self.shared),
                deadlines,
                stop.clone(),
            ));
            let presence = &self.shared.config.presence;
            if presence.may_batch() {
                tokio::spawn(presence_loop(
                    Arc::downgrade(&self.shared),
                    presence.interval,
                    stop,
                ));
            }
        });
        self.state()
            .add_conn(conn, identity, outbound.clone(), addr, endpoint);
        self.shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.opened(endpoint);
        // Shutdown cancels first, then closes every registered connection: a connection
        // registered in between is caught here.
        if self.is_shutting_down() {
            outbound.close(CloseReason::going_away());
        } else if self.shared.shutdown.is_draining()
            && let Some(frame) = outbound.dialect().reconnect()
        {
            // Admitted just before the drain began, registered just after its reconnect
            // frames went out: asked here instead.
            let _ = outbound.try_send_now(frame);
        }
        conn
    }

    /// Removes a connection that ended with close `code` and announces the rooms its user
    /// left. Returns whether it was still registered.
    pub(crate) async fn unregister(&self, conn: ConnId, code: u16) -> bool {
        let Some(removed) = self.state().remove_conn(conn) else {
            return false;
        };
        let lasted = self.now_ms().saturating_sub(removed.opened);
        self.shared
            .metrics
            .closed(removed.endpoint, code, Duration::from_millis(lasted));
        for room in removed.user_left {
            if !self.announces_leave(&room, &removed.user).await {
                continue;
            }
            if let Err(err) = self.announce_left(&room, removed.user.clone()).await {
                tracing::warn!(%room, error = %err, "could not announce a leave to other nodes");
            }
        }
        if let Some(broker) = &self.shared.broker {
            for room in removed.emptied {
                if let Err(err) = broker.unsubscribe(room.clone()).await {
                    // A node going away loses its subscriptions with its connection: what
                    // its last sessions leave behind is not worth a line per room.
                    if self.is_shutting_down() {
                        tracing::debug!(%room, error = %err, "not unsubscribed: shutting down");
                        continue;
                    }
                    tracing::warn!(%room, error = %err, "could not unsubscribe");
                }
            }
        }
        true
    }

    /// Stops the node: refuses new connections, closes every session with 1001 and waits up to
    /// `deadline` for them to finish. Returns false when some were still running then.
    pub async fn shutdown_sessions(&self, deadline: Duration) -> bool {
        self.shared.shutdown.cancel();
        self.state().close_all(&CloseReason::going_away());
        self.shared.shutdown.wait(deadline).await
    }

    /// Whether [`Hub::shutdown_sessions`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Drains the node before a shutdown: from now on new connections are refused (closed
    /// with 1001 "server shutting down" right after their upgrade), every connection whose
    /// dialect has a reconnect frame ([`Dialect::reconnect`](crate::protocol::Dialect::reconnect); the native `{"type":"reconnect"}`)
    /// is asked to connect again, which a load balancer sends elsewhere, and this waits up to
    /// `deadline` for the connections to leave. Returns true when all of them left in time.
    ///
    /// Sessions go on as usual meanwhile: messages are still read, stored and broadcast, so a
    /// client finishes what it was doing before it moves. Call [`Hub::shutdown_sessions`]
    /// afterwards to close the rest with 1001. A second call only waits again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use roomcast::{Hub, SessionConfig};
    /// let hub = Hub::new(SessionConfig::default());
    /// // No connection: the drain ends at once.
    /// assert!(hub.drain(Duration::from_secs(10)).await);
    /// assert!(hub.is_draining());
    /// assert!(hub.shutdown_sessions(Duration::from_secs(1)).await);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancelling the wait leaves the node draining; nothing is lost.
    pub async fn drain(&self, deadline: Duration) -> bool {
        if self.shared.shutdown.drain() {
            let (asked, slow) = self.state().ask_reconnect();
            if slow > 0 {
                self.shared.metrics.slow_consumers.inc_by(slow as u64);
            }
            tracing::info!(
                asked,
                deadline = ?deadline,
                "draining: connections asked to reconnect elsewhere, new ones refused"
            );
        }
        self.shared.shutdown.wait(deadline).await
    }

    /// Whether the node takes no new connections: [`Hub::drain`] or
    /// [`Hub::shutdown_sessions`] has been called. A readiness check answers "not ready" then.
    ///
    /// ```
    /// let hub = roomcast::Hub::new(roomcast::SessionConfig::default());
    /// assert!(!hub.is_draining());
    /// ```
    pub fn is_draining(&self) -> bool {
        self.shared.shutdown.is_draining() || self.is_shutting_down()
    }

    /// What a connection's log lines carry besides its id and user; `None` once it is gone.
    pub(crate) fn conn_trace(&self, conn: ConnId) -> Option<ConnTrace> {
        self.state().conn_trace(conn)
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Enforces every connection's deadlines from one task: protocol pings, the pong deadline, the
/// application heartbeat and the idle timeout.
///
/// Why not a timer per connection: a `Sleep` and the deadlines it serves are ~200 bytes in
/// every idle connection's task, and re-arming it on every frame received takes the timer
/// driver's lock. Here a connection records when it last heard from its peer (two relaxed
/// stores per frame) and this task looks at every connection once per period, under the hub's
/// lock for one pass (a few ms for 100k connections, no waiting inside). Ends with the hub or
/// at shutdown.
async fn sweep_loop(hub: Weak<Shared>, deadlines: Deadlines, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(deadlines.sweep_period());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(shared) = hub.upgrade() else {
            return;
        };
        let now = shared.now_ms();
        let slow = shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sweep(now, &deadlines);
        if slow > 0 {
            shared.metrics.slow_consumers.inc_by(slow as u64);
        }
    }
}

/// Flushes the rooms' presence batches (`presence`) once per `interval`, from one task per hub:
/// no timer per room or connection. A tick with nothing batched costs one lock. With a
/// [`Presence`], the count in each update is every node's ([`Hub::room_user_count_everywhere`]),
/// read before the lock is taken.
/// Ends with the hub or at shutdown.
async fn presence_loop(hub: Weak<Shared>, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(shared) = hub.upgrade() else {
            return;
        };
        let hub = Hub { shared };
        hub.flush_presence().await;
    }
}

impl Hub {
    /// Hands every batched or counted room's waiting joins and leaves to its members now:
    /// what the hub's presence timer does once per
    /// [`PresenceConfig::interval`](crate::PresenceConfig::interval). Each member gets one
    /// update, the net changes since its last one or its member list
    /// ([`PresenceMode`](crate::PresenceMode)). For an application that wants presence out
    /// before a planned step (and for tests, which cannot wait on a timer's phase). Nothing
    /// waits for a member; with a [`Presence`], each room's count is read from it first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let hub = roomcast::Hub::new(roomcast::SessionConfig::default());
    /// hub.flush_presence().await; // nothing batched: nothing sent
    /// # }
    /// ```
    pub async fn flush_presence(&self) {
        let mut counts = std::collections::HashMap::new();
        if self.shared.presence.is_some() {
            // Outside the lock: the other nodes' members come from the broker's presence.
            let rooms = self.state().batched_rooms();
            for room in rooms {
                let count = self.room_user_count_everywhere(&room).await;
                counts.insert(room, count);
            }
        }
        let delivery = self.state().flush_presence(&counts);
        if delivery.sent > 0 {
            tracing::debug!(frames = delivery.sent, "presence updates handed out");
        }
        self.count(delivery);
    }
}

/// A hub that does not keep it alive (the metrics collector's).
pub(crate) struct WeakHub(Weak<Shared>);

impl std::fmt::Debug for WeakHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakHub")
    }
}

impl WeakHub {
    pub(crate) fn upgrade(&self) -> Option<Hub> {
        self.0.upgrade().map(|shared| Hub { shared })
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.shared.node)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}
