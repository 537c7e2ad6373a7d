//! The hub: what a session can do to the cluster (join, leave, publish), independent of which
//! broker runs.
//!
//! Publishing is the sending half of the hot path: the `message` frame every recipient will see
//! is serialized exactly once, here, with the server's id, timestamp and the sender's name, then
//! sealed for the room's channel and handed to the broker. Receiving nodes only open it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_protocol::ServerFrame;

use crate::broker::{BrokerError, BrokerFuture, SharedBroker};
use crate::envelope::Keyring;
use crate::ids::{MessageIds, now_ms};
use crate::metrics::Metrics;
use crate::rooms::{MemberId, Outbox, Rooms, Subscription};

pub struct Hub {
    node_id: String,
    channel_prefix: String,
    rooms: Arc<Rooms>,
    broker: SharedBroker,
    keyring: Arc<Keyring>,
    metrics: Arc<Metrics>,
    message_ids: MessageIds,
    member_ids: AtomicU64,
}

/// A message handed to the broker: its id, and a future that resolves once it was accepted.
pub struct Publication {
    pub id: String,
    pub accepted: BrokerFuture,
}

impl Hub {
    pub fn new(
        node_id: String,
        redis_prefix: &str,
        rooms: Arc<Rooms>,
        broker: SharedBroker,
        keyring: Arc<Keyring>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Hub {
            node_id,
            channel_prefix: format!("{redis_prefix}:room:"),
            rooms,
            broker,
            keyring,
            metrics,
            message_ids: MessageIds::new(),
            member_ids: AtomicU64::new(1),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn is_ready(&self) -> bool {
        self.broker.is_ready()
    }

    /// A fresh id for a connection's membership entries.
    pub fn next_member_id(&self) -> MemberId {
        self.member_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The backplane channel of a (validated) room name.
    pub fn channel(&self, room: &str) -> String {
        format!("{}{room}", self.channel_prefix)
    }

    /// Makes `member` a local member of `room`. Messages reach its outbox once the returned
    /// subscription resolves. Fails at once while the backplane is down, so that nobody is told
    /// they joined a room whose messages this node cannot hear.
    pub fn join(
        &self,
        channel: &str,
        member: MemberId,
        outbox: &Outbox,
    ) -> Result<Subscription, BrokerError> {
        if !self.broker.is_ready() {
            return Err(BrokerError::Disconnected);
        }
        Ok(self.rooms.add(channel, member, outbox.clone(), || {
            self.broker.subscribe(channel)
        }))
    }

    pub fn leave(&self, channel: &str, member: MemberId) {
        self.rooms
            .remove(channel, member, || self.broker.unsubscribe(channel));
    }

    /// Stamps, serializes once, seals and publishes a message from `from`.
    pub fn publish(&self, channel: &str, room: &str, from: &str, text: &str) -> Publication {
        let ts = now_ms();
        let id = self.message_ids.next(ts);
        let frame = ServerFrame::Message {
            room: room.into(),
            id: id.as_str().into(),
            from: from.into(),
            text: text.into(),
            ts,
        }
        .to_json();
        let sealed = self.keyring.seal(channel.as_bytes(), frame.as_bytes());
        Publication {
            id,
            accepted: self.broker.publish(channel, sealed),
        }
    }
}
