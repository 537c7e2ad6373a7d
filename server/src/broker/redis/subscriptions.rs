//! The subscriber's side: the set of channels this node needs, the subscriber itself (one
//! connection on a single Redis, one per master on a Redis Cluster, see [`super::shards`]),
//! and the push handler that hands what Redis publishes on them to the rooms.
//!
//! The set is the truth, whether or not Redis is reachable: a subscribe made while Redis is
//! down fails at once but stays wanted, since whoever asked may still hold the room when Redis
//! is back, and every wanted channel is subscribed again on each new connection.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, oneshot};

use super::pipeline::{classify, within};
use super::shards::{OwnUnsubscribes, Shards, expected_unsubscribe};
use super::supervisor::Lost;
use crate::broker::{BrokerError, Inbound};

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 1000;

/// A change to the set of channels, applied by the supervisor in call order.
pub(super) enum Command {
    /// Starts receiving `channel`; `done` learns once the subscription is active.
    Subscribe {
        channel: String,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Stops receiving `channel`.
    Unsubscribe { channel: String },
}

/// Every channel some room on this node needs.
#[derive(Default)]
pub(super) struct Subscriptions {
    wanted: HashSet<String>,
}

impl Subscriptions {
    /// How many channels are wanted.
    pub(super) fn len(&self) -> usize {
        self.wanted.len()
    }

    /// Subscribes a new subscriber to every wanted channel.
    pub(super) async fn resubscribe(&self, subscriber: &mut Subscriber) -> Result<(), BrokerError> {
        match subscriber {
            Subscriber::Single(connection) => {
                let wanted: Vec<&String> = self.wanted.iter().collect();
                for batch in wanted.chunks(RESUBSCRIBE_BATCH) {
                    connection
                        .subscribe(batch)
                        .await
                        .map_err(|e| classify(&e))?;
                }
                Ok(())
            }
            Subscriber::Sharded(shards) => shards.subscribe(&self.wanted).await,
        }
    }

    /// Applies a command on a live connection. Fails if the connection is lost, or on a
    /// cluster if the subscription failed at all (a `MOVED`: the slot map is out of date, and
    /// the supervisor subscribes everything again; the joiner hears `unavailable` and may try
    /// again). On a single Redis a refusal (say, an ACL that forbids the channel) concerns
    /// this channel only.
    pub(super) async fn apply(
        &mut self,
        command: Command,
        subscriber: &mut Subscriber,
        timeout: Duration,
    ) -> Result<(), Lost> {
        match command {
            Command::Subscribe { channel, done } => {
                let result = subscriber.subscribe(&channel, timeout).await;
                self.wanted.insert(channel);
                let lost = match &result {
                    Err(error @ (BrokerError::Disconnected | BrokerError::Timeout)) => {
                        Some(Lost::Subscribe(error.clone()))
                    }
                    // On a cluster, a refusal is the slot having moved (`MOVED`): the
                    // subscriptions are rebuilt on the new slot map.
                    Err(error) if subscriber.is_sharded() => Some(Lost::Subscribe(error.clone())),
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
                subscriber
                    .unsubscribe(&channel, timeout)
                    .await
                    .map_err(Lost::Unsubscribe)
            }
        }
    }

    /// Answers a command while disconnected, at once, so nobody waits on a dead backplane.
    pub(super) fn apply_offline(&mut self, command: Command) {
        match command {
            Command::Subscribe { channel, done } => {
                // Kept as wanted: whoever asked may still hold the room when Redis is back.
                self.wanted.insert(channel);
                let _ = done.send(Err(BrokerError::Disconnected));
            }
            Command::Unsubscribe { channel } => {
                self.wanted.remove(&channel);
            }
        }
    }
}

/// What a subscriber connection's push handler needs; each connection gets a handler of its
/// own (a cluster has one connection per master).
#[derive(Clone)]
pub(super) struct PushParts {
    pub(super) inbound: Arc<dyn Inbound>,
    /// Signalled when redis-rs reports the connection closed.
    pub(super) lost: Arc<Notify>,
    /// Signalled on a `sunsubscribe` the node did not ask for: the cluster moved a slot.
    pub(super) moved: Arc<Notify>,
    /// Messages delivered, so a busy subscriber is not mistaken for a dead one.
    pub(super) delivered: Arc<AtomicU64>,
    pub(super) own_unsubscribes: OwnUnsubscribes,
}

impl PushParts {
    pub(super) fn new(inbound: Arc<dyn Inbound>) -> Self {
        PushParts {
            inbound,
            lost: Arc::default(),
            moved: Arc::default(),
            delivered: Arc::default(),
            own_unsubscribes: OwnUnsubscribes::default(),
        }
    }

    /// A push handler: messages go straight to the inbound side, on the connection's own task.
    pub(super) fn handler(
        &self,
    ) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
        let parts = self.clone();
        move |push: PushInfo| {
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    let mut data = push.data.into_iter();
                    if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                        (data.next(), data.next())
                    {
                        parts.inbound.deliver(&channel, payload);
                        parts.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                PushKind::SUnsubscribe => {
                    let channel = match push.data.first() {
                        Some(Value::BulkString(channel)) => channel.as_slice(),
                        _ => &[],
                    };
                    if !expected_unsubscribe(&parts.own_unsubscribes, channel) {
                        parts.moved.notify_one();
                    }
                }
                PushKind::Disconnection => parts.lost.notify_one(),
                _ => {}
            }
            Ok(())
        }
    }
}

/// The connections that receive the wanted channels.
pub(super) enum Subscriber {
    /// One connection to a single Redis, with plain `SUBSCRIBE`.
    Single(MultiplexedConnection),
    /// One connection per master of a Redis Cluster, with `SSUBSCRIBE`.
    Sharded(Box<Shards>),
}

impl Subscriber {
    /// Whether this is a cluster's set of per-master connections.
    pub(super) fn is_sharded(&self) -> bool {
        matches!(self, Subscriber::Sharded(_))
    }

    async fn subscribe(&mut self, channel: &String, timeout: Duration) -> Result<(), BrokerError> {
        match self {
            Subscriber::Single(connection) => within(timeout, connection.subscribe(channel)).await,
            Subscriber::Sharded(shards) => shards.subscribe([channel]).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str, timeout: Duration) -> Result<(), BrokerError> {
        match self {
            Subscriber::Single(connection) => {
                within(timeout, connection.unsubscribe(channel)).await
            }
            Subscriber::Sharded(shards) => shards.unsubscribe(channel).await,
        }
    }
}
