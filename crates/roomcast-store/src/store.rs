//! `Store`, the cheap-to-clone handle, and what it owns: the backend's connection pool, the
//! sender half of the writer task's queue, and the writer task itself. Also `StoreOptions`,
//! connecting by URL, migrations, and `close`.
//!
//! The operations live beside their tables (`users.rs`, `rooms.rs`, `messages.rs`) as further
//! `impl Store` blocks; they reach the pool through [`with_pool!`], which writes one body for
//! both backends. Message writes go through the writer task (`writer/`) over a bounded `mpsc`.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::{Notify, mpsc};

use crate::error::{Result, StoreError};
use crate::metrics::WriterMetrics;
use crate::writer::{self, AppendRequest};

/// The SQLite migration set, embedded at compile time.
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// The PostgreSQL migration set, embedded at compile time.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a SQLite connection waits for another connection's write lock before failing with
/// "database is locked". The group-commit writer holds the lock for one batch (milliseconds);
/// five seconds covers a slow disk's fsync with a wide margin and still fails visibly when
/// something holds the file for good.
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest the first PostgreSQL connection may take: a server on the local network answers in
/// milliseconds, one across the world in well under a second; ten seconds is a host that is
/// not there.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`Store::connect_with`]. `StoreOptions::default()` is what [`Store::connect`]
/// uses.
///
/// ```
/// use std::time::Duration;
/// use roomcast_store::StoreOptions;
///
/// // Commit as soon as the last commit is done, however busy the store is.
/// let options = StoreOptions { commit_interval: Duration::ZERO, ..StoreOptions::default() };
/// assert_eq!(options.max_batch, 8192);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// PostgreSQL only: keep every table in this schema (created if missing) by putting it
    /// first on each connection's `search_path`. Lets several stores, e.g. parallel tests, share
    /// one database. Must be a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes).
    /// Default `None`: the server's default `search_path` (normally `public`). Setting it with a
    /// SQLite URL is refused as [`StoreError::Invalid`].
    pub pg_schema: Option<String>,
    /// Most appends the writer commits in one transaction. Default 8192: under load one fsync
    /// (SQLite) or one round of commit latency (PostgreSQL) is shared by up to that many
    /// messages. What a commit costs grows with the pages it touches, about one index page per
    /// room for each of the `(room, seq)` and `client_msg_id` indexes whatever the number of
    /// messages, so with many busy rooms a bigger batch is cheaper per message: through the
    /// server, 1024 rooms with one publisher each went from ~30k to ~45-50k persisted
    /// messages/s between 2048 and 8192 (`roomcast-loadgen history`, docs/PERFORMANCE.md), with
    /// a lower p99 too. When idle a batch is one message: a bigger limit adds no latency. A
    /// full batch holds the write lock (SQLite) or its rooms' row locks (PostgreSQL) for
    /// ~50-90 ms on a 2-core machine.
    pub max_batch: usize,
    /// How many appends may wait for the writer before `append_message` itself waits
    /// (backpressure). Default 8192: a full batch waits while the one before it is written.
    /// Queued messages are held in memory: at most `queue_capacity + max_batch` of them.
    pub queue_capacity: usize,
    /// Shortest time from the start of one commit to the start of the next, while messages
    /// come from several senders at once. Default 5 ms. A batch that follows one of two or
    /// more messages waits out the rest of the interval, and the appends that arrive meanwhile
    /// join it: under steady traffic fewer, larger commits, each a fixed number of statements
    /// (on PostgreSQL, round trips to the server) and, in `roomcast serve`, one delivery
    /// to each member of the room instead of several. After a batch of one message nothing
    /// waits (like PostgreSQL's `commit_delay` with `commit_siblings`), so a lone client
    /// sending and awaiting one message at a time is not slowed. `Duration::ZERO` commits as
    /// soon as the last commit is done. Not bounded here (messages of concurrent senders wait
    /// up to this long); `roomcast serve` refuses more than 1 s (`ROOMCAST_COMMIT_INTERVAL`).
    pub commit_interval: Duration,
    /// When SQLite makes a commit durable; ignored on PostgreSQL. Default
    /// [`SqliteSync::Full`]: an acknowledged message survives power loss.
    pub sqlite_sync: SqliteSync,
    /// With [`SqliteSync::Full`] and a database file in WAL mode: run a batch's commit hooks
    /// (the `on_commit` of [`Store::append_message_with`], the `on_written` of
    /// [`Store::queue_message_written_then`]) as soon as it is committed, and sync the WAL on a
    /// thread of its own before its callers are answered. Default `true`.
    ///
    /// An answered (acknowledged) message is on disk exactly as with `false`: its WAL frames
    /// were synced before its answer. What a hook that broadcasts gains is the `fsync`: members
    /// see the message that much sooner (~1 ms on a quiet disk), and a disk that stalls a sync
    /// for hundreds of milliseconds holds the answers, not the broadcasts; the writer commits
    /// the next batches meanwhile, and one sync covers them all. What it gives up: if the
    /// *machine* (not the process) goes down between a commit and its sync, members may have
    /// seen a message that is then not in the history, and whose `seq` the room gives again to
    /// its next message; its sender was not answered. With `false` every hook waits for its
    /// commit's `fsync`. Ignored on PostgreSQL, with [`SqliteSync::Normal`] (no commit is
    /// synced) and for an in-memory database.
    ///
    /// ```
    /// let options = roomcast_store::StoreOptions {
    ///     sqlite_hooks_before_sync: false, // every broadcast waits for its fsync
    ///     ..Default::default()
    /// };
    /// assert_eq!(options.sqlite_sync, roomcast_store::SqliteSync::Full);
    /// ```
    pub sqlite_hooks_before_sync: bool,
}

/// When a SQLite commit reaches the disk (the `synchronous` pragma, in WAL mode).
///
/// What it costs, measured with the database on this project's VM disk: an `fsync` takes
/// ~1–4 ms (stalls of 100+ ms), and every group commit's messages wait for one before they
/// are acknowledged (and broadcast, with [`StoreOptions::sqlite_hooks_before_sync`] off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// `synchronous=FULL`: every commit's WAL frames are synced before its messages are
    /// acknowledged (and, with [`StoreOptions::sqlite_hooks_before_sync`] off, before they are
    /// broadcast); an acknowledged message survives a process crash, an OS crash and power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits are not synced, the WAL is synced at checkpoints (every
    /// 500 ms here). An acknowledged message survives a crash of the process (SIGKILL
    /// included): the WAL is in the OS's page cache. An OS crash or a power loss can lose the
    /// last commits (up to about a checkpoint's worth), messages clients have already seen and
    /// been acknowledged for; the database stays consistent, and a lost `seq` is given again
    /// to the next message of its room.
    Normal,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pg_schema: None,
            max_batch: 8192,
            queue_capacity: 8192,
            commit_interval: Duration::from_millis(5),
            sqlite_sync: SqliteSync::Full,
            sqlite_hooks_before_sync: true,
        }
    }
}

/// Handle to roomcast's persistent state: users, refresh tokens, rooms, messages.
///
/// Cloning is cheap (an `Arc`); every clone shares one connection pool and one writer task.
/// The backend is chosen by the URL given to [`Store::connect`].
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// What every `Store` clone shares.
struct Shared {
    /// The connection pool. The writer task holds a clone of it.
    backend: Backend,
    /// Appends go to the writer task through here. When the last `Store` clone is dropped the
    /// channel closes and the writer exits after finishing what is queued.
    append_tx: mpsc::Sender<AppendRequest>,
    /// Tells the writer to stop accepting appends, commit what is queued and exit (`close`).
    writer_shutdown: Arc<Notify>,
    /// The writer's end, taken and awaited by the first `close`.
    writer: Mutex<Option<writer::Stopped>>,
    /// Runs after each written batch's hooks ([`Store::after_each_batch`]).
    after_batch: Arc<OnceLock<writer::AfterBatch>>,
    /// The writer's commit times and batch sizes ([`Store::register_metrics`]).
    metrics: WriterMetrics,
}

/// The two backends. Their pools are reference-counted handles, so this is cheap to clone.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// An embedded SQLite file: one node.
    Sqlite(SqlitePool),
    /// A PostgreSQL database, possibly shared by several server processes.
    Postgres(PgPool),
}

/// Evaluates `$body` with `$pool` bound to the backend's pool, once per backend.
///
/// The body is written once but type-checked for each backend, so the same SQL (with `$1`-style
/// placeholders, which both SQLite and PostgreSQL accept) and the same binds serve both. The two
/// arms must produce the same type: map driver-specific results (`rows_affected`, rows) into
/// plain values inside the body.
macro_rules! with_pool {
    ($backend:expr, |$pool:ident| $body:expr) => {
        match $backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

impl Store {
    /// Connects with [`StoreOptions::default()`]; see [`Store::connect_with`].
    ///
    /// # Errors
    ///
    /// As [`Store::connect_with`].
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// Opens the database named by `url`, brings its schema up to date and starts the writer
    /// task.
    ///
    /// - `sqlite://path` (or `sqlite:path`): the file is created if missing, in WAL mode (readers
    ///   do not block the writer), `synchronous=FULL` (a committed message survives power loss;
    ///   [`StoreOptions::sqlite_sync`] can trade that for an fsync less per commit),
    ///   foreign keys on, and a 5 s busy timeout. The writer keeps one connection for itself,
    ///   and a background task checkpoints the WAL every 500 ms instead of the writer's commits;
    ///   once the log passes 16 MiB the writer lets it catch up between two batches, so it
    ///   starts over (and its file is cut back to 16 MiB) even under steady writes.
    /// - `postgres://…` or `postgresql://…`: any URL `libpq` would take.
    ///
    /// An unreachable server fails at once with the driver's reason (e.g. "Connection
    /// refused"), or after 10 s when its address does not answer at all: there is no retry
    /// loop here, so a supervisor that restarts the process, or the
    /// caller, decides how long to wait for the database.
    ///
    /// Must be called inside a Tokio runtime: the writer's answering task runs on it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for another URL scheme or bad options; [`StoreError::Backend`] when
    /// the database cannot be reached or opened, or a migration fails.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store> {
        if options.max_batch == 0 || options.queue_capacity == 0 {
            return Err(StoreError::Invalid(
                "max_batch and queue_capacity must be at least 1".to_owned(),
            ));
        }
        let backend = if url.starts_with("sqlite:") {
            if options.pg_schema.is_some() {
                return Err(StoreError::Invalid(
                    "pg_schema applies only to PostgreSQL URLs".to_owned(),
                ));
            }
            Backend::Sqlite(connect_sqlite(url, options.sqlite_sync).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(connect_postgres(url, options.pg_schema.as_deref()).await?)
        } else {
            // Only the scheme is echoed: the rest of a URL may hold a password.
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(StoreError::Invalid(format!(
                "unsupported database URL scheme {scheme:?}: expected sqlite:// or postgres://"
            )));
        };

        let (append_tx, append_rx) = mpsc::channel(options.queue_capacity);
        let writer_shutdown = Arc::new(Notify::new());
        let after_batch = Arc::new(OnceLock::new());
        let metrics = WriterMetrics::default();
        let writer = writer::start(
            backend.clone(),
            append_rx,
            Arc::clone(&writer_shutdown),
            writer::Settings {
                max_batch: options.max_batch,
                commit_interval: options.commit_interval,
                sync_apart: options.sqlite_hooks_before_sync
                    && options.sqlite_sync == SqliteSync::Full,
                unsynced_capacity: options.queue_capacity + options.max_batch,
                metrics: metrics.clone(),
            },
            Arc::clone(&after_batch),
        )
        .await
        .map_err(sqlx::Error::Io)?;
        Ok(Store {
            shared: Arc::new(Shared {
                backend,
                append_tx,
                writer_shutdown,
                writer: Mutex::new(Some(writer)),
                after_batch,
                metrics,
            }),
        })
    }

    pub(crate) fn writer_metrics(&self) -> &WriterMetrics {
        &self.shared.metrics
    }

    /// Registers `after` to run on the writer's answering task once every hook of a written
    /// batch has run (the hooks of [`Store::queue_message_then`] and the like, in batch order).
    /// A hook can leave work for it, to be done once per group commit rather than once per
    /// message: the chat server's hooks collect each commit's messages, and `after` broadcasts
    /// them together. Where commit hooks run before the sync
    /// ([`StoreOptions::sqlite_hooks_before_sync`]) it runs after each of the two steps: once
    /// after a batch's commit hooks, and once after the answers of the batches a sync covered.
    /// Like a hook it must be quick and must not block; a panic in it is caught and logged. One
    /// per store: returns false, and drops `after`, when one is registered.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> roomcast_store::Result<()> {
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let store = roomcast_store::Store::connect("sqlite::memory:").await?;
    /// let batches = Arc::new(AtomicUsize::new(0));
    /// let counter = Arc::clone(&batches);
    /// assert!(store.after_each_batch(move || {
    ///     counter.fetch_add(1, Ordering::Relaxed);
    /// }));
    /// assert!(!store.after_each_batch(|| {}), "one per store");
    /// # Ok(()) }
    /// ```
    pub fn after_each_batch(&self, after: impl Fn() + Send + Sync + 'static) -> bool {
        self.shared.after_batch.set(Box::new(after)).is_ok()
    }

    /// Whether the database answers: one trivial query (`SELECT 1`) through the pool, for a
    /// readiness check. Bound it with a timeout: a pool whose connections are all busy, or a
    /// database that stopped answering, makes it wait (up to the pool's 30 s acquire timeout).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> roomcast_store::Result<()> {
    /// let store = roomcast_store::Store::connect("sqlite::memory:").await?;
    /// store.ping().await?;
    /// store.close().await;
    /// assert!(store.ping().await.is_err(), "a closed store does not answer");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database cannot be reached or the store is closed.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(&self.shared.backend, |pool| {
            sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        self.shared.backend.name()
    }

    /// Commits every queued append, stops the writer task and closes the pool.
    ///
    /// Appends after (or racing with) `close` fail with [`StoreError::Closed`]; every append
    /// accepted before it is committed and answered first. Other operations fail with
    /// [`StoreError::Backend`] (`PoolClosed`). Closing twice is harmless.
    pub async fn close(&self) {
        self.shared.writer_shutdown.notify_one();
        // Lock scope: only to take the handle; the guard is gone before the await.
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer
            && let Err(err) = writer.await
        {
            // Only a panic can end the writer early; it is a bug, and this is where it surfaces.
            tracing::error!(error = %err, "the store writer panicked");
        }
        with_pool!(&self.shared.backend, |pool| pool.close().await);
    }

    /// The backend, for the operation modules.
    pub(crate) fn backend(&self) -> &Backend {
        &self.shared.backend
    }

    /// The writer queue's sender, for `append_message`.
    pub(crate) fn append_tx(&self) -> &mpsc::Sender<AppendRequest> {
        &self.shared.append_tx
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.shared.backend.name())
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// The backend's short name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The statement that opens a write transaction.
    ///
    /// SQLite's plain `BEGIN` is deferred: a transaction that reads before it writes may fail
    /// with "database is locked" at once, without waiting out the busy timeout, when another
    /// connection wrote in between. `BEGIN IMMEDIATE` takes the write lock up front, where the
    /// busy timeout applies. PostgreSQL locks rows as it goes and needs nothing special.
    pub(crate) fn write_begin(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "BEGIN IMMEDIATE",
            Backend::Postgres(_) => "BEGIN",
        }
    }
}

/// Opens (creating if needed) and migrates a SQLite file.
async fn connect_sqlite(url: &str, sync: SqliteSync) -> Result<SqlitePool> {
    let connect_options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        // FULL is sqlx's default, stated because durability depends on it: in WAL mode FULL
        // syncs the WAL at every commit, so an acknowledged message survives power loss (the
        // writer's own connection commits with NORMAL and has the WAL synced before answering,
        // `writer/sync.rs`). NORMAL (opt-in, `SqliteSync::Normal`) survives only a process
        // crash, for ~20% more throughput and an fsync less before each commit's ack.
        .synchronous(match sync {
            SqliteSync::Full => SqliteSynchronous::Full,
            SqliteSync::Normal => SqliteSynchronous::Normal,
        })
        // Temporary files in memory. The one that matters is the statement journal: a
        // multi-row INSERT inside a transaction that already wrote keeps one, to undo just that
        // statement if it fails, and SQLite spills it to a temporary file past 64 KiB. Writing
        // that file cost ~20% of the writer's throughput at batches of ~130 messages
        // (`tests/throughput.rs`, 256 senders). It is never read after a crash (the WAL is what
        // recovers), so keeping it in memory changes nothing about durability.
        .pragma("temp_store", "memory");
    // One direct connection first: it reports at once why the file cannot be opened (see
    // `connect_postgres`), and it creates the file and switches it to WAL.
    SqliteConnection::connect_with(&connect_options)
        .await?
        .close()
        .await?;
    let pool = SqlitePoolOptions::new()
        .connect_with(connect_options)
        .await?;
    SQLITE_MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Connects to PostgreSQL, creates and selects `schema` if given, and migrates.
async fn connect_postgres(url: &str, schema: Option<&str>) -> Result<PgPool> {
    let mut connect_options = PgConnectOptions::from_str(url)?;
    if let Some(schema) = schema {
        check_schema_name(schema)?;
        // A startup option, so every connection the pool ever opens gets it, before any query.
        connect_options = connect_options.options([("search_path", schema)]);
    }
    // One direct connection first, for the schema. A pool retries a refused connection until
    // its 30 s acquire timeout and then reports only "pool timed out"; this fails at once and
    // says why ("Connection refused", "password authentication failed").
    // Bounded: an address that drops packets (a firewall, a host that is down) would
    // otherwise wait out the system's TCP connect timeout, minutes on Linux.
    let mut conn = tokio::time::timeout(
        POSTGRES_CONNECT_TIMEOUT,
        PgConnection::connect_with(&connect_options),
    )
    .await
    .map_err(|_| {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {POSTGRES_CONNECT_TIMEOUT:?}"),
        ))
    })??;
    if let Some(schema) = schema {
        // An identifier cannot be a bind parameter; `check_schema_name` allowed only
        // `[A-Za-z_][A-Za-z0-9_]*`, and it is quoted, so this formats no untrusted SQL.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        sqlx::query(&create).execute(&mut conn).await?;
    }
    conn.close().await?;
    let pool = PgPoolOptions::new().connect_with(connect_options).await?;
    POSTGRES_MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Accepts a plain PostgreSQL identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes (the
/// server's `NAMEDATALEN - 1`).
fn check_schema_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "pg_schema {schema:?} must match [A-Za-z_][A-Za-z0-9_]* and be at most 63 bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::NewMessage;

    fn assert_send<T: Send>(_: &T) {}

    /// The server calls the store from spawned tasks: every future it hands out must be `Send`.
    /// Never run; it only has to compile.
    #[allow(dead_code)]
    async fn store_futures_are_send(store: Store, message: NewMessage) {
        assert_send(&Store::connect("sqlite://x.db"));
        assert_send(&store.close());
        assert_send(&store.ping());
        assert_send(&store.create_user("u", "n", None));
        assert_send(&store.ensure_user("u", "n"));
        assert_send(&store.user_by_id("u"));
        assert_send(&store.user_by_username("n"));
        assert_send(&store.user_exists("u"));
        assert_send(&store.insert_refresh_token("j", "u", 0));
        assert_send(&store.consume_refresh_token("j"));
        assert_send(&store.revoke_refresh_token("j"));
        assert_send(&store.revoke_user_refresh_tokens("u"));
        assert_send(&store.refresh_token("j"));
        assert_send(&store.create_room("r", false, None));
        assert_send(&store.room("r"));
        assert_send(&store.list_rooms());
        assert_send(&store.add_member("r", "u"));
        assert_send(&store.is_member("r", "u"));
        assert_send(&store.append_message(message.clone()));
        assert_send(&store.append_message_with(message, |_| {}));
        assert_send(&store.history("r", None, 1));
        assert_send(&store.messages_since("r", crate::Seq(0), 1));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("t_0123abc").is_ok());
        assert!(check_schema_name("_x").is_ok());
        assert!(check_schema_name("").is_err());
        assert!(check_schema_name("1abc").is_err());
        assert!(check_schema_name("a\"; DROP TABLE users; --").is_err());
        assert!(check_schema_name("a b").is_err());
        assert!(check_schema_name(&"a".repeat(64)).is_err());
    }
}
