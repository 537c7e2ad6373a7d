//! The listener of the node's port, with a deadline on every connection's handshake.
//!
//! A connection has `--handshake-timeout-secs` from its accept to become a WebSocket. Until
//! then every read also watches that deadline, and once it passes reads fail, so hyper drops the
//! connection: a client that opens sockets and never finishes its request (slowloris), or keeps
//! a plain HTTP connection open, cannot hold a socket for longer. The WebSocket session disarms
//! the deadline once upgraded; from then on the idle timeout of the session applies, and a read
//! costs one relaxed atomic load more than on a bare socket.
//!
//! The listener also holds every connection's place among the pending handshakes
//! ([`pending`]): a connection beyond those caps is closed as soon as it is accepted,
//! and an accepted one gives its place back once it is upgraded or closed.

mod pending;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::admission::Refusal;
use crate::metrics::Metrics;
use pending::PendingSlot;
pub(crate) use pending::{PendingConfig, PendingHandshakes};

/// Accepts TCP connections with TCP_NODELAY, a handshake deadline and a pending place.
pub(crate) struct GuardedListener {
    inner: TcpListener,
    timeout: Duration,
    pending: Arc<PendingHandshakes>,
    metrics: Arc<Metrics>,
}

impl GuardedListener {
    /// Wraps `inner`: every connection it accepts gets `timeout` to finish its handshake.
    pub(crate) fn new(
        inner: TcpListener,
        timeout: Duration,
        pending: Arc<PendingHandshakes>,
        metrics: Arc<Metrics>,
    ) -> Self {
        GuardedListener {
            inner,
            timeout,
            pending,
            metrics,
        }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr, slot) = loop {
            let (tcp, addr) = Listener::accept(&mut self.inner).await;
            match self.pending.admit(addr.ip()) {
                Ok(slot) => break (tcp, addr, slot),
                Err(refusal) => {
                    // Closed unread: see the module documentation of `pending`.
                    self.metrics.limits.refused(refusal);
                    log::debug!("closed a connection from {addr}: {}", refusal.label());
                    drop(tcp);
                }
            }
        };
        // Writes are batched by the sessions; Nagle would only add latency on top.
        if let Err(error) = tcp.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY: {error}");
        }
        let stream = GuardedStream {
            inner: tcp,
            deadline: Some(Box::pin(tokio::time::sleep(self.timeout))),
            upgraded: Arc::new(HandshakeState {
                done: AtomicBool::new(false),
                slot,
            }),
            metrics: self.metrics.clone(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Where a connection's handshake stands: done or not, and its pending place until then.
#[derive(Debug)]
struct HandshakeState {
    done: AtomicBool,
    slot: PendingSlot,
}

/// Marks a connection's handshake as done, which lifts its deadline and frees its pending
/// place.
#[derive(Clone, Debug)]
pub(crate) struct Upgraded(Arc<HandshakeState>);

impl Upgraded {
    /// Lifts the deadline and gives the pending place back (idempotent).
    pub(crate) fn done(&self) {
        self.0.done.store(true, Ordering::Relaxed);
        self.0.slot.release();
    }
}

/// What a handler learns about its connection: the peer's address and the switch that lifts
/// the handshake deadline.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The TCP peer's address.
    pub addr: SocketAddr,
    /// Lifts the handshake deadline once the connection is upgraded (or proved its API key).
    pub upgraded: Upgraded,
}

impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            upgraded: Upgraded(stream.io().upgraded.clone()),
        }
    }
}

/// An accepted connection: reads fail once its handshake deadline passes, and it holds its
/// pending place until it is upgraded or dropped.
pub(crate) struct GuardedStream {
    inner: TcpStream,
    /// Dropped once the connection is upgraded (or the deadline has fired).
    deadline: Option<Pin<Box<Sleep>>>,
    upgraded: Arc<HandshakeState>,
    metrics: Arc<Metrics>,
}

impl Drop for GuardedStream {
    /// A request handler may still hold a clone of [`Upgraded`]; the place is the socket's.
    fn drop(&mut self) {
        self.upgraded.slot.release();
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.upgraded.done.load(Ordering::Relaxed) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                this.metrics.limits.refused(Refusal::HandshakeTimeout);
                // hyper closes the connection on this error.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handshake timeout",
                )));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
