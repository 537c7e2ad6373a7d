//! The backplane interface: how a node publishes to and hears from every other node.
//!
//! Modelled on centrifuge's `Broker`: channels are opaque names, payloads opaque bytes (always
//! sealed envelopes by the time they get here). The rest of the server talks to `dyn Broker`
//! and never knows whether Redis or the in-memory broker runs underneath.
//!
//! Every message is appended to its room's history (the last `--history-size` messages) in the
//! same atomic step that publishes it, and the broker assigns its [`MessageId`] there: ids are
//! ordered within a room and gap-free within an epoch, which is what lets nodes and clients
//! notice a missed message and fetch it from history.
//!
//! Two ordering rules make room bookkeeping simple and race-free:
//! - `subscribe` and `unsubscribe` take effect in the order they are called, so the hub can call
//!   them while it holds a room's entry and need not await anything under that lock;
//! - `publish` takes effect in call order, whether or not its future is ever polled, so one
//!   client's messages keep their order without the caller sequencing anything.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::MessageId;
use futures::future::BoxFuture;

pub mod memory;
pub mod redis;

pub use self::redis::RedisBroker;
pub use memory::MemoryBroker;

/// Why the backplane did not take a request. Clients see all of these as `unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// No connection now; the broker is reconnecting.
    #[error("the backplane is not connected")]
    Disconnected,
    /// The request went out but its answer did not come back in time: it may have been
    /// carried out.
    #[error("the backplane did not answer in time")]
    Timeout,
    /// The backplane answered, but not with what was asked for. Only this request failed: the
    /// connection is fine.
    #[error("the backplane refused the request: {0}")]
    Refused(#[source] BadReply),
}

/// What the backplane answered instead of a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BadReply {
    /// An error reply from Redis (an ACL, `maxmemory`, a failing script).
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    /// A reply of another type than the command returns.
    #[error(transparent)]
    Reply(#[from] ::redis::ParsingError),
    /// The publish script answered, but without the message's id.
    #[error("the publish script returned no id")]
    NoMessageId,
    /// A pipeline came back with fewer replies than it had commands.
    #[error("no reply for this request")]
    NoReply,
    /// A history read returned something other than a list of entries.
    #[error("unexpected history reply: {0:?}")]
    HistoryReply(::redis::Value),
    /// A history entry whose id is not a message id.
    #[error("history entry id {0:?}")]
    HistoryEntryId(String),
}

/// A broker operation in flight; it resolves once the broker confirmed it.
pub type BrokerFuture<T = ()> = BoxFuture<'static, Result<T, BrokerError>>;

/// How much history each room keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Messages kept per room (at least; Redis trims approximately).
    pub size: usize,
    /// A room's history is dropped this long after its last message.
    pub max_age: Duration,
}

/// One stored message: its id, its sealed body (see [`crate::relay`]) and when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The id the broker gave the message when it was published.
    pub id: MessageId,
    /// The message as it travels between nodes, sealed.
    pub sealed_body: Vec<u8>,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Which stored messages to read. Both bounds are inclusive; entries come oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// The newest `limit` messages up to `through` (or up to the newest).
    Newest {
        /// The newest message to read; `None`: the newest there is.
        through: Option<MessageId>,
        /// Most messages to read.
        limit: usize,
    },
    /// The oldest `limit` messages from `from` up to `through` (or up to the newest).
    From {
        /// The oldest message to read.
        from: MessageId,
        /// The newest message to read; `None`: the newest there is.
        through: Option<MessageId>,
        /// Most messages to read.
        limit: usize,
    },
}

/// Receives what the broker hears on subscribed channels.
///
/// Called on the broker's own task: implementations must not block (fan-out with `try_send`).
pub trait Inbound: Send + Sync + 'static {
    /// A payload published on `channel`, by this node or another.
    fn deliver(&self, channel: &[u8], payload: Vec<u8>);

    /// The broker lost its connection and has it back, every channel resubscribed: whatever
    /// was published in between was not delivered and must be fetched from history.
    fn reconnected(&self);
}

/// The backplane: what every node publishes to and subscribes on.
pub trait Broker: Send + Sync + 'static {
    /// Appends a sealed message body to `channel`'s history and publishes it to every node
    /// subscribed to `channel`, atomically and in call order. Resolves to the message's id
    /// once the broker accepted it: only then may the sender be acknowledged.
    fn publish(&self, channel: &str, sealed_body: Bytes, ts: u64) -> BrokerFuture<MessageId>;

    /// Publishes an ephemeral payload (a typing signal) to every node subscribed to
    /// `channel`: not stored, no id, not confirmed. Best-effort: while the backplane is down
    /// it is dropped.
    fn signal(&self, channel: &str, payload: Bytes);

    /// Reads `channel`'s history. In call order with `publish`.
    fn history(&self, channel: &str, range: HistoryRange) -> BrokerFuture<Vec<HistoryEntry>>;

    /// Starts receiving `channel`. Takes effect in call order with `unsubscribe`; the future
    /// resolves once the subscription is active.
    fn subscribe(&self, channel: &str) -> BrokerFuture;

    /// Stops receiving `channel`, in call order with `subscribe`.
    fn unsubscribe(&self, channel: &str);

    /// Whether the broker is connected and can take requests now.
    fn is_ready(&self) -> bool;
}

/// The broker as the node shares it between sessions, the hub and the API.
pub type SharedBroker = Arc<dyn Broker>;
