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
mod order;
mod pace;
mod presence;
mod state;

pub use order::History;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::broker::{Broker, BrokerError, Presence, RoomEvent, Target};
use crate::config::SessionConfig;
use crate::frame::{CloseReason, Frame};
use crate::ids::{ConnId, NodeId, RoomName, UserId};
use crate::metrics::HubMetrics;
use crate::protocol::{ChatMessage, Dialect, Event, UserInfo, now_ms};
use crate::session::Outbound;
use crate::shutdown::Shutdown;
pub(crate) use state::ConnTrace;
use state::{Deadlines, Delivery, State};

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

    // ---- sends (seed 001's ChatBase) ----

    /// Sends `frame` to every connection on every node, except `exclude`'s.
    /// Returns the number of local connections reached.
    ///
    /// # Errors
    ///
    /// [`BrokerError`](crate::Error::Broker) when other nodes could not be reached; local
    /// delivery has happened by then.
    pub async fn broadcast(
        &self,
        frame: impl Into<Frame>,
        exclude: &[UserId],
    ) -> crate::Result<usize> {
        self.send(Target::All, Event::Frame(frame.into()), exclude, None)
            .await
    }

    /// Sends an operator's notice to every connection on every node, each in its dialect's
    /// form (a message from `system`; [`Event::Notice`]). Returns the local connections
    /// reached.
    ///
    /// # Errors
    ///
    /// As [`Hub::broadcast`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> roomcast::Result<()> {
    /// let hub = roomcast::Hub::new(roomcast::SessionConfig::default());
    /// assert_eq!(hub.notify_all("maintenance at 22:00 UTC").await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn notify_all(&self, content: &str) -> crate::Result<usize> {
        let event = Event::Notice {
            content: content.into(),
            timestamp_ms: now_ms(),
        };
        self.send(Target::All, event, &[], None).await
    }

    /// Closes every connection of `user` on this node with `reason` (each finishes what is
    /// queued, then closes). Returns how many were asked to close.
    ///
    /// ```
    /// use roomcast::{CloseReason, Hub, SessionConfig, UserId};
    /// let hub = Hub::new(SessionConfig::default());
    /// assert_eq!(hub.disconnect_user(&UserId::from("mallory"), CloseReason::new(4001, "banned")), 0);
    /// ```
    pub fn disconnect_user(&self, user: &UserId, reason: CloseReason) -> usize {
        self.state().close_user(user, &reason)
    }

    /// Closes every connection of `user` on every node with `reason`. Returns how many were
    /// asked to close on this node (the other nodes close theirs when the broker reaches them).
    ///
    /// # Errors
    ///
    /// As [`Hub::broadcast`]: this node's connections are closed by then.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> roomcast::Result<()> {
    /// use roomcast::{CloseReason, Hub, SessionConfig, UserId};
    /// let hub = Hub::new(SessionConfig::default());
    /// let user = UserId::from("mallory");
    /// assert_eq!(hub.disconnect_user_everywhere(&user, CloseReason::new(4001, "banned")).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn disconnect_user_everywhere(
        &self,
        user: &UserId,
        reason: CloseReason,
    ) -> crate::Result<usize> {
        let target = Target::Users(vec![user.clone()]);
        self.send(target, Event::Close(reason), &[], None).await
    }

    /// The connections in `room` on this node, oldest first: for an operator's view.
    ///
    /// ```
    /// use roomcast::{Hub, RoomName, SessionConfig};
    /// let hub = Hub::new(SessionConfig::default());
    /// assert!(hub.room_connections(&RoomName::new("lobby").unwrap()).is_empty());
    /// ```
    pub fn room_connections(&self, room: &RoomName) -> Vec<ConnectionInfo> {
        let now = self.now_ms();
        let wall = now_ms();
        let mut conns = self.state().room_connections(room);
        conns.sort_by_key(|conn| conn.opened);
        conns
            .into_iter()
            .map(|conn| ConnectionInfo {
                id: conn.id,
                user: conn.user,
                endpoint: conn.endpoint,
                client_addr: conn.addr,
                connected_at_ms: wall - i64::try_from(now.saturating_sub(conn.opened)).unwrap_or(0),
            })
            .collect()
    }

    /// Sends `frame` to every connection of `user`. Returns the local connections reached.
    ///
    /// # Errors
    ///
    /// As [`Hub::broadcast`].
    pub async fn send_to(&self, user: &UserId, frame: impl Into<Frame>) -> crate::Result<usize> {
        self.send_to_many(std::slice::from_ref(user), frame).await
    }

    /// Sends `frame` to every connection of each of `users`.
    ///
    /// # Errors
    ///
    /// As [`Hub::broadcast`].
    pub async fn send_to_many(
        &self,
        users: &[UserId],
        frame: impl Into<Frame>,
    ) -> crate::Result<usize> {
        let target = Target::Users(users.to_vec());
        self.send(target, Event::Frame(frame.into()), &[], None)
            .await
    }

    /// Sends `frame` to every connection in `room`.
    ///
    /// # Errors
    ///
    /// As [`Hub::broadcast`].
    pub async fn broadcast_to_room(
        &self,
        room: &RoomName,
        frame: impl Into<Frame>,
    ) -> crate::Result<usize> {
        let target = Target::Room(room.clone());
        self.send(target, Event::Frame(frame.into()), &[], None)
            .await
    }

    /// Publishes `event` to `room`: each recipient's dialect encodes it (once per dialect), on
    /// every node. Returns the local connections reached.
    ///
    /// # Errors
    ///
    /// As [`Hub::broadcast`].
    pub async fn publish(
        &self,
        room: &RoomName,
        event: Event,
        exclude: &[UserId],
    ) -> crate::Result<usize> {
        self.send(Target::Room(room.clone()), event, exclude, None)
            .await
    }

    /// Publishes `event` to `room` at once, without waiting: local connections get it before
    /// this returns, other nodes through the broker in the order of the calls. For events
    /// whose order matters (persisted messages, published in `seq` order by the store's commit
    /// path). Returns the local connections reached.
    pub fn publish_now(&self, room: &RoomName, event: Event, exclude: &[UserId]) -> usize {
        let target = Target::Room(room.clone());
        let sent = self.deliver_local(&target, &event, exclude, None);
        if let Some(ordered_tx) = self.shared.ordered_tx.get() {
            let _ = ordered_tx.send(RoomEvent {
                origin: self.shared.node,
                target,
                exclude: exclude.to_vec(),
                event,
            });
        }
        sent
    }

    /// Publishes `events` to `room` at once, in order, without waiting: what
    /// [`Hub::publish_now`] does for each, but each local connection gets all of them with one
    /// queue operation and one wake-up. For a group of persisted messages committed together
    /// (in `seq` order within the room). Returns the frames queued locally.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use roomcast::protocol::{ChatMessage, Event, UserInfo};
    /// use roomcast::{Hub, RoomName, SessionConfig};
    ///
    /// let hub = Hub::new(SessionConfig::default());
    /// let room = RoomName::new("lobby").unwrap();
    /// let message = |seq: u64| {
    ///     Event::Message(Arc::new(ChatMessage {
    ///         id: format!("m{seq}").into(),
    ///         seq: Some(seq),
    ///         room: room.clone(),
    ///         sender: UserInfo { id: "ann".into(), username: "Ann".into() },
    ///         content: "hi".into(),
    ///         data: None,
    ///         timestamp_ms: 0,
    ///     }))
    /// };
    /// // No connection is in the room yet: nothing is queued.
    /// assert_eq!(hub.publish_now_many(&room, vec![message(1), message(2)], &[]), 0);
    /// ```
    pub fn publish_now_many(
        &self,
        room: &RoomName,
        events: Vec<Event>,
        exclude: &[UserId],
    ) -> usize {
        let sequenced = exclude.is_empty() && self.shared.broker.is_some();
        let sent = if sequenced {
            self.deliver_sequenced(room, &events)
        } else {
            let delivery = self.state().deliver_many(room, &events, exclude);
            self.count(delivery)
        };
        if let Some(ordered_tx) = self.shared.ordered_tx.get() {
            for event in events {
                let _ = ordered_tx.send(RoomEvent {
                    origin: self.shared.node,
                    target: Target::Room(room.clone()),
                    exclude: exclude.to_vec(),
                    event,
                });
            }
        }
        sent
    }

    /// Delivers `events` to `room`'s local connections, its persisted messages through the
    /// room's sequencer (`order`), starting the room's gap task when one is needed. Returns
    /// the frames queued.
    fn deliver_sequenced(&self, room: &RoomName, events: &[Event]) -> usize {
        let messages = events.iter().filter_map(|event| match event {
            Event::Message(message) if message.seq.is_some() => Some(message.clone()),
            _ => None,
        });
        let others: Vec<Event> = events
            .iter()
            .filter(|event| !matches!(event, Event::Message(m) if m.seq.is_some()))
            .cloned()
            .collect();
        let (delivery, fill) = {
            let mut state = self.state();
            let (mut delivery, fill) = state.deliver_sequenced(room, messages);
            if !others.is_empty() {
                delivery.merge(state.deliver_many(room, &others, &[]));
            }
            (delivery, fill)
        };
        if fill {
            tokio::spawn(cluster::fill_gap(self.downgrade(), room.clone()));
        }
        self.count(delivery)
    }

    async fn send(
        &self,
        target: Target,
        event: Event,
        exclude: &[UserId],
        exclude_conn: Option<ConnId>,
    ) -> crate::Result<usize> {
        let sent = self.deliver_local(&target, &event, exclude, exclude_conn);
        if let Some(broker) = &self.shared.broker {
            broker
                .publish(RoomEvent {
                    origin: self.shared.node,
                    target,
                    exclude: exclude.to_vec(),
                    event,
                })
                .await?;
        }
        Ok(sent)
    }

    fn deliver_local(
        &self,
        target: &Target,
        event: &Event,
        exclude: &[UserId],
        exclude_conn: Option<ConnId>,
    ) -> usize {
        let delivery = self.state().deliver(target, event, exclude, exclude_conn);
        self.count(delivery)
    }

    /// Adds a delivery to the hub's counters, once for all its recipients, and writes to the
    /// recipients whose queue it found empty (outside the hub's lock, which the caller has
    /// released); returns the frames it queued.
    ///
    /// Those writes are one non-blocking `send` each from this thread, instead of a wake-up
    /// of each recipient's task (`Outbound::write_queued`); a recipient still inside its
    /// write interval, or whose socket is full, is woken as before.
    fn count(&self, delivery: Delivery) -> usize {
        let Delivery {
            sent,
            slow,
            bytes,
            writes,
        } = delivery;
        let metrics = &self.shared.metrics;
        let now = Instant::now();
        if sent > 0 {
            metrics.delivered.inc_by(sent as u64);
            metrics.bytes_out.inc_by(bytes as u64);
            self.shared.pace.record(sent, now);
        }
        if slow > 0 {
            metrics.slow_consumers.inc_by(slow as u64);
        }
        if !writes.is_empty() {
            let interval = self.shared.pace.interval();
            let direct = writes
                .into_iter()
                .map(|write| write.write(now, interval))
                .filter(|&written| written)
                .count();
            metrics.direct_writes.inc_by(direct as u64);
        }
        sent
    }

    // ---- membership ----

    /// Puts every connection of `user` on this node in `room`. Returns true when the user was
    /// not in the room before (the join is then announced to the room: at once, or in the next
    /// presence update of a batched room, [`PresenceMode`](crate::PresenceMode)).
    ///
    /// # Errors
    ///
    /// [`BrokerError`](crate::Error::Broker) when the broker could not subscribe or publish.
    pub async fn join_room(&self, user: &UserId, room: &RoomName) -> crate::Result<bool> {
        let conns = self.state().user_conns(user);
        let mut announced = false;
        for conn in conns {
            announced |= self.join_conn(conn, room).await?.announced;
        }
        Ok(announced)
    }

    /// Takes every connection of `user` on this node out of `room`. Returns true when the user
    /// was in it (the leave is then announced).
    ///
    /// # Errors
    ///
    /// As [`Hub::join_room`].
    pub async fn leave_room(&self, user: &UserId, room: &RoomName) -> crate::Result<bool> {
        let conns = self.state().user_conns(user);
        let mut was_member = false;
        for conn in conns {
            was_member |= self.leave_conn(conn, room).await?;
        }
        Ok(was_member)
    }

    pub(crate) async fn join_conn(
        &self,
        conn: ConnId,
        room: &RoomName,
    ) -> crate::Result<JoinOutcome> {
        self.join_conn_with(conn, room, false, false).await
    }

    /// Joins, then subscribes and announces as a join requires. With `hold`, the room's live
    /// messages wait for this connection from the join on (in the same lock scope), until
    /// `State::finish_replay`. With `list`, the connection's dialect's member list is queued
    /// to it in that same lock scope, before any announcement that follows the join.
    async fn join_conn_with(
        &self,
        conn: ConnId,
        room: &RoomName,
        hold: bool,
        list: bool,
    ) -> crate::Result<JoinOutcome> {
        // Other nodes' members, read before the lock (presence is a network call): seed 004's
        // list names everyone in the room, as the native `user_list` does. A user joining on
        // another node between this read and the join below is listed only if their join's
        // event arrives after it: the window a room's first member on a node has anyway,
        // before the node subscribes.
        let elsewhere = match &self.shared.presence {
            Some(presence) if list => presence.members(room).await.unwrap_or_else(|err| {
                tracing::warn!(%room, error = %err, "presence unavailable; listing this node's members");
                Vec::new()
            }),
            _ => Vec::new(),
        };
        let (joined, user, listed) = {
            let mut state = self.state();
            let Some(joined) = state.join(conn, room) else {
                return Err(crate::session::SendError::Closed.into());
            };
            if hold {
                state.hold(conn, room);
            }
            let listed = if list {
                state.send_member_list(conn, room, elsewhere)
            } else {
                Ok(())
            };
            (joined, state.conn_user(conn), listed)
        };
        if listed == Err(crate::session::SendError::Full) {
            self.count_slow_consumer();
        }
        if joined.room_created
            && let Some(broker) = &self.shared.broker
        {
            broker.subscribe(room.clone()).await?;
        }
        if joined.user_joined
            && let Some(user) = user
            && self.announces_join(room, &user).await
        {
            let event = Event::Joined {
                room: room.clone(),
                user,
                timestamp_ms: now_ms(),
            };
            self.publish_now(room, event, &[]);
        }
        if !joined.already {
            // `conn` too: a join through `Hub::join_room` runs outside the connection's hooks,
            // hence outside its span.
            tracing::info!(%conn, %room, "joined");
        }
        Ok(JoinOutcome {
            already_member: joined.already,
            announced: joined.user_joined,
        })
    }

    pub(crate) async fn leave_conn(&self, conn: ConnId, room: &RoomName) -> crate::Result<bool> {
        let (left, user) = {
            let mut state = self.state();
            let user = state.conn_user(conn);
            (state.leave(conn, room).unwrap_or_default(), user)
        };
        if left.was_member {
            tracing::info!(%conn, %room, "left");
        }
        if let Some(user) = user.filter(|_| left.user_left)
            && self.announces_leave(room, &user).await
        {
            self.announce_left(room, user).await?;
        }
        if left.room_emptied
            && let Some(broker) = &self.shared.broker
        {
            broker.unsubscribe(room.clone()).await?;
        }
        Ok(left.was_member)
    }

    /// Whether `user`'s first connection in `room` on this node is a join for the room: with
    /// presence, only when the user is on no other node. Presence unreachable: announced (a
    /// duplicate join is better than a silent one).
    async fn announces_join(&self, room: &RoomName, user: &UserInfo) -> bool {
        let Some(presence) = &self.shared.presence else {
            return true;
        };
        presence.joined(room, user).await.unwrap_or_else(|err| {
            tracing::warn!(%room, error = %err, "presence unavailable; announcing the join");
            true
        })
    }

    /// Whether `user`'s last connection in `room` on this node leaving is a leave for the room:
    /// with presence, only when the user is on no other node either.
    async fn announces_leave(&self, room: &RoomName, user: &UserInfo) -> bool {
        let Some(presence) = &self.shared.presence else {
            return true;
        };
        presence.left(room, &user.id).await.unwrap_or_else(|err| {
            tracing::warn!(%room, error = %err, "presence unavailable; announcing the leave");
            true
        })
    }

    /// The users in `room` on every node (each once, sorted by id): with presence, what it
    /// lists plus this node's own; otherwise [`Hub::room_users`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use roomcast::{Hub, RoomName, SessionConfig};
    /// let hub = Hub::new(SessionConfig::default());
    /// assert!(hub.room_users_everywhere(&RoomName::new("lobby").unwrap()).await.is_empty());
    /// # }
    /// ```
    pub async fn room_users_everywhere(&self, room: &RoomName) -> Vec<UserInfo> {
        let mut users = self.room_users(room);
        if let Some(presence) = &self.shared.presence {
            match presence.members(room).await {
                Ok(remote) => users.extend(remote),
                Err(err) => {
                    tracing::warn!(%room, error = %err, "presence unavailable; listing this node's members");
                }
            }
            users.sort_by(|a, b| a.id.cmp(&b.id));
            users.dedup_by(|a, b| a.id == b.id);
        }
        users
    }

    /// How many users are in `room` on every node: with presence, its count
    /// ([`Presence::member_count`], which need not list them) or this node's, whichever is
    /// larger; otherwise [`Hub::room_user_count`]. The same as
    /// [`Hub::room_users_everywhere`]'s length whenever presence has every node's members,
    /// this node's included (it has them but for the moment between a join here and its
    /// write there, and while Redis is rebuilding after losing its data, when the lists are
    /// partial too), for the cost of one count rather than a list of the room.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use roomcast::{Hub, RoomName, SessionConfig};
    /// let hub = Hub::new(SessionConfig::default());
    /// assert_eq!(hub.room_user_count_everywhere(&RoomName::new("lobby").unwrap()).await, 0);
    /// # }
    /// ```
    pub async fn room_user_count_everywhere(&self, room: &RoomName) -> usize {
        let here = self.room_user_count(room);
        let Some(presence) = &self.shared.presence else {
            return here;
        };
        match presence.member_count(room).await {
            Ok(everywhere) => everywhere.max(here),
            Err(err) => {
                tracing::warn!(%room, error = %err, "presence unavailable; counting this node's members");
                here
            }
        }
    }

    async fn announce_left(&self, room: &RoomName, user: UserInfo) -> crate::Result<usize> {
        let event = Event::Left {
            room: room.clone(),
            user,
            timestamp_ms: now_ms(),
        };
        // On the path of the room's persisted messages (`publish_now`): other nodes get this
        // node's joins, leaves and messages in the order this node had them.
        Ok(self.publish_now(room, event, &[]))
    }

    /// Joins `conn` to `room` and replays history to it before any live message: live
    /// messages are held while `fetch` runs, then the replay (everything after `since`, in
    /// `seq` order) is queued, then the held messages, each `seq` exactly once.
    /// With `list`, the dialect's member list comes first, taken in the join's lock scope.
    pub(crate) async fn join_replaying<F>(
        &self,
        conn: ConnId,
        room: &RoomName,
        since: u64,
        list: bool,
        fetch: F,
    ) -> crate::Result<(JoinOutcome, usize)>
    where
        F: Future<Output = crate::Result<Vec<Arc<ChatMessage>>>>,
    {
        // Held from the moment it joins (or at once, if already a member: a resume).
        let outcome = self.join_conn_with(conn, room, true, list).await?;
        let history = match fetch.await {
            Ok(history) => history,
            Err(err) => {
                // Go live with what was held, so nothing is lost, then report the failure.
                let _ = self.state().finish_replay(conn, room, since, Vec::new());
                return Err(err);
            }
        };
        let (replayed, fill) = {
            let mut state = self.state();
            let replayed = state.finish_replay(conn, room, since, history)?;
            (replayed, state.claim_fill(room))
        };
        if fill {
            tokio::spawn(cluster::fill_gap(self.downgrade(), room.clone()));
        }
        Ok((outcome, replayed))
    }

    pub(crate) fn conn_addr(&self, conn: ConnId) -> Option<std::net::IpAddr> {
        self.state().conn_addr(conn)
    }

    pub(crate) fn conn_rooms(&self, conn: ConnId) -> Vec<RoomName> {
        self.state().conn_rooms(conn)
    }

    pub(crate) fn conn_in_room(&self, conn: ConnId, room: &RoomName) -> bool {
        self.state().conn_in_room(conn, room)
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
        dialect: &'static dyn Dialect,
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
            .add_conn(conn, identity, dialect, outbound.clone(), addr, endpoint);
        self.shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.opened(endpoint);
        // Shutdown cancels first, then closes every registered connection: a connection
        // registered in between is caught here.
        if self.is_shutting_down() {
            outbound.close(CloseReason::going_away());
        } else if self.shared.shutdown.is_draining()
            && let Some(frame) = dialect.reconnect()
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
    /// dialect has a reconnect frame ([`Dialect::reconnect`]; the native `{"type":"reconnect"}`)
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
