//! Replies: every request gets exactly one, in request order.
//!
//! Acks, `joined` frames and errors go through one ordered queue of futures, so a reply that
//! waits for the broker holds back the replies to later requests, and an immediate one (an
//! error found while parsing) waits behind those before it. A `send` is acknowledged only
//! after the broker accepted the message; if it cannot be, the client gets `unavailable` with
//! its `ref`.

use chat_protocol::{ErrorCode, FrameError, MessageId, ServerFrame};
use futures::FutureExt;

use super::Session;
use crate::broker::{BrokerError, BrokerFuture};
use crate::flood::Verdict;
use crate::frame_budget;
use crate::hub::{Hub, Joined};
use crate::wire::TextFrame;

/// The outcome of a request, produced in request order.
pub(super) enum Reply {
    Ready(TextFrame),
    Joined {
        room: String,
        /// Whether this join counted in `joins_pending`.
        awaited: bool,
        reference: Option<String>,
        result: Result<Joined, BrokerError>,
    },
    Published {
        reference: Option<String>,
        result: Result<MessageId, BrokerError>,
        /// An edit or a deletion rather than a message.
        change: bool,
    },
    /// Flood control refused a send after a round trip.
    Refused {
        verdict: Verdict,
        reference: Option<String>,
    },
    /// A join or a leave over the connection's budget for them.
    JoinRefused {
        retry_after_ms: u64,
        reference: Option<String>,
    },
}

impl Session {
    /// Turns a settled reply into its frame, in the batch to write.
    pub(super) fn on_reply(&mut self, reply: Reply) {
        if let Reply::Joined { awaited: true, .. } = reply {
            self.joins_pending -= 1;
        }
        match reply {
            Reply::Ready(frame) => self.batch.push(frame),
            Reply::Joined {
                room,
                reference,
                result,
                ..
            } => self.on_joined(room, reference, result),
            Reply::JoinRefused {
                retry_after_ms,
                reference,
            } => {
                self.flood.record(Verdict::Limited { retry_after_ms });
                let error = join_refusal(retry_after_ms, reference);
                let frame = error_frame_with_retry(&self.hub, error, Some(retry_after_ms));
                self.batch.push(frame);
            }
            Reply::Refused { verdict, reference } => {
                self.flood.record(verdict);
                if let Some((error, retry_after_ms)) = refusal(verdict, reference) {
                    let frame = error_frame_with_retry(&self.hub, error, retry_after_ms);
                    self.batch.push(frame);
                }
            }
            Reply::Published {
                reference,
                result,
                change,
            } => self.on_published(reference, result, change),
        }
    }

    fn on_joined(
        &mut self,
        room: String,
        reference: Option<String>,
        result: Result<Joined, BrokerError>,
    ) {
        match result {
            Ok(joined) => {
                let frame = frame_budget::joined_frame(&room, joined, &self.hub.metrics().frames);
                self.batch.push(text_message(frame));
            }
            Err(error) => {
                if let Some(channel) = self.rooms.remove(&room) {
                    self.hub.leave(&channel, self.member);
                }
                let error = unavailable(&error, "cannot join", reference);
                self.batch.push(error_frame(&self.hub, error));
            }
        }
    }

    fn on_published(
        &mut self,
        reference: Option<String>,
        result: Result<MessageId, BrokerError>,
        change: bool,
    ) {
        match result {
            Ok(id) => {
                self.flood.record(Verdict::Allowed);
                let metrics = self.hub.metrics();
                match change {
                    true => metrics.chat.changes.inc(),
                    false => metrics.messages_in.inc(),
                }
                let ack = ServerFrame::Ack {
                    reference: reference.map(Into::into),
                    id: id.to_string().into(),
                };
                self.batch.push(text_message(ack.to_json()));
            }
            Err(error) => {
                // A request Redis did not answer in time may still have been carried out.
                let what = match error {
                    BrokerError::Timeout => "not confirmed, it may have been published",
                    _ => "message not sent",
                };
                let error = unavailable(&error, what, reference);
                self.batch.push(error_frame(&self.hub, error));
            }
        }
    }

    /// Queues an immediate reply behind the replies still in flight, keeping request order.
    pub(super) fn reply(&mut self, frame: TextFrame) {
        self.replies
            .push_back(futures::future::ready(Reply::Ready(frame)).boxed());
    }

    /// Queues an error reply, in request order.
    pub(super) fn reply_error(&mut self, error: FrameError) {
        let frame = error_frame(&self.hub, error);
        self.reply(frame);
    }

    /// Queues flood control's refusal of a request, in request order.
    pub(super) fn reply_refused(&mut self, verdict: Verdict, reference: Option<String>) {
        let refused = Reply::Refused { verdict, reference };
        self.replies
            .push_back(futures::future::ready(refused).boxed());
    }
}

/// Waits for the broker to accept a publication: the reply to a `send`.
pub(super) async fn published(
    accepted: BrokerFuture<MessageId>,
    reference: Option<String>,
) -> Reply {
    Reply::Published {
        reference,
        result: accepted.await,
        change: false,
    }
}

/// The error for a refused send, and its `retry_after_ms`.
fn refusal(verdict: Verdict, reference: Option<String>) -> Option<(FrameError, Option<u64>)> {
    let (code, message, retry_after_ms) = match verdict {
        Verdict::Allowed => return None,
        Verdict::Limited { retry_after_ms } => (
            ErrorCode::RateLimited,
            format!("too many messages; not sent, retry in {retry_after_ms} ms"),
            Some(retry_after_ms),
        ),
        Verdict::Duplicate => (
            ErrorCode::Duplicate,
            "you sent the same text to this room a moment ago; not sent".to_owned(),
            None,
        ),
    };
    let error = FrameError::new(code, message).with_reference(reference);
    Some((error, retry_after_ms))
}

/// The error for a join, leave or member page over the connection's budget for them.
fn join_refusal(retry_after_ms: u64, reference: Option<String>) -> FrameError {
    let message =
        format!("too many joins, leaves and member pages; not done, retry in {retry_after_ms} ms");
    FrameError::new(ErrorCode::RateLimited, message).with_reference(reference)
}

/// The error for a leave or a send in a room the connection is not in.
pub(super) fn not_joined(room: &str, reference: Option<String>) -> FrameError {
    FrameError::new(ErrorCode::NotJoined, format!("join room `{room}` first"))
        .with_reference(reference)
}

/// The error for a request the broker could not carry out.
pub(super) fn unavailable(
    error: &BrokerError,
    what: &str,
    reference: Option<String>,
) -> FrameError {
    let message = format!("{what}: {error}; try again shortly");
    FrameError::new(ErrorCode::Unavailable, message).with_reference(reference)
}

/// An `error` frame, counted by code.
pub(super) fn error_frame(hub: &Hub, error: FrameError) -> TextFrame {
    error_frame_with_retry(hub, error, None)
}

fn error_frame_with_retry(hub: &Hub, error: FrameError, retry_after_ms: Option<u64>) -> TextFrame {
    hub.metrics().error(error.code);
    let frame = ServerFrame::Error {
        code: error.code,
        message: frame_budget::bounded_error_message(error.message).into(),
        reference: error.reference.map(Into::into),
        retry_after_ms,
    };
    text_message(frame.to_json())
}

/// A text frame of `json`, encoded for the wire.
pub(super) fn text_message(json: String) -> TextFrame {
    TextFrame::from(json)
}
