//! What a connection owes its client, written straight to the socket as encoded frames.
//!
//! Every frame a session writes (deliveries, replies, pings) is a [`TextFrame`] or a ping,
//! already in wire form and shared with the other recipients, so a batch goes out as one
//! write with no per-frame trip through tungstenite. The frames are gathered into one buffer
//! per worker thread for that write: measured here, the kernel took longer to copy many
//! 200-byte slices of a vectored write than the gathering copy costs, and a buffer per thread
//! (rather than per connection) costs idle connections nothing. tungstenite still
//! reads the socket, answers pings and writes the closing handshake; before the first frame of
//! a batch its own pending bytes (a pong) are flushed, so the two never interleave.
//!
//! A write may stop halfway through a frame (the client stopped reading, the session is told
//! to end). The rest of that frame is kept: [`Outgoing::write_owed`] completes it before a
//! close frame follows, and otherwise nothing more may be written, as a half frame followed
//! by anything else would corrupt the stream.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::Error as WsError;

use crate::wire::{self, TextFrame};

/// Most bytes gathered for one write system call.
const GATHER_BYTES: usize = 64 * 1024;

thread_local! {
    /// Where a batch's frames are gathered for one plain write.
    static GATHER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(GATHER_BYTES));
}

/// The frames queued for the next write, oldest first.
#[derive(Default)]
pub(super) struct Outgoing {
    frames: VecDeque<Bytes>,
    /// The first frame has been partly written: only its remaining bytes are left.
    partial: bool,
}

impl Outgoing {
    /// Queues a text frame: its wire bytes are shared, not copied.
    pub(super) fn push(&mut self, frame: TextFrame) {
        self.frames.push_back(frame.into_wire());
    }

    /// Queues an empty ping.
    pub(super) fn push_ping(&mut self) {
        self.frames.push_back(wire::ping());
    }

    /// Frames queued and not fully written.
    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes every queued frame: tungstenite's pending bytes first, then the frames, gathered
    /// into as few writes as their size allows. Cancelling it leaves what was not written queued, a half-written frame
    /// first.
    pub(super) async fn write<S>(&mut self, ws: &mut WebSocketStream<S>) -> Result<(), WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.partial {
            // A pong tungstenite queued goes first; it never lands inside one of ours.
            ws.flush().await?;
        }
        while !self.frames.is_empty() {
            let written = poll_fn(|cx| {
                let stream = Pin::new(ws.get_mut());
                match self.frames.front() {
                    Some(large) if large.len() >= GATHER_BYTES => stream.poll_write(cx, large),
                    _ => GATHER.with_borrow_mut(|gather| {
                        gather.clear();
                        for frame in self.frames.iter() {
                            if gather.len() + frame.len() > GATHER_BYTES {
                                break;
                            }
                            gather.extend_from_slice(frame);
                        }
                        stream.poll_write(cx, gather)
                    }),
                }
            })
            .await?;
            if written == 0 {
                return Err(WsError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.consume(written);
        }
        // Most connections are idle between batches: the queue's storage is given back
        // rather than kept for the next one.
        self.frames = VecDeque::new();
        poll_fn(|cx| Pin::new(ws.get_mut()).poll_flush(cx)).await?;
        Ok(())
    }

    /// Drops `written` bytes from the front, remembering a frame left half-written.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                self.partial = true;
                return;
            }
            written -= front.len();
            self.frames.pop_front();
            self.partial = false;
        }
    }

    /// Writes what a closing session owes within `timeout`: everything queued, or only the
    /// rest of a half-written frame (the frames after it stay queued). Returns whether the
    /// stream stands between two frames afterwards, where a close frame may follow.
    pub(super) async fn write_owed<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        owed: Owed,
        timeout: Duration,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let rest = match owed {
            Owed::Everything => None,
            Owed::RestOfFrame if self.partial => Some(self.frames.split_off(1)),
            Owed::RestOfFrame => return true,
        };
        let _ = tokio::time::timeout(timeout, self.write(ws)).await;
        if self.partial {
            return false;
        }
        if let Some(rest) = rest {
            self.frames = rest;
        }
        true
    }
}

/// What a closing session writes before its close frame.
#[derive(Clone, Copy)]
pub(super) enum Owed {
    /// Every queued frame: the replies and deliveries it was owed.
    Everything,
    /// Only the rest of a half-written frame, which must be whole before anything follows.
    RestOfFrame,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

    #[tokio::test]
    async fn a_half_written_frame_is_completed_before_the_close_and_nothing_else() {
        let (node_io, client_io) = tokio::io::duplex(64);
        let mut node = WebSocketStream::from_raw_socket(node_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let text = "x".repeat(200);
        let mut out = Outgoing::default();
        out.push(TextFrame::new(&text));
        out.push(TextFrame::new("not owed"));
        // Nobody reads: 64 bytes fit and the write stalls inside the first frame.
        let stalled = tokio::time::timeout(Duration::from_millis(50), out.write(&mut node)).await;
        assert!(stalled.is_err() && out.partial);

        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(Ok(message)) = client.next().await {
                got.push(message);
            }
            got
        });
        let timeout = Duration::from_secs(5);
        assert!(out.write_owed(&mut node, Owed::RestOfFrame, timeout).await);
        let close = CloseFrame {
            code: CloseCode::from(4001),
            reason: "slow consumer".into(),
        };
        node.close(Some(close)).await.expect("the close is written");
        drop(node);
        let got = reader.await.expect("the reader");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Message::text(text));
        assert!(matches!(&got[1], Message::Close(Some(frame)) if u16::from(frame.code) == 4001));
    }

    #[test]
    fn a_partial_write_keeps_the_rest_of_its_frame_first() {
        let mut out = Outgoing::default();
        out.push(TextFrame::new("abc"));
        out.push(TextFrame::new("de"));
        // Header (2) + "abc" + 1 byte of the next header.
        out.consume(6);
        assert!(out.partial);
        assert_eq!(out.len(), 1);
        assert_eq!(&out.frames[0][..], &[2, b'd', b'e'][..]);
        out.consume(3);
        assert!(!out.partial && out.is_empty());
    }
}
