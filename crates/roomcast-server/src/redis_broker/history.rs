//! [`StoreHistory`]: the store as the hub's [`roomcast::History`].

use std::sync::Arc;

use roomcast::RoomName;
use roomcast::broker::{BoxFuture, BrokerError};

/// The store as the hub's [`roomcast::History`]: where a node reads the messages its broker
/// lost (the nodes share the store, so every committed message is there).
#[derive(Clone)]
pub struct StoreHistory(pub roomcast_store::Store);

/// Most messages one gap read returns; a longer gap is read in several.
const MAX_GAP_READ: u64 = 1000;

impl roomcast::History for StoreHistory {
    fn range(
        &self,
        room: &RoomName,
        after: u64,
        upto: u64,
    ) -> BoxFuture<'_, Result<Vec<Arc<roomcast::protocol::ChatMessage>>, BrokerError>> {
        let room = room.clone();
        Box::pin(async move {
            let upto = upto.min(after.saturating_add(MAX_GAP_READ));
            let count = usize::try_from(upto.saturating_sub(after)).unwrap_or(usize::MAX);
            let stored = self
                .0
                .messages_since(room.as_str(), roomcast_store::Seq(after), count)
                .await
                .map_err(|err| BrokerError::Unavailable(err.to_string()))?;
            Ok(stored
                .into_iter()
                .filter(|message| message.seq.0 <= upto)
                .map(|message| crate::chat::to_chat(&room, message))
                .collect())
        })
    }
}
