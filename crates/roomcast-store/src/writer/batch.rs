//! One batch's transaction: the statements that write it (`attempt`), the retries in smaller
//! units when a statement fails (`write_batch`), and the plan that assigns each message its
//! seq or finds it a retry (`plan_unit`). The module docs of `writer` describe the whole.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::sql::BatchSql;
// `with_writer_conn!` (defined in `writer`) names these where it is used.
use super::{Held, Pending, WriterConn, take_sqlite};
use crate::error::StoreError;
use crate::records::{MessageId, MessageRow, Seq, StoredMessage, now_ms};
use crate::store::Backend;

/// What happened to one message of a batch.
pub(super) enum ItemOutcome {
    /// Inserted with this id, seq and time.
    Inserted {
        id: MessageId,
        seq: Seq,
        created_at: i64,
    },
    /// A retry of a message committed earlier: the original.
    Duplicate(StoredMessage),
    /// A retry of the message at this index of the same batch.
    DuplicateOf(usize),
    /// Not written.
    Failed(StoreError),
}

/// Why an attempt at writing a batch stopped.
pub(super) enum AttemptError {
    /// `BEGIN` or `COMMIT` failed: the batch as a whole.
    Batch(sqlx::Error),
    /// A statement for the unit at this index failed.
    Unit(usize, sqlx::Error),
    /// A message inserted without looking its key up first is a retry of an earlier one: the
    /// attempt is rolled back, to be made again with the keys looked up.
    KnownKey,
}

/// Why writing one unit stopped.
pub(super) enum UnitError {
    /// A statement failed.
    Statement(sqlx::Error),
    /// See [`AttemptError::KnownKey`].
    KnownKey,
}

impl From<sqlx::Error> for UnitError {
    fn from(err: sqlx::Error) -> UnitError {
        UnitError::Statement(err)
    }
}

/// Whether a batch looks its messages' idempotency keys up before inserting them.
///
/// Looking up costs a statement per 1024 keys and an index search per key, about a fifth of
/// the writer's time when every message carries a key (`roomcast-loadgen history`), and it
/// almost never finds anything: a retry is a client resending after a lost connection. So a
/// batch first inserts without looking, skipping rows whose key is taken (the INSERT of
/// [`BatchSql`](super::sql::BatchSql)), and counts the rows inserted: one short means a retry, and the
/// batch is rolled back and written again looking the keys up (its seqs must not skip the
/// retry's). The batches after it look up too, until one finds no retry: a
/// client that keeps resending costs one look-up a batch, as before, not two attempts.
///
/// Measured, alternating builds, SQLite on disk: `tests/throughput.rs` (4096 senders, 8 rooms)
/// 71.7k / 76.2k / 68.0k -> 84.3k / 92.8k / 94.4k msg/s; through the server
/// (`roomcast-loadgen history`, three runs each, median) 43.1k -> 44.4k at 1024 publishers ×
/// 1024 rooms and 38.6k -> 44.4k at 256 × 8, where the rest of the server shares the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keys {
    /// Insert first; a taken key rolls the attempt back.
    InsertFirst,
    /// Look the keys up, then insert only new messages.
    LookUpFirst,
}

/// A room as the lock statement returns it.
#[derive(sqlx::FromRow)]
pub(super) struct LockedRoom {
    pub(super) name: String,
    pub(super) id: i64,
    pub(super) last_seq: i64,
}

/// One idempotency key: the bind parameters of one row of the lookup of earlier messages.
pub(super) struct KeyRow<'a> {
    pub(super) room_id: i64,
    pub(super) user_id: &'a str,
    pub(super) client_msg_id: &'a str,
}

/// One message to insert: the bind parameters of one row of the multi-row INSERT.
pub(super) struct InsertRow<'a> {
    pub(super) room_id: i64,
    pub(super) seq: i64,
    pub(super) id: MessageId,
    pub(super) user_id: &'a str,
    pub(super) username: &'a str,
    pub(super) content: &'a str,
    pub(super) data: Option<&'a str>,
    pub(super) client_msg_id: Option<&'a str>,
}

/// One room's new counter, as the UPDATE unpacks it from its JSON array.
#[derive(Serialize)]
pub(super) struct CounterRow {
    id: i64,
    last_seq: i64,
}

/// Writes `batch` in one transaction (retrying in smaller units as the module docs describe)
/// and returns each message's outcome, in `batch` order. `keys` says how this batch starts
/// and is left saying how the next one does.
pub(super) async fn write_batch(
    backend: &Backend,
    writer: &mut WriterConn,
    keys: &mut Keys,
    sql: &BatchSql,
    batch: &[Pending],
) -> Vec<ItemOutcome> {
    let mut outcomes: Vec<Option<ItemOutcome>> = batch.iter().map(|_| None).collect();
    // One unit holding the whole batch, in arrival order.
    let mut units: Vec<Vec<usize>> = vec![(0..batch.len()).collect()];
    let created_at = now_ms();
    while !units.is_empty() {
        match attempt(backend, writer, *keys, sql, batch, &units, created_at).await {
            Ok((written, found_retries)) => {
                for (index, outcome) in written {
                    outcomes[index] = Some(outcome);
                }
                *keys = if found_retries {
                    Keys::LookUpFirst
                } else {
                    Keys::InsertFirst
                };
                break;
            }
            Err(AttemptError::KnownKey) => *keys = Keys::LookUpFirst,
            Err(AttemptError::Batch(err)) => {
                // The connection may be what failed: the next batch takes a fresh one.
                writer.held = Held::None;
                let err = Arc::new(err);
                for &index in units.iter().flatten() {
                    let err = StoreError::BatchFailed(Arc::clone(&err));
                    outcomes[index] = Some(ItemOutcome::Failed(err));
                }
                break;
            }
            Err(AttemptError::Unit(failed, err)) => {
                let unit = &units[failed];
                let room = &batch[unit[0]].message.room;
                let smaller: Vec<Vec<usize>> =
                    if unit.iter().any(|&index| batch[index].message.room != *room) {
                        split_by_room(batch, unit)
                    } else {
                        unit.iter().map(|&index| vec![index]).collect()
                    };
                if smaller.len() > 1 {
                    units.splice(failed..=failed, smaller);
                } else {
                    let index = units.remove(failed)[0];
                    outcomes[index] = Some(ItemOutcome::Failed(StoreError::Backend(err)));
                }
            }
        }
    }
    tracing::trace!(messages = batch.len(), "group commit");
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every message is written, or failed, before the loop ends"))
        .collect()
}

/// The indexes of `unit` grouped by room, rooms in name order, messages in arrival order.
fn split_by_room(batch: &[Pending], unit: &[usize]) -> Vec<Vec<usize>> {
    let mut order = unit.to_vec();
    // Stable: equal rooms keep arrival order.
    order.sort_by(|&a, &b| batch[a].message.room.cmp(&batch[b].message.room));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for index in order {
        match groups.last_mut() {
            Some(group) if batch[group[0]].message.room == batch[index].message.room => {
                group.push(index);
            }
            _ => groups.push(vec![index]),
        }
    }
    groups
}

/// One try at writing `units` of `batch` in a single transaction: the outcomes, and whether
/// the keys looked up found retries.
async fn attempt(
    backend: &Backend,
    writer: &mut WriterConn,
    keys: Keys,
    sql: &BatchSql,
    batch: &[Pending],
    units: &[Vec<usize>],
    created_at: i64,
) -> std::result::Result<(Vec<(usize, ItemOutcome)>, bool), AttemptError> {
    if let Backend::Sqlite(pool) = backend {
        if !matches!(writer.held, Held::Sqlite(_) | Held::Direct(_)) {
            writer.held = take_sqlite(pool, writer.sync_apart)
                .await
                .map_err(AttemptError::Batch)?;
        }
        if let Held::Direct(direct) = &mut writer.held {
            return direct.attempt(keys, sql, batch, units, created_at);
        }
    }
    let mut written = Vec::with_capacity(batch.len());
    let mut found_retries = false;
    with_writer_conn!(backend, writer, |conn| {
        let mut tx = sqlx::Connection::begin_with(&mut **conn, backend.write_begin())
            .await
            .map_err(AttemptError::Batch)?;
        for (unit_index, unit) in units.iter().enumerate() {
            let done = async {
                let locked: Vec<LockedRoom> = sqlx::query_as(sql.lock_rooms)
                    .bind(to_json(&sorted_rooms(batch, unit)))
                    .fetch_all(&mut *tx)
                    .await?;
                let counters = room_counters(&locked);
                let mut originals = Vec::new();
                let look_up = unit_keys(keys, batch, unit, &counters);
                for (chunk, taken) in sql.find_originals.chunks(&look_up) {
                    let mut query = sqlx::query_as::<_, MessageRow>(chunk.statement);
                    for slot in 0..chunk.slots {
                        // Past the chunk's keys: NULL padding, which matches no message.
                        let key = taken.get(slot);
                        query = query
                            .bind(key.map(|k| k.room_id))
                            .bind(key.map(|k| k.user_id))
                            .bind(key.map(|k| k.client_msg_id));
                    }
                    for row in query.fetch_all(&mut *tx).await? {
                        originals.push(row.into_message()?);
                    }
                }
                found_retries |= !originals.is_empty();
                let plan = plan_unit(batch, unit, &locked, counters, originals);
                if !plan.inserts.is_empty() {
                    for (chunk, taken) in sql.insert.chunks(&plan.inserts) {
                        let mut query = sqlx::query(chunk.statement);
                        for slot in 0..chunk.slots {
                            // Past the chunk's rows: NULL padding, which the INSERT skips.
                            let row = taken.get(slot);
                            query = query
                                .bind(row.map(|r| r.room_id))
                                .bind(row.map(|r| r.seq))
                                .bind(row.map(|r| r.id.0.as_str()))
                                .bind(row.map(|r| r.user_id))
                                .bind(row.map(|r| r.username))
                                .bind(row.map(|r| r.content))
                                .bind(row.and_then(|r| r.data))
                                .bind(row.and_then(|r| r.client_msg_id))
                                .bind(row.map(|_| created_at));
                        }
                        let inserted = query.execute(&mut *tx).await?.rows_affected();
                        if inserted < chunk.rows as u64 {
                            return Err(known_key(keys));
                        }
                    }
                    sqlx::query(sql.update_counters)
                        .bind(to_json(&plan.counters))
                        .execute(&mut *tx)
                        .await?;
                }
                Ok::<_, UnitError>(plan.outcomes(created_at))
            }
            .await;
            match done {
                Ok(outcomes) => written.extend(outcomes),
                Err(err) => {
                    // Whatever the rollback says, the next attempt starts a fresh transaction.
                    let _ = tx.rollback().await;
                    return Err(match err {
                        UnitError::Statement(err) => AttemptError::Unit(unit_index, err),
                        UnitError::KnownKey => AttemptError::KnownKey,
                    });
                }
            }
        }
        tx.commit().await.map_err(AttemptError::Batch)
    })?;
    Ok((written, found_retries))
}

/// The rooms of `unit`, each once, in name order: what the lock statement takes.
pub(super) fn sorted_rooms<'a>(batch: &'a [Pending], unit: &[usize]) -> Vec<&'a str> {
    let mut rooms: Vec<&str> = unit
        .iter()
        .map(|&index| batch[index].message.room.as_str())
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    rooms
}

/// Why a unit stops when its INSERT skipped a row: the row's idempotency key is taken.
pub(super) fn known_key(keys: Keys) -> UnitError {
    match keys {
        Keys::InsertFirst => UnitError::KnownKey,
        // The look-up ran under the rooms' locks, so no key it missed can be taken: fail the
        // unit as a rejected statement would, and the retries in smaller units isolate the
        // message.
        Keys::LookUpFirst => UnitError::Statement(sqlx::Error::Protocol(
            "a client_msg_id the look-up did not find is taken".into(),
        )),
    }
}

/// What writing one unit will do, worked out from its rooms' counters and the earlier
/// messages with its keys.
pub(super) struct UnitPlan<'a> {
    /// The rows to insert.
    pub(super) inserts: Vec<InsertRow<'a>>,
    /// The rooms' new counters.
    pub(super) counters: Vec<CounterRow>,
    /// Each message's outcome; `Inserted` ones carry no time yet.
    outcomes: Vec<(usize, PlannedOutcome)>,
}

/// An outcome before the commit time is stamped on it.
pub(super) enum PlannedOutcome {
    Insert { id: MessageId, seq: Seq },
    Other(ItemOutcome),
}

impl UnitPlan<'_> {
    pub(super) fn outcomes(self, created_at: i64) -> Vec<(usize, ItemOutcome)> {
        self.outcomes
            .into_iter()
            .map(|(index, planned)| {
                let outcome = match planned {
                    PlannedOutcome::Insert { id, seq } => ItemOutcome::Inserted {
                        id,
                        seq,
                        created_at,
                    },
                    PlannedOutcome::Other(outcome) => outcome,
                };
                (index, outcome)
            })
            .collect()
    }
}

/// The unit's locked rooms by name: `(id, last_seq)`, the counter as `plan_unit` advances it.
/// One map for the unit, shared by the key look-up and the plan: a batch can hold thousands of
/// messages to as many rooms (4,096 messages to 1,024 rooms were ~2M name comparisons a batch
/// when each message searched the list).
pub(super) type Counters<'r> = HashMap<&'r str, (i64, i64)>;

/// The counters of `locked`, before the unit.
pub(super) fn room_counters(locked: &[LockedRoom]) -> Counters<'_> {
    locked
        .iter()
        .map(|room| (room.name.as_str(), (room.id, room.last_seq)))
        .collect()
}

/// The idempotency keys of `unit`'s messages to known rooms, to look earlier messages up by:
/// none when `keys` says to insert first.
pub(super) fn unit_keys<'a>(
    keys: Keys,
    batch: &'a [Pending],
    unit: &[usize],
    counters: &Counters<'_>,
) -> Vec<KeyRow<'a>> {
    if keys == Keys::InsertFirst {
        return Vec::new();
    }
    unit.iter()
        .filter_map(|&index| {
            let message = &batch[index].message;
            let (room_id, _) = *counters.get(message.room.as_str())?;
            Some(KeyRow {
                room_id,
                user_id: &message.user_id,
                client_msg_id: message.client_msg_id.as_deref()?,
            })
        })
        .collect()
}

/// Assigns seqs to the messages of `unit` in arrival order, skipping unknown rooms and retries
/// (of `originals`, or of an earlier message of the unit).
pub(super) fn plan_unit<'a>(
    batch: &'a [Pending],
    unit: &[usize],
    locked: &[LockedRoom],
    mut counters: Counters<'_>,
    originals: Vec<StoredMessage>,
) -> UnitPlan<'a> {
    let mut originals: HashMap<(&str, &str, &str), StoredMessage> = originals
        .iter()
        .filter_map(|m| {
            let key = m.client_msg_id.as_deref()?;
            Some(((m.room.as_str(), m.user_id.as_str(), key), m.clone()))
        })
        .collect();
    let mut first_with_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut plan = UnitPlan {
        inserts: Vec::with_capacity(unit.len()),
        counters: Vec::new(),
        outcomes: Vec::with_capacity(unit.len()),
    };
    for &index in unit {
        let request = &batch[index];
        let message = &request.message;
        let Some((room_id, last_seq)) = counters.get_mut(message.room.as_str()) else {
            let err = StoreError::NotFound(format!("room {:?}", message.room));
            plan.outcomes
                .push((index, PlannedOutcome::Other(ItemOutcome::Failed(err))));
            continue;
        };
        if let Some(key) = message.client_msg_id.as_deref() {
            let sender_key = (message.room.as_str(), message.user_id.as_str(), key);
            if let Some(original) = originals.remove(&sender_key) {
                // Later retries in this unit repeat this one.
                first_with_key.insert(sender_key, index);
                plan.outcomes.push((
                    index,
                    PlannedOutcome::Other(ItemOutcome::Duplicate(original)),
                ));
                continue;
            }
            if let Some(&first) = first_with_key.get(&sender_key) {
                plan.outcomes.push((
                    index,
                    PlannedOutcome::Other(ItemOutcome::DuplicateOf(first)),
                ));
                continue;
            }
            first_with_key.insert(sender_key, index);
        }
        *last_seq += 1;
        let id = MessageId::new_v7();
        plan.inserts.push(InsertRow {
            room_id: *room_id,
            seq: *last_seq,
            id: id.clone(),
            user_id: &message.user_id,
            username: &message.username,
            content: &message.content,
            data: request.data_json.as_deref(),
            client_msg_id: message.client_msg_id.as_deref(),
        });
        plan.outcomes.push((
            index,
            PlannedOutcome::Insert {
                id,
                seq: Seq::from_db(*last_seq),
            },
        ));
    }
    plan.counters = locked
        .iter()
        .filter_map(|room| {
            let (id, last_seq) = counters[room.name.as_str()];
            (last_seq != room.last_seq).then_some(CounterRow { id, last_seq })
        })
        .collect();
    plan
}

/// Serializes a statement's JSON array parameter.
pub(super) fn to_json<T: Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).expect("rows of strings and integers always serialize")
}
