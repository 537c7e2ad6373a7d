//! Series of the HTTP API: requests by endpoint and status, messages by result, and requests
//! refused by a cap. They are served only by a node whose API is on, so they are made when the
//! API is ([`ApiMetrics::new`]), not with the node-wide series.

use prometheus::{IntCounter, IntCounterVec};

use super::{Metrics, counter_vec};

/// The API's series, registered with the node's other metrics.
pub(crate) struct ApiMetrics {
    /// Requests by endpoint and HTTP status (a label lookup per request, off the hot path).
    pub(crate) requests: IntCounterVec,
    /// Messages published through the API.
    pub(crate) accepted: IntCounter,
    /// Messages the API refused (invalid, or the broker did not take them).
    pub(crate) failed: IntCounter,
    /// Requests refused by a cap.
    pub(crate) refused: CapRefusals,
}

/// `chat_api_refused_total{cause}`, one handle per cap.
#[derive(Clone)]
pub(crate) struct CapRefusals {
    /// `--api-max-concurrent` was reached.
    pub(crate) concurrency: IntCounter,
    /// `--api-max-in-flight` was reached.
    pub(crate) in_flight: IntCounter,
    /// The request outlived `--api-request-timeout-secs`.
    pub(crate) deadline: IntCounter,
}

impl ApiMetrics {
    /// Creates the series and serves them with `metrics`.
    pub(crate) fn new(metrics: &Metrics) -> Self {
        let requests = counter_vec(
            "chat_api_requests_total",
            "HTTP API requests, by endpoint and status",
            &["endpoint", "status"],
        );
        let messages = counter_vec(
            "chat_api_messages_total",
            "Messages received through the HTTP API, by result",
            &["result"],
        );
        let refused = counter_vec(
            "chat_api_refused_total",
            "HTTP API requests refused by a cap, by cause (concurrency, in_flight, deadline)",
            &["cause"],
        );
        let api_metrics = ApiMetrics {
            requests: requests.clone(),
            accepted: messages.with_label_values(&["accepted"]),
            failed: messages.with_label_values(&["failed"]),
            refused: CapRefusals {
                concurrency: refused.with_label_values(&["concurrency"]),
                in_flight: refused.with_label_values(&["in_flight"]),
                deadline: refused.with_label_values(&["deadline"]),
            },
        };
        metrics.register(requests);
        metrics.register(messages);
        metrics.register(refused);
        api_metrics
    }
}
