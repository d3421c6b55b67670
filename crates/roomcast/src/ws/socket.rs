//! [`Io`]: an upgraded connection's byte stream, and [`Writer`], a handle on its write side
//! that whoever delivers to the connection may use without waking the connection's task.
//!
//! Why: at light load, a broadcast to a room of 1000 used to wake 1000 tasks, each of which
//! took its queue, copied the frame into a buffer and wrote it: a wake-up, a poll and two
//! allocations per member around the one system call that matters (~4.5 µs of server CPU per
//! delivery here, three times Bun's). When a member's queue was empty and its write interval
//! has passed, the deliverer now writes the shared bytes itself with one non-blocking `send`
//! (`Outbound::write_queued`); only what does not fit in the socket's buffer is left for the
//! task, which writes it as before. This needs the TCP socket itself, so a plain TCP connection
//! (what `axum::serve` and `roomcast serve` upgrade) is split here into the read side, which the
//! session reads, and the write side ([`Writer`]), kept in the connection's queue. Anything else
//! hyper upgraded (TLS in front of the application, a test transport) is served as before.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The upgraded connection's byte stream, as the session reads and writes it.
pub(crate) enum Io {
    /// A TCP connection. The session reads this half; its writes (a batch, a control frame) go
    /// to the same socket, with the connection's queue saying who may write when
    /// (`Outbound`).
    Tcp(OwnedReadHalf),
    /// Any other upgraded stream; boxed, as it is the rare case and four words larger.
    Upgraded(Box<TokioIo<Upgraded>>),
}

/// An upgraded connection taken apart: the stream, the write handle when it is a TCP socket,
/// and what the client sent after its upgrade request that hyper had already read.
pub(crate) struct Opened {
    pub(crate) io: Io,
    pub(crate) writer: Option<Writer>,
    pub(crate) unread: Bytes,
}

impl Io {
    /// Takes an upgraded connection apart: a TCP socket is split (see the module's doc).
    pub(crate) fn open(upgraded: Upgraded) -> Opened {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (io, writer) = Self::split(parts.io.into_inner());
                Opened {
                    io,
                    writer: Some(writer),
                    unread: parts.read_buf,
                }
            }
            Err(upgraded) => Opened {
                io: Self::Upgraded(Box::new(TokioIo::new(upgraded))),
                writer: None,
                unread: Bytes::new(),
            },
        }
    }
}

impl Io {
    /// A TCP socket as the session's stream and the queue's write handle.
    pub(crate) fn split(tcp: TcpStream) -> (Self, Writer) {
        let (read, write) = tcp.into_split();
        (Self::Tcp(read), Writer(Some(write)))
    }
}

/// Writes `buf` to `tcp` once it is writable: `AsyncWrite` over a socket shared with a
/// [`Writer`].
fn poll_write_tcp(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        match write(tcp) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            written => return Poll::Ready(written),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            Self::Upgraded(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(read) => poll_write_tcp(read.as_ref(), cx, |tcp| tcp.try_write(buf)),
            Self::Upgraded(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(read) => {
                poll_write_tcp(read.as_ref(), cx, |tcp| tcp.try_write_vectored(bufs))
            }
            Self::Upgraded(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(_) => true,
            Self::Upgraded(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Writes go straight to the socket (`TCP_NODELAY`): nothing is buffered here.
            Self::Tcp(_) => Poll::Ready(Ok(())),
            Self::Upgraded(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(read) => {
                let socket = socket2::SockRef::from(read.as_ref());
                Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
            }
            Self::Upgraded(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}

/// `send` flags for [`Writer::try_write`]: a peer gone must be an error, not a `SIGPIPE`
/// (what `std` and Tokio ask for too). Where the flag does not exist (macOS and the other
/// BSD-derived systems) Rust programs ignore `SIGPIPE` from the start.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NO_SIGNAL: std::ffi::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NO_SIGNAL: std::ffi::c_int = 0;

/// The write side of a connection's TCP socket, held in its queue: one non-blocking write at a
/// time, by whoever the queue lets write (`Outbound::write_queued`).
///
/// Dropping it leaves the socket open: the session, which holds the read side, still writes
/// its close frame, and the socket closes when the session's side is dropped too.
#[derive(Debug)]
pub(crate) struct Writer(Option<OwnedWriteHalf>);

impl Writer {
    /// Writes what the socket takes now, without waiting: `WouldBlock` when it takes nothing.
    ///
    /// One `send` on the socket, past Tokio's readiness state. `TcpStream::try_write` reads
    /// that state first, a separate allocation per socket and so one more cache miss for each
    /// member of a broadcast (3% of the server's CPU at 50 msg/s into a room of 1000). Skipping
    /// it is safe: the state only saves a system call that would fail. When the socket is full,
    /// the session writes the rest through Tokio, whose first attempt then fails with
    /// `WouldBlock`, clears the stale state and waits for the socket, as after any write.
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Some(half) => socket2::SockRef::from(half.as_ref()).send_with_flags(buf, NO_SIGNAL),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A write half dropped as it is shuts the socket's sending side, which would cut off
        // the session's close frame; forgotten, it leaves the socket to the read side.
        if let Some(half) = self.0.take() {
            half.forget();
        }
    }
}
