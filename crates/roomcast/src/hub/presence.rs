//! Presence batching: a room's joins and leaves gathered for one interval, then handed to its
//! members as one update each ([`PresenceMode`](crate::PresenceMode)).
//!
//! Why: announcing every join to every member is O(n²) frames when n clients join one room
//! (1000 clients: ~500k frames). A batched room's `Joined` / `Left` events, local or from
//! other nodes, are not delivered as they come: [`State`](super::state) appends them to the
//! room's [`Batch`] (under the hub's lock, like any delivery), and the hub's presence timer
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

use std::collections::HashMap;

use crate::ids::{ConnId, UserId};
use crate::protocol::UserInfo;

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
