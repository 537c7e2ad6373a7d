//! Presence: who is in a room, across every node.
//!
//! Modelled on centrifuge's `PresenceManager`, next to the [`crate::broker::Broker`]: the Redis
//! and in-memory brokers implement both. A member is a connection in a room, keyed
//! `<node id>|<member id>` so that it is unique in the cluster and names its node. What is
//! stored is the member's *sealed* name: Redis never sees a name in clear.
//!
//! Adding or removing a member also announces it on the room's channel (see
//! [`crate::relay`]), so every node tells its local members with a `presence` frame.
//!
//! A node that crashes cannot remove its members. With Redis, every node refreshes its own
//! heartbeat every [`HEARTBEAT_INTERVAL`] and a node whose heartbeat is older than
//! [`NODE_TIMEOUT`] is swept by the next node that checks (every node checks at each
//! heartbeat): its members are removed and their departure announced. So the members of a
//! crashed node disappear within `NODE_TIMEOUT + HEARTBEAT_INTERVAL` (13 s).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::BrokerFuture;

/// How often a node refreshes its heartbeat and sweeps dead nodes.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How long after its last heartbeat a node counts as dead.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(10);

pub trait Presence: Send + Sync + 'static {
    /// Records `member` as present in `channel` under `sealed_name` and announces the join.
    /// In call order with `remove` and with the broker's publishes.
    fn add(&self, channel: &str, member: &str, sealed_name: Bytes) -> BrokerFuture;

    /// Removes `member` from `channel` and announces the departure, in call order with `add`.
    fn remove(&self, channel: &str, member: &str);

    /// The sealed names of `channel`'s members on live nodes.
    fn members(&self, channel: &str) -> BrokerFuture<Vec<Vec<u8>>>;

    /// The node is shutting down: its remaining members are swept by the other nodes at once
    /// rather than after the timeout.
    fn retire(&self) -> BrokerFuture;
}

pub(crate) type SharedPresence = Arc<dyn Presence>;

/// The associated data that binds a sealed name to its room's presence, so that a name can
/// be neither moved to another room nor passed off as a message body.
pub(crate) fn name_aad(channel: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(channel.len() + 9);
    aad.extend_from_slice(channel.as_bytes());
    aad.extend_from_slice(b"#presence");
    aad
}
