//! The connections and their supervision: connecting, readiness, liveness, reconnecting.
//!
//! redis-rs's own reconnection gives up after a few seconds on a subscriber-only connection and
//! ignores resubscription errors, so one task owns both connections instead: it connects,
//! loads the scripts, beats the heartbeat, resubscribes, and only then reports the broker
//! ready; it pings both connections every `ping_interval`; on any loss it reports the broker
//! unavailable and reconnects with capped, jittered exponential backoff for as long as it
//! takes. While the broker is unavailable every request fails at once: senders get an error,
//! never silence.
//!
//! On a Redis Cluster the command connection follows the cluster by itself, and a change the
//! subscriptions missed (a failover, a moved slot, a lost master) rebuilds only the
//! subscriptions ([`super::shards`]): the broker stays ready, the rooms read what they missed
//! from history, and a rebuild that fails is tried again every `ping_interval`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncCommands, AsyncConnectionConfig, ParsingError, Value};
use tokio::sync::{Notify, mpsc};

use super::RedisTiming;
use super::heartbeat::Heartbeat;
use super::pipeline::{classify, each, within};
use super::scripts::SCRIPTS;
use super::shards::Shards;
use super::subscriptions::{Command, PushParts, Subscriber, Subscriptions};
use super::sweep::Sweeper;
use crate::broker::{BrokerError, Inbound};
use crate::metrics::Metrics;
use crate::presence::{HEARTBEAT_INTERVAL, NODE_TIMEOUT};
use crate::redis_client::{Backoff, Client, Connection, ConnectionCell};

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
    pub(super) fn publisher(&self) -> Option<Connection> {
        if !self.is_ready() {
            return None;
        }
        self.publisher.get()
    }

    fn set_ready(&self, publisher: Option<Connection>) {
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
    Unsubscribe(#[source] BrokerError),
    #[error("heartbeat failed: {0}")]
    Heartbeat(#[source] BrokerError),
    #[error("heartbeat failed: {0}")]
    HeartbeatReply(#[source] ParsingError),
    #[error("renewing presence keys failed: {0}")]
    Renewal(#[source] BrokerError),
    #[error("PING failed: {0}")]
    Ping(#[source] BrokerError),
    #[error("PING timed out")]
    PingTimedOut,
}

/// A live subscriber and publisher.
struct Link {
    subscriber: Subscriber,
    publisher: Connection,
    /// What the subscriber's push handlers signal: a closed connection, a moved slot.
    push: PushParts,
}

/// Why [`Supervisor::serve`] returned.
enum Outcome {
    Lost(Lost),
    BrokerDropped,
}

/// The task that owns the connections and the set of wanted channels.
pub(super) struct Supervisor {
    client: Client,
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
        client: Client,
        timing: RedisTiming,
        state: Arc<State>,
        inbound: Arc<dyn Inbound>,
        commands: mpsc::UnboundedReceiver<Command>,
        address: String,
        heartbeat: Heartbeat,
    ) -> Self {
        let sweeper = Sweeper::new(
            heartbeat.keyspace(),
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
    async fn connect(&mut self, first: bool) -> Result<Link, BrokerError> {
        let timeout = self.timing.command_timeout;
        let redis = |error: redis::RedisError| classify(&error);
        let mut publisher = within(timeout, self.client.connect(timeout)).await?;
        let push = PushParts::new(self.inbound.clone());
        let mut subscriber = self.subscriber(&mut publisher, &push).await?;
        SCRIPTS.load(&publisher, timeout).await?;
        let beat = within(
            timeout,
            self.heartbeat
                .cmd(NODE_TIMEOUT, first)
                .query_async::<Value>(&mut publisher),
        )
        .await?;
        let beat = self
            .heartbeat
            .read(beat)
            .map_err(|error| redis(error.into()))?;
        for node in beat.claimed {
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
            push,
        })
    }

    /// A subscriber with no subscriptions yet: one connection to a single Redis, or the
    /// masters of a cluster on its current slot map.
    async fn subscriber(
        &self,
        publisher: &mut Connection,
        push: &PushParts,
    ) -> Result<Subscriber, BrokerError> {
        let timeout = self.timing.command_timeout;
        match &self.client {
            Client::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_push_sender(push.handler());
                let connection = within(
                    timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await?;
                Ok(Subscriber::Single(connection))
            }
            Client::Cluster { .. } => {
                let shards = Shards::open(self.client.clone(), publisher, timeout, push.clone());
                Ok(Subscriber::Sharded(Box::new(shards.await?)))
            }
        }
    }

    /// Replaces a cluster's subscriptions with a set built on its current slot map, after
    /// `reason` showed the old one out of date; the rooms then read what they missed. If the
    /// cluster cannot be subscribed yet (a master is down and not yet replaced), the old set
    /// stays, still delivering what it can, and the next check tries again.
    async fn resubscribe(&mut self, link: &mut Link, reason: &str) {
        log::info!("Redis Cluster changed ({reason}); subscribing again");
        let push = PushParts::new(self.inbound.clone());
        let rebuilt = async {
            let mut subscriber = self.subscriber(&mut link.publisher, &push).await?;
            self.subscriptions.resubscribe(&mut subscriber).await?;
            Ok::<_, BrokerError>(subscriber)
        };
        match rebuilt.await {
            Ok(subscriber) => {
                link.subscriber = subscriber;
                link.push = push;
                self.state.metrics.redis_resubscribes.inc();
                self.inbound.reconnected();
            }
            Err(error) => log::warn!("cannot subscribe on the Redis Cluster yet: {error}"),
        }
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
                _ = link.push.lost.notified() => {
                    if !link.subscriber.is_sharded() {
                        return Outcome::Lost(Lost::Closed);
                    }
                    self.resubscribe(&mut link, "a master's connection closed").await;
                    false
                }
                _ = link.push.moved.notified() => {
                    self.resubscribe(&mut link, "Redis moved a slot we listen in").await;
                    false
                }
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
                        match applied.await {
                            Err(error) if !link.subscriber.is_sharded() => {
                                return Outcome::Lost(error);
                            }
                            Err(error) => {
                                self.resubscribe(&mut link, &error.to_string()).await;
                            }
                            Ok(()) => {}
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
    async fn beat(&mut self, publisher: &mut Connection) -> Result<(), Lost> {
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
            each::<Value>(publisher, renewal, self.timing.command_timeout)
                .await
                .map_err(Lost::Renewal)?;
        }
        if beat.was_missing {
            log::warn!("this node's presence had expired; announcing its members again");
            self.inbound.reconnected();
        }
        Ok(())
    }

    /// Checks both sides: a PING on the publisher (on a cluster, to any one node: a master
    /// being replaced is the subscriptions' concern, not a reason to refuse every send), and
    /// the subscriber: a PING on a single Redis, the slot map and every master on a cluster.
    async fn ping(&mut self, link: &mut Link) -> Result<(), Lost> {
        let timeout = self.timing.command_timeout;
        let ping = match &mut link.publisher {
            Connection::Single(connection) => {
                within(timeout, connection.ping::<String>()).await.map(drop)
            }
            Connection::Cluster(connection) => {
                // A random node may be the one just lost: the cluster is reachable if any
                // of three answers.
                let mut answer = Err(BrokerError::Disconnected);
                for _ in 0..3 {
                    let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                    let ping = connection.route_command(redis::cmd("PING"), any);
                    answer = within(timeout, ping).await.map(drop);
                    if answer.is_ok() {
                        break;
                    }
                }
                answer
            }
        };
        match ping {
            Ok(_) => {}
            Err(BrokerError::Timeout) => return Err(Lost::PingTimedOut),
            Err(error) => return Err(Lost::Ping(error)),
        }
        let delivered = link.push.delivered.load(Ordering::Relaxed);
        let stale = match &mut link.subscriber {
            Subscriber::Single(connection) => {
                return match within(timeout, connection.ping::<String>()).await {
                    Ok(_) => Ok(()),
                    Err(BrokerError::Timeout)
                        if link.push.delivered.load(Ordering::Relaxed) != delivered =>
                    {
                        // A burst of messages queues the subscriber's PONG behind them: a
                        // subscriber that kept delivering while its PONG was late is busy.
                        log::debug!("Redis subscriber busy: PING answered late while delivering");
                        Ok(())
                    }
                    Err(BrokerError::Timeout) => Err(Lost::PingTimedOut),
                    Err(error) => Err(Lost::Ping(error)),
                };
            }
            Subscriber::Sharded(shards) => shards.check(&mut link.publisher).await,
        };
        if let Err(reason) = stale {
            self.resubscribe(link, &reason).await;
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
