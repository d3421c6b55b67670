//! The store writer's Prometheus instruments, registered with [`Store::register_metrics`].

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::Store;

/// What the writer observes once per group commit. Clones share their series.
#[derive(Debug, Clone)]
pub(crate) struct WriterMetrics {
    /// How long each batch took to write and commit.
    pub(crate) commit: Histogram,
    /// Messages per batch.
    pub(crate) batch: Histogram,
    /// How long each sync of the WAL took (`writer/sync.rs`).
    pub(crate) sync: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self {
            // 0.1 ms to ~3.3 s, doubling: an in-memory commit to a stalled disk.
            commit: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            // 1 to 8192 (the default `max_batch`), doubling.
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            // As `commit`: a synced page cache to a stalled disk.
            sync: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl Store {
    /// Registers the writer's metrics with `registry`: `roomcast_store_commit_seconds` (each
    /// group commit's write and commit), `roomcast_store_batch_size` (messages per commit) and
    /// `roomcast_store_sync_seconds` (each sync of the SQLite WAL made after the commits it
    /// covers, [`StoreOptions::sqlite_hooks_before_sync`](crate::StoreOptions)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> roomcast_store::Result<()> {
    /// let store = roomcast_store::Store::connect("sqlite::memory:").await?;
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// store.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("roomcast_store_batch_size_count 0"));
    /// # store.close().await; Ok(()) }
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        let metrics = self.writer_metrics();
        registry.register_with_unit(
            "roomcast_store_commit",
            "How long each group commit of messages took to write and commit",
            Unit::Seconds,
            metrics.commit.clone(),
        );
        registry.register(
            "roomcast_store_batch_size",
            "Messages written per group commit",
            metrics.batch.clone(),
        );
        registry.register_with_unit(
            "roomcast_store_sync",
            "How long each sync of the SQLite WAL took, when commits are synced after their \
             broadcast (sqlite_hooks_before_sync)",
            Unit::Seconds,
            metrics.sync.clone(),
        );
    }
}
