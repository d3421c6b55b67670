//! A rough group-commit throughput probe, ignored by default:
//! `cargo test -p roomcast-store --release --test throughput -- --ignored --nocapture`.
//! It prints persisted messages per second on a temporary SQLite file, or on the database named
//! by `STORE_BENCH_URL` (which must be empty: the probe creates its rooms). It asserts nothing
//! about speed (the load generator issue owns the benchmark).

use std::time::Instant;

use roomcast_store::{NewMessage, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run it with --ignored --nocapture"]
async fn group_commit_throughput() {
    const SENDERS: usize = 256;
    const PER_SENDER: usize = 400;
    const ROOMS: usize = 8;
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
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
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
    let total = SENDERS * PER_SENDER;
    println!(
        "{}: {total} messages in {elapsed:.2?}: {:.0} messages/s",
        store.backend_name(),
        total as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
}
