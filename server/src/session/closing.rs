//! How the node ends a WebSocket connection it decided to close.
//!
//! A close for a violation (a bad frame, an oversize message, flooding, a slow consumer, a
//! refused handshake) often comes while the client is still writing: the rest of a 1 MiB frame,
//! fragments that never end, a burst of requests. Dropping the socket then, with unread bytes in
//! the kernel's receive buffer, makes the kernel answer with a TCP reset, and a reset discards
//! what the client has not read yet: the error frame and the close code it was owed. So these
//! closes *linger*: the close frame is flushed, the sending side is shut down (a FIN, so the
//! client reads the frames and then the end), and input is read and thrown away until the
//! client closes too, within a time and a byte budget so that a client that never stops writing
//! cannot hold its connection for long.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::hub::Hub;

/// How long a closing handshake, or sending the frames before it, may take before the
/// connection is simply dropped.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a lingering close reads on. A client reads the close code and stops writing within
/// a round trip or two; waiting longer would only let a misbehaving one hold its slot.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// Most input thrown away while lingering: more than a client has in flight after one oversize
/// message (a pasted megabyte and its framing), and cheap to read, since nothing is parsed.
const LINGER_BYTES: usize = 4 << 20;
/// Size of the buffer lingering reads into, allocated only when a close lingers.
const SCRATCH_BYTES: usize = 16 * 1024;

/// `writable` is false when half a frame is stuck on the wire (see
/// [`Outgoing`](super::outgoing::Outgoing)): a close frame after it would corrupt the stream,
/// so the close is only counted and the connection dropped.
///
/// Starts the closing handshake with `code` and waits briefly for the peer's answer: for closes
/// that blame nobody (shutdown, idle), after which the peer has nothing left to send.
pub(super) async fn close_with<S>(
    hub: &Hub,
    ws: &mut WebSocketStream<S>,
    writable: bool,
    code: u16,
    reason: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.metrics().close(code);
    if !writable {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(close_frame(code, reason))).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Closes for a violation: the close frame with `code`, then a lingering end, so the client
/// reads the code even while it is still writing. A client that does not read at all gets no
/// lingering: the close frame cannot reach it, so waiting would tell it nothing.
pub(super) async fn close_lingering<S>(
    hub: &Hub,
    ws: &mut WebSocketStream<S>,
    writable: bool,
    code: u16,
    reason: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.metrics().close(code);
    if !writable {
        return;
    }
    let sent = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(close_frame(code, reason)))).await;
    if matches!(sent, Ok(Ok(()))) {
        let discarded = linger(ws.get_mut(), LINGER_TIMEOUT, LINGER_BYTES).await;
        log::debug!("lingering close {code}: discarded {discarded} bytes");
    }
}

/// Shuts down the sending side of `stream`, then reads and discards until the peer closes,
/// `timeout` is up or `max_bytes` are read. Returns the bytes discarded.
async fn linger<S>(stream: &mut S, timeout: Duration, max_bytes: usize) -> usize
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    if !matches!(
        tokio::time::timeout_at(deadline, stream.shutdown()).await,
        Ok(Ok(()))
    ) {
        return 0;
    }
    let mut scratch = vec![0u8; SCRATCH_BYTES];
    let mut discarded = 0;
    while discarded < max_bytes {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            // The end, a failure or the deadline: nothing more to wait for.
            _ => break,
        }
    }
    discarded
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lingering_reads_to_the_peers_end_and_shuts_down_first() {
        let (mut node, mut client) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            client.write_all(&vec![7u8; 100_000]).await.unwrap();
            client.shutdown().await.unwrap();
            // The node's side was shut down: the client reads its end.
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            rest.len()
        });
        let discarded = linger(&mut node, LINGER_TIMEOUT, LINGER_BYTES).await;
        assert_eq!(discarded, 100_000);
        assert_eq!(writer.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn lingering_stops_at_its_deadline() {
        let (mut node, _client) = tokio::io::duplex(1024);
        let timeout = Duration::from_millis(50);
        let started = tokio::time::Instant::now();
        assert_eq!(linger(&mut node, timeout, LINGER_BYTES).await, 0);
        assert!(started.elapsed() >= timeout);
    }

    #[tokio::test]
    async fn lingering_stops_at_its_byte_budget() {
        let (mut node, mut client) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            // Writes on until the node stops reading and drops its side.
            while client.write_all(&chunk).await.is_ok() {}
        });
        let budget = 1 << 20;
        let discarded = linger(&mut node, LINGER_TIMEOUT, budget).await;
        assert!(
            (budget..budget + SCRATCH_BYTES).contains(&discarded),
            "{discarded}"
        );
        drop(node);
        writer.await.unwrap();
    }
}
