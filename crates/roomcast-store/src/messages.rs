//! Messages: appending (through the writer task) and reading history (straight from the pool).
//!
//! `append_message` checks its input, queues it on the writer's bounded `mpsc` with a `oneshot`
//! for the answer (and, from `append_message_with`, a hook to run after the commit), and waits;
//! `writer/` does the SQL. Reads need no ordering with writes
//! beyond what a committed transaction gives, so they use the pool directly.

use tokio::sync::oneshot;

use crate::error::{Result, StoreError};
use crate::records::{Appended, MessageRow, NewMessage, Seq, StoredMessage, check_key, check_text};
use crate::store::{Store, with_pool};
use crate::users::could_exist;
use crate::writer::{AppendRequest, OnCommit, Pending, Waiter};

/// The columns of a [`MessageRow`], from `messages m JOIN rooms r ON r.id = m.room_id`.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id AS id, r.name AS room, m.seq AS seq, \
     m.user_id AS user_id, m.username AS username, m.content AS content, m.data AS data, \
     m.client_msg_id AS client_msg_id, m.created_at AS created_at";

impl Store {
    /// Persists a message and returns it with its id and seq, once committed.
    ///
    /// The message joins the writer's next group commit (see the crate docs): it is committed
    /// with up to `max_batch - 1` others in one transaction, and this returns after that commit,
    /// so the caller may broadcast and ack at once. Seqs are assigned in commit order, one gap-free
    /// sequence per room.
    ///
    /// With a `client_msg_id`, a second append with the same `(room, user_id, client_msg_id)`
    /// stores nothing, uses no seq, and returns the first message with [`Appended::Duplicate`].
    ///
    /// Waits while the writer's queue is full (`queue_capacity`).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the room does not exist; [`StoreError::Invalid`] for an
    /// empty or over-long (255 bytes) room, user id, username or `client_msg_id`, or a NUL in any
    /// text; [`StoreError::Closed`] after [`Store::close`]; [`StoreError::BatchFailed`] when the
    /// whole group commit failed; [`StoreError::Backend`] when this message's own statements
    /// failed. A failure of one message never fails the others in its batch.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once queued, the message is committed even if this future is dropped,
    /// and its seq is then unknown to the caller. Send a `client_msg_id` and retry to learn it.
    pub async fn append_message(&self, message: NewMessage) -> Result<(StoredMessage, Appended)> {
        self.queue_append(message, None).await
    }

    /// [`Store::append_message`], and `on_commit` is called with the message right after its
    /// commit, if it was stored now ([`Appended::New`]; not for a retry).
    ///
    /// The hook is for broadcasting in seq order. It runs on the writer's answering task, which
    /// calls the hooks of a batch one after the other, in seq order within each room, batch
    /// after batch in commit order, before answering any caller of that batch: so messages
    /// reach it in the order the room's clients must see them, which callers woken in
    /// arbitrary order after `append_message` could not guarantee. It must be quick and must
    /// not block: the next batch's answers wait while it runs, and the writer with them (hand
    /// the message to bounded queues with `try_send`, say). A panic in it is caught and logged;
    /// the message stays committed.
    ///
    /// # Errors
    ///
    /// As [`Store::append_message`]; on an error the hook is not called.
    ///
    /// # Cancel safety
    ///
    /// As [`Store::append_message`]: once queued, the message is committed and the hook called
    /// even if this future is dropped.
    pub async fn append_message_with<F>(
        &self,
        message: NewMessage,
        on_commit: F,
    ) -> Result<(StoredMessage, Appended)>
    where
        F: FnOnce(&StoredMessage) + Send + 'static,
    {
        self.queue_append(message, Some(Box::new(on_commit))).await
    }

    /// [`Store::append_message_with`] in two steps: this waits only until the message is in
    /// the writer's queue (while the queue is full, `queue_capacity`), and the returned
    /// [`Committing`] resolves when it is committed. A caller that queues its messages one
    /// after the other keeps their order (seqs follow queue order) without waiting a commit
    /// per message: a connection can have many messages in one group commit.
    ///
    /// ```no_run
    /// # async fn run(store: roomcast_store::Store, message: roomcast_store::NewMessage) -> roomcast_store::Result<()> {
    /// let committing = store.queue_message_with(message, |stored| println!("seq {}", stored.seq.0)).await?;
    /// // … queue more, then (or elsewhere):
    /// let (stored, _) = committing.await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// At once: [`StoreError::Invalid`] (the checks of [`Store::append_message`]) and
    /// [`StoreError::Closed`]. From the [`Committing`]: the rest of
    /// [`Store::append_message`]'s errors.
    pub async fn queue_message_with<F>(
        &self,
        message: NewMessage,
        on_commit: F,
    ) -> Result<Committing>
    where
        F: FnOnce(&StoredMessage) + Send + 'static,
    {
        self.queue_committing(message, Some(Box::new(on_commit)))
            .await
    }

    /// [`Store::queue_message_with`] without a future to await: `on_outcome` is called with
    /// the outcome, whatever it is, and takes it (no copy of the message is kept). This waits
    /// only until the message is in the writer's queue.
    ///
    /// The hook runs on the writer's answering task, as the hook of
    /// [`Store::append_message_with`] does, in batch order: with `Ok((stored, Appended::New))`
    /// after the commit, in seq order within each room; with `Ok((original,
    /// Appended::Duplicate))` for a retry; with `Err` when the message was not written (the
    /// errors of [`Store::append_message`] that come after queueing). It must be quick and must
    /// not block. For a caller that answers from the hook anyway (a chat server sending the
    /// broadcast and the ack), this saves a task and a wake-up per message.
    ///
    /// ```no_run
    /// # async fn run(store: roomcast_store::Store, message: roomcast_store::NewMessage) -> roomcast_store::Result<()> {
    /// store
    ///     .queue_message_then(message, |outcome| match outcome {
    ///         Ok((stored, appended)) => println!("seq {} ({appended:?})", stored.seq.0),
    ///         Err(err) => eprintln!("not stored: {err}"),
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// At once, and then the hook is not called: [`StoreError::Invalid`] (the checks of
    /// [`Store::append_message`]) and [`StoreError::Closed`].
    pub async fn queue_message_then<F>(&self, message: NewMessage, on_outcome: F) -> Result<()>
    where
        F: FnOnce(Result<(StoredMessage, Appended)>) + Send + 'static,
    {
        self.enqueue(message, Waiter::Hook(Box::new(on_outcome)))
            .await
    }

    /// [`Store::queue_message_then`] with a second hook for the broadcast: `on_written` is
    /// called with the message once it is committed, if it was stored now ([`Appended::New`]),
    /// and `on_outcome` with the outcome once it is durable, whatever it is.
    ///
    /// The two differ on SQLite with [`StoreOptions::sqlite_hooks_before_sync`] (the default):
    /// `on_written` runs as soon as the commit is written, and `on_outcome` after the WAL is
    /// synced, so members can be sent the message one `fsync` before its sender is told it is
    /// stored. Elsewhere `on_outcome` follows `on_written` at once. Both run on the writer's
    /// answering task, in batch order (every `on_written` of a batch before its first
    /// `on_outcome`), and must be quick and not block. Should the sync fail, `on_outcome`
    /// gets [`StoreError::BatchFailed`](crate::StoreError::BatchFailed) for a message
    /// `on_written` has seen: it is in the database, but whether it is on disk is unknown.
    ///
    /// ```no_run
    /// # async fn run(store: roomcast_store::Store, message: roomcast_store::NewMessage) -> roomcast_store::Result<()> {
    /// store
    ///     .queue_message_written_then(
    ///         message,
    ///         |stored| println!("broadcast seq {}", stored.seq.0),
    ///         |outcome| match outcome {
    ///             Ok((stored, appended)) => println!("ack seq {} ({appended:?})", stored.seq.0),
    ///             Err(err) => eprintln!("not stored: {err}"),
    ///         },
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`StoreOptions::sqlite_hooks_before_sync`]: crate::StoreOptions::sqlite_hooks_before_sync
    ///
    /// # Errors
    ///
    /// As [`Store::queue_message_then`]: at once, and then neither hook is called.
    pub async fn queue_message_written_then<W, F>(
        &self,
        message: NewMessage,
        on_written: W,
        on_outcome: F,
    ) -> Result<()>
    where
        W: FnOnce(&StoredMessage) + Send + 'static,
        F: FnOnce(Result<(StoredMessage, Appended)>) + Send + 'static,
    {
        let waiter = Waiter::Staged {
            on_written: Some(Box::new(on_written)),
            on_outcome: Box::new(on_outcome),
        };
        self.enqueue(message, waiter).await
    }

    /// Checks `message`, queues it for the writer and waits for the answer.
    async fn queue_append(
        &self,
        message: NewMessage,
        on_commit: Option<OnCommit>,
    ) -> Result<(StoredMessage, Appended)> {
        self.queue_committing(message, on_commit).await?.await
    }

    /// Checks `message`, queues it for the writer and returns the future of its answer.
    async fn queue_committing(
        &self,
        message: NewMessage,
        on_commit: Option<OnCommit>,
    ) -> Result<Committing> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let waiter = Waiter::Reply {
            on_commit,
            reply_tx,
        };
        self.enqueue(message, waiter).await?;
        Ok(Committing { reply_rx })
    }

    /// Checks `message` and queues it for the writer.
    async fn enqueue(&self, message: NewMessage, waiter: Waiter) -> Result<()> {
        check_key("room name", &message.room)?;
        check_key("user id", &message.user_id)?;
        check_key("username", &message.username)?;
        check_text("content", &message.content)?;
        if let Some(key) = &message.client_msg_id {
            check_key("client_msg_id", key)?;
        }
        let data_json = message
            .data
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|err| StoreError::Invalid(format!("data is not serializable: {err}")))?;

        let request = AppendRequest {
            pending: Pending { message, data_json },
            waiter,
        };
        // Both ends fail only when the writer is gone: closed, or (a bug) panicked.
        self.append_tx()
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// A page of a room's history: the newest `limit` messages with a seq below `before` (all
    /// of them when `before` is `None`), returned in ascending seq order.
    ///
    /// To page back, pass the first (oldest) seq of the page as the next `before`. An unknown
    /// room has no messages: the result is empty, not an error.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn history(
        &self,
        room: &str,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        if !could_exist(room) || limit == 0 {
            return Ok(Vec::new());
        }
        let before = before.map_or(i64::MAX, Seq::to_db);
        let sql = format!(
            "SELECT * FROM ( \
                 SELECT {MESSAGE_COLUMNS} FROM messages m JOIN rooms r ON r.id = m.room_id \
                 WHERE r.name = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3 \
             ) AS page ORDER BY seq"
        );
        let rows = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, MessageRow>(&sql)
                .bind(room)
                .bind(before)
                .bind(db_limit(limit))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter()
            .map(|row| row.into_message().map_err(StoreError::from))
            .collect()
    }

    /// The messages of a room after `since`, oldest first, at most `limit` of them: a reconnecting
    /// client's replay. Call again with the last seq returned until fewer than `limit` come back.
    /// An unknown room has no messages.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the database fails.
    pub async fn messages_since(
        &self,
        room: &str,
        since: Seq,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        if !could_exist(room) || limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN rooms r ON r.id = m.room_id \
             WHERE r.name = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3"
        );
        let rows = with_pool!(self.backend(), |pool| {
            sqlx::query_as::<_, MessageRow>(&sql)
                .bind(room)
                .bind(since.to_db())
                .bind(db_limit(limit))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter()
            .map(|row| row.into_message().map_err(StoreError::from))
            .collect()
    }
}

/// A `LIMIT` for the database's signed integer, saturating.
fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A queued message on its way to the database: resolves to the stored message once committed
/// (see [`Store::queue_message_with`]). Dropping it does not cancel the append.
#[derive(Debug)]
#[must_use = "the commit's outcome (and any error) arrives through this future"]
pub struct Committing {
    reply_rx: oneshot::Receiver<Result<(StoredMessage, Appended)>>,
}

impl std::future::Future for Committing {
    type Output = Result<(StoredMessage, Appended)>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.reply_rx)
            .poll(cx)
            .map(|reply| reply.map_err(|_| StoreError::Closed)?)
    }
}
