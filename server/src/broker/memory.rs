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
//! set of subscribed channels, never a channel's lock, and no cycle can form. The sweeps below
//! only ever `try_lock` a channel: one in use is not idle anyway.
//!
//! Memory is bounded overall, not just per room: a timer sweeps rooms without members whose
//! history is older than its maximum age (they would otherwise stay until touched again), and
//! at most `--history-max-rooms` rooms keep history: a new one evicts the least recently
//! active rooms without members. Cycling through fresh room names cannot grow the node.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::MessageId;
use dashmap::{DashMap, DashSet};
use futures::FutureExt;
use prometheus::IntGauge;

use super::{Broker, BrokerFuture, HistoryEntry, HistoryLimits, HistoryRange, Inbound};
use crate::ids::now_ms;
use crate::metrics::Metrics;
use crate::presence::{Presence, PresenceEntry};
use crate::relay;

/// Rooms that may keep history unless configured otherwise (`--history-max-rooms`).
pub const DEFAULT_MAX_ROOMS: usize = 10_000;

/// The broker of a node on its own: channels, history and presence in this process.
pub struct MemoryBroker {
    inbound: Arc<dyn Inbound>,
    limits: HistoryLimits,
    channels: DashMap<String, Arc<Mutex<Channel>>>,
    subscribed: DashSet<String>,
    max_rooms: usize,
    /// Channels whose history is not empty.
    with_history: AtomicUsize,
    /// The same, as a metric.
    history_rooms: IntGauge,
    /// Counts messages, to tell which room had one last.
    clock: AtomicU64,
}

#[derive(Default)]
struct Channel {
    /// `None` until the first message, and again once history expired.
    epoch: Option<u64>,
    next_seq: u64,
    last_ts: u64,
    /// When the room last had a message, in [`MemoryBroker::clock`] ticks: orders rooms for
    /// eviction exactly, where milliseconds would tie.
    last_active: u64,
    history: VecDeque<HistoryEntry>,
    members: HashMap<String, Bytes>,
}

impl Channel {
    fn expired(&self, now: u64, limits: HistoryLimits) -> bool {
        now.saturating_sub(self.last_ts) > limits.max_age.as_millis() as u64
    }

    /// Drops the history once it is too old; returns whether there was history to drop.
    fn expire(&mut self, now: u64, limits: HistoryLimits) -> bool {
        if !self.expired(now, limits) {
            return false;
        }
        self.epoch = None;
        let had_history = !self.history.is_empty();
        self.history.clear();
        had_history
    }

    /// Idle: nobody is in the room, so nobody notices it go.
    fn idle(&self) -> bool {
        self.members.is_empty()
    }
}

impl MemoryBroker {
    /// A broker that delivers to `inbound` and keeps history within `limits`.
    pub fn new(inbound: Arc<dyn Inbound>, limits: HistoryLimits) -> Self {
        MemoryBroker {
            inbound,
            limits,
            channels: DashMap::new(),
            subscribed: DashSet::new(),
            max_rooms: DEFAULT_MAX_ROOMS,
            with_history: AtomicUsize::new(0),
            history_rooms: IntGauge::new(
                "chat_history_rooms",
                "Rooms whose history the in-memory broker keeps",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
            clock: AtomicU64::new(0),
        }
    }

    /// Keeps history for at most `max_rooms` rooms (at least 1).
    pub fn with_max_rooms(mut self, max_rooms: usize) -> Self {
        self.max_rooms = max_rooms.max(1);
        self
    }

    /// Serves `chat_history_rooms` with `metrics`.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register(self.history_rooms.clone());
    }

    /// How many rooms keep history now.
    pub fn history_rooms(&self) -> usize {
        self.with_history.load(Ordering::Relaxed)
    }

    /// How often idle rooms are swept: often enough that an expired room does not linger
    /// for much longer than its maximum age, rarely enough to cost nothing.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.max_age / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Sweeps idle rooms every [`MemoryBroker::sweep_interval`] until the broker is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let broker: Weak<Self> = Arc::downgrade(self);
        let interval = self.sweep_interval();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.tick().await;
            loop {
                timer.tick().await;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                broker.sweep(now_ms());
            }
        })
    }

    /// Drops every idle room whose history is older than its maximum age; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let limits = self.limits;
        let stale: Vec<String> = self
            .channels
            .iter()
            .filter(|entry| {
                entry
                    .value()
                    .try_lock()
                    .is_ok_and(|state| state.idle() && state.expired(now, limits))
            })
            .map(|entry| entry.key().clone())
            .collect();
        stale
            .iter()
            .filter(|name| self.forget_if(name, |state| state.expired(now, limits)))
            .count()
    }

    /// Evicts the least recently active idle rooms with history until at most `max_rooms`
    /// keep history. A tenth of the cap goes at once, so that a stream of new rooms pays for
    /// one scan per many rooms rather than one per room.
    fn evict(&self) {
        let excess = self.history_rooms().saturating_sub(self.max_rooms);
        if excess == 0 {
            return;
        }
        let wanted = excess + self.max_rooms / 10;
        let mut idle: Vec<(u64, String)> = self
            .channels
            .iter()
            .filter_map(|entry| {
                let state = entry.value().try_lock().ok()?;
                (state.idle() && !state.history.is_empty())
                    .then(|| (state.last_active, entry.key().clone()))
            })
            .collect();
        if idle.len() > wanted {
            idle.select_nth_unstable(wanted);
            idle.truncate(wanted);
        }
        for (_, name) in idle {
            self.forget_if(&name, |_| true);
        }
    }

    /// Forgets the channel `name` if it is idle and `also` holds; returns whether it did.
    fn forget_if(&self, name: &str, also: impl Fn(&Channel) -> bool) -> bool {
        let mut had_history = false;
        let removed = self
            .channels
            .remove_if(name, |_, channel| {
                channel.try_lock().is_ok_and(|state| {
                    had_history = !state.history.is_empty();
                    state.idle() && also(&state)
                })
            })
            .is_some();
        if removed && had_history {
            self.history_dropped();
        }
        removed
    }

    fn history_started(&self) {
        self.with_history.fetch_add(1, Ordering::Relaxed);
        self.history_rooms.inc();
    }

    fn history_dropped(&self) {
        self.with_history.fetch_sub(1, Ordering::Relaxed);
        self.history_rooms.dec();
    }

    fn channel(&self, name: &str) -> Arc<Mutex<Channel>> {
        self.channels.entry(name.to_owned()).or_default().clone()
    }

    /// Runs `f` on the channel under its lock; forgets the channel once it holds nothing.
    fn with_channel<T>(&self, name: &str, f: impl FnOnce(&mut Channel) -> T) -> T {
        loop {
            let channel = self.channel(name);
            let mut state = lock(&channel);
            // Forgotten (swept, evicted or emptied) between finding and locking it: whatever
            // `f` did to it now would be lost, so start again with the current channel.
            let current = self
                .channels
                .get(name)
                .is_some_and(|c| Arc::ptr_eq(c.value(), &channel));
            if !current {
                continue;
            }
            let result = f(&mut state);
            let empty = state.history.is_empty() && state.members.is_empty();
            drop(state);
            if empty {
                self.channels.remove_if(name, |_, c| {
                    Arc::ptr_eq(c, &channel)
                        && c.try_lock()
                            .is_ok_and(|s| s.history.is_empty() && s.members.is_empty())
                });
            }
            return result;
        }
    }

    fn announce(&self, channel: &str, payload: impl FnOnce() -> Vec<u8>) {
        if self.subscribed.contains(channel) {
            self.inbound.deliver(channel.as_bytes(), payload());
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
        let (id, started) = self.with_channel(channel, |state| {
            let now = now_ms();
            if state.expire(now, limits) {
                self.history_dropped();
            }
            let started = state.history.is_empty();
            let epoch = *state.epoch.get_or_insert_with(|| {
                state.next_seq = 0;
                now
            });
            let id = MessageId {
                epoch,
                seq: state.next_seq,
            };
            state.next_seq = state.next_seq.saturating_add(1);
            state.last_ts = now;
            state.last_active = self.clock.fetch_add(1, Ordering::Relaxed);
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
            (id, started)
        });
        if started {
            self.history_started();
            self.evict();
        }
        ready(id)
    }

    fn signal(&self, channel: &str, payload: Bytes) {
        self.announce(channel, || payload.to_vec());
    }

    fn history(&self, channel: &str, range: HistoryRange) -> BrokerFuture<Vec<HistoryEntry>> {
        let limits = self.limits;
        let entries = self.with_channel(channel, |state| {
            if state.expire(now_ms(), limits) {
                self.history_dropped();
            }
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
            self.announce(channel, || relay::join_payload(member, &sealed_name));
            state.members.insert(member.to_owned(), sealed_name);
        });
        ready(())
    }

    fn remove(&self, channel: &str, member: &str) {
        self.with_channel(channel, |state| {
            if state.members.remove(member).is_some() {
                self.announce(channel, || relay::leave_payload(member));
            }
        });
    }

    fn members(&self, channel: &str) -> BrokerFuture<Vec<PresenceEntry>> {
        let members = self.with_channel(channel, |state| {
            let entries = state.members.iter().map(|(member, name)| PresenceEntry {
                member: member.clone(),
                sealed_name: name.to_vec(),
            });
            entries.collect()
        });
        ready(members)
    }

    fn retire(&self) -> BrokerFuture {
        ready(())
    }
}

#[cfg(test)]
mod tests;
