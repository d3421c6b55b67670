//! Moving room events between nodes.
//!
//! A [`Broker`] carries [`RoomEvent`]s from the node where they happened to every other node
//! with members in the room. The [`Hub`](crate::Hub) delivers locally at once, publishes, and
//! drops its own events when they come back (each carries its origin [`NodeId`]). It subscribes
//! to a room when its first local member joins and unsubscribes when the last leaves.
//!
//! A hub built without a broker is a single node and publishes nothing. [`memory::MemoryBus`]
//! joins several hubs in one process (tests, embedding). A Redis broker comes later behind a
//! feature; the trait is object-safe so the hub holds an `Arc<dyn Broker>` chosen at start-up.

pub mod memory;
pub mod wire;

use tokio::sync::mpsc;

pub use crate::auth::BoxFuture;
use crate::ids::{NodeId, RoomName, UserId};
use crate::protocol::{Event, UserInfo};

/// Who an event is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The members of a room.
    Room(RoomName),
    /// Every connection on every node.
    All,
    /// These users' connections.
    Users(Vec<UserId>),
}

/// An event on its way between nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    /// The node where it happened.
    pub origin: NodeId,
    /// Who it is for.
    pub target: Target,
    /// Users who must not receive it.
    pub exclude: Vec<UserId>,
    /// What happened.
    pub event: Event,
}

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is closed or its connection is gone; events are not crossing nodes.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Carries room events between nodes. Object-safe: hubs hold an `Arc<dyn Broker>`.
pub trait Broker: Send + Sync + 'static {
    /// Starts delivering events addressed to `node` into `deliver`. Called once by the hub.
    fn start(
        &self,
        node: NodeId,
        deliver: mpsc::Sender<RoomEvent>,
    ) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Sends `event` to the other nodes it concerns.
    fn publish(&self, event: RoomEvent) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Sends `events`, in order, to the other nodes they concern. The default publishes them
    /// one by one; a broker that can send several in one round trip (a Redis pipeline) should.
    fn publish_many(&self, events: Vec<RoomEvent>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            for event in events {
                self.publish(event).await?;
            }
            Ok(())
        })
    }

    /// This node now has members in `room`.
    fn subscribe(&self, room: RoomName) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// This node no longer has members in `room`.
    fn unsubscribe(&self, room: RoomName) -> BoxFuture<'_, Result<(), BrokerError>>;
}

/// Who is in which room across nodes, for nodes that share a broker: the hub announces a join
/// when a user enters a room on no node before, and a leave when the user is on no node any
/// more, so a user with connections on two nodes is joined and left once.
///
/// Without one (a single node, or several over [`memory::MemoryBus`]) each hub decides from its
/// own connections.
pub trait Presence: Send + Sync + 'static {
    /// `user` has its first connection in `room` on this node. Returns true when the user was in
    /// the room on no node before (the join is announced).
    fn joined(&self, room: &RoomName, user: &UserInfo) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// `user` has no connection left in `room` on this node. Returns true when the user is in
    /// the room on no node now (the leave is announced).
    fn left(&self, room: &RoomName, user: &UserId) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// Everyone in `room`, on every node, sorted by id.
    fn members(&self, room: &RoomName) -> BoxFuture<'_, Result<Vec<UserInfo>, BrokerError>>;

    /// How many users are in `room` on every node: the length of [`Presence::members`],
    /// without the list. The hub asks it for each batched room's `count` once per presence
    /// interval. The default lists the members and counts them; an implementation that can
    /// count in place (the Redis one: `HLEN` of the room's hash) should, so that the count
    /// costs the same in a room of ten and of ten thousand.
    ///
    /// ```
    /// use roomcast::broker::{BoxFuture, BrokerError, Presence};
    /// use roomcast::protocol::UserInfo;
    /// use roomcast::{RoomName, UserId};
    ///
    /// /// Everyone is in every room: two users.
    /// struct Two;
    ///
    /// impl Presence for Two {
    ///     fn joined(&self, _: &RoomName, _: &UserInfo) -> BoxFuture<'_, Result<bool, BrokerError>> {
    ///         Box::pin(async { Ok(false) })
    ///     }
    ///     fn left(&self, _: &RoomName, _: &UserId) -> BoxFuture<'_, Result<bool, BrokerError>> {
    ///         Box::pin(async { Ok(false) })
    ///     }
    ///     fn members(&self, _: &RoomName) -> BoxFuture<'_, Result<Vec<UserInfo>, BrokerError>> {
    ///         Box::pin(async {
    ///             Ok(vec![
    ///                 UserInfo { id: UserId::from("ann"), username: "Ann".into() },
    ///                 UserInfo { id: UserId::from("bob"), username: "Bob".into() },
    ///             ])
    ///         })
    ///     }
    ///     // `member_count` left to its default: it lists and counts.
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let room = RoomName::new("lobby").unwrap();
    /// assert_eq!(Two.member_count(&room).await.unwrap(), 2);
    /// # }
    /// ```
    fn member_count(&self, room: &RoomName) -> BoxFuture<'_, Result<usize, BrokerError>> {
        let room = room.clone();
        Box::pin(async move { Ok(self.members(&room).await?.len()) })
    }
}
