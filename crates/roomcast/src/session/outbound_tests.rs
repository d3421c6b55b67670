//! `Outbound`: the bound, the wake-ups, the write interval and the direct writes.
use super::*;

#[test]
fn a_full_queue_records_slow_consumer_and_refuses_more() {
    let outbound = Outbound::new(2, 0);
    assert_eq!(outbound.try_send(Frame::from("a")), Ok(()));
    assert_eq!(outbound.try_send(Frame::from("b")), Ok(()));
    assert_eq!(outbound.try_send(Frame::from("c")), Err(SendError::Full));
    assert_eq!(outbound.try_send(Frame::from("d")), Err(SendError::Closed));
    let taken = outbound.take();
    assert!(taken.closing);
    assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
    assert!(
        taken.frames.is_empty(),
        "a slow consumer's backlog is dropped"
    );
}

#[test]
fn a_group_is_queued_whole_or_makes_a_slow_consumer() {
    let outbound = Outbound::new(3, 0);
    outbound.try_send(Frame::from("a")).unwrap();
    let mut group = vec![Frame::from("b"), Frame::from("c")];
    assert_eq!(outbound.try_send_many(&mut group), Ok(2));
    assert!(group.is_empty());
    assert_eq!(
        outbound.take().frames,
        [Frame::from("a"), Frame::from("b"), Frame::from("c")].map(Outgoing::from)
    );
    outbound.try_send(Frame::from("d")).unwrap();
    let mut group = vec![Frame::from("e"), Frame::from("f"), Frame::from("g")];
    assert_eq!(outbound.try_send_many(&mut group), Err(SendError::Full));
    assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
    assert!(outbound.take().frames.is_empty(), "the backlog is dropped");
    let mut group = vec![Frame::from("h")];
    assert_eq!(outbound.try_send_many(&mut group), Err(SendError::Closed));
}

#[test]
fn a_framed_group_counts_as_its_messages() {
    let outbound = Outbound::new(4, 0);
    outbound.try_send(Frame::from("a")).unwrap();
    let group = Framed::encode(&[Frame::from("b"), Frame::from("c")]);
    assert_eq!(outbound.try_send_framed(group.clone()), Ok(2));
    assert_eq!(
        outbound.take().frames,
        [Outgoing::from(Frame::from("a")), Outgoing::Framed(group)]
    );
    // Taking empties the count: four fit again, and a fifth message overflows.
    let three = Framed::encode(&[Frame::from("d"), Frame::from("e"), Frame::from("f")]);
    assert_eq!(outbound.try_send_framed(three), Ok(3));
    outbound.try_send(Frame::from("g")).unwrap();
    let one = Framed::encode(&[Frame::from("h")]);
    assert_eq!(outbound.try_send_framed(one.clone()), Err(SendError::Full));
    assert_eq!(outbound.close_reason(), Some(CloseReason::slow_consumer()));
    assert!(outbound.take().frames.is_empty(), "the backlog is dropped");
    assert_eq!(outbound.try_send_framed(one), Err(SendError::Closed));
}

/// A waker that counts its wake-ups.
fn counting_waker() -> (std::task::Waker, Arc<std::sync::atomic::AtomicUsize>) {
    struct Count(Arc<std::sync::atomic::AtomicUsize>);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waker = std::task::Waker::from(Arc::new(Count(Arc::clone(&count))));
    (waker, count)
}

#[test]
fn only_the_first_frame_into_an_empty_queue_wakes_the_session() {
    let (waker, count) = counting_waker();
    let woken = || count.load(Ordering::Relaxed);
    let outbound = Outbound::new(8, 0);
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(outbound.poll_ready(&mut cx).is_pending());
    outbound.try_send(Frame::from("a")).unwrap();
    assert_eq!(woken(), 1);
    // The session was woken for "a" (or waits out the write interval with it).
    outbound.try_send(Frame::from("b")).unwrap();
    outbound
        .try_send_framed(Framed::encode(&[Frame::from("c")]))
        .unwrap();
    outbound.try_send_many(&mut vec![Frame::from("d")]).unwrap();
    assert_eq!(woken(), 1, "no wake-up for frames behind others");
    // The session writes them, then waits on the queue again.
    assert_eq!(outbound.take().frames.len(), 4);
    assert!(outbound.poll_ready(&mut cx).is_pending());
    outbound
        .try_send_framed(Framed::encode(&[Frame::from("e")]))
        .unwrap();
    assert_eq!(woken(), 2, "an emptied queue wakes the session again");
    outbound.take();
    assert!(outbound.poll_ready(&mut cx).is_pending());
    outbound.try_send_many(&mut vec![Frame::from("f")]).unwrap();
    assert_eq!(woken(), 3);
    assert!(outbound.poll_ready(&mut cx).is_ready());
    assert!(outbound.close(CloseReason::normal()));
    assert_eq!(woken(), 4, "a close always wakes");
}

#[test]
fn a_reply_ends_the_write_interval_once_and_take_resets_it() {
    let (waker, count) = counting_waker();
    let woken = || count.load(Ordering::Relaxed);
    let mut cx = std::task::Context::from_waker(&waker);
    let outbound = Outbound::new(8, 0);
    // A broadcast frame waits out the interval: not urgent.
    outbound.try_send(Frame::from("a")).unwrap();
    assert_eq!(outbound.poll_ready(&mut cx), std::task::Poll::Ready(false));
    assert!(outbound.poll_urgent(&mut cx).is_pending());
    // A reply behind it wakes the waiting session once, and everything leaves at once.
    outbound.try_send_now(Frame::from("b")).unwrap();
    outbound.try_send_now(Frame::from("c")).unwrap();
    assert_eq!(woken(), 1, "the first reply wakes, the next does not");
    assert!(outbound.poll_urgent(&mut cx).is_ready());
    assert_eq!(outbound.poll_ready(&mut cx), std::task::Poll::Ready(true));
    let taken = outbound.take();
    assert_eq!(taken.frames.len(), 3);
    // Written: the next broadcast waits again.
    outbound.try_send(Frame::from("d")).unwrap();
    assert!(outbound.poll_urgent(&mut cx).is_pending());
    assert_eq!(outbound.poll_ready(&mut cx), std::task::Poll::Ready(false));
    // A replay answers a join, and a close request ends the wait too.
    outbound.push_replay(vec![Frame::from("e")]).unwrap();
    assert!(outbound.poll_urgent(&mut cx).is_ready());
    outbound.take();
    outbound.try_send(Frame::from("f")).unwrap();
    assert!(outbound.close(CloseReason::normal()));
    assert!(outbound.poll_urgent(&mut cx).is_ready());
    // Replies count against the bound like any frame.
    let full = Outbound::new(1, 0);
    full.try_send_now(Frame::from("g")).unwrap();
    assert_eq!(full.try_send_now(Frame::from("h")), Err(SendError::Full));
}

#[test]
fn take_hands_over_frames_in_order_and_the_first_close_wins() {
    let outbound = Outbound::new(8, 0);
    outbound.try_send(Frame::from("a")).unwrap();
    outbound.try_send(Frame::from("b")).unwrap();
    assert!(outbound.close(CloseReason::normal()));
    assert!(!outbound.close(CloseReason::going_away()));
    let taken = outbound.take();
    assert!(taken.closing);
    assert_eq!(outbound.close_reason(), Some(CloseReason::normal()));
    assert_eq!(
        taken.frames,
        [Frame::from("a"), Frame::from("b")].map(Outgoing::from)
    );
}

#[tokio::test(start_paused = true)]
async fn a_requested_ping_wakes_the_session_once() {
    let outbound = Outbound::new(8, 0);
    outbound.request_ping();
    outbound.request_ping();
    tokio::time::timeout(std::time::Duration::from_secs(1), outbound.ready())
        .await
        .expect("a ping request wakes the session");
    let taken = outbound.take();
    assert!(taken.ping && taken.frames.is_empty() && !taken.closing);
    assert!(!outbound.take().ping, "one request, one ping");
    assert!(outbound.close(CloseReason::normal()));
    outbound.request_ping();
    assert!(!outbound.take().ping, "no ping for a closing connection");
}

#[test]
fn the_peers_last_frames_are_recorded_for_the_sweep() {
    let outbound = Outbound::new(8, 5);
    assert_eq!(outbound.last_heard(), (5, 5));
    outbound.heard_from(7, false);
    assert_eq!(outbound.last_heard(), (7, 5), "a pong is not data");
    outbound.heard_from(9, true);
    assert_eq!(outbound.last_heard(), (9, 9));
}

/// A queue holding the write side of a real loopback socket, the session's side of it,
/// and the client's end.
async fn connected(capacity: usize) -> (Outbound, crate::ws::socket::Io, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (io, writer) = crate::ws::socket::Io::split(accepted.unwrap().0);
    let outbound = Outbound::with_writer(
        capacity,
        0,
        &crate::protocol::native::NATIVE,
        None,
        Some(writer),
    );
    (outbound, io, client.unwrap())
}

async fn read_exactly(client: &mut tokio::net::TcpStream, len: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut got = vec![0; len];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_exact(&mut got),
    )
    .await
    .expect("the bytes arrive")
    .unwrap();
    got
}

#[tokio::test]
async fn a_group_into_an_empty_queue_is_written_by_its_deliverer_without_a_wake_up() {
    let (outbound, _io, mut client) = connected(8).await;
    let (waker, count) = counting_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(outbound.poll_ready(&mut cx).is_pending());
    let group = Framed::encode(&[Frame::from("a"), Frame::from("b")]);
    let (queued, pending) = outbound.send_framed(group.clone()).unwrap();
    assert_eq!(queued, 2);
    // A second group before the write: it leaves in the same turn.
    let (_, second) = outbound
        .send_framed(Framed::encode(&[Frame::from("c")]))
        .unwrap();
    assert!(
        second.is_none(),
        "only the first group into the queue writes"
    );
    let pending = pending.expect("an empty queue with a socket: the deliverer writes");
    assert!(pending.write(Instant::now(), Duration::ZERO));
    assert_eq!(
        count.load(Ordering::Relaxed),
        0,
        "the session was not woken"
    );
    assert!(
        outbound.poll_ready(&mut cx).is_pending(),
        "nothing left queued"
    );
    let got = read_exactly(&mut client, group.len() + 3).await;
    assert_eq!(&got[..group.len()], group.as_bytes());
    assert_eq!(&got[group.len()..], [0x81, 1, b'c']);
    // Written: the queue counts nothing, so its whole capacity is free again.
    let eight: Vec<Frame> = (0..8).map(|_| Frame::from("x")).collect();
    let (queued, pending) = outbound.send_framed(Framed::encode(&eight)).unwrap();
    assert_eq!(queued, 8);
    drop(pending);
    assert_eq!(
        count.load(Ordering::Relaxed),
        1,
        "a dropped write wakes the session"
    );
    assert_eq!(outbound.take().frames.len(), 1, "and the session writes it");
}

#[tokio::test]
async fn the_deliverer_leaves_the_write_to_the_session_when_it_is_not_its_turn() {
    let (outbound, _io, _client) = connected(8).await;
    let (waker, count) = counting_waker();
    let woken = || count.load(Ordering::Relaxed);
    let mut cx = std::task::Context::from_waker(&waker);
    let group = || Framed::encode(&[Frame::from("a")]);
    // Within the write interval of the last batch: the session waits it out.
    let now = Instant::now();
    outbound.take_at(now);
    outbound.written();
    assert!(outbound.poll_ready(&mut cx).is_pending());
    let (_, pending) = outbound.send_framed(group()).unwrap();
    assert!(!pending.unwrap().write(now, Duration::from_millis(40)));
    assert_eq!(woken(), 1);
    assert_eq!(
        outbound.take().frames.len(),
        1,
        "still queued, for the session"
    );
    assert!(outbound.poll_ready(&mut cx).is_pending());
    // While the session writes a batch it took, nobody else writes: it is woken instead.
    let (_, pending) = outbound.send_framed(group()).unwrap();
    assert!(pending.is_none(), "the session is writing");
    assert_eq!(woken(), 2);
    outbound.written();
    assert_eq!(outbound.take().frames.len(), 1, "the session takes it next");
    outbound.written();
    // A ping due is the session's to write, with the group.
    outbound.request_ping();
    let (_, pending) = outbound.send_framed(group()).unwrap();
    assert!(!pending.unwrap().write(Instant::now(), Duration::ZERO));
    let taken = outbound.take();
    assert!(taken.ping && taken.frames.len() == 1);
    outbound.written();
    // Once closing, the socket is the session's alone.
    assert!(outbound.close(CloseReason::normal()));
    assert_eq!(outbound.send_framed(group()).err(), Some(SendError::Closed));
}

#[tokio::test]
async fn what_the_socket_does_not_take_is_left_in_front_for_the_session() {
    use crate::ws::WsStream;
    let (outbound, io, mut client) = connected(8).await;
    // Far more than a loopback socket buffers: the write is partial.
    let big = Framed::encode(&[Frame::binary(vec![7u8; 16 << 20])]);
    let (_, pending) = outbound.send_framed(big.clone()).unwrap();
    assert!(!pending.unwrap().write(Instant::now(), Duration::ZERO));
    let after = Framed::encode(&[Frame::from("after")]);
    let (_, pending) = outbound.send_framed(after.clone()).unwrap();
    assert!(pending.is_none(), "queued behind the rest");
    // A pong takes the writer's turn: the rest of the partial write goes first, alone.
    let Some(Outgoing::Framed(rest)) = outbound.claim() else {
        panic!("the rest of the partial write is handed over");
    };
    let sent = big.len() - rest.len();
    assert!(
        sent > 0 && !rest.as_bytes().is_empty(),
        "{sent} of {} sent",
        big.len()
    );
    let mut stream = WsStream::new(io, 1024, 1024, 16 * 1024);
    let expected = big.len() + 2 + after.len();
    let reader = tokio::spawn(async move { read_exactly(&mut client, expected).await });
    stream
        .write_frames(&mut VecDeque::from([Outgoing::Framed(rest)]))
        .await
        .unwrap();
    stream
        .write_control(crate::ws::codec::OP_PONG, b"")
        .await
        .unwrap();
    outbound.written();
    // What was queued behind it waits for the session's next batch.
    let mut frames = outbound.take().frames;
    assert_eq!(frames, [Outgoing::Framed(after.clone())]);
    stream.write_frames(&mut frames).await.unwrap();
    outbound.written();
    let got = reader.await.unwrap();
    assert!(
        got[..big.len()] == *big.as_bytes(),
        "every byte of the group once"
    );
    assert_eq!(got[big.len()..big.len() + 2], [0x8a, 0], "then the pong");
    assert_eq!(got[big.len() + 2..], *after.as_bytes());
    assert!(outbound.claim().is_none(), "nothing partial is left");
}

#[tokio::test(start_paused = true)]
async fn a_wake_up_before_waiting_is_not_lost() {
    let outbound = Outbound::new(8, 0);
    outbound.try_send(Frame::from("a")).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), outbound.ready())
        .await
        .expect("a frame queued before the wait is seen");
}

#[test]
fn a_queue_costs_an_idle_connection_one_160_byte_allocation() {
    // jemalloc's size classes go 128, 160, 192: the dialect fits in what the class had spare.
    // One more field would cost every idle connection 32 bytes.
    assert!(
        size_of::<Shared>() <= 160,
        "{} bytes: over jemalloc's 160-byte class",
        size_of::<Shared>()
    );
    assert_eq!(size_of::<Outbound>(), 8);
}
