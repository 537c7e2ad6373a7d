//! Counts of backplane payloads a node refused to trust, by reason.
//!
//! Anyone who can write to Redis can publish on a room's channel. Payloads that do not open
//! are counted in `chat_decrypt_failures_total`; this series counts those dropped for what
//! surrounds the seal: their size, or an id that history does not vouch for. A steady rise
//! is worth an alert: either nodes disagree on `--max-text-bytes`, or something other than a
//! node writes to Redis.

use crate::metrics::Metrics;
use crate::per_label::PerLabel;

/// Why a payload from the backplane was dropped without being delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than any payload a node can build: dropped before it was opened.
    Oversize,
    /// Held while the room waited for history, and did not continue from what history held.
    Unconfirmed,
    /// Held beyond the room's budget of held messages; history fills it in.
    HeldBudget,
}

impl DropReason {
    const ALL: [DropReason; 3] = [
        DropReason::Oversize,
        DropReason::Unconfirmed,
        DropReason::HeldBudget,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::Unconfirmed => "unconfirmed_id",
            DropReason::HeldBudget => "held_budget",
        }
    }
}

/// `chat_backplane_dropped_total{reason}`.
pub type Drops = PerLabel<DropReason>;

impl Drops {
    /// Creates the series and serves it with `metrics`.
    pub fn backplane_dropped(metrics: &Metrics) -> Self {
        let drops = PerLabel::new(
            "chat_backplane_dropped_total",
            "Backplane payloads dropped unopened or undelivered, by reason",
            "reason",
            &DropReason::ALL,
            DropReason::label,
        );
        metrics.register(drops.series());
        drops
    }
}
