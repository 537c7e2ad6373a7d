//! Live counters: one set per client, summed every few seconds into the status line.
//!
//! Each client writes only its own counters, so the hot path never contends with other
//! clients. Latencies go into a few histogram shards instead of one per client: a histogram of
//! this range and precision takes ~180 KiB, which tens of thousands of clients cannot each
//! afford. The reporter reads everything once per interval, folds the shards into the run's
//! total and prints the interval's rates and percentiles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to an hour, to three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("the bounds are valid"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay meaningful even if a client task panicked while holding one.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One client's counters.
pub(crate) struct ClientStats {
    /// Every frame received.
    pub frames: AtomicU64,
    /// `message` frames received (deliveries).
    pub messages: AtomicU64,
    pub sent: AtomicU64,
    pub duplicates: AtomicU64,
    /// Scheduled sends skipped: the window was full or the node had asked the client to wait.
    pub skipped: AtomicU64,
}

impl ClientStats {
    fn new() -> ClientStats {
        ClientStats {
            frames: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

/// Latency histogram shards; more than worker threads, so two clients rarely meet on one.
const LATENCY_SHARDS: usize = 16;

/// One line of the per-interval series.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// Seconds since the run started.
    pub t_secs: f64,
    /// Cumulative: every frame received, messages sent, clients connected now.
    pub received: u64,
    pub sent: u64,
    pub connected: usize,
    /// Rates over the interval.
    pub deliveries_per_sec: f64,
    pub sends_per_sec: f64,
    /// Sender-to-recipient latency percentiles over the interval, in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What all clients share: the registry of their counters and the rare events.
pub(crate) struct Board {
    clients: Mutex<Vec<Arc<ClientStats>>>,
    connected: AtomicUsize,
    peak_connected: AtomicUsize,
    reconnects: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Latencies since the last report; client i records into shard i mod LATENCY_SHARDS.
    latency: Vec<Mutex<Histogram<u64>>>,
    /// The run's latencies, folded in from the clients at each report.
    total_latency: Mutex<Histogram<u64>>,
    last: Mutex<Totals>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub frames: u64,
    pub messages: u64,
    pub sent: u64,
    pub duplicates: u64,
    pub skipped: u64,
}

impl Board {
    pub(crate) fn new() -> Board {
        Board {
            clients: Mutex::new(Vec::new()),
            connected: AtomicUsize::new(0),
            peak_connected: AtomicUsize::new(0),
            reconnects: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            latency: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            total_latency: Mutex::new(new_histogram()),
            last: Mutex::new(Totals::default()),
        }
    }

    /// Records one delivery's latency, for client `client`.
    pub(crate) fn record_latency(&self, client: usize, micros: u64) {
        lock(&self.latency[client % LATENCY_SHARDS]).saturating_record(micros.max(1));
    }

    /// Registers a new client's counters.
    pub(crate) fn add_client(&self) -> Arc<ClientStats> {
        let stats = Arc::new(ClientStats::new());
        lock(&self.clients).push(Arc::clone(&stats));
        stats
    }

    /// `message` frames received so far, by all clients.
    pub(crate) fn deliveries(&self) -> u64 {
        lock(&self.clients)
            .iter()
            .map(|client| client.messages.load(Relaxed))
            .sum()
    }

    pub(crate) fn clients_started(&self) -> usize {
        lock(&self.clients).len()
    }

    pub(crate) fn connected(&self) {
        let now = self.connected.fetch_add(1, Relaxed) + 1;
        self.peak_connected.fetch_max(now, Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        self.connected.fetch_sub(1, Relaxed);
    }

    pub(crate) fn peak_connected(&self) -> usize {
        self.peak_connected.load(Relaxed)
    }

    pub(crate) fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Relaxed)
    }

    /// A connection that failed or ended early, by cause.
    pub(crate) fn failure(&self, cause: String) {
        *lock(&self.failures).entry(cause).or_default() += 1;
    }

    /// An `error` frame, by code.
    pub(crate) fn error(&self, code: &str) {
        *lock(&self.errors).entry(code.to_owned()).or_default() += 1;
    }

    pub(crate) fn failures(&self) -> BTreeMap<String, u64> {
        lock(&self.failures).clone()
    }

    pub(crate) fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    /// Sums every client's counters and folds their latencies into the run's histogram;
    /// returns the totals and the latencies recorded since the previous call.
    fn collect(&self) -> (Totals, Histogram<u64>) {
        let mut totals = Totals::default();
        let mut interval = new_histogram();
        for client in lock(&self.clients).iter() {
            totals.frames += client.frames.load(Relaxed);
            totals.messages += client.messages.load(Relaxed);
            totals.sent += client.sent.load(Relaxed);
            totals.duplicates += client.duplicates.load(Relaxed);
            totals.skipped += client.skipped.load(Relaxed);
        }
        for shard in &self.latency {
            let mut latency = lock(shard);
            // Same bounds everywhere, so adding cannot fail.
            let _ = interval.add(&*latency);
            latency.reset();
        }
        let _ = lock(&self.total_latency).add(&interval);
        (totals, interval)
    }

    /// One status interval of `elapsed` ending `t_secs` after the start.
    pub(crate) fn row(&self, t_secs: f64, elapsed: Duration) -> Row {
        let (totals, interval) = self.collect();
        let previous = std::mem::replace(&mut *lock(&self.last), totals);
        let per_sec = |now: u64, before: u64| {
            now.saturating_sub(before) as f64 / elapsed.as_secs_f64().max(1e-9)
        };
        Row {
            t_secs,
            received: totals.frames,
            sent: totals.sent,
            connected: self.connected.load(Relaxed),
            deliveries_per_sec: per_sec(totals.messages, previous.messages),
            sends_per_sec: per_sec(totals.sent, previous.sent),
            p50_ms: percentile_ms(&interval, 50.0),
            p99_ms: percentile_ms(&interval, 99.0),
        }
    }

    /// Everything counted so far, with the whole run's latency histogram.
    pub(crate) fn finish(&self) -> (Totals, Histogram<u64>) {
        let (totals, _) = self.collect();
        (totals, lock(&self.total_latency).clone())
    }
}

pub(crate) fn percentile_ms(histogram: &Histogram<u64>, percentile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_percentile(percentile) as f64 / 1000.0
}

/// The status line: the original tool's cumulative tuple first, so lines can be laid beside
/// its published ones, then this interval's rates and latency.
pub(crate) fn status_line(row: &Row) -> String {
    format!(
        "status: Status({}, {}, {})  {} deliveries/s  {} sends/s  p50 {:.2} ms  p99 {:.2} ms",
        row.received,
        row.sent,
        row.connected,
        human(row.deliveries_per_sec),
        human(row.sends_per_sec),
        row.p50_ms,
        row.p99_ms,
    )
}

/// 1234567.0 → "1.23M".
pub(crate) fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_report_interval_rates_and_cumulative_counts() {
        let board = Board::new();
        let a = board.add_client();
        let b = board.add_client();
        board.connected();
        board.connected();
        board.disconnected();
        a.frames.fetch_add(10, Relaxed);
        a.messages.fetch_add(8, Relaxed);
        b.sent.fetch_add(3, Relaxed);
        board.record_latency(0, 2_000);
        board.record_latency(1, 4_000);
        let row = board.row(3.0, Duration::from_secs(2));
        assert_eq!((row.received, row.sent, row.connected), (10, 3, 1));
        assert_eq!(row.deliveries_per_sec, 4.0);
        assert!((row.p50_ms - 2.0).abs() < 0.01, "{}", row.p50_ms);
        assert!(status_line(&row).starts_with("status: Status(10, 3, 1)  4 deliveries/s"));

        a.messages.fetch_add(2, Relaxed);
        let row = board.row(6.0, Duration::from_secs(1));
        assert_eq!(row.deliveries_per_sec, 2.0);
        assert_eq!(row.p99_ms, 0.0, "no latencies in this interval");
        let (totals, latency) = board.finish();
        assert_eq!((totals.messages, latency.len()), (10, 2));
        assert_eq!(board.peak_connected(), 2);
    }
}
