//! Room membership: joins and leaves of a user or one connection, their announcements (at
//! once, or batched by `presence`), member lists across nodes, and the join that replays
//! history first.

use std::sync::Arc;

use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::{ChatMessage, Event, UserInfo, now_ms};

use super::{Hub, JoinOutcome, cluster};

impl Hub {
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
    pub(super) async fn announces_leave(&self, room: &RoomName, user: &UserInfo) -> bool {
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
    /// ([`Presence::member_count`](crate::broker::Presence::member_count), which need not list them) or this node's, whichever is
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

    pub(super) async fn announce_left(
        &self,
        room: &RoomName,
        user: UserInfo,
    ) -> crate::Result<usize> {
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
}
