//! Live counters: one set per client, summed every few seconds into the status line.
//!
//! Each client writes only its own counters, so the hot path never contends with other
//! clients. Latencies go into a few histogram shards instead of one per client: a histogram of
//! this range and precision takes ~180 KiB, which tens of thousands of clients cannot each
//! afford. The reporter reads everything once per interval, folds the shards into the run's
//! total and prints the interval's rates and percentiles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

use crate::payload::now_us;
use crate::view::{RoomView, Seen};

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
    /// `presence` frames received, and of those the ones that named who came and went.
    pub presence: AtomicU64,
    pub presence_named: AtomicU64,
    /// Whether the client is in its room and the last count it saw.
    pub view: RoomView,
    /// Asks the client to leave its room and come back (churn).
    pub churn: Notify,
    ever_joined: AtomicBool,
}

impl ClientStats {
    fn new() -> ClientStats {
        ClientStats {
            frames: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            presence: AtomicU64::new(0),
            presence_named: AtomicU64::new(0),
            view: RoomView::new(),
            churn: Notify::new(),
            ever_joined: AtomicBool::new(false),
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
    /// Clients in their room now.
    pub joined: usize,
    /// `presence` frames over the interval per second each client was joined in it.
    pub presence_per_client_per_sec: f64,
}

/// Membership of the clients in their rooms, and what joining cost.
struct Joins {
    /// Clients in their room now, and clients that ever got a `joined`.
    now: AtomicUsize,
    ever: AtomicUsize,
    /// From sending `join` to receiving `joined`, in µs: first joins and rejoins after a
    /// reconnect, and apart from them rejoins after a churn leave.
    latency: Mutex<Histogram<u64>>,
    churn_latency: Mutex<Histogram<u64>>,
    /// Churn leaves answered with `left`.
    leaves: AtomicU64,
    /// The most names one `joined` listed, and how many `joined` said `more_members`.
    names_max: AtomicUsize,
    cut: AtomicU64,
}

impl Default for Joins {
    fn default() -> Joins {
        Joins {
            now: AtomicUsize::new(0),
            ever: AtomicUsize::new(0),
            latency: Mutex::new(new_histogram()),
            churn_latency: Mutex::new(new_histogram()),
            leaves: AtomicU64::new(0),
            names_max: AtomicUsize::new(0),
            cut: AtomicU64::new(0),
        }
    }
}

/// What the run's joins came to.
pub(crate) struct JoinTotals {
    pub ever: usize,
    pub latency: Histogram<u64>,
    pub churn_latency: Histogram<u64>,
    pub churn_leaves: u64,
    pub names_max: usize,
    pub cut: u64,
}

/// What all clients share: the registry of their counters and the rare events.
pub(crate) struct Board {
    clients: Mutex<Vec<Arc<ClientStats>>>,
    connected: AtomicUsize,
    peak_connected: AtomicUsize,
    reconnects: AtomicU64,
    joins: Joins,
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
    pub presence: u64,
    pub presence_named: u64,
    /// Microseconds clients spent joined, summed.
    pub joined_us: u64,
}

impl Board {
    pub(crate) fn new() -> Board {
        Board {
            clients: Mutex::new(Vec::new()),
            connected: AtomicUsize::new(0),
            peak_connected: AtomicUsize::new(0),
            reconnects: AtomicU64::new(0),
            joins: Joins::default(),
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

    /// `client` entered its room: its `joined` arrived, listing `names` names and saying
    /// `more_members` when `more`.
    pub(crate) fn entered(&self, client: &ClientStats, names: usize, more: bool) {
        if client.view.set_joined(true, now_us(), true) {
            self.joins.now.fetch_add(1, Relaxed);
        }
        if !client.ever_joined.swap(true, Relaxed) {
            self.joins.ever.fetch_add(1, Relaxed);
        }
        self.joins.names_max.fetch_max(names, Relaxed);
        if more {
            self.joins.cut.fetch_add(1, Relaxed);
        }
    }

    /// `client` is out of its room: `left` arrived (`by_reply`) or its connection ended.
    pub(crate) fn exited(&self, client: &ClientStats, by_reply: bool) {
        if client.view.set_joined(false, now_us(), by_reply) {
            self.joins.now.fetch_sub(1, Relaxed);
        }
        if by_reply {
            self.joins.leaves.fetch_add(1, Relaxed);
        }
    }

    /// How long a join took to be answered; `churn` for a rejoin after a churn leave.
    pub(crate) fn record_join(&self, took: Duration, churn: bool) {
        let histogram = if churn {
            &self.joins.churn_latency
        } else {
            &self.joins.latency
        };
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        lock(histogram).saturating_record(micros.max(1));
    }

    /// Clients in their room now.
    pub(crate) fn joined_now(&self) -> usize {
        self.joins.now.load(Relaxed)
    }

    pub(crate) fn join_totals(&self) -> JoinTotals {
        JoinTotals {
            ever: self.joins.ever.load(Relaxed),
            latency: lock(&self.joins.latency).clone(),
            churn_latency: lock(&self.joins.churn_latency).clone(),
            churn_leaves: self.joins.leaves.load(Relaxed),
            names_max: self.joins.names_max.load(Relaxed),
            cut: self.joins.cut.load(Relaxed),
        }
    }

    /// Every client's counters, in the order the clients were added (client i first).
    pub(crate) fn clients(&self) -> Vec<Arc<ClientStats>> {
        lock(&self.clients).clone()
    }

    /// Every client's view of its room now, client i first, and the `presence` frames they
    /// received so far (all of them, and those that carried names).
    pub(crate) fn views(&self) -> (Vec<Seen>, u64, u64) {
        let now = now_us();
        let clients = lock(&self.clients);
        let views = clients.iter().map(|c| c.view.seen(now)).collect();
        let presence = clients.iter().map(|c| c.presence.load(Relaxed)).sum();
        let named = clients.iter().map(|c| c.presence_named.load(Relaxed)).sum();
        (views, presence, named)
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
        let now = now_us();
        for client in lock(&self.clients).iter() {
            totals.frames += client.frames.load(Relaxed);
            totals.messages += client.messages.load(Relaxed);
            totals.sent += client.sent.load(Relaxed);
            totals.duplicates += client.duplicates.load(Relaxed);
            totals.skipped += client.skipped.load(Relaxed);
            totals.presence += client.presence.load(Relaxed);
            totals.presence_named += client.presence_named.load(Relaxed);
            totals.joined_us += client.view.seen(now).joined_us;
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
            joined: self.joins.now.load(Relaxed),
            presence_per_client_per_sec: ratio(
                totals.presence.saturating_sub(previous.presence),
                totals.joined_us.saturating_sub(previous.joined_us) as f64 / 1e6,
            ),
        }
    }

    /// Everything counted so far, with the whole run's latency histogram.
    pub(crate) fn finish(&self) -> (Totals, Histogram<u64>) {
        let (totals, _) = self.collect();
        (totals, lock(&self.total_latency).clone())
    }
}

/// `count` per unit of `over`, 0 over nothing.
pub(crate) fn ratio(count: u64, over: f64) -> f64 {
    if over > 0.0 { count as f64 / over } else { 0.0 }
}

pub(crate) fn percentile_ms(histogram: &Histogram<u64>, percentile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_percentile(percentile) as f64 / 1000.0
}

/// The status line: the original tool's cumulative tuple first, so lines can be laid beside
/// its published ones, then this interval's rates and latency; for clients that only hold
/// (`idle`), how many are joined and the presence frames each gets instead.
pub(crate) fn status_line(row: &Row, idle: bool) -> String {
    let tuple = format!(
        "status: Status({}, {}, {})",
        row.received, row.sent, row.connected
    );
    if idle {
        return format!(
            "{tuple}  {} joined  {:.2} presence/client/s",
            row.joined, row.presence_per_client_per_sec
        );
    }
    format!(
        "{tuple}  {} deliveries/s  {} sends/s  p50 {:.2} ms  p99 {:.2} ms",
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
        assert!(status_line(&row, false).starts_with("status: Status(10, 3, 1)  4 deliveries/s"));

        a.messages.fetch_add(2, Relaxed);
        let row = board.row(6.0, Duration::from_secs(1));
        assert_eq!(row.deliveries_per_sec, 2.0);
        assert_eq!(row.p99_ms, 0.0, "no latencies in this interval");
        let (totals, latency) = board.finish();
        assert_eq!((totals.messages, latency.len()), (10, 2));
        assert_eq!(board.peak_connected(), 2);
    }

    #[test]
    fn joins_are_counted_once_per_client_and_leaves_by_reply() {
        let board = Board::new();
        let a = board.add_client();
        let b = board.add_client();
        board.entered(&a, 100, true);
        board.entered(&a, 3, false);
        board.entered(&b, 7, false);
        assert_eq!(board.joined_now(), 2);
        board.exited(&a, true);
        board.exited(&a, false);
        board.entered(&a, 0, false);
        board.exited(&b, false);
        board.record_join(Duration::from_millis(20), false);
        board.record_join(Duration::from_millis(30), true);
        let totals = board.join_totals();
        assert_eq!(board.joined_now(), 1);
        assert_eq!((totals.ever, totals.churn_leaves), (2, 1));
        assert_eq!((totals.names_max, totals.cut), (100, 1));
        assert_eq!((totals.latency.len(), totals.churn_latency.len()), (1, 1));
        let (views, _, _) = board.views();
        assert_eq!(
            views.iter().map(|v| v.joined).collect::<Vec<_>>(),
            [true, false]
        );
    }
}
