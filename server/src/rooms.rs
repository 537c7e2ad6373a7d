//! Local room membership and fan-out: the receiving half of the hot path.
//!
//! A message from the backplane is opened once per node, checked once, and its bytes, which are
//! already the exact `message` frame the sender's node serialized, are shared by reference with
//! every local member's outbound queue. Nothing is parsed or serialized again per recipient.
//!
//! Membership lives in a sharded map keyed by channel name. Fan-out holds one shard's read lock
//! while it offers the frame to each member with a non-blocking `try_send`; nothing awaits under
//! a lock. A member whose queue is full is not waited for: its connection is flagged as a slow
//! consumer and closed by its own task, so one stuck reader never slows its room.
//!
//! The broker is subscribed to a channel exactly while the room has a local member: the first
//! member's `add` calls `subscribe` and the last member's `remove` calls `unsubscribe` while
//! the room's entry is locked, and the broker applies those calls in order, so concurrent joins
//! and leaves can never leave a subscription behind or miss one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::FutureExt;
use futures::future::Shared;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerFuture, Inbound};
use crate::envelope::Keyring;
use crate::metrics::Metrics;

pub type MemberId = u64;

/// Resolves once the node's subscription to a room's channel is active.
pub type Subscription = Shared<BrokerFuture>;

/// The sending end of one connection's bounded outbound queue.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Utf8Bytes>,
    overflowed: CancellationToken,
}

impl Outbox {
    /// A queue of `capacity` frames; the receiver belongs to the connection's task.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Utf8Bytes>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let outbox = Outbox {
            queue,
            overflowed: CancellationToken::new(),
        };
        (outbox, receiver)
    }

    /// Cancelled once the queue overflowed: the connection must close as a slow consumer.
    pub fn overflowed(&self) -> &CancellationToken {
        &self.overflowed
    }

    /// Queues a frame without waiting; returns whether it was queued.
    fn offer(&self, frame: &Utf8Bytes) -> bool {
        match self.queue.try_send(frame.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.overflowed.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

struct Room {
    members: HashMap<MemberId, Outbox>,
    subscription: Subscription,
}

pub struct Rooms {
    rooms: DashMap<String, Room>,
    keyring: Arc<Keyring>,
    metrics: Arc<Metrics>,
    decrypt_warnings: Throttle,
}

impl Rooms {
    pub fn new(keyring: Arc<Keyring>, metrics: Arc<Metrics>) -> Self {
        Rooms {
            rooms: DashMap::new(),
            keyring,
            metrics,
            decrypt_warnings: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Adds `member` to the room behind `channel`. When the room is new on this node,
    /// `subscribe` is called under the room's lock; every member gets the same subscription.
    pub fn add(
        &self,
        channel: &str,
        member: MemberId,
        outbox: Outbox,
        subscribe: impl FnOnce() -> BrokerFuture,
    ) -> Subscription {
        let mut room = self.rooms.entry(channel.to_owned()).or_insert_with(|| {
            self.metrics.rooms.inc();
            Room {
                members: HashMap::new(),
                subscription: subscribe().shared(),
            }
        });
        room.members.insert(member, outbox);
        room.subscription.clone()
    }

    /// Removes `member`; when it was the room's last local member, `unsubscribe` is called
    /// under the room's lock and the room is forgotten.
    pub fn remove(&self, channel: &str, member: MemberId, unsubscribe: impl FnOnce()) {
        if let Entry::Occupied(mut room) = self.rooms.entry(channel.to_owned()) {
            room.get_mut().members.remove(&member);
            if room.get().members.is_empty() {
                unsubscribe();
                room.remove();
                self.metrics.rooms.dec();
            }
        }
    }
}

impl Inbound for Rooms {
    fn deliver(&self, channel: &[u8], payload: Vec<u8>) {
        self.metrics.backplane_messages.inc();
        let frame = match self.keyring.open(channel, payload) {
            Ok(plaintext) => {
                Utf8Bytes::try_from(plaintext).map_err(|_| "plaintext is not UTF-8".to_owned())
            }
            Err(error) => Err(error.to_string()),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(reason) => {
                self.metrics.decrypt_failures.inc();
                if let Some(suppressed) = self.decrypt_warnings.allow() {
                    log::warn!(
                        "dropped a backplane payload on {}: {reason} ({suppressed} more dropped since the last warning)",
                        String::from_utf8_lossy(channel)
                    );
                }
                return;
            }
        };
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        let Some(room) = self.rooms.get(channel) else {
            // The last local member left while the message was on its way.
            return;
        };
        let delivered = room
            .members
            .values()
            .filter(|outbox| outbox.offer(&frame))
            .count();
        drop(room);
        self.metrics.messages_out.inc_by(delivered as u64);
    }
}

/// Lets an event through at most once per interval and counts the ones held back, so a flood
/// of forged payloads cannot flood the log.
struct Throttle {
    interval: Duration,
    started: Instant,
    next_allowed_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            started: Instant::now(),
            next_allowed_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(number held back since the last one let through)` when this event may be logged.
    fn allow(&self) -> Option<u64> {
        let now = self.started.elapsed().as_millis() as u64;
        let next = self.next_allowed_ms.load(Ordering::Relaxed);
        let until = now + self.interval.as_millis() as u64;
        if now >= next
            && self
                .next_allowed_ms
                .compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerError;

    fn rooms() -> (Rooms, Arc<Keyring>, Arc<Metrics>) {
        let keyring = Arc::new(Keyring::new(&[[9; 32]]).unwrap());
        let metrics = Arc::new(Metrics::new());
        (
            Rooms::new(keyring.clone(), metrics.clone()),
            keyring,
            metrics,
        )
    }

    fn subscribed() -> BrokerFuture {
        futures::future::ready(Ok::<(), BrokerError>(())).boxed()
    }

    #[test]
    fn subscribes_on_first_member_and_unsubscribes_after_last() {
        let (rooms, _, metrics) = rooms();
        let subscribes = std::cell::Cell::new(0);
        let unsubscribes = std::cell::Cell::new(0);
        let (a, _rx_a) = Outbox::new(4);
        let (b, _rx_b) = Outbox::new(4);
        for (id, outbox) in [(1, a), (2, b)] {
            let subscription = rooms.add("c", id, outbox, || {
                subscribes.set(subscribes.get() + 1);
                subscribed()
            });
            assert_eq!(subscription.now_or_never(), Some(Ok(())));
        }
        let members = rooms.rooms.get("c").map_or(0, |room| room.members.len());
        assert_eq!((subscribes.get(), members), (1, 2));
        assert_eq!(metrics.rooms.get(), 1);
        rooms.remove("c", 1, || unsubscribes.set(unsubscribes.get() + 1));
        assert_eq!(unsubscribes.get(), 0);
        rooms.remove("c", 2, || unsubscribes.set(unsubscribes.get() + 1));
        assert_eq!(unsubscribes.get(), 1);
        assert_eq!(metrics.rooms.get(), 0);
    }

    #[test]
    fn fans_out_one_shared_frame_and_flags_slow_consumers() {
        let (rooms, keyring, metrics) = rooms();
        let (fast, mut fast_rx) = Outbox::new(8);
        let (slow, _slow_rx) = Outbox::new(1);
        let slow_flag = slow.overflowed().clone();
        assert_eq!(
            rooms.add("c", 1, fast, subscribed).now_or_never(),
            Some(Ok(()))
        );
        assert_eq!(
            rooms.add("c", 2, slow, subscribed).now_or_never(),
            Some(Ok(()))
        );
        for _ in 0..2 {
            rooms.deliver(b"c", keyring.seal(b"c", b"{\"type\":\"message\"}").to_vec());
        }
        assert_eq!(
            fast_rx.try_recv().unwrap().as_str(),
            "{\"type\":\"message\"}"
        );
        assert!(fast_rx.try_recv().is_ok());
        assert!(slow_flag.is_cancelled());
        assert_eq!(metrics.messages_out.get(), 3);
    }

    #[test]
    fn drops_what_does_not_open() {
        let (rooms, keyring, metrics) = rooms();
        let (member, mut rx) = Outbox::new(8);
        assert_eq!(
            rooms.add("c", 1, member, subscribed).now_or_never(),
            Some(Ok(()))
        );
        rooms.deliver(b"c", b"garbage".to_vec());
        rooms.deliver(b"c", keyring.seal(b"other", b"moved").to_vec());
        let foreign = Keyring::new(&[[1; 32]]).unwrap();
        rooms.deliver(b"c", foreign.seal(b"c", b"foreign").to_vec());
        assert!(rx.try_recv().is_err());
        assert_eq!(metrics.decrypt_failures.get(), 3);
    }

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let throttle = Throttle::new(Duration::from_secs(60));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }
}
