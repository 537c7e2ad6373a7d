//! The subscriber connection's side: the set of channels this node needs, and the push
//! handler that hands what Redis publishes on them to the rooms.
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

use super::pipeline::classify;
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

    /// Subscribes a new connection to every wanted channel.
    pub(super) async fn resubscribe(
        &self,
        subscriber: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let wanted: Vec<&String> = self.wanted.iter().collect();
        for batch in wanted.chunks(RESUBSCRIBE_BATCH) {
            subscriber.subscribe(batch).await?;
        }
        Ok(())
    }

    /// Applies a command on a live connection. Fails only if the connection is lost: a
    /// refusal (say, an ACL that forbids the channel) concerns this channel only.
    pub(super) async fn apply(
        &mut self,
        command: Command,
        subscriber: &mut MultiplexedConnection,
        timeout: Duration,
    ) -> Result<(), Lost> {
        match command {
            Command::Subscribe { channel, done } => {
                let result = tokio::time::timeout(timeout, subscriber.subscribe(&channel)).await;
                self.wanted.insert(channel);
                let result = match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(classify(&error)),
                    Err(_) => Err(BrokerError::Timeout),
                };
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

/// The subscriber's push handler: messages go straight to the inbound side, counted in
/// `delivered`; a disconnection wakes the supervisor through `lost`.
pub(super) fn push_handler(
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
