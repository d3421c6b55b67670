//! roomcast's persistence: users, refresh tokens, rooms and messages, on SQLite (the embedded
//! default, one node) or PostgreSQL (shared by several server processes).
//!
//! This is its own crate, not a module of the server, so that editing the server does not
//! recompile sqlx and its two drivers: on a 2-core machine that keeps the server's
//! edit-compile loop short. It knows nothing of HTTP, WebSockets or wire formats.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), roomcast_store::StoreError> {
//! use roomcast_store::{Appended, NewMessage, Store};
//!
//! let store = Store::connect("sqlite://roomcast.db").await?;
//! store.create_room("lobby", false, None).await?;
//! let (message, appended) = store
//!     .append_message(NewMessage {
//!         room: "lobby".into(),
//!         user_id: "u1".into(),
//!         username: "ada".into(),
//!         content: "hello".into(),
//!         data: None,
//!         client_msg_id: Some("c-1".into()),
//!     })
//!     .await?;
//! assert_eq!(appended, Appended::New);
//! let recent = store.history("lobby", None, 50).await?;
//! assert_eq!(recent.last().map(|m| m.seq), Some(message.seq));
//! store.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - `append_message` returns after the message is committed and durable: ack after it, and
//!   an acknowledged message is never lost. [`Store::append_message_with`] also runs a hook
//!   right after the commit, in seq order within each room: the place to broadcast from, so
//!   that a room's clients receive its messages in seq order. [`Store::queue_message_then`]
//!   hands every outcome (new, retry, failure) to such a hook and returns once the message is
//!   queued: a chat server answers from the hook with no task waiting per message;
//!   [`Store::queue_message_written_then`] adds a hook at the commit, for the broadcast.
//! - On SQLite (`synchronous=FULL`, the default) the commit hooks run as soon as the commit is
//!   written and the WAL is synced on a thread of its own before anyone is answered
//!   ([`StoreOptions::sqlite_hooks_before_sync`]): a broadcast does not wait for the `fsync`,
//!   an acknowledgement does.
//! - Each room's messages get `seq` 1, 2, 3, … with no gap and no repeat, in commit order,
//!   whichever process wrote them: the counter is a column of the room's row
//!   (`rooms.last_seq`), read under the room's lock (`BEGIN IMMEDIATE` on SQLite, `FOR UPDATE`
//!   on PostgreSQL), advanced and written back in the transaction that inserts the messages.
//! - A message sent again with the same `(room, user_id, client_msg_id)` is stored once; the
//!   retry gets the original back as [`Appended::Duplicate`] and uses no seq.
//! - Everything is passed as bind parameters; names and content are stored literally.
//!
//! # Group commit
//!
//! Committing is the expensive part of a write (an fsync for SQLite, a round trip and a WAL
//! flush for PostgreSQL), and so is each statement on PostgreSQL (a round trip), so message
//! writes are batched: `append_message` queues its message on a bounded
//! channel to the store's single writer task, which takes everything queued (up to
//! [`StoreOptions::max_batch`], 8192 by default) and writes it with a handful of statements
//! (multi-row, up to 1024 messages each) and one commit, however many messages and rooms the
//! batch holds; then it answers every caller. Under load thousands of messages share one
//! commit; when idle a batch is a single message and nothing waits for a timer. While several
//! senders write at once, commits start at least [`StoreOptions::commit_interval`] apart (5 ms
//! by default), so steady traffic makes fewer, larger commits. `writer/` has the details.
//!
//! The trade-offs:
//!
//! - A message's latency includes the batch it rides in (a few milliseconds under load) in
//!   exchange for throughput that does not cap the broadcast rate.
//! - One writer task per store: message writes never contend with each other for SQLite's
//!   single write lock, and seqs are assigned in one place. On a shared PostgreSQL the writers
//!   of several processes serialize per room on the room's row. The writer runs on a thread of
//!   its own, so it is not queued behind the application's tasks between its statements; the
//!   hooks run on the application's runtime.
//! - A `client_msg_id` is looked up only after a batch that held a retry: otherwise the insert
//!   skips taken keys and a shortfall sends the batch round again with the look-up.
//! - A failing message must not fail its neighbours. Unknown rooms are found without an error;
//!   anything else that makes a statement fail costs a rollback and a retry of the batch in
//!   smaller pieces (per room, then per message) until the failing message is isolated. Cheap
//!   when nothing fails, slow only when something does.
//! - If `BEGIN` or `COMMIT` fails, every message of the batch fails with the same
//!   [`StoreError::BatchFailed`]; callers retry (idempotently, with a `client_msg_id`).
//! - Other writes (users, rooms, tokens) are rare and go straight to the pool.
//!
//! # Layout
//!
//! - `store.rs`: [`Store`] (an `Arc` over the pool, the writer's queue and its task),
//!   [`StoreOptions`], connecting, migrations, [`Store::after_each_batch`], [`Store::close`].
//! - `writer/mod.rs`: the writer task and the group commit; `writer/sql.rs`: its statements;
//!   `writer/answer.rs`: the hooks and answers of each batch; `writer/sync.rs`: the WAL synced
//!   apart from the writer; `writer/checkpoint.rs`: the WAL copied into the database file.
//! - `messages.rs`: [`Store::append_message`], [`Store::append_message_with`],
//!   [`Store::queue_message_with`], [`Store::queue_message_then`],
//!   [`Store::queue_message_written_then`], [`Store::history`],
//!   [`Store::messages_since`].
//! - `users.rs`: users and refresh tokens. `rooms.rs`: rooms and members.
//! - `records.rs`: the records and newtypes ([`Seq`], [`MessageId`]), input checks.
//! - `error.rs`: [`StoreError`].
//! - `migrations/sqlite`, `migrations/postgres`: one migration set per backend, embedded at
//!   compile time and run by `connect`. They describe the same tables; keep them in step.

mod error;
mod messages;
mod metrics;
mod records;
mod rooms;
mod store;
mod users;
mod writer;

pub use error::{Result, StoreError};
pub use messages::Committing;
pub use records::{Appended, MessageId, NewMessage, RefreshToken, Room, Seq, StoredMessage, User};
pub use store::{SqliteSync, Store, StoreOptions};
