//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default; also
//! compiled for the crate's own tests, so that the test below runs with the others). Hidden
//! from the docs and not a stable API: they reach private parts of the crate (the WebSocket
//! framing) so that a fuzzer can drive them without a socket or a runtime.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ws::{DecodeError, ReadError, WsStream};

/// Longest frame header a client can send: 2 + 8 bytes of length + 4 of mask.
const MAX_CLIENT_HEADER: usize = 14;

/// Feeds `bytes` to a server-side WebSocket stream as a client's stream, arriving at most
/// `read_chunk` bytes per read (`1..=8192`; the server's `read_buffer_bytes`), with messages
/// limited to `max_message_bytes`. Reads events as a session does: until the first refused
/// frame, except that a refused oversized message (1009) is skipped and reading goes on, as
/// while the server waits for the peer's close reply. Unlike a session, reading also goes on
/// after a close frame, until `bytes` run out. Returns how many events were read.
///
/// # Panics
///
/// When the decoder panics, or when after any event the stream holds more than it may: a
/// fragmented message over `max_message_bytes`, more unparsed input than one frame plus one
/// read (or twice that in capacity), or any capacity while it holds no input (an idle
/// connection keeps no buffer).
pub fn decode_frames(bytes: &[u8], max_message_bytes: usize, read_chunk: usize) -> usize {
    assert!(max_message_bytes > 0 && (1..=8192).contains(&read_chunk));
    let client = Client { bytes, read_chunk };
    let mut stream = WsStream::new(client, max_message_bytes, read_chunk, 1024);
    let pending_bound = MAX_CLIENT_HEADER + max_message_bytes.max(125) + read_chunk;
    let mut events = 0;
    loop {
        let result = {
            let mut next = pin!(stream.next());
            // The client answers every read at once, so one poll finishes the read.
            match next.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(result) => result,
                Poll::Pending => unreachable!("an in-memory client never blocks"),
            }
        };
        let (pending, capacity, fragments) = stream.held();
        assert!(
            fragments <= max_message_bytes,
            "{fragments} bytes of fragments held, over the {max_message_bytes}-byte limit"
        );
        assert!(
            pending < pending_bound,
            "{pending} unparsed bytes held (bound {pending_bound})"
        );
        assert!(
            capacity <= 2 * pending_bound,
            "{capacity} bytes of capacity held for {pending} unparsed bytes"
        );
        assert!(
            pending > 0 || capacity == 0,
            "{capacity} bytes of capacity held while no input is"
        );
        match result {
            Ok(_) => events += 1,
            Err(ReadError::Decode(DecodeError::TooBig)) => {}
            Err(ReadError::Decode(_) | ReadError::Eof | ReadError::Io(_)) => return events,
        }
    }
}

/// The client side of the connection: `bytes`, handed out at most `read_chunk` at a time;
/// what the server writes is dropped.
struct Client<'a> {
    bytes: &'a [u8],
    read_chunk: usize,
}

impl AsyncRead for Client<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let len = self.bytes.len().min(self.read_chunk).min(buf.remaining());
        let (now, rest) = self.bytes.split_at(len);
        buf.put_slice(now);
        self.bytes = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::codec::tests::client_frame;
    use crate::ws::codec::{OP_CLOSE, OP_PING, OP_TEXT};

    const OP_CONTINUATION: u8 = 0x0;

    #[test]
    fn frames_split_into_every_read_size_decode_within_the_bounds() {
        let mut bytes = client_frame(false, OP_TEXT, b"frag");
        bytes.extend(client_frame(true, OP_PING, b"are you there"));
        bytes.extend(client_frame(true, OP_CONTINUATION, "mené".as_bytes()));
        bytes.extend(client_frame(true, OP_TEXT, &[b'y'; 300]));
        bytes.extend(client_frame(true, OP_CLOSE, b"\x10\xe1done"));
        for read_chunk in 1..=bytes.len() {
            // Ping, "fragmené", the oversized message refused (not counted), close.
            assert_eq!(
                decode_frames(&bytes, 64, read_chunk),
                3,
                "reads of {read_chunk}"
            );
            assert_eq!(
                decode_frames(&bytes, 300, read_chunk),
                4,
                "reads of {read_chunk}"
            );
        }
    }
}
