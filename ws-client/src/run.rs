//! One run from start to verdict: add clients on the schedule (and churn them, in idle mode),
//! print the status line every 3 s, stop sending at the end and take the snapshot of what the
//! clients see of their rooms, drain, then count what every member was owed and received.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::churn;
use crate::client::{self, Outcome, Phase, Shared};
use crate::config::{Mode, Plan};
use crate::connect::Target;
use crate::ingest;
use crate::ledger::RoomLedger;
use crate::report::{Latency, Report, Summary};
use crate::room_report::RoomSummary;
use crate::stats::{self, Board, Row};

/// Seconds between status lines, as in the original tool.
const STATUS_EVERY: Duration = Duration::from_secs(3);
/// How long clients get to hand in their counts after the run ended; generous, because on a
/// starved machine thousands of clients can take seconds to be scheduled once more.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The drain ends once no delivery arrived for this long.
const QUIET: Duration = Duration::from_secs(1);

pub(crate) async fn run(plan: Plan, open_file_limit: u64) -> anyhow::Result<Report> {
    let mut targets = Vec::with_capacity(plan.urls.len());
    for url in &plan.urls {
        targets.push(Target::resolve(url).await?);
    }
    let shared = Arc::new(Shared {
        rooms: plan.rooms.iter().map(|_| RoomLedger::default()).collect(),
        targets,
        run: rand::random(),
        board: Board::new(),
        plan,
    });
    let plan = &shared.plan;
    let (phase_tx, phase_rx) = watch::channel(Phase::Sending);
    let start = Instant::now();
    let reporter = tokio::spawn(report_status(Arc::clone(&shared), phase_rx.clone(), start));

    let deadline = tokio::time::Instant::from_std(start + plan.duration);
    let churn = match (plan.churn, plan.clients) {
        (Some(churn), Some(clients)) => Some((
            churn,
            tokio::spawn(churn::drive(Arc::clone(&shared), churn, clients, deadline)),
        )),
        _ => None,
    };
    let clients = add_clients(&shared, &phase_rx, deadline).await;
    let feeders = match &plan.ingest {
        Some(ingest) => ingest::start(&shared, ingest, &phase_rx),
        None => Vec::new(),
    };
    tokio::time::sleep_until(deadline).await;
    let sending = start.elapsed();
    // Before anyone closes: closing clients would change the counts being checked.
    let views = shared.board.views();
    let _ = phase_tx.send(Phase::Draining);
    let churn = match churn {
        Some((asked, handle)) => Some((asked, handle.await.unwrap_or_default())),
        None => None,
    };
    let drain = drain(&shared.board, plan.drain).await;
    let _ = phase_tx.send(Phase::Done);

    let mut outcomes = Vec::with_capacity(clients.len());
    let collect_by = tokio::time::Instant::now() + COLLECT_TIMEOUT;
    for mut feeder in feeders {
        // A feeder still waiting for a reply settles nothing more; its messages stay unknown.
        if tokio::time::timeout_at(collect_by, &mut feeder)
            .await
            .is_err()
        {
            feeder.abort();
        }
    }
    for mut handle in clients {
        match tokio::time::timeout_at(collect_by, &mut handle).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            // A client that cannot hand in its count owes nothing; say so in the failures.
            Ok(Err(_)) => shared.board.failure("client task failed".to_owned()),
            Err(_) => {
                handle.abort();
                shared
                    .board
                    .failure("client did not stop in time".to_owned());
            }
        }
    }
    let series = reporter.await.unwrap_or_default();
    let membership = RoomSummary::of(
        plan.rooms.len(),
        views,
        &shared.board.join_totals(),
        &series,
        churn,
    );
    let ended = Ended {
        sending,
        drain,
        open_file_limit,
        membership,
    };
    Ok(Report {
        summary: summarize(&shared, &outcomes, ended, &series),
        series,
    })
}

/// Lets deliveries still queued in the cluster arrive: an overloaded cluster can hold seconds
/// of them, and counting too early would report them as missing. Ends after a second without
/// a delivery, or after `max`; returns how long it took and whether deliveries had stopped.
async fn drain(board: &Board, max: Duration) -> (Duration, bool) {
    let start = Instant::now();
    let give_up = start + max;
    let mut seen = board.deliveries();
    let mut quiet_since = Instant::now();
    while Instant::now() < give_up && quiet_since.elapsed() < QUIET {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = board.deliveries();
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
    }
    (start.elapsed(), quiet_since.elapsed() >= QUIET)
}

/// Adds clients on the ramp until the cap or the end of sending.
async fn add_clients(
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
    deadline: tokio::time::Instant,
) -> Vec<JoinHandle<Outcome>> {
    let plan = &shared.plan;
    let mut clients = Vec::new();
    let mut ramp = tokio::time::interval(plan.ramp_every);
    while plan.clients.is_none_or(|cap| clients.len() < cap) {
        tokio::select! {
            _ = ramp.tick() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        let stats = shared.board.add_client();
        clients.push(tokio::spawn(client::run(
            clients.len(),
            Arc::clone(shared),
            stats,
            phase.clone(),
        )));
    }
    clients
}

/// Prints a status line every 3 s and one at the end; returns the series.
async fn report_status(
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    start: Instant,
) -> Vec<Row> {
    let mut series = Vec::new();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + STATUS_EVERY),
        STATUS_EVERY,
    );
    let mut last = start;
    loop {
        let done = tokio::select! {
            _ = ticker.tick() => false,
            _ = phase.wait_for(|p| *p == Phase::Done) => true,
        };
        let now = Instant::now();
        let row = shared.board.row(
            now.duration_since(start).as_secs_f64(),
            now.duration_since(last),
        );
        last = now;
        println!(
            "{}",
            stats::status_line(&row, shared.plan.mode == Mode::Idle)
        );
        series.push(row);
        if done {
            return series;
        }
    }
}

/// How the run ended, beside the clients' outcomes.
struct Ended {
    sending: Duration,
    /// How long the drain took, and whether deliveries had stopped.
    drain: (Duration, bool),
    open_file_limit: u64,
    membership: RoomSummary,
}

fn summarize(shared: &Shared, outcomes: &[Outcome], ended: Ended, series: &[Row]) -> Summary {
    let Ended {
        sending,
        drain: (drained, drain_complete),
        open_file_limit,
        membership,
    } = ended;
    let plan = &shared.plan;
    let board = &shared.board;
    let tallies: Vec<_> = shared.rooms.iter().map(RoomLedger::freeze).collect();
    let (mut expected, mut delivered, mut joined_at_end) = (0, 0, 0);
    for outcome in outcomes {
        if let Some(joined_us) = outcome.joined_us {
            let (owed, got) = tallies[outcome.room].account(joined_us, &outcome.seen);
            expected += owed;
            delivered += got;
            joined_at_end += 1;
        }
    }
    let (totals, latency) = board.finish();
    let secs = sending.as_secs_f64().max(1e-9);
    Summary {
        mode: plan.mode.name(),
        urls: plan.urls.clone(),
        rooms: plan.rooms.len(),
        message_size: plan.message_size,
        duration_secs: sending.as_secs_f64(),
        drain_secs: drained.as_secs_f64(),
        drain_complete,
        open_file_limit,
        clients_started: board.clients_started(),
        peak_connected: board.peak_connected(),
        joined_at_end,
        sent: tallies.iter().map(|t| t.sent()).sum(),
        acked: tallies.iter().map(|t| t.acked).sum(),
        refused: tallies.iter().map(|t| t.refused).sum(),
        unanswered: tallies.iter().map(|t| t.unknown).sum(),
        skipped_sends: totals.skipped,
        expected,
        delivered,
        missing: expected - delivered,
        duplicates: totals.duplicates,
        frames_received: totals.frames,
        deliveries: totals.messages,
        deliveries_per_sec: totals.messages as f64 / secs,
        sends_per_sec: totals.sent as f64 / secs,
        peak_deliveries_per_sec: series
            .iter()
            .map(|row| row.deliveries_per_sec)
            .fold(0.0, f64::max),
        latency_ms: Latency::of(&latency),
        errors: board.errors(),
        connection_failures: board.failures(),
        reconnects: board.reconnects(),
        membership,
    }
}
