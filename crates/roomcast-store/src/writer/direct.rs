//! The writer's own connection to a SQLite database file, driven from the writer's thread.
//!
//! Through sqlx, every statement of a batch is a round trip to the connection's driver thread:
//! the writer sends the statement, sleeps, and is woken with the answer. A batch of one message
//! (a light load: `BEGIN`, the rooms' counters, the `INSERT`, the counters' `UPDATE`, `COMMIT`)
//! was five round trips and ten thread switches; measured at 50 msg/s into a room of 1000,
//! 0.45 ms from the batch's start to its commit, most of it those switches, and every message
//! waited for it before its broadcast. Here the writer's thread calls SQLite itself
//! (`rusqlite`, over the same libsqlite3 as sqlx's pool), so a batch runs without a switch.
//!
//! Only for a database file: an in-memory database (`sqlite::memory:`) lives in sqlx's
//! shared cache under a name of its own, and keeps the sqlx connection. The statements are
//! the same text as sqlx's ([`BatchSql`]), bound the same way (anonymous `?` in order, NULL
//! rows padding a chunk); the plan of each unit is the shared one ([`plan_unit`]).

use std::borrow::Cow;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, Row};
use sqlx::SqliteConnection;
use sqlx::error::{DatabaseError, ErrorKind};

use super::batch::{
    AttemptError, ItemOutcome, Keys, LockedRoom, UnitError, known_key, plan_unit, room_counters,
    sorted_rooms, to_json, unit_keys,
};
use super::sql::BatchSql;
use super::{Pending, writer_pragmas};
use crate::records::MessageRow;
use crate::store::SQLITE_BUSY_TIMEOUT;

/// Prepared statements the connection keeps: the transaction's edges, the lock and the
/// counters' update, and up to 11 sizes each of the INSERT and the key look-up (`sql.rs`).
/// rusqlite's default is 16.
const STATEMENT_CACHE: usize = 32;

/// A database file as the pool opened it, read from one of the pool's connections.
pub(super) struct FileDb {
    path: PathBuf,
    /// The pool's `synchronous` (0 OFF … 3 EXTRA): the writer's connection commits the same
    /// way, unless its commits are synced apart.
    synchronous: i64,
    /// Whether the file is in WAL mode (the store sets it; a file another program switched
    /// back keeps its commits synced as they go).
    wal_mode: bool,
}

impl FileDb {
    /// The file behind `conn`, or `None` for an in-memory database.
    pub(super) async fn of(conn: &mut SqliteConnection) -> Result<Option<FileDb>, sqlx::Error> {
        let databases: Vec<(i64, String, String)> = sqlx::query_as("PRAGMA database_list")
            .fetch_all(&mut *conn)
            .await?;
        let Some((_, _, path)) = databases.into_iter().find(|(_, name, _)| name == "main") else {
            return Ok(None);
        };
        if path.is_empty() {
            return Ok(None);
        }
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Some(FileDb {
            path: PathBuf::from(path),
            synchronous,
            wal_mode: mode.eq_ignore_ascii_case("wal"),
        }))
    }
}

/// The writer's connection to a database file.
pub(super) struct Direct {
    conn: Connection,
    /// The WAL, when commits are synced apart (`sync.rs`): this connection commits with
    /// `synchronous=NORMAL` and the syncer syncs this file before the batch is answered.
    wal: Option<Arc<File>>,
}

impl Direct {
    /// Opens `db` for the writer, set up as the pool's connections are (busy timeout, foreign
    /// keys, temporary files in memory) and as the writer's own ([`writer_pragmas`]). With
    /// `sync_apart` and a file in WAL mode, commits are not synced here: [`Direct::wal`] is
    /// the log to sync.
    pub(super) fn open(db: &FileDb, sync_apart: bool) -> Result<Direct, sqlx::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&db.path, flags).map_err(to_sqlx)?;
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(to_sqlx)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // The pool's own settings first (sqlx sets them on its connections), then the writer's.
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; {}",
            writer_pragmas()
        ))
        .map_err(to_sqlx)?;
        let wal = if sync_apart && db.wal_mode {
            // A read opens the log (SQLite creates it then if no connection had), and the
            // handle is kept no longer than the connection: SQLite removes the file only when
            // the database's last connection closes, so it always names the log written here.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                .map_err(to_sqlx)?;
            let log = format!("{}-wal", db.path.display());
            match File::open(&log) {
                Ok(file) => Some(Arc::new(file)),
                Err(err) => {
                    tracing::warn!(error = %err, log, "cannot open the SQLite WAL: commits sync as they go");
                    None
                }
            }
        } else {
            None
        };
        let synchronous = if wal.is_some() { 1 } else { db.synchronous };
        conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}"))
            .map_err(to_sqlx)?;
        Ok(Direct { conn, wal })
    }

    /// The log the syncer syncs after each commit, when commits are synced apart.
    pub(super) fn wal(&self) -> Option<&Arc<File>> {
        self.wal.as_ref()
    }

    /// A passive checkpoint (`checkpoint.rs`): the frames in the log, and how many are now in
    /// the database.
    pub(super) fn passive_checkpoint(&mut self) -> Result<(i64, i64), sqlx::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(1)?, row.get(2)?))
            })
            .map_err(to_sqlx)
    }

    /// `batch::attempt` on this connection: `units` of `batch` in one transaction.
    pub(super) fn attempt(
        &mut self,
        keys: Keys,
        sql: &BatchSql,
        batch: &[Pending],
        units: &[Vec<usize>],
        created_at: i64,
    ) -> Result<(Vec<(usize, ItemOutcome)>, bool), AttemptError> {
        let mut written = Vec::with_capacity(batch.len());
        let mut found_retries = false;
        self.run("BEGIN IMMEDIATE")
            .map_err(|err| AttemptError::Batch(to_sqlx(err)))?;
        for (unit_index, unit) in units.iter().enumerate() {
            match self.write_unit(keys, sql, batch, unit, created_at) {
                Ok((outcomes, retries)) => {
                    written.extend(outcomes);
                    found_retries |= retries;
                }
                Err(err) => {
                    // Whatever the rollback says, the next attempt starts a fresh transaction.
                    let _ = self.run("ROLLBACK");
                    return Err(match err {
                        UnitError::Statement(err) => AttemptError::Unit(unit_index, err),
                        UnitError::KnownKey => AttemptError::KnownKey,
                    });
                }
            }
        }
        if let Err(err) = self.run("COMMIT") {
            let _ = self.run("ROLLBACK");
            return Err(AttemptError::Batch(to_sqlx(err)));
        }
        Ok((written, found_retries))
    }

    /// Runs a statement without parameters or rows, prepared once (a transaction's edges:
    /// parsing them again for every batch was 6% of the writer's time).
    fn run(&self, statement: &str) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(statement)?.execute([])
    }

    /// One unit's statements, inside the attempt's transaction: its outcomes, and whether the
    /// keys looked up found retries.
    fn write_unit(
        &mut self,
        keys: Keys,
        sql: &BatchSql,
        batch: &[Pending],
        unit: &[usize],
        created_at: i64,
    ) -> Result<(Vec<(usize, ItemOutcome)>, bool), UnitError> {
        let conn = &self.conn;
        let locked: Vec<LockedRoom> = {
            let mut statement = conn.prepare_cached(sql.lock_rooms).map_err(unit_err)?;
            let rows = statement
                .query_map([to_json(&sorted_rooms(batch, unit))], |row| {
                    Ok(LockedRoom {
                        name: row.get(0)?,
                        id: row.get(1)?,
                        last_seq: row.get(2)?,
                    })
                })
                .map_err(unit_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(unit_err)?
        };
        let counters = room_counters(&locked);
        let mut originals = Vec::new();
        let look_up = unit_keys(keys, batch, unit, &counters);
        for (chunk, taken) in sql.find_originals.chunks(&look_up) {
            let mut statement = conn.prepare_cached(chunk.statement).map_err(unit_err)?;
            for slot in 0..chunk.slots {
                // Past the chunk's keys: NULL padding, which matches no message.
                let key = taken.get(slot);
                let at = slot * 3;
                statement
                    .raw_bind_parameter(at + 1, key.map(|k| k.room_id))
                    .and_then(|()| statement.raw_bind_parameter(at + 2, key.map(|k| k.user_id)))
                    .and_then(|()| {
                        statement.raw_bind_parameter(at + 3, key.map(|k| k.client_msg_id))
                    })
                    .map_err(unit_err)?;
            }
            let mut rows = statement.raw_query();
            while let Some(row) = rows.next().map_err(unit_err)? {
                originals.push(message_row(row).map_err(unit_err)?.into_message()?);
            }
        }
        let found_retries = !originals.is_empty();
        let plan = plan_unit(batch, unit, &locked, counters, originals);
        if !plan.inserts.is_empty() {
            for (chunk, taken) in sql.insert.chunks(&plan.inserts) {
                let mut statement = conn.prepare_cached(chunk.statement).map_err(unit_err)?;
                for slot in 0..chunk.slots {
                    // Past the chunk's rows: NULL padding, which the INSERT skips.
                    let row = taken.get(slot);
                    let at = slot * 9;
                    let mut bind = |column: usize, value: &dyn rusqlite::ToSql| {
                        statement.raw_bind_parameter(at + column, value)
                    };
                    bind(1, &row.map(|r| r.room_id))
                        .and_then(|()| bind(2, &row.map(|r| r.seq)))
                        .and_then(|()| bind(3, &row.map(|r| r.id.0.as_str())))
                        .and_then(|()| bind(4, &row.map(|r| r.user_id)))
                        .and_then(|()| bind(5, &row.map(|r| r.username)))
                        .and_then(|()| bind(6, &row.map(|r| r.content)))
                        .and_then(|()| bind(7, &row.and_then(|r| r.data)))
                        .and_then(|()| bind(8, &row.and_then(|r| r.client_msg_id)))
                        .and_then(|()| bind(9, &row.map(|_| created_at)))
                        .map_err(unit_err)?;
                }
                let inserted = statement.raw_execute().map_err(unit_err)?;
                if inserted < chunk.rows {
                    return Err(known_key(keys));
                }
            }
            conn.prepare_cached(sql.update_counters)
                .and_then(|mut statement| statement.execute([to_json(&plan.counters)]))
                .map_err(unit_err)?;
        }
        Ok((plan.outcomes(created_at), found_retries))
    }
}

/// A row of `MESSAGE_COLUMNS`, in their order.
fn message_row(row: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: row.get(0)?,
        room: row.get(1)?,
        seq: row.get(2)?,
        user_id: row.get(3)?,
        username: row.get(4)?,
        content: row.get(5)?,
        data: row.get(6)?,
        client_msg_id: row.get(7)?,
        created_at: row.get(8)?,
    })
}

fn unit_err(err: rusqlite::Error) -> UnitError {
    UnitError::Statement(to_sqlx(err))
}

/// A rusqlite error as the store's errors carry database errors: as sqlx's, so that
/// `StoreError` keeps one driver error type and a constraint is still recognised as one.
pub(super) fn to_sqlx(err: rusqlite::Error) -> sqlx::Error {
    let message = err.to_string();
    sqlx::Error::Database(Box::new(DirectError { err, message }))
}

/// A rusqlite error behind sqlx's [`DatabaseError`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct DirectError {
    #[source]
    err: rusqlite::Error,
    message: String,
}

impl DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        match &self.err {
            rusqlite::Error::SqliteFailure(failure, _) => {
                Some(Cow::Owned(failure.extended_code.to_string()))
            }
            _ => None,
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        let rusqlite::Error::SqliteFailure(failure, _) = &self.err else {
            return ErrorKind::Other;
        };
        match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

    use super::*;

    async fn pool_conn(url: &str) -> SqliteConnection {
        let options: SqliteConnectOptions = url.parse().unwrap();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        SqliteConnection::connect_with(&options).await.unwrap()
    }

    fn pragma(direct: &Direct, name: &str) -> i64 {
        direct
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_file_is_opened_directly_and_memory_keeps_the_pool_connection() {
        let mut memory = pool_conn("sqlite::memory:").await;
        assert!(FileDb::of(&mut memory).await.unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let mut conn = pool_conn(&url).await;
        let file = FileDb::of(&mut conn).await.unwrap().expect("a file");
        assert!(file.wal_mode);
        assert_eq!(file.synchronous, 2, "FULL, as the pool set it");

        // Synced apart: NORMAL here, and the log kept for the syncer.
        let apart = Direct::open(&file, true).unwrap();
        assert!(apart.wal().is_some());
        assert_eq!(pragma(&apart, "synchronous"), 1);
        assert_eq!(pragma(&apart, "foreign_keys"), 1);
        assert_eq!(pragma(&apart, "wal_autocheckpoint"), 0);
        assert_eq!(pragma(&apart, "cache_size"), -16384);
        assert_eq!(pragma(&apart, "journal_size_limit"), 16 << 20);
        assert_eq!(pragma(&apart, "busy_timeout"), 5000);
        // Otherwise every commit syncs as the pool's do.
        let synced = Direct::open(&file, false).unwrap();
        assert!(synced.wal().is_none());
        assert_eq!(pragma(&synced, "synchronous"), 2);
    }

    #[test]
    fn constraint_errors_keep_their_kind_through_sqlx() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id)); \
             PRAGMA foreign_keys = ON; INSERT INTO parent VALUES (1);",
        )
        .unwrap();
        let kind = |sql: &str| match to_sqlx(conn.execute_batch(sql).unwrap_err()) {
            sqlx::Error::Database(db) => (db.kind(), db.message().to_owned()),
            other => panic!("not a database error: {other}"),
        };
        let (unique, message) = kind("INSERT INTO parent VALUES (1)");
        assert!(matches!(unique, ErrorKind::UniqueViolation), "{message}");
        assert!(message.contains("UNIQUE"), "{message}");
        let (foreign, _) = kind("INSERT INTO child VALUES (1, 2)");
        assert!(matches!(foreign, ErrorKind::ForeignKeyViolation));
        let (other, _) = kind("SELECT * FROM missing");
        assert!(matches!(other, ErrorKind::Other));
    }
}
