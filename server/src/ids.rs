//! Identifiers the server stamps: message ids, session ids, node ids and guest names.
//!
//! Clients never choose an id or an identity. Message ids must be unique across the cluster
//! without coordination, and cheap: a random per-process tag plus an atomic counter, prefixed
//! with the time so that ids sort roughly by age when read in logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct MessageIds {
    node_tag: u32,
    sequence: AtomicU64,
}

impl MessageIds {
    pub fn new() -> Self {
        MessageIds {
            node_tag: rand::random(),
            sequence: AtomicU64::new(0),
        }
    }

    /// A cluster-unique id for a message published at `ts` (unix ms).
    pub fn next(&self, ts: u64) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{ts:012x}{:08x}{sequence:08x}", self.node_tag)
    }
}

impl Default for MessageIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An unguessable id for one WebSocket session.
pub fn session_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The name of a client that did not pick one.
pub fn guest_name() -> String {
    format!("guest-{:04}", rand::random_range(0..10_000u32))
}

/// The host name plus a short random suffix, so that several nodes on one host stay distinct.
pub fn default_node_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{:04x}", rand::random::<u16>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_and_sortable_by_time() {
        let ids = MessageIds::new();
        let a = ids.next(1_000);
        let b = ids.next(1_000);
        let c = ids.next(2_000);
        assert_ne!(a, b);
        assert!(b < c);
        assert_eq!(a.len(), 28);
    }

    #[test]
    fn generated_names_are_valid() {
        assert!(chat_protocol::validate_name(&guest_name()).is_ok());
        assert!(!default_node_id().is_empty());
    }
}
