//! Identifiers the node makes up itself: session ids, node ids, guest names, and the clock
//! that stamps messages.
//!
//! Clients never choose an id or an identity. Message ids are not made here: the broker
//! assigns them (an epoch and a per-room sequence, [`chat_protocol::MessageId`]), since only
//! it sees every message of a room.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An unguessable id for one WebSocket session.
pub(crate) fn session_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The name of a client that did not pick one.
pub(crate) fn guest_name() -> String {
    format!("guest-{:04}", rand::random_range(0..10_000u32))
}

/// The host name plus a short random suffix, so that several nodes on one host stay distinct.
pub(crate) fn default_node_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{:04x}", rand::random::<u16>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid() {
        assert!(chat_protocol::validate_name(&guest_name()).is_ok());
        assert!(!default_node_id().is_empty());
    }
}
