//! A node's heartbeat call to Redis, and the expiry of every key the node writes.
//!
//! Every key a node writes in Redis has a TTL, so that a `maxmemory` policy of `volatile-lru`
//! or `volatile-ttl` may evict any of them under memory pressure and nothing is left behind by
//! nodes that are gone: history streams expire `--history-max-age-secs` after their last
//! message, flood keys after their window, and presence keys (a room's presence hash, a node's
//! set of them, the heartbeats) after [`KEY_TTL`] unless renewed. Each heartbeat renews the
//! heartbeats, the node's set, and the next [`REFRESH_BATCH`] of the node's presence hashes,
//! walking the set with a cursor from beat to beat.

use std::time::Duration;

use redis::{ParsingError, Value};

use super::scripts::SCRIPTS;
use super::sweep;
use crate::keyspace::Keyspace;
use crate::presence::HEARTBEAT_INTERVAL;

/// How long a presence key lives unless renewed.
pub(super) const KEY_TTL: Duration = Duration::from_secs(3600);
/// Presence hashes renewed per heartbeat: a node renews all of its rooms within
/// `KEY_TTL` as long as it has fewer than `KEY_TTL / HEARTBEAT_INTERVAL * REFRESH_BATCH`
/// (1.2 million) of them.
pub(super) const REFRESH_BATCH: usize = 1000;

const _: () = assert!(KEY_TTL.as_secs() > 10 * HEARTBEAT_INTERVAL.as_secs());

/// The key TTL as the scripts take it.
pub(super) fn key_ttl_ms() -> u64 {
    KEY_TTL.as_millis() as u64
}

/// Who beats: the heartbeat key, the key prefix and the node's id.
#[derive(Debug, Clone)]
pub(super) struct Heartbeat {
    nodes_key: String,
    sweeps_key: String,
    node_rooms_key: String,
    keyspace: Keyspace,
    node_id: String,
    /// Where the renewal of this node's presence hashes goes on (`0`: from the start).
    cursor: String,
}

impl Heartbeat {
    /// The heartbeat of `node_id`, in `keyspace`'s registry.
    pub(super) fn new(keyspace: &Keyspace, node_id: &str) -> Self {
        Heartbeat {
            nodes_key: keyspace.registry("nodes"),
            sweeps_key: keyspace.registry("sweeps"),
            node_rooms_key: node_rooms_key(keyspace, node_id),
            keyspace: keyspace.clone(),
            node_id: node_id.to_owned(),
            cursor: "0".to_owned(),
        }
    }

    /// The sorted set of every node's heartbeat.
    pub(super) fn nodes_key(&self) -> &str {
        &self.nodes_key
    }

    /// The sorted set of sweeps under way.
    pub(super) fn sweeps_key(&self) -> &str {
        &self.sweeps_key
    }

    /// Where the cluster's keys are.
    pub(super) fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The set of this node's presence hashes.
    pub(super) fn node_rooms_key(&self) -> &str {
        &self.node_rooms_key
    }

    /// This node's id.
    pub(super) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The heartbeat script's call: a zero `timeout` retires the node; `fresh` also claims the
    /// sweep of what an earlier run of the same node id left behind.
    pub(super) fn cmd(&self, timeout: Duration, fresh: bool) -> redis::Cmd {
        let mut cmd =
            SCRIPTS
                .heartbeat
                .invoke(&[&self.nodes_key, &self.sweeps_key, &self.node_rooms_key]);
        cmd.arg(&self.node_id)
            .arg(timeout.as_millis() as u64)
            .arg(if fresh { "1" } else { "0" })
            .arg(key_ttl_ms())
            .arg(&self.cursor)
            .arg(REFRESH_BATCH)
            .arg(sweep::CLAIM.as_millis() as u64);
        cmd
    }

    /// Reads a beat's reply. Remembers where the renewal goes on.
    pub(super) fn read(&mut self, reply: Value) -> Result<Beat, ParsingError> {
        let (was_missing, claimed, cursor, renew): (i64, Vec<String>, String, Vec<String>) =
            redis::from_redis_value(reply)?;
        self.cursor = cursor;
        Ok(Beat {
            was_missing: was_missing == 1,
            claimed,
            renew,
        })
    }

    /// Renews the expiry of presence hashes a beat named: one command each, since on a
    /// cluster each is in a slot of its own.
    pub(super) fn renewal(renew: &[String]) -> impl Iterator<Item = redis::Cmd> + '_ {
        renew.iter().map(|key| {
            let mut cmd = redis::cmd("PEXPIRE");
            cmd.arg(key).arg(key_ttl_ms());
            cmd
        })
    }
}

/// What a beat found.
pub(super) struct Beat {
    /// This node was missing: it had been swept.
    pub(super) was_missing: bool,
    /// The nodes whose sweep it claimed.
    pub(super) claimed: Vec<String>,
    /// The next batch of this node's presence hashes, to renew.
    pub(super) renew: Vec<String>,
}

/// The set of the presence hashes `node` has members in.
pub(super) fn node_rooms_key(keyspace: &Keyspace, node: &str) -> String {
    keyspace.registry(&format!("node:{node}:rooms"))
}
