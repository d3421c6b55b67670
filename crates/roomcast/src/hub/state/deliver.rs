//! Delivery: what the registry queues to a room's members, under the hub's lock.
//!
//! A group of events is encoded once per dialect ([`EncodeOnce`]) and, when every member takes
//! all of it, framed once and shared; each member's room entry admits a persisted message past
//! its watermark or holds it while a history replay is fetched ([`admit`]); on a node with a
//! broker, a room's messages pass its [`Sequencer`](super::super::order::Sequencer) first. Nothing here waits: each member gets
//! a `try_send`, and a quiet member's write is handed back to the caller as a
//! [`PendingWrite`], done once the lock is released.

use std::sync::Arc;

use crate::broker::Target;
use crate::frame::Frame;
use crate::ids::{ConnId, RoomName, UserId};
use crate::protocol::{ChatMessage, Dialect, Event, UserInfo};
use crate::session::SendError;
use crate::session::outbound::PendingWrite;
use crate::ws::{Deflate, Framed};

use super::{Member, State};

impl Member {
    /// Whether the persisted message at `seq` goes to this connection now. Not when a replay
    /// already sent it (at or below the watermark); not yet while a replay is being fetched
    /// (it is held, to follow the replay).
    fn admit(&mut self, seq: u64, message: &Arc<ChatMessage>) -> bool {
        if let Some(held) = &mut self.held {
            held.push(message.clone());
            return false;
        }
        if seq <= self.watermark {
            return false;
        }
        self.watermark = seq;
        true
    }
}

/// What a delivery did.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    pub(crate) sent: usize,
    pub(crate) slow: usize,
    /// Bytes queued, framed for the wire, summed over the recipients.
    pub(crate) bytes: usize,
    /// Recipients whose queue was empty: the deliverer writes to them itself once the lock is
    /// released (`Hub::count`), rather than waking each one's task. Dropped unwritten, each
    /// wakes its session instead.
    pub(crate) writes: Vec<PendingWrite>,
}

impl Delivery {
    /// Counts one recipient's queueing of `bytes`: sent, or a slow consumer when its queue was
    /// full (a closed queue is neither).
    pub(in crate::hub) fn tally(&mut self, queued: Result<usize, SendError>, bytes: usize) {
        self.tally_framed(queued.map(|sent| (sent, None)), bytes);
    }

    /// [`Delivery::tally`] for [`Outbound::send_framed`]: also keeps the write it leaves to
    /// the deliverer.
    pub(in crate::hub) fn tally_framed(
        &mut self,
        queued: Result<(usize, Option<PendingWrite>), SendError>,
        bytes: usize,
    ) {
        match queued {
            Ok((sent, write)) => {
                self.sent += sent;
                self.bytes += bytes;
                self.writes.extend(write);
            }
            Err(SendError::Full) => self.slow += 1,
            Err(SendError::Closed) => {}
        }
    }

    /// Adds what `other` did to this.
    pub(crate) fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.slow += other.slow;
        self.bytes += other.bytes;
        self.writes.extend(other.writes);
    }
}

/// Encodes a group of events at most once per dialect name.
struct EncodeOnce<'e> {
    events: &'e [Event],
    encoded: Vec<(&'static str, Encoded)>,
}

/// A group of events encoded for one dialect.
pub(in crate::hub) struct Encoded {
    /// Each event's frame, in order (`None`: the dialect does not send it).
    pub(in crate::hub) frames: Vec<Option<Frame>>,
    /// Which events this dialect keeps from their actor's own connections
    /// ([`Dialect::shows_own`]); `None` when it shows every one, so that the common case costs
    /// its recipients nothing.
    pub(in crate::hub) own_hidden: Option<Vec<bool>>,
    /// All of them framed for the wire in one buffer, made the first time a member takes the
    /// whole group.
    pub(in crate::hub) framed: Option<Framed>,
    /// The same, each message compressed (permessage-deflate), made the first time a member
    /// that negotiated compression takes the group; one per server window size asked for
    /// (nearly always one: 15 bits). Compressed without context takeover, the bytes depend only
    /// on the messages, so every compressing member shares them: a broadcast is deflated once.
    pub(in crate::hub) deflated: Vec<(Deflate, Framed)>,
}

impl Encoded {
    /// Whether event `at` is kept from `user` because `user` caused it.
    fn hides(&self, events: &[Event], at: usize, user: &UserId) -> bool {
        self.own_hidden
            .as_ref()
            .is_some_and(|hidden| hidden[at] && events[at].actor() == Some(user))
    }

    /// The whole group framed for the wire, shared: one entry in each member's queue; for a
    /// member with `deflate`, the compressed framing.
    pub(in crate::hub) fn framed(&mut self, deflate: Option<Deflate>) -> Framed {
        let frames = &self.frames;
        let Some(deflate) = deflate else {
            return self
                .framed
                .get_or_insert_with(|| Framed::encode(frames.iter().flatten()))
                .clone();
        };
        if let Some((_, framed)) = self.deflated.iter().find(|(d, _)| *d == deflate) {
            return framed.clone();
        }
        let framed = Framed::encode_for(frames.iter().flatten(), Some(deflate));
        self.deflated.push((deflate, framed.clone()));
        framed
    }
}

impl<'e> EncodeOnce<'e> {
    fn new(events: &'e [Event]) -> Self {
        Self {
            events,
            encoded: Vec::new(),
        }
    }

    /// The group encoded for `dialect`, the first time the dialect asks.
    fn for_dialect(&mut self, dialect: &dyn Dialect) -> &mut Encoded {
        let name = dialect.name();
        let at = match self.encoded.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                let frames = self
                    .events
                    .iter()
                    .map(|event| match event {
                        Event::Frame(frame) => Some(frame.clone()),
                        event => dialect.encode(event),
                    })
                    .collect();
                let hidden = |event: &Event| event.actor().is_some() && !dialect.shows_own(event);
                // Asked twice only where something is hidden: no allocation otherwise.
                let own_hidden = self
                    .events
                    .iter()
                    .any(hidden)
                    .then(|| self.events.iter().map(hidden).collect());
                let encoded = Encoded {
                    frames,
                    own_hidden,
                    framed: None,
                    deflated: Vec::new(),
                };
                self.encoded.push((name, encoded));
                self.encoded.len() - 1
            }
        };
        &mut self.encoded[at].1
    }
}

impl State {
    /// Queues `event` for every local connection `target` names, except the excluded users
    /// and connection. Encodes once per dialect; never waits.
    pub(crate) fn deliver(
        &mut self,
        target: &Target,
        event: &Event,
        exclude: &[UserId],
        exclude_conn: Option<ConnId>,
    ) -> Delivery {
        if let Target::Room(room) = target
            && exclude.is_empty()
            && exclude_conn.is_none()
            && self.batch_presence(room, event)
        {
            return Delivery::default();
        }
        if let Target::Room(room) = target
            && exclude_conn.is_none()
            && !matches!(event, Event::Close(_))
        {
            // The usual case: through the room's member table.
            return self.deliver_many(room, std::slice::from_ref(event), exclude);
        }
        let mut encoder = EncodeOnce::new(std::slice::from_ref(event));
        let mut delivery = Delivery::default();
        // A persisted room message is sequenced: each connection's watermark drops what a
        // replay already sent, and a connection being replayed to holds it for later.
        let sequenced = match (target, event) {
            (Target::Room(room), Event::Message(message)) => {
                message.seq.map(|seq| (room, seq, message))
            }
            _ => None,
        };
        // The rest is rare (a close, a room but one connection, users, everyone): list the
        // ids first, since delivering needs `&mut`.
        let recipients: Vec<ConnId> = match target {
            Target::Room(room) => self
                .rooms
                .get(room)
                .map(|members| members.conns.keys().copied().collect())
                .unwrap_or_default(),
            Target::All => self.conns.keys().copied().collect(),
            Target::Users(users) => users
                .iter()
                .filter_map(|user| self.users.get(user))
                .flat_map(|user| user.conns.iter().copied())
                .collect(),
        };
        let State { conns, rooms, .. } = self;
        let mut send = |conn_id: &ConnId| {
            if Some(*conn_id) == exclude_conn {
                return;
            }
            let Some(conn) = conns.get_mut(conn_id) else {
                return;
            };
            if exclude.contains(&conn.user) {
                return;
            }
            if let Event::Close(reason) = event {
                if conn.outbound.close(reason.clone()) {
                    delivery.sent += 1;
                }
                return;
            }
            if let Some((room, seq, message)) = sequenced
                && let Some(member) = rooms
                    .get_mut(room)
                    .and_then(|members| members.conns.get_mut(conn_id))
                && !member.admit(seq, message)
            {
                return;
            }
            // Framed once for everyone it goes to, like a group (`deliver_many`).
            let encoded = encoder.for_dialect(conn.outbound.dialect());
            if encoded.frames[0].is_none()
                || encoded.hides(std::slice::from_ref(event), 0, &conn.user)
            {
                return;
            }
            let framed = encoded.framed(conn.outbound.deflate());
            let bytes = framed.len();
            delivery.tally_framed(conn.outbound.send_framed(framed), bytes);
        };
        recipients.iter().for_each(&mut send);
        delivery
    }

    /// Queues `events`, in order, for every local connection in `room` except the excluded
    /// users: what [`State::deliver`] does for each event, but a connection's frames are queued
    /// together, with one lock and one wake-up for all of them. Encodes each event once per
    /// dialect; never waits.
    pub(crate) fn deliver_many(
        &mut self,
        room: &RoomName,
        events: &[Event],
        exclude: &[UserId],
    ) -> Delivery {
        let mut delivery = Delivery::default();
        if exclude.is_empty()
            && events
                .iter()
                .any(|event| matches!(event, Event::Joined { .. } | Event::Left { .. }))
        {
            // Joins and leaves of a batched room go to its batch; the rest as usual.
            let rest: Vec<Event> = events
                .iter()
                .filter(|event| !self.batch_presence(room, event))
                .cloned()
                .collect();
            if rest.len() < events.len() {
                return if rest.is_empty() {
                    delivery
                } else {
                    self.deliver_many(room, &rest, exclude)
                };
            }
        }
        let State { conns, rooms, .. } = self;
        let Some(members) = rooms.get_mut(room) else {
            return delivery;
        };
        let mut encoder = EncodeOnce::new(events);
        // Reused for every member: which events it takes, and (when not all of them) their
        // frames, emptied by each `try_send_many`.
        let mut admitted = Vec::with_capacity(events.len());
        let mut frames = Vec::with_capacity(events.len());
        for (conn_id, member) in &mut members.conns {
            let outbound = &member.outbound;
            let encoded = encoder.for_dialect(outbound.dialect());
            // The member's user, only where it matters: looking it up is a cache miss per
            // member, which the room's own table is there to save.
            let user = if exclude.is_empty() && encoded.own_hidden.is_none() {
                None
            } else {
                match conns.get(conn_id) {
                    Some(conn) => Some(&conn.user),
                    None => continue,
                }
            };
            if user.is_some_and(|user| exclude.contains(user)) {
                continue;
            }
            admitted.clear();
            admitted.extend(events.iter().map(|event| match event {
                Event::Message(message) => message.seq.is_none_or(|seq| member.admit(seq, message)),
                _ => true,
            }));
            if let Some(user) = user
                && encoded.own_hidden.is_some()
            {
                for (at, taken) in admitted.iter_mut().enumerate() {
                    *taken = *taken && !encoded.hides(events, at, user);
                }
            }
            let outbound = &member.outbound;
            // The usual case: the member takes the whole group, framed once for everyone.
            // Otherwise (a replay held some back, or sent them already) frame by frame.
            if admitted.iter().all(|&taken| taken) {
                let framed = encoded.framed(outbound.deflate());
                if framed.messages() == 0 {
                    continue;
                }
                let bytes = framed.len();
                delivery.tally_framed(outbound.send_framed(framed), bytes);
            } else {
                let taken = encoded.frames.iter().zip(&admitted);
                frames.extend(
                    taken
                        .filter(|(_, taken)| **taken)
                        .flat_map(|(f, _)| f.clone()),
                );
                if frames.is_empty() {
                    continue;
                }
                let bytes = frames.iter().map(Frame::len).sum();
                delivery.tally(outbound.try_send_many(&mut frames), bytes);
            }
        }
        delivery
    }

    /// Queues the member list of `conn`'s dialect ([`Dialect::member_list`]) for `room`, as
    /// its members are now, to `conn`, with `elsewhere` (the members other nodes have, read
    /// from presence just before; empty on a single node). Called in the lock scope of the
    /// join, so that every join or leave after it reaches the connection after the list.
    pub(crate) fn send_member_list(
        &mut self,
        conn: ConnId,
        room: &RoomName,
        elsewhere: Vec<UserInfo>,
    ) -> Result<(), SendError> {
        let Some(entry) = self.conns.get(&conn) else {
            return Err(SendError::Closed);
        };
        let mut users = self.room_members(room);
        users.extend(elsewhere);
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users.dedup_by(|a, b| a.id == b.id);
        match entry.outbound.dialect().member_list(room, &users) {
            Some(frame) => entry.outbound.try_send_now(frame),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::tests::one_conn;
    use super::*;
    use crate::auth::Identity;
    use crate::config::{PresenceConfig, PresenceMode};
    use crate::protocol::native::NATIVE;
    use crate::session::Outbound;
    use crate::ws::Outgoing;

    fn message(room: &RoomName, seq: u64) -> Event {
        Event::Message(Arc::new(ChatMessage {
            id: format!("m{seq}").into(),
            seq: Some(seq),
            room: room.clone(),
            sender: UserInfo {
                id: "ann".into(),
                username: "Ann".into(),
            },
            content: "hi".into(),
            data: None,
            timestamp_ms: 0,
        }))
    }

    fn seqs(outbound: &Outbound) -> Vec<u64> {
        outbound
            .take()
            .frames
            .iter()
            .flat_map(Outgoing::texts)
            .map(|text| {
                let value: serde_json::Value = serde_json::from_str(text).unwrap();
                value["seq"].as_u64().expect("a seq")
            })
            .collect()
    }

    /// Native connections 1, 2, … in `room`, each compressing as given; their queues.
    fn members(
        state: &mut State,
        room: &RoomName,
        deflates: impl Iterator<Item = Option<crate::ws::deflate::Deflate>>,
    ) -> Vec<Outbound> {
        deflates
            .zip(1..)
            .map(|(deflate, n)| {
                let outbound = Outbound::with_deflate(16, 0, deflate);
                state.add_conn(
                    ConnId(n),
                    &Identity::guest(),
                    outbound.clone(),
                    None,
                    "test",
                );
                state.join(ConnId(n), room).expect("a known connection");
                outbound
            })
            .collect()
    }

    #[test]
    fn a_group_of_messages_reaches_each_member_in_order_past_its_watermark_or_is_held() {
        let room = RoomName::new("lobby").unwrap();
        let mut state = State::default();
        let queues = members(&mut state, &room, (1..=3).map(|_| None));
        // Connection 2 was replayed up to seq 2; connection 3 is being replayed to.
        let lobby = state.rooms.get_mut(&room).unwrap();
        lobby.conns.get_mut(&ConnId(2)).unwrap().watermark = 2;
        assert!(state.hold(ConnId(3), &room));

        let events: Vec<Event> = (1..=4).map(|seq| message(&room, seq)).collect();
        let delivery = state.deliver_many(&room, &events, &[]);
        assert_eq!((delivery.sent, delivery.slow), (4 + 2, 0));
        assert_eq!(seqs(&queues[0]), [1, 2, 3, 4]);
        assert_eq!(seqs(&queues[1]), [3, 4], "what the replay sent is skipped");
        assert!(queues[2].take().frames.is_empty(), "held until the replay");
        let lobby = state.rooms.get_mut(&room).unwrap();
        let held = lobby.conns.get_mut(&ConnId(3)).unwrap().held.take();
        assert_eq!(held.map(|held| held.len()), Some(4));
    }

    #[test]
    fn a_broadcast_to_compressing_members_is_compressed_once_and_shared() {
        let room = RoomName::new("lobby").unwrap();
        let mut state = State::default();
        let (deflate, _) = crate::ws::deflate::negotiate([&b"permessage-deflate"[..]]).unwrap();
        // Members 1-3 negotiated compression, member 4 did not.
        let queues = members(
            &mut state,
            &room,
            (1..=4).map(|n| (n <= 3).then_some(deflate)),
        );
        let text = r#"{"type":"message","room":"lobby","data":"the same words, again and again"}"#
            .repeat(8);
        let event = Event::Frame(Frame::text(text.clone()));
        let tiny = Event::Frame(Frame::text("{}"));
        for many in [false, true] {
            let delivered = if many {
                state.deliver_many(&room, &[event.clone(), tiny.clone()], &[])
            } else {
                state.deliver(&Target::Room(room.clone()), &event, &[], None)
            };
            assert_eq!(delivered.slow, 0);
            let framed: Vec<Framed> = queues
                .iter()
                .map(|queue| match queue.take().frames.pop_front() {
                    Some(Outgoing::Framed(framed)) => framed,
                    other => panic!("a shared framing, got {other:?}"),
                })
                .collect();
            // One compressed buffer for the three, one plain buffer for the fourth.
            let at = |n: usize| framed[n].as_bytes().as_ptr();
            assert_eq!(at(0), at(1));
            assert_eq!(at(0), at(2));
            assert_ne!(at(0), at(3));
            let (compressed, plain) = (framed[0].as_bytes(), framed[3].as_bytes());
            assert!(
                compressed.len() < plain.len() / 3,
                "{} bytes",
                compressed.len()
            );
            // FIN, RSV1, text; the payload inflates to the message.
            assert_eq!(compressed[0], 0xc1);
            assert_eq!(plain[0], 0x81);
            let len = usize::from(u16::from_be_bytes([compressed[2], compressed[3]]));
            let payload = if compressed[1] == 126 {
                &compressed[4..4 + len]
            } else {
                let len = usize::from(compressed[1]);
                &compressed[2..2 + len]
            };
            let inflated = crate::ws::deflate::inflate(payload, 1 << 16).unwrap();
            assert_eq!(inflated, text.as_bytes());
            // A message too small to compress goes plain inside the compressed group.
            if many {
                assert_eq!(framed[0].messages(), 2);
                assert!(compressed.ends_with(&[0x81, 2, b'{', b'}']));
            }
        }
    }

    #[test]
    fn a_batched_room_hands_each_member_one_update_however_many_joined_meanwhile() {
        let room = RoomName::new("lobby").unwrap();
        let mut state = State::default().with_presence(PresenceConfig {
            mode: PresenceMode::Batched,
            ..PresenceConfig::default()
        });
        let queues: Vec<Outbound> = (1..=50)
            .map(|n| {
                let outbound = Outbound::new(16, 0);
                let identity = Identity::guest();
                state.add_conn(ConnId(n), &identity, outbound.clone(), None, "test");
                assert!(state.join(ConnId(n), &room).unwrap().user_joined);
                let joined = Event::Joined {
                    room: room.clone(),
                    user: state.conn_user(ConnId(n)).unwrap(),
                    timestamp_ms: 0,
                };
                let delivered = state.deliver(&Target::Room(room.clone()), &joined, &[], None);
                assert_eq!(delivered.sent, 0, "batched, not delivered");
                outbound
            })
            .collect();
        let delivery = state.flush_presence(&HashMap::new());
        assert_eq!((delivery.sent, delivery.slow), (50, 0));
        for (n, queue) in queues.iter().enumerate() {
            let taken = queue.take();
            assert_eq!(taken.frames.len(), 1, "member {n}");
            let text: Vec<&str> = taken.frames.iter().flat_map(Outgoing::texts).collect();
            let value: serde_json::Value = serde_json::from_str(text[0]).unwrap();
            // The first member gets every join; a later one what came from its own on.
            assert_eq!(value["data"]["joined"].as_array().unwrap().len(), 50 - n);
            assert_eq!(value["data"]["count"], 50);
        }
        assert_eq!(state.flush_presence(&HashMap::new()).sent, 0, "nothing new");
    }

    #[test]
    fn a_group_that_overflows_a_queue_makes_one_slow_consumer() {
        let room = RoomName::new("lobby").unwrap();
        let (mut state, outbound) = one_conn(&NATIVE, 0);
        state.join(ConnId(1), &room).expect("a known connection");
        let events: Vec<Event> = (1..=3).map(|seq| message(&room, seq)).collect();
        let delivery = state.deliver_many(&room, &events, &[]);
        assert_eq!(
            (delivery.sent, delivery.slow),
            (0, 1),
            "capacity 2, three frames"
        );
        assert!(outbound.take().closing);
    }
}
