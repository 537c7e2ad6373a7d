//! A deadline on writes that make no progress, under the WebSocket of every session.
//!
//! A client that stops reading lets the node's writes to it wait forever once the kernel's
//! buffers are full, and while a session waits on a write it watches neither its idle timer nor
//! anything else: its task, socket and connection slot would be held for good. This wrapper
//! fails a write that has made no progress for `--write-timeout-secs` with a [`WriteStalled`]
//! error, which the session turns into a 4001 close. Progress, not duration, is what counts: a
//! slow client that keeps reading is never cut off, however long a large write takes.
//!
//! The deadline is one timer per connection, created at its first stalled write and re-armed
//! (not reallocated) at the next ones, so a write that goes straight through costs nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Error as WsError;

/// The error of a write that made no progress for the write timeout.
#[derive(Debug, thiserror::Error)]
#[error("a write made no progress for {0:?}")]
pub(crate) struct WriteStalled(pub Duration);

/// Whether a WebSocket error is a write that timed out here.
pub(crate) fn is_write_stall(error: &WsError) -> bool {
    match error {
        WsError::Io(error) => error
            .get_ref()
            .is_some_and(|inner| inner.is::<WriteStalled>()),
        _ => false,
    }
}

/// `inner`, with writes failing once one has been pending without progress for `timeout`.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// The timer, kept once created.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current stall.
    armed: bool,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Passes on the outcome of a write: progress disarms the deadline, a pending write arms it
    /// (if it is not running yet) and fails once it has passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.armed = false;
            return outcome;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = match (&mut self.timer, self.armed) {
            (Some(timer), true) => timer,
            (Some(timer), false) => {
                timer.as_mut().reset(deadline);
                timer
            }
            (None, _) => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        if timer.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                WriteStalled(self.timeout),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_timeout() {
        let (node, _client) = tokio::io::duplex(1024);
        let mut node = WriteDeadline::new(node, TIMEOUT);
        let started = Instant::now();
        let error = node.write_all(&[0u8; 4096]).await.unwrap_err();
        assert!(started.elapsed() >= TIMEOUT);
        assert!(is_write_stall(&WsError::Io(error)));
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (node, mut client) = tokio::io::duplex(1024);
        let mut node = WriteDeadline::new(node, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut chunk = [0u8; 512];
            let mut total = 0;
            while total < 8 * 1024 {
                // Each read makes room for one more write, well within the timeout, while the
                // whole write takes far longer than it.
                tokio::time::sleep(TIMEOUT / 5).await;
                total += client.read(&mut chunk).await.unwrap();
            }
        });
        node.write_all(&[0u8; 8 * 1024]).await.unwrap();
        reader.await.unwrap();
    }

    #[test]
    fn other_errors_are_not_write_stalls() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(!is_write_stall(&WsError::Io(reset)));
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert!(!is_write_stall(&WsError::Io(timeout)));
    }
}
