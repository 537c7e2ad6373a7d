//! Series about frame sizes: `joined` replies cut to the frame budget, and frames that did not
//! fit at all ([`crate::frame_budget`]). Both should stay near zero; a rise means the budget's
//! shares no longer suit the rooms this node serves.

use prometheus::{IntCounter, Registry};

use super::{counter, register_all};

/// Series about frame sizes.
pub struct FrameMetrics {
    /// `joined` replies that left out history or members to fit the budget.
    pub joined_trimmed: IntCounter,
    /// Connections closed with 1011 because a frame did not fit the write buffer.
    pub oversize_closes: IntCounter,
}

impl FrameMetrics {
    /// Creates the series, unregistered.
    pub fn new() -> Self {
        FrameMetrics {
            joined_trimmed: counter(
                "chat_joined_trimmed_total",
                "Joined replies that left out the oldest history or some members to fit the frame budget",
            ),
            oversize_closes: counter(
                "chat_oversize_frame_closes_total",
                "Connections closed with 1011 because a frame did not fit the write buffer",
            ),
        }
    }

    /// Serves these series with `registry`.
    pub(crate) fn register(&self, registry: &Registry) {
        register_all(
            registry,
            [&self.joined_trimmed, &self.oversize_closes]
                .map(|series| Box::new(series.clone()) as Box<dyn prometheus::core::Collector>),
        );
    }
}

impl Default for FrameMetrics {
    fn default() -> Self {
        Self::new()
    }
}
