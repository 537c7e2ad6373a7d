//! The Redis broker: one pub/sub channel per room, shared by every node.
//!
//! redis-rs's own reconnection gives up after a few seconds on a subscriber-only connection and
//! ignores resubscription errors, so this broker supervises its connections itself:
//!
//! - a *subscriber* connection (RESP3, so pushes and commands share it) whose push handler hands
//!   every message straight to the [`Inbound`] on the connection's own task: no extra queue, and
//!   a node that cannot keep up slows its Redis reads instead of buffering without bound
//!   ([`subscriptions`]);
//! - a *publisher* connection fed by one task that sends every request queued since its last
//!   round trip (publishes, history reads, presence changes) as one pipeline: requests reach
//!   Redis in exactly the order they were made (so one client's messages keep their order),
//!   and under load many share one write and one round trip ([`pipeline`]);
//! - a supervisor task that owns the set of wanted channels, applies subscribe/unsubscribe in
//!   call order, pings both connections every second, and on any loss marks the broker
//!   unavailable, reconnects with capped exponential backoff for as long as it takes, and
//!   resubscribes every wanted channel before it reports ready again ([`supervisor`]).
//!
//! While unavailable every publish and subscribe fails at once with
//! [`BrokerError::Disconnected`]: senders get an error, never silence. After a reconnect the
//! rooms are told ([`Inbound::reconnected`]) so they fetch what they missed from history.
//!
//! Keys, under the node's prefix (`chat` by default): `<prefix>:room:<room>` is a room's
//! channel, `<channel>:history` its history stream, `<channel>:presence` its presence hash;
//! `<prefix>:nodes` holds node heartbeats and `<prefix>:node:<node>:rooms` a node's presence
//! hashes. On a Redis Cluster the same names carry hash tags ([`crate::keyspace`]), channels
//! are sharded (`SPUBLISH`, `SSUBSCRIBE`: a message reaches only the shard of its room, see
//! [`shards`]). Message and presence operations are Lua scripts (see [`scripts`]). Every
//! one of these keys expires unless renewed (see [`heartbeat`]).
//!
//! This file holds the broker's handle and its [`Broker`] side; [`presence`] its
//! [`crate::presence::Presence`] side, [`history`] the reading of history streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::MessageId;
use futures::FutureExt;
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};

use self::heartbeat::Heartbeat;
use self::pipeline::Pipeline;
use self::publish::Publish;
use self::subscriptions::Command;
use self::supervisor::{State, Supervisor};
use super::{
    Broker, BrokerError, BrokerFuture, HistoryEntry, HistoryLimits, HistoryRange, Inbound,
};
use crate::keyspace::Keyspace;
use crate::metrics::Metrics;
use crate::redis_client::{self, RedisTarget};

mod heartbeat;
mod history;
mod pipeline;
mod presence;
mod publish;
mod scripts;
mod shards;
mod subscriptions;
mod supervisor;
mod sweep;

/// Timing of the connection supervision.
#[derive(Debug, Clone)]
pub struct RedisTiming {
    /// How long a connect or a command may take before the connection is considered lost.
    pub command_timeout: Duration,
    /// How often both connections are checked with PING.
    pub ping_interval: Duration,
    /// First wait between reconnection attempts.
    pub min_backoff: Duration,
    /// Largest wait between reconnection attempts.
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
    /// Timing of the connection supervision.
    pub timing: RedisTiming,
    /// How much history each room keeps.
    pub history: HistoryLimits,
    /// Where keys and channels are (`--redis-prefix`, and whether Redis is a cluster).
    pub keyspace: Keyspace,
    /// This node's id: its presence entries and heartbeat are filed under it.
    pub node_id: String,
}

/// The broker of a node that shares its rooms with other nodes through Redis.
pub struct RedisBroker {
    state: Arc<State>,
    /// Subscribe and unsubscribe, for the supervisor, which applies them in order.
    subscriptions: mpsc::UnboundedSender<Command>,
    /// Everything else, for the publisher connection.
    pipeline: Pipeline,
    address: String,
    heartbeat: Heartbeat,
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    publish: &'static str,
}

/// The command that publishes on a room's channel: sharded on a Redis Cluster, where a plain
/// `PUBLISH` would be copied to every shard.
fn publish_command(keyspace: &Keyspace) -> &'static str {
    if keyspace.is_cluster() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    }
}

impl RedisBroker {
    /// Starts supervising connections to `target` in the background; the broker reports
    /// ready once it is connected. Fails only if a URL itself is invalid.
    pub fn start(
        target: &RedisTarget,
        options: RedisOptions,
        inbound: Arc<dyn Inbound>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RedisError> {
        let RedisOptions {
            timing,
            history,
            keyspace,
            node_id,
        } = options;
        let client = redis_client::Client::open(target)?;
        let address = client.address();
        let state = Arc::new(State::new(metrics));
        let pipeline = Pipeline::start(state.clone(), timing.command_timeout, history, &keyspace);
        let (subscriptions, commands) = mpsc::unbounded_channel();
        let heartbeat = Heartbeat::new(&keyspace, &node_id);
        let supervisor = Supervisor::new(
            client,
            timing,
            state.clone(),
            inbound,
            commands,
            address.clone(),
            heartbeat.clone(),
        );
        tokio::spawn(supervisor.run());
        Ok(RedisBroker {
            state,
            subscriptions,
            pipeline,
            address,
            heartbeat,
            publish: publish_command(&keyspace),
        })
    }

    /// `host:port` of the Redis server, without credentials, for logs.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Broker for RedisBroker {
    fn publish(&self, channel: &str, sealed_body: Bytes, ts: u64) -> BrokerFuture<MessageId> {
        self.pipeline.publish(Publish {
            channel: channel.to_owned(),
            sealed_body,
            ts,
        })
    }

    fn signal(&self, channel: &str, payload: Bytes) {
        // One PUBLISH (SPUBLISH on a cluster), no script: nothing is stored, and a lost signal is not retried.
        if !self.state.is_ready() {
            return;
        }
        let mut publish = redis::cmd(self.publish);
        publish.arg(channel).arg(payload.as_ref());
        self.pipeline.send_and_forget(publish);
    }

    fn history(&self, channel: &str, range: HistoryRange) -> BrokerFuture<Vec<HistoryEntry>> {
        let (cmd, newest_first) = history::read(channel, range);
        let read = self.pipeline.send(cmd);
        async move {
            let mut entries = history::parse_entries(read.await?).map_err(BrokerError::Refused)?;
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
        if self.subscriptions.send(command).is_err() {
            return futures::future::ready(Err(BrokerError::Disconnected)).boxed();
        }
        async move { result.await.unwrap_or(Err(BrokerError::Disconnected)) }.boxed()
    }

    fn unsubscribe(&self, channel: &str) {
        // If the supervisor is gone the node is shutting down; nothing is left to unsubscribe.
        let _ = self.subscriptions.send(Command::Unsubscribe {
            channel: channel.to_owned(),
        });
        // The room has no member here any more: a sweep of this node need not visit it.
        let mut forget = redis::cmd("SREM");
        forget
            .arg(self.heartbeat.node_rooms_key())
            .arg(presence::key(channel));
        self.pipeline.send_and_forget(forget);
    }

    fn is_ready(&self) -> bool {
        self.state.is_ready()
    }
}
