//! The hub's side of a node of several: what arrives from the broker (in runs, through each
//! room's sequencer), the gap task that reads what the broker lost from the history, and the
//! re-read of every room's tail after the broker reconnects (`order` has the reasoning).

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::{Hub, Shared, WeakHub, order};
use crate::broker::{BrokerError, RoomEvent, Target};
use crate::ids::RoomName;
use crate::protocol::Event;

/// Delivers other nodes' events locally until the broker or the hub goes away.
pub(super) async fn receive_loop(
    hub: Weak<Shared>,
    mut deliver_rx: mpsc::Receiver<RoomEvent>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut batch: Vec<RoomEvent> = Vec::with_capacity(RECEIVE_BATCH);
    loop {
        let received = tokio::select! {
            // Shutdown ends the loop even if the broker never closes the channel.
            () = shutdown.cancelled() => return,
            received = deliver_rx.recv_many(&mut batch, RECEIVE_BATCH) => received,
        };
        let Some(shared) = hub.upgrade().filter(|_| received > 0) else {
            return;
        };
        let hub = Hub { shared };
        hub.deliver_received(batch.drain(..));
    }
}

/// Most events the receive loop takes from the broker at once.
pub(super) const RECEIVE_BATCH: usize = 256;

impl Hub {
    /// Delivers what other nodes sent, in order. A run of one room's persisted messages goes
    /// to its members together, as a group commit's messages do on the node that committed
    /// them (one queue operation per member for the run, not one per message): under load a
    /// room's messages arrive from the broker in such runs.
    pub(super) fn deliver_received(&self, events: impl Iterator<Item = RoomEvent>) {
        let mut run: Option<(RoomName, Vec<Event>)> = None;
        for event in events {
            if matches!(event.event, Event::Resync) {
                self.resync();
                continue;
            }
            if event.origin == self.shared.node {
                continue;
            }
            let RoomEvent {
                target,
                exclude,
                event,
                ..
            } = event;
            match (target, event) {
                (Target::Room(room), Event::Message(message))
                    if message.seq.is_some() && exclude.is_empty() =>
                {
                    match &mut run {
                        Some((current, messages)) if *current == room => {
                            messages.push(Event::Message(message));
                        }
                        _ => {
                            if let Some((room, messages)) = run.take() {
                                self.deliver_sequenced(&room, &messages);
                            }
                            run = Some((room, vec![Event::Message(message)]));
                        }
                    }
                }
                (target, event) => {
                    if let Some((room, messages)) = run.take() {
                        self.deliver_sequenced(&room, &messages);
                    }
                    self.deliver_local(&target, &event, &exclude, None);
                }
            }
        }
        if let Some((room, messages)) = run {
            self.deliver_sequenced(&room, &messages);
        }
    }
}

impl Hub {
    /// The broker may have lost events (it reconnected): re-reads every room's persisted
    /// messages after the last one delivered, so that a message lost in a room that then went
    /// quiet is not left waiting for the next one to show the gap.
    pub(super) fn resync(&self) {
        let Some(history) = self.shared.history.clone() else {
            return;
        };
        let rooms = self.state().sequenced_rooms();
        tracing::debug!(
            rooms = rooms.len(),
            "re-reading the rooms' tails after a broker reconnect"
        );
        for (room, delivered) in rooms {
            let hub = self.downgrade();
            let history = Arc::clone(&history);
            tokio::spawn(async move {
                let read = history.range(&room, delivered, u64::MAX).await;
                let Some(hub) = hub.upgrade() else {
                    return;
                };
                match read {
                    Ok(messages) if !messages.is_empty() => {
                        let events: Vec<Event> = messages.into_iter().map(Event::Message).collect();
                        hub.deliver_sequenced(&room, &events);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(%room, error = %err, "cannot re-read a room's tail");
                    }
                }
            });
        }
    }
}

/// Waits for `room`'s gap to close, reading what the broker lost from the hub's history
/// (`order`); skips what the store cannot give after `order::GAP_ATTEMPTS` reads, with an
/// error. Ends when the room has no gap, or with the hub.
pub(super) async fn fill_gap(hub: WeakHub, room: RoomName) {
    let mut failures = 0u32;
    tokio::time::sleep(order::GAP_WAIT).await;
    loop {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let Some((after, upto)) = hub.state().gap(&room) else {
            return;
        };
        let fetched = match &hub.shared.history {
            Some(history) => history.range(&room, after, upto).await,
            None => Err(BrokerError::Unavailable(
                "no history to fill gaps from".into(),
            )),
        };
        match fetched {
            Ok(messages) if !messages.is_empty() => {
                tracing::debug!(%room, after, upto, read = messages.len(), "filled a gap from the store");
                let events: Vec<Event> = messages.into_iter().map(Event::Message).collect();
                hub.deliver_sequenced(&room, &events);
            }
            Ok(_) => failures += 1,
            Err(err) => {
                failures += 1;
                tracing::warn!(%room, after, upto, error = %err, "cannot read a gap's messages yet");
            }
        }
        if hub.state().gap(&room) == Some((after, upto)) && failures >= order::GAP_ATTEMPTS {
            let (skipped, delivery) = hub.state().skip_gap(&room);
            hub.count(delivery);
            if let Some((after, upto)) = skipped {
                hub.count_error("gap_skipped");
                tracing::error!(%room, after, upto, "messages missing from the store were skipped");
            }
            failures = 0;
        }
        tokio::time::sleep(order::GAP_WAIT * failures.max(1)).await;
    }
}
