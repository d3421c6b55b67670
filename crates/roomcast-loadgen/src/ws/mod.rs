//! The load generator's WebSocket client: the upgrade, then frames read and written over the
//! TCP stream, as a `Stream` of tungstenite [`Message`]s and a `Sink` of them.
//!
//! Why not `tokio-tungstenite`'s client: before every read, tungstenite zero-fills its read
//! buffer up to `read_buffer_size` past what it holds (`FrameCodec::read_in`). A server that
//! once sent a large frame (roomcast's member list at join, ~75 KB in a room of 1000) grows
//! that buffer for good, and from then on every read of a 200-byte frame zero-fills 16 KiB; a
//! server that never did keeps a smaller, draining buffer. Measured at 50 msg/s into a room of
//! 1000: `memset` was 17% of the load generator's CPU receiving from roomcast against 11% from
//! Bun, with the same number of reads. The load generator is a harness: what it costs per
//! frame must not depend on which server it measures. Here reads go into the buffer's spare
//! capacity without zero-filling ([`tokio_util::io::poll_read_buf`]).
//!
//! What it implements is what a client needs against a server it trusts on loopback: the
//! client side of RFC 6455 without extensions or subprotocols. Server frames must be unmasked
//! with no reserved bits; fragmented messages are assembled; a ping is answered with a pong
//! (and handed on, as tungstenite does); a close is answered with a close, handed on, and ends
//! the stream. Client frames are masked with a key from a per-connection xorshift generator:
//! the masking only has to be there (RFC 6455 §5.3 asks browsers for unpredictable keys to
//! protect proxies, of which loopback has none).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};
use tokio_tungstenite::tungstenite::{Error, Message, error::CapacityError, error::ProtocolError};

#[cfg(test)]
mod tests;
mod upgrade;

/// Each read asks the socket for up to this much (what `read_buffer_size` was for tungstenite):
/// enough for many frames of a batched write in one system call.
const READ_CHUNK: usize = 16 * 1024;

/// Largest message accepted, as tungstenite's default `max_message_size` (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// A client WebSocket over a TCP stream.
///
/// ```no_run
/// use futures_util::{SinkExt, StreamExt};
/// use roomcast_loadgen::ws::Ws;
/// use tokio_tungstenite::tungstenite::Message;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let io = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
/// let mut ws = Ws::upgrade(io, "ws://127.0.0.1:8080/ws/auth?token=…").await?;
/// ws.send(Message::text(r#"{"type":"join","room":"lobby"}"#)).await?;
/// while let Some(message) = ws.next().await {
///     println!("{:?}", message?);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Ws {
    io: TcpStream,
    /// What was read and not yet taken as frames.
    read: BytesMut,
    /// Encoded frames not yet written.
    write: Vec<u8>,
    /// A fragmented message being assembled: its opcode and what came so far.
    fragments: Option<(u8, BytesMut)>,
    /// The peer's close was received (and handed on): the stream has ended.
    ended: bool,
    /// A close frame was queued: nothing else is sent after it.
    close_sent: bool,
    /// xorshift64 state for masking keys.
    mask_state: u64,
}

impl Ws {
    /// Upgrades `io` to a WebSocket at `url` (`ws://host[:port]/path[?query]`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the stream fails, [`Error::Http`] with the status when the server
    /// answers anything but `101`, [`Error::Protocol`] for a response that is not a valid
    /// upgrade.
    pub async fn upgrade(mut io: TcpStream, url: &str) -> Result<Ws, Error> {
        let (key, read) = upgrade::handshake(&mut io, url).await?;
        // Anything after the head is the server's first frames.
        Ok(Ws {
            io,
            read,
            write: Vec::new(),
            fragments: None,
            ended: false,
            close_sent: false,
            mask_state: seed(&key),
        })
    }

    /// Sends a close frame (`frame`, or none) and flushes it. Read on until the stream ends to
    /// see the server's answer.
    ///
    /// # Errors
    ///
    /// The stream's, as [`Error::Io`].
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.send(Message::Close(frame)).await
    }

    /// The next frame in the read buffer, if it is complete: `(fin, opcode, payload)`.
    fn next_frame(&mut self) -> Result<Option<(bool, u8, Bytes)>, Error> {
        let buf = &self.read[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(Error::Protocol(ProtocolError::NonZeroReservedBits));
        }
        if b1 & 0x80 != 0 {
            return Err(Error::Protocol(ProtocolError::MaskedFrameFromServer));
        }
        let (header, len) = match b1 & 0x7f {
            126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
            127 if buf.len() >= 10 => (
                10,
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            ),
            126 | 127 => return Ok(None),
            len => (2, u64::from(len)),
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_MESSAGE {
            return Err(Error::Capacity(CapacityError::MessageTooLong {
                size: len,
                max_size: MAX_MESSAGE,
            }));
        }
        if buf.len() < header + len {
            // Room for the rest of the frame, so that one read can take it.
            self.read.reserve(header + len - self.read.len());
            return Ok(None);
        }
        self.read.advance(header);
        let payload = self.read.split_to(len).freeze();
        Ok(Some((b0 & 0x80 != 0, b0 & 0x0f, payload)))
    }

    /// What a complete frame means: a message to hand on, or nothing yet (a fragment, a
    /// pong-answered ping is handed on too).
    fn on_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Bytes,
    ) -> Result<Option<Message>, Error> {
        match opcode {
            0 => {
                let Some((_, parts)) = &mut self.fragments else {
                    return Err(Error::Protocol(ProtocolError::UnexpectedContinueFrame));
                };
                if parts.len() + payload.len() > MAX_MESSAGE {
                    return Err(Error::Capacity(CapacityError::MessageTooLong {
                        size: parts.len() + payload.len(),
                        max_size: MAX_MESSAGE,
                    }));
                }
                parts.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let (opcode, parts) = self.fragments.take().expect("checked above");
                data_message(opcode, parts.freeze()).map(Some)
            }
            1 | 2 => {
                if self.fragments.is_some() {
                    let data = if opcode == 1 {
                        Data::Text
                    } else {
                        Data::Binary
                    };
                    return Err(Error::Protocol(ProtocolError::ExpectedFragment(data)));
                }
                if fin {
                    data_message(opcode, payload).map(Some)
                } else {
                    self.fragments = Some((opcode, BytesMut::from(&payload[..])));
                    Ok(None)
                }
            }
            8 => {
                let frame = close_frame(&payload)?;
                if !self.close_sent {
                    // Echo the code, as the closing handshake asks.
                    let echo = frame.as_ref().map(|frame| CloseFrame {
                        code: frame.code,
                        reason: Utf8Bytes::default(),
                    });
                    self.encode(&Message::Close(echo));
                }
                self.ended = true;
                Ok(Some(Message::Close(frame)))
            }
            9 => {
                if !fin || payload.len() > 125 {
                    return Err(Error::Protocol(ProtocolError::ControlFrameTooBig));
                }
                if !self.close_sent {
                    self.encode(&Message::Pong(payload.clone()));
                }
                Ok(Some(Message::Ping(payload)))
            }
            10 => Ok(Some(Message::Pong(payload))),
            3..=7 => Err(Error::Protocol(ProtocolError::UnknownDataFrameType(opcode))),
            _ => Err(Error::Protocol(ProtocolError::UnknownControlFrameType(
                opcode,
            ))),
        }
    }

    /// Appends `message` to the write buffer as one masked frame.
    fn encode(&mut self, message: &Message) {
        let (opcode, payload): (u8, std::borrow::Cow<'_, [u8]>) = match message {
            Message::Text(text) => (1, text.as_bytes().into()),
            Message::Binary(data) => (2, data[..].into()),
            Message::Ping(data) => (9, data[..].into()),
            Message::Pong(data) => (10, data[..].into()),
            Message::Close(frame) => {
                self.close_sent = true;
                let mut body = Vec::new();
                if let Some(frame) = frame {
                    body.extend_from_slice(&u16::from(frame.code).to_be_bytes());
                    body.extend_from_slice(frame.reason.as_bytes());
                }
                (8, body.into())
            }
            // Refused by `start_send`.
            Message::Frame(_) => return,
        };
        let out = &mut self.write;
        out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // xorshift64: a fresh key per frame.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        let mask = (x as u32).to_be_bytes();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }

    /// Writes what is buffered until it is all written.
    fn poll_write_buffered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.write.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write))?;
            if written == 0 {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.write.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl Stream for Ws {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                // The close answer goes out before the stream says it has ended.
                return match this.poll_write_buffered(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => Poll::Ready(None),
                };
            }
            if !this.write.is_empty() {
                // A pong queued by a ping: out when the socket takes it.
                if let Poll::Ready(Err(err)) = this.poll_write_buffered(cx) {
                    return Poll::Ready(Some(Err(err)));
                }
            }
            match this.next_frame() {
                Err(err) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Ok(Some((fin, opcode, payload))) => match this.on_frame(fin, opcode, payload) {
                    Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                    Ok(None) => continue,
                    Err(err) => {
                        this.ended = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                Ok(None) => {}
            }
            if this.read.capacity() - this.read.len() < READ_CHUNK / 4 {
                this.read.reserve(READ_CHUNK);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.read
            )) {
                Ok(0) => {
                    this.ended = true;
                    this.write.clear();
                    return Poll::Ready(Some(Err(Error::Protocol(
                        ProtocolError::ResetWithoutClosingHandshake,
                    ))));
                }
                Ok(_) => {}
                Err(err) => {
                    this.ended = true;
                    this.write.clear();
                    return Poll::Ready(Some(Err(Error::Io(err))));
                }
            }
        }
    }
}

impl Sink<Message> for Ws {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Batches of queued messages go out together, up to a point.
        if self.write.len() >= READ_CHUNK {
            ready!(self.poll_write_buffered(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        if self.close_sent {
            return Err(Error::Protocol(ProtocolError::SendAfterClosing));
        }
        if let Message::Frame(_) = message {
            // Never sent by the load generator: refused rather than dropped.
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw frames are not supported by this client",
            )));
        }
        self.encode(&message);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_buffered(cx))?;
        Pin::new(&mut self.io).poll_flush(cx).map_err(Error::Io)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.close_sent {
            self.encode(&Message::Close(None));
        }
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx).map_err(Error::Io)
    }
}

/// A complete data message: text is checked to be UTF-8, as tungstenite does.
fn data_message(opcode: u8, payload: Bytes) -> Result<Message, Error> {
    if opcode == 1 {
        Utf8Bytes::try_from(payload)
            .map(Message::Text)
            .map_err(|_| Error::Utf8(String::from("text frame is not UTF-8")))
    } else {
        Ok(Message::Binary(payload))
    }
}

/// A close frame's code and reason, if it has them.
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(Error::Protocol(ProtocolError::InvalidCloseSequence)),
        [high, low, reason @ ..] => {
            let reason = Utf8Bytes::try_from(reason.to_vec())
                .map_err(|_| Error::Utf8(String::from("close reason is not UTF-8")))?;
            Ok(Some(CloseFrame {
                code: CloseCode::from(u16::from_be_bytes([*high, *low])),
                reason,
            }))
        }
    }
}

/// A nonzero xorshift seed from the connection's handshake key.
fn seed(key: &str) -> u64 {
    key.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |x, b| {
        (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1
}
