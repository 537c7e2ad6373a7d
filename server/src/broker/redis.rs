//! The Redis broker: one pub/sub channel per room, shared by every node.
//!
//! redis-rs's own reconnection gives up after a few seconds on a subscriber-only connection and
//! ignores resubscription errors, so this broker supervises its connections itself:
//!
//! - a *subscriber* connection (RESP3, so pushes and commands share it) whose push handler hands
//!   every message straight to the [`Inbound`] on the connection's own task: no extra queue, and
//!   a node that cannot keep up slows its Redis reads instead of buffering without bound;
//! - a *publisher* connection fed by one task that sends every publish queued since its last
//!   round trip as one pipeline: publishes reach Redis in exactly the order they were made (so
//!   one client's messages keep their order), and under load many share one write and one
//!   round trip;
//! - a supervisor task that owns the set of wanted channels, applies subscribe/unsubscribe in
//!   call order, pings both connections every second, and on any loss marks the broker
//!   unavailable, reconnects with capped exponential backoff for as long as it takes, and
//!   resubscribes every wanted channel before it reports ready again.
//!
//! While unavailable every publish and subscribe fails at once with
//! [`BrokerError::Disconnected`]: senders get an error, never silence.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncCommands, AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    RedisError, Value,
};
use tokio::sync::{Notify, mpsc, oneshot};

use super::{Broker, BrokerError, BrokerFuture, Inbound};
use crate::metrics::Metrics;

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

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 1000;
/// Most PUBLISH commands in one pipeline.
const PUBLISH_BATCH: usize = 512;

pub struct RedisBroker {
    state: Arc<State>,
    commands: mpsc::UnboundedSender<Command>,
    /// Unbounded, but bounded in practice: every session has at most `--max-in-flight`
    /// requests waiting, and publishes are among them.
    publishes: mpsc::UnboundedSender<Publish>,
    address: String,
}

struct Publish {
    channel: String,
    payload: Bytes,
    queued: Instant,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

struct State {
    ready: AtomicBool,
    publisher: RwLock<Option<MultiplexedConnection>>,
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
        timing: RedisTiming,
        inbound: Arc<dyn Inbound>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RedisError> {
        let info = url.into_connection_info()?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(redis_settings)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let address = info.addr().to_string();
        let client = redis::Client::open(info)?;
        let state = Arc::new(State {
            ready: AtomicBool::new(false),
            publisher: RwLock::new(None),
            check_now: Notify::new(),
            metrics,
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (publishes, publish_rx) = mpsc::unbounded_channel();
        tokio::spawn(publish_in_order(
            state.clone(),
            publish_rx,
            timing.command_timeout,
        ));
        let supervisor = Supervisor {
            client,
            timing,
            state: state.clone(),
            inbound,
            commands: command_rx,
            wanted: HashSet::new(),
            address: address.clone(),
        };
        tokio::spawn(supervisor.run());
        Ok(RedisBroker {
            state,
            commands,
            publishes,
            address,
        })
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
        self.publisher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Broker for RedisBroker {
    fn publish(&self, channel: &str, payload: Bytes) -> BrokerFuture {
        if !self.is_ready() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        let (done, result) = oneshot::channel();
        let publish = Publish {
            channel: channel.to_owned(),
            payload,
            queued: Instant::now(),
            done,
        };
        if self.publishes.send(publish).is_err() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        async move { result.await.unwrap_or(Err(BrokerError::Disconnected)) }.boxed()
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
    }

    fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }
}

fn classify(error: &RedisError) -> BrokerError {
    if error.is_timeout() {
        BrokerError::Timeout
    } else if error.is_connection_dropped() || error.is_io_error() || error.is_unrecoverable_error()
    {
        BrokerError::Disconnected
    } else {
        BrokerError::Refused(error.to_string())
    }
}

/// Sends queued publishes to Redis in queue order: everything queued during one round trip
/// goes out as the next pipeline, so batches grow with load and order is never in question.
async fn publish_in_order(
    state: Arc<State>,
    mut queue: mpsc::UnboundedReceiver<Publish>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let outcome = match state.publisher() {
            None => Err(BrokerError::Disconnected),
            Some(mut connection) => {
                let mut pipeline = redis::pipe();
                // Each PUBLISH gets its own result: one refused message (say, by an ACL) must
                // not be reported as lost for the others, which were published.
                pipeline.ignore_errors();
                for publish in &batch {
                    pipeline.publish(&publish.channel, publish.payload.as_ref());
                }
                let query = pipeline.query_async::<Vec<redis::RedisResult<i64>>>(&mut connection);
                match tokio::time::timeout(timeout, query).await {
                    Ok(Ok(results)) => Ok(results),
                    Ok(Err(error)) => Err(classify(&error)),
                    Err(_) => Err(BrokerError::Timeout),
                }
            }
        };
        match outcome {
            Ok(results) => {
                let mut results = results.into_iter();
                for publish in batch.drain(..) {
                    let result = match results.next() {
                        Some(Ok(_)) => {
                            let waited = publish.queued.elapsed().as_secs_f64();
                            state.metrics.publish_duration.observe(waited);
                            Ok(())
                        }
                        Some(Err(error)) => {
                            log::warn!("Redis refused a publish: {error}");
                            Err(classify(&error))
                        }
                        None => Err(BrokerError::Refused("no reply for this publish".into())),
                    };
                    let _ = publish.done.send(result);
                }
            }
            Err(error) => {
                state.check_now.notify_one();
                for publish in batch.drain(..) {
                    let _ = publish.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// A live pair of connections.
struct Link {
    subscriber: MultiplexedConnection,
    publisher: MultiplexedConnection,
    /// Signalled by the subscriber's push handler when redis-rs reports the connection closed.
    lost: Arc<Notify>,
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
}

enum Outcome {
    Lost(String),
    BrokerDropped,
}

impl Supervisor {
    async fn run(mut self) {
        let mut backoff = self.timing.min_backoff;
        let mut has_connected = false;
        let mut failed_attempts: u64 = 0;
        loop {
            match self.connect().await {
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
                    has_connected = true;
                    failed_attempts = 0;
                    backoff = self.timing.min_backoff;
                    self.set_ready(Some(link.publisher.clone()));
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
            if !self.wait_offline(jittered(backoff)).await {
                return;
            }
            backoff = (backoff * 2).min(self.timing.max_backoff);
        }
    }

    fn set_ready(&self, publisher: Option<MultiplexedConnection>) {
        let ready = publisher.is_some();
        *self
            .state
            .publisher
            .write()
            .unwrap_or_else(PoisonError::into_inner) = publisher;
        self.state.ready.store(ready, Ordering::Release);
        self.state.metrics.broker_ready.set(i64::from(ready));
    }

    async fn connect(&self) -> Result<Link, RedisError> {
        let lost = Arc::new(Notify::new());
        let base = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timing.command_timeout))
            .set_response_timeout(Some(self.timing.command_timeout));
        let subscriber_config = base
            .clone()
            .set_push_sender(push_handler(self.inbound.clone(), lost.clone()));
        let mut subscriber = self
            .client
            .get_multiplexed_async_connection_with_config(&subscriber_config)
            .await?;
        let publisher = self
            .client
            .get_multiplexed_async_connection_with_config(&base)
            .await?;
        let wanted: Vec<&String> = self.wanted.iter().collect();
        for batch in wanted.chunks(RESUBSCRIBE_BATCH) {
            subscriber.subscribe(batch).await?;
        }
        Ok(Link {
            subscriber,
            publisher,
            lost,
        })
    }

    /// Runs while the link is healthy; returns why it stopped.
    async fn serve(&mut self, mut link: Link) -> Outcome {
        let mut ping = tokio::time::interval(self.timing.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let check = tokio::select! {
                _ = link.lost.notified() => return Outcome::Lost("connection closed".into()),
                _ = ping.tick() => true,
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
    ) -> Result<(), String> {
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
                        Some(format!("SUBSCRIBE failed: {error}"))
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
                    Ok(Err(error)) => Err(format!("UNSUBSCRIBE failed: {error}")),
                    Err(_) => Err("UNSUBSCRIBE timed out".into()),
                }
            }
        }
    }

    async fn ping(&self, link: &mut Link) -> Result<(), String> {
        let timeout = self.timing.command_timeout;
        for connection in [&mut link.subscriber, &mut link.publisher] {
            match tokio::time::timeout(timeout, connection.ping::<String>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(format!("PING failed: {error}")),
                Err(_) => return Err("PING timed out".into()),
            }
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
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                {
                    inbound.deliver(&channel, payload);
                }
            }
            PushKind::Disconnection => lost.notify_one(),
            _ => {}
        }
        Ok(())
    }
}

/// Spreads reconnection attempts of many nodes so they do not hit a recovering Redis at once.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.8..1.2))
}
