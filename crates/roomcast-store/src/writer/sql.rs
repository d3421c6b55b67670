//! The SQL of a group commit, per backend, built once when the writer starts.
//!
//! Lists reach the database in one of two ways:
//!
//! - Per-room lists (the batch's rooms, their new counters), a handful of entries, go as one
//!   JSON array parameter, unpacked by `json_each` (SQLite) or `json_array_elements_text` /
//!   `json_to_recordset` (PostgreSQL): one fixed statement text whatever the count.
//! - Per-message lists (the idempotency keys to look up, the rows to insert), up to
//!   `max_batch` entries, go as bound values of a multi-row `VALUES` list ([`ValuesSql`]):
//!   chunks of 1024 rows, the last one padded with NULL rows up to a power of two. Unpacking
//!   them from JSON was the expensive part of a batch on SQLite: `json_each` rebuilds each
//!   element's JSON text and `->>` parses it again for every field, about a third of the
//!   writer's time at 2,000 messages a batch.
//!
//! ```text
//!  rows of a unit:   [ 1 .. 1024 ][ 1025 .. 2048 ][ 2049 .. 2600 | NULL × 424 ]
//!  statement used:     1024 rows     1024 rows         1024 rows
//!
//!  rows of a unit:   [ 1 .. 130 | NULL × 126 ]
//!  statement used:       256 rows
//! ```

use crate::messages::MESSAGE_COLUMNS;
use crate::store::Backend;

/// Most rows one `VALUES` statement carries. An INSERT row binds 9 values, so a full chunk
/// binds 9,216: well inside the bundled SQLite's limit (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
/// since 3.32; sqlx 0.8 bundles 3.46) and PostgreSQL's (65,535). Larger chunks would save
/// little: at this size a round trip is already shared by a thousand messages.
const CHUNK_ROWS: usize = 1024;

/// How a backend spells bind parameters.
#[derive(Clone, Copy)]
enum Placeholders {
    /// `?`, numbered by position: SQLite.
    Anonymous,
    /// `$1`, `$2` …: PostgreSQL.
    Numbered,
}

impl Placeholders {
    /// SQLite gets anonymous `?` placeholders. Numbered ones (`$N`, `?N`) would work, but sqlx
    /// asks SQLite for each parameter's name before binding it, and SQLite finds a name by
    /// walking the statement's list of names: binding would be quadratic in the parameter count
    /// (measured: ~100 ms to bind a 1024-row INSERT). PostgreSQL accepts only `$N`.
    fn of(backend: &Backend) -> Placeholders {
        match backend {
            Backend::Sqlite(_) => Placeholders::Anonymous,
            Backend::Postgres(_) => Placeholders::Numbered,
        }
    }
}

/// A statement over a list of rows bound as a multi-row `VALUES`, as one text per size.
///
/// Sizes are powers of two (1, 2, 4 … [`CHUNK_ROWS`]), so there are only 11 texts, each
/// prepared once per connection and then served from sqlx's statement cache (100 statements
/// per connection). A statement sized to each batch would be parsed and planned again for
/// almost every batch, and would push the others out of the cache. A list that does not fill
/// its statement is padded with rows of NULLs, which every statement here ignores (a NULL key
/// matches nothing; the INSERT skips rows whose `room_id` is NULL): binding a NULL costs far
/// less than a round trip per bit of the list's length would.
pub(super) struct ValuesSql {
    /// `by_log2[k]` takes `2^k` rows.
    by_log2: Vec<String>,
}

impl ValuesSql {
    /// `head`, then `(…), (…), …` with `columns` placeholders a row, then `tail`.
    fn new(placeholders: Placeholders, columns: usize, head: &str, tail: &str) -> ValuesSql {
        use std::fmt::Write;

        let by_log2 = (0..=CHUNK_ROWS.ilog2())
            .map(|log2| {
                let rows = 1usize << log2;
                let mut sql = String::from(head);
                for row in 0..rows {
                    sql.push_str(if row == 0 { "(" } else { ", (" });
                    for column in 0..columns {
                        if column > 0 {
                            sql.push_str(", ");
                        }
                        match placeholders {
                            Placeholders::Anonymous => sql.push('?'),
                            Placeholders::Numbered => {
                                let param = row * columns + column + 1;
                                write!(sql, "${param}").expect("writing to a String cannot fail");
                            }
                        }
                    }
                    sql.push(')');
                }
                sql.push_str(tail);
                sql
            })
            .collect();
        ValuesSql { by_log2 }
    }

    /// The next statement for a list with `remaining` rows (at least 1) left.
    pub(super) fn next_chunk(&self, remaining: usize) -> Chunk<'_> {
        debug_assert!(remaining > 0, "no statement for an empty list");
        let rows = remaining.min(CHUNK_ROWS);
        let slots = rows.next_power_of_two();
        Chunk {
            rows,
            slots,
            statement: &self.by_log2[slots.ilog2() as usize],
        }
    }
}

impl ValuesSql {
    /// `rows` cut into the statements that carry them, in order: each with its share.
    pub(super) fn chunks<'s, 'r, T>(
        &'s self,
        rows: &'r [T],
    ) -> impl Iterator<Item = (Chunk<'s>, &'r [T])> + use<'s, 'r, T> {
        let mut rest = rows;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let chunk = self.next_chunk(rest.len());
            let (taken, after) = rest.split_at(chunk.rows);
            rest = after;
            Some((chunk, taken))
        })
    }
}

/// One statement's share of a list: see [`ValuesSql::next_chunk`].
pub(super) struct Chunk<'s> {
    /// How many of the list's rows it takes.
    pub(super) rows: usize,
    /// How many rows the statement binds: `rows`, then NULL rows up to this.
    pub(super) slots: usize,
    /// The statement's text.
    pub(super) statement: &'s str,
}

/// The statements of a batch.
pub(super) struct BatchSql {
    /// `$1` JSON array of room names: lock those rooms, return `LockedRoom`s.
    pub(super) lock_rooms: &'static str,
    /// `KeyRow`s (3 values a row): the earlier messages with those keys, as `MessageRow`s.
    pub(super) find_originals: ValuesSql,
    /// `InsertRow`s then `created_at` (9 values a row): insert them, skipping every row whose
    /// idempotency key is taken. The writer compares the rows inserted with the rows given.
    pub(super) insert: ValuesSql,
    /// `$1` JSON array of `CounterRow`s: set the rooms' `last_seq`.
    pub(super) update_counters: &'static str,
}

impl BatchSql {
    /// The statements for `backend`.
    pub(super) fn for_backend(backend: &Backend) -> BatchSql {
        let placeholders = Placeholders::of(backend);
        // The same text on both backends: both take a WITH clause before INSERT, and both
        // name a partial unique index as a conflict target by its columns and predicate. Only
        // a taken key is skipped: any other constraint still fails the statement.
        let insert = ValuesSql::new(
            placeholders,
            9,
            "WITH v (room_id, seq, id, user_id, username, content, data, client_msg_id, \
             created_at) AS (VALUES ",
            ") INSERT INTO messages (room_id, seq, id, user_id, username, content, data, \
             client_msg_id, created_at) SELECT * FROM v WHERE room_id IS NOT NULL \
             ON CONFLICT (room_id, user_id, client_msg_id) WHERE client_msg_id IS NOT NULL \
             DO NOTHING",
        );
        match backend {
            Backend::Sqlite(_) => BatchSql {
                // `BEGIN IMMEDIATE` holds the write lock already: a plain read is enough.
                lock_rooms: "SELECT name, id, last_seq FROM rooms \
                     WHERE name IN (SELECT value FROM json_each($1))",
                // The keys drive the join, each an index lookup on `messages_client_msg_id`;
                // CROSS JOIN makes SQLite keep them as the outer loop.
                find_originals: ValuesSql::new(
                    placeholders,
                    3,
                    "WITH k (room_id, user_id, client_msg_id) AS (VALUES ",
                    &format!(
                        ") SELECT {MESSAGE_COLUMNS} FROM k \
                         CROSS JOIN messages m JOIN rooms r ON r.id = m.room_id \
                         WHERE m.room_id = k.room_id AND m.user_id = k.user_id \
                         AND m.client_msg_id = k.client_msg_id"
                    ),
                ),
                insert,
                update_counters: "UPDATE rooms SET last_seq = c.last_seq \
                     FROM (SELECT value ->> 'id' AS id, value ->> 'last_seq' AS last_seq \
                     FROM json_each($1)) AS c \
                     WHERE rooms.id = c.id",
            },
            Backend::Postgres(_) => BatchSql {
                // Row locks taken in name order: see the writer's docs.
                lock_rooms: "SELECT name, id, last_seq FROM rooms \
                     WHERE name IN (SELECT value FROM json_array_elements_text($1::json)) \
                     ORDER BY name FOR UPDATE",
                // One index lookup per key, whatever the statistics say. A plain join lets the
                // planner choose a hash join over a sequential scan of `messages`, and a
                // prepared statement keeps that plan: planned while the table was empty, it
                // then read the whole table for every batch (measured: 0.7 s a batch at 100k
                // messages). A LATERAL subquery with LIMIT cannot be turned into a hash join.
                find_originals: ValuesSql::new(
                    placeholders,
                    3,
                    &format!("SELECT {MESSAGE_COLUMNS} FROM (VALUES "),
                    ") AS k (room_id, user_id, client_msg_id) \
                     CROSS JOIN LATERAL (SELECT * FROM messages \
                     WHERE messages.room_id = k.room_id AND messages.user_id = k.user_id \
                     AND messages.client_msg_id = k.client_msg_id LIMIT 1) AS m \
                     JOIN rooms r ON r.id = m.room_id",
                ),
                insert,
                update_counters: "UPDATE rooms SET last_seq = c.last_seq \
                     FROM json_to_recordset($1::json) AS c(id BIGINT, last_seq BIGINT) \
                     WHERE rooms.id = c.id",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_cut_into_whole_chunks_then_one_padded_statement() {
        let sql = ValuesSql {
            by_log2: (0..=CHUNK_ROWS.ilog2()).map(|k| k.to_string()).collect(),
        };
        let rows: Vec<usize> = (0..2 * CHUNK_ROWS + 130).collect();
        let mut chunks = Vec::new();
        let mut next_row = 0;
        for (chunk, taken) in sql.chunks(&rows) {
            assert_eq!(chunk.statement, chunk.slots.ilog2().to_string());
            assert_eq!(taken.len(), chunk.rows);
            assert_eq!(taken[0], next_row, "in order, none skipped");
            next_row += taken.len();
            chunks.push((chunk.rows, chunk.slots));
        }
        assert_eq!(next_row, rows.len(), "every row carried");
        assert_eq!(sql.chunks::<usize>(&[]).count(), 0);
        assert_eq!(
            chunks,
            [
                (CHUNK_ROWS, CHUNK_ROWS),
                (CHUNK_ROWS, CHUNK_ROWS),
                (130, 256)
            ]
        );
        assert_eq!((sql.next_chunk(1).rows, sql.next_chunk(1).slots), (1, 1));
        assert_eq!((sql.next_chunk(3).rows, sql.next_chunk(3).slots), (3, 4));
    }

    #[test]
    fn statements_have_one_placeholder_per_value() {
        let sql = ValuesSql::new(Placeholders::Anonymous, 3, "VALUES ", ";");
        assert_eq!(sql.next_chunk(1).statement, "VALUES (?, ?, ?);");
        assert_eq!(sql.next_chunk(2).statement, "VALUES (?, ?, ?), (?, ?, ?);");
        let full = sql.next_chunk(CHUNK_ROWS);
        assert_eq!(full.statement.matches('?').count(), 3 * full.slots);

        let sql = ValuesSql::new(Placeholders::Numbered, 2, "VALUES ", "");
        assert_eq!(sql.next_chunk(2).statement, "VALUES ($1, $2), ($3, $4)");
        let full = sql.next_chunk(CHUNK_ROWS);
        assert!(full.statement.ends_with(&format!("${})", 2 * full.slots)));
    }
}
