//! The Lua scripts that make each Redis operation atomic, how they are invoked, and which
//! requests to send again when Redis forgot them.
//!
//! Scripts are loaded once per connection and then called by hash (`EVALSHA`), so a publish
//! costs its arguments on the wire, not the script's text. Every script starts with `#!lua`
//! and touches only the keys it is given, channels included, all of one room or all of the
//! node registry: a Redis Cluster runs a script only on keys of one slot, and without the
//! `#!lua` line it would let a publish to an undeclared channel go nowhere, silently.

use std::sync::LazyLock;

use std::time::Duration;

use redis::{Cmd, RedisResult, Value};

use super::pipeline::each;
use crate::broker::BrokerError;
use crate::redis_client::Connection;

/// One script: its source and the hash Redis knows it by.
pub(super) struct LuaScript {
    source: &'static str,
    hash: String,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        let hash = redis::Script::new(source).get_hash().to_owned();
        LuaScript { source, hash }
    }

    /// An `EVALSHA` of this script on `keys`; the caller appends the arguments.
    pub(super) fn invoke(&self, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(keys.len()).arg(keys);
        cmd
    }
}

/// Every script the broker runs.
pub(super) struct Scripts {
    /// Appends a message to history and publishes it; returns its id.
    pub(super) publish: LuaScript,
    /// Records a member and announces the join.
    pub(super) presence_add: LuaScript,
    /// Removes a member and announces the departure.
    pub(super) presence_remove: LuaScript,
    /// Removes one room's members on a dead node and announces their departures.
    pub(super) presence_sweep: LuaScript,
    /// Refreshes a node's heartbeat and sweeps dead nodes' members.
    pub(super) heartbeat: LuaScript,
}

/// The scripts, hashed once per process.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    publish: LuaScript::new(include_str!("lua/publish.lua")),
    presence_add: LuaScript::new(include_str!("lua/presence_add.lua")),
    presence_remove: LuaScript::new(include_str!("lua/presence_remove.lua")),
    presence_sweep: LuaScript::new(include_str!("lua/presence_sweep.lua")),
    heartbeat: LuaScript::new(include_str!("lua/heartbeat.lua")),
});

impl Scripts {
    /// Loads every script into Redis's script cache: on a cluster, into every master's, as
    /// redis-rs sends a lone `SCRIPT LOAD` to all of them (a pipeline would reach one).
    pub(super) async fn load(
        &self,
        connection: &Connection,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let loads = [
            &self.publish,
            &self.presence_add,
            &self.presence_remove,
            &self.presence_sweep,
            &self.heartbeat,
        ]
        .map(|script| {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(script.source);
            load
        });
        each::<Value>(connection, loads.into_iter(), timeout)
            .await
            .map(drop)
    }
}

/// The requests of a pipeline that Redis refused with NOSCRIPT: it lost its script cache
/// (flushed, or a failover). Nothing refused that way ran, so these are safe to send again
/// once the scripts are loaded.
pub(super) fn missing(results: &[RedisResult<Value>]) -> Vec<usize> {
    results
        .iter()
        .enumerate()
        .filter(|(_, result)| matches!(result, Err(error) if error.code() == Some("NOSCRIPT")))
        .map(|(index, _)| index)
        .collect()
}
