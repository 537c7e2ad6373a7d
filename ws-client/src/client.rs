//! One simulated chat client: connect, join its room, send stamped messages on its schedule,
//! read everything that arrives, and reconnect with backoff when the connection ends.
//!
//! A client keeps what it has seen (sequence numbers, the last message id) across its
//! connections, so a reconnect resumes the same member rather than starting a new one: it
//! rejoins with `since` set to the last id it saw. When the node answers `recovered: true`, the
//! history filled the gap and everything since the first join stays owed; otherwise only what
//! was sent after the rejoin is expected of it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::{Pace, Plan};
use crate::connect::{self, Target, Ws};
use crate::ledger::{Fate, RoomLedger};
use crate::payload::{self, Stamp, now_us};
use crate::seqset::SeqSet;
use crate::stats::{Board, ClientStats};

/// Where the run is; clients watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Sending,
    /// Sending stopped; deliveries still arrive.
    Draining,
    /// Counting: close.
    Done,
}

/// What every client of a run shares.
pub(crate) struct Shared {
    pub plan: Plan,
    pub targets: Vec<Target>,
    pub rooms: Vec<RoomLedger>,
    /// Tag of this run in every message text, to tell its messages from other runs'.
    pub run: u32,
    pub board: Board,
}

/// A client's contribution to the final count.
pub(crate) struct Outcome {
    pub room: usize,
    /// When the `joined` of the connection open at the end arrived; `None` if the client was
    /// not joined when the run ended.
    pub joined_us: Option<u64>,
    pub seen: SeqSet,
}

/// The `ref` of the join request; sends use their sequence number.
const JOIN_REF: &str = "join";
/// How long a connection may take from handshake to `joined`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection buffers: small enough for tens of thousands of connections, large enough to
/// read a burst of fan-out in one system call.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024)
}

/// The member a client plays, kept across its connections.
struct Member {
    index: usize,
    name: String,
    room: usize,
    seen: SeqSet,
    /// Id of the last message received, opaque: the point a rejoin would resume from.
    last_id: String,
    text: String,
}

/// Runs client `index` until the run is done.
pub(crate) async fn run(
    index: usize,
    shared: Arc<Shared>,
    stats: Arc<ClientStats>,
    mut phase: watch::Receiver<Phase>,
) -> Outcome {
    let plan = &shared.plan;
    let mut member = Member {
        index,
        name: format!("{}{index}", plan.name_prefix),
        room: index % plan.rooms.len(),
        seen: SeqSet::default(),
        last_id: String::new(),
        text: String::with_capacity(plan.message_size),
    };
    let target = &shared.targets[index % shared.targets.len()];
    let mut backoff = Backoff::default();
    let mut joined_us = None;
    // Since when deliveries are owed: the first join, for as long as every rejoin recovered.
    let mut owed_since = None;
    while *phase.borrow() == Phase::Sending {
        let opened = tokio::select! {
            opened = connect::open(target, index, &member.name, plan.sources, ws_config()) => opened,
            changed = phase.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        let ws = match opened {
            Ok(ws) => ws,
            Err(cause) => {
                shared.board.failure(cause);
                backoff.wait(&mut phase).await;
                continue;
            }
        };
        shared.board.connected();
        let mut session = Session {
            shared: &shared,
            stats: &stats,
            member: &mut member,
            ws,
            pending: VecDeque::new(),
            joined_us: None,
            recovered: None,
            resume_at: None,
        };
        let ended = session.run(&mut phase).await;
        let session_joined_us = session.joined_us;
        if session_joined_us.is_some() && !(session.recovered == Some(true) && owed_since.is_some())
        {
            owed_since = session_joined_us;
        }
        shared.board.disconnected();
        match ended {
            Ok(()) => {
                joined_us = owed_since;
                break;
            }
            Err(cause) => {
                shared.board.failure(cause);
                if session_joined_us.is_some() {
                    backoff = Backoff::default();
                }
                if *phase.borrow() == Phase::Sending {
                    shared.board.reconnecting();
                    backoff.wait(&mut phase).await;
                }
            }
        }
    }
    Outcome {
        room: member.room,
        joined_us,
        seen: member.seen,
    }
}

/// Capped exponential backoff with jitter, like the browser page's, so a node restart does not
/// meet every client at the same instant.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    async fn wait(&mut self, phase: &mut watch::Receiver<Phase>) {
        let base_ms = 100u64.saturating_mul(1 << self.attempt.min(6)).min(5_000);
        self.attempt += 1;
        let jittered = rand::random_range(base_ms / 2..=base_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(jittered)) => {}
            _ = phase.changed() => {}
        }
    }
}

/// One connection of a client.
struct Session<'a> {
    shared: &'a Shared,
    stats: &'a ClientStats,
    member: &'a mut Member,
    ws: Ws,
    /// Sequence numbers sent on this connection and not yet answered, in request order.
    pending: VecDeque<u64>,
    joined_us: Option<u64>,
    /// What the `joined` reply said of a rejoin with `since`.
    recovered: Option<bool>,
    /// Set when the node answered `rate_limited`: no sends before this instant.
    resume_at: Option<tokio::time::Instant>,
}

impl Session<'_> {
    /// Runs the connection: `Ok` when the run ended first, `Err` with the cause when the
    /// connection did.
    async fn run(&mut self, phase: &mut watch::Receiver<Phase>) -> Result<(), String> {
        let result = self.drive(phase).await;
        // Whatever was in flight on a lost connection may or may not have been published.
        let ledger = &self.shared.rooms[self.member.room];
        for seq in self.pending.drain(..) {
            ledger.settle(seq, Fate::Unknown);
        }
        result
    }

    async fn drive(&mut self, phase: &mut watch::Receiver<Phase>) -> Result<(), String> {
        let plan = &self.shared.plan;
        let since = Some(self.member.last_id.as_str()).filter(|id| !id.is_empty());
        let join = ClientFrame::Join {
            room: Cow::Borrowed(&plan.rooms[self.member.room]),
            since: since.map(Cow::Borrowed),
            reference: Some(Cow::Borrowed(JOIN_REF)),
        };
        self.write(Message::text(to_json(&join))).await?;
        self.flush().await?;

        let join_deadline = tokio::time::sleep(JOIN_TIMEOUT);
        tokio::pin!(join_deadline);
        let mut ticker: Option<Interval> = None;
        let mut sending = *phase.borrow() == Phase::Sending;
        loop {
            tokio::select! {
                // The phase first: a client flooded with deliveries must still notice the end.
                biased;
                changed = phase.changed() => {
                    let now = if changed.is_ok() { *phase.borrow() } else { Phase::Done };
                    sending = now == Phase::Sending;
                    if now == Phase::Done {
                        // Start the close handshake without waiting for it: the count does not
                        // depend on a clean close, and thousands of clients must hand in their
                        // counts promptly.
                        let _ = self.ws.close(None).now_or_never();
                        return Ok(());
                    }
                }
                _ = &mut join_deadline, if self.joined_us.is_none() => {
                    return Err("join: no reply".to_owned());
                }
                _ = tick(&mut ticker), if sending => {
                    if self.pending.len() < plan.in_flight && self.resume_at.is_none() {
                        self.send_next().await?;
                        self.flush().await?;
                    } else {
                        self.stats.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                _ = wait_until(self.resume_at), if self.resume_at.is_some() => {
                    self.resume_at = None;
                    if sending {
                        self.refill().await?;
                    }
                }
                frame = self.ws.next() => {
                    let was_joined = self.joined_us.is_some();
                    self.receive(frame)?;
                    // Take everything already read in one go before writing.
                    while let Some(frame) = self.ws.next().now_or_never() {
                        self.receive(frame)?;
                    }
                    if !was_joined
                        && self.joined_us.is_some()
                        && let Pace::Every(every) = plan.pace
                    {
                        let mut interval = tokio::time::interval(every);
                        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        ticker = Some(interval);
                    }
                    if sending {
                        self.refill().await?;
                    }
                }
            }
        }
    }

    /// In saturation mode, tops the window of unacknowledged sends up, unless the node asked
    /// this client to wait.
    async fn refill(&mut self) -> Result<(), String> {
        let in_flight = self.shared.plan.in_flight;
        if !matches!(self.shared.plan.pace, Pace::AckPaced)
            || self.joined_us.is_none()
            || self.resume_at.is_some()
            || self.pending.len() >= in_flight
        {
            return Ok(());
        }
        while self.pending.len() < in_flight {
            self.send_next().await?;
        }
        self.flush().await
    }

    /// Handles one item from the socket.
    fn receive(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        let message = match frame {
            None => return Err("closed without a close frame".to_owned()),
            Some(Err(error)) => return Err(connect::ws_cause("read", &error)),
            Some(Ok(message)) => message,
        };
        self.stats.frames.fetch_add(1, Relaxed);
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(match frame {
                    Some(frame) => format!("closed by the node: {}", u16::from(frame.code)),
                    None => "closed by the node".to_owned(),
                });
            }
            _ => return Ok(()),
        };
        let frame: ServerFrame<'_> = serde_json::from_str(text.as_str())
            .map_err(|e| format!("unreadable frame from the node: {e}"))?;
        match frame {
            ServerFrame::Message { text, id, .. } => self.on_message(&id, &text, true),
            ServerFrame::Ack { reference, .. } => self.settle(reference.as_deref(), Fate::Acked),
            ServerFrame::Joined {
                history, recovered, ..
            } => {
                for embedded in &history {
                    if let Ok(ServerFrame::Message { text, id, .. }) =
                        serde_json::from_str(embedded.json())
                    {
                        self.on_message(&id, &text, false);
                    }
                }
                self.recovered = recovered;
                self.joined_us.get_or_insert_with(now_us);
            }
            ServerFrame::Error {
                code,
                reference,
                retry_after_ms,
                ..
            } => {
                self.shared.board.error(code.as_str());
                // A well-behaved client waits as long as a rate-limited node asks.
                if let Some(ms) = retry_after_ms.filter(|_| code == ErrorCode::RateLimited) {
                    let until = tokio::time::Instant::now() + Duration::from_millis(ms);
                    self.resume_at = Some(self.resume_at.map_or(until, |at| at.max(until)));
                }
                if reference.as_deref() == Some(JOIN_REF) {
                    return Err(format!("join: {code}"));
                }
                self.settle(reference.as_deref(), Fate::Refused);
            }
            ServerFrame::Welcome { .. }
            | ServerFrame::Left { .. }
            | ServerFrame::Members { .. }
            | ServerFrame::Presence { .. } => {}
        }
        Ok(())
    }

    /// Counts a message, live or from history (whose delay is not latency), and remembers its
    /// id for the next rejoin.
    fn on_message(&mut self, id: &str, text: &str, live: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.messages.fetch_add(1, Relaxed);
        if let Some(stamp) = payload::parse(text) {
            if live {
                let latency = now_us().saturating_sub(stamp.sent_us);
                self.shared.board.record_latency(self.member.index, latency);
            }
            if stamp.run == self.shared.run && !self.member.seen.insert(stamp.seq) {
                self.stats.duplicates.fetch_add(1, Relaxed);
            }
        }
        self.member.last_id.clear();
        self.member.last_id.push_str(id);
    }

    /// Records the reply to the send whose `ref` is `reference`.
    fn settle(&mut self, reference: Option<&str>, fate: Fate) {
        let Some(seq) = reference.and_then(|r| r.parse::<u64>().ok()) else {
            return;
        };
        // Replies come in request order, so this is nearly always the front.
        if self.pending.front() == Some(&seq) {
            self.pending.pop_front();
        } else if let Some(at) = self.pending.iter().position(|&s| s == seq) {
            self.pending.remove(at);
        } else {
            return;
        }
        self.shared.rooms[self.member.room].settle(seq, fate);
    }

    /// Queues the next message (unflushed).
    async fn send_next(&mut self) -> Result<(), String> {
        let plan = &self.shared.plan;
        let room = self.member.room;
        let (seq, sent_us) = self.shared.rooms[room].register();
        payload::write(
            &mut self.member.text,
            Stamp {
                run: self.shared.run,
                seq,
                sender: self.member.index as u32,
                sent_us,
            },
            plan.message_size,
        );
        let frame = ClientFrame::Send {
            room: Cow::Borrowed(&plan.rooms[room]),
            text: Cow::Borrowed(&self.member.text),
            reference: Some(Cow::Owned(seq.to_string())),
        };
        self.pending.push_back(seq);
        self.stats
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write(Message::text(to_json(&frame))).await
    }

    async fn write(&mut self, message: Message) -> Result<(), String> {
        self.ws
            .feed(message)
            .await
            .map_err(|e| connect::ws_cause("write", &e))
    }

    async fn flush(&mut self) -> Result<(), String> {
        self.ws
            .flush()
            .await
            .map_err(|e| connect::ws_cause("write", &e))
    }
}

/// Waits until `at`, or forever without one.
async fn wait_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next tick, or forever before the schedule starts.
async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn to_json(frame: &ClientFrame<'_>) -> String {
    serde_json::to_string(frame).unwrap_or_else(|_| unreachable!("client frames always serialize"))
}
