//! The Redis broker's presence side: each room's members in a hash next to its channel.
//!
//! A room's hash is filed in the node's set of presence hashes before a member is written to
//! it, so a sweep of a dead node finds every room it had members in (see [`super::sweep`]);
//! reads skip members of nodes whose heartbeat stopped. Every script touches the keys of one
//! room only, as a Redis Cluster requires.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;

use super::RedisBroker;
use super::heartbeat::key_ttl_ms;
use super::scripts::SCRIPTS;
use crate::broker::{BadReply, BrokerError, BrokerFuture};
use crate::presence::{Presence, PresenceEntry};

/// The presence hash of `channel`.
pub(super) fn key(channel: &str) -> String {
    format!("{channel}:presence")
}

impl Presence for RedisBroker {
    fn add(&self, channel: &str, member: &str, sealed_name: Bytes) -> BrokerFuture {
        let hash = key(channel);
        // Filed first, so that a sweep of this node finds every hash it has members in.
        let mut filed = redis::cmd("SADD");
        filed.arg(self.heartbeat.node_rooms_key()).arg(&hash);
        self.pipeline.send_and_forget(filed);
        let mut expiring = redis::cmd("PEXPIRE");
        expiring
            .arg(self.heartbeat.node_rooms_key())
            .arg(key_ttl_ms());
        self.pipeline.send_and_forget(expiring);
        let mut cmd = SCRIPTS.presence_add.invoke(&[&hash, channel]);
        cmd.arg(member)
            .arg(sealed_name.as_ref())
            .arg(key_ttl_ms())
            .arg(self.publish);
        let added = self.pipeline.send(cmd);
        async move { added.await.map(drop) }.boxed()
    }

    fn remove(&self, channel: &str, member: &str) {
        let mut cmd = SCRIPTS.presence_remove.invoke(&[&key(channel), channel]);
        cmd.arg(member).arg(self.publish);
        self.pipeline.send_and_forget(cmd);
    }

    fn members(&self, channel: &str) -> BrokerFuture<Vec<PresenceEntry>> {
        // Three reads, since the heartbeats live in a slot of their own on a Redis Cluster;
        // queued together, they share one round trip on a single Redis.
        let now = self.pipeline.send(redis::cmd("TIME"));
        let mut all = redis::cmd("HGETALL");
        all.arg(key(channel));
        let all = self.pipeline.send(all);
        let mut beats = redis::cmd("ZRANGE");
        beats
            .arg(self.heartbeat.nodes_key())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        let beats = self.pipeline.send(beats);
        async move {
            let (now, all, beats) = futures::try_join!(now, all, beats)?;
            let parse = |error| BrokerError::Refused(BadReply::Reply(error));
            let (secs, micros): (u64, u64) = redis::from_redis_value(now).map_err(parse)?;
            let now_ms = secs * 1000 + micros / 1000;
            let beats: Vec<(String, f64)> = redis::from_redis_value(beats).map_err(parse)?;
            let alive: HashSet<String> = beats
                .into_iter()
                .filter(|(_, expiry)| *expiry >= now_ms as f64)
                .map(|(node, _)| node)
                .collect();
            let all: Vec<(Vec<u8>, Vec<u8>)> = redis::from_redis_value(all).map_err(parse)?;
            Ok(entries(all, &alive))
        }
        .boxed()
    }

    fn retire(&self) -> BrokerFuture {
        let cmd = self.heartbeat.cmd(Duration::ZERO, false);
        let retired = self.pipeline.send(cmd);
        async move { retired.await.map(drop) }.boxed()
    }
}

/// The members of live nodes; a member key that is not UTF-8 or names no node was not written
/// by a node and is skipped.
fn entries(all: Vec<(Vec<u8>, Vec<u8>)>, alive: &HashSet<String>) -> Vec<PresenceEntry> {
    all.into_iter()
        .filter_map(|(member, sealed_name)| {
            let member = String::from_utf8(member).ok()?;
            let (node, _) = member.rsplit_once('|')?;
            alive.contains(node).then_some(PresenceEntry {
                member,
                sealed_name,
            })
        })
        .collect()
}
