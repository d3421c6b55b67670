//! What keeps a room's persisted messages in `seq` order for each member, beyond queueing
//! them (`deliver.rs`): the room's [`Sequencer`](super::super::order::Sequencer) on a node with a broker, where another node's
//! messages may arrive out of order or with gaps, and a member's history replay, during which its
//! live messages are held ([`State::hold`]) and after which each `seq` goes out once
//! ([`State::finish_replay`], the member's watermark).

use std::sync::Arc;

use crate::ids::{ConnId, RoomName};
use crate::protocol::{ChatMessage, Event};
use crate::session::SendError;

use super::{Delivery, State};

impl State {
    /// Passes `messages` (sequenced, of `room`) through the room's [`Sequencer`](super::super::order::Sequencer) and queues
    /// what is ready, in `seq` order, to the room's connections. Returns the delivery and
    /// whether a task must now wait for a gap (one started only if none is running).
    pub(crate) fn deliver_sequenced(
        &mut self,
        room: &RoomName,
        messages: impl IntoIterator<Item = Arc<ChatMessage>>,
    ) -> (Delivery, bool) {
        let Some(members) = self.rooms.get(room) else {
            // No one here: nothing to order or deliver.
            return (Delivery::default(), false);
        };
        let known = members
            .order
            .as_ref()
            .is_some_and(|order| order.is_started());
        let baseline = if known {
            Some(0)
        } else {
            // Where the room's order starts on this node: after the lowest `seq` a replay sent
            // its connections (any higher, and a connection behind it would miss the rest);
            // unknown while a replay is being fetched; at the message itself when no
            // connection was sent anything.
            if members.conns.values().any(|member| member.held.is_some()) {
                None
            } else {
                Some(
                    members
                        .conns
                        .values()
                        .map(|member| member.watermark)
                        .filter(|sent| *sent > 0)
                        .min()
                        .unwrap_or(0),
                )
            }
        };
        let members = self.rooms.get_mut(room).expect("looked up above");
        let order = members.order.get_or_insert_with(Box::default);
        let mut ready = Vec::new();
        for message in messages {
            order.take(message, || baseline, &mut ready);
        }
        let fill = order.gap().is_some() && !std::mem::replace(&mut order.filling, true);
        if order.gap().is_none() {
            order.filling = false;
        }
        let events: Vec<Event> = ready.into_iter().map(Event::Message).collect();
        (self.deliver_many(room, &events, &[]), fill)
    }

    /// Every room whose order is known, with the last `seq` it delivered.
    pub(crate) fn sequenced_rooms(&self) -> Vec<(RoomName, u64)> {
        self.rooms
            .iter()
            .filter_map(|(name, room)| Some((name.clone(), room.order.as_ref()?.delivered()?)))
            .collect()
    }

    /// Whether a task must now start waiting out `room`'s gap: there is one, and no task is
    /// on it yet (the caller starts one).
    pub(crate) fn claim_fill(&mut self, room: &RoomName) -> bool {
        let Some(order) = self.rooms.get_mut(room).and_then(|r| r.order.as_mut()) else {
            return false;
        };
        order.gap().is_some() && !std::mem::replace(&mut order.filling, true)
    }

    /// The missing range of `room`'s messages, `after < seq <= upto`; `None` (and the room's
    /// gap task may stop) when nothing is missing.
    pub(crate) fn gap(&mut self, room: &RoomName) -> Option<(u64, u64)> {
        let order = self.rooms.get_mut(room)?.order.as_mut()?;
        let gap = order.gap();
        if gap.is_none() {
            order.filling = false;
        }
        gap
    }

    /// Gives up on `room`'s gap and delivers what was held behind it; returns the skipped
    /// range.
    pub(crate) fn skip_gap(&mut self, room: &RoomName) -> (Option<(u64, u64)>, Delivery) {
        let Some(order) = self.rooms.get_mut(room).and_then(|r| r.order.as_mut()) else {
            return (None, Delivery::default());
        };
        let mut ready = Vec::new();
        let skipped = order.skip_gap(&mut ready);
        order.filling = false;
        let events: Vec<Event> = ready.into_iter().map(Event::Message).collect();
        (skipped, self.deliver_many(room, &events, &[]))
    }

    /// Starts holding `room`'s live messages for `conn` (a history replay is being fetched).
    /// Returns false when the connection is not in the room.
    pub(crate) fn hold(&mut self, conn: ConnId, room: &RoomName) -> bool {
        let Some(member) = self
            .rooms
            .get_mut(room)
            .and_then(|members| members.conns.get_mut(&conn))
        else {
            return false;
        };
        member.held.get_or_insert_with(Box::default);
        true
    }

    /// Queues the replay (`history`, in `seq` order, everything after `since`) and then the
    /// messages held meanwhile, each `seq` once, and goes live. One lock scope: no live
    /// message can fall between the replay and the held ones.
    pub(crate) fn finish_replay(
        &mut self,
        conn: ConnId,
        room: &RoomName,
        since: u64,
        history: Vec<Arc<ChatMessage>>,
    ) -> Result<usize, SendError> {
        let Some(user) = self.conns.get(&conn).map(|entry| &entry.user) else {
            return Err(SendError::Closed);
        };
        let Some(room_entry) = self
            .rooms
            .get_mut(room)
            .and_then(|members| members.conns.get_mut(&conn))
        else {
            return Err(SendError::Closed);
        };
        let outbound = room_entry.outbound.clone();
        let dialect = outbound.dialect();
        let held = room_entry.held.take().map(|held| *held).unwrap_or_default();
        room_entry.watermark = room_entry.watermark.max(since);
        let mut frames = Vec::with_capacity(history.len() + held.len());
        let replayed = history.into_iter().map(|message| (message, false));
        for (message, live) in replayed.chain(held.into_iter().map(|message| (message, true))) {
            let Some(seq) = message.seq else { continue };
            if seq <= room_entry.watermark {
                continue;
            }
            room_entry.watermark = seq;
            let event = Event::Message(message);
            // History shows everyone's messages; a held live one follows the dialect's rule
            // for its sender's own connections, as it would have had it not been held.
            if live && !dialect.shows_own(&event) && event.actor() == Some(user) {
                continue;
            }
            if let Some(frame) = dialect.encode(&event) {
                frames.push(frame);
            }
        }
        let count = frames.len();
        let sent = room_entry.watermark;
        outbound.push_replay(frames)?;
        // On a node with a broker, a room's order starts after what its first replay sent (0:
        // the room had no message then, so it starts at 1) unless a message started it: a
        // message committed by this node may otherwise arrive before an earlier one from
        // another node and be taken for the room's first.
        if self.sequenced
            && let Some(members) = self.rooms.get_mut(room)
        {
            let order = members.order.get_or_insert_with(Box::default);
            let mut ready = Vec::new();
            order.replayed(sent, &mut ready);
            if !ready.is_empty() {
                let events: Vec<Event> = ready.into_iter().map(Event::Message).collect();
                self.deliver_many(room, &events, &[]);
            }
        }
        Ok(count)
    }
}
