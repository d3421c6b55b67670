//! Where the load goes and how a client gets there.
//!
//! [`Endpoint`] is a parsed `ws://` URL whose host is on this machine: 127.0.0.0/8, `::1` or
//! `localhost`, nothing else. [`Target`] adds what one server under test needs (its pid for
//! CPU and RSS readings, the secret its tokens are signed with). [`Connector`] opens client
//! connections, spreading them over several 127.0.0.x source addresses (bind before connect)
//! so that one destination port is not limited to one source address's ~28k ephemeral ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::token::TokenMinter;
use crate::wire::{self, Inbound};

/// A client WebSocket as the load generator holds it.
pub use crate::ws::Ws;

/// A `ws://` URL on this machine, or several of one server's nodes (`ws://a/ws/auth,ws://b/ws/auth`:
/// connection `i` goes to node `i mod n`, so a room's clients spread evenly over them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as given.
    url: String,
    /// Where to connect (`localhost` is 127.0.0.1; no name is ever resolved): the first node.
    addr: SocketAddr,
    /// `host:port` as it goes into the request.
    authority: String,
    /// Path and query, e.g. `/ws/auth`.
    path_and_query: String,
    /// Further nodes, after the first: each one's address and URL.
    more: Vec<Endpoint>,
}

impl Endpoint {
    /// Parses `url`, refusing any host that is not loopback.
    ///
    /// ```
    /// use roomcast_loadgen::target::Endpoint;
    /// assert!(Endpoint::parse("ws://127.0.0.1:8080/ws/auth").is_ok());
    /// assert!(Endpoint::parse("ws://localhost:9090/ws/auth").is_ok());
    /// assert!(Endpoint::parse("ws://[::1]:9090/ws/auth").is_ok());
    /// assert!(Endpoint::parse("ws://10.0.0.1:8080/ws").is_err());
    /// assert!(Endpoint::parse("ws://example.com/ws").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// A message saying what is wrong with the URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some((first, rest)) = url.split_once(',') {
            let mut endpoint = Self::parse(first)?;
            endpoint.more = rest
                .split(',')
                .map(Self::parse)
                .collect::<Result<Vec<_>, _>>()?;
            endpoint.url = url.to_owned();
            return Ok(endpoint);
        }
        let uri: Uri = url
            .parse()
            .map_err(|err| format!("not a URL ({err}): {url:?}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some(other) => {
                return Err(format!(
                    "only ws:// is supported (loopback, no TLS), got {other}://"
                ));
            }
            None => return Err(format!("expected ws://host:port/path, got {url:?}")),
        }
        let host = uri.host().ok_or_else(|| format!("no host in {url:?}"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if bare.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bare.parse().map_err(|_| {
                format!("host {host:?} is not an address: only 127.0.0.0/8, ::1 and localhost")
            })?
        };
        if !is_loopback(ip) {
            return Err(format!(
                "refusing {ip}: the load generator targets loopback only (127.0.0.0/8, ::1, localhost)"
            ));
        }
        let port = uri.port_u16().unwrap_or(80);
        let addr = SocketAddr::new(ip, port);
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        Ok(Self {
            url: url.to_owned(),
            addr,
            authority: addr.to_string(),
            path_and_query,
            more: Vec::new(),
        })
    }

    /// The node connection `index` goes to.
    pub fn node(&self, index: u64) -> &Endpoint {
        let nodes = self.more.len() as u64 + 1;
        match (index % nodes) as usize {
            0 => self,
            at => &self.more[at - 1],
        }
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The socket address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request URL with `token` in the query.
    fn url_with_token(&self, token: &str) -> String {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "ws://{}{}{sep}token={token}",
            self.authority, self.path_and_query
        )
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// 127.0.0.0/8 or ::1 (also ::ffff:127.x.y.z).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// One server under test and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name in the report (`roomcast`, `reference`, …).
    pub label: String,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Its process id, for CPU time and RSS from `/proc`.
    pub server_pid: Option<u32>,
    /// The HS256 secret tokens are signed with.
    pub secret: String,
    /// How many 127.0.0.x source addresses client sockets are spread over (IPv4 targets).
    pub sources: u8,
    /// Connections being set up at once.
    pub setup_concurrency: usize,
    /// Longest the set-up of all connections may take.
    pub setup_timeout: Duration,
    /// Longest to wait, after the last message is sent, for deliveries still in flight.
    pub drain: Duration,
}

impl Target {
    /// A connector for this target whose users are named `lg-{namespace}-{index}`.
    pub fn connector(&self, namespace: &str) -> Connector {
        let sources = match self.endpoint.addr.ip() {
            IpAddr::V4(_) => (0..self.sources)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i)))
                .collect(),
            IpAddr::V6(_) => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
        };
        Connector {
            endpoint: self.endpoint.clone(),
            sources,
            minter: TokenMinter::new(self.secret.as_bytes(), namespace),
            timeout: self.setup_timeout,
        }
    }
}

/// Why a client could not connect and join. [`ConnectError::kind`] is the key failures are
/// counted under.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connection failed.
    Io(std::io::Error),
    /// The WebSocket handshake failed (an HTTP status, a protocol error).
    Handshake(tungstenite::Error),
    /// The server closed the socket, with this code and reason, before the join completed.
    Closed(Option<u16>, String),
    /// The server sent an `error` envelope in answer to the join.
    Refused(String),
    /// No answer in time.
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(err) => write!(f, "connect: {err}"),
            Self::Handshake(err) => write!(f, "handshake: {err}"),
            Self::Closed(Some(code), reason) => write!(f, "closed {code} {reason}"),
            Self::Closed(None, reason) => write!(f, "closed without a code {reason}"),
            Self::Refused(why) => write!(f, "join refused: {why}"),
            Self::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    /// A short key to count failures by: `io:ConnectionRefused`, `http 401`, `close 1013`, …
    pub fn kind(&self) -> String {
        match self {
            Self::Io(err) => format!("io:{:?}", err.kind()),
            Self::Handshake(tungstenite::Error::Http(response)) => {
                format!("http {}", response.status().as_u16())
            }
            Self::Handshake(tungstenite::Error::Io(err)) => format!("io:{:?}", err.kind()),
            Self::Handshake(_) => "handshake".to_owned(),
            Self::Closed(Some(code), _) => format!("close {code}"),
            Self::Closed(None, _) => "closed".to_owned(),
            Self::Refused(_) => "join refused".to_owned(),
            Self::Timeout => "timeout".to_owned(),
        }
    }
}

/// Opens client connections to one endpoint, with tokens minted on the way.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: Endpoint,
    /// Connection `i` binds `sources[i % len]` before connecting.
    sources: Vec<IpAddr>,
    minter: TokenMinter,
    /// Bound on one connect + join.
    timeout: Duration,
}

impl Connector {
    /// Connects client `index` (TCP, then the upgrade with a fresh token), sends
    /// `{"type":"join","room":room}` and reads until the server's `user_list` for that room.
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: what failed, including a close code when the server refused.
    pub async fn connect_and_join(&self, index: u64, room: &str) -> Result<Ws, ConnectError> {
        tokio::time::timeout(self.timeout, self.connect_and_join_inner(index, room))
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }

    async fn connect_and_join_inner(&self, index: u64, room: &str) -> Result<Ws, ConnectError> {
        let mut ws = self.connect(index).await?;
        ws.send(Message::text(wire::join(room)))
            .await
            .map_err(ConnectError::Handshake)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => match wire::classify(&text) {
                    Inbound::UserList { room: listed } if listed == room => return Ok(ws),
                    Inbound::Error => return Err(ConnectError::Refused(text.to_string())),
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(frame) => {
                            ConnectError::Closed(Some(frame.code.into()), frame.reason.to_string())
                        }
                        None => ConnectError::Closed(None, String::new()),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(ConnectError::Handshake(err)),
                None => return Err(ConnectError::Closed(None, "(end of stream)".to_owned())),
            }
        }
    }

    /// TCP from the connection's source address, then the WebSocket upgrade.
    async fn connect(&self, index: u64) -> Result<Ws, ConnectError> {
        let source = self.sources[(index % self.sources.len() as u64) as usize];
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(ConnectError::Io)?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(ConnectError::Io)?;
        let stream = socket
            .connect(self.endpoint.node(index).addr)
            .await
            .map_err(ConnectError::Io)?;
        // Publishers send small frames; Nagle would hold them back behind unacknowledged data.
        stream.set_nodelay(true).map_err(ConnectError::Io)?;
        let token = self.minter.mint(index);
        let url = self.endpoint.node(index).url_with_token(&token);
        Ws::upgrade(stream, &url)
            .await
            .map_err(ConnectError::Handshake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_accepted() {
        for ok in [
            "ws://127.0.0.1:8080/ws/auth",
            "ws://127.1.2.3:1/x",
            "ws://localhost:8080/ws/auth",
            "ws://LOCALHOST/ws",
            "ws://[::1]:9090/ws/auth",
        ] {
            assert!(Endpoint::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "ws://10.0.0.1:8080/ws",
            "ws://192.168.1.1/ws",
            "ws://0.0.0.0:8080/ws",
            "ws://example.com/ws",
            "ws://localhost.example.com/ws",
            "ws://[::2]:80/ws",
            "wss://127.0.0.1/ws",
            "http://127.0.0.1/ws",
            "127.0.0.1:8080",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn token_goes_into_the_query() {
        let e = Endpoint::parse("ws://localhost:8080/ws/auth").unwrap();
        assert_eq!(e.addr(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.url_with_token("T"), "ws://127.0.0.1:8080/ws/auth?token=T");
        let both = Endpoint::parse("ws://127.0.0.1:1/ws/auth,ws://127.0.0.1:2/ws/auth").unwrap();
        assert_eq!(both.node(0).addr().port(), 1);
        assert_eq!(both.node(1).addr().port(), 2);
        assert_eq!(both.node(2).addr().port(), 1);
        assert!(Endpoint::parse("ws://127.0.0.1:1/ws,ws://10.0.0.1:2/ws").is_err());
        let e = Endpoint::parse("ws://[::1]:9/ws?x=1").unwrap();
        assert_eq!(e.url_with_token("T"), "ws://[::1]:9/ws?x=1&token=T");
    }
}
