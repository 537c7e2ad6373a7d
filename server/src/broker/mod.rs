//! The backplane interface: how a node publishes to and hears from every other node.
//!
//! Modelled on centrifuge's `Broker`: channels are opaque names, payloads opaque bytes (always
//! sealed envelopes by the time they get here). The rest of the server talks to `dyn Broker`
//! and never knows whether Redis or the in-memory broker runs underneath.
//!
//! Two ordering rules make room bookkeeping simple and race-free:
//! - `subscribe` and `unsubscribe` take effect in the order they are called, so the hub can call
//!   them while it holds a room's entry and need not await anything under that lock;
//! - `publish` takes effect in call order, whether or not its future is ever polled, so one
//!   client's messages keep their order without the caller sequencing anything.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub mod memory;
pub mod redis;

pub use memory::MemoryBroker;
pub use redis::RedisBroker;

/// Why the backplane did not take a request. Clients see all of these as `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("the backplane is not connected")]
    Disconnected,
    #[error("the backplane did not answer in time")]
    Timeout,
    #[error("the backplane refused the request: {0}")]
    Refused(String),
}

/// A broker operation in flight; it resolves once the broker confirmed it.
pub type BrokerFuture = BoxFuture<'static, Result<(), BrokerError>>;

/// Receives what the broker hears on subscribed channels.
///
/// Called on the broker's own task: implementations must not block (fan-out with `try_send`).
pub trait Inbound: Send + Sync + 'static {
    fn deliver(&self, channel: &[u8], payload: Vec<u8>);
}

pub trait Broker: Send + Sync + 'static {
    /// Publishes `payload` to every node subscribed to `channel`, in call order. Resolves once
    /// the broker accepted the message: only then may the sender be acknowledged.
    fn publish(&self, channel: &str, payload: Bytes) -> BrokerFuture;

    /// Starts receiving `channel`. Takes effect in call order with `unsubscribe`; the future
    /// resolves once the subscription is active.
    fn subscribe(&self, channel: &str) -> BrokerFuture;

    /// Stops receiving `channel`, in call order with `subscribe`.
    fn unsubscribe(&self, channel: &str);

    /// Whether the broker is connected and can take requests now.
    fn is_ready(&self) -> bool;
}

pub type SharedBroker = Arc<dyn Broker>;
