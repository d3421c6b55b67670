//! The WebSocket layer: the upgrade handshake ([`handshake`]) and a server-side stream that
//! keeps no buffer while its connection is idle ([`WsStream`]).
//!
//! Why roomcast frames its own sockets instead of using axum's `WebSocket` (tungstenite): an idle
//! connection is the common case, and tungstenite allocates its read buffer when the socket is
//! created and keeps its write buffer at the size of the largest frame it ever wrote (a big
//! room's `user_list`). Here a read goes into a buffer on the stack, only the unparsed tail of
//! a frame that arrived in pieces is copied to the heap, and writes coalesce the queued frames
//! into one temporary buffer that is freed when written (`PERFORMANCE-NOTES.md` measured this
//! shape at under 2 KiB per idle connection). The framing rules live in [`codec`], with
//! their tests; compression (permessage-deflate, off unless `SessionConfig::compression`) in
//! [`deflate`]: negotiated without context takeover, so a compressing connection keeps no
//! deflate state between messages either (one byte: its window size).

pub(crate) mod codec;
pub(crate) mod deflate;
pub(crate) mod handshake;
pub(crate) mod socket;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::frame::{CloseReason, Frame};
pub(crate) use codec::{DecodeError, Event};
use codec::{Decoder, encode_compressed_header, encode_header};
pub(crate) use deflate::Deflate;

/// Largest single read: the stack buffer a read lands in. `read_buffer_bytes` below this
/// makes reads smaller.
const READ_CHUNK: usize = 8 * 1024;

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the TCP connection (without a close frame, if we get here).
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// The peer's frames were refused.
    Decode(DecodeError),
}

/// What a connection's queue holds and [`WsStream::write_frames`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// One message, given its header when written.
    Frame(Frame),
    /// Messages already framed for the wire, shared by every connection they go to.
    Framed(Framed),
}

impl Outgoing {
    /// Its size on the wire, headers included (a frame's header counted at its largest).
    fn wire_len(&self) -> usize {
        match self {
            Self::Frame(frame) => codec::MAX_SERVER_HEADER + frame.wire().1.len(),
            Self::Framed(framed) => framed.bytes.len(),
        }
    }
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        Self::Frame(frame)
    }
}

#[cfg(test)]
impl Outgoing {
    /// The text payloads it holds, in order (tests read queues with it).
    pub(crate) fn texts(&self) -> Vec<&str> {
        let mut bytes: &[u8] = match self {
            Self::Frame(frame) => return frame.as_text().into_iter().collect(),
            Self::Framed(framed) => &framed.bytes,
        };
        let mut texts = Vec::new();
        while let [first, second, rest @ ..] = bytes {
            let (len, rest) = match second & 0x7f {
                126 => (
                    usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                    &rest[2..],
                ),
                127 => {
                    let len = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
                    (
                        usize::try_from(len).expect("a test-sized frame"),
                        &rest[8..],
                    )
                }
                len => (usize::from(len), rest),
            };
            assert_eq!(first & 0x0f, codec::OP_TEXT, "a text frame");
            texts.push(std::str::from_utf8(&rest[..len]).expect("UTF-8"));
            bytes = &rest[len..];
        }
        assert!(bytes.is_empty(), "whole frames");
        texts
    }
}

/// Complete server frames (each header and payload), one after another: a group of messages
/// framed once for every member of a room it goes to, so each member's queue takes one shared
/// buffer (one reference count, one copy when written) instead of a frame per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Framed {
    bytes: Bytes,
    /// How many frames `bytes` holds.
    messages: u32,
}

impl Framed {
    /// Frames `frames`, in order, into one buffer; with `deflate`, each message compressed as
    /// that connection negotiated (those too small or incompressible go plain). The same
    /// compressed framing serves every member with the same window: no context takeover means
    /// a message's compressed bytes depend on nothing but the message.
    pub(crate) fn encode_for<'f>(
        frames: impl IntoIterator<Item = &'f Frame> + Clone,
        deflate: Option<Deflate>,
    ) -> Self {
        let Some(deflate) = deflate else {
            return Self::encode(frames);
        };
        let mut bytes = Vec::new();
        let mut messages = 0u32;
        for frame in frames {
            let (opcode, payload) = frame.wire();
            write_message(&mut bytes, opcode, payload, Some(deflate));
            messages += 1;
        }
        Self {
            bytes: Bytes::from(bytes),
            messages,
        }
    }

    /// Frames `frames`, in order, into one buffer.
    pub(crate) fn encode<'f>(frames: impl IntoIterator<Item = &'f Frame> + Clone) -> Self {
        let len: usize = frames
            .clone()
            .into_iter()
            .map(|frame| codec::MAX_SERVER_HEADER + frame.len())
            .sum();
        let mut bytes = Vec::with_capacity(len);
        let mut messages = 0u32;
        for frame in frames {
            let (opcode, payload) = frame.wire();
            encode_header(&mut bytes, opcode, payload.len());
            bytes.extend_from_slice(payload);
            messages += 1;
        }
        Self {
            bytes: Bytes::from(bytes),
            messages,
        }
    }

    /// Its size on the wire, headers included.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Its bytes, what is still to be written of them: the same buffer (one address) in
    /// every queue it was shared with.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Drops the first `written` bytes, which a partial write sent: the rest is written by the
    /// next write, before anything queued after it. It still counts as its messages.
    pub(crate) fn advance(&mut self, written: usize) {
        bytes::Buf::advance(&mut self.bytes, written);
    }

    /// How many messages it holds.
    pub(crate) fn messages(&self) -> usize {
        self.messages as usize
    }
}

/// One upgraded connection: frames in, frames out.
pub(crate) struct WsStream<S> {
    io: S,
    decoder: Decoder,
    /// Bytes read but not yet decoded: the front of a frame that arrived in pieces, or frames
    /// that arrived together with the one returned. No capacity while idle.
    pending: Vec<u8>,
    /// Bytes per read, at most [`READ_CHUNK`]. (Small integers: this struct lives in every
    /// connection's task, and these three share one word.)
    read_chunk: u16,
    /// permessage-deflate, when negotiated: RSV1 marks the peer's compressed messages, and
    /// ours are compressed (each on its own: no state between messages).
    deflate: Option<Deflate>,
    /// Coalescing limit for writes.
    write_buffer: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// A stream over an upgraded connection, refusing messages over `max_message` bytes.
    pub(crate) fn new(io: S, max_message: usize, read_buffer: usize, write_buffer: usize) -> Self {
        Self {
            io,
            decoder: Decoder::new(max_message),
            pending: Vec::new(),
            read_chunk: read_buffer.clamp(1, READ_CHUNK) as u16,
            deflate: None,
            write_buffer: u32::try_from(write_buffer.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// The same, with `unread`, bytes the peer sent that were read before the stream existed
    /// (after the upgrade request, in the same read), to be decoded first.
    pub(crate) fn with_unread(mut self, unread: &[u8]) -> Self {
        if !unread.is_empty() {
            self.pending = unread.to_vec();
        }
        self
    }

    /// The same, speaking permessage-deflate as negotiated (`None`: not negotiated).
    pub(crate) fn with_deflate(mut self, deflate: Option<Deflate>) -> Self {
        self.deflate = deflate;
        self
    }

    /// The next message or control frame from the peer.
    pub(crate) async fn next(&mut self) -> Result<Event, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, ReadError>> {
        loop {
            if !self.pending.is_empty() {
                let mut input = &self.pending[..];
                let decoded = self.decoder.decode(&mut input, self.deflate.is_some());
                let consumed = self.pending.len() - input.len();
                self.pending.drain(..consumed);
                if self.pending.is_empty() {
                    // Give the memory back: an idle connection holds no buffer.
                    self.pending = Vec::new();
                }
                match decoded {
                    Ok(Some(event)) => return Poll::Ready(Ok(event)),
                    Err(err) => return Poll::Ready(Err(ReadError::Decode(err))),
                    Ok(None) => {}
                }
            }
            // The buffer lives on the stack for this poll only: a connection waiting for
            // input keeps nothing.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk[..self.read_chunk as usize]);
            if let Err(err) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                return Poll::Ready(Err(ReadError::Io(err)));
            }
            let data = buf.filled();
            if data.is_empty() {
                return Poll::Ready(Err(ReadError::Eof));
            }
            if !self.pending.is_empty() {
                self.pending.extend_from_slice(data);
                continue;
            }
            let mut input = data;
            let decoded = self.decoder.decode(&mut input, self.deflate.is_some());
            self.pending.extend_from_slice(input);
            match decoded {
                Ok(Some(event)) => return Poll::Ready(Ok(event)),
                Err(err) => return Poll::Ready(Err(ReadError::Decode(err))),
                Ok(None) => {}
            }
        }
    }

    /// What the stream holds between two events: the length and capacity of its unparsed
    /// input, and the bytes of a fragmented message (the fuzz targets bound them).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn held(&self) -> (usize, usize, usize) {
        (
            self.pending.len(),
            self.pending.capacity(),
            self.decoder.fragment_bytes(),
        )
    }

    /// Reads and throws away whatever the peer still sends, until it closes the connection.
    /// Used after a refused frame, when the peer's bytes can no longer be parsed.
    pub(crate) async fn drain(&mut self) {
        self.pending = Vec::new();
        std::future::poll_fn(|cx| {
            loop {
                let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut buf = ReadBuf::uninit(&mut chunk);
                match ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                    Ok(()) if !buf.filled().is_empty() => {}
                    _ => return Poll::Ready(()),
                }
            }
        })
        .await;
    }

    /// Writes everything in `queued` (emptying it), coalesced into writes of at most the write
    /// buffer size; anything larger than that is written straight from its shared bytes.
    /// Flushes once at the end.
    pub(crate) async fn write_frames(&mut self, queued: &mut VecDeque<Outgoing>) -> io::Result<()> {
        let limit = self.write_buffer as usize;
        // Sized once for what it will hold (up to the limit) rather than grown entry by entry;
        // an entry over the limit is written from its own bytes and takes no room.
        let wanted: usize = queued
            .iter()
            .map(Outgoing::wire_len)
            .filter(|&len| len <= limit)
            .sum();
        let mut buf = Vec::with_capacity(wanted.min(limit));
        while let Some(out) = queued.pop_front() {
            let len = out.wire_len();
            if !buf.is_empty() && buf.len() + len > limit {
                self.io.write_all(&buf).await?;
                buf.clear();
            }
            match &out {
                Outgoing::Frame(frame) => {
                    let (opcode, payload) = frame.wire();
                    // A frame for this connection alone (a reply, an echo, a replay) is
                    // compressed here, as it is written: it is needed once.
                    let compressed = self.deflate.and_then(|deflate| {
                        deflate::deflate(payload, deflate.server_window_bits())
                    });
                    let body: &[u8] = match &compressed {
                        Some(compressed) => {
                            encode_compressed_header(&mut buf, opcode, compressed.len());
                            compressed
                        }
                        None => {
                            encode_header(&mut buf, opcode, payload.len());
                            payload
                        }
                    };
                    if len > limit {
                        write_both(&mut self.io, &buf, body).await?;
                        buf.clear();
                    } else {
                        buf.extend_from_slice(body);
                    }
                }
                Outgoing::Framed(framed) if len > limit => self.io.write_all(&framed.bytes).await?,
                Outgoing::Framed(framed) => buf.extend_from_slice(&framed.bytes),
            }
        }
        if !buf.is_empty() {
            self.io.write_all(&buf).await?;
        }
        self.io.flush().await
    }

    /// After our close frame: reads until the peer's close reply, or until it closes the
    /// connection. Dropping a socket with unread input makes the kernel send a reset, which can
    /// destroy our close frame before the peer reads it, so what the peer still sends is read
    /// and discarded. `in_sync` is false after a frame we could not parse: then nothing more is
    /// parsed and our side of the connection is shut at once. The caller bounds the wait.
    pub(crate) async fn await_close_reply(&mut self, in_sync: bool) {
        if in_sync {
            loop {
                match self.next().await {
                    Ok(Event::Close(_)) => return,
                    Ok(_) | Err(ReadError::Decode(DecodeError::TooBig)) => {}
                    Err(ReadError::Decode(_)) => break,
                    Err(ReadError::Eof | ReadError::Io(_)) => return,
                }
            }
        }
        // Failing the connection (RFC 6455 §7.1.7): no reply is awaited. Our FIN follows the
        // close frame at once; what the peer still sends is read and thrown away.
        let _ = self.io.shutdown().await;
        self.drain().await;
    }

    /// Writes one control frame (ping, pong, close) and flushes.
    pub(crate) async fn write_control(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        debug_assert!(
            payload.len() <= 125,
            "control frames carry at most 125 bytes"
        );
        let mut frame = Vec::with_capacity(2 + payload.len());
        encode_header(&mut frame, opcode, payload.len());
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    /// Writes a close frame with `reason`.
    pub(crate) async fn write_close(&mut self, reason: &CloseReason) -> io::Result<()> {
        let payload = codec::close_payload(reason.code(), reason.reason());
        self.write_control(codec::OP_CLOSE, &payload).await
    }
}

/// Appends one message's frame to `out`: compressed (RSV1) when `deflate` is on and deflating
/// makes it smaller, as it is otherwise.
fn write_message(out: &mut Vec<u8>, opcode: u8, payload: &[u8], deflate: Option<Deflate>) {
    let compressed =
        deflate.and_then(|deflate| deflate::deflate(payload, deflate.server_window_bits()));
    match compressed {
        Some(compressed) => {
            encode_compressed_header(out, opcode, compressed.len());
            out.extend_from_slice(&compressed);
        }
        None => {
            encode_header(out, opcode, payload.len());
            out.extend_from_slice(payload);
        }
    }
}

/// Writes `head` then `body` with vectored writes, so a large frame's header and payload
/// usually leave in one system call without being copied together.
async fn write_both<S: AsyncWrite + Unpin>(
    io: &mut S,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() {
        let written = io
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if written < head.len() {
            head = &head[written..];
        } else {
            body = &body[written - head.len()..];
            head = &[];
        }
    }
    io.write_all(body).await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::codec::tests::client_frame;
    use super::codec::{OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT};
    use super::*;
    use crate::{Bytes, Utf8Bytes};

    #[tokio::test]
    async fn frames_written_byte_by_byte_are_read_whole() {
        let (mut client, server) = duplex(64);
        let mut stream = WsStream::new(server, 1024, 1024, 1024);
        let mut bytes = client_frame(true, OP_TEXT, b"first");
        bytes.extend(client_frame(true, OP_TEXT, b"second"));
        let writer = tokio::spawn(async move {
            for byte in bytes {
                client.write_all(&[byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            stream.next().await.unwrap(),
            Event::Text(Utf8Bytes::from("first"))
        );
        assert_eq!(
            stream.next().await.unwrap(),
            Event::Text(Utf8Bytes::from("second"))
        );
        assert!(
            stream.pending.capacity() == 0,
            "an idle stream keeps no buffer"
        );
        drop(writer.await.unwrap());
        assert!(matches!(stream.next().await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn frames_arriving_together_are_returned_one_by_one() {
        let (mut client, server) = duplex(4096);
        let mut stream = WsStream::new(server, 1024, 1024, 1024);
        let mut bytes = Vec::new();
        for i in 0..20u8 {
            bytes.extend(client_frame(true, OP_BINARY, &[i; 30]));
        }
        client.write_all(&bytes).await.unwrap();
        for i in 0..20u8 {
            assert_eq!(
                stream.next().await.unwrap(),
                Event::Binary(Bytes::from(vec![i; 30]))
            );
        }
        assert_eq!(stream.pending.capacity(), 0);
    }

    /// A socket that accepts every write whole and counts the writes.
    #[derive(Default)]
    struct CountingIo {
        writes: usize,
        bytes: usize,
    }

    impl tokio::io::AsyncRead for CountingIo {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for CountingIo {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.writes += 1;
            self.bytes += buf.len();
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_burst_of_chat_messages_leaves_in_one_write_with_the_default_buffer() {
        // What a busy room queues for a member between two of its writes: 40 chat envelopes of
        // ~300 bytes. Each write is a syscall (and, on loopback, the receiver's TCP work too),
        // the main cost of fan-out; with the old 1 KiB default this took 14 writes (three
        // frames each).
        let config = crate::SessionConfig::default();
        let mut stream = WsStream::new(
            CountingIo::default(),
            config.max_message_bytes,
            config.read_buffer_bytes,
            config.write_buffer_bytes,
        );
        let envelope = "m".repeat(300);
        let mut frames: VecDeque<Outgoing> = (0..40)
            .map(|_| Frame::text(envelope.clone()).into())
            .collect();
        stream.write_frames(&mut frames).await.unwrap();
        assert_eq!(stream.io.bytes, 40 * (2 + 2 + 300), "every frame written");
        assert_eq!(stream.io.writes, 1, "one write for the whole burst");
    }

    #[tokio::test]
    async fn queued_frames_are_coalesced_and_big_ones_written_whole() {
        let (mut client, server) = duplex(1 << 20);
        let mut stream = WsStream::new(server, 1024, 1024, 64);
        let big = "x".repeat(70_000);
        let mut frames = VecDeque::from([
            Frame::text("a").into(),
            Frame::binary(vec![1, 2, 3]).into(),
            Frame::text(big.clone()).into(),
            Frame::text("z").into(),
            // Already framed: a small group joins the buffer, a big one is written whole.
            Outgoing::Framed(Framed::encode(&[Frame::text("b"), Frame::text("c")])),
            Outgoing::Framed(Framed::encode(&[Frame::text(big.clone())])),
            Frame::text("d").into(),
        ]);
        stream.write_frames(&mut frames).await.unwrap();
        stream.write_control(OP_PING, b"").await.unwrap();
        assert!(frames.is_empty());
        let mut big_frame = vec![0x81, 127];
        big_frame.extend_from_slice(&70_000u64.to_be_bytes());
        big_frame.extend_from_slice(big.as_bytes());
        let mut expected = vec![0x81, 1, b'a', 0x82, 3, 1, 2, 3];
        expected.extend_from_slice(&big_frame);
        expected.extend_from_slice(&[0x81, 1, b'z', 0x81, 1, b'b', 0x81, 1, b'c']);
        expected.extend_from_slice(&big_frame);
        expected.extend_from_slice(&[0x81, 1, b'd', 0x89, 0]);
        let mut got = vec![0; expected.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "wire bytes differ");
    }

    /// An idle connection's memory with compression on: the stream is the same size as without
    /// it (72 bytes with the split TCP socket, 104 with hyper's upgraded I/O before: the negotiated
    /// window is one byte in a word the read and write sizes share), and after compressed
    /// messages in both directions it holds no buffer and no deflate state (the compressor
    /// and decompressor are per thread, reset after each message; `deflate.rs`).
    #[tokio::test]
    async fn a_compressing_stream_keeps_no_deflate_state_between_messages() {
        assert_eq!(size_of::<Option<Deflate>>(), 1);
        assert_eq!(size_of::<WsStream<super::handshake::Io>>(), 72);
        let (deflate, _) = deflate::negotiate([&b"permessage-deflate"[..]]).unwrap();
        let (mut client, server) = duplex(1 << 16);
        let mut stream = WsStream::new(server, 4096, 1024, 1024).with_deflate(Some(deflate));
        let text = "compress me, compress me, compress me! ".repeat(20);
        let mut frame = client_frame(
            true,
            OP_TEXT,
            &deflate::tests::client_deflate(text.as_bytes()),
        );
        frame[0] |= 0x40;
        for _ in 0..3 {
            client.write_all(&frame).await.unwrap();
            assert_eq!(
                stream.next().await.unwrap(),
                Event::Text(Utf8Bytes::from(text.clone()))
            );
            assert_eq!(stream.held(), (0, 0, 0), "nothing held between messages");
        }
        let mut frames = VecDeque::from([Frame::text(text.clone()).into()]);
        stream.write_frames(&mut frames).await.unwrap();
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0xc1, "FIN, RSV1, text");
        assert!(
            head[1] < 126,
            "{} bytes compressed to under 126",
            text.len()
        );
        let mut payload = vec![0; usize::from(head[1])];
        client.read_exact(&mut payload).await.unwrap();
        assert_eq!(deflate::inflate(&payload, 4096).unwrap(), text.as_bytes());
    }

    #[tokio::test]
    async fn a_refused_frame_is_skipped_so_the_peers_close_is_still_read() {
        let (mut client, server) = duplex(4096);
        let mut stream = WsStream::new(server, 8, 1024, 1024);
        let mut bytes = client_frame(true, OP_TEXT, &[b'a'; 100]);
        bytes.extend(client_frame(
            true,
            OP_CLOSE,
            &codec::close_payload(1000, ""),
        ));
        client.write_all(&bytes).await.unwrap();
        assert!(matches!(
            stream.next().await,
            Err(ReadError::Decode(DecodeError::TooBig))
        ));
        assert_eq!(
            stream.next().await.unwrap(),
            Event::Close(Some((1000, String::new())))
        );
    }
}
