//! Who may enter which room, and what one client may do there: the room gate (privacy, creation
//! on first use, the creation rate) and the per-connection bounds every chat handler checks
//! (frames per second, connections per user, rooms per connection, users per room).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use roomcast::{Frame, RoomName, Session, close_code};
use roomcast_store::{Store, StoreError};

use crate::AppState;
use crate::limits::{Creator, Verdict};

/// Whether a connection may enter a room, as [`RoomGate::enter`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The room exists (or was just created) and the user may be in it.
    Open,
    /// The room does not exist and may not be created here.
    Missing,
    /// The room is private and the user is not a member.
    Private,
    /// The room does not exist, and this user (or guest address) has created as many rooms
    /// as `ROOMCAST_ROOM_CREATE_RATE` allows this minute.
    TooManyCreated,
}

/// Decides who enters which room, and creates rooms on first use when allowed.
///
/// Remembers rooms it has seen to exist and be public, so that entering one again needs no
/// store lookup (a join's first query; the history it sends is the second). Safe because a
/// room's privacy is fixed when it is created and rooms are never deleted: an entry cannot go
/// stale. Whoever adds deleting or re-marking rooms must clear it. Bounded: emptied when full.
#[derive(Default)]
pub struct RoomGate {
    public: Mutex<HashSet<RoomName>>,
}

impl RoomGate {
    /// Most rooms remembered (~100 bytes each) before the set starts over.
    const CAPACITY: usize = 100_000;

    fn is_known_public(&self, room: &RoomName) -> bool {
        self.lock().contains(room)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<RoomName>> {
        // Inserts and clears only: a panic cannot leave the set inconsistent.
        self.public
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, room: &RoomName) {
        let mut rooms = self.lock();
        if rooms.len() >= Self::CAPACITY {
            rooms.clear();
        }
        rooms.insert(room.clone());
    }

    /// Whether `cx`'s user may enter `room`; a missing room is created (public, the user its
    /// first member) when `ROOMCAST_AUTO_CREATE_ROOMS` and `ROOMCAST_ROOM_CREATE_RATE` allow.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot answer.
    pub(crate) async fn enter_as(
        &self,
        state: &AppState,
        cx: &Session,
        room: &RoomName,
    ) -> Result<Access, StoreError> {
        let creator = if cx.is_guest() {
            cx.client_addr()
                .map_or(Creator::UnknownGuest, Creator::Guest)
        } else {
            Creator::User(cx.user_id().clone())
        };
        let may_create = || state.limits.create_room(&creator);
        let create = state.auto_create_rooms;
        self.enter(
            &state.store,
            room,
            cx.user_id().as_str(),
            create,
            may_create,
        )
        .await
    }

    /// Whether `user` may enter `room`; a missing room is created (public, `user` its first
    /// member) when `create` is true and `may_create` (asked only then) agrees.
    ///
    /// # Errors
    ///
    /// The store's, when it cannot answer.
    pub(crate) async fn enter(
        &self,
        store: &Store,
        room: &RoomName,
        user: &str,
        create: bool,
        may_create: impl FnOnce() -> bool,
    ) -> Result<Access, StoreError> {
        if let Some(access) = self.look_up(store, room, user).await? {
            return Ok(access);
        }
        if !create {
            return Ok(Access::Missing);
        }
        if !may_create() {
            return Ok(Access::TooManyCreated);
        }
        match store.create_room(room.as_str(), false, Some(user)).await {
            Ok(_) => {
                self.remember(room);
                Ok(Access::Open)
            }
            // Someone else created it meanwhile: look again (they may have made it private).
            Err(StoreError::Conflict(_)) => Ok(self
                .look_up(store, room, user)
                .await?
                .unwrap_or(Access::Missing)),
            Err(err) => Err(err),
        }
    }

    /// `user`'s access to `room` if it exists; `None` when it does not.
    async fn look_up(
        &self,
        store: &Store,
        room: &RoomName,
        user: &str,
    ) -> Result<Option<Access>, StoreError> {
        if self.is_known_public(room) {
            return Ok(Some(Access::Open));
        }
        Ok(match store.room(room.as_str()).await? {
            Some(record) if record.private => {
                Some(if store.is_member(room.as_str(), user).await? {
                    Access::Open
                } else {
                    Access::Private
                })
            }
            Some(_) => {
                self.remember(room);
                Some(Access::Open)
            }
            None => None,
        })
    }
}

/// What a client whose frame was dropped by the message rate is told.
pub(crate) const RATE_LIMITED: &str = "rate limited: message dropped, slow down";

/// Counts a client frame against `ROOMCAST_MESSAGE_RATE`. `Ok(true)`: handle it; `Ok(false)`:
/// dropped (not stored, not broadcast), and the client was told with its dialect's `error`.
///
/// # Errors
///
/// A close with 1008 `rate limited` for a client that goes on sending over the rate.
pub(crate) fn admit_frame(
    state: &AppState,
    cx: &Session,
    error: impl FnOnce(&str) -> Frame,
) -> roomcast::Result<bool> {
    match state.limits.message(cx.conn_id()) {
        Verdict::Allowed => Ok(true),
        Verdict::Dropped => {
            cx.send(error(RATE_LIMITED))?;
            Ok(false)
        }
        Verdict::Abusive => {
            tracing::info!(conn = %cx.conn_id(), user = %cx.user_id(), "closed: rate limited");
            Err(roomcast::Error::close(close_code::POLICY, "rate limited"))
        }
    }
}

/// Refuses a connection past `ROOMCAST_MAX_CONNECTIONS_PER_USER` (it is registered already,
/// so it counts itself). On a node of several, the bound is on the user's connections on
/// every live node together (`RedisBroker::admit_user_conn`); a connection admitted there is
/// counted until [`release_user_connection`].
///
/// Redis unreachable: admitted, with a warning when the outage starts. The bound still holds
/// on this node (the first check), so a user has at most the bound per node while Redis is
/// away; refusing everyone instead would turn a Redis outage into a chat outage.
///
/// # Errors
///
/// A close with 1013 `too many connections`.
pub(crate) async fn check_user_connections(state: &AppState, cx: &Session) -> roomcast::Result<()> {
    let max = state.limits.config().max_connections_per_user;
    if max == 0 {
        return Ok(());
    }
    let refuse = || {
        Err(roomcast::Error::close(
            close_code::TRY_AGAIN_LATER,
            "too many connections",
        ))
    };
    if cx.hub().user_connection_count(cx.user_id()) > max {
        return refuse();
    }
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    match cluster
        .admit_user_conn(cx.conn_id(), cx.user_id(), max)
        .await
    {
        Ok(true) => {
            if REDIS_FAILING.swap(false, Ordering::Relaxed) {
                tracing::info!("connections per user are counted over every node again");
            }
            Ok(())
        }
        Ok(false) => refuse(),
        Err(err) => {
            if !REDIS_FAILING.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %err, "cannot count connections per user over every node; admitting within this node's bound");
            }
            Ok(())
        }
    }
}

/// Whether the last cluster-wide count of a user's connections failed: the failure is logged
/// once when it starts, not once per connection during an outage. Process-wide, since it
/// describes the one Redis a process's nodes share (tests run several servers in one
/// process; they share their Redis too).
static REDIS_FAILING: AtomicBool = AtomicBool::new(false);

/// `cx` has ended: counts it off its user's connections on every node, if it was counted
/// ([`check_user_connections`]). No Redis call for a connection that was not (a single node,
/// no bound, or refused).
pub(crate) async fn release_user_connection(state: &AppState, cx: &Session) {
    if let Some(cluster) = &state.cluster
        && let Err(err) = cluster.release_user_conn(cx.conn_id(), cx.user_id()).await
    {
        tracing::debug!(error = %err, "cannot count a connection off its user; the next heartbeat will");
    }
}

/// Why `cx` may not enter `room` now (`None`: it may): the connection is in
/// `ROOMCAST_MAX_ROOMS_PER_CONNECTION` rooms already, or the room holds
/// `ROOMCAST_MAX_ROOM_MEMBERS` users. Checked before the join, so two joins at once may pass
/// the room's bound by one each.
pub(crate) fn room_capacity(state: &AppState, cx: &Session, room: &RoomName) -> Option<String> {
    if cx.is_in_room(room) {
        return None;
    }
    let limits = state.limits.config();
    let max_rooms = limits.max_rooms_per_connection;
    if max_rooms > 0 && cx.rooms().len() >= max_rooms {
        return Some(format!(
            "too many rooms: a connection may be in at most {max_rooms}"
        ));
    }
    let max_members = limits.max_room_members;
    let hub = cx.hub();
    if max_members > 0
        && !hub.is_member(cx.user_id(), room)
        && hub.room_user_count(room) >= max_members
    {
        return Some(format!("room full: at most {max_members} users"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_rooms_are_remembered_until_the_set_is_full_then_it_starts_over() {
        let rooms = RoomGate::default();
        let first = RoomName::new("r0").unwrap();
        rooms.remember(&first);
        assert!(rooms.is_known_public(&first));
        assert!(!rooms.is_known_public(&RoomName::new("other").unwrap()));
        for n in 1..RoomGate::CAPACITY {
            rooms.remember(&RoomName::new(&format!("r{n}")).unwrap());
        }
        assert!(rooms.is_known_public(&first), "full, not yet over");
        let next = RoomName::new("one-more").unwrap();
        rooms.remember(&next);
        assert!(rooms.is_known_public(&next));
        assert!(!rooms.is_known_public(&first), "started over");
    }
}
