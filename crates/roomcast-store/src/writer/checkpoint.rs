//! The SQLite WAL checkpointer: the log copied into the database file off the writer's path,
//! and rewound under steady writes (see `checkpoint_loop`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::time::{Instant, MissedTickBehavior};

use super::SLOW_TO_LOG;

/// How often `checkpoint_loop` copies the SQLite WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// How long the SQLite WAL may grow before the writer lets it start over (see
/// `checkpoint_loop`), and the size its file is cut back to then (`journal_size_limit`).
pub(super) const WAL_LIMIT_BYTES: i64 = 16 << 20;

/// `WAL_LIMIT_BYTES` in frames of SQLite's default 4 KiB page, as `wal_checkpoint` counts.
const WAL_REWIND_FRAMES: i64 = WAL_LIMIT_BYTES / 4096;

/// Checkpoints the SQLite WAL from its own connection, so the writer's commits do not.
///
/// SQLite checkpoints in the connection whose commit pushes the WAL past 1000 pages: there,
/// the writer, which then copied pages and synced the database file before it could start the
/// next batch (the checkpoint was ~10% of the server's CPU in `roomcast-loadgen history`, all
/// of it on the one task every message waits for). A passive checkpoint never blocks the
/// writer or a reader; it copies what no reader still needs. Durability is unchanged: a
/// commit is durable once its WAL frames are synced, which `synchronous=FULL` does at commit.
///
/// Alone, that let the log grow without end under steady writes: SQLite rewinds the WAL only
/// when a write finds every frame copied, and with the writer appending while this copies,
/// new frames always came first (616 MB in 10 s of `roomcast-loadgen history` for a 106 MB
/// database, and the rate fell as it grew, 65k -> 33k msg/s within the run: a page read
/// searches the WAL's index first). So when the log is longer than `WAL_REWIND_FRAMES` this
/// sets `rewind`, and the writer runs one more passive checkpoint between two batches, when
/// nothing is appended: it copies only what this one left, and the next batch writes from the
/// log's start. Nothing waits for a reader: one still reading an old snapshot only puts the
/// rewind off to a later round.
pub(super) async fn checkpoint_loop(pool: SqlitePool, rewind: Arc<AtomicBool>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Instant::now();
        match passive_checkpoint(&pool).await {
            Ok((log, copied)) => {
                let took = started.elapsed();
                if took >= SLOW_TO_LOG {
                    let ms = took.as_millis() as u64;
                    tracing::debug!(log, copied, ms, "slow WAL checkpoint");
                }
                if log > WAL_REWIND_FRAMES {
                    rewind.store(true, Ordering::Relaxed);
                }
            }
            Err(err) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %err, "WAL checkpoint failed");
            }
        }
    }
}

/// A passive checkpoint: the frames in the log, and how many of them are now in the database.
pub(super) async fn passive_checkpoint<'c, E>(executor: E) -> Result<(i64, i64), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let (_busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(executor)
        .await?;
    Ok((log, copied))
}
