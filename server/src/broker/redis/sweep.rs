//! Sweeping a dead node's members out of presence, room by room.
//!
//! A node that stops beating leaves its members in every room's presence hash. The heartbeat
//! script lets exactly one live node claim the sweep (see `lua/heartbeat.lua`); that node then
//! removes the members a room at a time, [`ROOMS_PER_ROUND`] rooms per round trip, each room
//! one small script that announces every departure. No step holds Redis for longer than one
//! room takes, each step touches one room's keys only (one slot, on a Redis Cluster), and a
//! step repeated after a failure changes nothing. A claim lasts [`CLAIM`]: if the claiming node
//! dies mid-sweep, a later beat of any node claims what is left.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::heartbeat::node_rooms_key;
use super::pipeline::{each, within};
use super::scripts::SCRIPTS;
use crate::broker::BrokerError;
use crate::keyspace::Keyspace;
use crate::redis_client::Connection;

/// How long a claimed sweep belongs to the node that claimed it.
pub(super) const CLAIM: Duration = Duration::from_secs(30);

/// Rooms swept per round trip.
const ROOMS_PER_ROUND: usize = 100;

/// Sweeps claimed nodes; remembers which are under way so a claim renewed while its sweep
/// still runs does not start a second one.
#[derive(Clone)]
pub(super) struct Sweeper {
    keyspace: Keyspace,
    sweeps_key: String,
    timeout: Duration,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Sweeper {
    pub(super) fn new(keyspace: &Keyspace, sweeps_key: &str, timeout: Duration) -> Self {
        Sweeper {
            keyspace: keyspace.clone(),
            sweeps_key: sweeps_key.to_owned(),
            timeout,
            running: Arc::default(),
        }
    }

    /// Sweeps each of `nodes` in the background, on `connection`.
    pub(super) fn spawn(&self, connection: &Connection, nodes: Vec<String>) {
        for node in nodes {
            let fresh = self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(node.clone());
            if !fresh {
                continue;
            }
            let sweeper = self.clone();
            let mut connection = connection.clone();
            tokio::spawn(async move {
                sweeper.sweep_logged(&mut connection, &node).await;
                sweeper
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&node);
            });
        }
    }

    /// Sweeps `node` to the end, and logs the outcome.
    pub(super) async fn sweep_logged(&self, connection: &mut Connection, node: &str) {
        match self.sweep(connection, node).await {
            Ok(0) => {}
            Ok(swept) => log::info!("removed {swept} member(s) of node {node:?}, which stopped"),
            // The claim runs out and the sweep is claimed again.
            Err(error) => log::warn!("sweeping node {node:?} stopped: {error}; it will be retried"),
        }
    }

    /// Sweeps `node` to the end; returns how many members it removed.
    async fn sweep(&self, connection: &mut Connection, node: &str) -> Result<u64, BrokerError> {
        let rooms_key = node_rooms_key(&self.keyspace, node);
        let publish = super::publish_command(&self.keyspace);
        let mut swept = 0;
        loop {
            let mut pick = redis::cmd("SRANDMEMBER");
            pick.arg(&rooms_key).arg(ROOMS_PER_ROUND);
            let hashes: Vec<String> = within(self.timeout, pick.query_async(connection)).await?;
            if hashes.is_empty() {
                break;
            }
            // Each room is a slot of its own on a cluster: one call per room, all in flight at
            // once; a room leaves the node's set only once it is swept.
            let round = hashes.iter().filter_map(|hash| {
                let channel = hash.strip_suffix(":presence")?;
                let mut sweep = SCRIPTS.presence_sweep.invoke(&[hash, channel]);
                sweep.arg(node).arg(publish);
                Some(sweep)
            });
            let counts: Vec<u64> = each(connection, round, self.timeout).await?;
            swept += counts.iter().sum::<u64>();
            let mut forget = redis::cmd("SREM");
            forget.arg(&rooms_key).arg(&hashes);
            within(self.timeout, forget.query_async::<()>(connection)).await?;
        }
        let mut done = redis::cmd("ZREM");
        done.arg(&self.sweeps_key).arg(node);
        within(self.timeout, done.query_async::<()>(connection)).await?;
        Ok(swept)
    }
}
