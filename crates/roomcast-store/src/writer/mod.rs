//! The writer task: group commit of appended messages.
//!
//! One task per store, on a thread of its own ([`start`]), owns every message write. It
//! receives `AppendRequest`s on the store's bounded `mpsc` (each carrying a `oneshot` for its
//! answer), takes whatever is queued, up to `max_batch`, writes it all in one transaction,
//! commits, and only then answers each request. The answering (commit hooks, then replies)
//! runs on a second task, on the caller's runtime, batch after batch in commit order, so the
//! next batch is written while the last one's hooks run.
//!
//! ```text
//! append_message ─┐                           ┌─ BEGIN
//! append_message ─┼─▶ mpsc ─▶ recv_many ────▶ ├─ lock the batch's rooms, read their last_seq
//! append_message ─┘  (bounded)  (≤ max_batch) ├─ [look up client_msg_ids]       (1 per 1024)
//!        ▲                                    ├─ INSERT every new message        (1 per 1024)
//!        │                                    ├─ UPDATE the rooms' last_seq (one statement)
//!        └────────── oneshot answers ◀─────── └─ COMMIT
//! ```
//!
//! While several senders write at once (the last batch held more than one message), a batch
//! starts no sooner than `commit_interval` after the last one started, and what arrives
//! meanwhile joins it; after a batch of one nothing waits, so a lone sender awaiting each
//! message is not slowed (PostgreSQL's `commit_delay` with `commit_siblings` works the same
//! way). In `roomcast serve` each batch is one delivery to every member of its rooms, and
//! members are written at most every `WEBSOCKET_WRITE_INTERVAL` anyway, so committing more
//! often than that buys little latency for its statements and wake-ups.
//!
//! A batch costs a handful of statements however many messages and rooms it holds: the
//! per-room lists go as one JSON array parameter, the per-message ones as multi-row `VALUES`
//! of up to 1024 rows a statement (`sql.rs` has the statement texts and why). On PostgreSQL each
//! statement is a round trip to the server, which is why the batch is not written message by
//! message; on a SQLite file the writer's thread runs them itself (`direct.rs`), and each
//! costs its parsing and planning once per connection, then its execution.
//!
//! The look-up of earlier messages by `client_msg_id` runs only after a batch that held a
//! retry; otherwise the INSERT skips rows whose key is taken and the writer counts what it
//! inserted (see `Keys`).
//!
//! Seqs are assigned here, in arrival order within each room, from `last_seq` read under the
//! room rows' locks, and written back before the commit: gap-free, and one sequence per room
//! across every process sharing the database. Retries (a known `client_msg_id`) take no seq.
//! On PostgreSQL the rows are locked in room-name order (`ORDER BY name FOR UPDATE`), so
//! writers on several nodes cannot deadlock; on SQLite `BEGIN IMMEDIATE` already holds the
//! database's single write lock.
//!
//! Failures stay with their messages. An unknown room fails its own messages without any
//! failing statement. Should a statement fail anyway, the transaction is rolled back and the
//! batch written again in smaller units: first one per room (in name order), then, for the
//! room that failed, one per message; a single message that still fails gets its error and is
//! left out of the next attempt. Each attempt splits or removes a unit, so the retries end.
//! Only `BEGIN` or `COMMIT` failing fails the whole batch (`StoreError::BatchFailed`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use self::sql::BatchSql;
use crate::error::Result;
use crate::metrics::WriterMetrics;
use crate::records::{Appended, NewMessage, StoredMessage};
use crate::store::Backend;

mod answer;
mod checkpoint;
mod direct;
mod sql;
mod sync;

use self::checkpoint::{WAL_LIMIT_BYTES, checkpoint_loop, passive_checkpoint};
use self::direct::{Direct, FileDb};

pub(crate) use self::answer::AfterBatch;
use self::answer::{Answer, Resolved};
use self::batch::{ItemOutcome, Keys, write_batch};
use self::sync::Syncer;

/// A hook that runs after the message's commit, on the writer's answering task, before its
/// outcome is known to be durable (see `answer.rs`): `append_message_with`'s, and the
/// `on_written` of `queue_message_written_then`.
pub(crate) type OnCommit = Box<dyn FnOnce(&StoredMessage) + Send>;

/// A hook `queue_message_then` runs with the message's outcome, whatever it is, on the
/// writer's answering task. It owns the outcome: nothing else needs the message after it.
pub(crate) type OnOutcome = Box<dyn FnOnce(Result<(StoredMessage, Appended)>) + Send>;

/// One `append_message` call waiting for the writer.
pub(crate) struct AppendRequest {
    /// What to write.
    pub(crate) pending: Pending,
    /// Who learns the outcome.
    pub(crate) waiter: Waiter,
}

/// The part of an `AppendRequest` that is written. Kept apart from the hook and the reply
/// sender while the batch is written: the writes borrow it across awaits, so it must be `Sync`,
/// which a caller's hook need not be.
pub(crate) struct Pending {
    /// The message as the caller gave it.
    pub(crate) message: NewMessage,
    /// `message.data` as JSON text, serialized by the caller's task rather than the writer's.
    pub(crate) data_json: Option<String>,
}

/// The part of an `AppendRequest` that waits for the outcome.
pub(crate) enum Waiter {
    /// A caller awaiting a [`Committing`](crate::Committing), with an optional hook to run
    /// after the commit if the message was stored now (`append_message_with`).
    Reply {
        on_commit: Option<OnCommit>,
        reply_tx: oneshot::Sender<Result<(StoredMessage, Appended)>>,
    },
    /// A hook called with every outcome (`queue_message_then`): nothing awaits the message.
    Hook(OnOutcome),
    /// A hook to run at the commit if the message was stored now, and one called with every
    /// outcome once it is durable (`queue_message_written_then`).
    Staged {
        on_written: Option<OnCommit>,
        on_outcome: OnOutcome,
    },
}

/// The writer's own connection, taken from the pool at the first batch and kept.
///
/// Borrowing a pool connection per batch meant a pool round trip per batch, and on SQLite a page
/// cache that another connection's write had made stale (SQLite discards a connection's cache
/// when the file changed since its last transaction). Kept: 27.6-28.7k -> 28.5-30.3k persisted
/// msg/s in `roomcast-loadgen history` (1024 publishers × 1024 rooms, same binary otherwise).
/// After `BEGIN` or `COMMIT` fails it is let go, and the next batch takes a fresh one. Its page
/// cache is larger than the pool's: [`WRITER_CACHE_PRAGMA`].
///
/// It is closed when let go, never returned to the pool: a PostgreSQL connection the writer
/// opened has its socket registered with the writer's runtime ([`start`]), which ends with the
/// writer.
///
/// For a SQLite database file the pool's connection only says where the file is, and the writer
/// opens its own (`direct.rs`), which holds the WAL file too when its commits are synced apart
/// (`sync.rs`).
enum Held {
    None,
    /// An in-memory SQLite database's connection, from the pool: nothing to sync.
    Sqlite(PoolConnection<Sqlite>),
    /// A SQLite database file's, driven from the writer's thread.
    Direct(Direct),
    Postgres(PoolConnection<Postgres>),
}

impl Held {
    /// Closes the connection, if one is held.
    async fn close(self) {
        let closed = match self {
            Held::None | Held::Direct(_) => Ok(()),
            Held::Sqlite(conn) => conn.close().await,
            Held::Postgres(conn) => conn.close().await,
        };
        if let Err(err) = closed {
            tracing::debug!(error = %err, "closing the writer's connection failed");
        }
    }
}

/// The writer's connection, and how the next one it takes is to commit.
struct WriterConn {
    held: Held,
    /// Whether a SQLite connection commits without syncing, for the syncer (`sync.rs`).
    sync_apart: bool,
}

/// Takes the writer's SQLite connection from `pool`: for a database file, its own connection
/// to the file (`direct.rs`; with `sync_apart` it commits without syncing when it can); for an
/// in-memory database, the pool's, set up the same way.
async fn take_sqlite(pool: &sqlx::SqlitePool, sync_apart: bool) -> Result<Held, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    if let Some(file) = FileDb::of(&mut conn).await? {
        return Ok(Held::Direct(Direct::open(&file, sync_apart)?));
    }
    sqlx::raw_sql(&writer_pragmas()).execute(&mut *conn).await?;
    Ok(Held::Sqlite(conn))
}

/// What the writer's own SQLite connection sets on top of the pool's settings, whichever
/// driver holds it: its commits no longer checkpoint (`checkpoint_loop` does, off this path);
/// when the log is rewound its file is cut back to `WAL_LIMIT_BYTES` (the disk a burst took is
/// given back); room for the pages a full batch dirties (`WRITER_CACHE_PRAGMA`).
fn writer_pragmas() -> String {
    format!(
        "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}; \
         {WRITER_CACHE_PRAGMA};"
    )
}

/// Evaluates `$body` with `$conn` bound to the writer's sqlx connection, once per backend,
/// like `with_pool!`: a PostgreSQL connection taken from the pool if none is held, or the
/// in-memory SQLite one `batch::attempt` took (a file's is written through `direct.rs`).
macro_rules! with_writer_conn {
    ($backend:expr, $writer:expr, |$conn:ident| $body:expr) => {
        match $backend {
            Backend::Sqlite(_) => {
                let Held::Sqlite($conn) = &mut $writer.held else {
                    unreachable!("taken by `attempt` before it comes here")
                };
                $body
            }
            Backend::Postgres(pool) => {
                if !matches!($writer.held, Held::Postgres(_)) {
                    let mut conn = pool.acquire().await.map_err(AttemptError::Batch)?;
                    conn.close_on_drop();
                    $writer.held = Held::Postgres(conn);
                }
                let Held::Postgres($conn) = &mut $writer.held else {
                    unreachable!("set just above")
                };
                $body
            }
        }
    };
}

// After `with_writer_conn!`, which `batch` uses.
mod batch;

/// The writer's SQLite page cache: 16 MiB (SQLite's default is 2000 KiB). A batch touches
/// about one page per room for each of the `(room, seq)` and `client_msg_id` indexes, plus the
/// table's; at 8192 messages over 1024 rooms that is more than the default cache holds, so
/// SQLite has to evict, spill or re-read pages within a batch. Measured through the server
/// (`roomcast-loadgen history`, 1024 publishers × 1024 rooms, two runs each): 2000 KiB
/// 40.5-42.9k persisted msg/s, 16 MiB 49.8-50.0k, 32 MiB 46.8-49.2k, 64 MiB 46.0-47.6k. It is a
/// limit, not an allocation: the cache grows only as pages are used.
const WRITER_CACHE_PRAGMA: &str = "PRAGMA cache_size = -16384";

/// Store work that takes this long or longer is logged at debug: a batch (its statements and
/// commit; every message in it waited that long before its broadcast and ack) and a WAL
/// checkpoint (from asking for a connection to the answer; it holds no message, but its disk
/// writes compete with the commits').
pub(super) const SLOW_TO_LOG: Duration = Duration::from_millis(50);

/// Resolves once the writer has stopped; to an error if it panicked.
pub(crate) type Stopped = oneshot::Receiver<()>;

/// Starts the writer (see [`run`]) on a thread of its own, in a single-threaded Tokio runtime.
///
/// A batch is a chain of statements, on PostgreSQL each a round trip to the server (on a
/// SQLite file, calls on this thread: `direct.rs`), and the writer must be polled again after
/// each one before it can send the next. As a task of the caller's runtime it waited in the run queue
/// behind whatever else was ready there (in `roomcast serve`, a thousand connections' tasks)
/// once per statement, and every message waits for the writer. On its own thread it runs as
/// soon as an answer comes. Measured with `roomcast-loadgen history`, SQLite on disk, seven
/// alternating runs each, median persisted msg/s: 43.0k -> 48.1k at 256 publishers × 8 rooms
/// (faster in all seven pairs), 45.1k -> 46.7k at 1024 × 1024.
///
/// The answering task (the callers' hooks and replies) and the SQLite checkpointer stay on the
/// caller's runtime: a hook is the caller's code, and on the writer's thread it would run
/// between the writer's statements. Must be called inside a Tokio runtime.
pub(crate) async fn start(
    backend: Backend,
    append_rx: mpsc::Receiver<AppendRequest>,
    shutdown: Arc<Notify>,
    settings: Settings,
    after_batch: Arc<OnceLock<AfterBatch>>,
) -> std::io::Result<Stopped> {
    let caller = tokio::runtime::Handle::current();
    let span = tracing::info_span!("store_writer", backend = backend.name());
    let (started_tx, started_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("roomcast-writer".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = started_tx.send(Err(err));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            let writer = run(caller, backend, append_rx, shutdown, settings, after_batch);
            runtime.block_on(writer.instrument(span));
            let _ = stopped_tx.send(());
        })?;
    match started_rx.await {
        Ok(started) => started.map(|()| stopped_rx),
        Err(_) => Err(std::io::Error::other(
            "the store writer's thread ended at start",
        )),
    }
}

/// Runs the writer until the queue is closed (`close`, or every `Store` clone dropped) and
/// drained. Every request received is answered, and the after-batch callback runs after each
/// batch's hooks. The answering task and the checkpointer are spawned on `caller`.
async fn run(
    caller: tokio::runtime::Handle,
    backend: Backend,
    mut append_rx: mpsc::Receiver<AppendRequest>,
    shutdown: Arc<Notify>,
    settings: Settings,
    after_batch: Arc<OnceLock<AfterBatch>>,
) {
    let Settings {
        max_batch,
        commit_interval,
        sync_apart,
        unsynced_capacity,
        metrics,
    } = settings;
    let sql = BatchSql::for_backend(&backend);
    // Set by `checkpoint_loop` when the WAL should start over; see there.
    let rewind = Arc::new(AtomicBool::new(false));
    let checkpointer = match &backend {
        Backend::Sqlite(pool) => {
            Some(caller.spawn(checkpoint_loop(pool.clone(), Arc::clone(&rewind))))
        }
        Backend::Postgres(_) => None,
    };
    let mut writer = WriterConn {
        held: Held::None,
        sync_apart: false,
    };
    let mut keys = Keys::InsertFirst;
    let mut batch = Vec::with_capacity(max_batch);
    // When the next batch may start, if it is to wait (`commit_interval`).
    let mut spaced_until: Option<Instant> = None;
    // Hooks and replies run on their own task, in batch order, while the next batch is being
    // written: in `roomcast serve` the hooks broadcast and ack every message, which took as
    // long as the commit itself, and the writer waited for them. One batch may wait to be
    // answered while another is written (the channel's bound), so memory stays bounded.
    let (answer_tx, answer_rx) = mpsc::channel::<Answer>(1);
    let answerer = caller.spawn(answer::run(answer_rx, Arc::clone(&after_batch)));
    // SQLite commits made durable apart from the writer (`sync.rs`), when asked for.
    let sqlite = matches!(backend, Backend::Sqlite(_));
    let syncer = if sync_apart && sqlite {
        match Syncer::start(answer_tx.clone(), metrics.sync.clone(), unsynced_capacity) {
            Ok(syncer) => Some(syncer),
            Err(err) => {
                tracing::warn!(error = %err, "no syncer thread: commits sync as they go");
                None
            }
        }
    } else {
        None
    };
    writer.sync_apart = syncer.is_some();
    let mut written_batches: u64 = 0;
    loop {
        let received = tokio::select! {
            // Appends are waiting: take all of them, up to `max_batch`. 0 means closed and empty.
            received = append_rx.recv_many(&mut batch, max_batch) => received,
            // `close`: refuse new appends; the arm above still drains what is queued.
            () = shutdown.notified() => {
                append_rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        // Several senders at once (the last batch held more than one message): let this batch
        // fill until `commit_interval` after the last one started, then take what came.
        if let Some(due) = spaced_until
            && batch.len() < max_batch
            && Instant::now() < due
        {
            tokio::time::sleep_until(due).await;
            while batch.len() < max_batch {
                match append_rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        spaced_until = (batch.len() > 1).then(|| Instant::now() + commit_interval);
        let (pending, waiters): (Vec<Pending>, Vec<Waiter>) = batch
            .drain(..)
            .map(|request| (request.pending, request.waiter))
            .unzip();
        let started = Instant::now();
        let outcomes = write_batch(&backend, &mut writer, &mut keys, &sql, &pending).await;
        let took = started.elapsed();
        metrics.commit.observe(took.as_secs_f64());
        metrics.batch.observe(pending.len() as f64);
        if took >= SLOW_TO_LOG {
            tracing::debug!(
                ms = took.as_millis() as u64,
                messages = pending.len(),
                "slow batch"
            );
        }
        let resolved = Resolved::new(pending, waiters, outcomes);
        let unsynced = match (&writer.held, &syncer) {
            (Held::Direct(direct), Some(syncer)) => {
                direct.wal().map(|wal| (Arc::clone(wal), syncer))
            }
            _ => None,
        };
        match unsynced {
            None => {
                if let Err(mpsc::error::SendError(answer)) =
                    answer_tx.send(Answer::Durable(resolved)).await
                    && let Answer::Durable(resolved) = answer
                {
                    // The answering task is gone (it panicked): answer here rather than lose
                    // replies.
                    answer::answer_here(resolved, &after_batch);
                }
            }
            Some((wal, syncer)) => {
                written_batches += 1;
                let messages = resolved.len();
                let number = written_batches;
                if let Err(mpsc::error::SendError(answer)) =
                    answer_tx.send(Answer::Written(number, resolved)).await
                    && let Answer::Written(_, mut resolved) = answer
                {
                    if let Err(err) = wal.sync_data() {
                        resolved.fail(&Arc::new(err));
                    }
                    answer::answer_here(resolved, &after_batch);
                } else if let Err(wal) = syncer.sync(number, wal, messages).await {
                    // The syncer is gone (it panicked): sync here, and answer through the
                    // answering task, after the batch's written hooks.
                    let synced = wal.sync_data().map_err(Arc::new);
                    let _ = answer_tx.send(Answer::Synced(number, synced)).await;
                }
            }
        }
        if rewind.swap(false, Ordering::Relaxed) {
            // Between two batches nothing is appended, so this copies every frame no reader
            // still needs and the next batch rewinds the log.
            let started = Instant::now();
            let checkpointed = match &mut writer.held {
                Held::Direct(direct) => direct.passive_checkpoint(),
                Held::Sqlite(conn) => passive_checkpoint(&mut **conn).await,
                Held::None | Held::Postgres(_) => Ok((0, 0)),
            };
            match checkpointed {
                Ok((log, copied)) => tracing::debug!(
                    log,
                    copied,
                    ms = started.elapsed().as_millis() as u64,
                    "WAL caught up to rewind"
                ),
                Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed"),
            }
        }
    }
    if let Some(syncer) = syncer {
        // Every batch committed is synced and answered before the connection closes.
        syncer.stop();
    }
    writer.held.close().await;
    if let Some(checkpointer) = checkpointer {
        // Its connection goes back to the pool, which `Store::close` closes next; SQLite
        // checkpoints what is left when the last connection closes.
        checkpointer.abort();
        let _ = checkpointer.await;
    }
    // Every batch written is answered before the writer reports itself stopped.
    drop(answer_tx);
    if let Err(err) = answerer.await {
        tracing::error!(error = %err, "the store's answering task failed");
    }
    tracing::debug!("store writer stopped");
}

/// How the writer batches, and where it reports.
pub(crate) struct Settings {
    /// Most appends in one transaction (`StoreOptions::max_batch`).
    pub(crate) max_batch: usize,
    /// Least time between the starts of two batches under load
    /// (`StoreOptions::commit_interval`).
    pub(crate) commit_interval: Duration,
    /// Whether SQLite commits are synced apart, after their written hooks
    /// (`StoreOptions::sqlite_hooks_before_sync`; `sync.rs`).
    pub(crate) sync_apart: bool,
    /// How many committed messages may wait for their sync at once.
    pub(crate) unsynced_capacity: usize,
    /// Commit times and batch sizes.
    pub(crate) metrics: WriterMetrics,
}
