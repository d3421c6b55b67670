//! The hub's sends (seed 001's `ChatBase`): to everyone, to users, to a room's members, and
//! the local delivery every one of them ends in, with its counting and the direct writes it
//! leaves to the caller.

use tokio::time::Instant;

use crate::broker::{RoomEvent, Target};
use crate::frame::{CloseReason, Frame};
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::{Event, now_ms};

use super::state::Delivery;
use super::{ConnectionInfo, Hub, cluster};

impl Hub {
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
    pub(super) fn deliver_sequenced(&self, room: &RoomName, events: &[Event]) -> usize {
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

    pub(super) fn deliver_local(
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
    pub(super) fn count(&self, delivery: Delivery) -> usize {
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
}
