//! What the clients saw of their rooms, for the summary: how many joined and how long joining
//! took, the `presence` frames each received per second, whether they agree on their room's
//! count at the end, and what the churn did.
//!
//! These are idle mode's results (its verdict rests on them), and informative in every other
//! mode. The snapshot behind them is taken when the run's sending time ends, before any client
//! closes: closing clients would change the counts being checked.

use std::fmt::Write as _;

use serde::Serialize;

use crate::churn::ChurnRun;
use crate::config::Churn;
use crate::report::Latency;
use crate::stats::{JoinTotals, Row, ratio};
use crate::view::{Agreement, Seen};

/// Joins, presence and counts, over the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RoomSummary {
    /// Clients that got a `joined` at least once, and those in their room when the run ended.
    pub clients_joined: usize,
    pub joined_at_end: usize,
    /// From sending `join` to receiving `joined`, first joins and rejoins after a reconnect.
    pub join_latency_ms: Latency,
    /// The most names one `joined` listed, and how many `joined` said `more_members`.
    pub joined_names_max: usize,
    pub joined_cut: u64,
    /// `presence` frames received, and of those the ones that carried names.
    pub presence_frames: u64,
    pub presence_frames_named: u64,
    /// `presence` frames per second that a client was joined: over the run, and over the
    /// busiest status interval.
    pub presence_per_client_per_sec: f64,
    pub peak_presence_per_client_per_sec: f64,
    pub counts: Agreement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnSummary>,
}

/// The churn asked for and what it did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChurnSummary {
    pub percent: f64,
    pub per_sec: usize,
    pub secs: f64,
    #[serde(flatten)]
    pub run: ChurnRun,
    /// Churn leaves answered with `left`.
    pub leaves: u64,
    /// From sending `join` to receiving `joined`, for rejoins after a churn leave.
    pub rejoin_latency_ms: Latency,
}

impl RoomSummary {
    /// Puts the snapshot together: `views` holds every client's view (client i first, in room
    /// i mod `rooms`) with the `presence` frames received by then.
    pub(crate) fn of(
        rooms: usize,
        (views, presence, named): (Vec<Seen>, u64, u64),
        joins: &JoinTotals,
        series: &[Row],
        churn: Option<(Churn, ChurnRun)>,
    ) -> RoomSummary {
        let joined_secs = views.iter().map(|v| v.joined_us).sum::<u64>() as f64 / 1e6;
        let counts = Agreement::of(
            rooms,
            views
                .iter()
                .enumerate()
                .map(|(i, seen)| (i % rooms.max(1), *seen)),
        );
        RoomSummary {
            clients_joined: joins.ever,
            joined_at_end: counts.joined,
            join_latency_ms: Latency::of(&joins.latency),
            joined_names_max: joins.names_max,
            joined_cut: joins.cut,
            presence_frames: presence,
            presence_frames_named: named,
            presence_per_client_per_sec: ratio(presence, joined_secs),
            peak_presence_per_client_per_sec: series
                .iter()
                .map(|row| row.presence_per_client_per_sec)
                .fold(0.0, f64::max),
            counts,
            churn: churn.map(|(asked, run)| ChurnSummary {
                percent: asked.percent,
                per_sec: asked.per_sec,
                secs: asked.secs.as_secs_f64(),
                run,
                leaves: joins.churn_leaves,
                rejoin_latency_ms: Latency::of(&joins.churn_latency),
            }),
        }
    }

    /// Idle mode's verdict: every client started is in its room at the end, each room's
    /// clients agree on its count, and the churn asked for ran to its end.
    pub(crate) fn verdict(&self, clients_started: usize) -> Result<(), String> {
        if self.joined_at_end < clients_started {
            return Err(format!(
                "only {} of {clients_started} clients were in their room at the end",
                self.joined_at_end
            ));
        }
        if let Some(problem) = self.counts.problem() {
            return Err(problem);
        }
        match &self.churn {
            Some(churn) if !churn.run.complete => Err(format!(
                "the churn did not {} before the run ended",
                if churn.run.started_us.is_some() {
                    "finish"
                } else {
                    "begin (it waits for every client to join)"
                }
            )),
            _ => Ok(()),
        }
    }

    /// The summary's lines about rooms.
    pub(crate) fn render(&self, out: &mut String) {
        let j = &self.join_latency_ms;
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "  joins        {} clients joined, {} in their room at the end; join ms p50 {:.2}  p99 {:.2}  max {:.2}  ({} joins)",
            self.clients_joined, self.joined_at_end, j.p50, j.p99, j.max, j.samples
        );
        let _ = writeln!(
            out,
            "  joined       at most {} names listed, {} said more_members",
            self.joined_names_max, self.joined_cut
        );
        let _ = writeln!(
            out,
            "  presence     {} frames ({} with names): {:.2} per client per second joined, {:.2} in the busiest interval",
            self.presence_frames,
            self.presence_frames_named,
            self.presence_per_client_per_sec,
            self.peak_presence_per_client_per_sec
        );
        let c = &self.counts;
        let settled = c.settled_ms.map_or_else(String::new, |ms| {
            format!(", settled {ms:.0} ms after this process's last join or leave")
        });
        let _ = match (c.count, c.problem()) {
            (Some(count), None) => writeln!(
                out,
                "  count        all {} joined clients of this process see {count}{settled}",
                c.joined
            ),
            (None, None) => writeln!(
                out,
                "  count        every room's clients agree ({} rooms, {} equal to this process's joined clients){settled}",
                c.rooms, c.rooms_matching_joined
            ),
            (_, Some(problem)) => writeln!(
                out,
                "  count        {problem} (counts seen {:?} to {:?})",
                c.count_min, c.count_max
            ),
        };
        if let Some(churn) = &self.churn {
            let r = &churn.rejoin_latency_ms;
            let _ = writeln!(
                out,
                "  churn        {}% ({} clients) a second for {:.0} s{}: {} leaves asked, {} answered, {} skipped; rejoin ms p50 {:.2}  p99 {:.2}  max {:.2}",
                churn.percent,
                churn.per_sec,
                churn.secs,
                if churn.run.complete {
                    ""
                } else {
                    " (cut short)"
                },
                churn.run.asked,
                churn.leaves,
                churn.run.skipped,
                r.p50,
                r.p99,
                r.max
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::new_histogram;

    fn joins(latencies_ms: &[u64]) -> JoinTotals {
        let mut latency = new_histogram();
        for ms in latencies_ms {
            latency.record(ms * 1000).unwrap();
        }
        JoinTotals {
            ever: latencies_ms.len(),
            latency,
            churn_latency: new_histogram(),
            churn_leaves: 3,
            names_max: 100,
            cut: 2,
        }
    }

    fn joined_for(secs: u64, count: u64) -> Seen {
        Seen {
            joined: true,
            count: Some(count),
            count_changed_us: 2_000_000,
            member_changed_us: 1_000_000,
            joined_us: secs * 1_000_000,
        }
    }

    fn row(presence_per_client_per_sec: f64) -> Row {
        Row {
            t_secs: 3.0,
            received: 0,
            sent: 0,
            connected: 0,
            deliveries_per_sec: 0.0,
            sends_per_sec: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            joined: 2,
            presence_per_client_per_sec,
        }
    }

    #[test]
    fn presence_is_per_second_joined_and_join_latency_in_ms() {
        // Two clients joined 10 s and 30 s: 120 frames are 3 per client per second joined.
        let views = vec![joined_for(10, 2), joined_for(30, 2)];
        let s = RoomSummary::of(
            1,
            (views, 120, 20),
            &joins(&[5, 900]),
            &[row(1.5), row(3.9)],
            None,
        );
        assert_eq!(s.presence_per_client_per_sec, 3.0);
        assert_eq!(s.peak_presence_per_client_per_sec, 3.9);
        assert_eq!((s.clients_joined, s.joined_at_end), (2, 2));
        assert_eq!(s.join_latency_ms.samples, 2);
        assert!(
            (s.join_latency_ms.max - 900.0).abs() < 1.0,
            "{}",
            s.join_latency_ms.max
        );
        assert_eq!(
            (s.counts.count, s.counts.settled_ms),
            (Some(2), Some(1000.0))
        );
        assert_eq!(s.verdict(2), Ok(()));

        let mut out = String::new();
        s.render(&mut out);
        assert!(
            out.contains("all 2 joined clients of this process see 2, settled 1000 ms"),
            "{out}"
        );
        assert!(
            out.contains("120 frames (20 with names): 3.00 per client"),
            "{out}"
        );
    }

    #[test]
    fn idle_fails_when_a_client_is_out_a_count_differs_or_the_churn_fell_short() {
        let views = || vec![joined_for(1, 2), joined_for(1, 2)];
        let s = RoomSummary::of(1, (views(), 0, 0), &joins(&[1, 1]), &[], None);
        assert!(s.verdict(3).is_err_and(|e| e.starts_with("only 2 of 3")));

        let split = vec![joined_for(1, 2), joined_for(1, 1)];
        let s = RoomSummary::of(1, (split, 0, 0), &joins(&[1, 1]), &[], None);
        assert!(
            s.verdict(2)
                .is_err_and(|e| e.contains("1 joined clients behind"))
        );

        let asked = Churn {
            percent: 5.0,
            per_sec: 1,
            secs: Duration::from_secs(60),
            delay: Duration::ZERO,
        };
        let never = ChurnRun::default();
        let s = RoomSummary::of(
            1,
            (views(), 0, 0),
            &joins(&[1, 1]),
            &[],
            Some((asked, never)),
        );
        assert!(s.verdict(2).is_err_and(|e| e.contains("did not begin")));
        let done = ChurnRun {
            started_us: Some(1),
            stopped_us: Some(2),
            asked: 60,
            skipped: 0,
            complete: true,
        };
        let s = RoomSummary::of(
            1,
            (views(), 0, 0),
            &joins(&[1, 1]),
            &[],
            Some((asked, done)),
        );
        assert_eq!(s.verdict(2), Ok(()));
        let churn = s.churn.as_ref().map(|c| (c.leaves, c.run.asked));
        assert_eq!(churn, Some((3, 60)));
    }
}
