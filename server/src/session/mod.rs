//! One WebSocket connection, from welcome to close, on a single task.
//!
//! The task `select!`s over the socket, its bounded outbound queue and its requests in flight,
//! so reading and writing share one stream without a lock or a split. Every event that produces
//! output appends to a batch of frames already encoded for the wire (see [`outgoing`]); the
//! batch goes out in one write, which turns a burst of deliveries into one write
//! syscall.
//!
//! At most `max_in_flight` requests wait for their reply at once; beyond that the task stops
//! reading the socket and TCP pushes back on the client.
//!
//! Where to find the rest: [`requests`] (join, leave, send, flood control and the access
//! checks), [`changes`] (typing, edit and delete), [`replies`]
//! (one reply per request, in order), [`idle`] (pings and the idle timeout), [`ending`] (why a
//! session ends and how it closes), [`closing`] (lingering closes), [`write_deadline`] (the
//! deadline on writes, 4001 for a client that stops reading), [`limits`] (the flags it runs
//! under).

mod changes;
mod closing;
mod ending;
mod flood_state;
mod idle;
mod in_order;
mod joined_rooms;
mod limits;
mod outgoing;
mod replies;
mod requests;
pub(crate) mod write_deadline;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chat_protocol::{ErrorCode, FrameError, ServerFrame, close};
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::hub::Hub;
use crate::rooms::{Inbox, MemberId, Outbox};
use closing::{CLOSE_TIMEOUT, close_lingering};
use ending::{End, read_error_end, write_error_end};
use flood_state::FloodState;
use idle::{IdleCheck, IdleStep};
use in_order::InOrder;
use joined_rooms::JoinedRooms;
pub(crate) use limits::SessionLimits;
use outgoing::Outgoing;
use replies::{Reply, error_frame, text_message};

/// Most frames written between two flushes.
const WRITE_BATCH: usize = 256;

/// Who a new connection is and where it may go, as its handshake decided.
pub(crate) struct Admitted {
    /// The name to use, or why the connection may not chat (told to the client before a 1008
    /// close).
    pub name: Result<String, FrameError>,
    /// When the token that gave the name stops being honoured (the connection is closed with
    /// 4003 then).
    pub expires: Option<SystemTime>,
    /// Where its token lets it go.
    pub grants: Grants,
}

impl Admitted {
    /// Takes the fields out and frees the box now, rather than when the connection ends (an
    /// argument of an async function lives as long as its call).
    #[expect(clippy::boxed_local, reason = "the box is what is being freed early")]
    fn unbox(admitted: Box<Admitted>) -> Admitted {
        *admitted
    }
}

/// Runs a connection to its end. `ws` is borrowed and `admitted` comes boxed: an async
/// function keeps its own copy of every argument it owns beside the one it uses, for the
/// connection's whole life.
pub(crate) async fn run<S>(
    ws: &mut WebSocketStream<S>,
    admitted: Box<Admitted>,
    hub: Arc<Hub>,
    limits: Arc<SessionLimits>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Admitted {
        name,
        expires,
        grants,
    } = Admitted::unbox(admitted);
    hub.metrics().connections.inc();
    hub.metrics().connections_total.inc();
    match name {
        Ok(name) => {
            let (outbox, queue) = Outbox::new(limits.outbound_queue);
            let mut session = Session {
                id: crate::ids::session_id(),
                member: hub.next_member_id(),
                hub: hub.clone(),
                flood: FloodState::new(limits.flood.clone()),
                name,
                grants,
                outbox,
                rooms: JoinedRooms::default(),
                typing: HashMap::new(),
                joins_pending: 0,
                replies: InOrder::new(),
                batch: Outgoing::default(),
                limits,
            };
            session.serve(ws, queue, expires, &shutdown).await;
        }
        Err(error) => {
            let reason = match error.code {
                ErrorCode::Unauthorized => "unauthorized",
                _ => "invalid name",
            };
            let refusal = error_frame(&hub, error);
            // Boxed for the same reason as a session's end.
            Box::pin(async {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(refusal.into())).await;
                close_lingering(&hub, ws, true, close::POLICY_VIOLATION, reason).await;
            })
            .await;
        }
    }
    hub.metrics().connections.dec();
}

/// One connection's state, owned by its task.
struct Session {
    id: String,
    hub: Arc<Hub>,
    member: MemberId,
    name: String,
    /// Where the connection's token lets it go.
    grants: Grants,
    outbox: Outbox,
    /// Joined rooms and their backplane channels, formatted once per join rather than per send.
    rooms: JoinedRooms,
    /// When the connection last published a typing signal in each joined room.
    typing: HashMap<String, Instant>,
    /// Joins not answered yet. While there are any, the session reads no further requests, so
    /// a `send` right after a `join` cannot be published before this node hears the room and
    /// the sender always receives its own message; and it writes no deliveries, so the room's
    /// live messages follow the `joined` reply and its history instead of overtaking them.
    joins_pending: usize,
    flood: FloodState,
    replies: InOrder<BoxFuture<'static, Reply>>,
    batch: Outgoing,
    limits: Arc<SessionLimits>,
}

impl Session {
    async fn serve<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        queue: Inbox,
        expires: Option<SystemTime>,
        shutdown: &CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let welcome = ServerFrame::Welcome {
            node: self.hub.node_id().into(),
            session: self.id.as_str().into(),
            name: self.name.as_str().into(),
        }
        .to_json();
        self.batch.push(text_message(welcome));
        log::debug!("session {} opened for {:?}", self.id, self.name);
        let end = self.exchange(ws, &queue, expires, shutdown).await;
        // Stop deliveries into the queue before anything else.
        for channel in self.rooms.channels() {
            self.hub.leave(channel, self.member);
        }
        log::debug!("session {} closing: {}", self.id, end.describe());
        // Boxed: a closing handshake's state is needed once, at the end, and would otherwise
        // be part of every connection's task for its whole life.
        Box::pin(self.finish(ws, end)).await;
    }

    /// Reads requests and writes the batch (replies, deliveries, pings) until something ends
    /// the connection.
    async fn exchange<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        queue: &Inbox,
        expires: Option<SystemTime>,
        shutdown: &CancellationToken,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut flush_needed = true;
        let mut idle = IdleCheck::new(self.limits.idle_timeout);
        let idle_check = tokio::time::sleep(idle.half().unwrap_or(Duration::MAX));
        tokio::pin!(idle_check);
        // A timer only for a token that expires: most connections would carry one for nothing.
        let mut expiry = expires
            .and_then(deadline_of)
            .map(|at| Box::pin(tokio::time::sleep_until(at)));

        loop {
            if !self.batch.is_empty() || flush_needed {
                let written = tokio::select! {
                    result = self.batch.write(ws) => result,
                    () = queue.overflowed() => return End::SlowConsumer,
                    _ = shutdown.cancelled() => return End::Shutdown,
                };
                if let Err(error) = written {
                    return write_error_end(error);
                }
                flush_needed = false;
            }
            let reading = self.joins_pending == 0 && self.replies.len() < self.limits.max_in_flight;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return End::Shutdown,
                () = queue.overflowed() => return End::SlowConsumer,
                () = expired(&mut expiry) => return End::TokenExpired,
                Some(reply) = self.replies.next(), if !self.replies.is_empty() => {
                    self.on_reply(reply);
                }
                () = &mut idle_check, if idle.half().is_some() => {
                    match idle.check(reading) {
                        IdleStep::GiveUp => return End::Idle,
                        IdleStep::Ping => self.batch.push_ping(),
                        IdleStep::Wait => {}
                    }
                    if let Some(half) = idle.half() {
                        idle_check.as_mut().reset(Instant::now() + half);
                    }
                }
                incoming = ws.next(), if reading => {
                    idle.heard();
                    match self.on_incoming(incoming) {
                        Ok(flush) => flush_needed |= flush,
                        Err(end) => return end,
                    }
                }
                // After the socket, so a busy room cannot starve a client's requests; whatever
                // is queued is drained below after every event anyway.
                frame = queue.recv(), if self.joins_pending == 0 => {
                    self.batch.push(frame);
                }
            }
            self.take_ready(queue);
            if self.flood.flooding() {
                return End::Flooding;
            }
        }
    }

    /// Handles what the socket gave: `Ok(true)` when tungstenite queued a frame of its own (a
    /// pong) that the next flush must carry even if the batch is empty; `Err` when the
    /// connection ends.
    fn on_incoming(&mut self, incoming: Option<Result<Message, WsError>>) -> Result<bool, End> {
        match incoming {
            None => Err(End::Gone),
            Some(Ok(Message::Text(text))) => {
                self.on_text(&text);
                Ok(false)
            }
            Some(Ok(Message::Binary(_))) => {
                self.reply_error(FrameError::new(
                    ErrorCode::BadRequest,
                    "binary frames are not supported: send JSON text frames",
                ));
                Ok(false)
            }
            // tungstenite queues the pong itself; it goes out with the next flush.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(true),
            Some(Ok(Message::Close(_))) => Err(End::ClosedByPeer),
            Some(Err(error)) => Err(read_error_end(error)),
        }
    }

    /// Takes whatever else is ready without waiting, so that it joins this batch.
    fn take_ready(&mut self, queue: &Inbox) {
        while let Some(Some(reply)) = self.replies.next().now_or_never() {
            self.on_reply(reply);
        }
        if self.joins_pending == 0 {
            let room = WRITE_BATCH.saturating_sub(self.batch.len());
            queue.take_up_to(room, |frame| self.batch.push(frame));
        }
    }
}

/// Resolves when the token's timer fires; never without one.
async fn expired(expiry: &mut Option<Pin<Box<Sleep>>>) {
    match expiry {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The instant of the monotonic clock at which the wall-clock moment `at` arrives (now, if it
/// has passed); `None` if it lies beyond what the clock can represent, which is never.
fn deadline_of(at: SystemTime) -> Option<Instant> {
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now().checked_add(left)
}
