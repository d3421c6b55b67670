//! A room's persisted messages in `seq` order on a node of several.
//!
//! On one node, messages reach the hub in `seq` order (the store's commit path publishes them
//! batch after batch). With a broker they come from two paths, this node's commits and other
//! nodes' through the broker, and the two interleave: node B may commit seq 6 and deliver it
//! before node A's seq 5 crosses over, and each connection's watermark would then drop 5 as
//! already sent. So on a node with a broker every room's sequenced messages pass a
//! [`Sequencer`] first: the next expected `seq` goes out, with whatever was held behind it; a
//! later one is held; an earlier one was delivered already (a duplicate: a store fill and the
//! broker both brought it) and is dropped. A gap that the broker does not fill within
//! [`GAP_WAIT`] (pub/sub is at-most-once: a Redis restart loses what was in flight) is read
//! from the store through the hub's [`History`]; what the store cannot give after
//! [`GAP_ATTEMPTS`] tries is skipped, with an error logged and counted, never silently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::BoxFuture;
use crate::ids::RoomName;
use crate::protocol::ChatMessage;

/// How long a gap may wait for the broker before the store is asked.
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(150);
/// Store reads a gap gets before it is skipped.
pub(crate) const GAP_ATTEMPTS: u32 = 5;

/// Where a node reads the messages its broker lost: the store the nodes share.
///
/// ```
/// use std::sync::Arc;
/// use roomcast::History;
/// use roomcast::broker::{BoxFuture, BrokerError};
/// use roomcast::protocol::ChatMessage;
/// use roomcast::RoomName;
///
/// /// A history with nothing in it (a real one reads the database).
/// struct Empty;
/// impl History for Empty {
///     fn range(&self, _: &RoomName, _: u64, _: u64)
///         -> BoxFuture<'_, Result<Vec<Arc<ChatMessage>>, BrokerError>> {
///         Box::pin(async { Ok(Vec::new()) })
///     }
/// }
/// ```
pub trait History: Send + Sync + 'static {
    /// `room`'s messages with `after < seq <= upto`, in `seq` order.
    ///
    /// # Errors
    ///
    /// When the store cannot answer now; the hub tries again.
    fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> BoxFuture<'_, Result<Vec<Arc<ChatMessage>>, crate::broker::BrokerError>>;
}

/// One room's order on this node.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    /// The next `seq` to deliver; `None` until the first message or replay sets it.
    next: Option<u64>,
    /// Messages past a gap, waiting for it to close.
    held: BTreeMap<u64, Arc<ChatMessage>>,
    /// A task is waiting out or filling this room's gap.
    pub(crate) filling: bool,
}

impl Sequencer {
    /// Takes `message` (which has a `seq`) and appends to `ready` what can go out now, in
    /// order. Until the room's order is known, `baseline` is asked where it starts:
    /// `Some(sent)`, the lowest `seq` its connections' replays sent up to (0: none sent
    /// anything, the room starts at this message); `None` while a connection's replay is being
    /// fetched, which then sets it ([`Sequencer::replayed`]) and the message waits.
    pub(crate) fn take(
        &mut self,
        message: Arc<ChatMessage>,
        baseline: impl FnOnce() -> Option<u64>,
        ready: &mut Vec<Arc<ChatMessage>>,
    ) {
        let Some(seq) = message.seq else {
            ready.push(message);
            return;
        };
        if self.next.is_none() {
            match baseline() {
                Some(0) => self.next = Some(seq),
                Some(sent) => self.next = Some(sent + 1),
                None => {}
            }
        }
        if self.next.is_some_and(|next| seq < next) {
            return;
        }
        self.held.insert(seq, message);
        self.release(ready);
    }

    /// The last `seq` delivered (the next less one), once the order is known.
    pub(crate) fn delivered(&self) -> Option<u64> {
        self.next.map(|next| next - 1)
    }

    /// Whether the room's order is known (its first message or replay has set it).
    pub(crate) fn is_started(&self) -> bool {
        self.next.is_some()
    }

    /// Moves the run of held messages starting at `next` into `ready`.
    fn release(&mut self, ready: &mut Vec<Arc<ChatMessage>>) {
        let Some(next) = self.next.as_mut() else {
            return;
        };
        while let Some(entry) = self.held.first_entry() {
            match (*entry.key()).cmp(next) {
                std::cmp::Ordering::Less => {
                    entry.remove();
                }
                std::cmp::Ordering::Equal => {
                    ready.push(entry.remove());
                    *next += 1;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
    }

    /// A replay sent a connection everything up to `sent` (0: the room had no message). If the
    /// room's order is not known yet, it continues after `sent`; appends to `ready` what that
    /// releases. (Once the order is known a replay changes nothing: other connections may be
    /// behind it.)
    pub(crate) fn replayed(&mut self, sent: u64, ready: &mut Vec<Arc<ChatMessage>>) {
        if self.next.is_none() {
            self.next = Some(sent + 1);
            self.release(ready);
        }
    }

    /// The missing range, `after < seq <= upto`, when something is held behind a gap.
    pub(crate) fn gap(&self) -> Option<(u64, u64)> {
        let next = self.next?;
        let (&first, _) = self.held.first_key_value()?;
        (first > next).then(|| (next - 1, first - 1))
    }

    /// Gives up on the current gap: delivery continues at the first held message. Returns the
    /// skipped range.
    pub(crate) fn skip_gap(&mut self, ready: &mut Vec<Arc<ChatMessage>>) -> Option<(u64, u64)> {
        let gap = self.gap()?;
        self.next = Some(gap.1 + 1);
        self.release(ready);
        Some(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::UserInfo;

    fn message(seq: u64) -> Arc<ChatMessage> {
        Arc::new(ChatMessage {
            id: format!("m{seq}").into(),
            seq: Some(seq),
            room: RoomName::new("lobby").unwrap(),
            sender: UserInfo {
                id: "ann".into(),
                username: "Ann".into(),
            },
            content: String::new(),
            data: None,
            timestamp_ms: 0,
        })
    }

    fn seqs(ready: &[Arc<ChatMessage>]) -> Vec<u64> {
        ready.iter().map(|m| m.seq.unwrap()).collect()
    }

    #[test]
    fn out_of_order_messages_are_held_until_the_gap_closes_and_duplicates_dropped() {
        let mut order = Sequencer::default();
        let mut ready = Vec::new();
        order.take(message(4), || Some(3), &mut ready);
        assert_eq!(seqs(&ready), [4]);
        order.take(message(6), || unreachable!(), &mut ready);
        order.take(message(7), || unreachable!(), &mut ready);
        assert_eq!(seqs(&ready), [4], "6 and 7 wait for 5");
        assert_eq!(order.gap(), Some((4, 5)));
        order.take(message(5), || unreachable!(), &mut ready);
        assert_eq!(seqs(&ready), [4, 5, 6, 7]);
        assert_eq!(order.gap(), None);
        order.take(message(5), || unreachable!(), &mut ready);
        assert_eq!(seqs(&ready), [4, 5, 6, 7], "a duplicate is dropped");
    }

    #[test]
    fn a_baseline_from_a_replay_holds_what_comes_after_a_missing_message() {
        let mut order = Sequencer::default();
        let mut ready = Vec::new();
        // The room's connections were replayed up to 10; 12 arrives before 11.
        order.take(message(12), || Some(10), &mut ready);
        assert!(ready.is_empty());
        assert_eq!(order.gap(), Some((10, 11)));
        order.take(message(11), || unreachable!(), &mut ready);
        assert_eq!(seqs(&ready), [11, 12]);
        // Known now: a later replay changes nothing.
        order.replayed(40, &mut ready);
        order.take(message(13), || unreachable!(), &mut ready);
        assert_eq!(seqs(&ready), [11, 12, 13]);
    }

    #[test]
    fn while_the_first_replay_is_fetched_messages_wait_for_it_to_set_the_start() {
        let mut order = Sequencer::default();
        let mut ready = Vec::new();
        order.take(message(6), || None, &mut ready);
        order.take(message(5), || None, &mut ready);
        assert!(ready.is_empty());
        assert_eq!(order.gap(), None, "no gap before the start is known");
        // The replay sent up to 4: 5 and 6 follow it.
        order.replayed(4, &mut ready);
        assert_eq!(seqs(&ready), [5, 6]);
    }

    #[test]
    fn a_gap_the_store_cannot_fill_is_skipped_and_reported() {
        let mut order = Sequencer::default();
        let mut ready = Vec::new();
        order.take(message(1), || Some(0), &mut ready);
        order.take(message(4), || unreachable!(), &mut ready);
        order.take(message(5), || unreachable!(), &mut ready);
        assert_eq!(order.skip_gap(&mut ready), Some((1, 3)));
        assert_eq!(seqs(&ready), [1, 4, 5]);
        assert_eq!(order.skip_gap(&mut ready), None);
    }
}
