//! One WebSocket connection, from welcome to close, on a single task.
//!
//! The task `select!`s over the socket, its bounded outbound queue and its requests in flight,
//! so reading and writing share one stream without a lock or a split. Every event that produces
//! output appends to a batch; the batch is fed to the socket frame by frame and flushed once,
//! which turns a burst of deliveries into one write syscall.
//!
//! Every request gets exactly one reply, in request order: replies (acks, `joined`, errors) go
//! through one ordered queue of futures. A `send` is acknowledged only after the broker accepted
//! the message; if it cannot be, the client gets `unavailable` with its `ref`. At most
//! `max_in_flight` requests wait at once; beyond that the task stops reading the socket and TCP
//! pushes back on the client.
//!
//! Every `send` passes flood control first ([`crate::flood`]). When the verdict needs a round
//! trip to Redis, the publish waits for it inside the reply's future, and for the previous
//! send's publish, so one client's messages are published in the order it sent them.
//!
//! A client that stays silent gets a ping after half the idle timeout and is closed (4002) if
//! it has still answered nothing by the end; only a flag is touched per frame read. A client
//! that stops reading is closed (4001) once a write to it has made no progress for the write
//! timeout ([`write_deadline`]).
//!
//! Joins and leaves pass their own per-connection budget ([`crate::flood`]) before any work.
//! Closes for a violation linger ([`closing`]), so the client reads why.

mod closing;
pub mod write_deadline;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chat_protocol::{
    ClientFrame, ErrorCode, FrameError, MessageId, ServerFrame, close, parse_client_frame,
};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, BrokerFuture};
use crate::flood::{Check, FloodGuard, FloodPolicy, Verdict};
use crate::frame_budget;
use crate::hub::{Hub, Joined};
use crate::rooms::{MemberId, Outbox};
use closing::{CLOSE_TIMEOUT, close_lingering, close_with};
use write_deadline::is_write_stall;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest chat text, in bytes.
    pub max_text_bytes: usize,
    /// Capacity of the outbound queue, in frames; overflowing it closes the connection.
    pub outbound_queue: usize,
    /// Requests awaiting their reply before the task stops reading.
    pub max_in_flight: usize,
    /// How long in-flight publishes may take to finish when the node shuts down.
    pub drain_timeout: Duration,
    /// Rooms the connection may be in at once.
    pub max_rooms: usize,
    /// Silence after which the client is pinged (at half) and closed (at the end).
    pub idle_timeout: Option<Duration>,
    /// How long a write may make no progress before the connection is closed with 4001.
    pub write_timeout: Duration,
    pub flood: FloodPolicy,
}

/// Most frames written between two flushes.
const WRITE_BATCH: usize = 256;

/// Runs a connection to its end. `name` is the name to use, or why the connection may not
/// chat (told to the client before a 1008 close); `expires`, when the token that gave the name
/// stops being honoured (the connection is closed with 4003 then).
pub async fn run<S>(
    mut ws: WebSocketStream<S>,
    name: Result<String, FrameError>,
    expires: Option<SystemTime>,
    hub: Arc<Hub>,
    limits: SessionLimits,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    hub.metrics().connections.inc();
    hub.metrics().connections_total.inc();
    match name {
        Ok(name) => {
            let (outbox, queue) = Outbox::new(limits.outbound_queue);
            let mut session = Session {
                id: crate::ids::session_id(),
                member: hub.next_member_id(),
                hub: &hub,
                shared_hub: hub.clone(),
                flood: FloodGuard::new(limits.flood.clone()),
                publish_turn: None,
                flooding: false,
                name,
                outbox,
                rooms: HashMap::new(),
                joins_pending: 0,
                replies: FuturesOrdered::new(),
                batch: Vec::new(),
                limits,
            };
            session.serve(&mut ws, queue, expires, &shutdown).await;
        }
        Err(error) => {
            let reason = match error.code {
                ErrorCode::Unauthorized => "unauthorized",
                _ => "invalid name",
            };
            let refusal = error_frame(&hub, error);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(refusal)).await;
            close_lingering(&hub, &mut ws, close::POLICY_VIOLATION, reason).await;
        }
    }
    hub.metrics().connections.dec();
}

/// The outcome of a request, produced in request order.
enum Reply {
    Ready(Message),
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

/// Why the main loop ended.
enum End {
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
    fn describe(&self) -> &'static str {
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

struct Session<'h> {
    id: String,
    hub: &'h Hub,
    /// For publishes that wait for a flood-control round trip inside a reply's future.
    shared_hub: Arc<Hub>,
    flood: FloodGuard,
    /// Resolves when the previous send that waited for flood control has been published or
    /// refused; the next one publishes only after it.
    publish_turn: Option<oneshot::Receiver<()>>,
    /// Set once the client has been rate-limited too often in a row.
    flooding: bool,
    member: MemberId,
    name: String,
    outbox: Outbox,
    /// Joined rooms and their backplane channels, formatted once per join rather than per send.
    rooms: HashMap<String, String>,
    /// Joins not answered yet. While there are any, the session reads no further requests, so
    /// a `send` right after a `join` cannot be published before this node hears the room and
    /// the sender always receives its own message; and it writes no deliveries, so the room's
    /// live messages follow the `joined` reply and its history instead of overtaking them.
    joins_pending: usize,
    replies: FuturesOrdered<BoxFuture<'static, Reply>>,
    batch: Vec<Message>,
    limits: SessionLimits,
}

impl Session<'_> {
    async fn serve<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        mut queue: mpsc::Receiver<Utf8Bytes>,
        expires: Option<SystemTime>,
        shutdown: &CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let overflowed = self.outbox.overflowed().clone();
        let welcome = ServerFrame::Welcome {
            node: self.hub.node_id().into(),
            session: self.id.as_str().into(),
            name: self.name.as_str().into(),
        };
        self.batch.push(text_message(welcome.to_json()));
        let mut flush_needed = true;
        log::debug!("session {} opened for {:?}", self.id, self.name);
        // Checked at every half of the idle timeout: heard from the client since the last
        // check, or else ping it, or else (pinged last time) give up.
        let idle_half = self.limits.idle_timeout.map(|idle| idle / 2);
        let idle_check = tokio::time::sleep(idle_half.unwrap_or(Duration::MAX));
        tokio::pin!(idle_check);
        let (mut heard, mut pinged) = (false, false);
        let expiry_deadline = expires.and_then(deadline_of);
        let expiry = tokio::time::sleep_until(expiry_deadline.unwrap_or_else(Instant::now));
        tokio::pin!(expiry);

        let end = loop {
            if !self.batch.is_empty() || flush_needed {
                let written = tokio::select! {
                    result = write_batch(ws, &mut self.batch) => result,
                    _ = overflowed.cancelled() => break End::SlowConsumer,
                    _ = shutdown.cancelled() => break End::Shutdown,
                };
                if let Err(error) = written {
                    break write_error_end(error);
                }
                flush_needed = false;
            }
            let reading = self.joins_pending == 0 && self.replies.len() < self.limits.max_in_flight;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Shutdown,
                _ = overflowed.cancelled() => break End::SlowConsumer,
                () = &mut expiry, if expiry_deadline.is_some() => break End::TokenExpired,
                Some(reply) = self.replies.next(), if !self.replies.is_empty() => {
                    self.on_reply(reply);
                }
                () = &mut idle_check, if idle_half.is_some() => {
                    // While the node does not read, the client cannot be heard.
                    if heard || !reading {
                        (heard, pinged) = (false, false);
                    } else if pinged {
                        break End::Idle;
                    } else {
                        pinged = true;
                        self.batch.push(Message::Ping(Default::default()));
                    }
                    if let Some(half) = idle_half {
                        idle_check.as_mut().reset(tokio::time::Instant::now() + half);
                    }
                }
                incoming = ws.next(), if reading => {
                    heard = true;
                    match incoming {
                        None => break End::Gone,
                        Some(Ok(Message::Text(text))) => self.on_text(&text),
                        Some(Ok(Message::Binary(_))) => self.reply_error(FrameError::new(
                            ErrorCode::BadRequest,
                            "binary frames are not supported: send JSON text frames",
                        )),
                        // tungstenite queues the pong itself; it goes out with the next flush.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                            flush_needed = true;
                        }
                        Some(Ok(Message::Close(_))) => break End::ClosedByPeer,
                        Some(Err(error)) => break read_error_end(error),
                    }
                }
                // After the socket, so a busy room cannot starve a client's requests; whatever
                // is queued is drained below after every event anyway.
                Some(frame) = queue.recv(), if self.joins_pending == 0 => {
                    self.batch.push(Message::Text(frame));
                }
            }
            // Take whatever else is ready without waiting, so that it joins this batch.
            while let Some(Some(reply)) = self.replies.next().now_or_never() {
                self.on_reply(reply);
            }
            while self.joins_pending == 0 && self.batch.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(frame) => self.batch.push(Message::Text(frame)),
                    Err(_) => break,
                }
            }
            if self.flooding {
                break End::Flooding;
            }
        };

        // Stop deliveries into the queue before anything else.
        for channel in self.rooms.values() {
            self.hub.leave(channel, self.member);
        }
        log::debug!("session {} closing: {}", self.id, end.describe());
        self.finish(ws, end).await;
    }

    async fn finish<S>(&mut self, ws: &mut WebSocketStream<S>, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match end {
            End::Gone => {}
            End::ClosedByPeer => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
            }
            End::Shutdown => {
                // Publishes already handed to the broker finish, and their senders learn how.
                let drained = tokio::time::timeout(self.limits.drain_timeout, async {
                    while let Some(reply) = self.replies.next().await {
                        self.on_reply(reply);
                    }
                })
                .await;
                if drained.is_err() {
                    log::warn!("shutdown: gave up waiting for in-flight requests");
                }
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_batch(ws, &mut self.batch)).await;
                close_with(self.hub, ws, close::GOING_AWAY, "server shutting down").await;
            }
            End::SlowConsumer => {
                self.hub.metrics().slow_consumer_closes.inc();
                close_lingering(self.hub, ws, close::SLOW_CONSUMER, "slow consumer").await;
            }
            End::WriteStalled => {
                self.hub.metrics().limits.write_timeouts.inc();
                close_lingering(self.hub, ws, close::SLOW_CONSUMER, "write timed out").await;
            }
            End::Flooding => {
                // The client learns why from the errors it was sent.
                self.hub.metrics().limits.flood_closes.inc();
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_batch(ws, &mut self.batch)).await;
                close_lingering(self.hub, ws, close::POLICY_VIOLATION, "flooding").await;
            }
            End::Idle => {
                self.hub.metrics().limits.idle_closes.inc();
                close_with(self.hub, ws, close::IDLE_TIMEOUT, "idle timeout").await;
            }
            End::Oversize { bytes } => {
                log::warn!(
                    "session {}: a frame of {bytes} bytes does not fit the write buffer \
                     (the budget is {} bytes); closing with 1011",
                    self.id,
                    frame_budget::FRAME_BUDGET
                );
                self.hub.metrics().frames.oversize_closes.inc();
                close_with(
                    self.hub,
                    ws,
                    close::INTERNAL_ERROR,
                    "frame too large to send",
                )
                .await;
            }
            End::TokenExpired => {
                // Replies already due go out first, then the code that asks for a fresh token.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_batch(ws, &mut self.batch)).await;
                close_with(self.hub, ws, close::TOKEN_EXPIRED, "token expired").await;
            }
            End::Violation {
                code,
                reason,
                error,
            } => {
                if let Some(error) = error {
                    let frame = error_frame(self.hub, error);
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(frame)).await;
                }
                close_lingering(self.hub, ws, code, reason).await;
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        match parse_client_frame(text) {
            Ok(ClientFrame::Join {
                room,
                since,
                reference,
            }) => {
                let reference = reference.map(Into::into);
                let Some(reference) = self.join_budget(reference) else {
                    return;
                };
                match since.map(|since| since.parse::<MessageId>()).transpose() {
                    Ok(since) => self.join(&room, since, reference),
                    Err(error) => self.reply_error(
                        FrameError::new(ErrorCode::BadRequest, format!("`since`: {error}"))
                            .with_reference(reference),
                    ),
                }
            }
            Ok(ClientFrame::Leave { room, reference }) => {
                if let Some(reference) = self.join_budget(reference.map(Into::into)) {
                    self.leave(&room, reference);
                }
            }
            Ok(ClientFrame::Send {
                room,
                text,
                reference,
            }) => self.send(&room, &text, reference.map(Into::into)),
            Err(error) => self.reply_error(error),
        }
    }

    /// Counts a join or a leave against the connection's budget for them. Gives the request's
    /// `ref` back when it may go on; otherwise queues the refusal and gives nothing.
    fn join_budget(&mut self, reference: Option<String>) -> Option<Option<String>> {
        match self.flood.check_join(self.hub.metrics()) {
            Verdict::Limited { retry_after_ms } => {
                let refused = Reply::JoinRefused {
                    retry_after_ms,
                    reference,
                };
                self.replies
                    .push_back(futures::future::ready(refused).boxed());
                None
            }
            _ => Some(reference),
        }
    }

    fn join(&mut self, room: &str, since: Option<MessageId>, reference: Option<String>) {
        let (joined, awaited) = match self.rooms.get(room) {
            // Joining again changes nothing: the reply tells who is here.
            Some(channel) => {
                let members = self.hub.members(channel);
                let joined = async move {
                    Ok(Joined {
                        members: members.await?,
                        history: Vec::new(),
                        recovered: None,
                    })
                };
                (joined.boxed(), false)
            }
            None if self.rooms.len() >= self.limits.max_rooms => {
                let message = format!(
                    "a connection may be in at most {} rooms; leave one first",
                    self.limits.max_rooms
                );
                return self.reply_error(
                    FrameError::new(ErrorCode::TooManyRooms, message).with_reference(reference),
                );
            }
            None => {
                let channel = self.hub.channel(room);
                let joined =
                    self.hub
                        .join(room, &channel, self.member, &self.name, &self.outbox, since);
                match joined {
                    Ok(joined) => {
                        self.rooms.insert(room.to_owned(), channel);
                        (joined, true)
                    }
                    Err(error) => {
                        return self.reply_error(unavailable(&error, "cannot join", reference));
                    }
                }
            }
        };
        self.joins_pending += usize::from(awaited);
        let room = room.to_owned();
        self.replies.push_back(
            async move {
                Reply::Joined {
                    room,
                    awaited,
                    reference,
                    result: joined.await,
                }
            }
            .boxed(),
        );
    }

    fn leave(&mut self, room: &str, reference: Option<String>) {
        match self.rooms.remove(room) {
            Some(channel) => {
                self.hub.leave(&channel, self.member);
                let left = ServerFrame::Left { room: room.into() };
                self.reply(text_message(left.to_json()));
            }
            None => self.reply_error(not_joined(room, reference)),
        }
    }

    fn send(&mut self, room: &str, text: &str, reference: Option<String>) {
        let Some(channel) = self.rooms.get(room) else {
            return self.reply_error(not_joined(room, reference));
        };
        if let Err(error) = chat_protocol::validate_text_size(text, self.limits.max_text_bytes) {
            return self.reply_error(error.with_reference(reference));
        }
        let pending = match self.flood.check(self.hub.metrics(), &self.name, room, text) {
            Check::Ready(Verdict::Allowed) if turn_is_free(&mut self.publish_turn) => {
                let publication = self.hub.publish(channel, room, &self.name, text);
                self.replies
                    .push_back(published(publication, reference).boxed());
                return;
            }
            Check::Ready(Verdict::Allowed) => futures::future::ready(Verdict::Allowed).boxed(),
            // A refusal publishes nothing, so it need not wait for its turn.
            Check::Ready(verdict) => {
                let refused = Reply::Refused { verdict, reference };
                self.replies
                    .push_back(futures::future::ready(refused).boxed());
                return;
            }
            Check::Pending(verdict) => verdict,
        };
        let channel = channel.clone();
        self.send_after_check(pending, channel, room, text, reference);
    }

    /// Publishes once flood control allows it and the previous such send has been published.
    fn send_after_check(
        &mut self,
        verdict: BoxFuture<'static, Verdict>,
        channel: String,
        room: &str,
        text: &str,
        reference: Option<String>,
    ) {
        let previous = self.publish_turn.take();
        // Dropping the sender, after publishing or refusing, hands the turn on.
        let (my_turn, next_turn) = oneshot::channel::<()>();
        self.publish_turn = Some(next_turn);
        let hub = self.shared_hub.clone();
        let (room, name, text) = (room.to_owned(), self.name.clone(), text.to_owned());
        self.replies.push_back(
            async move {
                let verdict = verdict.await;
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                if verdict != Verdict::Allowed {
                    return Reply::Refused { verdict, reference };
                }
                let publication = hub.publish(&channel, &room, &name, &text);
                drop(my_turn);
                published(publication, reference).await
            }
            .boxed(),
        );
    }

    fn on_reply(&mut self, reply: Reply) {
        if let Reply::Joined { awaited: true, .. } = reply {
            self.joins_pending -= 1;
        }
        match reply {
            Reply::Ready(message) => self.batch.push(message),
            Reply::Joined {
                room,
                result: Ok(joined),
                ..
            } => {
                let frame = frame_budget::joined_frame(&room, joined, &self.hub.metrics().frames);
                self.batch.push(text_message(frame));
            }
            Reply::Joined {
                room,
                reference,
                result: Err(error),
                ..
            } => {
                if let Some(channel) = self.rooms.remove(&room) {
                    self.hub.leave(&channel, self.member);
                }
                let error = unavailable(&error, "cannot join", reference);
                self.batch.push(error_frame(self.hub, error));
            }
            Reply::JoinRefused {
                retry_after_ms,
                reference,
            } => {
                self.flooding |= self.flood.record(Verdict::Limited { retry_after_ms });
                let error = join_refusal(retry_after_ms, reference);
                let frame = error_frame_with_retry(self.hub, error, Some(retry_after_ms));
                self.batch.push(frame);
            }
            Reply::Refused { verdict, reference } => {
                self.flooding |= self.flood.record(verdict);
                if let Some((error, retry_after_ms)) = refusal(verdict, reference) {
                    self.batch
                        .push(error_frame_with_retry(self.hub, error, retry_after_ms));
                }
            }
            Reply::Published {
                reference,
                result: Ok(id),
            } => {
                self.flood.record(Verdict::Allowed);
                self.hub.metrics().messages_in.inc();
                let ack = ServerFrame::Ack {
                    reference: reference.map(Into::into),
                    id: id.to_string().into(),
                };
                self.batch.push(text_message(ack.to_json()));
            }
            Reply::Published {
                reference,
                result: Err(error),
            } => {
                // A request Redis did not answer in time may still have been carried out.
                let what = match error {
                    BrokerError::Timeout => "not confirmed, it may have been published",
                    _ => "message not sent",
                };
                let error = unavailable(&error, what, reference);
                self.batch.push(error_frame(self.hub, error));
            }
        }
    }

    /// Queues an immediate reply behind the replies still in flight, keeping request order.
    fn reply(&mut self, message: Message) {
        self.replies
            .push_back(futures::future::ready(Reply::Ready(message)).boxed());
    }

    fn reply_error(&mut self, error: FrameError) {
        let frame = error_frame(self.hub, error);
        self.reply(frame);
    }
}

/// How a failed read ends the session. A peer that vanishes without a close frame is gone,
/// not a protocol violation: there is nobody left to tell, and counting it as one would hide
/// real violations among ordinary disconnects.
fn read_error_end(error: WsError) -> End {
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
fn write_error_end(error: WsError) -> End {
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

/// The instant of the monotonic clock at which the wall-clock moment `at` arrives (now, if it
/// has passed); `None` if it lies beyond what the clock can represent, which is never.
fn deadline_of(at: SystemTime) -> Option<Instant> {
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now().checked_add(left)
}

async fn published(accepted: BrokerFuture<MessageId>, reference: Option<String>) -> Reply {
    Reply::Published {
        reference,
        result: accepted.await,
    }
}

/// Whether no earlier send still waits for flood control to publish, so one may publish now.
fn turn_is_free(turn: &mut Option<oneshot::Receiver<()>>) -> bool {
    let free = match turn {
        None => true,
        Some(previous) => !matches!(
            previous.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ),
    };
    if free {
        *turn = None;
    }
    free
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

/// The error for a join or leave over the connection's budget for them.
fn join_refusal(retry_after_ms: u64, reference: Option<String>) -> FrameError {
    let message = format!("too many joins and leaves; not done, retry in {retry_after_ms} ms");
    FrameError::new(ErrorCode::RateLimited, message).with_reference(reference)
}

fn not_joined(room: &str, reference: Option<String>) -> FrameError {
    FrameError::new(ErrorCode::NotJoined, format!("join room `{room}` first"))
        .with_reference(reference)
}

fn unavailable(error: &BrokerError, what: &str, reference: Option<String>) -> FrameError {
    let message = format!("{what}: {error}; try again shortly");
    FrameError::new(ErrorCode::Unavailable, message).with_reference(reference)
}

/// An `error` frame, counted by code.
fn error_frame(hub: &Hub, error: FrameError) -> Message {
    error_frame_with_retry(hub, error, None)
}

fn error_frame_with_retry(hub: &Hub, error: FrameError, retry_after_ms: Option<u64>) -> Message {
    hub.metrics().error(error.code);
    let frame = ServerFrame::Error {
        code: error.code,
        message: frame_budget::bounded_error_message(error.message).into(),
        reference: error.reference.map(Into::into),
        retry_after_ms,
    };
    text_message(frame.to_json())
}

fn text_message(json: String) -> Message {
    Message::Text(json.into())
}

async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    batch: &mut Vec<Message>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for message in batch.drain(..) {
        ws.feed(message).await?;
    }
    ws.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_code(end: &End) -> Option<u16> {
        match end {
            End::Violation { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn a_peer_that_vanishes_is_gone_not_a_violation() {
        let end = read_error_end(WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake,
        ));
        assert!(matches!(end, End::Gone), "{}", end.describe());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(read_error_end(WsError::Io(reset)), End::Gone));
    }

    #[test]
    fn a_frame_that_cannot_be_written_is_a_server_error_not_a_departure() {
        let oversize = Message::text("x".repeat(frame_budget::FRAME_BUDGET + 1));
        let end = write_error_end(WsError::WriteBufferFull(Box::new(oversize)));
        assert!(matches!(end, End::Oversize { .. }), "{}", end.describe());
        let small = Message::text("x");
        let end = write_error_end(WsError::WriteBufferFull(Box::new(small)));
        assert!(matches!(end, End::SlowConsumer), "{}", end.describe());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(write_error_end(WsError::Io(reset)), End::Gone));
    }

    #[test]
    fn violations_close_with_their_codes() {
        let too_long = WsError::Capacity(CapacityError::MessageTooLong {
            size: 70_000,
            max_size: 65_536,
        });
        match read_error_end(too_long) {
            End::Violation {
                code,
                error: Some(error),
                ..
            } => {
                assert_eq!(code, close::MESSAGE_TOO_BIG);
                assert_eq!(error.code, ErrorCode::TooLarge);
            }
            other => panic!("{}", other.describe()),
        }
        let utf8 = read_error_end(WsError::Utf8("bad".into()));
        assert_eq!(close_code(&utf8), Some(close::INVALID_PAYLOAD));
        let unmasked = read_error_end(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient));
        assert_eq!(close_code(&unmasked), Some(close::PROTOCOL_ERROR));
    }
}
