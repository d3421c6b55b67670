//! A rough group-commit throughput probe, ignored by default:
//! `cargo test -p roomcast-store --release --test throughput -- --ignored --nocapture`.
//! It prints persisted messages per second on a temporary SQLite file, or on the database named
//! by `STORE_BENCH_URL` (which must be empty: the probe creates its rooms). It asserts nothing
//! about speed (the load generator issue owns the benchmark).
//!
//! Each sender is a closed loop (append, wait for the commit, append again), so a batch can
//! hold at most one message per sender: with 256 senders the writer never sees more than 256
//! appends at once, and the rate is bounded by 256 messages per write-and-commit cycle (at
//! least one fsync on SQLite), not by the store. `STORE_BENCH_SENDERS` sets the number of senders (default 4096, as many
//! in-flight appends as the default queue holds, which is what a busy server with thousands of
//! connections offers); the total number of messages stays the same.

use std::time::Instant;

use roomcast_store::{NewMessage, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run it with --ignored --nocapture"]
async fn group_commit_throughput() {
    /// Messages written in all: 400 from each of 256 senders, the probe's first setting.
    const TOTAL: usize = 102_400;
    const ROOMS: usize = 8;
    let senders_count: usize = std::env::var("STORE_BENCH_SENDERS")
        .ok()
        .map(|n| n.parse().expect("STORE_BENCH_SENDERS is a number"))
        .unwrap_or(4096);
    let per_sender = TOTAL.div_ceil(senders_count);
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = std::env::var("STORE_BENCH_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = Store::connect(&url).await.expect("open");
    for room in 0..ROOMS {
        store
            .create_room(&format!("room-{room}"), false, None)
            .await
            .expect("room");
    }
    let started = Instant::now();
    let senders: Vec<_> = (0..senders_count)
        .map(|sender| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..per_sender {
                    store
                        .append_message(NewMessage {
                            room: format!("room-{}", sender % ROOMS),
                            user_id: format!("u{sender}"),
                            username: format!("user {sender}"),
                            content: format!(
                                "message {n} from {sender}: a typical short chat line"
                            ),
                            data: None,
                            client_msg_id: Some(format!("{sender}-{n}")),
                        })
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    let elapsed = started.elapsed();
    let total = senders_count * per_sender;
    println!(
        "{} ({senders_count} senders): {total} messages in {elapsed:.2?}: {:.0} messages/s",
        store.backend_name(),
        total as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
}
