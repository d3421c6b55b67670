//! The hub's Prometheus instruments, registered with [`Hub::register_metrics`].
//!
//! Every instrument belongs to one hub (no global recorder): two hubs in one process, such as
//! the servers of parallel tests, count apart. What a broadcast costs is counted once per
//! broadcast, never per recipient: the hub adds up a delivery's frames and bytes while it
//! queues them (plain local sums) and adds the totals to the counters afterwards. A room's
//! occupancy and the number of rooms are read from the registry when Prometheus scrapes.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::hub::{Hub, WeakHub};

/// Label of the per-endpoint series: the endpoint's name ([`Endpoint::name`](crate::Endpoint::name)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct EndpointLabel {
    pub(crate) endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DialectLabel {
    dialect: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Buckets of durations in seconds from 0.5 ms to ~65 s (doubling).
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// One hub's instruments. Each is an `Arc` inside: [`Registry::register`] takes clones.
#[derive(Debug)]
pub(crate) struct HubMetrics {
    connections: Family<EndpointLabel, Gauge>,
    opened: Family<EndpointLabel, Counter>,
    closed: Family<CodeLabel, Counter>,
    duration: Histogram,
    received: Family<DialectLabel, Counter>,
    pub(crate) delivered: Counter,
    bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    errors: Family<KindLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    pub(crate) slow_consumers: Counter,
    refused: Counter,
    broadcast: Histogram,
    /// Batches the delivering thread wrote to a socket itself (`Outbound::write_queued`).
    pub(crate) direct_writes: Counter,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            opened: Family::default(),
            closed: Family::default(),
            // 1 s to ~9 days, ×4 each: a chat connection lasts seconds to days.
            duration: Histogram::new(exponential_buckets(1.0, 4.0, 11)),
            received: Family::default(),
            delivered: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            errors: Family::default(),
            auth_failures: Family::default(),
            slow_consumers: Counter::default(),
            refused: Counter::default(),
            broadcast: seconds_buckets(),
            direct_writes: Counter::default(),
        }
    }
}

impl HubMetrics {
    pub(crate) fn opened(&self, endpoint: &'static str) {
        let label = EndpointLabel { endpoint };
        self.opened.get_or_create(&label).inc();
        self.connections.get_or_create(&label).inc();
    }

    pub(crate) fn closed(&self, endpoint: &'static str, code: u16, lasted: Duration) {
        self.connections
            .get_or_create(&EndpointLabel { endpoint })
            .dec();
        self.closed.get_or_create(&CodeLabel { code }).inc();
        self.duration.observe(lasted.as_secs_f64());
    }

    pub(crate) fn received(&self, dialect: &'static str, bytes: usize) {
        self.received.get_or_create(&DialectLabel { dialect }).inc();
        self.bytes_in.inc_by(bytes as u64);
    }

    pub(crate) fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn refused(&self) {
        self.refused.inc();
    }

    pub(crate) fn refused_total(&self) -> u64 {
        self.refused.get()
    }

    pub(crate) fn broadcast(&self, took: Duration) {
        self.broadcast.observe(took.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "roomcast_connections",
            "WebSocket connections open now, by endpoint",
            self.connections.clone(),
        );
        registry.register(
            "roomcast_connections_opened",
            "WebSocket connections accepted, by endpoint",
            self.opened.clone(),
        );
        registry.register(
            "roomcast_connections_closed",
            "WebSocket connections ended, by close code (1005: the peer sent none, 1006: lost)",
            self.closed.clone(),
        );
        registry.register_with_unit(
            "roomcast_connection_duration",
            "How long connections lasted, observed when they end",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "roomcast_messages_received",
            "Data messages received from clients, by dialect",
            self.received.clone(),
        );
        registry.register(
            "roomcast_messages_delivered",
            "Frames queued to connections by the hub's deliveries (room messages, presence, broadcasts)",
            self.delivered.clone(),
        );
        registry.register_with_unit(
            "roomcast_received",
            "Payload bytes of the data messages received from clients",
            Unit::Bytes,
            self.bytes_in.clone(),
        );
        registry.register_with_unit(
            "roomcast_delivered",
            "Bytes (framed for the wire) queued to connections by the hub's deliveries",
            Unit::Bytes,
            self.bytes_out.clone(),
        );
        registry.register(
            "roomcast_errors",
            "Errors by kind: protocol (1002/1007/1009 from a client), hook_panic, hook_error (a hook closed its connection with 1011), and the server's own kinds",
            self.errors.clone(),
        );
        registry.register(
            "roomcast_auth_failures",
            "WebSocket connections refused for their token, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "roomcast_slow_consumers",
            "Connections closed with 1013 because their queue overflowed",
            self.slow_consumers.clone(),
        );
        registry.register(
            "roomcast_direct_writes",
            "Deliveries written to a connection's socket by the delivering thread itself, without waking the connection's task (its queue was empty and its write interval over)",
            self.direct_writes.clone(),
        );
        registry.register(
            "roomcast_connections_refused",
            "WebSocket connections refused before their session (origin, token, capacity, shutdown)",
            self.refused.clone(),
        );
        registry.register_with_unit(
            "roomcast_broadcast",
            "From a persisted message's arrival to the last local recipient's enqueue (commit included)",
            Unit::Seconds,
            self.broadcast.clone(),
        );
    }
}

/// Room sizes: 1-2-5 steps up to the default `ROOMCAST_MAX_ROOM_MEMBERS` (10,000).
const OCCUPANCY_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// `roomcast_errors_total{kind="hook_panic"}`.
pub(crate) const HOOK_PANIC: &str = "hook_panic";

/// Reads the hub's registry at each scrape: `roomcast_rooms` and `roomcast_room_members`.
#[derive(Debug)]
struct Occupancy {
    hub: WeakHub,
    /// Each scrape observes every room's member count once: with Prometheus scraping at a
    /// fixed interval, `rate()` over the buckets is the distribution of room sizes over time.
    members: Histogram,
}

impl Collector for Occupancy {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(hub) = self.hub.upgrade() else {
            return Ok(());
        };
        let sizes = hub.room_sizes();
        for &size in &sizes {
            self.members.observe(size as f64);
        }
        let rooms = ConstGauge::new(sizes.len() as i64);
        let metric = encoder.encode_descriptor(
            "roomcast_rooms",
            "Rooms with at least one connection on this node",
            None,
            rooms.metric_type(),
        )?;
        rooms.encode(metric)?;
        let metric = encoder.encode_descriptor(
            "roomcast_room_members",
            "Users in each room, sampled once per room at each scrape",
            None,
            self.members.metric_type(),
        )?;
        self.members.encode(metric)
    }
}

impl Hub {
    /// Registers this hub's metrics (`roomcast_connections`, `roomcast_messages_received_total`,
    /// `roomcast_broadcast_seconds`, …; the README lists them) with `registry`, for a
    /// Prometheus scrape. Call once per registry.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use roomcast::{Hub, SessionConfig};
    ///
    /// let hub = Hub::new(SessionConfig::default());
    /// let mut registry = Registry::default();
    /// hub.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("roomcast_rooms 0"));
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics().register(registry);
        registry.register_collector(Box::new(Occupancy {
            hub: self.downgrade(),
            members: Histogram::new(OCCUPANCY_BUCKETS),
        }));
    }
}
