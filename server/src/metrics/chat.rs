//! Series of the chat features beside plain messages: requests refused as `forbidden` (by the
//! rule that refused them), typing signals sent and dropped, edits and deletions accepted.
//!
//! `forbidden` errors are also counted by code in `chat_errors_total`, like every error; the
//! series here says which rule refused them, which is what an operator looking at a spike
//! needs (a token issuer that forgot a claim, or someone knocking on others' direct messages).

use prometheus::{IntCounter, Registry};

use super::{counter, register_all};
use crate::access::Denial;
use crate::per_label::PerLabel;

/// Series of permissions, typing and edits.
pub struct ChatMetrics {
    /// Requests refused with `forbidden`, by rule.
    pub forbidden: PerLabel<Denial>,
    /// Typing signals this node's clients sent that were published.
    pub typing_sent: IntCounter,
    /// Typing signals dropped: over the one-per-2-s limit of their sender, or not offered to a
    /// member whose queue was half full.
    pub typing_dropped: IntCounter,
    /// Edits and deletions this node's clients made that the broker accepted.
    pub changes: IntCounter,
}

impl ChatMetrics {
    /// Creates the series, unregistered.
    pub fn new() -> Self {
        ChatMetrics {
            forbidden: PerLabel::new(
                "chat_forbidden_total",
                "Requests refused with forbidden, by the rule that refused them",
                "rule",
                &Denial::ALL,
                Denial::as_str,
            ),
            typing_sent: counter(
                "chat_typing_sent_total",
                "Typing signals from this node's clients that were published",
            ),
            typing_dropped: counter(
                "chat_typing_dropped_total",
                "Typing signals dropped: over their sender's one per room per 2 s, or not offered to a member whose queue was half full",
            ),
            changes: counter(
                "chat_changes_total",
                "Edits and deletions from this node's clients that the broker accepted",
            ),
        }
    }

    /// Serves these series with `registry`.
    pub(crate) fn register(&self, registry: &Registry) {
        register_all(
            registry,
            [
                Box::new(self.forbidden.series()) as Box<dyn prometheus::core::Collector>,
                Box::new(self.typing_sent.clone()),
                Box::new(self.typing_dropped.clone()),
                Box::new(self.changes.clone()),
            ],
        );
    }
}

impl Default for ChatMetrics {
    fn default() -> Self {
        Self::new()
    }
}
