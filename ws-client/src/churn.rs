//! Idle mode's churn: once every client of this process has joined, and `--churn-delay-secs`
//! later, a share of them leaves the room and comes back every second, for `--churn-secs`.
//!
//! Clients are taken in turn (0, 1, 2, … and round again), so each churns as often as any
//! other, and each second's share is spread over ten ticks, so leaves and rejoins arrive
//! steadily rather than in one burst a second. A client that is not in its room when its turn
//! comes (reconnecting, or still away from its previous turn) is skipped and counted.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::Shared;
use crate::config::Churn;
use crate::payload::now_us;

/// Each second of churn is cut into this many ticks.
const TICKS_PER_SEC: u32 = 10;
/// How often the driver looks whether every client has joined.
const POLL: Duration = Duration::from_millis(100);

/// What the churn did.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ChurnRun {
    /// Unix µs when the first leave was asked for, and when the last one was: `None` when the
    /// churn never began (not every client had joined before the run ended).
    pub started_us: Option<u64>,
    pub stopped_us: Option<u64>,
    /// Leaves asked for, and turns skipped because the client was not in its room.
    pub asked: u64,
    pub skipped: u64,
    /// Whether it ran for the whole `--churn-secs` before the run ended.
    pub complete: bool,
}

/// Runs the churn for a process of `clients` clients, giving up at `deadline`.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    churn: Churn,
    clients: usize,
    deadline: Instant,
) -> ChurnRun {
    let mut run = ChurnRun::default();
    let board = &shared.board;
    while board.joined_now() < clients {
        if Instant::now() + POLL >= deadline {
            return run;
        }
        tokio::time::sleep(POLL).await;
    }
    if Instant::now() + churn.delay >= deadline {
        return run;
    }
    tokio::time::sleep(churn.delay).await;

    let stats = board.clients();
    let ticks = (churn.secs.as_secs_f64() * f64::from(TICKS_PER_SEC)).round() as u64;
    let mut interval = tokio::time::interval(Duration::from_secs(1) / TICKS_PER_SEC);
    let mut cursor = 0usize;
    run.started_us = Some(now_us());
    for tick in 0..ticks {
        tokio::select! {
            _ = interval.tick() => {}
            _ = tokio::time::sleep_until(deadline) => return run,
        }
        for _ in 0..share(churn.per_sec, tick) {
            let Some(client) = stats.get(cursor % stats.len().max(1)) else {
                break;
            };
            cursor += 1;
            if client.view.is_joined() {
                client.churn.notify_one();
                run.asked += 1;
            } else {
                run.skipped += 1;
            }
        }
        run.stopped_us = Some(now_us());
    }
    run.complete = true;
    run
}

/// How many of a second's `per_sec` leaves go in tick `tick`: spread so that every second
/// adds up to exactly `per_sec`.
fn share(per_sec: usize, tick: u64) -> usize {
    let ticks = u64::from(TICKS_PER_SEC);
    let per_sec = per_sec as u64;
    let t = tick % ticks;
    ((per_sec * (t + 1)) / ticks - (per_sec * t) / ticks) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_second_churns_exactly_its_share_spread_over_the_ticks() {
        for per_sec in [0, 1, 7, 10, 500, 1_001] {
            let second: Vec<_> = (0..10).map(|t| share(per_sec, t)).collect();
            assert_eq!(second.iter().sum::<usize>(), per_sec, "{per_sec}");
            let (lo, hi) = (second.iter().min(), second.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{second:?}");
            assert_eq!(share(per_sec, 13), share(per_sec, 3));
        }
    }
}
