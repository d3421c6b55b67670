//! The hub's registry: connections, rooms and users under one lock, so they never disagree.
//!
//! Everything here is plain synchronous data manipulation. [`super::Hub`] takes the lock, calls
//! one of these methods, releases the lock, and only then does anything that waits (broker
//! calls, hooks). Delivery happens under the lock because it never waits: each recipient gets a
//! `try_send` of a frame that was encoded once per dialect.
//!
//! This file is the registry (connections, rooms with their member tables, users);
//! `deliver.rs` is what it queues to a room's members, `sequenced.rs` what keeps a room's
//! persisted messages in order for each member (a broker's sequencer, history replays),
//! `sweep.rs` the deadlines the hub's sweep enforces, and `queries.rs` what the hub reads of
//! the registry and asks of many connections at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::auth::Identity;
use crate::config::PresenceConfig;
use crate::frame::CloseReason;
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::{ChatMessage, UserInfo};
use crate::session::Outbound;

use super::expiry::Expiry;
use super::order::Sequencer;
use super::presence::Batch;

mod deliver;
mod queries;
mod sequenced;
mod sweep;

pub(crate) use self::deliver::Delivery;
pub(in crate::hub) use self::deliver::Encoded;
pub(crate) use self::sweep::Deadlines;

#[derive(Default)]
pub(crate) struct State {
    /// Boxed: the table holds a pointer per slot instead of the whole entry. A hash table is
    /// between 44% and 87% full, so inline entries (144 bytes) cost each connection 165 to
    /// 330 bytes of table; boxed, the entry is one 160-byte allocation plus 19 to 39 bytes of
    /// table. Nothing hot reaches a connection through here: a delivery goes through its
    /// room's member table.
    pub(super) conns: HashMap<ConnId, Box<Conn>>,
    pub(super) rooms: HashMap<RoomName, Room>,
    users: HashMap<UserId, User>,
    /// Rooms' persisted messages pass a sequencer (`super::order`): a node with a broker.
    sequenced: bool,
    /// Which rooms batch their joins and leaves, or only count them (`super::presence`).
    pub(super) presence: PresenceConfig,
    /// Rooms with a batch waiting for the presence timer.
    pub(super) batched: HashSet<RoomName>,
}

pub(super) struct Conn {
    pub(super) user: UserId,
    /// The session holds another clone and drains it; each room the connection is in holds
    /// one more (its [`Member`] entry). It knows the connection's dialect
    /// ([`Outbound::dialect`]).
    pub(super) outbound: Outbound,
    /// Rooms this connection is in; few, so a `Vec`. What it was sent in each is in the
    /// room's [`Member`] entry for it.
    rooms: Vec<RoomName>,
    /// When the sweep last asked for a protocol ping (or the connection opened), ms.
    pinged: u64,
    /// When the sweep last queued the application heartbeat (or the connection opened), ms.
    beat: u64,
    /// The client's address, when the route knew it (`Session::client_addr`).
    addr: Option<std::net::IpAddr>,
    /// The endpoint's name ([`Endpoint::name`](crate::Endpoint::name)): metrics and the admin
    /// API.
    endpoint: &'static str,
    /// When it opened, ms of the hub's clock.
    opened: u64,
    /// When the connection's access token expires, and how to refresh it (`super::expiry`);
    /// `None` for guests, who never expire. Set by `Hub::expire_at` after registration.
    expiry: Option<Expiry>,
}

/// What a connection's log lines say about it beyond its id and user (`Hub::conn_trace`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnTrace {
    /// The endpoint's name ([`Endpoint::name`](crate::Endpoint::name)).
    pub(crate) endpoint: &'static str,
    pub(crate) addr: Option<std::net::IpAddr>,
    /// When it opened, ms of the hub's clock.
    pub(crate) opened: u64,
}

/// One connection in one room: what a delivery to the room needs of it, in the room's own
/// table, so that reaching a member costs no lookup of the connection (a cache miss per member
/// of a room of thousands, twice: its registry entry, then its list of rooms).
pub(super) struct Member {
    /// A clone of the connection's queue ([`Conn::outbound`]).
    pub(super) outbound: Outbound,
    /// Highest message `seq` queued to this connection in this room: a message at or below
    /// it was already sent (by a history replay) and is skipped, so a resume never duplicates.
    watermark: u64,
    /// While a history replay is being fetched, live messages wait here instead of being
    /// queued, so the replay comes first and nothing falls in between.
    /// Boxed: a replay is short and rare, and this entry exists for every connection.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes instead of 24 in every connection's room entry"
    )]
    held: Option<Box<Vec<Arc<ChatMessage>>>>,
}

impl Member {
    fn new(outbound: Outbound) -> Self {
        Self {
            outbound,
            watermark: 0,
            held: None,
        }
    }
}

#[derive(Default)]
pub(super) struct Room {
    /// Its local connections, in the order they connected (ids only grow): a delivery walks
    /// them that way, so their queues, and the kernel's sockets behind them, are visited in
    /// the order they were allocated rather than a hash's. At 50 msg/s into a room of 1000
    /// that was 0.94× the server's CPU per delivery of a `HashMap`'s order (Bun's topics,
    /// uWebSockets' `unordered_set` of subscriber pointers, walk them in about reverse order
    /// of subscription). Joins and leaves pay a search of the tree instead of a hash.
    pub(super) conns: BTreeMap<ConnId, Member>,
    /// Connections per user in this room: join is announced on 0 → 1, leave on 1 → 0.
    pub(super) users: HashMap<UserId, u32>,
    /// The order of its persisted messages, on a node with a broker (`super::order`); made
    /// with the room's first sequenced message.
    order: Option<Box<Sequencer>>,
    /// Joins and leaves not yet handed to the members (a batched or counted room,
    /// `super::presence`); boxed, as most rooms never batch.
    pub(super) batch: Option<Box<Batch>>,
    /// The count in the last presence update its members got: a counts room's members get
    /// the next only when it differs.
    pub(super) sent_count: Option<usize>,
}

struct User {
    username: Arc<str>,
    conns: Vec<ConnId>,
}

/// A connection as the registry lists it (`Hub::room_connections`).
pub(crate) struct ListedConn {
    pub(crate) id: ConnId,
    pub(crate) user: UserInfo,
    pub(crate) endpoint: &'static str,
    pub(crate) addr: Option<std::net::IpAddr>,
    /// Hub clock, ms.
    pub(crate) opened: u64,
}

/// What removing a connection changed.
pub(crate) struct Removed {
    pub(crate) user: UserInfo,
    /// The connection's endpoint and when it opened (hub clock, ms).
    pub(crate) endpoint: &'static str,
    pub(crate) opened: u64,
    /// Rooms the user is no longer in at all (announce a leave).
    pub(crate) user_left: Vec<RoomName>,
    /// Rooms with no local connection left (unsubscribe from the broker).
    pub(crate) emptied: Vec<RoomName>,
}

/// What a join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Joined {
    /// The connection was already in the room.
    pub(crate) already: bool,
    /// The user was not in the room before (announce it).
    pub(crate) user_joined: bool,
    /// The room had no local connection before (subscribe to the broker).
    pub(crate) room_created: bool,
}

/// What a leave changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Left {
    /// The connection was in the room.
    pub(crate) was_member: bool,
    /// The user has no connection left in the room (announce it).
    pub(crate) user_left: bool,
    /// The room has no local connection left (unsubscribe).
    pub(crate) room_emptied: bool,
}

impl State {
    /// Registers a connection. Returns true when this is the user's first connection. Its
    /// ping and heartbeat periods count from when its queue was made (`Outbound::new`).
    pub(crate) fn add_conn(
        &mut self,
        conn: ConnId,
        identity: &Identity,
        outbound: Outbound,
        addr: Option<std::net::IpAddr>,
        endpoint: &'static str,
    ) -> bool {
        let (opened, _) = outbound.last_heard();
        self.conns.insert(
            conn,
            Box::new(Conn {
                user: identity.user_id.clone(),
                outbound,
                rooms: Vec::new(),
                pinged: opened,
                beat: opened,
                addr,
                endpoint,
                opened,
                expiry: None,
            }),
        );
        let user = self
            .users
            .entry(identity.user_id.clone())
            .or_insert_with(|| User {
                username: identity.username.clone(),
                conns: Vec::new(),
            });
        if user.conns.is_empty() {
            // Most users hold one connection: one slot, not the four `push` would reserve.
            user.conns.reserve_exact(1);
        }
        user.conns.push(conn);
        user.conns.len() == 1
    }
    /// Removes a connection from every room and from its user.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) -> Option<Removed> {
        let entry = *self.conns.remove(&conn)?;
        // A session that ends normally recorded its close already (this does nothing then). One
        // whose task died (a panic, an abort) did not: recording it here lets go of the queue's
        // write side, so the socket closes even while user code still holds a `Sender`, and
        // such a sender's sends fail instead of queueing for nobody.
        entry
            .outbound
            .close(CloseReason::new(1006, "the connection's task ended"));
        let username = self.username(&entry.user);
        let mut removed = Removed {
            user: UserInfo {
                id: entry.user.clone(),
                username,
            },
            endpoint: entry.endpoint,
            opened: entry.opened,
            user_left: Vec::new(),
            emptied: Vec::new(),
        };
        for room in entry.rooms {
            let left = self.remove_from_room(conn, &entry.user, &room);
            if left.user_left {
                removed.user_left.push(room.clone());
            }
            if left.room_emptied {
                removed.emptied.push(room);
            }
        }
        if let Some(user) = self.users.get_mut(&entry.user) {
            user.conns.retain(|c| *c != conn);
            if user.conns.is_empty() {
                self.users.remove(&entry.user);
            }
        }
        Some(removed)
    }

    fn username(&self, user: &UserId) -> Arc<str> {
        self.users
            .get(user)
            .map_or_else(|| user.as_str().into(), |u| u.username.clone())
    }

    pub(crate) fn user_info(&self, user: &UserId) -> UserInfo {
        UserInfo {
            id: user.clone(),
            username: self.username(user),
        }
    }

    pub(crate) fn conn_user(&self, conn: ConnId) -> Option<UserInfo> {
        self.conns.get(&conn).map(|c| self.user_info(&c.user))
    }

    /// Puts a connection in a room. `None` when the connection is gone.
    pub(crate) fn join(&mut self, conn: ConnId, room: &RoomName) -> Option<Joined> {
        let entry = self.conns.get_mut(&conn)?;
        if entry.rooms.contains(room) {
            return Some(Joined {
                already: true,
                ..Joined::default()
            });
        }
        let room_created = !self.rooms.contains_key(room);
        let members = self.rooms.entry(room.clone()).or_default();
        members
            .conns
            .insert(conn, Member::new(entry.outbound.clone()));
        if let Some(batch) = &mut members.batch {
            // Its member list (taken now) already shows what the batch holds so far.
            batch.joined(conn);
        }
        let count = members.users.entry(entry.user.clone()).or_insert(0);
        *count += 1;
        let user_joined = *count == 1;
        // The room's own name, shared: the caller's is often a fresh allocation per request.
        let name = self
            .rooms
            .get_key_value(room)
            .map_or_else(|| room.clone(), |(name, _)| name.clone());
        // One slot at a time: a connection is usually in one room, and `push` would reserve
        // four (~190 bytes) for every connection.
        entry.rooms.reserve_exact(1);
        entry.rooms.push(name);
        Some(Joined {
            already: false,
            user_joined,
            room_created,
        })
    }

    /// Takes a connection out of a room. `None` when the connection is gone.
    pub(crate) fn leave(&mut self, conn: ConnId, room: &RoomName) -> Option<Left> {
        let entry = self.conns.get_mut(&conn)?;
        let Some(at) = entry.rooms.iter().position(|r| r == room) else {
            return Some(Left::default());
        };
        entry.rooms.swap_remove(at);
        let user = entry.user.clone();
        Some(self.remove_from_room(conn, &user, room))
    }

    fn remove_from_room(&mut self, conn: ConnId, user: &UserId, room: &RoomName) -> Left {
        let mut left = Left {
            was_member: true,
            ..Left::default()
        };
        let Some(members) = self.rooms.get_mut(room) else {
            return left;
        };
        members.conns.remove(&conn);
        if let Some(count) = members.users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                members.users.remove(user);
                left.user_left = true;
            }
        }
        if members.conns.is_empty() {
            self.rooms.remove(room);
            left.room_emptied = true;
        }
        left
    }

    /// A registry whose rooms' persisted messages pass a sequencer (a node with a broker).
    pub(crate) fn sequenced() -> Self {
        Self {
            sequenced: true,
            ..Self::default()
        }
    }

    /// Sets how rooms announce joins and leaves (`super::presence`).
    pub(crate) fn with_presence(mut self, presence: PresenceConfig) -> Self {
        self.presence = presence;
        self
    }

    /// The slot for `conn`'s token expiry (`super::expiry`); `None` when the connection is gone.
    pub(crate) fn expiry_mut(&mut self, conn: ConnId) -> Option<&mut Option<Expiry>> {
        self.conns.get_mut(&conn).map(|entry| &mut entry.expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Dialect;
    use crate::protocol::Raw;

    /// A state with one connection opened at `at`, and that connection's queue.
    pub(super) fn one_conn(dialect: &'static dyn Dialect, at: u64) -> (State, Outbound) {
        let mut state = State::default();
        let outbound = Outbound::for_dialect(2, at, dialect);
        state.add_conn(
            ConnId(1),
            &Identity::guest(),
            outbound.clone(),
            None,
            "test",
        );
        (state, outbound)
    }

    #[test]
    fn a_room_member_entry_is_its_queue_and_replay_state_in_24_bytes() {
        // Every membership of every idle connection pays for this entry in its room's table
        // (plus the key and the table's slack), and a room's delivery walks it.
        assert_eq!(size_of::<Member>(), 24);
    }

    #[test]
    fn a_registry_entry_fits_jemallocs_160_byte_class() {
        // Each connection's entry is its own allocation (`State::conns` boxes it); jemalloc's
        // classes go 128, 160, 192, so a field that pushes it past 160 bytes costs every idle
        // connection 32 more.
        assert!(
            size_of::<Conn>() <= 160,
            "{} bytes: over jemalloc's 160-byte class",
            size_of::<Conn>()
        );
    }

    #[test]
    fn removing_a_connection_whose_task_died_closes_its_queue() {
        let (mut state, outbound) = one_conn(&Raw, 0);
        assert!(state.remove_conn(ConnId(1)).is_some());
        assert_eq!(
            outbound.close_reason().map(|reason| reason.code()),
            Some(1006),
            "a sender kept by user code must not keep the socket open"
        );
        let (mut state, outbound) = one_conn(&Raw, 0);
        assert!(outbound.close(CloseReason::new(1000, "bye")));
        state.remove_conn(ConnId(1));
        assert_eq!(
            outbound.close_reason(),
            Some(CloseReason::new(1000, "bye")),
            "a recorded close is kept"
        );
    }
}
