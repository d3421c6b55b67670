//! Exact accounting of the `history` scenario's acks: pure code, no I/O.
//!
//! Two checks, from two points of view:
//!
//! - **Per publisher** ([`AckBook`]): every message it sent got exactly one `ack`. Messages
//!   carry the publisher's counter in their `client_msg_id`, so the book is one bit per counter
//!   (a second ack for a counter is a duplicate, an ack for a counter never sent is unknown).
//! - **Per room** ([`check_room`]): the `seq`s the server acked in a room are each acked once
//!   and leave no hole, from the first seq of the run to the last. The store assigns seqs at
//!   commit, per room, gap-free; a hole is a message persisted (or a seq spent) that nobody was
//!   told about, a repeated seq is two messages claiming one place.
//!
//! Each publisher keeps its own book and its own list of `(seq, counter)` pairs on its task;
//! the scenario merges the lists per room at the end, so nothing is shared while acks arrive.

use serde::Serialize;

/// One publisher's acks: which of its counters were acked, and how often.
#[derive(Debug, Default, Clone)]
pub struct AckBook {
    /// Bit `c` is set once counter `c` was acked.
    acked: Vec<u64>,
    /// Distinct counters acked.
    pub distinct: u64,
    /// Acks for a counter already acked.
    pub duplicates: u64,
    /// Acks for a counter this publisher had not sent (or with no readable key).
    pub unknown: u64,
}

impl AckBook {
    /// Records an ack for `counter` when `sent` messages (counters `0..sent`) have been sent;
    /// `true` for the first ack of a sent counter.
    pub fn record(&mut self, counter: Option<u64>, sent: u64) -> bool {
        let Some(counter) = counter.filter(|&c| c < sent) else {
            self.unknown += 1;
            return false;
        };
        let word = usize::try_from(counter / 64).expect("counters are bounded by --max-messages");
        if word >= self.acked.len() {
            self.acked.resize(word + 1, 0);
        }
        let mask = 1u64 << (counter % 64);
        if self.acked[word] & mask == 0 {
            self.acked[word] |= mask;
            self.distinct += 1;
            true
        } else {
            self.duplicates += 1;
            false
        }
    }

    /// Whether `counter` was acked.
    pub fn is_acked(&self, counter: u64) -> bool {
        usize::try_from(counter / 64)
            .ok()
            .and_then(|word| self.acked.get(word))
            .is_some_and(|w| w & (1u64 << (counter % 64)) != 0)
    }
}

/// The seqs acked in one room.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RoomSeqs {
    /// Acks carrying a seq.
    pub acked: u64,
    /// Distinct seqs.
    pub distinct: u64,
    /// Smallest seq acked (the room's first of this run).
    pub first: Option<u64>,
    /// Largest seq acked.
    pub last: Option<u64>,
    /// Seqs between `first` and `last` that nobody was acked for.
    pub missing: u64,
    /// Acks repeating a seq already acked (to anyone in the room).
    pub duplicates: u64,
}

impl RoomSeqs {
    /// No hole and no repeat.
    pub fn is_gap_free(&self) -> bool {
        self.missing == 0 && self.duplicates == 0
    }
}

/// Checks one room's acked seqs; sorts `seqs` in place.
///
/// ```
/// use roomcast_loadgen::acks::check_room;
/// let mut seqs = vec![3, 1, 2, 5, 5];
/// let room = check_room(&mut seqs);
/// assert_eq!((room.first, room.last), (Some(1), Some(5)));
/// assert_eq!((room.missing, room.duplicates), (1, 1)); // 4 is missing, 5 came twice
/// ```
pub fn check_room(seqs: &mut [u64]) -> RoomSeqs {
    seqs.sort_unstable();
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return RoomSeqs::default();
    };
    let mut distinct = 1u64;
    for pair in seqs.windows(2) {
        if pair[0] != pair[1] {
            distinct += 1;
        }
    }
    let acked = seqs.len() as u64;
    RoomSeqs {
        acked,
        distinct,
        first: Some(first),
        last: Some(last),
        missing: (last - first + 1) - distinct,
        duplicates: acked - distinct,
    }
}

/// The run's ack accounting, over every publisher and room.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AckTotals {
    /// Messages sent.
    pub sent: u64,
    /// Sent messages acked (once or more).
    pub acked: u64,
    /// Sent messages never acked.
    pub unacked: u64,
    /// Second and later acks of one message.
    pub duplicate_acks: u64,
    /// Acks that match no message sent on that connection.
    pub unknown_acks: u64,
    /// Seqs missing inside the acked range of a room, summed over rooms.
    pub seq_missing: u64,
    /// Seqs acked more than once in a room, summed over rooms.
    pub seq_duplicates: u64,
    /// Rooms whose acked seqs are not contiguous and unique.
    pub rooms_with_gaps: u64,
    /// Rooms whose first acked seq is not 1 (a fresh room starts at 1).
    pub rooms_not_from_1: u64,
}

impl AckTotals {
    /// Adds one publisher's book, for `sent` messages.
    pub fn add_publisher(&mut self, book: &AckBook, sent: u64) {
        self.sent += sent;
        self.acked += book.distinct;
        self.unacked += sent.saturating_sub(book.distinct);
        self.duplicate_acks += book.duplicates;
        self.unknown_acks += book.unknown;
    }

    /// Adds one room's seq check.
    pub fn add_room(&mut self, room: &RoomSeqs) {
        self.seq_missing += room.missing;
        self.seq_duplicates += room.duplicates;
        if !room.is_gap_free() {
            self.rooms_with_gaps += 1;
        }
        if room.first.is_some_and(|f| f != 1) {
            self.rooms_not_from_1 += 1;
        }
    }

    /// Every message acked exactly once, every room gap-free and duplicate-free.
    pub fn is_exact(&self) -> bool {
        self.unacked == 0
            && self.duplicate_acks == 0
            && self.unknown_acks == 0
            && self.seq_missing == 0
            && self.seq_duplicates == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_acked_once() {
        let mut book = AckBook::default();
        for c in 0..130 {
            assert!(book.record(Some(c), 130));
        }
        assert!(!book.record(Some(64), 130), "second ack is a duplicate");
        assert!(!book.record(Some(130), 130), "never sent");
        assert!(!book.record(None, 130), "no key");
        assert_eq!((book.distinct, book.duplicates, book.unknown), (130, 1, 2));
        assert!(book.is_acked(129) && !book.is_acked(130) && !book.is_acked(u64::MAX));
        let mut totals = AckTotals::default();
        totals.add_publisher(&book, 132);
        assert_eq!((totals.acked, totals.unacked), (130, 2));
        assert!(!totals.is_exact());
    }

    #[test]
    fn a_contiguous_room_is_gap_free() {
        let mut seqs: Vec<u64> = (1..=1000).rev().collect();
        let room = check_room(&mut seqs);
        assert_eq!(
            room,
            RoomSeqs {
                acked: 1000,
                distinct: 1000,
                first: Some(1),
                last: Some(1000),
                missing: 0,
                duplicates: 0,
            }
        );
        assert!(room.is_gap_free());
        let mut totals = AckTotals::default();
        totals.add_room(&room);
        assert!(totals.is_exact());
    }

    #[test]
    fn holes_and_repeats_are_counted_exactly() {
        // 10..=20 without 12 and 17, with 15 three times and 20 twice.
        let mut seqs = vec![10, 11, 13, 14, 15, 15, 15, 16, 18, 19, 20, 20];
        let room = check_room(&mut seqs);
        assert_eq!((room.first, room.last), (Some(10), Some(20)));
        assert_eq!(room.distinct, 9);
        assert_eq!(room.missing, 2);
        assert_eq!(room.duplicates, 3);
        let mut totals = AckTotals::default();
        totals.add_room(&room);
        assert_eq!(
            (
                totals.seq_missing,
                totals.seq_duplicates,
                totals.rooms_with_gaps,
                totals.rooms_not_from_1
            ),
            (2, 3, 1, 1)
        );
        assert!(!totals.is_exact());
    }

    #[test]
    fn an_empty_room_is_empty() {
        let room = check_room(&mut []);
        assert_eq!(room, RoomSeqs::default());
        assert!(room.is_gap_free());
    }
}
