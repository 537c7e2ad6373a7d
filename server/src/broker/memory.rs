//! The in-memory broker: the backplane and presence of a single node without Redis.
//!
//! It keeps the Redis broker's semantics (only subscribed channels are delivered, publishing
//! to a channel nobody hears succeeds, ids count up per room within an epoch, history is
//! trimmed to its size and dropped when idle for its maximum age) so that a node behaves the
//! same with either broker. It delivers synchronously on the publisher's task, under the
//! channel's lock, so that a room's messages are delivered in id order.
//!
//! Lock order: a channel's lock may be held while delivering (which locks a room), and rooms
//! call `subscribe`/`unsubscribe` while they hold a room's entry; so those two touch only the
//! set of subscribed channels, never a channel's lock, and no cycle can form.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use chat_protocol::{MessageId, PresenceEvent};
use dashmap::{DashMap, DashSet};
use futures::FutureExt;

use super::{Broker, BrokerFuture, HistoryEntry, HistoryLimits, HistoryRange, Inbound};
use crate::ids::now_ms;
use crate::presence::Presence;
use crate::relay;

pub struct MemoryBroker {
    inbound: Arc<dyn Inbound>,
    limits: HistoryLimits,
    channels: DashMap<String, Arc<Mutex<Channel>>>,
    subscribed: DashSet<String>,
}

#[derive(Default)]
struct Channel {
    /// `None` until the first message, and again once history expired.
    epoch: Option<u64>,
    next_seq: u64,
    last_ts: u64,
    history: VecDeque<HistoryEntry>,
    members: HashMap<String, Bytes>,
}

impl Channel {
    fn expire(&mut self, now: u64, limits: HistoryLimits) {
        if now.saturating_sub(self.last_ts) > limits.max_age.as_millis() as u64 {
            self.epoch = None;
            self.history.clear();
        }
    }
}

impl MemoryBroker {
    pub fn new(inbound: Arc<dyn Inbound>, limits: HistoryLimits) -> Self {
        MemoryBroker {
            inbound,
            limits,
            channels: DashMap::new(),
            subscribed: DashSet::new(),
        }
    }

    fn channel(&self, name: &str) -> Arc<Mutex<Channel>> {
        self.channels.entry(name.to_owned()).or_default().clone()
    }

    /// Runs `f` on the channel under its lock; forgets the channel once it holds nothing.
    fn with_channel<T>(&self, name: &str, f: impl FnOnce(&mut Channel) -> T) -> T {
        let channel = self.channel(name);
        let mut state = lock(&channel);
        let result = f(&mut state);
        let empty = state.history.is_empty() && state.members.is_empty();
        drop(state);
        if empty {
            self.channels
                .remove_if(name, |_, c| Arc::ptr_eq(c, &channel));
        }
        result
    }

    fn announce(&self, channel: &str, event: PresenceEvent, sealed: &[u8]) {
        if self.subscribed.contains(channel) {
            let payload = relay::presence_payload(event, sealed);
            self.inbound.deliver(channel.as_bytes(), payload);
        }
    }
}

fn lock(channel: &Mutex<Channel>) -> MutexGuard<'_, Channel> {
    // Every update leaves the channel consistent, so a panic elsewhere cannot corrupt it.
    channel.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ready<T: Send + 'static>(value: T) -> BrokerFuture<T> {
    futures::future::ready(Ok(value)).boxed()
}

impl Broker for MemoryBroker {
    fn publish(&self, channel: &str, sealed_body: Bytes, ts: u64) -> BrokerFuture<MessageId> {
        let limits = self.limits;
        let id = self.with_channel(channel, |state| {
            let now = now_ms();
            state.expire(now, limits);
            let epoch = *state.epoch.get_or_insert_with(|| {
                state.next_seq = 0;
                now
            });
            let id = MessageId {
                epoch,
                seq: state.next_seq,
            };
            state.next_seq += 1;
            state.last_ts = now;
            state.history.push_back(HistoryEntry {
                id,
                sealed_body: sealed_body.to_vec(),
                ts,
            });
            while state.history.len() > limits.size {
                state.history.pop_front();
            }
            if self.subscribed.contains(channel) {
                let payload = relay::message_payload(id, &sealed_body);
                self.inbound.deliver(channel.as_bytes(), payload);
            }
            id
        });
        ready(id)
    }

    fn history(&self, channel: &str, range: HistoryRange) -> BrokerFuture<Vec<HistoryEntry>> {
        let limits = self.limits;
        let entries = self.with_channel(channel, |state| {
            state.expire(now_ms(), limits);
            let history = &state.history;
            match range {
                HistoryRange::Newest { through, limit } => {
                    let mut newest: Vec<HistoryEntry> = history
                        .iter()
                        .rev()
                        .filter(|e| through.is_none_or(|t| e.id <= t))
                        .take(limit)
                        .cloned()
                        .collect();
                    newest.reverse();
                    newest
                }
                HistoryRange::From {
                    from,
                    through,
                    limit,
                } => history
                    .iter()
                    .filter(|e| e.id >= from && through.is_none_or(|t| e.id <= t))
                    .take(limit)
                    .cloned()
                    .collect(),
            }
        });
        ready(entries)
    }

    fn subscribe(&self, channel: &str) -> BrokerFuture {
        self.subscribed.insert(channel.to_owned());
        ready(())
    }

    fn unsubscribe(&self, channel: &str) {
        self.subscribed.remove(channel);
    }

    fn is_ready(&self) -> bool {
        true
    }
}

impl Presence for MemoryBroker {
    fn add(&self, channel: &str, member: &str, sealed_name: Bytes) -> BrokerFuture {
        self.with_channel(channel, |state| {
            self.announce(channel, PresenceEvent::Join, &sealed_name);
            state.members.insert(member.to_owned(), sealed_name);
        });
        ready(())
    }

    fn remove(&self, channel: &str, member: &str) {
        self.with_channel(channel, |state| {
            if let Some(sealed_name) = state.members.remove(member) {
                self.announce(channel, PresenceEvent::Leave, &sealed_name);
            }
        });
    }

    fn members(&self, channel: &str) -> BrokerFuture<Vec<Vec<u8>>> {
        let names = self.with_channel(channel, |state| {
            state.members.values().map(|name| name.to_vec()).collect()
        });
        ready(names)
    }

    fn retire(&self) -> BrokerFuture {
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Vec<u8>)>>);

    impl Inbound for Recorder {
        fn deliver(&self, channel: &[u8], payload: Vec<u8>) {
            let channel = String::from_utf8(channel.to_vec()).unwrap();
            self.0.lock().unwrap().push((channel, payload));
        }

        fn reconnected(&self) {}
    }

    fn broker(size: usize) -> (MemoryBroker, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let limits = HistoryLimits {
            size,
            max_age: Duration::from_secs(60),
        };
        (MemoryBroker::new(recorder.clone(), limits), recorder)
    }

    async fn publish(broker: &MemoryBroker, channel: &str, body: &'static [u8]) -> MessageId {
        broker
            .publish(channel, Bytes::from_static(body), 1)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn delivers_only_subscribed_channels_with_counting_ids() {
        let (broker, recorder) = broker(10);
        broker.subscribe("a").await.unwrap();
        let first = publish(&broker, "a", b"1").await;
        let other = publish(&broker, "b", b"2").await;
        broker.unsubscribe("a");
        let second = publish(&broker, "a", b"3").await;
        assert_eq!((first.seq, second.seq, other.seq), (0, 1, 0));
        assert_eq!(first.epoch, second.epoch);
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![("a".to_owned(), relay::message_payload(first, b"1"))]
        );
    }

    #[tokio::test]
    async fn keeps_the_newest_entries_and_reads_ranges() {
        let (broker, _) = broker(3);
        let mut ids = Vec::new();
        for body in [&b"1"[..], b"2", b"3", b"4", b"5"] {
            ids.push(
                broker
                    .publish("a", Bytes::from_static(body), 1)
                    .await
                    .unwrap(),
            );
        }
        let seqs =
            |entries: Vec<HistoryEntry>| entries.iter().map(|e| e.id.seq).collect::<Vec<_>>();
        let newest = HistoryRange::Newest {
            through: None,
            limit: 10,
        };
        assert_eq!(
            seqs(broker.history("a", newest).await.unwrap()),
            vec![2, 3, 4]
        );
        let newest_through = HistoryRange::Newest {
            through: Some(ids[3]),
            limit: 1,
        };
        assert_eq!(
            seqs(broker.history("a", newest_through).await.unwrap()),
            vec![3]
        );
        let from = HistoryRange::From {
            from: ids[3],
            through: None,
            limit: 10,
        };
        let entries = broker.history("a", from).await.unwrap();
        assert_eq!(entries[0].sealed_body, b"4");
        assert_eq!(seqs(entries), vec![3, 4]);
    }

    #[tokio::test]
    async fn announces_presence_to_subscribers() {
        let (broker, recorder) = broker(10);
        broker.subscribe("a").await.unwrap();
        Presence::add(&broker, "a", "n|1", Bytes::from_static(b"sealed"))
            .await
            .unwrap();
        assert_eq!(broker.members("a").await.unwrap(), vec![b"sealed".to_vec()]);
        Presence::remove(&broker, "a", "n|1");
        Presence::remove(&broker, "a", "n|1");
        assert!(broker.members("a").await.unwrap().is_empty());
        let payloads: Vec<Vec<u8>> = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(
            payloads,
            vec![
                relay::presence_payload(PresenceEvent::Join, b"sealed"),
                relay::presence_payload(PresenceEvent::Leave, b"sealed"),
            ]
        );
    }
}
