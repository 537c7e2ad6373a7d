//! Counts of backplane payloads a node refused to trust, by reason.
//!
//! Anyone who can write to Redis can publish on a room's channel. Payloads that do not open
//! are counted in `chat_decrypt_failures_total`; this series counts those dropped for what
//! surrounds the seal: their size, or an id that history does not vouch for. A steady rise
//! is worth an alert: either nodes disagree on `--max-text-bytes`, or something other than a
//! node writes to Redis.

use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::metrics::Metrics;

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

/// `chat_backplane_dropped_total{reason}`, one handle per reason so counting is one atomic add.
pub struct Drops {
    counters: Vec<(DropReason, IntCounter)>,
}

impl Drops {
    /// Creates the series and serves it with `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let series = IntCounterVec::new(
            Opts::new(
                "chat_backplane_dropped_total",
                "Backplane payloads dropped unopened or undelivered, by reason",
            ),
            &["reason"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let counters = DropReason::ALL
            .iter()
            .map(|reason| (*reason, series.with_label_values(&[reason.label()])))
            .collect();
        metrics.register(series);
        Drops { counters }
    }

    /// Adds `dropped` payloads to `reason`'s counter.
    pub fn count(&self, reason: DropReason, dropped: u64) {
        if let Some((_, counter)) = self.counters.iter().find(|(r, _)| *r == reason) {
            counter.inc_by(dropped);
        }
    }

    /// Payloads dropped for `reason` since the node started.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counters
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, counter)| counter.get())
    }
}
