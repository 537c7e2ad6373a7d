//! The listener of the node's port, with a deadline on every connection's handshake.
//!
//! A connection has `--handshake-timeout-secs` from its accept to become a WebSocket. Until
//! then every read also watches that deadline, and once it passes reads fail, so hyper drops the
//! connection: a client that opens sockets and never finishes its request (slowloris), or keeps
//! a plain HTTP connection open, cannot hold a socket for longer. The WebSocket session disarms
//! the deadline once upgraded; from then on the idle timeout of the session applies, and a read
//! costs one relaxed atomic load more than on a bare socket.

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

use crate::limit_metrics::Refusal;
use crate::metrics::Metrics;

/// Accepts TCP connections with TCP_NODELAY and a handshake deadline.
pub struct GuardedListener {
    inner: TcpListener,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        GuardedListener {
            inner,
            timeout,
            metrics,
        }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.inner).await;
        // Writes are batched by the sessions; Nagle would only add latency on top.
        if let Err(error) = tcp.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY: {error}");
        }
        let stream = GuardedStream {
            inner: tcp,
            deadline: Some(Box::pin(tokio::time::sleep(self.timeout))),
            upgraded: Arc::new(AtomicBool::new(false)),
            metrics: self.metrics.clone(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Marks a connection's handshake as done, which lifts its deadline.
#[derive(Clone, Debug)]
pub struct Upgraded(Arc<AtomicBool>);

impl Upgraded {
    pub fn done(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a handler learns about its connection: the peer's address and the switch that lifts
/// the handshake deadline.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
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

pub struct GuardedStream {
    inner: TcpStream,
    /// Dropped once the connection is upgraded (or the deadline has fired).
    deadline: Option<Pin<Box<Sleep>>>,
    upgraded: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.upgraded.load(Ordering::Relaxed) {
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
