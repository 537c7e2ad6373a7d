//! How a session ends: why the loop stopped, and the close that goes with each reason.
//!
//! A failed read or write is classified here, because the right close depends on whose fault
//! it was: a peer that vanished is gone (nobody is left to tell), a frame the node cannot
//! write is the node's fault (1011), a client that stops reading is a slow consumer (4001), and
//! a broken protocol is a violation told to the client before a lingering close.

use chat_protocol::{ErrorCode, FrameError, close};
use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};

use super::Session;
use super::closing::{CLOSE_TIMEOUT, close_lingering, close_with};
use super::outgoing::Owed;
use super::replies::error_frame;
use super::write_deadline::is_write_stall;
use crate::frame_budget;

/// Why the main loop ended.
pub(super) enum End {
    /// The peer closed the socket or it broke.
    Gone,
    /// The peer sent a close frame; tungstenite queued the reply.
    ClosedByPeer,
    Shutdown,
    SlowConsumer,
    /// A write made no progress for the write timeout: the client stopped reading.
    WriteStalled,
    /// Rate-limited too many times in a row.
    Flooding,
    /// Answered no ping within the idle timeout.
    Idle,
    /// The node built a frame of `bytes` that its write buffer cannot take: a server error.
    Oversize {
        bytes: usize,
    },
    /// The token the connection was opened with expired.
    TokenExpired,
    /// The peer broke the protocol: optionally an error frame, then a close code.
    Violation {
        code: u16,
        reason: &'static str,
        error: Option<FrameError>,
    },
}

impl End {
    /// The reason, for the log.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            End::Gone => "connection gone",
            End::ClosedByPeer => "closed by the client",
            End::Shutdown => "node shutting down",
            End::SlowConsumer => "slow consumer",
            End::WriteStalled => "write timed out",
            End::Flooding => "flooding",
            End::Idle => "idle timeout",
            End::Oversize { .. } => "frame too large to send",
            End::TokenExpired => "token expired",
            End::Violation { reason, .. } => reason,
        }
    }
}

impl Session {
    /// Closes the connection as `end` requires, after what is still owed to the client.
    pub(super) async fn finish<S>(&mut self, ws: &mut WebSocketStream<S>, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let hub = self.hub.clone();
        // A frame left half-written is completed first: nothing else may follow half a frame.
        // Ends that owe the client its whole batch write it below instead.
        let whole = match end {
            End::Gone | End::Shutdown | End::Flooding | End::TokenExpired => true,
            _ => {
                self.batch
                    .write_owed(ws, Owed::RestOfFrame, CLOSE_TIMEOUT)
                    .await
            }
        };
        match end {
            End::Gone => {}
            End::ClosedByPeer => {
                if whole {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
                }
            }
            End::Shutdown => {
                self.drain().await;
                let whole = self
                    .batch
                    .write_owed(ws, Owed::Everything, CLOSE_TIMEOUT)
                    .await;
                close_with(&hub, ws, whole, close::GOING_AWAY, "server shutting down").await;
            }
            End::SlowConsumer => {
                hub.metrics().slow_consumer_closes.inc();
                close_lingering(&hub, ws, whole, close::SLOW_CONSUMER, "slow consumer").await;
            }
            End::WriteStalled => {
                hub.metrics().limits.write_timeouts.inc();
                close_lingering(&hub, ws, whole, close::SLOW_CONSUMER, "write timed out").await;
            }
            End::Flooding => {
                // The client learns why from the errors it was sent.
                hub.metrics().limits.flood_closes.inc();
                let whole = self
                    .batch
                    .write_owed(ws, Owed::Everything, CLOSE_TIMEOUT)
                    .await;
                close_lingering(&hub, ws, whole, close::POLICY_VIOLATION, "flooding").await;
            }
            End::Idle => {
                hub.metrics().limits.idle_closes.inc();
                close_with(&hub, ws, whole, close::IDLE_TIMEOUT, "idle timeout").await;
            }
            End::Oversize { bytes } => {
                log::warn!(
                    "session {}: a frame of {bytes} bytes does not fit the write buffer \
                     (the budget is {} bytes); closing with 1011",
                    self.id,
                    frame_budget::FRAME_BUDGET
                );
                hub.metrics().frames.oversize_closes.inc();
                close_with(
                    &hub,
                    ws,
                    whole,
                    close::INTERNAL_ERROR,
                    "frame too large to send",
                )
                .await;
            }
            End::TokenExpired => {
                // Replies already due go out first, then the code that asks for a fresh token.
                let whole = self
                    .batch
                    .write_owed(ws, Owed::Everything, CLOSE_TIMEOUT)
                    .await;
                close_with(&hub, ws, whole, close::TOKEN_EXPIRED, "token expired").await;
            }
            End::Violation {
                code,
                reason,
                error,
            } => {
                if let Some(error) = error.filter(|_| whole) {
                    let frame = error_frame(&hub, error);
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(frame.into())).await;
                }
                close_lingering(&hub, ws, whole, code, reason).await;
            }
        }
    }

    /// Publishes already handed to the broker finish, and their senders learn how.
    async fn drain(&mut self) {
        let drained = tokio::time::timeout(self.limits.drain_timeout, async {
            while let Some(reply) = self.replies.next().await {
                self.on_reply(reply);
            }
        })
        .await;
        if drained.is_err() {
            log::warn!("shutdown: gave up waiting for in-flight requests");
        }
    }
}

/// How a failed read ends the session. A peer that vanishes without a close frame is gone,
/// not a protocol violation: there is nobody left to tell, and counting it as one would hide
/// real violations among ordinary disconnects.
pub(super) fn read_error_end(error: WsError) -> End {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => End::Violation {
            code: close::MESSAGE_TOO_BIG,
            reason: "frame too large",
            error: Some(FrameError::new(
                ErrorCode::TooLarge,
                format!("a frame of {size} bytes exceeds the limit of {max_size} bytes"),
            )),
        },
        WsError::Capacity(_) => End::Violation {
            code: close::MESSAGE_TOO_BIG,
            reason: "frame too large",
            error: None,
        },
        WsError::Utf8(_) => End::Violation {
            code: close::INVALID_PAYLOAD,
            reason: "text frame is not valid UTF-8",
            error: None,
        },
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        // A read flushes pending pongs, so it can meet a stalled write too.
        ref error if is_write_stall(error) => End::WriteStalled,
        WsError::Protocol(_) => End::Violation {
            code: close::PROTOCOL_ERROR,
            reason: "WebSocket protocol error",
            error: None,
        },
        _ => End::Gone,
    }
}

/// How a failed write ends the session. tungstenite refuses a frame that would overflow the
/// write buffer before sending any of it. A frame larger than the budget is the node's fault
/// (1011); a smaller one found the buffer full of control frames the client never read, which
/// is a slow consumer, and so is a write that made no progress for the write timeout. Anything
/// else means the peer is gone.
pub(super) fn write_error_end(error: WsError) -> End {
    match error {
        WsError::WriteBufferFull(message) if message.len() > frame_budget::FRAME_BUDGET => {
            End::Oversize {
                bytes: message.len(),
            }
        }
        WsError::WriteBufferFull(_) => End::SlowConsumer,
        ref error if is_write_stall(error) => End::WriteStalled,
        _ => End::Gone,
    }
}

#[cfg(test)]
mod tests;
