//! Presence: who is in a room, across every node.
//!
//! Modelled on centrifuge's `PresenceManager`, next to the [`crate::broker::Broker`]: the Redis
//! and in-memory brokers implement both. A member is a connection in a room, keyed
//! `<node id>|<member id>` so that it is unique in the cluster and names its node. What is
//! stored is the member's *sealed* name: Redis never sees a name in clear.
//!
//! Adding or removing a member also announces it on the room's channel (see
//! [`crate::relay`]). Every node with members in a room keeps its own copy of the room's
//! members (a roster, see [`crate::rooms`]): read from here once when the room's first local
//! member joins, kept current from those announcements, and read again after a reconnect. So a
//! join costs the same in a room of 10 and of 50,000: nothing on the join path reads the whole
//! room. What members see of it is coalesced into at most one `presence` frame per room per
//! `--presence-interval-ms`.
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

/// Who is in which room, cluster-wide: implemented by both brokers next to [`Broker`].
///
/// [`Broker`]: crate::broker::Broker
pub trait Presence: Send + Sync + 'static {
    /// Records `member` as present in `channel` under `sealed_name` and announces the join.
    /// In call order with `remove` and with the broker's publishes.
    fn add(&self, channel: &str, member: &str, sealed_name: Bytes) -> BrokerFuture;

    /// Removes `member` from `channel` and announces the departure, in call order with `add`.
    fn remove(&self, channel: &str, member: &str);

    /// Every member of `channel` on a live node, with its sealed name: a roster's snapshot.
    fn members(&self, channel: &str) -> BrokerFuture<Vec<PresenceEntry>>;

    /// The node is shutting down: its remaining members are swept by the other nodes at once
    /// rather than after the timeout.
    fn retire(&self) -> BrokerFuture;
}

pub(crate) type SharedPresence = Arc<dyn Presence>;

/// One member as presence stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The member's key, `<node id>|<member id>`.
    pub member: String,
    /// The member's name, sealed for the room's presence (see [`name_aad`]).
    pub sealed_name: Vec<u8>,
}

/// Most names a `joined` or a `members` page may carry; a page is also cut to 32 KiB.
const MAX_MEMBERS_MAX: usize = 1_000;
/// The defaults of the three flags, shared by the command line and [`PresenceConfig::default`].
const DEFAULT_MEMBERS_MAX: u64 = 100;
const DEFAULT_PRESENCE_INTERVAL_MS: u64 = 250;
const DEFAULT_PRESENCE_NAMES_MAX: usize = 1_000;
/// Bounds of `--presence-interval-ms`: under 10 ms coalescing no longer coalesces; over a
/// minute, presence is no longer presence.
const PRESENCE_INTERVAL_MS: std::ops::RangeInclusive<u64> = 10..=60_000;

/// How members learn who is in a room: page sizes and how presence is coalesced.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceConfig {
    /// Most member names in `joined` and in one `members` page (1 to 1000); the count is
    /// always exact, and clients page through the rest with `members`.
    #[arg(long, env = "CHAT_MEMBERS_MAX", default_value_t = DEFAULT_MEMBERS_MAX,
          value_parser = clap::value_parser!(u64).range(1..=MAX_MEMBERS_MAX as u64))]
    pub members_max: u64,

    /// A member gets at most one `presence` frame per room this often (10 to 60000 ms), with
    /// the names that came and went since the previous one and the current count.
    #[arg(long, env = "CHAT_PRESENCE_INTERVAL_MS", default_value_t = DEFAULT_PRESENCE_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(PRESENCE_INTERVAL_MS))]
    pub presence_interval_ms: u64,

    /// Above this many people in a room, `presence` frames carry only the count, not the
    /// names that came and went (0: never names).
    #[arg(long, env = "CHAT_PRESENCE_NAMES_MAX", default_value_t = DEFAULT_PRESENCE_NAMES_MAX)]
    pub presence_names_max: usize,
}

impl PresenceConfig {
    /// How often each room's changes are sent.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.presence_interval_ms)
    }

    /// Most names per page.
    pub fn page_size(&self) -> usize {
        // Bounded by MAX_MEMBERS_MAX when parsed.
        usize::try_from(self.members_max).unwrap_or(MAX_MEMBERS_MAX)
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            members_max: DEFAULT_MEMBERS_MAX,
            presence_interval_ms: DEFAULT_PRESENCE_INTERVAL_MS,
            presence_names_max: DEFAULT_PRESENCE_NAMES_MAX,
        }
    }
}

/// The associated data that binds a sealed name to its room's presence, so that a name can
/// be neither moved to another room nor passed off as a message body.
pub fn name_aad(channel: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(channel.len() + 9);
    aad.extend_from_slice(channel.as_bytes());
    aad.extend_from_slice(b"#presence");
    aad
}
