//! Publishes in batches: the messages queued together go to Redis as one script call.
//!
//! What a publish cost Redis was mostly the call itself (finding the script, entering Lua) and
//! reads it did only to learn the room's epoch, not the append and the publish. So the
//! publisher's queue hands every run of consecutive publishes to one call of
//! `lua/publish.lua` (up to [`MAX_PER_CALL`] messages), and each call carries, for each room,
//! the epoch the node last saw there: the script appends under it with no read, and reads the
//! stream only when the hint is missing or wrong (the stream was trimmed away, or began again).
//! The expiry of a room's history is renewed at most every [`REFRESH_EVERY`] per node rather
//! than on every message, since a second more or less of an hours-long expiry changes nothing.
//!
//! Each message still gets its own outcome: one refused message is reported for that message
//! alone, and the order of messages is the order they were queued in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_protocol::MessageId;
use redis::{Cmd, RedisResult, Value};

use super::history;
use super::scripts::SCRIPTS;
use crate::broker::{BadReply, BrokerError, HistoryLimits};
use crate::keyspace::Keyspace;

/// Most messages in one script call: Redis runs nothing else while a script runs, so a call
/// stays short (about a tenth of a millisecond).
pub(super) const MAX_PER_CALL: usize = 64;

/// How often a node renews the expiry of a room's history while it publishes there.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Rooms whose epoch a node remembers; past this the memory starts over (a room it forgot
/// costs one read of its newest entry on its next publish).
const MAX_KNOWN_ROOMS: usize = 100_000;

/// One message to append and publish.
pub(super) struct Publish {
    pub(super) channel: String,
    pub(super) sealed_body: Bytes,
    /// Sent at, ms since the Unix epoch.
    pub(super) ts: u64,
}

/// What the node knows of a room's history.
struct Known {
    epoch: u64,
    refreshed: Instant,
}

/// Builds the batched calls and learns each room's epoch from their replies. Owned by the
/// publisher's queue task, so it needs no lock.
pub(super) struct Batches {
    history: HistoryLimits,
    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
    publish: &'static str,
    known: HashMap<String, Known>,
}

impl Batches {
    pub(super) fn new(history: HistoryLimits, keyspace: &Keyspace) -> Self {
        Batches {
            history,
            publish: super::publish_command(keyspace),
            known: HashMap::new(),
        }
    }

    /// One script call for `publishes` (at most [`MAX_PER_CALL`]).
    pub(super) fn call<'a>(&mut self, publishes: impl IntoIterator<Item = &'a Publish>) -> Cmd {
        let now = Instant::now();
        let refresh_every = REFRESH_EVERY.min(self.history.max_age / 8);
        let planned: Vec<(&Publish, String, bool)> = publishes
            .into_iter()
            .map(|publish| match self.known.get_mut(&publish.channel) {
                Some(known) if now.duration_since(known.refreshed) < refresh_every => {
                    (publish, known.epoch.to_string(), false)
                }
                Some(known) => {
                    known.refreshed = now;
                    (publish, known.epoch.to_string(), true)
                }
                None => (publish, String::new(), true),
            })
            .collect();
        let keys: Vec<String> = planned
            .iter()
            .flat_map(|(publish, ..)| [history::key(&publish.channel), publish.channel.clone()])
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut cmd = SCRIPTS.publish.invoke(&keys);
        cmd.arg(self.history.size)
            .arg(self.history.max_age.as_millis() as u64)
            .arg(self.publish);
        for (publish, hint, refresh) in planned {
            cmd.arg(publish.sealed_body.as_ref())
                .arg(publish.ts)
                .arg(hint)
                .arg(if refresh { "1" } else { "" });
        }
        cmd
    }

    /// Each message's outcome from the reply to its call, learning the rooms' epochs.
    pub(super) fn outcomes<'a>(
        &mut self,
        publishes: impl ExactSizeIterator<Item = &'a Publish>,
        reply: RedisResult<Value>,
    ) -> Vec<Result<MessageId, BrokerError>> {
        let count = publishes.len();
        let items = match reply {
            Ok(Value::Array(items)) if items.len() == count => items,
            Ok(other) => {
                log::warn!("Redis answered a batch of {count} publishes with {other:?}");
                return (0..count)
                    .map(|_| Err(BrokerError::Refused(BadReply::NoMessageId)))
                    .collect();
            }
            Err(error) => {
                let error = super::pipeline::classify(&error);
                return (0..count).map(|_| Err(error.clone())).collect();
            }
        };
        publishes
            .zip(items)
            .map(|(publish, item)| {
                let id = self.outcome(item)?;
                self.learn(&publish.channel, id);
                Ok(id)
            })
            .collect()
    }

    fn outcome(&self, item: Value) -> Result<MessageId, BrokerError> {
        match item {
            Value::ServerError(error) => {
                let error = redis::RedisError::from(error);
                log::warn!("Redis refused a message: {error}");
                Err(BrokerError::Refused(BadReply::Redis(error)))
            }
            item => redis::from_redis_value::<String>(item)
                .ok()
                .and_then(|id| id.parse().ok())
                .ok_or(BrokerError::Refused(BadReply::NoMessageId)),
        }
    }

    /// Remembers the epoch a room's message was published under. A room seen for the first
    /// time had its expiry renewed by the script, which does so whenever it reads the stream.
    fn learn(&mut self, channel: &str, id: MessageId) {
        match self.known.get_mut(channel) {
            Some(known) => known.epoch = id.epoch,
            None => {
                if self.known.len() >= MAX_KNOWN_ROOMS {
                    self.known.clear();
                }
                let known = Known {
                    epoch: id.epoch,
                    refreshed: Instant::now(),
                };
                self.known.insert(channel.to_owned(), known);
            }
        }
    }
}
