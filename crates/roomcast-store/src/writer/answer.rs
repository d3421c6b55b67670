//! The answering task: a written batch's hooks, then its callers' answers, in batch order.
//!
//! A batch is answered in two steps. Once it is committed its *written* hooks run (the
//! `on_commit` hook of `append_message_with`, the `on_written` hook of
//! `queue_message_written_then`): in `roomcast serve` they broadcast. Once it is durable its
//! waiters are answered (replies, `on_outcome` hooks): the acks. Where a commit is durable when
//! it returns (PostgreSQL, SQLite with `synchronous` as the pool has it) the two steps follow
//! each other at once ([`Answer::Durable`]). Where the writer commits without syncing and the
//! sync runs apart (`sync.rs`), the written hooks run at the commit ([`Answer::Written`]) and
//! the answers when the sync that covers the batch is done ([`Answer::Synced`]): members see a
//! message one `fsync` sooner, and nobody is told it is stored before it is on disk.
//!
//! ```text
//! writer ── Written(n) ──▶ ┌─────────────────────┐   written hooks, after-batch
//!    │                     │  answering task     │
//!    └─ sync n ─▶ syncer ─ Synced(n) ─▶          │   answers of every batch ≤ n, after-batch
//!                          └─────────────────────┘
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use super::{ItemOutcome, OnOutcome, Pending, Waiter};
use crate::error::{Result, StoreError};
use crate::records::{Appended, NewMessage, Seq, StoredMessage};

/// What runs after a batch's hooks (`Store::after_each_batch`).
pub(crate) type AfterBatch = Box<dyn Fn() + Send + Sync>;

/// A message's outcome, as its waiter is answered.
type Reply = Result<(StoredMessage, Appended)>;

/// What the answering task is given, in the order the writer and the syncer send it.
pub(crate) enum Answer {
    /// A batch whose commit is durable: its written hooks, then its answers.
    Durable(Resolved),
    /// A batch committed but not yet synced, numbered: its written hooks now, its answers once
    /// a [`Answer::Synced`] covers its number.
    Written(u64, Resolved),
    /// Every batch numbered up to this one is on disk, or could not be made so (the error, which
    /// each of their messages is answered with).
    Synced(u64, std::result::Result<(), Arc<std::io::Error>>),
}

/// A written batch: each waiter with its message's outcome, in batch order.
pub(crate) struct Resolved {
    waiters: Vec<Waiter>,
    replies: Vec<Reply>,
}

impl Resolved {
    /// Pairs each request of a batch with what happened to its message; the three lists are
    /// in batch order.
    pub(crate) fn new(
        batch: Vec<Pending>,
        waiters: Vec<Waiter>,
        outcomes: Vec<ItemOutcome>,
    ) -> Resolved {
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(batch.len());
        let mut duplicates_of = Vec::new();
        for (index, (request, outcome)) in batch.into_iter().zip(outcomes).enumerate() {
            let reply = match outcome {
                ItemOutcome::Inserted {
                    id,
                    seq,
                    created_at,
                } => {
                    let NewMessage {
                        room,
                        user_id,
                        username,
                        content,
                        data,
                        client_msg_id,
                    } = request.message;
                    let stored = StoredMessage {
                        id,
                        room,
                        seq,
                        user_id,
                        username,
                        content,
                        data,
                        client_msg_id,
                        created_at,
                    };
                    Some(Ok((stored, Appended::New)))
                }
                ItemOutcome::Duplicate(original) => Some(Ok((original, Appended::Duplicate))),
                ItemOutcome::DuplicateOf(first) => {
                    duplicates_of.push((index, first));
                    None
                }
                ItemOutcome::Failed(err) => Some(Err(err)),
            };
            replies.push(reply);
        }
        // A retry within the batch gets a copy of the message it repeats, which came earlier.
        for (index, first) in duplicates_of {
            let original = match &replies[first] {
                Some(Ok((original, _))) => Ok((original.clone(), Appended::Duplicate)),
                _ => unreachable!(
                    "a retry within the batch points at an earlier message that succeeded"
                ),
            };
            replies[index] = Some(original);
        }
        let replies = replies
            .into_iter()
            .map(|reply| reply.expect("every reply was filled above"))
            .collect();
        Resolved { waiters, replies }
    }

    /// The batch's messages, for the writer's bound on what waits for a sync.
    pub(crate) fn len(&self) -> usize {
        self.replies.len()
    }

    /// Runs the hooks that come with the commit, for the messages stored now: batch order is
    /// arrival order, and within each room arrival order is seq order, so the hooks see each
    /// room's new messages in seq order.
    fn run_written(&mut self) {
        for (waiter, reply) in self.waiters.iter_mut().zip(&self.replies) {
            let Ok((stored, Appended::New)) = reply else {
                continue;
            };
            let hook = match waiter {
                Waiter::Reply { on_commit, .. } => on_commit.take(),
                Waiter::Staged { on_written, .. } => on_written.take(),
                Waiter::Hook(_) => None,
            };
            if let Some(hook) = hook {
                run_hook(Some(stored.seq), || hook(stored));
            }
        }
    }

    /// Every message of the batch is answered with `err`: its sync failed, so whether it is on
    /// disk is unknown (it is in the database, and was broadcast).
    pub(crate) fn fail(&mut self, err: &Arc<std::io::Error>) {
        for reply in &mut self.replies {
            if reply.is_ok() {
                let io = std::io::Error::new(err.kind(), err.to_string());
                *reply = Err(StoreError::BatchFailed(Arc::new(sqlx::Error::Io(io))));
            }
        }
    }

    /// Answers every waiter, in batch order: the outcome hooks first, then the replies.
    fn answer(self) {
        let mut reply_txs = Vec::with_capacity(self.waiters.len());
        for (waiter, reply) in self.waiters.into_iter().zip(self.replies) {
            match waiter {
                Waiter::Reply { reply_tx, .. } => reply_txs.push((reply_tx, reply)),
                Waiter::Hook(on_outcome) | Waiter::Staged { on_outcome, .. } => {
                    answer_hook(on_outcome, reply);
                }
            }
        }
        for (reply_tx, reply) in reply_txs {
            // A dropped receiver is a caller that stopped waiting; there is no one to tell.
            let _ = reply_tx.send(reply);
        }
    }
}

fn answer_hook(on_outcome: OnOutcome, reply: Reply) {
    let seq = reply.as_ref().ok().map(|(stored, _)| stored.seq);
    run_hook(seq, || on_outcome(reply));
}

/// Answers what comes on `answers` until every sender is gone, running `after_batch` after
/// each step. Batches still waiting for a sync then (the syncer is gone) are answered with an
/// error: whether they reached the disk is unknown.
pub(crate) async fn run(
    mut answers: mpsc::Receiver<Answer>,
    after_batch: Arc<OnceLock<AfterBatch>>,
) {
    let mut unsynced: VecDeque<(u64, Resolved)> = VecDeque::new();
    while let Some(answer) = answers.recv().await {
        match answer {
            Answer::Durable(mut batch) => {
                batch.run_written();
                match unsynced.back() {
                    // Answered after the batches before it, whose syncs are still running.
                    Some(&(last, _)) => unsynced.push_back((last, batch)),
                    None => batch.answer(),
                }
            }
            Answer::Written(number, mut batch) => {
                batch.run_written();
                unsynced.push_back((number, batch));
            }
            Answer::Synced(up_to, synced) => {
                while unsynced.front().is_some_and(|(number, _)| *number <= up_to) {
                    let Some((_, mut batch)) = unsynced.pop_front() else {
                        break;
                    };
                    if let Err(err) = &synced {
                        batch.fail(err);
                    }
                    batch.answer();
                }
            }
        }
        run_after_batch(&after_batch);
    }
    if !unsynced.is_empty() {
        tracing::error!(
            batches = unsynced.len(),
            "the store's syncer stopped before these batches were synced"
        );
        let err = Arc::new(std::io::Error::other("the store's syncer stopped"));
        for (_, mut batch) in unsynced {
            batch.fail(&err);
            batch.answer();
        }
        run_after_batch(&after_batch);
    }
}

/// Answers a durable batch on the writer's own thread when the answering task is gone (it
/// panicked), rather than lose its replies.
pub(crate) fn answer_here(mut batch: Resolved, after_batch: &OnceLock<AfterBatch>) {
    batch.run_written();
    batch.answer();
    run_after_batch(after_batch);
}

/// Runs the after-batch callback, if one is registered; a panic in it is caught and logged,
/// as a hook's is.
fn run_after_batch(after_batch: &OnceLock<AfterBatch>) {
    if let Some(after) = after_batch.get()
        && std::panic::catch_unwind(std::panic::AssertUnwindSafe(after)).is_err()
    {
        tracing::error!("the store's after-batch callback panicked");
    }
}

/// Runs a caller's hook for the message stored at `seq` (`None`: an append that failed). A
/// panicking hook must not take the writer, and every later write, down with it: the panic is
/// caught and logged (the panic's own message, printed by the panic hook, says where).
fn run_hook(seq: Option<Seq>, hook: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
        match seq {
            Some(seq) => tracing::error!(%seq, "a store hook panicked"),
            None => tracing::error!("a store hook panicked on a failed append"),
        }
    }
}
