//! One connection of a simulated client: it joins the client's room, sends on the schedule,
//! reads everything that arrives, and in idle mode's churn leaves the room and comes back.
//!
//! Everything that must outlive the connection (what the member saw, its last message id) is
//! the client's, borrowed for the connection's lifetime; what belongs to the connection alone
//! (requests awaiting their reply, where it stands in its room) ends with it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Member, Phase, Shared};
use crate::config::Pace;
use crate::connect::{self, Ws};
use crate::ledger::Fate;
use crate::membership::{Due, Membership};
use crate::payload::{self, Stamp, now_us};
use crate::quick::{self, Quick};
use crate::stats::ClientStats;

/// The `ref` of join and leave requests; sends use their sequence number.
const JOIN_REF: &str = "join";
const LEAVE_REF: &str = "leave";

/// One connection of a client.
pub(crate) struct Session<'a> {
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
    membership: Membership,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        shared: &'a Shared,
        stats: &'a ClientStats,
        member: &'a mut Member,
        ws: Ws,
    ) -> Session<'a> {
        Session {
            shared,
            stats,
            member,
            ws,
            pending: VecDeque::new(),
            joined_us: None,
            recovered: None,
            resume_at: None,
            membership: Membership::joining(tokio::time::Instant::now()),
        }
    }

    /// When this connection's first `joined` arrived, if it did.
    pub(crate) fn joined_us(&self) -> Option<u64> {
        self.joined_us
    }

    /// What the `joined` reply said of a rejoin with `since`.
    pub(crate) fn recovered(&self) -> Option<bool> {
        self.recovered
    }

    /// Runs the connection: `Ok` when the run ended first, `Err` with the cause when the
    /// connection did.
    pub(crate) async fn run(&mut self, phase: &mut watch::Receiver<Phase>) -> Result<(), String> {
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
        let stats = self.stats;
        self.send_join().await?;
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
                _ = wait_until(self.membership.due_at()), if self.membership.due_at().is_some() => {
                    match self.membership.due(tokio::time::Instant::now()) {
                        Some(Due::Join) => self.send_join().await?,
                        Some(Due::Fail(cause)) => return Err(cause.to_owned()),
                        None => {}
                    }
                }
                _ = stats.churn.notified(), if sending && self.membership.is_joined() => {
                    self.send_leave().await?;
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
        match quick::read(text.as_str()) {
            Some(Quick::Message { id, text }) => {
                self.on_message(id, text, true);
                return Ok(());
            }
            Some(Quick::Ack { reference }) => {
                self.settle(reference, Fate::Acked);
                return Ok(());
            }
            None => {}
        }
        let frame: ServerFrame<'_> = serde_json::from_str(text.as_str())
            .map_err(|e| format!("unreadable frame from the node: {e}"))?;
        match frame {
            ServerFrame::Message { text, id, .. } => self.on_message(&id, &text, true),
            ServerFrame::Ack { reference, .. } => self.settle(reference.as_deref(), Fate::Acked),
            ServerFrame::Joined {
                history,
                recovered,
                count,
                members,
                more_members,
                ..
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
                self.on_joined(count, members.len(), more_members);
            }
            ServerFrame::Left { .. } => {
                if self.membership.left(tokio::time::Instant::now()) {
                    self.shared.board.exited(self.stats, true);
                }
            }
            ServerFrame::Presence { count, joins, .. } => {
                self.stats.presence.fetch_add(1, Relaxed);
                if joins.is_some() {
                    self.stats.presence_named.fetch_add(1, Relaxed);
                }
                self.stats.view.see_count(count, now_us());
            }
            ServerFrame::Members { count, .. } => self.stats.view.see_count(count, now_us()),
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
                match reference.as_deref() {
                    Some(JOIN_REF) => return Err(format!("join: {code}")),
                    Some(LEAVE_REF) => return Err(format!("leave: {code}")),
                    _ => {}
                }
                self.settle(reference.as_deref(), Fate::Refused);
            }
            // The load generator neither types nor edits; others' changes carry no payload.
            ServerFrame::Welcome { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::Edited { .. }
            | ServerFrame::Deleted { .. } => {}
        }
        Ok(())
    }

    /// Records a `joined`: the count it carried, the size of its member list, and how long
    /// the `join` took when it answered one.
    fn on_joined(&mut self, count: u64, names: usize, more: bool) {
        let board = &self.shared.board;
        self.stats.view.see_count(count, now_us());
        if let Some(answered) = self.membership.joined(tokio::time::Instant::now()) {
            board.record_join(answered.took, answered.churn);
        }
        board.entered(self.stats, names, more);
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

    /// Sends `join` for the client's room, with `since` once it has seen a message.
    async fn send_join(&mut self) -> Result<(), String> {
        let plan = &self.shared.plan;
        let since = Some(self.member.last_id.as_str()).filter(|id| !id.is_empty());
        let join = ClientFrame::Join {
            room: Cow::Borrowed(&plan.rooms[self.member.room]),
            since: since.map(Cow::Borrowed),
            reference: Some(Cow::Borrowed(JOIN_REF)),
        };
        let json = to_json(&join);
        self.membership.sending_join(tokio::time::Instant::now());
        self.write(Message::text(json)).await?;
        self.flush().await
    }

    /// Sends the churn `leave`; the client joins again `CHURN_AWAY` after the
    /// `left`.
    async fn send_leave(&mut self) -> Result<(), String> {
        if !self.membership.leave(tokio::time::Instant::now()) {
            return Ok(());
        }
        let leave = ClientFrame::Leave {
            room: Cow::Borrowed(&self.shared.plan.rooms[self.member.room]),
            reference: Some(Cow::Borrowed(LEAVE_REF)),
        };
        self.write(Message::text(to_json(&leave))).await?;
        self.flush().await
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
