//! Presence batching: a room's joins and leaves gathered for one interval, then handed to its
//! members as one update each ([`PresenceMode`](crate::PresenceMode)).
//!
//! Why: announcing every join to every member is O(n²) frames when n clients join one room
//! (1000 clients: ~500k frames). A batched room's `Joined` / `Left` events, local or from
//! other nodes, are not delivered as they come: `State::deliver` hands them to
//! `State::batch_presence` (here, with the flush: the registry's presence side), which appends
//! them to the room's [`Batch`] under the hub's lock like any delivery; the hub's presence timer
//! (one task per hub, `presence_loop` in `super`) flushes every room with a batch once per
//! interval: each member gets the net changes since its last update, encoded once per dialect
//! and shared.
//!
//! A member that joined during the interval already has an exact member list, taken when it
//! joined (in the join's lock scope for [`Session::join_listed`](crate::Session::join_listed)).
//! The batch records where in its log that member joined ([`Batch::joined_at`]), and the member
//! gets the net changes after that point only: nothing it already saw in its list, nothing
//! missing from it.
//!
//! ```text
//!  log:  +ann  +bob  -ann  +cid          (one interval)
//!        ▲ members before: net +bob +cid   (ann joined and left: not announced)
//!                    ▲ dan joined here (list: bob, dan): net -ann +cid
//! ```

use std::collections::{HashMap, HashSet};

use super::state::{Delivery, Encoded, State};
use crate::config::PresenceMode;
use crate::frame::Frame;
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::{Dialect, Event, PresenceUpdate, UserInfo, now_ms};

/// One room's joins and leaves since its last flush.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Every join (`true`) and leave, in the order they were delivered.
    log: Vec<(UserInfo, bool)>,
    /// Connections that joined while the log was not empty, with the log's length then: they
    /// get only what came after. A connection that joins an empty batch's room needs all of it,
    /// like every other member, and is not listed.
    joined_at: Vec<(ConnId, usize)>,
}

/// The net changes over part of a batch's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Net {
    pub(super) joined: Vec<UserInfo>,
    pub(super) left: Vec<UserInfo>,
}

impl Net {
    pub(super) fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

impl Batch {
    /// Appends a join or a leave.
    pub(super) fn push(&mut self, user: UserInfo, joined: bool) {
        self.log.push((user, joined));
    }

    /// Notes that `conn` joined the room now, with its member list as of now.
    pub(super) fn joined(&mut self, conn: ConnId) {
        if !self.log.is_empty() {
            self.joined_at.push((conn, self.log.len()));
        }
    }

    /// Where each connection that joined during the interval joined (the last time, if it
    /// joined more than once).
    pub(super) fn joined_at(&self) -> HashMap<ConnId, usize> {
        self.joined_at.iter().copied().collect()
    }

    /// The net changes after the first `from` entries of the log. A user's first entry there
    /// says whether they were in the room at that point (a join: they were not), their last
    /// whether they are now; only a difference is news. Users appear in the order of their
    /// first entry.
    pub(super) fn net(&self, from: usize) -> Net {
        let mut first_last: Vec<(&UserInfo, bool, bool)> = Vec::new();
        let mut at: HashMap<&UserId, usize> = HashMap::new();
        for (user, joined) in &self.log[from.min(self.log.len())..] {
            match at.get(&user.id) {
                Some(&i) => first_last[i].2 = *joined,
                None => {
                    at.insert(&user.id, first_last.len());
                    first_last.push((user, *joined, *joined));
                }
            }
        }
        let mut net = Net::default();
        for (user, first, last) in first_last {
            match (first, last) {
                (true, true) => net.joined.push(user.clone()),
                (false, false) => net.left.push(user.clone()),
                // Out and back in, or in and back out: no change.
                _ => {}
            }
        }
        net
    }
}

impl State {
    /// Takes `event` into `room`'s batch when it is a join or a leave and the room batches or
    /// counts them (or already has a batch, which keeps the order when the room shrinks back
    /// to full). Returns whether it was taken.
    pub(super) fn batch_presence(&mut self, room: &RoomName, event: &Event) -> bool {
        let (user, joined) = match event {
            Event::Joined { user, .. } => (user, true),
            Event::Left { user, .. } => (user, false),
            _ => return false,
        };
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        if members.batch.is_none()
            && self.presence.mode_for(members.users.len()) == PresenceMode::Full
        {
            return false;
        }
        members
            .batch
            .get_or_insert_with(Box::default)
            .push(user.clone(), joined);
        if !self.batched.contains(room) {
            self.batched.insert(room.clone());
        }
        true
    }

    /// The rooms with a batch waiting for the presence timer.
    pub(crate) fn batched_rooms(&self) -> Vec<RoomName> {
        self.batched.iter().cloned().collect()
    }

    /// Hands every waiting batch to its room's members: one update per member, the net changes
    /// since its last one (or its member list), encoded once per dialect and shared, or only
    /// the count in a counts room when it changed. `counts` gives a room's member count on
    /// every node when the hub has a [`Presence`](crate::broker::Presence); otherwise the local
    /// count is the count. Never waits.
    pub(crate) fn flush_presence(&mut self, counts: &HashMap<RoomName, usize>) -> Delivery {
        let mut delivery = Delivery::default();
        let timestamp_ms = now_ms();
        for room in std::mem::take(&mut self.batched) {
            let Some(members) = self.rooms.get_mut(&room) else {
                continue;
            };
            let Some(batch) = members.batch.take() else {
                continue;
            };
            let count = counts.get(&room).copied().unwrap_or(members.users.len());
            let counts_only = self.presence.mode_for(members.users.len()) == PresenceMode::Counts;
            if counts_only && members.sent_count == Some(count) {
                continue;
            }
            members.sent_count = Some(count);
            let update = |net: Net| {
                if counts_only {
                    PresenceUpdate::count(room.clone(), count, timestamp_ms)
                } else {
                    PresenceUpdate::diff(room.clone(), net.joined, net.left, count, timestamp_ms)
                }
            };
            let everyone = if counts_only {
                Net::default()
            } else {
                batch.net(0)
            };
            // Users in the shared update, for dialects that keep a user's own events from them.
            let named: HashSet<&UserId> = everyone
                .joined
                .iter()
                .chain(&everyone.left)
                .map(|user| &user.id)
                .collect();
            let joined_at = if counts_only {
                HashMap::new()
            } else {
                batch.joined_at()
            };
            let shared_is_empty = everyone.is_empty() && !counts_only;
            let shared = update(Net {
                joined: everyone.joined.clone(),
                left: everyone.left.clone(),
            });
            let mut encoded: Vec<(&'static str, Encoded, Hides)> = Vec::new();
            for conn_id in members.conns.keys() {
                let Some(conn) = self.conns.get(conn_id) else {
                    continue;
                };
                let dialect = conn.outbound.dialect();
                let name = dialect.name();
                let at = match encoded.iter().position(|(n, ..)| *n == name) {
                    Some(at) => at,
                    None => {
                        let frames = dialect.encode_presence(&shared);
                        encoded.push((
                            name,
                            Encoded {
                                frames: frames.into_iter().map(Some).collect(),
                                own_hidden: None,
                                framed: None,
                                deflated: Vec::new(),
                            },
                            Hides::of(dialect, &room),
                        ));
                        encoded.len() - 1
                    }
                };
                let (_, shared_frames, hides) = &mut encoded[at];
                let from = joined_at.get(conn_id).copied().unwrap_or(0);
                let own_named = hides.any() && named.contains(&conn.user);
                let (queued, bytes) = if from == 0 && !own_named {
                    if shared_is_empty {
                        continue;
                    }
                    let framed = shared_frames.framed(conn.outbound.deflate());
                    if framed.messages() == 0 {
                        continue;
                    }
                    let bytes = framed.len();
                    (conn.outbound.try_send_framed(framed), bytes)
                } else {
                    // Joined during the interval, or named in the update where its dialect
                    // hides a user's own events: its own update.
                    let mut net = batch.net(from);
                    if hides.join {
                        net.joined.retain(|user| user.id != conn.user);
                    }
                    if hides.leave {
                        net.left.retain(|user| user.id != conn.user);
                    }
                    if net.is_empty() {
                        continue;
                    }
                    let mut frames = dialect.encode_presence(&update(net));
                    if frames.is_empty() {
                        continue;
                    }
                    let bytes = frames.iter().map(Frame::len).sum();
                    (conn.outbound.try_send_many(&mut frames), bytes)
                };
                delivery.tally(queued, bytes);
            }
        }
        delivery
    }
}

/// Which of a user's own joins and leaves a dialect keeps from that user's connections
/// ([`Dialect::shows_own`]), asked once per dialect and presence flush.
struct Hides {
    join: bool,
    leave: bool,
}

impl Hides {
    fn of(dialect: &dyn Dialect, room: &RoomName) -> Self {
        let user = UserInfo {
            id: UserId::from(""),
            username: "".into(),
        };
        let joined = Event::Joined {
            room: room.clone(),
            user: user.clone(),
            timestamp_ms: 0,
        };
        let left = Event::Left {
            room: room.clone(),
            user,
            timestamp_ms: 0,
        };
        Self {
            join: !dialect.shows_own(&joined),
            leave: !dialect.shows_own(&left),
        }
    }

    fn any(&self) -> bool {
        self.join || self.leave
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserInfo {
        UserInfo {
            id: id.into(),
            username: id.to_uppercase().into(),
        }
    }

    fn ids(users: &[UserInfo]) -> Vec<&str> {
        users.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn a_join_and_a_leave_within_one_batch_cancel_out() {
        let mut batch = Batch::default();
        batch.push(user("ann"), true);
        batch.push(user("bob"), true);
        batch.push(user("ann"), false);
        batch.push(user("cid"), false);
        batch.push(user("cid"), true);
        let net = batch.net(0);
        assert_eq!(ids(&net.joined), ["bob"]);
        assert!(net.left.is_empty(), "cid left and came back");
    }

    #[test]
    fn a_member_that_joined_during_the_batch_gets_only_what_came_after() {
        let mut batch = Batch::default();
        batch.joined(ConnId(9));
        assert!(
            batch.joined_at().is_empty(),
            "an empty batch: it needs all of it"
        );
        batch.push(user("ann"), true);
        batch.push(user("bob"), true);
        batch.joined(ConnId(1));
        batch.push(user("ann"), false);
        batch.push(user("cid"), true);
        assert_eq!(batch.joined_at(), HashMap::from([(ConnId(1), 2)]));
        let net = batch.net(2);
        assert_eq!(ids(&net.joined), ["cid"]);
        assert_eq!(ids(&net.left), ["ann"], "its list named ann");
        let everyone = batch.net(0);
        assert_eq!(ids(&everyone.joined), ["bob", "cid"]);
        assert!(everyone.left.is_empty());
    }
}
