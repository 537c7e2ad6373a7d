//! Sharded subscriptions on a Redis Cluster: one RESP3 connection per master, each holding
//! the `SSUBSCRIBE`s of the slots that master serves.
//!
//! redis-rs's cluster connection is used for commands only: it resubscribes with one
//! `SSUBSCRIBE` per node naming channels of many slots, which Redis refuses (`CROSSSLOT`), and
//! it takes the `sunsubscribe` Redis pushes on its own (on a failover, or when a slot moves)
//! for the reply to whatever command is in flight. So the broker owns these connections:
//!
//! - a channel is subscribed on the master that serves its slot, as the cluster's slot map
//!   says; the channels of one slot group go out in one pipelined write;
//! - the node tells its own `sunsubscribe`s from Redis's: any other one, a `MOVED` reply, a
//!   closed connection, a master that no longer serves a slot we listen in (checked every
//!   second against `CLUSTER SLOTS`), or a connection whose count of subscriptions (`ssub` in
//!   `CLIENT INFO`) is not what we subscribed, means this set is out of date. The supervisor
//!   then builds a new one from a fresh slot map and the rooms read what they missed from
//!   history, as after a reconnect.
//!
//! Rebuilding everything rather than one slot keeps the rule simple and is rare: the cluster
//! changes shape in minutes, not milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};

use super::pipeline::within;
use super::subscriptions::PushParts;
use crate::broker::BrokerError;
use crate::keyspace::slot_of;
use crate::redis_client::{Client, Connection};

/// A master, as `host:port`.
type Address = (String, u16);

/// Who serves which slots, from `CLUSTER SLOTS`.
#[derive(Debug, Default, PartialEq)]
struct SlotMap(Vec<(usize, usize, Address)>);

impl SlotMap {
    async fn read(commands: &mut Connection, timeout: Duration) -> Result<Self, BrokerError> {
        let reply: Value = within(
            timeout,
            redis::cmd("CLUSTER").arg("SLOTS").query_async(commands),
        )
        .await?;
        Ok(SlotMap::parse(reply))
    }

    /// Each range's first, last slot and master; ranges in a shape we do not know are left
    /// out, so their slots look unserved and the check fails rather than guesses.
    fn parse(reply: Value) -> Self {
        let Value::Array(ranges) = reply else {
            return SlotMap::default();
        };
        let ranges = ranges.into_iter().filter_map(|range| {
            let (start, end, master, _replicas): (usize, usize, Vec<Value>, Vec<Value>) =
                match range {
                    Value::Array(items) if items.len() >= 3 => {
                        let mut items = items.into_iter();
                        let start = redis::from_redis_value(items.next()?).ok()?;
                        let end = redis::from_redis_value(items.next()?).ok()?;
                        let master = redis::from_redis_value(items.next()?).ok()?;
                        (start, end, master, items.collect())
                    }
                    _ => return None,
                };
            let mut master = master.into_iter();
            let host: String = redis::from_redis_value(master.next()?).ok()?;
            let port: u16 = redis::from_redis_value(master.next()?).ok()?;
            Some((start, end, (host, port)))
        });
        SlotMap(ranges.collect())
    }

    fn master(&self, slot: usize) -> Option<&Address> {
        self.0
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, master)| master)
    }
}

/// One master's connection and how many channels it holds for us.
struct Master {
    connection: MultiplexedConnection,
    channels: usize,
}

/// Channels this node unsubscribed itself and whose `sunsubscribe` has not come back yet,
/// shared with the push handler, which counts every other one as the cluster changing.
pub(super) type OwnUnsubscribes = Arc<Mutex<HashMap<Vec<u8>, u32>>>;

/// Marks one `sunsubscribe` of `channel` as ours; false if it was not expected.
pub(super) fn expected_unsubscribe(own: &OwnUnsubscribes, channel: &[u8]) -> bool {
    let mut own = own.lock().unwrap_or_else(PoisonError::into_inner);
    match own.get_mut(channel) {
        Some(count) if *count > 1 => {
            *count -= 1;
            true
        }
        Some(_) => {
            own.remove(channel);
            true
        }
        None => false,
    }
}

/// The sharded subscriptions of one view of the cluster (see the module's doc).
pub(super) struct Shards {
    client: Client,
    timeout: Duration,
    push: PushParts,
    slots: SlotMap,
    masters: HashMap<Address, Master>,
    /// Where each subscribed channel is, with its slot.
    channels: HashMap<String, (usize, Address)>,
}

impl Shards {
    /// A set with no subscriptions yet, on the cluster's current slot map.
    pub(super) async fn open(
        client: Client,
        commands: &mut Connection,
        timeout: Duration,
        push: PushParts,
    ) -> Result<Self, BrokerError> {
        let slots = SlotMap::read(commands, timeout).await?;
        Ok(Shards {
            client,
            timeout,
            push,
            slots,
            masters: HashMap::new(),
            channels: HashMap::new(),
        })
    }

    /// Subscribes `channels`, one pipelined write per slot group.
    pub(super) async fn subscribe<'a>(
        &mut self,
        channels: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), BrokerError> {
        let mut groups: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
        // A channel subscribed already is left alone: Redis would not count it twice, and
        // neither may the check.
        for channel in channels {
            if !self.channels.contains_key(channel.as_str()) {
                groups.entry(slot_of(channel)).or_default().push(channel);
            }
        }
        for (slot, group) in groups {
            let address = self
                .slots
                .master(slot)
                .cloned()
                .ok_or(BrokerError::Disconnected)?;
            let timeout = self.timeout;
            let master = self.master(&address).await?;
            let mut pipe = redis::pipe();
            for channel in &group {
                pipe.cmd("SSUBSCRIBE").arg(channel.as_str());
            }
            let mut connection = master.connection.clone();
            let replies: Vec<RedisResult<Value>> = within(timeout, async {
                pipe.ignore_errors().query_async(&mut connection).await
            })
            .await?;
            if let Some(Err(error)) = replies.into_iter().find(Result::is_err) {
                return Err(super::pipeline::classify(&error));
            }
            master.channels += group.len();
            for channel in group {
                self.channels
                    .insert(channel.clone(), (slot, address.clone()));
            }
        }
        Ok(())
    }

    /// Unsubscribes `channel`, if it is subscribed.
    pub(super) async fn unsubscribe(&mut self, channel: &str) -> Result<(), BrokerError> {
        let Some((_, address)) = self.channels.remove(channel) else {
            return Ok(());
        };
        let Some(master) = self.masters.get_mut(&address) else {
            return Ok(());
        };
        master.channels = master.channels.saturating_sub(1);
        *self
            .push
            .own_unsubscribes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(channel.as_bytes().to_vec())
            .or_default() += 1;
        let mut connection = master.connection.clone();
        within(
            self.timeout,
            redis::cmd("SUNSUBSCRIBE")
                .arg(channel)
                .query_async::<Value>(&mut connection),
        )
        .await
        .map(drop)
    }

    /// Checks that this set still matches the cluster: every master answers and holds as
    /// many subscriptions as we made on it, and still serves the slots we listen in. An
    /// error says what no longer matches.
    pub(super) async fn check(&mut self, commands: &mut Connection) -> Result<(), String> {
        for (address, master) in &self.masters {
            let mut connection = master.connection.clone();
            let info: String = within(
                self.timeout,
                redis::cmd("CLIENT")
                    .arg("INFO")
                    .query_async(&mut connection),
            )
            .await
            .map_err(|error| {
                format!("master {}:{} did not answer: {error}", address.0, address.1)
            })?;
            let held = info
                .split_ascii_whitespace()
                .find_map(|field| field.strip_prefix("ssub="))
                .and_then(|count| count.parse::<usize>().ok());
            if held != Some(master.channels) {
                return Err(format!(
                    "master {}:{} holds {held:?} of our {} subscription(s)",
                    address.0, address.1, master.channels
                ));
            }
        }
        let slots = SlotMap::read(commands, self.timeout)
            .await
            .map_err(|error| format!("CLUSTER SLOTS failed: {error}"))?;
        if slots != self.slots {
            let moved = self
                .channels
                .values()
                .find(|(slot, address)| slots.master(*slot) != Some(address));
            if let Some((slot, _)) = moved {
                return Err(format!("slot {slot} has a new master"));
            }
            self.slots = slots;
        }
        Ok(())
    }

    /// The connection to `address`, opened on first use.
    async fn master(&mut self, address: &Address) -> Result<&mut Master, BrokerError> {
        if !self.masters.contains_key(address) {
            let client = self
                .client
                .node(&address.0, address.1)
                .map_err(|error| super::pipeline::classify(&error))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_push_sender(self.push.handler());
            let connection = within(
                self.timeout,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
            let master = Master {
                connection,
                channels: 0,
            };
            self.masters.insert(address.clone(), master);
        }
        self.masters
            .get_mut(address)
            .ok_or(BrokerError::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn slot_maps_read_masters_and_skip_what_they_do_not_know() {
        let range = |start, end, port| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port + 1), bulk("id2")]),
            ])
        };
        let map = SlotMap::parse(Value::Array(vec![
            range(0, 5460, 7000),
            range(5461, 16383, 7002),
            Value::Int(3),
        ]));
        assert_eq!(map.0.len(), 2);
        assert_eq!(map.master(0), Some(&("127.0.0.1".to_owned(), 7000)));
        assert_eq!(map.master(5461), Some(&("127.0.0.1".to_owned(), 7002)));
        assert_eq!(SlotMap::parse(Value::Nil).master(0), None);
    }

    #[test]
    fn only_our_own_unsubscribes_are_expected() {
        let own = OwnUnsubscribes::default();
        own.lock().unwrap().insert(b"a".to_vec(), 2);
        assert!(expected_unsubscribe(&own, b"a"));
        assert!(expected_unsubscribe(&own, b"a"));
        assert!(!expected_unsubscribe(&own, b"a"));
        assert!(!expected_unsubscribe(&own, b"b"));
    }
}
