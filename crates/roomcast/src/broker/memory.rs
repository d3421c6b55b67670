//! An in-process broker: several hubs in one process, as if they were nodes.
//!
//! [`MemoryBus`] is the shared medium (one `std::sync::Mutex` over the node table, never held
//! across an `.await`); each hub gets its own [`MemoryBroker`] from [`MemoryBus::broker`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;

use super::{BoxFuture, Broker, BrokerError, RoomEvent, Target};
use crate::ids::{NodeId, RoomName};

/// The shared medium of in-process nodes. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use roomcast::{Hub, SessionConfig};
/// use roomcast::broker::memory::MemoryBus;
/// let bus = MemoryBus::new();
/// let node_a = Hub::builder(SessionConfig::default()).broker(Arc::new(bus.broker())).build().await.unwrap();
/// let node_b = Hub::builder(SessionConfig::default()).broker(Arc::new(bus.broker())).build().await.unwrap();
/// assert_ne!(node_a.node_id(), node_b.node_id());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    nodes: Arc<Mutex<Nodes>>,
}

#[derive(Debug, Default)]
struct Nodes {
    deliver: HashMap<NodeId, mpsc::Sender<RoomEvent>>,
    rooms: HashMap<RoomName, HashSet<NodeId>>,
}

impl MemoryBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker for one more node on this bus.
    pub fn broker(&self) -> MemoryBroker {
        MemoryBroker {
            bus: self.clone(),
            node: OnceLock::new(),
        }
    }
}

/// One node's end of a [`MemoryBus`].
#[derive(Debug)]
pub struct MemoryBroker {
    bus: MemoryBus,
    node: OnceLock<NodeId>,
}

impl MemoryBroker {
    fn node(&self) -> Result<NodeId, BrokerError> {
        self.node
            .get()
            .copied()
            .ok_or_else(|| BrokerError::Unavailable("broker not started".into()))
    }
}

impl Broker for MemoryBroker {
    fn start(
        &self,
        node: NodeId,
        deliver: mpsc::Sender<RoomEvent>,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let started = self.node.set(node).is_ok();
        if started {
            let mut nodes = self.bus.nodes.lock().expect("bus lock poisoned");
            nodes.deliver.insert(node, deliver);
        }
        Box::pin(async move {
            if started {
                Ok(())
            } else {
                Err(BrokerError::Unavailable("broker already started".into()))
            }
        })
    }

    fn publish(&self, event: RoomEvent) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let origin = self.node()?;
            // Collect the receivers under the lock, send after it is released.
            let receivers: Vec<_> = {
                let nodes = self.bus.nodes.lock().expect("bus lock poisoned");
                let wanted = |node: &NodeId| *node != origin;
                match &event.target {
                    Target::Room(room) => nodes
                        .rooms
                        .get(room)
                        .into_iter()
                        .flatten()
                        .filter(|node| wanted(node))
                        .filter_map(|node| nodes.deliver.get(node).cloned())
                        .collect(),
                    Target::All | Target::Users(_) => nodes
                        .deliver
                        .iter()
                        .filter(|(node, _)| wanted(node))
                        .map(|(_, tx)| tx.clone())
                        .collect(),
                }
            };
            for receiver in receivers {
                // A node that has shut down is simply skipped.
                let _ = receiver.send(event.clone()).await;
            }
            Ok(())
        })
    }

    fn subscribe(&self, room: RoomName) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.node().map(|node| {
            let mut nodes = self.bus.nodes.lock().expect("bus lock poisoned");
            nodes.rooms.entry(room).or_default().insert(node);
        });
        Box::pin(async move { result })
    }

    fn unsubscribe(&self, room: RoomName) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.node().map(|node| {
            let mut nodes = self.bus.nodes.lock().expect("bus lock poisoned");
            if let Some(members) = nodes.rooms.get_mut(&room) {
                members.remove(&node);
                if members.is_empty() {
                    nodes.rooms.remove(&room);
                }
            }
        });
        Box::pin(async move { result })
    }
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        if let Some(node) = self.node.get()
            && let Ok(mut nodes) = self.bus.nodes.lock()
        {
            nodes.deliver.remove(node);
            nodes.rooms.values_mut().for_each(|members| {
                members.remove(node);
            });
        }
    }
}
