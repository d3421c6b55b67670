//! What the hub asks of the registry without changing it (who is connected, which rooms a
//! connection or user is in, a room's members and connections), and the requests it makes of
//! many connections at once (close a user's, close all, ask all to reconnect).

use crate::frame::CloseReason;
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::UserInfo;
use crate::session::SendError;

use super::{ConnTrace, ListedConn, State};

impl State {
    pub(crate) fn user_conns(&self, user: &UserId) -> Vec<ConnId> {
        self.users
            .get(user)
            .map(|u| u.conns.clone())
            .unwrap_or_default()
    }

    pub(crate) fn conn_addr(&self, conn: ConnId) -> Option<std::net::IpAddr> {
        self.conns.get(&conn).and_then(|c| c.addr)
    }

    pub(crate) fn conn_trace(&self, conn: ConnId) -> Option<ConnTrace> {
        self.conns.get(&conn).map(|c| ConnTrace {
            endpoint: c.endpoint,
            addr: c.addr,
            opened: c.opened,
        })
    }

    pub(crate) fn user_conn_count(&self, user: &UserId) -> usize {
        self.users.get(user).map_or(0, |u| u.conns.len())
    }

    pub(crate) fn room_user_count(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, |r| r.users.len())
    }

    pub(crate) fn connected_users(&self) -> Vec<UserId> {
        self.users.keys().cloned().collect()
    }

    pub(crate) fn is_connected(&self, user: &UserId) -> bool {
        self.users.contains_key(user)
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn room_members(&self, room: &RoomName) -> Vec<UserInfo> {
        self.rooms
            .get(room)
            .map(|r| r.users.keys().map(|u| self.user_info(u)).collect())
            .unwrap_or_default()
    }

    pub(crate) fn is_member(&self, user: &UserId, room: &RoomName) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.users.contains_key(user))
    }

    pub(crate) fn conn_rooms(&self, conn: ConnId) -> Vec<RoomName> {
        self.conns
            .get(&conn)
            .map(|c| c.rooms.clone())
            .unwrap_or_default()
    }

    pub(crate) fn conn_in_room(&self, conn: ConnId, room: &RoomName) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.rooms.contains(room))
    }

    pub(crate) fn user_rooms(&self, user: &UserId) -> Vec<RoomName> {
        let mut rooms: Vec<RoomName> = self
            .users
            .get(user)
            .into_iter()
            .flat_map(|u| &u.conns)
            .filter_map(|c| self.conns.get(c))
            .flat_map(|c| c.rooms.iter().cloned())
            .collect();
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Asks every connection of `user` to close with `reason`; returns how many.
    pub(crate) fn close_user(&self, user: &UserId, reason: &CloseReason) -> usize {
        let Some(user) = self.users.get(user) else {
            return 0;
        };
        for conn in &user.conns {
            if let Some(conn) = self.conns.get(conn) {
                conn.outbound.close(reason.clone());
            }
        }
        user.conns.len()
    }

    /// The connections in `room`, in no order.
    pub(crate) fn room_connections(&self, room: &RoomName) -> Vec<ListedConn> {
        let Some(members) = self.rooms.get(room) else {
            return Vec::new();
        };
        members
            .conns
            .keys()
            .filter_map(|id| {
                let conn = self.conns.get(id)?;
                Some(ListedConn {
                    id: *id,
                    user: self.user_info(&conn.user),
                    endpoint: conn.endpoint,
                    addr: conn.addr,
                    opened: conn.opened,
                })
            })
            .collect()
    }

    /// How many users each room has.
    pub(crate) fn room_sizes(&self) -> Vec<usize> {
        self.rooms.values().map(|room| room.users.len()).collect()
    }

    pub(crate) fn rooms(&self) -> Vec<RoomName> {
        self.rooms.keys().cloned().collect()
    }

    /// Asks every connection to close with `reason`.
    pub(crate) fn close_all(&self, reason: &crate::frame::CloseReason) {
        for conn in self.conns.values() {
            conn.outbound.close(reason.clone());
        }
    }

    /// Queues its dialect's reconnect frame to every connection whose dialect has one.
    /// Returns how many were asked. Never waits (`try_send_now`); a full queue is a slow
    /// consumer, closed with 1013 as any other send would.
    pub(crate) fn ask_reconnect(&self) -> (usize, usize) {
        let (mut asked, mut slow) = (0, 0);
        for conn in self.conns.values() {
            if let Some(frame) = conn.outbound.dialect().reconnect() {
                match conn.outbound.try_send_now(frame) {
                    Ok(()) => asked += 1,
                    Err(SendError::Full) => slow += 1,
                    Err(SendError::Closed) => {}
                }
            }
        }
        (asked, slow)
    }
}
