//! The connections and their supervision: connecting, readiness, liveness, reconnecting.
//!
//! redis-rs's own reconnection gives up after a few seconds on a subscriber-only connection and
//! ignores resubscription errors, so one task owns both connections instead: it connects,
//! loads the scripts, beats the heartbeat, resubscribes, and only then reports the broker
//! ready; it pings both connections every `ping_interval`; on any loss it reports the broker
//! unavailable and reconnects with capped, jittered exponential backoff for as long as it
//! takes. While the broker is unavailable every request fails at once: senders get an error,
//! never silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, ParsingError, RedisError, Value};
use tokio::sync::{Notify, mpsc};

use super::RedisTiming;
use super::heartbeat::Heartbeat;
use super::pipeline::within;
use super::scripts::SCRIPTS;
use super::subscriptions::{Command, Subscriptions, push_handler};
use super::sweep::Sweeper;
use crate::broker::{BrokerError, Inbound};
use crate::metrics::Metrics;
use crate::presence::{HEARTBEAT_INTERVAL, NODE_TIMEOUT};
use crate::redis_client::{Backoff, ConnectionCell};

/// What the supervisor tells everyone else: whether the broker is ready, and the publisher
/// connection while it is.
pub(super) struct State {
    ready: AtomicBool,
    publisher: ConnectionCell,
    /// A failed pipeline asks the supervisor to check the connections now, not at the next
    /// ping.
    pub(super) check_now: Notify,
    pub(super) metrics: Arc<Metrics>,
}

impl State {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        State {
            ready: AtomicBool::new(false),
            publisher: ConnectionCell::default(),
            check_now: Notify::new(),
            metrics,
        }
    }

    /// Whether the broker is connected and can take requests now.
    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The publisher connection, if the broker is ready.
    pub(super) fn publisher(&self) -> Option<MultiplexedConnection> {
        if !self.is_ready() {
            return None;
        }
        self.publisher.get()
    }

    fn set_ready(&self, publisher: Option<MultiplexedConnection>) {
        let ready = publisher.is_some();
        self.publisher.set(publisher);
        self.ready.store(ready, Ordering::Release);
        self.metrics.broker_ready.set(i64::from(ready));
    }
}

/// Why a live pair of connections was given up, as the log tells it.
#[derive(Debug, thiserror::Error)]
pub(super) enum Lost {
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
    #[error("renewing presence keys failed: {0}")]
    Renewal(#[source] BrokerError),
    #[error("PING failed: {0}")]
    Ping(#[source] RedisError),
    #[error("PING timed out")]
    PingTimedOut,
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

/// Why [`Supervisor::serve`] returned.
enum Outcome {
    Lost(Lost),
    BrokerDropped,
}

/// The task that owns the connections and the set of wanted channels.
pub(super) struct Supervisor {
    client: redis::Client,
    timing: RedisTiming,
    state: Arc<State>,
    inbound: Arc<dyn Inbound>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Every channel some room on this node needs, whether or not Redis is reachable now.
    subscriptions: Subscriptions,
    address: String,
    /// This node's heartbeat. The first one of this process is `fresh`: a node restarted
    /// under the same id (say, after a crash) sweeps the members its earlier run left behind.
    heartbeat: Heartbeat,
    sweeper: Sweeper,
}

impl Supervisor {
    pub(super) fn new(
        client: redis::Client,
        timing: RedisTiming,
        state: Arc<State>,
        inbound: Arc<dyn Inbound>,
        commands: mpsc::UnboundedReceiver<Command>,
        address: String,
        heartbeat: Heartbeat,
    ) -> Self {
        let sweeper = Sweeper::new(
            heartbeat.prefix(),
            heartbeat.sweeps_key(),
            timing.command_timeout,
        );
        Supervisor {
            sweeper,
            client,
            timing,
            state,
            inbound,
            commands,
            subscriptions: Subscriptions::default(),
            address,
            heartbeat,
        }
    }

    /// Connects, serves, reconnects, until every broker handle is gone.
    pub(super) async fn run(mut self) {
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
                            self.subscriptions.len()
                        );
                    } else {
                        log::info!("connected to Redis at {}", self.address);
                    }
                    failed_attempts = 0;
                    backoff.reset();
                    self.state.set_ready(Some(link.publisher.clone()));
                    if has_connected {
                        self.inbound.reconnected();
                    }
                    has_connected = true;
                    let outcome = self.serve(link).await;
                    self.state.set_ready(None);
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

    /// Opens both connections and brings them to where the broker can be ready: scripts
    /// loaded, heartbeat beaten (on the first connect, what an earlier run of this node id
    /// left in presence swept, before any member of this run can be confused with it), every
    /// wanted channel subscribed.
    async fn connect(&mut self, first: bool) -> Result<Link, RedisError> {
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
        let beat = self
            .heartbeat
            .cmd(NODE_TIMEOUT, first)
            .query_async::<Value>(&mut publisher)
            .await?;
        for node in self.heartbeat.read(beat)?.claimed {
            if node == self.heartbeat.node_id() {
                self.sweeper.sweep_logged(&mut publisher, &node).await;
            } else {
                self.sweeper.spawn(&publisher, vec![node]);
            }
        }
        self.subscriptions.resubscribe(&mut subscriber).await?;
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
        let timeout = self.timing.command_timeout;
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
                        let applied =
                            self.subscriptions.apply(command, &mut link.subscriber, timeout);
                        if let Err(error) = applied.await {
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

    /// Refreshes this node's heartbeat and sweeps the dead nodes it claimed, in the background.
    /// If this node had been swept
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
        let beat = self.heartbeat.read(reply).map_err(Lost::HeartbeatReply)?;
        self.sweeper.spawn(publisher, beat.claimed);
        if !beat.renew.is_empty() {
            let renewal = Heartbeat::renewal(&beat.renew);
            within(
                self.timing.command_timeout,
                renewal.query_async::<()>(publisher),
            )
            .await
            .map_err(Lost::Renewal)?;
        }
        if beat.was_missing {
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
                    Some(command) => self.subscriptions.apply_offline(command),
                },
            }
        }
    }
}
