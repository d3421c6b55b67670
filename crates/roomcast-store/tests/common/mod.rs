//! Runs one store test case against one backend, isolated from every other test.
//!
//! - SQLite: always; a fresh file in a temporary directory per test.
//! - PostgreSQL: when `DATABASE_URL` is set (to a `postgres://` URL); a fresh schema `t_<uuid>`
//!   per test, dropped afterwards even when the case panics. When `DATABASE_URL` is unset the
//!   PostgreSQL half prints a note and passes; when it is set but unreachable it fails.

use std::future::Future;
use std::time::Duration;

use roomcast_store::{Store, StoreOptions};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::SqliteConnection;
use tempfile::TempDir;

/// One test's database and the store open on it.
pub(crate) struct TestDb {
    /// The store under test.
    pub(crate) store: Store,
    /// Where the store lives, to reopen it.
    url: String,
    /// The options it was opened with (the PostgreSQL schema), to reopen it.
    options: StoreOptions,
    /// Keeps the SQLite file's directory until the test ends.
    _dir: Option<TempDir>,
}

impl TestDb {
    /// Drops the store without closing it, as a crash would, and opens the same database again.
    pub(crate) async fn reopen(&mut self) {
        let reopened = Store::connect_with(&self.url, self.options.clone())
            .await
            .expect("reopening the test database");
        // Replacing the field drops the old store: its writer exits once its queue is empty.
        self.store = reopened;
    }

    /// Opens a second store on the same database, with `commit_interval`.
    pub(crate) async fn open_with_commit_interval(&self, commit_interval: Duration) -> Store {
        let options = StoreOptions {
            commit_interval,
            ..self.options.clone()
        };
        Store::connect_with(&self.url, options)
            .await
            .expect("a second store on the test database")
    }

    /// Holds the database's write lock (SQLite) or the `rooms` table lock (PostgreSQL) until the
    /// returned guard is released, so appends queue up behind the writer and form one batch.
    pub(crate) async fn hold_writes(&self) -> WriteHold {
        if !self.is_postgres() {
            let mut conn = SqliteConnection::connect(&self.url)
                .await
                .expect("second SQLite connection");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("taking the SQLite write lock");
            WriteHold::Sqlite(conn)
        } else {
            let mut conn = PgConnection::connect_with(&self.pg_options())
                .await
                .expect("second PostgreSQL connection");
            sqlx::query("BEGIN")
                .execute(&mut conn)
                .await
                .expect("BEGIN");
            sqlx::query("LOCK TABLE rooms IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("locking rooms");
            WriteHold::Postgres(conn)
        }
    }

    /// Whether this test runs on PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        !self.url.starts_with("sqlite:")
    }

    /// Runs one statement on a connection of its own, e.g. to install a trigger.
    pub(crate) async fn execute(&self, statement: &str) {
        if self.is_postgres() {
            let mut conn = PgConnection::connect_with(&self.pg_options())
                .await
                .expect("second PostgreSQL connection");
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|err| panic!("{statement}: {err}"));
        } else {
            let mut conn = SqliteConnection::connect(&self.url)
                .await
                .expect("second SQLite connection");
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|err| panic!("{statement}: {err}"));
        }
    }

    fn pg_options(&self) -> PgConnectOptions {
        let schema = self
            .options
            .pg_schema
            .as_deref()
            .expect("a PostgreSQL test");
        self.url
            .parse::<PgConnectOptions>()
            .expect("DATABASE_URL parses")
            .options([("search_path", schema)])
    }
}

/// A connection holding a write lock; see [`TestDb::hold_writes`].
pub(crate) enum WriteHold {
    /// In `BEGIN IMMEDIATE`.
    Sqlite(SqliteConnection),
    /// In a transaction holding `LOCK TABLE rooms`.
    Postgres(PgConnection),
}

impl WriteHold {
    /// Ends the transaction, letting the writer go on.
    pub(crate) async fn release(self) {
        match self {
            WriteHold::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("ROLLBACK");
            }
            WriteHold::Postgres(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("ROLLBACK");
            }
        }
    }
}

/// Runs `case` on a fresh SQLite file.
pub(crate) async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let options = StoreOptions::default();
    let store = Store::connect_with(&url, options.clone())
        .await
        .expect("opening a fresh SQLite store");
    case(TestDb {
        store,
        url,
        options,
        _dir: Some(dir),
    })
    .await;
}

/// Runs `case` in a fresh schema of the `DATABASE_URL` database, or skips with a note when
/// `DATABASE_URL` is unset (or names another backend).
pub(crate) async fn on_postgres<F, Fut>(name: &str, case: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
        Ok(_) | Err(_) => {
            eprintln!(
                "note: DATABASE_URL is not a postgres:// URL; skipping the PostgreSQL half of {name}"
            );
            return;
        }
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let options = StoreOptions {
        pg_schema: Some(schema.clone()),
        ..StoreOptions::default()
    };
    let store = Store::connect_with(&url, options.clone())
        .await
        .unwrap_or_else(|err| panic!("DATABASE_URL is set but the store cannot open it: {err}"));
    let db = TestDb {
        store,
        url: url.clone(),
        options,
        _dir: None,
    };
    // On its own task, so a failing case still reaches the cleanup below.
    let outcome = tokio::spawn(case(db)).await;

    let mut conn = PgConnection::connect(&url)
        .await
        .expect("connecting to drop the test schema");
    // The schema name is ours (`t_` and hex digits), not input.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .expect("dropping the test schema");
    match outcome {
        Ok(()) => {}
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("{name} did not finish: {err}"),
    }
}

/// Declares each listed case of `cases` as a test on SQLite and one on PostgreSQL:
/// `sqlite::<case>` and `postgres::<case>`.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::common::on_sqlite($crate::cases::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::common::on_postgres(stringify!($case), $crate::cases::$case).await;
                }
            )*
        }
    };
}
