//! The Redis broker: one pub/sub channel per room, shared by every node.
//!
//! redis-rs's own reconnection gives up after a few seconds on a subscriber-only connection and
//! ignores resubscription errors, so this broker supervises its connections itself:
//!
//! - a *subscriber* connection (RESP3, so pushes and commands share it) whose push handler hands
//!   every message straight to the [`Inbound`] on the connection's own task: no extra queue, and
//!   a node that cannot keep up slows its Redis reads instead of buffering without bound;
//! - a *publisher* connection fed by one task that sends every request queued since its last
//!   round trip (publishes, history reads, presence changes) as one pipeline: requests reach
//!   Redis in exactly the order they were made (so one client's messages keep their order),
//!   and under load many share one write and one round trip;
//! - a supervisor task that owns the set of wanted channels, applies subscribe/unsubscribe in
//!   call order, pings both connections every second, and on any loss marks the broker
//!   unavailable, reconnects with capped exponential backoff for as long as it takes, and
//!   resubscribes every wanted channel before it reports ready again.
//!
//! While unavailable every publish and subscribe fails at once with
//! [`BrokerError::Disconnected`]: senders get an error, never silence. After a reconnect the
//! rooms are told ([`Inbound::reconnected`]) so they fetch what they missed from history.
//!
//! Keys, under the node's prefix (`chat` by default): `<prefix>:room:<room>` is a room's
//! channel, `<channel>:history` its history stream, `<channel>:presence` its presence hash;
//! `<prefix>:nodes` holds node heartbeats and `<prefix>:node:<node>:rooms` a node's presence
//! hashes. Message and presence operations are Lua scripts (see [`scripts`]). Every
//! one of these keys expires unless renewed (see [`heartbeat`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_protocol::MessageId;
use futures::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncCommands, AsyncConnectionConfig, ParsingError, PushInfo, PushKind, RedisError, Value,
};
use tokio::sync::{Notify, mpsc, oneshot};

use self::heartbeat::{Heartbeat, key_ttl_ms};
use self::scripts::SCRIPTS;
use super::{
    BadReply, Broker, BrokerError, BrokerFuture, HistoryEntry, HistoryLimits, HistoryRange, Inbound,
};
use crate::metrics::Metrics;
use crate::presence::{HEARTBEAT_INTERVAL, NODE_TIMEOUT, Presence};
use crate::redis_client::{self, Backoff, ConnectionCell};

mod heartbeat;
mod scripts;

/// Timing of the connection supervision.
#[derive(Debug, Clone)]
pub struct RedisTiming {
    /// How long a connect or a command may take before the connection is considered lost.
    pub command_timeout: Duration,
    /// How often both connections are checked with PING.
    pub ping_interval: Duration,
    /// First and largest wait between reconnection attempts.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RedisTiming {
    fn default() -> Self {
        RedisTiming {
            command_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What a node keeps in Redis besides channels.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub timing: RedisTiming,
    pub history: HistoryLimits,
    /// Key prefix (`--redis-prefix`).
    pub prefix: String,
    /// This node's id: its presence entries and heartbeat are filed under it.
    pub node_id: String,
}

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 1000;
/// Most commands in one pipeline.
const PIPELINE_BATCH: usize = 512;

pub struct RedisBroker {
    state: Arc<State>,
    commands: mpsc::UnboundedSender<Command>,
    /// Unbounded, but bounded in practice: every session has at most `--max-in-flight`
    /// requests waiting, and publishes are among them.
    requests: mpsc::UnboundedSender<Request>,
    address: String,
    history: HistoryLimits,
    heartbeat: Heartbeat,
    node_rooms_key: String,
}

/// A command for the publisher connection.
struct Request {
    cmd: redis::Cmd,
    /// Set for publishes, whose time to acceptance is measured.
    queued: Option<Instant>,
    /// `None` when nobody waits for the outcome.
    done: Option<oneshot::Sender<Result<Value, BrokerError>>>,
}

struct State {
    ready: AtomicBool,
    publisher: ConnectionCell,
    /// A failed publish asks the supervisor to check the connections now, not at the next ping.
    check_now: Notify,
    metrics: Arc<Metrics>,
}

enum Command {
    Subscribe {
        channel: String,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    Unsubscribe {
        channel: String,
    },
}

impl RedisBroker {
    /// Starts supervising a connection to `url` in the background; the broker reports ready
    /// once it is connected. Fails only if the URL itself is invalid.
    pub fn start(
        url: &str,
        options: RedisOptions,
        inbound: Arc<dyn Inbound>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RedisError> {
        let RedisOptions {
            timing,
            history,
            prefix,
            node_id,
        } = options;
        let client = redis_client::open(url)?;
        let address = redis_client::address(&client);
        let state = Arc::new(State {
            ready: AtomicBool::new(false),
            publisher: ConnectionCell::default(),
            check_now: Notify::new(),
            metrics,
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (requests, request_rx) = mpsc::unbounded_channel();
        tokio::spawn(send_in_order(
            state.clone(),
            request_rx,
            timing.command_timeout,
        ));
        let heartbeat = Heartbeat::new(&prefix, &node_id);
        let supervisor = Supervisor {
            client,
            timing,
            state: state.clone(),
            inbound,
            commands: command_rx,
            wanted: HashSet::new(),
            address: address.clone(),
            heartbeat: heartbeat.clone(),
        };
        tokio::spawn(supervisor.run());
        Ok(RedisBroker {
            state,
            commands,
            requests,
            address,
            history,
            node_rooms_key: format!("{prefix}:node:{node_id}:rooms"),
            heartbeat,
        })
    }

    /// Queues a command for the publisher connection.
    fn send(&self, cmd: redis::Cmd, timed: bool) -> BrokerFuture<Value> {
        if !self.is_ready() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        let (done, result) = oneshot::channel();
        let request = Request {
            cmd,
            queued: timed.then(Instant::now),
            done: Some(done),
        };
        if self.requests.send(request).is_err() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        async move { result.await.unwrap_or(Err(BrokerError::Disconnected)) }.boxed()
    }

    /// Queues a command whose outcome nobody waits for (a failure is logged).
    fn send_and_forget(&self, cmd: redis::Cmd) {
        let request = Request {
            cmd,
            queued: None,
            done: None,
        };
        let _ = self.requests.send(request);
    }

    /// `host:port` of the Redis server, without credentials, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl State {
    fn publisher(&self) -> Option<MultiplexedConnection> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        self.publisher.get()
    }
}

impl Broker for RedisBroker {
    fn publish(&self, channel: &str, sealed_body: Bytes, ts: u64) -> BrokerFuture<MessageId> {
        let mut cmd = SCRIPTS.publish.invoke(&[&history_key(channel)]);
        cmd.arg(channel)
            .arg(sealed_body.as_ref())
            .arg(ts)
            .arg(self.history.size)
            .arg(self.history.max_age.as_millis() as u64);
        let published = self.send(cmd, true);
        async move {
            let id = published.await?;
            redis::from_redis_value::<String>(id)
                .ok()
                .and_then(|id| id.parse().ok())
                .ok_or(BrokerError::Refused(BadReply::NoMessageId))
        }
        .boxed()
    }

    fn history(&self, channel: &str, range: HistoryRange) -> BrokerFuture<Vec<HistoryEntry>> {
        let key = history_key(channel);
        let bound =
            |id: Option<MessageId>, open: &str| id.map_or(open.to_owned(), |id| id.to_string());
        let (cmd, newest_first) = match range {
            HistoryRange::Newest { through, limit } => {
                let mut cmd = redis::cmd("XREVRANGE");
                cmd.arg(key)
                    .arg(bound(through, "+"))
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit);
                (cmd, true)
            }
            HistoryRange::From {
                from,
                through,
                limit,
            } => {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(key)
                    .arg(from.to_string())
                    .arg(bound(through, "+"))
                    .arg("COUNT")
                    .arg(limit);
                (cmd, false)
            }
        };
        let read = self.send(cmd, false);
        async move {
            let mut entries = parse_entries(read.await?).map_err(BrokerError::Refused)?;
            if newest_first {
                entries.reverse();
            }
            Ok(entries)
        }
        .boxed()
    }

    fn subscribe(&self, channel: &str) -> BrokerFuture {
        let (done, result) = oneshot::channel();
        let command = Command::Subscribe {
            channel: channel.to_owned(),
            done,
        };
        if self.commands.send(command).is_err() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        async move { result.await.unwrap_or(Err(BrokerError::Disconnected)) }.boxed()
    }

    fn unsubscribe(&self, channel: &str) {
        // If the supervisor is gone the node is shutting down; nothing is left to unsubscribe.
        let _ = self.commands.send(Command::Unsubscribe {
            channel: channel.to_owned(),
        });
        // The room has no member here any more: a sweep of this node need not visit it.
        let mut forget = redis::cmd("SREM");
        forget.arg(&self.node_rooms_key).arg(presence_key(channel));
        self.send_and_forget(forget);
    }

    fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }
}

impl Presence for RedisBroker {
    fn add(&self, channel: &str, member: &str, sealed_name: Bytes) -> BrokerFuture {
        let mut cmd = SCRIPTS
            .presence_add
            .invoke(&[&presence_key(channel), &self.node_rooms_key]);
        cmd.arg(channel)
            .arg(member)
            .arg(sealed_name.as_ref())
            .arg(key_ttl_ms());
        let added = self.send(cmd, false);
        async move { added.await.map(drop) }.boxed()
    }

    fn remove(&self, channel: &str, member: &str) {
        let mut cmd = SCRIPTS.presence_remove.invoke(&[&presence_key(channel)]);
        cmd.arg(channel).arg(member);
        self.send_and_forget(cmd);
    }

    fn members(&self, channel: &str) -> BrokerFuture<Vec<Vec<u8>>> {
        let cmd = SCRIPTS
            .presence_members
            .invoke(&[&presence_key(channel), self.heartbeat.nodes_key()]);
        let members = self.send(cmd, false);
        async move {
            redis::from_redis_value(members.await?)
                .map_err(|error| BrokerError::Refused(BadReply::Reply(error)))
        }
        .boxed()
    }

    fn retire(&self) -> BrokerFuture {
        let cmd = self.heartbeat.cmd(Duration::ZERO, false);
        let retired = self.send(cmd, false);
        async move { retired.await.map(drop) }.boxed()
    }
}

fn history_key(channel: &str) -> String {
    format!("{channel}:history")
}

fn presence_key(channel: &str) -> String {
    format!("{channel}:presence")
}

/// Reads an `XRANGE` reply: `[[id, [field, value, ...]], ...]` with fields `b` (the sealed
/// body) and `t` (sent at, ms).
fn parse_entries(reply: Value) -> Result<Vec<HistoryEntry>, BadReply> {
    let Value::Array(items) = reply else {
        return Err(BadReply::HistoryReply(reply));
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let (id, fields): (String, Vec<(String, Vec<u8>)>) = redis::from_redis_value(item)?;
        let id = id.parse().map_err(|_| BadReply::HistoryEntryId(id))?;
        let mut sealed_body = None;
        let mut ts = 0;
        for (field, value) in fields {
            match field.as_str() {
                "b" => sealed_body = Some(value),
                "t" => {
                    ts = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
        if let Some(sealed_body) = sealed_body {
            entries.push(HistoryEntry {
                id,
                sealed_body,
                ts,
            });
        }
    }
    Ok(entries)
}

fn classify(error: &RedisError) -> BrokerError {
    if error.is_timeout() {
        BrokerError::Timeout
    } else if error.is_connection_dropped() || error.is_io_error() || error.is_unrecoverable_error()
    {
        BrokerError::Disconnected
    } else {
        BrokerError::Refused(BadReply::Redis(error.clone()))
    }
}

/// Sends queued requests to Redis in queue order: everything queued during one round trip
/// goes out as the next pipeline, so batches grow with load and order is never in question.
async fn send_in_order(
    state: Arc<State>,
    mut queue: mpsc::UnboundedReceiver<Request>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(PIPELINE_BATCH);
    while queue.recv_many(&mut batch, PIPELINE_BATCH).await > 0 {
        match run_batch(&state, &batch, timeout).await {
            Ok(results) => {
                let mut results = results.into_iter();
                for request in batch.drain(..) {
                    let result = match results.next() {
                        Some(Ok(value)) => {
                            if let Some(queued) = request.queued {
                                let waited = queued.elapsed().as_secs_f64();
                                state.metrics.publish_duration.observe(waited);
                            }
                            Ok(value)
                        }
                        Some(Err(error)) => {
                            log::warn!("Redis refused a request: {error}");
                            Err(classify(&error))
                        }
                        None => Err(BrokerError::Refused(BadReply::NoReply)),
                    };
                    if let Some(done) = request.done {
                        let _ = done.send(result);
                    }
                }
            }
            Err(error) => {
                state.check_now.notify_one();
                for request in batch.drain(..) {
                    if let Some(done) = request.done {
                        let _ = done.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

/// Runs one pipeline. Each command gets its own result: one refused message (say, by an ACL)
/// must not be reported as lost for the others, which went through.
async fn run_batch(
    state: &State,
    batch: &[Request],
    timeout: Duration,
) -> Result<Vec<redis::RedisResult<Value>>, BrokerError> {
    let mut connection = state.publisher().ok_or(BrokerError::Disconnected)?;
    let all: Vec<usize> = (0..batch.len()).collect();
    let mut results = query_pipeline(&mut connection, batch, &all, timeout).await?;
    // NOSCRIPT: Redis lost its script cache (flushed, or a failover). Nothing refused ran, so
    // it is sent again once the scripts are back.
    let refused: Vec<usize> = (0..results.len())
        .filter(|&i| matches!(&results[i], Err(error) if error.code() == Some("NOSCRIPT")))
        .collect();
    if !refused.is_empty() {
        within(timeout, SCRIPTS.load(&mut connection)).await?;
        let retried = query_pipeline(&mut connection, batch, &refused, timeout).await?;
        for (index, result) in refused.into_iter().zip(retried) {
            results[index] = result;
        }
    }
    Ok(results)
}

async fn query_pipeline(
    connection: &mut MultiplexedConnection,
    batch: &[Request],
    indices: &[usize],
    timeout: Duration,
) -> Result<Vec<redis::RedisResult<Value>>, BrokerError> {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    for &index in indices {
        pipeline.add_command(batch[index].cmd.clone());
    }
    within(timeout, pipeline.query_async(connection)).await
}

/// Runs a Redis call with a deadline, classifying its failure.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(BrokerError::Timeout),
    }
}

/// A live pair of connections.
struct Link {
    subscriber: MultiplexedConnection,
    publisher: MultiplexedConnection,
    /// Signalled by the subscriber's push handler when redis-rs reports the connection closed.
    lost: Arc<Notify>,
    /// Messages the subscriber has delivered, so a busy subscriber is not mistaken for a dead one.
    delivered: Arc<AtomicU64>,
}

struct Supervisor {
    client: redis::Client,
    timing: RedisTiming,
    state: Arc<State>,
    inbound: Arc<dyn Inbound>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Every channel some room on this node needs, whether or not Redis is reachable now.
    wanted: HashSet<String>,
    address: String,
    /// This node's heartbeat. The first one of this process is `fresh`: a node restarted
    /// under the same id (say, after a crash) sweeps the members its earlier run left behind.
    heartbeat: Heartbeat,
}

/// Why [`Supervisor::serve`] returned.
enum Outcome {
    Lost(Lost),
    BrokerDropped,
}

/// Why a live pair of connections was given up, as the log tells it.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("connection closed")]
    Closed,
    #[error("SUBSCRIBE failed: {0}")]
    Subscribe(#[source] BrokerError),
    #[error("UNSUBSCRIBE failed: {0}")]
    Unsubscribe(#[source] RedisError),
    #[error("UNSUBSCRIBE timed out")]
    UnsubscribeTimedOut,
    #[error("heartbeat failed: {0}")]
    Heartbeat(#[source] BrokerError),
    #[error("heartbeat failed: {0}")]
    HeartbeatReply(#[source] ParsingError),
    #[error("PING failed: {0}")]
    Ping(#[source] RedisError),
    #[error("PING timed out")]
    PingTimedOut,
}

impl Supervisor {
    async fn run(mut self) {
        let mut backoff = Backoff::jittered(self.timing.min_backoff, self.timing.max_backoff);
        let mut has_connected = false;
        let mut failed_attempts: u64 = 0;
        loop {
            match self.connect(!has_connected).await {
                Ok(link) => {
                    if has_connected {
                        self.state.metrics.redis_reconnects.inc();
                        log::info!(
                            "reconnected to Redis at {} after {failed_attempts} failed attempt(s); {} channel(s) resubscribed",
                            self.address,
                            self.wanted.len()
                        );
                    } else {
                        log::info!("connected to Redis at {}", self.address);
                    }
                    failed_attempts = 0;
                    backoff.reset();
                    self.set_ready(Some(link.publisher.clone()));
                    if has_connected {
                        self.inbound.reconnected();
                    }
                    has_connected = true;
                    let outcome = self.serve(link).await;
                    self.set_ready(None);
                    match outcome {
                        Outcome::BrokerDropped => return,
                        Outcome::Lost(reason) => log::warn!(
                            "lost Redis at {}: {reason}; sends fail with `unavailable` until it is back",
                            self.address
                        ),
                    }
                }
                Err(error) => {
                    failed_attempts += 1;
                    // Every attempt at first, then a reminder every ten, so a long outage is
                    // visible without flooding the log.
                    if failed_attempts <= 3 || failed_attempts.is_multiple_of(10) {
                        log::warn!(
                            "cannot reach Redis at {} (attempt {failed_attempts}): {error}",
                            self.address
                        );
                    }
                }
            }
            if !self.wait_offline(backoff.next_delay()).await {
                return;
            }
        }
    }

    fn set_ready(&self, publisher: Option<MultiplexedConnection>) {
        let ready = publisher.is_some();
        self.state.publisher.set(publisher);
        self.state.ready.store(ready, Ordering::Release);
        self.state.metrics.broker_ready.set(i64::from(ready));
    }

    async fn connect(&self, first: bool) -> Result<Link, RedisError> {
        let lost = Arc::new(Notify::new());
        let delivered = Arc::new(AtomicU64::new(0));
        let base = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timing.command_timeout))
            .set_response_timeout(Some(self.timing.command_timeout));
        let subscriber_config = base.clone().set_push_sender(push_handler(
            self.inbound.clone(),
            lost.clone(),
            delivered.clone(),
        ));
        let mut subscriber = self
            .client
            .get_multiplexed_async_connection_with_config(&subscriber_config)
            .await?;
        let mut publisher = self
            .client
            .get_multiplexed_async_connection_with_config(&base)
            .await?;
        SCRIPTS.load(&mut publisher).await?;
        self.heartbeat
            .cmd(NODE_TIMEOUT, first)
            .query_async::<Value>(&mut publisher)
            .await?;
        let wanted: Vec<&String> = self.wanted.iter().collect();
        for batch in wanted.chunks(RESUBSCRIBE_BATCH) {
            subscriber.subscribe(batch).await?;
        }
        Ok(Link {
            subscriber,
            publisher,
            lost,
            delivered,
        })
    }

    /// Runs while the link is healthy; returns why it stopped.
    async fn serve(&mut self, mut link: Link) -> Outcome {
        let mut ping = tokio::time::interval(self.timing.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        loop {
            let check = tokio::select! {
                _ = link.lost.notified() => return Outcome::Lost(Lost::Closed),
                _ = ping.tick() => true,
                _ = heartbeat.tick() => {
                    if let Err(error) = self.beat(&mut link.publisher).await {
                        return Outcome::Lost(error);
                    }
                    false
                }
                _ = self.state.check_now.notified() => true,
                command = self.commands.recv() => match command {
                    None => return Outcome::BrokerDropped,
                    Some(command) => {
                        if let Err(error) = self.apply(command, &mut link.subscriber).await {
                            return Outcome::Lost(error);
                        }
                        false
                    }
                },
            };
            if check && let Err(error) = self.ping(&mut link).await {
                return Outcome::Lost(error);
            }
        }
    }

    async fn apply(
        &mut self,
        command: Command,
        subscriber: &mut MultiplexedConnection,
    ) -> Result<(), Lost> {
        let timeout = self.timing.command_timeout;
        match command {
            Command::Subscribe { channel, done } => {
                let result = tokio::time::timeout(timeout, subscriber.subscribe(&channel)).await;
                self.wanted.insert(channel);
                let result = match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(classify(&error)),
                    Err(_) => Err(BrokerError::Timeout),
                };
                // A refusal (say, an ACL that forbids the channel) concerns this channel only;
                // anything else means the connection is gone.
                let lost = match &result {
                    Err(error @ (BrokerError::Disconnected | BrokerError::Timeout)) => {
                        Some(Lost::Subscribe(error.clone()))
                    }
                    Err(BrokerError::Refused(reason)) => {
                        log::warn!("Redis refused to subscribe to a channel: {reason}");
                        None
                    }
                    Ok(()) => None,
                };
                let _ = done.send(result);
                lost.map_or(Ok(()), Err)
            }
            Command::Unsubscribe { channel } => {
                self.wanted.remove(&channel);
                match tokio::time::timeout(timeout, subscriber.unsubscribe(&channel)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(Lost::Unsubscribe(error)),
                    Err(_) => Err(Lost::UnsubscribeTimedOut),
                }
            }
        }
    }

    /// Refreshes this node's heartbeat and sweeps dead nodes. If this node had been swept
    /// itself (cut off for longer than the timeout), its members are announced again.
    async fn beat(&mut self, publisher: &mut MultiplexedConnection) -> Result<(), Lost> {
        let reply: Value = within(
            self.timing.command_timeout,
            self.heartbeat
                .cmd(NODE_TIMEOUT, false)
                .query_async(publisher),
        )
        .await
        .map_err(Lost::Heartbeat)?;
        let (was_missing, swept) = self.heartbeat.read(reply).map_err(Lost::HeartbeatReply)?;
        if swept > 0 {
            log::info!("removed {swept} member(s) of nodes that stopped responding");
        }
        if was_missing {
            log::warn!("this node's presence had expired; announcing its members again");
            self.inbound.reconnected();
        }
        Ok(())
    }

    async fn ping(&self, link: &mut Link) -> Result<(), Lost> {
        let timeout = self.timing.command_timeout;
        let delivered = link.delivered.load(Ordering::Relaxed);
        for (connection, subscriber) in [(&mut link.subscriber, true), (&mut link.publisher, false)]
        {
            match tokio::time::timeout(timeout, connection.ping::<String>()).await {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) if !error.is_timeout() => return Err(Lost::Ping(error)),
                Ok(Err(_)) | Err(_) => {}
            }
            // A burst of messages queues the subscriber's PONG behind them: a subscriber that
            // kept delivering while its PONG was late is busy, not lost.
            if subscriber && link.delivered.load(Ordering::Relaxed) != delivered {
                log::debug!("Redis subscriber busy: PING answered late while delivering");
                continue;
            }
            return Err(Lost::PingTimedOut);
        }
        Ok(())
    }

    /// Waits `delay` while disconnected, answering commands at once so nobody waits on a dead
    /// backplane. Returns false once every broker handle is gone.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return true,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Subscribe { channel, done }) => {
                        // Kept as wanted: whoever asked may still hold the room when Redis is back.
                        self.wanted.insert(channel);
                        let _ = done.send(Err(BrokerError::Disconnected));
                    }
                    Some(Command::Unsubscribe { channel }) => {
                        self.wanted.remove(&channel);
                    }
                },
            }
        }
    }
}

/// The subscriber's push handler: messages go straight to the inbound side, a disconnection
/// wakes the supervisor.
fn push_handler(
    inbound: Arc<dyn Inbound>,
    lost: Arc<Notify>,
    delivered: Arc<AtomicU64>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                {
                    inbound.deliver(&channel, payload);
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            PushKind::Disconnection => lost.notify_one(),
            _ => {}
        }
        Ok(())
    }
}
