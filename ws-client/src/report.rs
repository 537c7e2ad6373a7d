//! The end of a run: the summary printed for people, and the same figures with the
//! per-interval series as JSON or CSV for scripts and spreadsheets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::Mode;
use crate::room_report::RoomSummary;
use crate::stats::{Row, human, percentile_ms};

/// Sender-to-recipient latency over the whole run, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub samples: u64,
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
        let empty = histogram.is_empty();
        Latency {
            samples: histogram.len(),
            avg: if empty {
                0.0
            } else {
                histogram.mean() / 1000.0
            },
            p50: percentile_ms(histogram, 50.0),
            p90: percentile_ms(histogram, 90.0),
            p99: percentile_ms(histogram, 99.0),
            p999: percentile_ms(histogram, 99.9),
            max: if empty {
                0.0
            } else {
                histogram.max() as f64 / 1000.0
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub mode: &'static str,
    pub urls: Vec<String>,
    pub rooms: usize,
    pub message_size: usize,
    /// Seconds of sending (the drain comes after).
    pub duration_secs: f64,
    pub drain_secs: f64,
    /// False when the drain hit `--drain-secs` with deliveries still arriving: some of the
    /// missing may only be late.
    pub drain_complete: bool,
    pub open_file_limit: u64,
    pub clients_started: usize,
    pub peak_connected: usize,
    /// Clients joined when sending stopped and still joined after the drain: the members the
    /// count covers.
    pub joined_at_end: usize,
    pub sent: u64,
    pub acked: u64,
    /// Answered with an error: not published.
    pub refused: u64,
    /// Never answered (connection lost or run over): not counted either way.
    pub unanswered: u64,
    /// Scheduled sends skipped because the window of unacknowledged sends was full or the node
    /// had answered `rate_limited` and asked the client to wait.
    pub skipped_sends: u64,
    /// Deliveries owed: acknowledged messages sent after a member joined, for every member.
    pub expected: u64,
    /// Owed deliveries that arrived.
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    /// Every frame clients received.
    pub frames_received: u64,
    /// Every `message` frame clients received.
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub sends_per_sec: f64,
    pub peak_deliveries_per_sec: f64,
    pub latency_ms: Latency,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Connections that failed or ended before the run did, by cause.
    pub connection_failures: BTreeMap<String, u64>,
    pub reconnects: u64,
    /// Joins, presence and the counts clients saw of their rooms.
    pub membership: RoomSummary,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub summary: Summary,
    pub series: Vec<Row>,
}

impl Summary {
    /// Whether the run proved anything went wrong: something missing or duplicated, or nothing
    /// to check at all.
    /// Whether the run proved anything went wrong; what it proved right otherwise.
    pub(crate) fn verdict(&self) -> Result<&'static str, String> {
        // Idle clients send nothing: what is checked is that they all joined and agree.
        if self.mode == Mode::Idle.name() {
            return self
                .membership
                .verdict(self.clients_started)
                .map(|()| "every client in its room, every room's clients agree on its count");
        }
        if self.missing > 0 || self.duplicates > 0 {
            let late = if self.drain_complete {
                ""
            } else {
                " (the drain ended with deliveries still arriving: some missing may be late)"
            };
            return Err(format!(
                "{} missing and {} duplicate deliveries{late}",
                self.missing, self.duplicates
            ));
        }
        if self.expected == 0 {
            return Err("no delivery was owed to a joined client: nothing was checked".to_owned());
        }
        Ok("nothing missing, no duplicates")
    }

    /// The human summary.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_ms;
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "summary: {} mode, {:.1} s of sending + {:.1} s drain, {} room(s), {}-byte messages",
            self.mode, self.duration_secs, self.drain_secs, self.rooms, self.message_size
        );
        let _ = writeln!(
            out,
            "  clients      {} started, {} connected at peak, {} joined at the end, {} reconnects (open-file limit {})",
            self.clients_started,
            self.peak_connected,
            self.joined_at_end,
            self.reconnects,
            self.open_file_limit
        );
        let _ = writeln!(
            out,
            "  sent         {} ({} acked, {} refused, {} unanswered, {} skipped: window full or asked to wait)",
            self.sent, self.acked, self.refused, self.unanswered, self.skipped_sends
        );
        let _ = writeln!(
            out,
            "  deliveries   {} expected, {} delivered, {} missing, {} duplicates",
            self.expected, self.delivered, self.missing, self.duplicates
        );
        let _ = writeln!(
            out,
            "  received     {} frames, {} messages",
            self.frames_received, self.deliveries
        );
        let _ = writeln!(
            out,
            "  throughput   {} deliveries/s (peak interval {}), {} sends/s",
            human(self.deliveries_per_sec),
            human(self.peak_deliveries_per_sec),
            human(self.sends_per_sec)
        );
        let _ = writeln!(
            out,
            "  latency ms   avg {:.2}  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  ({} samples)",
            l.avg, l.p50, l.p90, l.p99, l.p999, l.max, l.samples
        );
        self.membership.render(&mut out);
        for (title, map) in [
            ("errors", &self.errors),
            ("conn. failures", &self.connection_failures),
        ] {
            if map.is_empty() {
                let _ = writeln!(out, "  {title:<12} none");
            } else {
                let _ = writeln!(out, "  {title}:");
                for (what, count) in map {
                    let _ = writeln!(out, "    {count:>8}  {what}");
                }
            }
        }
        out
    }
}

impl Report {
    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// One row per status interval, then a `total` row for the whole run.
    pub(crate) fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.csv()).with_context(|| format!("writing {}", path.display()))
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "row,t_secs,received,sent,connected,deliveries_per_sec,sends_per_sec,p50_ms,p99_ms,expected,missing,duplicates,joined,presence_per_client_per_sec\n",
        );
        for row in &self.series {
            let _ = writeln!(
                out,
                "interval,{:.3},{},{},{},{:.1},{:.1},{:.3},{:.3},,,,{},{:.3}",
                row.t_secs,
                row.received,
                row.sent,
                row.connected,
                row.deliveries_per_sec,
                row.sends_per_sec,
                row.p50_ms,
                row.p99_ms,
                row.joined,
                row.presence_per_client_per_sec
            );
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "total,{:.3},{},{},{},{:.1},{:.1},{:.3},{:.3},{},{},{},{},{:.3}",
            s.duration_secs,
            s.frames_received,
            s.sent,
            s.peak_connected,
            s.deliveries_per_sec,
            s.sends_per_sec,
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.expected,
            s.missing,
            s.duplicates,
            s.membership.joined_at_end,
            s.membership.presence_per_client_per_sec
        );
        out
    }
}
