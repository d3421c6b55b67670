//! The accept loop: HTTP/1.1 with a deadline on the request head and a bound on connections
//! still in their HTTP phase, then WebSocket upgrades handed to the library.
//!
//! `axum::serve` sets neither: a client that trickles its headers a byte at a time (slowloris)
//! holds a task and a socket for as long as it likes, and any number of them may. Here hyper
//! serves each connection with a timer, so the head must arrive within
//! `ROOMCAST_HEADER_TIMEOUT` (an idle keep-alive connection waiting for its next request is
//! closed after that long too), and a connection takes one of `ROOMCAST_MAX_HANDSHAKES`
//! permits from accept until its HTTP phase ends: its upgrade to a WebSocket (whose limits are
//! the hub's: `WEBSOCKET_MAX_CONNECTIONS`) or its close. Past the bound a new connection is
//! closed at once, before a byte is read.
//!
//! ```text
//! accept ─▶ permit? ─ no ─▶ close
//!              │ yes
//!              ▼
//!   hyper http1 (head within the timeout) ─▶ router ─▶ 101 + upgrade ─▶ permit back
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// How the HTTP phase of a connection is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest a client may take to send a request's head (`ROOMCAST_HEADER_TIMEOUT`);
    /// `Duration::ZERO`: no limit.
    pub header_timeout: Duration,
    /// Most connections in their HTTP phase at once (`ROOMCAST_MAX_HANDSHAKES`); `0`: no limit.
    pub max_handshakes: usize,
}

impl Default for HttpLimits {
    /// 10 s for a head (a browser sends it in one packet), 1024 connections mid-handshake
    /// (far more than honest clients keep at once: the phase lasts a round trip).
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets the
/// connections still in their HTTP phase finish (idle ones close at once) for up to `drain`,
/// and returns.
/// Upgraded WebSockets are not waited for: the hub closes them.
///
/// # Errors
///
/// The listener's address cannot be read.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) -> std::io::Result<()> {
    let permits =
        (limits.max_handshakes > 0).then(|| Arc::new(Semaphore::new(limits.max_handshakes)));
    // Dropped on shutdown: every connection task sees it and shuts down gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    // Each connection task holds a receiver; `closed()` resolves when all have ended.
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match &permits {
            Some(permits) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(%peer, "too many connections in their handshake: closed");
                    continue;
                }
            },
            None => None,
        };
        // Sessions batch their frames and flush once, so Nagle's algorithm only adds delay
        // (~40 ms against delayed ACKs, measured by the load generator).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            });
        let (mut stop_rx, done_rx) = (stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            if !limits.header_timeout.is_zero() {
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout);
            }
            let service = TowerToHyperService::new(service);
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(peer, result),
                _ = stop_rx.changed() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(peer, connection.await);
                }
            }
            drop(permit);
            drop(done_rx);
        });
    }
    drop(stop_tx);
    drop(done_rx);
    // Idle connections close at once; one mid-request finishes it (its head bounded by the
    // header timeout). Bounded all the same: a shutdown never waits on a client.
    if tokio::time::timeout(drain, done_tx.closed()).await.is_err() {
        tracing::warn!("some HTTP connections were still open at the shutdown deadline");
    }
    Ok(())
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        // A head not sent in time, a client that vanished: the client's doing.
        tracing::debug!(%peer, error = %err, "HTTP connection ended");
    }
}
