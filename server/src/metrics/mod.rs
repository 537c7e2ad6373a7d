//! Prometheus metrics of one node, served at `GET /metrics`.
//!
//! Every series is created once at start-up and its handle kept here, so the hot path pays one
//! atomic add per update and never a label lookup. Deliveries are counted once per fan-out
//! (`inc_by` the number of recipients), not once per recipient.
//!
//! This module holds the registry, the rendering and the node-wide series; each family of
//! series with a concern of its own has a module: [`limits`] (rate limits and refused
//! connections), [`frames`] (the frame budget), [`api`] (the HTTP API), [`chat`] (permissions,
//! typing, edits). Metrics depend on no
//! part of the node but the label enums it owns (such as [`crate::admission::Refusal`]): the
//! node's modules count into metrics, never the other way round. Modules whose series are
//! private to them register them here with [`Metrics::register`].

mod api;
mod chat;
mod frames;
mod limits;

use chat_protocol::ErrorCode;

use crate::per_label::PerLabel;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub(crate) use api::{ApiMetrics, CapRefusals};
pub use chat::ChatMetrics;
pub use frames::FrameMetrics;
pub use limits::LimitMetrics;

/// The node's registry and the handles of the series every node serves.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// WebSocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Rooms with at least one member on this node.
    pub rooms: IntGauge,
    /// Chat messages accepted from this node's clients and published.
    pub messages_in: IntCounter,
    /// Message frames queued to this node's clients.
    pub messages_out: IntCounter,
    /// Sealed messages received from the backplane.
    pub backplane_messages: IntCounter,
    /// Gaps in a room's message ids seen on the backplane (each starts a resync).
    pub backplane_gaps: IntCounter,
    /// Presence frames not queued because a member's queue was half full (a burst).
    pub presence_dropped: IntCounter,
    /// Coalesced `presence` frames built, one per room per interval with changes.
    pub presence_reports: IntCounter,
    /// Room rosters read from presence (a room's first local member, a reconnect).
    pub roster_loads: IntCounter,
    /// Rooms that fetched missed messages from history (after a gap or a reconnect).
    pub resyncs: IntCounter,
    /// Backplane payloads dropped because they did not open (tampered, foreign key, garbage).
    pub decrypt_failures: IntCounter,
    /// Times the connection to Redis was re-established after a loss.
    pub redis_reconnects: IntCounter,
    /// Times the sharded subscriptions were rebuilt because the Redis Cluster changed.
    pub redis_resubscribes: IntCounter,
    /// 1 while the broker is connected, else 0.
    pub broker_ready: IntGauge,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumer_closes: IntCounter,
    /// Time from handing a message to the broker to its acceptance.
    pub publish_duration: Histogram,
    /// Rate limits, flood closes and refused connections.
    pub limits: LimitMetrics,
    /// `joined` replies cut to fit, and frames that did not fit.
    pub frames: FrameMetrics,
    /// Refusals by permission rule, typing signals, edits and deletions.
    pub chat: ChatMetrics,
    errors: PerLabel<ErrorCode>,
    closes: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every node-wide series.
    pub fn new() -> Self {
        let registry = Registry::new();
        let errors = PerLabel::new(
            "chat_errors_total",
            "Error frames sent to clients, by code",
            "code",
            &ErrorCode::ALL,
            ErrorCode::as_str,
        );
        let closes = counter_vec(
            "chat_closes_total",
            "Connections closed by the server, by close code",
            &["code"],
        );
        let metrics = Metrics {
            connections: gauge("chat_connections", "Open WebSocket connections"),
            connections_total: counter(
                "chat_connections_total",
                "WebSocket connections accepted since start",
            ),
            rooms: gauge("chat_rooms", "Rooms with at least one member on this node"),
            messages_in: counter(
                "chat_messages_in_total",
                "Chat messages accepted from this node's clients and published",
            ),
            messages_out: counter(
                "chat_messages_out_total",
                "Message frames delivered to this node's clients",
            ),
            backplane_messages: counter(
                "chat_backplane_messages_total",
                "Sealed messages received from the backplane",
            ),
            backplane_gaps: counter(
                "chat_backplane_gaps_total",
                "Gaps in a room's message ids seen on the backplane",
            ),
            presence_dropped: counter(
                "chat_presence_dropped_total",
                "Presence frames dropped because a member's queue was half full",
            ),
            presence_reports: counter(
                "chat_presence_reports_total",
                "Coalesced presence frames built, one per changed room per interval",
            ),
            roster_loads: counter(
                "chat_roster_loads_total",
                "Room member lists read from presence",
            ),
            resyncs: counter(
                "chat_resyncs_total",
                "Rooms that fetched missed messages from history",
            ),
            decrypt_failures: counter(
                "chat_decrypt_failures_total",
                "Backplane payloads dropped because they failed to open",
            ),
            redis_reconnects: counter(
                "chat_redis_reconnects_total",
                "Times the Redis connection was re-established after a loss",
            ),
            redis_resubscribes: counter(
                "chat_redis_resubscribes_total",
                "Times the sharded subscriptions were rebuilt after the Redis Cluster changed",
            ),
            broker_ready: gauge("chat_broker_ready", "1 while the broker is connected"),
            slow_consumer_closes: counter(
                "chat_slow_consumer_closes_total",
                "Connections closed because their outbound queue overflowed",
            ),
            publish_duration: publish_duration(),
            limits: LimitMetrics::new(),
            frames: FrameMetrics::new(),
            chat: ChatMetrics::new(),
            errors,
            closes,
            registry,
        };
        metrics.register_all();
        metrics.limits.register(&metrics.registry);
        metrics.frames.register(&metrics.registry);
        metrics.chat.register(&metrics.registry);
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn Collector>; 19] = [
            Box::new(self.connections.clone()),
            Box::new(self.connections_total.clone()),
            Box::new(self.rooms.clone()),
            Box::new(self.messages_in.clone()),
            Box::new(self.messages_out.clone()),
            Box::new(self.backplane_messages.clone()),
            Box::new(self.backplane_gaps.clone()),
            Box::new(self.resyncs.clone()),
            Box::new(self.presence_dropped.clone()),
            Box::new(self.presence_reports.clone()),
            Box::new(self.roster_loads.clone()),
            Box::new(self.decrypt_failures.clone()),
            Box::new(self.redis_reconnects.clone()),
            Box::new(self.redis_resubscribes.clone()),
            Box::new(self.broker_ready.clone()),
            Box::new(self.slow_consumer_closes.clone()),
            Box::new(self.publish_duration.clone()),
            Box::new(self.errors.series()),
            Box::new(self.closes.clone()),
        ];
        register_all(&self.registry, collectors);
    }

    /// Counts an error frame sent to a client.
    pub fn error(&self, code: ErrorCode) {
        self.errors.inc(code);
    }

    /// Error frames sent so far, by code.
    pub fn errors_by_code(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        self.errors.counts()
    }

    /// Registers series that another module owns, so that they are served with these.
    pub fn register(&self, collector: impl Collector + 'static) {
        register_all(&self.registry, [Box::new(collector) as Box<dyn Collector>]);
    }

    /// Counts a connection the server closed with `code` (off the hot path: label lookup).
    pub fn close(&self, code: u16) {
        self.closes.with_label_values(&[&code.to_string()]).inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A counter of a static definition (one that cannot be invalid).
fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

/// A gauge of a static definition.
fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

/// A labelled counter of a static definition.
fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}

/// Registers series whose names are fixed in this crate, and so unique.
fn register_all(registry: &Registry, collectors: impl IntoIterator<Item = Box<dyn Collector>>) {
    for collector in collectors {
        registry
            .register(collector)
            .unwrap_or_else(|e| unreachable!("metric names are unique: {e}"));
    }
}

/// Publish latency, from the first bucket a local Redis reaches to a second.
fn publish_duration() -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "chat_publish_duration_seconds",
            "Time until the broker accepted a published message",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
    )
    .unwrap_or_else(|e| unreachable!("static metric definition: {e}"))
}
