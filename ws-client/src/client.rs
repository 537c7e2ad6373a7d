//! One simulated chat client: connect, join its room, send stamped messages on its schedule,
//! read everything that arrives, and reconnect with backoff when the connection ends.
//!
//! A client keeps what it has seen (sequence numbers, the last message id) across its
//! connections, so a reconnect resumes the same member rather than starting a new one: it
//! rejoins with `since` set to the last id it saw. When the node answers `recovered: true`, the
//! history filled the gap and everything since the first join stays owed; otherwise only what
//! was sent after the rejoin is expected of it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Plan;
use crate::connect::{self, Target};
use crate::ledger::RoomLedger;
use crate::seqset::SeqSet;
use crate::session::Session;
use crate::stats::{Board, ClientStats};

/// Where the run is; clients watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Sending,
    /// Sending stopped; deliveries still arrive.
    Draining,
    /// Counting: close.
    Done,
}

/// What every client of a run shares.
pub(crate) struct Shared {
    pub plan: Plan,
    pub targets: Vec<Target>,
    pub rooms: Vec<RoomLedger>,
    /// Tag of this run in every message text, to tell its messages from other runs'.
    pub run: u32,
    pub board: Board,
}

/// A client's contribution to the final count.
pub(crate) struct Outcome {
    pub room: usize,
    /// When the `joined` of the connection open at the end arrived; `None` if the client was
    /// not joined when the run ended.
    pub joined_us: Option<u64>,
    pub seen: SeqSet,
}

/// Per-connection buffers: small enough for tens of thousands of connections, large enough to
/// read a burst of fan-out in one system call.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(1024 * 1024)
}

/// The member a client plays, kept across its connections.
pub(crate) struct Member {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) room: usize,
    pub(crate) seen: SeqSet,
    /// Id of the last message received, opaque: the point a rejoin would resume from.
    pub(crate) last_id: String,
    pub(crate) text: String,
}

/// Runs client `index` until the run is done.
pub(crate) async fn run(
    index: usize,
    shared: Arc<Shared>,
    stats: Arc<ClientStats>,
    mut phase: watch::Receiver<Phase>,
) -> Outcome {
    let plan = &shared.plan;
    let mut member = Member {
        index,
        name: format!("{}{index}", plan.name_prefix),
        room: index % plan.rooms.len(),
        seen: SeqSet::default(),
        last_id: String::new(),
        text: String::with_capacity(plan.message_size),
    };
    let target = &shared.targets[index % shared.targets.len()];
    let mut backoff = Backoff::default();
    let mut joined_us = None;
    // Since when deliveries are owed: the first join, for as long as every rejoin recovered.
    let mut owed_since = None;
    while *phase.borrow() == Phase::Sending {
        let opened = tokio::select! {
            opened = connect::open(target, index, &member.name, plan.sources, ws_config()) => opened,
            changed = phase.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        let ws = match opened {
            Ok(ws) => ws,
            Err(cause) => {
                shared.board.failure(cause);
                backoff.wait(&mut phase).await;
                continue;
            }
        };
        shared.board.connected();
        let mut session = Session::new(&shared, &stats, &mut member, ws);
        let ended = session.run(&mut phase).await;
        let session_joined_us = session.joined_us();
        shared.board.exited(&stats, false);
        if session_joined_us.is_some()
            && !(session.recovered() == Some(true) && owed_since.is_some())
        {
            owed_since = session_joined_us;
        }
        shared.board.disconnected();
        match ended {
            Ok(()) => {
                joined_us = owed_since;
                break;
            }
            Err(cause) => {
                shared.board.failure(cause);
                if session_joined_us.is_some() {
                    backoff = Backoff::default();
                }
                if *phase.borrow() == Phase::Sending {
                    shared.board.reconnecting();
                    backoff.wait(&mut phase).await;
                }
            }
        }
    }
    Outcome {
        room: member.room,
        joined_us,
        seen: member.seen,
    }
}

/// Capped exponential backoff with jitter, like the browser page's, so a node restart does not
/// meet every client at the same instant.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    async fn wait(&mut self, phase: &mut watch::Receiver<Phase>) {
        let base_ms = 100u64.saturating_mul(1 << self.attempt.min(6)).min(5_000);
        self.attempt += 1;
        let jittered = rand::random_range(base_ms / 2..=base_ms);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(jittered)) => {}
            _ = phase.changed() => {}
        }
    }
}
