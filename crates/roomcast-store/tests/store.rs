//! The store suite: every case is written once in `cases` and runs twice, as `sqlite::<case>`
//! (always) and `postgres::<case>` (when `DATABASE_URL` is set; see `common`).

#[macro_use]
mod common;

store_suite![
    created_user_is_found_by_id_and_username,
    duplicate_username_or_id_is_a_conflict,
    ensure_user_creates_once_then_returns_the_existing_user,
    invalid_ids_and_names_are_refused_and_never_found,
    refresh_token_is_consumed_once_and_reuse_is_detected,
    revoked_expired_and_orphan_refresh_tokens_are_refused,
    rooms_are_created_found_listed_and_unique,
    private_room_membership_is_recorded,
    room_pages_show_each_viewer_its_rooms_in_order_with_a_cursor,
    append_assigns_gap_free_seqs_per_room,
    retry_with_same_client_msg_id_returns_the_original,
    concurrent_appends_produce_every_seq_exactly_once,
    batch_bigger_than_one_statement_keeps_seqs_gap_free_and_retries_idempotent,
    commit_hooks_see_each_room_in_seq_order_and_only_new_messages,
    queued_messages_keep_the_order_they_were_queued_in,
    outcome_hooks_hear_every_outcome_in_queue_order,
    written_hooks_hear_new_messages_before_any_outcome_of_their_batch,
    the_after_batch_callback_follows_every_hook_of_its_batch,
    hooks_run_on_the_callers_runtime_not_the_writers_thread,
    commits_are_spaced_while_several_senders_write,
    history_pages_back_in_ascending_order,
    messages_since_replays_in_order,
    unknown_room_fails_only_its_own_message_in_a_batch,
    message_the_database_rejects_fails_alone_in_its_batch,
    content_and_names_are_stored_literally,
    reopened_store_keeps_all_messages_in_order,
    appends_after_close_are_refused,
];

mod cases {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use roomcast_store::{Appended, NewMessage, Seq, StoreError, StoredMessage};
    use serde_json::json;

    use crate::common::TestDb;

    /// A message from `user` (whose name is the id upper-cased) with no payload or key.
    pub(super) fn message(room: &str, user: &str, content: &str) -> NewMessage {
        NewMessage {
            room: room.to_owned(),
            user_id: user.to_owned(),
            username: user.to_uppercase(),
            content: content.to_owned(),
            data: None,
            client_msg_id: None,
        }
    }

    /// Like [`message`], with an idempotency key.
    fn keyed(room: &str, user: &str, content: &str, key: &str) -> NewMessage {
        NewMessage {
            client_msg_id: Some(key.to_owned()),
            ..message(room, user, content)
        }
    }

    fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.seq.0).collect()
    }

    fn contents(messages: &[StoredMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.content.as_str()).collect()
    }

    fn now_ms() -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        i64::try_from(since_epoch.as_millis()).expect("millis fit i64")
    }

    /// Appends `count` messages "m1".. to `room` and returns them.
    async fn append_n(db: &TestDb, room: &str, count: usize) -> Vec<StoredMessage> {
        let mut stored = Vec::new();
        for n in 1..=count {
            let (message, appended) = db
                .store
                .append_message(message(room, "u1", &format!("m{n}")))
                .await
                .expect("append");
            assert_eq!(appended, Appended::New);
            stored.push(message);
        }
        stored
    }

    pub(crate) async fn created_user_is_found_by_id_and_username(db: TestDb) {
        let store = &db.store;
        let ada = store
            .create_user("u-ada", "ada", Some("$argon2id$v=19$hash"))
            .await
            .expect("create ada");
        assert_eq!(ada.id, "u-ada");
        assert_eq!(ada.username, "ada");
        assert_eq!(ada.password_hash.as_deref(), Some("$argon2id$v=19$hash"));
        assert!(ada.created_at > 0);

        assert_eq!(store.user_by_id("u-ada").await.unwrap(), Some(ada.clone()));
        assert_eq!(store.user_by_username("ada").await.unwrap(), Some(ada));
        assert_eq!(store.user_by_username("ADA").await.unwrap(), None);
        assert_eq!(store.user_by_id("u-nobody").await.unwrap(), None);
        assert!(store.user_exists("u-ada").await.unwrap());
        assert!(!store.user_exists("u-nobody").await.unwrap());

        let bob = store.create_user("u-bob", "bob", None).await.unwrap();
        assert_eq!(bob.password_hash, None);
    }

    pub(crate) async fn duplicate_username_or_id_is_a_conflict(db: TestDb) {
        let store = &db.store;
        store.create_user("u1", "ada", None).await.unwrap();
        let taken_name = store.create_user("u2", "ada", None).await.unwrap_err();
        assert!(
            matches!(&taken_name, StoreError::Conflict(why) if why.contains("username")),
            "{taken_name:?}"
        );
        let taken_id = store.create_user("u1", "grace", None).await.unwrap_err();
        assert!(
            matches!(&taken_id, StoreError::Conflict(why) if why.contains("user id")),
            "{taken_id:?}"
        );
        assert!(!store.user_exists("u2").await.unwrap());
    }

    pub(crate) async fn ensure_user_creates_once_then_returns_the_existing_user(db: TestDb) {
        let store = &db.store;
        assert!(!store.user_exists("cli-1").await.unwrap());
        let created = store.ensure_user("cli-1", "tester").await.unwrap();
        assert_eq!(created.username, "tester");
        assert_eq!(created.password_hash, None);
        assert!(store.user_exists("cli-1").await.unwrap());

        let again = store.ensure_user("cli-1", "another-name").await.unwrap();
        assert_eq!(again, created, "an existing user is returned unchanged");

        let err = store.ensure_user("cli-2", "tester").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    }

    pub(crate) async fn invalid_ids_and_names_are_refused_and_never_found(db: TestDb) {
        let store = &db.store;
        for (id, name) in [("", "ada"), ("u1", ""), ("u\0", "ada"), ("u1", "a\0da")] {
            let err = store.create_user(id, name, None).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Invalid(_)),
                "{id:?} {name:?}: {err:?}"
            );
        }
        let long = "x".repeat(256);
        let err = store.create_user(&long, "ada", None).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        let err = store.create_room("", false, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");

        store.create_room("lobby", false, None).await.unwrap();
        let err = store
            .append_message(message("lobby", "u1", "nul \0 inside"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        let err = store
            .append_message(keyed("lobby", "u1", "hi", ""))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");

        // Keys that could never be stored are simply absent, on both backends.
        assert_eq!(store.user_by_id("u\0").await.unwrap(), None);
        assert!(!store.user_exists("").await.unwrap());
        assert_eq!(store.room("lob\0by").await.unwrap(), None);
        assert!(store.history("lob\0by", None, 10).await.unwrap().is_empty());
        assert_eq!(store.consume_refresh_token("\0").await.unwrap(), None);
    }

    pub(crate) async fn refresh_token_is_consumed_once_and_reuse_is_detected(db: TestDb) {
        let store = &db.store;
        store.ensure_user("u1", "ada").await.unwrap();
        let expires_at = now_ms() + 60_000;
        store
            .insert_refresh_token("jti-1", "u1", expires_at)
            .await
            .unwrap();

        assert_eq!(
            store
                .consume_refresh_token("jti-1")
                .await
                .unwrap()
                .as_deref(),
            Some("u1")
        );
        // Presented again: refused, and the record says it was a replay and whose.
        assert_eq!(store.consume_refresh_token("jti-1").await.unwrap(), None);
        let record = store.refresh_token("jti-1").await.unwrap().expect("record");
        assert_eq!(record.user_id, "u1");
        assert_eq!(record.expires_at, expires_at);
        assert!(record.used_at.is_some());
        assert_eq!(record.revoked_at, None);

        assert_eq!(
            store.consume_refresh_token("jti-unknown").await.unwrap(),
            None
        );
        assert_eq!(store.refresh_token("jti-unknown").await.unwrap(), None);

        // Concurrent presentations of one token: exactly one wins.
        store
            .insert_refresh_token("jti-race", "u1", expires_at)
            .await
            .unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.consume_refresh_token("jti-race").await })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            if racer.await.unwrap().unwrap().is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    pub(crate) async fn revoked_expired_and_orphan_refresh_tokens_are_refused(db: TestDb) {
        let store = &db.store;
        store.ensure_user("u1", "ada").await.unwrap();
        let later = now_ms() + 60_000;

        store
            .insert_refresh_token("revoked", "u1", later)
            .await
            .unwrap();
        assert!(store.revoke_refresh_token("revoked").await.unwrap());
        assert!(!store.revoke_refresh_token("revoked").await.unwrap());
        assert_eq!(store.consume_refresh_token("revoked").await.unwrap(), None);
        let record = store.refresh_token("revoked").await.unwrap().unwrap();
        assert!(record.revoked_at.is_some() && record.used_at.is_none());
        assert!(!store.revoke_refresh_token("unknown").await.unwrap());

        store
            .insert_refresh_token("expired", "u1", now_ms() - 1)
            .await
            .unwrap();
        assert_eq!(store.consume_refresh_token("expired").await.unwrap(), None);

        let err = store
            .insert_refresh_token("expired", "u1", later)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let err = store
            .insert_refresh_token("orphan", "u-nobody", later)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

        store.insert_refresh_token("a", "u1", later).await.unwrap();
        store.insert_refresh_token("b", "u1", later).await.unwrap();
        // "a", "b" and the unused "expired"; the used and revoked ones are left as they are.
        assert_eq!(store.revoke_user_refresh_tokens("u1").await.unwrap(), 3);
        assert_eq!(store.consume_refresh_token("a").await.unwrap(), None);
        assert_eq!(store.consume_refresh_token("b").await.unwrap(), None);
    }

    pub(crate) async fn rooms_are_created_found_listed_and_unique(db: TestDb) {
        let store = &db.store;
        let lobby = store.create_room("lobby", false, None).await.unwrap();
        assert_eq!(lobby.name, "lobby");
        assert!(!lobby.private);
        assert_eq!(lobby.created_by, None);
        assert_eq!(lobby.last_seq, Seq(0));
        let code = store.create_room("K7QX2M", true, Some("u1")).await.unwrap();

        let err = store.create_room("lobby", true, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

        assert_eq!(store.room("lobby").await.unwrap(), Some(lobby.clone()));
        assert_eq!(store.room("K7QX2M").await.unwrap(), Some(code.clone()));
        assert_eq!(store.room("nowhere").await.unwrap(), None);
        assert_eq!(store.list_rooms().await.unwrap(), vec![lobby, code]);
    }

    pub(crate) async fn room_pages_show_each_viewer_its_rooms_in_order_with_a_cursor(db: TestDb) {
        let store = &db.store;
        for (name, private, creator) in [
            ("r1", false, None),
            ("ann-only", true, Some("ann")),
            ("r2", false, None),
            ("bob-only", true, Some("bob")),
            ("r3", false, None),
        ] {
            store.create_room(name, private, creator).await.unwrap();
        }
        let names = |page: &[roomcast_store::Room]| -> Vec<String> {
            page.iter().map(|room| room.name.clone()).collect()
        };
        // Two at a time for ann: public rooms and her private one, in creation order.
        let (page, next) = store.room_page(Some("ann"), None, 2).await.unwrap();
        assert_eq!(names(&page), ["r1", "ann-only"]);
        let (page, next) = store.room_page(Some("ann"), next, 2).await.unwrap();
        assert_eq!(names(&page), ["r2", "r3"]);
        assert_eq!(next, None, "the last page says so");
        // Without a viewer: public rooms only, and a page that fits all of them has no next.
        let (page, next) = store.room_page(None, None, 3).await.unwrap();
        assert_eq!(names(&page), ["r1", "r2", "r3"]);
        assert_eq!(next, None);
        let (page, _) = store.room_page(Some("bob"), None, 10).await.unwrap();
        assert_eq!(names(&page), ["r1", "r2", "bob-only", "r3"]);
        let (page, next) = store
            .room_page(Some("bob"), Some(i64::MAX), 10)
            .await
            .unwrap();
        assert!(page.is_empty() && next.is_none(), "past the end");
    }

    pub(crate) async fn private_room_membership_is_recorded(db: TestDb) {
        let store = &db.store;
        let room = store
            .create_room("secret", true, Some("owner"))
            .await
            .unwrap();
        assert!(room.private);
        assert_eq!(room.created_by.as_deref(), Some("owner"));
        assert!(store.is_member("secret", "owner").await.unwrap());
        assert!(!store.is_member("secret", "guest").await.unwrap());

        store.add_member("secret", "guest").await.unwrap();
        store.add_member("secret", "guest").await.unwrap();
        assert!(store.is_member("secret", "guest").await.unwrap());
        assert!(!store.is_member("nowhere", "guest").await.unwrap());

        let err = store.add_member("nowhere", "guest").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    }

    pub(crate) async fn append_assigns_gap_free_seqs_per_room(db: TestDb) {
        let store = &db.store;
        store.create_room("a", false, None).await.unwrap();
        store.create_room("b", false, None).await.unwrap();
        let mut a_seqs = Vec::new();
        let mut b_seqs = Vec::new();
        for n in 0..6 {
            let (m, _) = store.append_message(message("a", "u1", "x")).await.unwrap();
            a_seqs.push(m.seq.0);
            if n % 2 == 0 {
                let (m, _) = store.append_message(message("b", "u2", "y")).await.unwrap();
                b_seqs.push(m.seq.0);
            }
        }
        assert_eq!(a_seqs, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(b_seqs, vec![1, 2, 3]);
        assert_eq!(store.room("a").await.unwrap().unwrap().last_seq, Seq(6));
        assert_eq!(store.room("b").await.unwrap().unwrap().last_seq, Seq(3));

        let (stored, appended) = store
            .append_message(NewMessage {
                data: Some(json!({"kind": "poll", "options": [1, 2]})),
                ..message("a", "u1", "with data")
            })
            .await
            .unwrap();
        assert_eq!(appended, Appended::New);
        assert_eq!(stored.room, "a");
        assert_eq!(stored.user_id, "u1");
        assert_eq!(stored.username, "U1");
        assert!(stored.created_at > 0);
        assert_eq!(stored.id.0.len(), 36, "a hyphenated UUID: {}", stored.id);
        let last = store.history("a", None, 1).await.unwrap();
        assert_eq!(last, vec![stored]);
    }

    pub(crate) async fn retry_with_same_client_msg_id_returns_the_original(db: TestDb) {
        let store = &db.store;
        store.create_room("a", false, None).await.unwrap();
        store.create_room("b", false, None).await.unwrap();

        let (first, appended) = store
            .append_message(keyed("a", "u1", "hello", "k1"))
            .await
            .unwrap();
        assert_eq!(appended, Appended::New);
        assert_eq!(first.seq, Seq(1));
        assert_eq!(first.client_msg_id.as_deref(), Some("k1"));

        // A retry, even with other content, gets the original back and uses no seq.
        let (retry, appended) = store
            .append_message(keyed("a", "u1", "hello (edited)", "k1"))
            .await
            .unwrap();
        assert_eq!(appended, Appended::Duplicate);
        assert_eq!(retry, first);

        // The key is scoped to (room, user).
        let (other_user, appended) = store
            .append_message(keyed("a", "u2", "hello", "k1"))
            .await
            .unwrap();
        assert_eq!((appended, other_user.seq), (Appended::New, Seq(2)));
        let (other_room, appended) = store
            .append_message(keyed("b", "u1", "hello", "k1"))
            .await
            .unwrap();
        assert_eq!((appended, other_room.seq), (Appended::New, Seq(1)));
        let (next, _) = store
            .append_message(message("a", "u1", "next"))
            .await
            .unwrap();
        assert_eq!(next.seq, Seq(3));

        // Retries racing each other, likely in one batch: one message, one seq.
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.append_message(keyed("a", "u3", "race", "k2")).await },
                )
            })
            .collect();
        let mut ids = HashSet::new();
        let mut new = 0;
        for racer in racers {
            let (stored, appended) = racer.await.unwrap().unwrap();
            assert_eq!(stored.seq, Seq(4));
            ids.insert(stored.id);
            new += usize::from(appended == Appended::New);
        }
        assert_eq!((ids.len(), new), (1, 1));
        assert_eq!(
            seqs(&store.history("a", None, 100).await.unwrap()),
            vec![1, 2, 3, 4]
        );
    }

    pub(crate) async fn concurrent_appends_produce_every_seq_exactly_once(db: TestDb) {
        const TASKS: usize = 8;
        const PER_TASK: usize = 200;
        let store = &db.store;
        store.create_room("busy", false, None).await.unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::with_capacity(PER_TASK);
                    for n in 0..PER_TASK {
                        let content = format!("t{task}-{n}");
                        let user = format!("u{task}");
                        let (stored, _) = store
                            .append_message(message("busy", &user, &content))
                            .await
                            .expect("append");
                        seqs.push(stored.seq.0);
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let seqs = task.await.unwrap();
            // One task's messages are committed in the order it sent them.
            assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
            all.extend(seqs);
        }
        all.sort_unstable();
        let expected: Vec<u64> = (1..=(TASKS * PER_TASK) as u64).collect();
        assert_eq!(all, expected);

        let history = store.history("busy", None, TASKS * PER_TASK).await.unwrap();
        assert_eq!(seqs(&history), expected);
        let ids: HashSet<_> = history.iter().map(|m| &m.id).collect();
        assert_eq!(ids.len(), TASKS * PER_TASK);
    }

    /// Queues `messages` behind a held write lock, so they commit in as few batches as the
    /// writer allows, and returns each one's outcome in the order given.
    async fn append_together(
        db: &TestDb,
        messages: Vec<NewMessage>,
    ) -> Vec<(StoredMessage, Appended)> {
        let hold = db.hold_writes().await;
        let appends: Vec<_> = messages
            .into_iter()
            .map(|message| {
                let store = db.store.clone();
                tokio::spawn(async move { store.append_message(message).await })
            })
            .collect();
        // Long enough for the tasks to queue; the outcome does not depend on it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        hold.release().await;
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            outcomes.push(append.await.unwrap().expect("append"));
        }
        outcomes
    }

    pub(crate) async fn batch_bigger_than_one_statement_keeps_seqs_gap_free_and_retries_idempotent(
        db: TestDb,
    ) {
        // The writer looks keys up and inserts rows 1024 to a statement, then in power-of-two
        // remainders: these batches span several statements of each kind.
        const FIRST: usize = 1500;
        /// Retries of the first messages, each followed by a new message.
        const RETRIED: usize = 1100;
        let store = &db.store;
        store.create_room("a", false, None).await.unwrap();
        store.create_room("b", false, None).await.unwrap();
        let room = |n: usize| if n.is_multiple_of(2) { "a" } else { "b" };
        let sent = |n: usize| keyed(room(n), "u1", &format!("m{n}"), &format!("k{n}"));

        let first = append_together(&db, (0..FIRST).map(sent).collect()).await;
        assert!(first.iter().all(|(_, appended)| *appended == Appended::New));
        for name in ["a", "b"] {
            let mut seqs: Vec<u64> = first
                .iter()
                .filter(|(m, _)| m.room == name)
                .map(|(m, _)| m.seq.0)
                .collect();
            seqs.sort_unstable();
            assert_eq!(
                seqs,
                (1..=(FIRST / 2) as u64).collect::<Vec<_>>(),
                "room {name}"
            );
        }

        let second: Vec<NewMessage> = (0..RETRIED)
            .flat_map(|n| [sent(n), sent(FIRST + n)])
            .collect();
        let outcomes = append_together(&db, second).await;
        for (index, (stored, appended)) in outcomes.iter().enumerate() {
            if index.is_multiple_of(2) {
                let original = &first[index / 2].0;
                assert_eq!((stored, *appended), (original, Appended::Duplicate));
            } else {
                assert_eq!(*appended, Appended::New, "{stored:?}");
            }
        }
        for name in ["a", "b"] {
            let history = store.history(name, None, 10_000).await.unwrap();
            let expected = (FIRST + RETRIED) / 2;
            assert_eq!(seqs(&history), (1..=expected as u64).collect::<Vec<_>>());
            let room_row = store.room(name).await.unwrap().unwrap();
            assert_eq!(room_row.last_seq, Seq(expected as u64));
        }
    }

    pub(crate) async fn commit_hooks_see_each_room_in_seq_order_and_only_new_messages(db: TestDb) {
        const TASKS: usize = 8;
        const PER_TASK: usize = 50;
        let store = &db.store;
        store.create_room("a", false, None).await.unwrap();
        store.create_room("b", false, None).await.unwrap();
        let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let hook = |seen: &Arc<Mutex<Vec<(String, u64)>>>| {
            let seen = Arc::clone(seen);
            move |stored: &StoredMessage| {
                seen.lock()
                    .unwrap()
                    .push((stored.room.clone(), stored.seq.0));
            }
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    for n in 0..PER_TASK {
                        let room = if (task + n) % 2 == 0 { "a" } else { "b" };
                        let key = format!("t{task}-{n}");
                        store
                            .append_message_with(keyed(room, "u1", &key, &key), hook(&seen))
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // A retry and a failure call no hook.
        let (_, appended) = store
            .append_message_with(keyed("a", "u1", "again", "t0-0"), hook(&seen))
            .await
            .unwrap();
        assert_eq!(appended, Appended::Duplicate);
        store
            .append_message_with(message("missing", "u1", "x"), hook(&seen))
            .await
            .unwrap_err();

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), TASKS * PER_TASK);
        for room in ["a", "b"] {
            let order: Vec<u64> = seen
                .iter()
                .filter(|(r, _)| r == room)
                .map(|&(_, seq)| seq)
                .collect();
            let expected: Vec<u64> = (1..=(TASKS * PER_TASK / 2) as u64).collect();
            assert_eq!(order, expected, "hooks of room {room} out of seq order");
        }

        // A panicking hook is contained: its message is kept and the writer goes on.
        let (kept, _) = store
            .append_message_with(message("a", "u1", "boom"), |_: &StoredMessage| {
                panic!("a hook that panics")
            })
            .await
            .expect("the message is committed anyway");
        let (next, _) = store
            .append_message(message("a", "u1", "after"))
            .await
            .unwrap();
        assert_eq!(next.seq.0, kept.seq.0 + 1);
    }

    pub(crate) async fn queued_messages_keep_the_order_they_were_queued_in(db: TestDb) {
        // One sender queues many messages before awaiting any commit (a pipelining client):
        // seqs and hooks follow queue order, and a retry queued among them answers with the
        // original seq and calls no hook.
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut committing = Vec::new();
        for n in 1..=200u64 {
            let key = format!("k{n}");
            let seen = Arc::clone(&seen);
            let queued = store
                .queue_message_with(keyed("r", "u1", &key, &key), move |stored| {
                    seen.lock().unwrap().push(stored.content.clone());
                })
                .await
                .expect("queued");
            committing.push(queued);
        }
        let retry = store
            .queue_message_with(keyed("r", "u1", "again", "k7"), |_| {
                panic!("a retry calls no hook")
            })
            .await
            .unwrap();
        for (n, queued) in (1..).zip(committing) {
            let (stored, appended) = queued.await.expect("committed");
            assert_eq!((stored.seq.0, appended), (n, Appended::New));
        }
        let (original, appended) = retry.await.unwrap();
        assert_eq!((original.seq.0, appended), (7, Appended::Duplicate));
        let expected: Vec<String> = (1..=200).map(|n| format!("k{n}")).collect();
        assert_eq!(*seen.lock().unwrap(), expected);
        // Refused at once, before queueing.
        let refused = store
            .queue_message_with(message("r", "u1", "nul\0"), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::Invalid(_)), "{refused}");
    }

    pub(crate) async fn written_hooks_hear_new_messages_before_any_outcome_of_their_batch(
        db: TestDb,
    ) {
        // `queue_message_written_then`: the commit hook hears each new message once, in seq
        // order, and before that message's outcome; a retry and a failure have only an outcome.
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let hooks = |heard: &Arc<Mutex<Vec<String>>>| {
            let (written, outcome) = (Arc::clone(heard), Arc::clone(heard));
            (
                move |stored: &StoredMessage| {
                    written
                        .lock()
                        .unwrap()
                        .push(format!("written {}", stored.seq.0));
                },
                move |result: Result<(StoredMessage, Appended), StoreError>| {
                    let line = match result {
                        Ok((stored, appended)) => format!("{appended:?} {}", stored.seq.0),
                        Err(StoreError::NotFound(_)) => "not found".to_owned(),
                        Err(err) => format!("other error: {err}"),
                    };
                    outcome.lock().unwrap().push(line);
                },
            )
        };
        for n in 1..=30u64 {
            let key = format!("k{n}");
            let (on_written, on_outcome) = hooks(&heard);
            store
                .queue_message_written_then(keyed("r", "u1", &key, &key), on_written, on_outcome)
                .await
                .expect("queued");
        }
        for retried in [
            message("missing", "u1", "x"),
            keyed("r", "u1", "again", "k3"),
        ] {
            let (on_written, on_outcome) = hooks(&heard);
            store
                .queue_message_written_then(retried, on_written, on_outcome)
                .await
                .unwrap();
        }
        // Answered after every hook above has run.
        store
            .append_message(message("r", "u1", "last"))
            .await
            .unwrap();
        let heard = heard.lock().unwrap().clone();
        let written: Vec<&String> = heard.iter().filter(|l| l.starts_with("written")).collect();
        let expected: Vec<String> = (1..=30).map(|seq| format!("written {seq}")).collect();
        assert_eq!(written, expected.iter().collect::<Vec<_>>(), "{heard:?}");
        let outcomes: Vec<&String> = heard.iter().filter(|l| !l.starts_with("written")).collect();
        let mut expected: Vec<String> = (1..=30).map(|seq| format!("New {seq}")).collect();
        expected.extend(["not found".to_owned(), "Duplicate 3".to_owned()]);
        assert_eq!(outcomes, expected.iter().collect::<Vec<_>>(), "{heard:?}");
        for seq in 1..=30 {
            let at = |line: String| heard.iter().position(|l| *l == line).unwrap();
            assert!(
                at(format!("written {seq}")) < at(format!("New {seq}")),
                "seq {seq} was answered before its commit hook: {heard:?}"
            );
        }
    }

    pub(crate) async fn outcome_hooks_hear_every_outcome_in_queue_order(db: TestDb) {
        // `queue_message_then`: no future to await; the hook hears new messages (in seq order),
        // a retry (the original), and a message that could not be written (no room), in the
        // order they were queued.
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let hook = |heard: &Arc<Mutex<Vec<String>>>| {
            let heard = Arc::clone(heard);
            move |outcome: Result<(StoredMessage, Appended), StoreError>| {
                let line = match outcome {
                    Ok((stored, appended)) => {
                        format!("{appended:?} {} {}", stored.seq.0, stored.content)
                    }
                    Err(StoreError::NotFound(_)) => "not found".to_owned(),
                    Err(err) => format!("other error: {err}"),
                };
                heard.lock().unwrap().push(line);
            }
        };
        for n in 1..=50u64 {
            let key = format!("k{n}");
            store
                .queue_message_then(keyed("r", "u1", &key, &key), hook(&heard))
                .await
                .expect("queued");
        }
        store
            .queue_message_then(keyed("r", "u1", "again", "k7"), hook(&heard))
            .await
            .unwrap();
        store
            .queue_message_then(message("missing", "u1", "x"), hook(&heard))
            .await
            .unwrap();
        // Refused at once: the hook is never called.
        let refused = store
            .queue_message_then(message("r", "u1", "nul\0"), |_| panic!("refused at once"))
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::Invalid(_)), "{refused}");
        // A plain append queued last is answered after every hook above has run.
        let (last, _) = store
            .append_message(message("r", "u1", "last"))
            .await
            .unwrap();
        assert_eq!(last.seq.0, 51);
        let mut expected: Vec<String> = (1..=50).map(|n| format!("New {n} k{n}")).collect();
        expected.push("Duplicate 7 k7".to_owned());
        expected.push("not found".to_owned());
        assert_eq!(*heard.lock().unwrap(), expected);
    }

    /// Polls `done` every 10 ms; after 10 s, fails with `why()`.
    async fn wait_for(done: impl Fn() -> bool, why: impl Fn() -> String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{}", why());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn the_after_batch_callback_follows_every_hook_of_its_batch(db: TestDb) {
        // The callback runs on the answering task after each batch's hooks: what it sees of the
        // hooks' work only grows, and once everything is answered it has seen all of it.
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        let hooked = Arc::new(Mutex::new(0usize));
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let (hooked, seen) = (Arc::clone(&hooked), Arc::clone(&seen));
            assert!(store.after_each_batch(move || {
                let count = *hooked.lock().unwrap();
                seen.lock().unwrap().push(count);
            }));
        }
        assert!(!store.after_each_batch(|| {}), "one callback per store");
        for n in 1..=50u64 {
            let hooked = Arc::clone(&hooked);
            store
                .queue_message_then(message("r", "u1", &format!("m{n}")), move |outcome| {
                    outcome.expect("stored");
                    *hooked.lock().unwrap() += 1;
                })
                .await
                .expect("queued");
        }
        wait_for(
            || seen.lock().unwrap().last() == Some(&50),
            || {
                format!(
                    "the callback never saw all 50 hooks: {:?}",
                    seen.lock().unwrap()
                )
            },
        )
        .await;
        let seen = seen.lock().unwrap().clone();
        assert!(seen.is_sorted(), "{seen:?}");
        assert!(seen.len() <= 50, "at most one call per batch: {seen:?}");
    }

    pub(crate) async fn hooks_run_on_the_callers_runtime_not_the_writers_thread(db: TestDb) {
        // The writer has a thread of its own; the hooks are the caller's code and run on the
        // caller's runtime, where they cannot hold up the writer between two statements.
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        // What the caller's runtime names the threads its tasks run on.
        let callers = tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert!(callers.is_some(), "the runtime names its threads");
        let threads = Arc::new(Mutex::new(Vec::new()));
        let record = |threads: &Arc<Mutex<Vec<Option<String>>>>| {
            let threads = Arc::clone(threads);
            move || {
                let name = std::thread::current().name().map(str::to_owned);
                threads.lock().unwrap().push(name);
            }
        };
        assert!(store.after_each_batch(record(&threads)));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let hook = record(&threads);
        store
            .queue_message_then(message("r", "u1", "m"), move |outcome| {
                outcome.expect("stored");
                hook();
                let _ = done_tx.send(());
            })
            .await
            .expect("queued");
        let on_commit = record(&threads);
        store
            .append_message_with(message("r", "u1", "n"), move |_| on_commit())
            .await
            .expect("appended");
        done_rx.await.expect("the hook ran");
        // The after-batch callback follows the hooks of its batch: wait for one after both.
        wait_for(
            || threads.lock().unwrap().len() >= 3,
            || {
                format!(
                    "two hooks and an after-batch callback: {:?}",
                    threads.lock().unwrap()
                )
            },
        )
        .await;
        let threads = threads.lock().unwrap().clone();
        assert!(threads.iter().all(|name| *name == callers), "{threads:?}");
    }

    pub(crate) async fn commits_are_spaced_while_several_senders_write(db: TestDb) {
        // Each message's batch: how many after-batch calls had run when its hook ran.
        let store = db.open_with_commit_interval(Duration::from_secs(1)).await;
        store.create_room("r", false, None).await.unwrap();
        let ended = Arc::new(Mutex::new(0usize));
        let batch_of = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
        {
            let ended = Arc::clone(&ended);
            store.after_each_batch(move || *ended.lock().unwrap() += 1);
        }
        let queue = |content: &str| {
            let (ended, batch_of) = (Arc::clone(&ended), Arc::clone(&batch_of));
            let content = content.to_owned();
            store.queue_message_then(message("r", "u1", &content), move |outcome| {
                outcome.expect("stored");
                let batch = *ended.lock().unwrap();
                batch_of.lock().unwrap().push((content, batch));
            })
        };
        let wait_for = |count: usize| {
            let batch_of = Arc::clone(&batch_of);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while batch_of.lock().unwrap().len() < count {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "appends never committed"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        // Several messages behind a held write lock commit together: a batch of more than one.
        let hold = db.hold_writes().await;
        queue("a1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for content in ["a2", "a3", "a4"] {
            queue(content).await.unwrap();
        }
        hold.release().await;
        wait_for(4).await;
        // So the next batch waits out the interval, and a message sent 100 ms after the first
        // joins it, where without the interval each would have been committed at once.
        queue("x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue("y").await.unwrap();
        wait_for(6).await;
        let batch_of = batch_of.lock().unwrap().clone();
        let batch = |content: &str| batch_of.iter().find(|(c, _)| c == content).unwrap().1;
        assert_eq!(batch("x"), batch("y"), "{batch_of:?}");
        assert!(batch("x") > batch("a4"), "{batch_of:?}");

        // One message at a time (a batch of one each): nothing waits, even with an interval
        // far longer than the test may take.
        let lone = db.open_with_commit_interval(Duration::from_secs(60)).await;
        tokio::time::timeout(Duration::from_secs(20), async {
            for n in 1..=3 {
                lone.append_message(message("r", "u2", &format!("z{n}")))
                    .await
                    .expect("stored");
            }
        })
        .await
        .expect("a lone sender's appends do not wait for the commit interval");
        store.close().await;
        lone.close().await;
    }

    pub(crate) async fn history_pages_back_in_ascending_order(db: TestDb) {
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        store.create_room("other", false, None).await.unwrap();
        append_n(&db, "r", 10).await;
        append_n(&db, "other", 3).await;

        let newest = store.history("r", None, 4).await.unwrap();
        assert_eq!(seqs(&newest), vec![7, 8, 9, 10]);
        assert_eq!(contents(&newest), vec!["m7", "m8", "m9", "m10"]);
        let older = store.history("r", Some(newest[0].seq), 4).await.unwrap();
        assert_eq!(seqs(&older), vec![3, 4, 5, 6]);
        let oldest = store.history("r", Some(older[0].seq), 4).await.unwrap();
        assert_eq!(seqs(&oldest), vec![1, 2]);
        assert!(
            store
                .history("r", Some(Seq(1)), 4)
                .await
                .unwrap()
                .is_empty()
        );

        assert_eq!(
            seqs(&store.history("r", None, 100).await.unwrap()).len(),
            10
        );
        assert!(store.history("r", None, 0).await.unwrap().is_empty());
        assert!(store.history("nowhere", None, 10).await.unwrap().is_empty());
        assert_eq!(
            seqs(&store.history("r", Some(Seq(u64::MAX)), 2).await.unwrap()),
            vec![9, 10]
        );
    }

    pub(crate) async fn messages_since_replays_in_order(db: TestDb) {
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        let appended = append_n(&db, "r", 10).await;

        assert_eq!(
            store.messages_since("r", Seq(0), 100).await.unwrap(),
            appended
        );
        assert_eq!(
            seqs(&store.messages_since("r", Seq(7), 100).await.unwrap()),
            vec![8, 9, 10]
        );
        assert_eq!(
            seqs(&store.messages_since("r", Seq(2), 3).await.unwrap()),
            vec![3, 4, 5]
        );
        assert!(
            store
                .messages_since("r", Seq(10), 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .messages_since("nowhere", Seq(0), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub(crate) async fn unknown_room_fails_only_its_own_message_in_a_batch(db: TestDb) {
        let store = &db.store;
        store.create_room("real", false, None).await.unwrap();
        // Block the writer so that every append below queues up and they commit together.
        let hold = db.hold_writes().await;
        let appends: Vec<_> = (0..40)
            .map(|n| {
                let store = store.clone();
                let room = if n % 4 == 1 { "missing" } else { "real" };
                let content = format!("m{n}");
                tokio::spawn(async move {
                    store
                        .append_message(keyed(room, "u1", &content, &content))
                        .await
                })
            })
            .collect();
        // Long enough for the 40 tasks to queue; the outcome does not depend on it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        hold.release().await;

        let mut seqs_of_real = Vec::new();
        for (n, append) in appends.into_iter().enumerate() {
            match append.await.unwrap() {
                Ok((stored, Appended::New)) => {
                    assert_ne!(n % 4, 1, "m{n} went to the missing room");
                    seqs_of_real.push(stored.seq.0);
                }
                Err(StoreError::NotFound(why)) => {
                    assert_eq!(n % 4, 1, "m{n}: {why}");
                    assert!(why.contains("missing"), "{why}");
                }
                other => panic!("m{n}: {other:?}"),
            }
        }
        seqs_of_real.sort_unstable();
        assert_eq!(seqs_of_real, (1..=30).collect::<Vec<u64>>());
        assert_eq!(store.room("real").await.unwrap().unwrap().last_seq, Seq(30));
        assert_eq!(store.history("real", None, 100).await.unwrap().len(), 30);
    }

    pub(crate) async fn message_the_database_rejects_fails_alone_in_its_batch(db: TestDb) {
        let store = &db.store;
        store.create_room("a", false, None).await.unwrap();
        store.create_room("b", false, None).await.unwrap();
        // A trigger stands in for any failure the store cannot foresee: it makes the batch's
        // INSERT fail, so the writer must retry room by room, then message by message.
        if db.is_postgres() {
            db.execute(
                "CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.content = 'poison' THEN RAISE EXCEPTION 'poison'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            db.execute(
                "CREATE TRIGGER reject_poison BEFORE INSERT ON messages \
                 FOR EACH ROW EXECUTE FUNCTION reject_poison()",
            )
            .await;
        } else {
            db.execute(
                "CREATE TRIGGER reject_poison BEFORE INSERT ON messages \
                 WHEN NEW.content = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END",
            )
            .await;
        }

        let hold = db.hold_writes().await;
        let appends: Vec<_> = (0..30)
            .map(|n| {
                let store = store.clone();
                let room = if n % 2 == 0 { "a" } else { "b" };
                let content = if n == 10 {
                    "poison".to_owned()
                } else {
                    format!("m{n}")
                };
                tokio::spawn(
                    async move { store.append_message(message(room, "u1", &content)).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        hold.release().await;

        let mut a_seqs = Vec::new();
        let mut b_seqs = Vec::new();
        for (n, append) in appends.into_iter().enumerate() {
            match append.await.unwrap() {
                Ok((stored, Appended::New)) if n != 10 => {
                    if stored.room == "a" {
                        a_seqs.push(stored.seq.0)
                    } else {
                        b_seqs.push(stored.seq.0)
                    }
                }
                Err(StoreError::Backend(err)) if n == 10 => {
                    assert!(err.to_string().contains("poison"), "{err}");
                }
                other => panic!("m{n}: {other:?}"),
            }
        }
        a_seqs.sort_unstable();
        b_seqs.sort_unstable();
        assert_eq!(a_seqs, (1..=14).collect::<Vec<u64>>());
        assert_eq!(b_seqs, (1..=15).collect::<Vec<u64>>());
        assert_eq!(store.history("a", None, 100).await.unwrap().len(), 14);
        assert_eq!(store.room("a").await.unwrap().unwrap().last_seq, Seq(14));
    }

    pub(crate) async fn content_and_names_are_stored_literally(db: TestDb) {
        let store = &db.store;
        let room = r#"room'"; DROP TABLE rooms; --"#;
        let user = "u'); DELETE FROM users; --";
        store
            .create_user(user, "Robert'); DROP TABLE users;--", None)
            .await
            .unwrap();
        store.create_room(room, true, Some(user)).await.unwrap();
        let texts = [
            "'; DROP TABLE messages; --",
            r#"" OR 1=1 --"#,
            r"back\slash \' \\",
            "100% _wild_ [cards]",
            "$1 ? :name @p",
            "emoji 🦀 and ünïcödé, tab\tnew\nline",
            "",
        ];
        for (n, text) in texts.into_iter().enumerate() {
            store
                .append_message(NewMessage {
                    data: Some(
                        json!({"quote": "it's \"quoted\"", "sql": "'); --", "nul": "\u{0}"}),
                    ),
                    ..keyed(room, user, text, &format!("k'{n}"))
                })
                .await
                .unwrap_or_else(|err| panic!("{text:?}: {err}"));
        }
        let history = store.history(room, None, 100).await.unwrap();
        assert_eq!(contents(&history), texts.to_vec());
        for stored in &history {
            assert_eq!(stored.room, room);
            assert_eq!(stored.user_id, user);
            assert_eq!(
                stored.data,
                Some(json!({"quote": "it's \"quoted\"", "sql": "'); --", "nul": "\u{0}"}))
            );
        }
        assert!(store.is_member(room, user).await.unwrap());
        let robert = store.user_by_id(user).await.unwrap().unwrap();
        assert_eq!(robert.username, "Robert'); DROP TABLE users;--");
        assert_eq!(store.list_rooms().await.unwrap().len(), 1);
    }

    pub(crate) async fn reopened_store_keeps_all_messages_in_order(mut db: TestDb) {
        db.store.create_room("a", false, None).await.unwrap();
        db.store.create_room("b", false, None).await.unwrap();
        db.store.ensure_user("u1", "U1").await.unwrap();
        let mut before = Vec::new();
        for n in 0..50 {
            let room = if n % 3 == 0 { "b" } else { "a" };
            let (stored, _) = db
                .store
                .append_message(keyed(room, "u1", &format!("m{n}"), &format!("k{n}")))
                .await
                .unwrap();
            before.push(stored);
        }
        let a_before = db.store.history("a", None, 100).await.unwrap();
        let b_before = db.store.history("b", None, 100).await.unwrap();

        db.reopen().await;

        let a_after = db.store.history("a", None, 100).await.unwrap();
        let b_after = db.store.history("b", None, 100).await.unwrap();
        assert_eq!(a_after, a_before);
        assert_eq!(b_after, b_before);
        assert_eq!(seqs(&a_after), (1..=33).collect::<Vec<u64>>());
        assert_eq!(seqs(&b_after), (1..=17).collect::<Vec<u64>>());
        assert!(db.store.user_exists("u1").await.unwrap());

        // The counters survive too, and so do idempotency keys.
        let (next, _) = db
            .store
            .append_message(message("a", "u1", "after"))
            .await
            .unwrap();
        assert_eq!(next.seq, Seq(34));
        let (retry, appended) = db
            .store
            .append_message(keyed("a", "u1", "m1", "k1"))
            .await
            .unwrap();
        assert_eq!(appended, Appended::Duplicate);
        assert_eq!(retry, before[1]);
        db.store.close().await;
    }

    pub(crate) async fn appends_after_close_are_refused(db: TestDb) {
        let store = &db.store;
        store.create_room("r", false, None).await.unwrap();
        append_n(&db, "r", 3).await;
        let clone = store.clone();
        store.close().await;
        let err = clone
            .append_message(message("r", "u1", "late"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Closed), "{err:?}");
        store.close().await;
    }
}

/// SQLite only: the WAL is copied into the database file by the store's checkpoint task, not
/// by the writer's commits (whose automatic checkpoints are off), so it must still happen.
mod sqlite_only {
    use std::time::{Duration, Instant};

    use roomcast_store::{NewMessage, Store};

    use super::cases::message;

    /// Messages of a page each, 64 in flight, until `stop` or `limit` messages.
    fn keep_writing(
        store: &Store,
        limit: usize,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<usize> {
        let store = store.clone();
        tokio::spawn(async move {
            let mut appends = tokio::task::JoinSet::new();
            let mut sent = 0;
            while sent < limit && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                while appends.len() < 64 && sent < limit {
                    let store = store.clone();
                    let message = message("r", "u1", &format!("{sent:06} {}", "x".repeat(4000)));
                    appends.spawn(async move { store.append_message(message).await.unwrap() });
                    sent += 1;
                }
                appends.join_next().await.unwrap().unwrap();
            }
            while let Some(done) = appends.join_next().await {
                done.unwrap();
            }
            sent
        })
    }

    /// Under steady writes SQLite never rewinds the WAL by itself (a passive checkpoint never
    /// catches up with a writer that keeps appending): the file grew to 600+ MB in 10 s of
    /// load. The store makes its writer catch up between two batches, and cuts the file back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_messages_keep_coming() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.db");
        let wal = dir.path().join("store.db-wal");
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("opening a fresh SQLite store");
        store.create_room("r", false, None).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // 160 MB of messages at most: far more than the 16 MiB the WAL may keep.
        let writer = keep_writing(&store, 40_000, std::sync::Arc::clone(&stop));
        let wal_size = || std::fs::metadata(&wal).map_or(0, |meta| meta.len());
        let (mut largest, mut shrank) = (0, false);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !writer.is_finished() && Instant::now() < deadline {
            let size = wal_size();
            if size < largest {
                shrank = true;
                break;
            }
            largest = size;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = writer.await.unwrap();
        assert!(
            shrank,
            "the WAL only grew, to {largest} bytes, over {sent} messages written without pause"
        );
        assert!(
            largest > 16 << 20,
            "it was cut back from past its limit: {largest}"
        );
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_into_the_database_file_while_the_store_runs() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.db");
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("opening a fresh SQLite store");
        store.create_room("r", false, None).await.unwrap();
        // Let the store's first checkpoint take the room in, then measure from there.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = std::fs::metadata(&path).unwrap().len();

        // ~4 MB of messages, in a few large batches.
        let mut appends = tokio::task::JoinSet::new();
        for n in 0..4000 {
            let store = store.clone();
            appends.spawn(async move {
                let message = NewMessage {
                    room: "r".to_owned(),
                    user_id: "u1".to_owned(),
                    username: "u1".to_owned(),
                    content: format!("{n:04} {}", "x".repeat(1000)),
                    data: None,
                    client_msg_id: None,
                };
                store.append_message(message).await.unwrap();
            });
        }
        while let Some(done) = appends.join_next().await {
            done.unwrap();
        }

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let size = std::fs::metadata(&path).unwrap().len();
            if size > before + 3_000_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the database file stayed at {size} bytes (from {before}): no checkpoint ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.close().await;
    }

    /// `roomcast_store_sync_seconds_count` of `store`: how many WAL syncs the syncer made.
    fn syncs(registry: &prometheus_client::registry::Registry) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("roomcast_store_sync_seconds_count "))
            .expect("the sync histogram is registered")
            .parse()
            .unwrap()
    }

    /// What the two hooks of `queue_message_written_then` saw, in order: `(true, seq)` for a
    /// commit hook, `(false, seq)` for an outcome hook, with the syncs made by then.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(bool, u64, u64)>>>;

    /// Queues `count` messages to room "r" from 8 senders at once, each with both hooks.
    async fn send_with_both_hooks(
        store: &Store,
        registry: &std::sync::Arc<prometheus_client::registry::Registry>,
        count: usize,
    ) -> Seen {
        let seen: Seen = std::sync::Arc::default();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut senders = tokio::task::JoinSet::new();
        for sender in 0..8 {
            let (store, registry, seen, done_tx) = (
                store.clone(),
                registry.clone(),
                seen.clone(),
                done_tx.clone(),
            );
            senders.spawn(async move {
                for n in (sender..count).step_by(8) {
                    let (on_written, on_outcome) = {
                        let (seen_w, registry_w) = (seen.clone(), registry.clone());
                        let (seen, registry, done_tx) =
                            (seen.clone(), registry.clone(), done_tx.clone());
                        (
                            move |stored: &roomcast_store::StoredMessage| {
                                let syncs = syncs(&registry_w);
                                seen_w.lock().unwrap().push((true, stored.seq.0, syncs));
                            },
                            move |outcome: roomcast_store::Result<_>| {
                                let (stored, _): (roomcast_store::StoredMessage, _) =
                                    outcome.expect("stored");
                                let syncs = syncs(&registry);
                                seen.lock().unwrap().push((false, stored.seq.0, syncs));
                                done_tx.send(()).unwrap();
                            },
                        )
                    };
                    let text = format!("message {n}");
                    store
                        .queue_message_written_then(
                            message("r", "u1", &text),
                            on_written,
                            on_outcome,
                        )
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(sent) = senders.join_next().await {
            sent.unwrap();
        }
        for _ in 0..count {
            tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
                .await
                .expect("every message is answered")
                .unwrap();
        }
        seen
    }

    /// Opens a fresh SQLite file with `options`, room "r" in it, its metrics registered.
    async fn file_store(
        dir: &tempfile::TempDir,
        options: roomcast_store::StoreOptions,
    ) -> (Store, std::sync::Arc<prometheus_client::registry::Registry>) {
        let path = dir.path().join("store.db");
        let store = Store::connect_with(&format!("sqlite://{}", path.display()), options)
            .await
            .expect("opening a fresh SQLite store");
        store.create_room("r", false, None).await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        store.register_metrics(&mut registry);
        (store, std::sync::Arc::new(registry))
    }

    /// The default on a file: a message's commit hook runs once it is committed, its outcome
    /// only after a sync of the WAL made apart from the writer, and every message of a batch
    /// has its commit hook before any of its outcomes; seqs reach each hook in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_commit_hook_goes_before_the_wal_sync_and_the_answer_after_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (store, registry) = file_store(&dir, Default::default()).await;
        let seen = send_with_both_hooks(&store, &registry, 200).await;
        let seen = seen.lock().unwrap().clone();
        let written: Vec<u64> = seen.iter().filter(|e| e.0).map(|e| e.1).collect();
        let answered: Vec<u64> = seen.iter().filter(|e| !e.0).map(|e| e.1).collect();
        assert_eq!(
            written,
            (1..=200).collect::<Vec<_>>(),
            "commit hooks in seq order"
        );
        assert_eq!(
            answered,
            (1..=200).collect::<Vec<_>>(),
            "answers in seq order"
        );
        for (at, &(is_written, seq, syncs)) in seen.iter().enumerate() {
            if is_written {
                continue;
            }
            let written_at = seen.iter().position(|e| e.0 && e.1 == seq).unwrap();
            assert!(
                written_at < at,
                "seq {seq} was answered before its commit hook"
            );
            assert!(
                syncs >= 1,
                "seq {seq} was answered before any sync of the WAL"
            );
        }
        let made = syncs(&registry);
        assert!(
            (1..=200).contains(&made),
            "one sync per group of commits, at least one: {made}"
        );
        store.close().await;
        // Everything answered is in the file.
        let path = dir.path().join("store.db");
        let reopened = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let history = reopened.history("r", None, 500).await.unwrap();
        assert_eq!(history.len(), 200);
        reopened.close().await;
    }

    /// With `sqlite_hooks_before_sync` off, or with `normal`, every commit is durable as it
    /// returns (or never synced) and nothing is synced apart; the hooks keep their order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_hooks_before_the_sync_no_sync_is_made_apart() {
        for options in [
            roomcast_store::StoreOptions {
                sqlite_hooks_before_sync: false,
                ..Default::default()
            },
            roomcast_store::StoreOptions {
                sqlite_sync: roomcast_store::SqliteSync::Normal,
                ..Default::default()
            },
        ] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (store, registry) = file_store(&dir, options.clone()).await;
            let seen = send_with_both_hooks(&store, &registry, 40).await;
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 80);
            assert_eq!(syncs(&registry), 0, "{options:?}");
            store.close().await;
        }
    }
}
