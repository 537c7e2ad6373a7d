//! The Redis broker's presence side: each room's members in a hash next to its channel.
//!
//! A member is written with the node's set of presence hashes in one script, so a sweep of a
//! dead node finds every room it had members in (see [`super::heartbeat`]); reads skip members
//! of nodes whose heartbeat stopped.

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
        let mut cmd = SCRIPTS
            .presence_add
            .invoke(&[&key(channel), &self.node_rooms_key]);
        cmd.arg(channel)
            .arg(member)
            .arg(sealed_name.as_ref())
            .arg(key_ttl_ms());
        let added = self.pipeline.send(cmd);
        async move { added.await.map(drop) }.boxed()
    }

    fn remove(&self, channel: &str, member: &str) {
        let mut cmd = SCRIPTS.presence_remove.invoke(&[&key(channel)]);
        cmd.arg(channel).arg(member);
        self.pipeline.send_and_forget(cmd);
    }

    fn members(&self, channel: &str) -> BrokerFuture<Vec<PresenceEntry>> {
        let cmd = SCRIPTS
            .presence_members
            .invoke(&[&key(channel), self.heartbeat.nodes_key()]);
        let members = self.pipeline.send(cmd);
        async move {
            let flat: Vec<Vec<u8>> = redis::from_redis_value(members.await?)
                .map_err(|error| BrokerError::Refused(BadReply::Reply(error)))?;
            Ok(entries(flat))
        }
        .boxed()
    }

    fn retire(&self) -> BrokerFuture {
        let cmd = self.heartbeat.cmd(Duration::ZERO, false);
        let retired = self.pipeline.send(cmd);
        async move { retired.await.map(drop) }.boxed()
    }
}

/// Pairs the script's flat reply (member, sealed name, member, ...) into entries; a member key
/// that is not UTF-8 was not written by a node and is skipped.
fn entries(flat: Vec<Vec<u8>>) -> Vec<PresenceEntry> {
    let mut flat = flat.into_iter();
    let mut entries = Vec::with_capacity(flat.len() / 2);
    while let (Some(member), Some(sealed_name)) = (flat.next(), flat.next()) {
        if let Ok(member) = String::from_utf8(member) {
            entries.push(PresenceEntry {
                member,
                sealed_name,
            });
        }
    }
    entries
}
