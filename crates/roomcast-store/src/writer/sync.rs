//! The syncer: SQLite commits made durable apart from the writer (`sqlite_hooks_before_sync`).
//!
//! With `synchronous=FULL` a commit returns once its WAL frames are written *and* synced, and
//! a batch's broadcast waited for that `fsync` (~1 ms on a quiet disk, 100–400 ms when the disk
//! stalls, and the whole room waited with it). Instead the writer's own connection commits with
//! `synchronous=NORMAL` (the frames reach the OS, which keeps them through a crash of the
//! process), the written hooks run at once, and this thread syncs the WAL file and then lets
//! the batch's callers be answered (`answer.rs`). One `fdatasync` covers every batch committed
//! before it began, so under load several batches share it, and the writer goes on writing
//! while it runs: a stalled disk holds the acks, not the deliveries.
//!
//! What an acknowledged message survives is unchanged: its WAL frames were synced before its
//! ack, as `FULL` would have done at its commit. What changes is what a member may have seen
//! when the machine (not the process) goes down between a commit and its sync: a message that
//! is then not in the history, whose `seq` the room gives again to its next message; its
//! sender got no ack, and a retry with its `client_msg_id` stores it again. SQLite's WAL stays
//! consistent either way (its frames carry checksums; a torn tail is ignored at recovery).
//!
//! How many committed messages may wait for a sync at once is bounded ([`Syncer::reserve`]):
//! past that the writer waits before its next batch, as it waited for each `fsync` before.

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Semaphore, mpsc};

use super::answer::Answer;

/// One committed batch waiting for its sync.
struct SyncRequest {
    /// The batch's number ([`Answer::Written`]).
    number: u64,
    /// The WAL it was committed to (another one only after the writer's connection was
    /// replaced).
    wal: Arc<File>,
    /// Its share of [`Syncer::reserve`]'s bound, given back once synced.
    reserved: u32,
}

/// The syncer thread and the writer's way to it.
pub(crate) struct Syncer {
    requests: std_mpsc::Sender<SyncRequest>,
    thread: JoinHandle<()>,
    room: Arc<Semaphore>,
    capacity: u32,
}

impl Syncer {
    /// Starts the thread. It answers on `answers`, and lets at most `capacity` messages wait
    /// for a sync at once.
    pub(crate) fn start(
        answers: mpsc::Sender<Answer>,
        took: Histogram,
        capacity: usize,
    ) -> std::io::Result<Syncer> {
        let capacity = u32::try_from(capacity.max(1))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        let room = Arc::new(Semaphore::new(capacity as usize));
        let (requests, received) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("roomcast-syncer".to_owned())
            .spawn({
                let room = Arc::clone(&room);
                move || {
                    // However the loop ends (a panic included), a writer waiting for room is
                    // let go, to sync by itself (`Syncer::sync` returns the request).
                    let _closes = CloseOnDrop(Arc::clone(&room));
                    sync_loop(&received, &answers, &room, &took);
                }
            })?;
        Ok(Syncer {
            requests,
            thread,
            room,
            capacity,
        })
    }

    /// Waits until `messages` more may wait for a sync, then hands batch `number`, committed to
    /// `wal`, to the thread. Returns the request's parts when the thread is gone.
    pub(crate) async fn sync(
        &self,
        number: u64,
        wal: Arc<File>,
        messages: usize,
    ) -> Result<(), Arc<File>> {
        let reserved = u32::try_from(messages)
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity);
        match self.room.acquire_many(reserved).await {
            // Given back by the thread, with `add_permits`, once the batch is synced.
            Ok(permit) => permit.forget(),
            Err(_) => return Err(wal),
        }
        let request = SyncRequest {
            number,
            wal,
            reserved,
        };
        self.requests.send(request).map_err(|err| err.0.wal)
    }

    /// Lets the thread sync what it was given, answer it, and end.
    pub(crate) fn stop(self) {
        drop(self.requests);
        if self.thread.join().is_err() {
            tracing::error!("the store's syncer panicked");
        }
    }
}

/// Closes the semaphore it holds when dropped.
struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Syncs what the writer committed, a group at a time, until the writer's end is dropped.
fn sync_loop(
    requests: &std_mpsc::Receiver<SyncRequest>,
    answers: &mpsc::Sender<Answer>,
    room: &Semaphore,
    took: &Histogram,
) {
    while let Ok(first) = requests.recv() {
        // Everything committed by now shares this sync.
        let mut group = vec![first];
        group.extend(requests.try_iter());
        let started = std::time::Instant::now();
        let synced = sync_group(&group);
        took.observe(started.elapsed().as_secs_f64());
        if let Err(err) = &synced {
            tracing::error!(error = %err, "syncing the SQLite WAL failed");
        }
        let reserved: usize = group.iter().map(|request| request.reserved as usize).sum();
        room.add_permits(reserved);
        let up_to = group.last().map_or(0, |request| request.number);
        if answers
            .blocking_send(Answer::Synced(up_to, synced.map_err(Arc::new)))
            .is_err()
        {
            // The answering task is gone: there is no one left to answer.
            return;
        }
    }
}

/// Syncs each WAL file of `group` once.
fn sync_group(group: &[SyncRequest]) -> std::io::Result<()> {
    let mut synced: Vec<&Arc<File>> = Vec::with_capacity(1);
    for request in group {
        if !synced.iter().any(|wal| Arc::ptr_eq(wal, &request.wal)) {
            request.wal.sync_data()?;
            synced.push(&request.wal);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram {
        Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.0, 4,
        ))
    }

    #[tokio::test]
    async fn each_batch_is_answered_as_synced_in_order_and_the_bound_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(File::create(dir.path().join("db-wal")).unwrap());
        let (answers, mut answered) = mpsc::channel(8);
        // Room for two messages: the third batch waits until the first sync gave room back.
        let syncer = Syncer::start(answers, histogram(), 2).unwrap();
        for number in 1..=3 {
            syncer.sync(number, Arc::clone(&wal), 1).await.unwrap();
        }
        let mut up_to = 0;
        while up_to < 3 {
            match answered.recv().await {
                Some(Answer::Synced(number, Ok(()))) => {
                    assert!(number > up_to, "in order: {number} after {up_to}");
                    up_to = number;
                }
                _ => panic!("only successful syncs are answered here"),
            }
        }
        syncer.stop();
        assert!(
            answered.recv().await.is_none(),
            "the thread let its sender go"
        );
    }

    #[tokio::test]
    async fn a_request_after_the_thread_ended_comes_back_to_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(File::create(dir.path().join("db-wal")).unwrap());
        let (answers, answered) = mpsc::channel(1);
        // Nobody answers: the thread's first answer fails, and it ends.
        drop(answered);
        let syncer = Syncer::start(answers, histogram(), 1).unwrap();
        syncer.sync(1, Arc::clone(&wal), 1).await.unwrap();
        for _ in 0..1000 {
            if syncer.thread.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            syncer.thread.is_finished(),
            "the thread ends when nobody answers"
        );
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            syncer.sync(2, Arc::clone(&wal), 1),
        )
        .await
        .expect("not left waiting for room that never comes");
        assert!(
            next.is_err(),
            "the request comes back, to be synced by the writer"
        );
        assert!(wal.sync_data().is_ok());
        syncer.stop();
    }
}
