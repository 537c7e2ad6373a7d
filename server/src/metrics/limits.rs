//! Metrics of the abuse limits: rate limiting, flood closes and connections refused, with every
//! labelled series resolved once so that counting costs one atomic add.
//!
//! Refused connections are counted in admission's [`RefusalCounts`]: admission owns what a
//! refusal is and counts it without knowing this module, which only serves the series.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::{counter, counter_vec, register_all};
use crate::admission::{Refusal, RefusalCounts};

/// The series of the abuse limits.
pub struct LimitMetrics {
    /// Sends refused by the per-connection rate.
    pub rate_limited_connection: IntCounter,
    /// Sends refused by the per-name rate (this node's checks, either backend).
    pub rate_limited_name: IntCounter,
    /// Joins and leaves refused by the per-connection budget for them.
    pub rate_limited_join: IntCounter,
    /// Per-name checks decided on this node because Redis could not be asked.
    pub rate_limit_fallbacks: IntCounter,
    /// Connections closed with 1008 for sending on while rate-limited.
    pub flood_closes: IntCounter,
    /// Connections closed for answering no ping within the idle timeout.
    pub idle_closes: IntCounter,
    /// Connections closed because a write to them made no progress for the write timeout.
    pub write_timeouts: IntCounter,
    /// Connections refused before they became chat sessions, by cause.
    pub refusals: RefusalCounts,
    rate_limited_vec: IntCounterVec,
}

impl LimitMetrics {
    /// Creates the series, unregistered.
    pub fn new() -> Self {
        let rate_limited_vec = counter_vec(
            "chat_rate_limited_total",
            "Requests refused with rate_limited, by the limit that refused them",
            &["scope"],
        );
        LimitMetrics {
            rate_limited_connection: rate_limited_vec.with_label_values(&["connection"]),
            rate_limited_name: rate_limited_vec.with_label_values(&["name"]),
            rate_limited_join: rate_limited_vec.with_label_values(&["join"]),
            rate_limit_fallbacks: counter(
                "chat_rate_limit_fallbacks_total",
                "Per-name rate checks decided on this node because Redis could not be asked",
            ),
            flood_closes: counter(
                "chat_flood_closes_total",
                "Connections closed for sending on while rate-limited",
            ),
            idle_closes: counter(
                "chat_idle_closes_total",
                "Connections closed because they answered no ping within the idle timeout",
            ),
            write_timeouts: counter(
                "chat_write_timeouts_total",
                "Connections closed (4001) because a write to them made no progress in time",
            ),
            refusals: RefusalCounts::connections_refused(),
            rate_limited_vec,
        }
    }

    /// Counts a refused connection.
    pub fn refused(&self, cause: Refusal) {
        self.refusals.inc(cause);
    }

    /// Serves these series with `registry`.
    pub(crate) fn register(&self, registry: &Registry) {
        register_all(
            registry,
            [
                Box::new(self.rate_limited_vec.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(self.refusals.series()),
                Box::new(self.rate_limit_fallbacks.clone()),
                Box::new(self.flood_closes.clone()),
                Box::new(self.idle_closes.clone()),
                Box::new(self.write_timeouts.clone()),
            ],
        );
    }
}

impl Default for LimitMetrics {
    fn default() -> Self {
        Self::new()
    }
}
