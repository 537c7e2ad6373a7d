//! The limits one connection lives under, all set by the node's flags. They sit apart from the
//! request loop so the node can build them without reaching into a session.

use std::time::Duration;

use crate::access::Policy;
use crate::flood::FloodPolicy;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub(crate) struct SessionLimits {
    /// Largest chat text, in bytes.
    pub max_text_bytes: usize,
    /// Capacity of the outbound queue, in frames; overflowing it closes the connection.
    pub outbound_queue: usize,
    /// Requests awaiting their reply before the task stops reading.
    pub max_in_flight: usize,
    /// How long in-flight publishes may take to finish when the node shuts down.
    pub drain_timeout: Duration,
    /// Rooms the connection may be in at once.
    pub max_rooms: usize,
    /// Silence after which the client is pinged (at half) and closed (at the end).
    pub idle_timeout: Option<Duration>,
    /// How long a write may make no progress before the connection is closed with 4001.
    pub write_timeout: Duration,
    /// Rate limits, debounce and join budget for the connection's requests.
    pub flood: FloodPolicy,
    /// Which rooms are private, for the join and publish checks.
    pub access: Policy,
}
