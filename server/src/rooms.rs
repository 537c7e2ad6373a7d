//! Local room membership and fan-out: the receiving half of the hot path.
//!
//! A message from the backplane is opened once per node, turned into its `message` frame once
//! (see [`crate::relay`]), and those bytes are shared by reference with every local member's
//! outbound queue. Nothing is parsed or serialized again per recipient.
//!
//! Membership lives in a sharded map keyed by channel name. Fan-out holds one room's entry
//! while it offers the frame to each member with a non-blocking `try_send`; nothing awaits under
//! a lock. A member whose queue is full is not waited for: its connection is flagged as a slow
//! consumer and closed by its own task, so one stuck reader never slows its room.
//!
//! The broker is subscribed to a channel exactly while the room has a local member: the first
//! member's `add` calls `subscribe` and the last member's `remove` calls `unsubscribe` while
//! the room's entry is locked, and the broker applies those calls in order, so concurrent joins
//! and leaves can never leave a subscription behind or miss one.
//!
//! Gap-free delivery: message ids count up by one per room (see [`MessageId`]), so each room
//! knows the last id it delivered and can tell a duplicate (dropped), the next message
//! (delivered) and a gap. On a gap, a new epoch, or after the broker reconnected, the room
//! holds back new messages, asks for the missing ones from history (a [`Resync`]), and delivers
//! them and then the held ones in order (see [`ordering`]: an id history does not vouch for
//! never moves a room). A new room first learns where history stands, so that a joiner's
//! history (read up to that point) and its live messages (after it) meet without a gap or an
//! overlap.
//!
//! Payloads larger than any a node can build are dropped before they are opened.

mod drops;
pub mod ordering;
mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{MessageId, PresenceEvent, ServerFrame};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::future::{BoxFuture, Shared};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, HistoryEntry, Inbound};
use crate::envelope::Keyring;
use crate::metrics::Metrics;
use crate::presence::name_aad;
use crate::relay::{self, Relayed};
pub use drops::{DropReason, Drops};
use ordering::{HeldBudget, Order, Sequence, Settled, order, settle};
use throttle::Throttle;

pub type MemberId = u64;

/// Resolves once a new room is subscribed and knows where its history stands: to the id of
/// the newest message before the first one it delivers live (`None`: history is empty).
pub type Ready = Shared<BoxFuture<'static, Result<Option<MessageId>, BrokerError>>>;

/// Where a new member's live messages start.
pub enum Position {
    /// Live messages are those after this id (`None`: every message is live).
    After(Option<MessageId>),
    /// The room is new on this node: its position is known once it is ready.
    Pending(Ready),
}

/// What the rooms ask the hub for when the backplane lost something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Fetch a room's missed messages.
    Room(Resync),
    /// Announce every local member again: presence may have swept them while cut off.
    Presence,
}

/// A request to fetch a room's missed messages from history and hand them to
/// [`Rooms::recovered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    pub channel: String,
    pub generation: u64,
    /// The last message delivered; what follows it is wanted.
    pub after: Option<MessageId>,
}

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

    /// Queues a presence frame only while the queue is at most half full; returns whether it
    /// was queued. A burst of departures (a crashed node's members leave all at once) must not
    /// close healthy connections as slow consumers, nor crowd out their messages: what does
    /// not fit is dropped, and the member list is whole again at the next join.
    fn offer_presence(&self, frame: &Utf8Bytes) -> bool {
        self.queue.capacity() * 2 > self.queue.max_capacity()
            && self.queue.try_send(frame.clone()).is_ok()
    }
}

/// A local member of a room.
pub struct Member {
    pub outbox: Outbox,
    /// Messages up to this id are not delivered: the member has them already (its `since`).
    pub after: Option<MessageId>,
    /// The member's name sealed for the room's presence, kept to announce it again after the
    /// broker reconnected.
    pub sealed_name: Bytes,
}

struct Room {
    /// Tells this room apart from an earlier one on the same channel whose member left.
    generation: u64,
    name: String,
    members: HashMap<MemberId, Member>,
    ready: Ready,
    sequence: Sequence,
}

impl Room {
    /// Offers a message frame to every member that does not have it yet; returns how many
    /// took it.
    fn fan_out(&self, id: MessageId, frame: &Utf8Bytes) -> u64 {
        self.members
            .values()
            .filter(|member| {
                member.after.is_none_or(|after| id > after) && member.outbox.offer(frame)
            })
            .count() as u64
    }

    /// Delivers what history `found` after `last` (the room's position when `last` is
    /// `None` and it was positioning) and then what it held, as [`settle`] allows. Returns
    /// what it settled; when that is incomplete the room stays recovering, and the caller
    /// must ask history again.
    fn resume(
        &mut self,
        last: Option<MessageId>,
        found: Vec<(MessageId, Utf8Bytes)>,
        metrics: &Metrics,
    ) -> Settled {
        let (last, held) = match std::mem::replace(&mut self.sequence, Sequence::Live { last }) {
            Sequence::Positioning { held } => (last, held),
            Sequence::Recovering { last, held } => (last, held),
            Sequence::Live { last } => (last, Default::default()),
        };
        let mut settled = settle(last, found, held);
        for (id, frame) in settled.deliver.drain(..) {
            metrics.messages_out.inc_by(self.fan_out(id, &frame));
        }
        self.sequence = if settled.incomplete() {
            Sequence::Recovering {
                last: settled.last,
                held: Default::default(),
            }
        } else {
            Sequence::Live { last: settled.last }
        };
        settled
    }
}

pub struct Rooms {
    rooms: DashMap<String, Room>,
    keyring: Arc<Keyring>,
    metrics: Arc<Metrics>,
    drops: Drops,
    /// Payloads larger than this did not come from a node.
    max_payload: usize,
    held_budget: HeldBudget,
    decrypt_warnings: Throttle,
    generations: AtomicU64,
    recovery: mpsc::UnboundedSender<Recovery>,
}

impl Rooms {
    /// Rooms whose recovery requests go to `recovery`.
    pub fn new(
        keyring: Arc<Keyring>,
        metrics: Arc<Metrics>,
        recovery: mpsc::UnboundedSender<Recovery>,
    ) -> Self {
        Rooms {
            rooms: DashMap::new(),
            keyring,
            drops: Drops::new(&metrics),
            metrics,
            max_payload: relay::max_payload_len(chat_protocol::limits::DEFAULT_MAX_TEXT_BYTES),
            held_budget: HeldBudget::default(),
            decrypt_warnings: Throttle::new(Duration::from_secs(10)),
            generations: AtomicU64::new(1),
            recovery,
        }
    }

    /// Drops payloads larger than any message of up to `max_text_bytes` (`--max-text-bytes`).
    pub fn with_max_text_bytes(mut self, max_text_bytes: usize) -> Self {
        self.max_payload = relay::max_payload_len(max_text_bytes);
        self
    }

    /// Holds at most this much per room while it waits for history.
    pub fn with_held_budget(mut self, budget: HeldBudget) -> Self {
        self.held_budget = budget;
        self
    }

    /// Counts of payloads dropped for their size or their id.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// Adds `member` to `room` (behind `channel`). When the room is new on this node,
    /// `prepare` is called under the room's lock with the room's generation: it subscribes and
    /// finds where history stands, and must end by calling [`Rooms::positioned`].
    pub fn add(
        &self,
        channel: &str,
        room: &str,
        member: MemberId,
        joining: Member,
        prepare: impl FnOnce(u64) -> Ready,
    ) -> Position {
        let mut entry = self.rooms.entry(channel.to_owned()).or_insert_with(|| {
            self.metrics.rooms.inc();
            let generation = self.generations.fetch_add(1, Ordering::Relaxed);
            Room {
                generation,
                name: room.to_owned(),
                members: HashMap::new(),
                ready: prepare(generation),
                sequence: Sequence::Positioning {
                    held: Default::default(),
                },
            }
        });
        entry.members.insert(member, joining);
        match &entry.sequence {
            Sequence::Positioning { .. } => Position::Pending(entry.ready.clone()),
            Sequence::Live { last } | Sequence::Recovering { last, .. } => Position::After(*last),
        }
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

    /// How many local members the room behind `channel` has.
    pub fn member_count(&self, channel: &str) -> usize {
        self.rooms.get(channel).map_or(0, |room| room.members.len())
    }

    /// A new room learned that `last` is the newest message in history: it delivers what it
    /// held back that came after, and goes live.
    pub fn positioned(&self, channel: &str, generation: u64, last: Option<MessageId>) {
        if let Some(mut room) = self.rooms.get_mut(channel)
            && room.generation == generation
            && matches!(room.sequence, Sequence::Positioning { .. })
        {
            let settled = room.resume(last, Vec::new(), &self.metrics);
            self.settled(channel, room.generation, &settled);
        }
    }

    /// Missing messages arrived from history: they are delivered, then those held back
    /// meanwhile, in id order without duplicates, and the room goes live again.
    pub fn recovered(&self, resync: &Resync, found: Vec<(MessageId, Utf8Bytes)>) {
        if let Some(mut room) = self.rooms.get_mut(&resync.channel)
            && room.generation == resync.generation
            && matches!(room.sequence, Sequence::Recovering { .. })
        {
            let settled = room.resume(None, found, &self.metrics);
            self.settled(&resync.channel, room.generation, &settled);
        }
    }

    /// Counts what resuming a room dropped, and asks history again if that may have been
    /// genuine (a forged id is not in history, so it is not asked about twice).
    fn settled(&self, channel: &str, generation: u64, settled: &Settled) {
        self.drops
            .count(DropReason::Unconfirmed, settled.unconfirmed);
        self.drops.count(DropReason::HeldBudget, settled.overflowed);
        if settled.incomplete() {
            self.request_resync(channel, generation, settled.last);
        }
    }

    /// Whether `resync` still concerns a room that waits for it.
    pub fn wants(&self, resync: &Resync) -> bool {
        self.rooms.get(&resync.channel).is_some_and(|room| {
            room.generation == resync.generation
                && matches!(room.sequence, Sequence::Recovering { .. })
        })
    }

    /// Every local member with its sealed name, to announce them again.
    pub fn members(&self) -> Vec<(String, MemberId, Bytes)> {
        self.rooms
            .iter()
            .flat_map(|room| {
                let channel = room.key().clone();
                room.members
                    .iter()
                    .map(|(id, member)| (channel.clone(), *id, member.sealed_name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Opens a sealed message body and turns it into the room's `message` frame.
    pub fn open_message(
        &self,
        channel: &str,
        id: MessageId,
        sealed_body: Vec<u8>,
    ) -> Result<Utf8Bytes, String> {
        let body = self
            .keyring
            .open(channel.as_bytes(), sealed_body)
            .map_err(|error| error.to_string())?;
        let body = std::str::from_utf8(&body).map_err(|_| "body is not UTF-8".to_owned())?;
        relay::message_frame(id, body)
            .map(Utf8Bytes::from)
            .ok_or_else(|| "body is not a JSON object".to_owned())
    }

    /// Opens history entries into `message` frames; those that do not open are dropped and
    /// counted.
    pub fn open_history(
        &self,
        channel: &str,
        entries: Vec<HistoryEntry>,
    ) -> Vec<(MessageId, Utf8Bytes)> {
        entries
            .into_iter()
            .filter_map(|entry| {
                self.open_message(channel, entry.id, entry.sealed_body)
                    .map(|frame| (entry.id, frame))
                    .map_err(|reason| self.dropped(channel, &reason))
                    .ok()
            })
            .collect()
    }

    /// Opens a sealed member name.
    pub fn open_name(&self, channel: &str, sealed_name: Vec<u8>) -> Result<String, String> {
        let name = self
            .keyring
            .open(&name_aad(channel), sealed_name)
            .map_err(|error| error.to_string())?;
        String::from_utf8(name.to_vec()).map_err(|_| "name is not UTF-8".to_owned())
    }

    /// Counts and (at most every 10 s) logs a payload that did not open.
    pub fn dropped(&self, channel: &str, reason: &str) {
        self.metrics.decrypt_failures.inc();
        self.warn_dropped(channel, reason);
    }

    /// Logs a dropped payload, at most every 10 s (a flood of forged payloads must not flood
    /// the log).
    fn warn_dropped(&self, channel: &str, reason: &str) {
        if let Some(suppressed) = self.decrypt_warnings.allow() {
            log::warn!(
                "dropped a backplane payload on {channel}: {reason} ({suppressed} more dropped since the last warning)"
            );
        }
    }

    fn deliver_message(&self, channel: &str, id: MessageId, sealed_body: Vec<u8>) {
        let frame = match self.open_message(channel, id, sealed_body) {
            Ok(frame) => frame,
            Err(reason) => return self.dropped(channel, &reason),
        };
        let Some(mut room) = self.rooms.get_mut(channel) else {
            // The last local member left while the message was on its way.
            return;
        };
        let room = &mut *room;
        match &mut room.sequence {
            Sequence::Live { last } => match order(*last, id) {
                Order::Next => {
                    *last = Some(id);
                    self.metrics.messages_out.inc_by(room.fan_out(id, &frame));
                }
                Order::Duplicate => {}
                kind @ (Order::Gap | Order::Unconfirmed) => {
                    if kind == Order::Gap {
                        self.metrics.backplane_gaps.inc();
                    }
                    let after = *last;
                    let mut held = ordering::Held::default();
                    held.hold(self.held_budget, id, frame);
                    room.sequence = Sequence::Recovering { last: after, held };
                    self.request_resync(channel, room.generation, after);
                }
            },
            Sequence::Positioning { held } | Sequence::Recovering { held, .. } => {
                // Beyond the budget the message is dropped here and counted once the room
                // resumes; history fills it in then.
                held.hold(self.held_budget, id, frame);
            }
        }
    }

    fn deliver_presence(&self, channel: &str, event: PresenceEvent, sealed_name: Vec<u8>) {
        let name = match self.open_name(channel, sealed_name) {
            Ok(name) => name,
            Err(reason) => return self.dropped(channel, &reason),
        };
        let Some(room) = self.rooms.get(channel) else {
            return;
        };
        let frame = ServerFrame::Presence {
            room: room.name.as_str().into(),
            event,
            name: name.into(),
        };
        let frame = Utf8Bytes::from(frame.to_json());
        let dropped = room
            .members
            .values()
            .filter(|member| !member.outbox.offer_presence(&frame))
            .count();
        self.metrics.presence_dropped.inc_by(dropped as u64);
    }

    fn request_resync(&self, channel: &str, generation: u64, after: Option<MessageId>) {
        // The receiver lives as long as the node; if it is gone the node is stopping.
        let _ = self.recovery.send(Recovery::Room(Resync {
            channel: channel.to_owned(),
            generation,
            after,
        }));
    }
}

impl Inbound for Rooms {
    fn deliver(&self, channel: &[u8], mut payload: Vec<u8>) {
        self.metrics.backplane_messages.inc();
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        if payload.len() > self.max_payload {
            self.drops.count(DropReason::Oversize, 1);
            return self.warn_dropped(channel, "larger than any envelope a node builds");
        }
        match relay::parse(&payload) {
            Some(Relayed::Message { id, offset }) => {
                payload.drain(..offset);
                self.deliver_message(channel, id, payload);
            }
            Some(Relayed::Presence(_)) if payload.len() > relay::MAX_PRESENCE_PAYLOAD_LEN => {
                self.drops.count(DropReason::Oversize, 1);
                self.warn_dropped(channel, "a presence payload longer than any name");
            }
            Some(Relayed::Presence(event)) => {
                payload.remove(0);
                self.deliver_presence(channel, event, payload);
            }
            None => self.dropped(channel, "not a relay payload"),
        }
    }

    fn reconnected(&self) {
        for mut room in self.rooms.iter_mut() {
            if let Sequence::Live { last } = room.sequence {
                room.sequence = Sequence::Recovering {
                    last,
                    held: Default::default(),
                };
                self.request_resync(room.key(), room.generation, last);
            }
        }
        let _ = self.recovery.send(Recovery::Presence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const CHANNEL: &str = "chat:room:c";

    struct Fixture {
        rooms: Rooms,
        keyring: Arc<Keyring>,
        metrics: Arc<Metrics>,
        recovery: mpsc::UnboundedReceiver<Recovery>,
    }

    fn fixture() -> Fixture {
        fixture_with(|rooms| rooms)
    }

    fn fixture_with(configure: impl FnOnce(Rooms) -> Rooms) -> Fixture {
        let keyring = Arc::new(Keyring::new(&[[9; 32]]).unwrap());
        let metrics = Arc::new(Metrics::new());
        let (sender, recovery) = mpsc::unbounded_channel();
        Fixture {
            rooms: configure(Rooms::new(keyring.clone(), metrics.clone(), sender)),
            keyring,
            metrics,
            recovery,
        }
    }

    fn id(seq: u64) -> MessageId {
        MessageId { epoch: 7, seq }
    }

    fn member(outbox: Outbox, after: Option<MessageId>) -> Member {
        Member {
            outbox,
            after,
            sealed_name: Bytes::new(),
        }
    }

    fn never_ready() -> Ready {
        futures::future::pending().boxed().shared()
    }

    impl Fixture {
        /// Adds a member; a new room is positioned at `last` right away. Returns the
        /// member's queue and the room's generation.
        fn join(
            &self,
            member_id: MemberId,
            after: Option<MessageId>,
            last: Option<MessageId>,
        ) -> (mpsc::Receiver<Utf8Bytes>, u64) {
            let (outbox, queue) = Outbox::new(64);
            let mut generation = None;
            self.rooms
                .add(CHANNEL, "c", member_id, member(outbox, after), |g| {
                    generation = Some(g);
                    never_ready()
                });
            if let Some(generation) = generation {
                self.rooms.positioned(CHANNEL, generation, last);
            }
            let generation = self.rooms.rooms.get(CHANNEL).unwrap().generation;
            (queue, generation)
        }

        fn message(&self, seq: u64) -> Vec<u8> {
            let body = relay::message_body("c", "a", &format!("m{seq}"), 1);
            let sealed = self.keyring.seal(CHANNEL.as_bytes(), body.as_bytes());
            relay::message_payload(id(seq), &sealed)
        }

        fn deliver(&self, seq: u64) {
            self.rooms.deliver(CHANNEL.as_bytes(), self.message(seq));
        }

        /// The resync the rooms asked for last; panics if there is none.
        fn resync(&mut self) -> Resync {
            match self.recovery.try_recv() {
                Ok(Recovery::Room(resync)) => resync,
                other => panic!("expected a resync, got {other:?}"),
            }
        }

        fn frame(&self, seq: u64) -> (MessageId, Utf8Bytes) {
            let payload = self.message(seq);
            let Some(Relayed::Message { offset, .. }) = relay::parse(&payload) else {
                unreachable!()
            };
            let frame = self
                .rooms
                .open_message(CHANNEL, id(seq), payload[offset..].to_vec())
                .unwrap();
            (id(seq), frame)
        }
    }

    /// The sequence numbers of the message frames waiting in `queue`.
    fn received(queue: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(frame) = queue.try_recv() {
            let frame: chat_protocol::ServerFrame<'_> = serde_json::from_str(&frame).unwrap();
            if let chat_protocol::ServerFrame::Message { id, .. } = frame {
                seqs.push(id.parse::<MessageId>().unwrap().seq);
            }
        }
        seqs
    }

    #[test]
    fn prepares_on_first_member_and_unsubscribes_after_last() {
        let f = fixture();
        let prepared = std::cell::Cell::new(0);
        let unsubscribes = std::cell::Cell::new(0);
        for member_id in [1, 2] {
            let (outbox, _queue) = Outbox::new(4);
            let position = f
                .rooms
                .add(CHANNEL, "c", member_id, member(outbox, None), |_| {
                    prepared.set(prepared.get() + 1);
                    never_ready()
                });
            assert!(matches!(position, Position::Pending(_)));
        }
        assert_eq!(prepared.get(), 1);
        assert_eq!(f.metrics.rooms.get(), 1);
        f.rooms
            .remove(CHANNEL, 1, || unsubscribes.set(unsubscribes.get() + 1));
        assert_eq!(unsubscribes.get(), 0);
        f.rooms
            .remove(CHANNEL, 2, || unsubscribes.set(unsubscribes.get() + 1));
        assert_eq!(unsubscribes.get(), 1);
        assert_eq!(f.metrics.rooms.get(), 0);
    }

    #[test]
    fn fans_out_one_shared_frame_and_flags_slow_consumers() {
        let f = fixture();
        let (mut fast, _) = f.join(1, None, Some(id(0)));
        let (slow, slow_queue) = Outbox::new(1);
        let slow_flag = slow.overflowed().clone();
        let position = f
            .rooms
            .add(CHANNEL, "c", 2, member(slow, None), |_| never_ready());
        assert!(matches!(position, Position::After(Some(last)) if last == id(0)));
        f.deliver(1);
        f.deliver(2);
        assert_eq!(received(&mut fast), vec![1, 2]);
        assert!(slow_flag.is_cancelled());
        assert_eq!(f.metrics.messages_out.get(), 3);
        drop(slow_queue);
    }

    #[test]
    fn holds_messages_until_positioned_then_delivers_only_newer_ones() {
        let f = fixture();
        let (outbox, mut queue) = Outbox::new(64);
        let mut generation = 0;
        f.rooms.add(CHANNEL, "c", 1, member(outbox, None), |g| {
            generation = g;
            never_ready()
        });
        f.deliver(4);
        f.deliver(5);
        assert!(received(&mut queue).is_empty());
        // History ended at 4 when the room looked: 4 belongs to the joiner's history.
        f.rooms.positioned(CHANNEL, generation, Some(id(4)));
        assert_eq!(received(&mut queue), vec![5]);
        f.deliver(6);
        assert_eq!(received(&mut queue), vec![6]);
    }

    #[test]
    fn drops_duplicates_and_fills_gaps_from_history_in_order() {
        let mut f = fixture();
        let (mut queue, generation) = f.join(1, None, Some(id(0)));
        f.deliver(1);
        f.deliver(1);
        f.deliver(4);
        f.deliver(5);
        assert_eq!(received(&mut queue), vec![1]);
        assert_eq!(f.metrics.backplane_gaps.get(), 1);
        let resync = f.resync();
        assert_eq!(
            resync,
            Resync {
                channel: CHANNEL.into(),
                generation,
                after: Some(id(1)),
            }
        );
        assert!(f.rooms.wants(&resync));
        let found = (2..=4).map(|seq| f.frame(seq)).collect();
        f.rooms.recovered(&resync, found);
        assert!(!f.rooms.wants(&resync));
        assert_eq!(received(&mut queue), vec![2, 3, 4, 5]);
        f.deliver(6);
        assert_eq!(received(&mut queue), vec![6]);
    }

    #[test]
    fn a_reconnect_resyncs_every_live_room_and_announces_members_again() {
        let mut f = fixture();
        let (mut queue, _) = f.join(1, None, Some(id(3)));
        f.rooms.reconnected();
        assert!(matches!(f.recovery.try_recv(), Ok(Recovery::Room(r)) if r.after == Some(id(3))));
        assert_eq!(f.recovery.try_recv(), Ok(Recovery::Presence));
        f.deliver(5);
        assert!(received(&mut queue).is_empty());
    }

    #[test]
    fn a_member_does_not_get_what_it_had_before_joining() {
        let f = fixture();
        let (mut early, _) = f.join(1, None, Some(id(2)));
        let (mut late, _) = f.join(2, Some(id(4)), None);
        for seq in 3..=5 {
            f.deliver(seq);
        }
        assert_eq!(received(&mut early), vec![3, 4, 5]);
        assert_eq!(received(&mut late), vec![5]);
    }

    #[test]
    fn drops_what_does_not_open() {
        let f = fixture();
        let (mut queue, _) = f.join(1, None, None);
        let channel = CHANNEL.as_bytes();
        f.rooms.deliver(channel, b"garbage".to_vec());
        let body = relay::message_body("c", "a", "t", 1);
        let moved = f.keyring.seal(b"chat:room:other", body.as_bytes());
        f.rooms
            .deliver(channel, relay::message_payload(id(0), &moved));
        let foreign = Keyring::new(&[[1; 32]])
            .unwrap()
            .seal(channel, body.as_bytes());
        f.rooms
            .deliver(channel, relay::message_payload(id(0), &foreign));
        let name_as_body = f.keyring.seal(&name_aad(CHANNEL), b"Ada");
        f.rooms
            .deliver(channel, relay::message_payload(id(0), &name_as_body));
        let body_as_name = f.keyring.seal(channel, b"Ada");
        f.rooms.deliver(
            channel,
            relay::presence_payload(PresenceEvent::Join, &body_as_name),
        );
        assert!(queue.try_recv().is_err());
        assert_eq!(f.metrics.decrypt_failures.get(), 5);
    }

    #[test]
    fn presence_events_reach_every_member() {
        let f = fixture();
        let (mut queue, _) = f.join(1, None, None);
        let name = f.keyring.seal(&name_aad(CHANNEL), "Ada".as_bytes());
        f.rooms.deliver(
            CHANNEL.as_bytes(),
            relay::presence_payload(PresenceEvent::Leave, &name),
        );
        assert_eq!(
            queue.try_recv().unwrap().as_str(),
            r#"{"type":"presence","room":"c","event":"leave","name":"Ada"}"#
        );
    }

    #[test]
    fn presence_bursts_take_at_most_half_a_queue_and_close_nobody() {
        let f = fixture();
        let (outbox, mut queue) = Outbox::new(8);
        let flag = outbox.overflowed().clone();
        let mut generation = 0;
        f.rooms.add(CHANNEL, "c", 1, member(outbox, None), |g| {
            generation = g;
            never_ready()
        });
        f.rooms.positioned(CHANNEL, generation, Some(id(0)));
        let name = f.keyring.seal(&name_aad(CHANNEL), b"Ada");
        for _ in 0..20 {
            let leave = relay::presence_payload(PresenceEvent::Leave, &name);
            f.rooms.deliver(CHANNEL.as_bytes(), leave);
        }
        assert_eq!(f.metrics.presence_dropped.get(), 16);
        // Messages still have room, and nobody was flagged.
        f.deliver(1);
        assert!(!flag.is_cancelled());
        let mut frames = 0;
        while queue.try_recv().is_ok() {
            frames += 1;
        }
        assert_eq!(frames, 5);
    }

    #[test]
    fn an_id_history_does_not_hold_cannot_silence_the_room() {
        let forged_ids = [id(u64::MAX), MessageId::MAX, MessageId { epoch: 8, seq: 0 }];
        for forged in forged_ids {
            let mut f = fixture();
            let (mut queue, _) = f.join(1, None, Some(id(0)));
            // A genuine sealed body, replayed under an id no node assigned.
            let payload = f.message(1);
            let Some(Relayed::Message { offset, .. }) = relay::parse(&payload) else {
                unreachable!()
            };
            let replay = relay::message_payload(forged, &payload[offset..]);
            f.rooms.deliver(CHANNEL.as_bytes(), replay);
            assert!(received(&mut queue).is_empty(), "{forged}");
            let resync = f.resync();
            assert_eq!(resync.after, Some(id(0)));
            // History holds nothing after 0: the forged id is dropped, and history asked once
            // more in case what was dropped was genuine.
            f.rooms.recovered(&resync, Vec::new());
            assert_eq!(f.rooms.drops().get(DropReason::Unconfirmed), 1);
            let again = f.resync();
            assert_eq!(again.after, Some(id(0)));
            f.rooms.recovered(&again, Vec::new());
            assert!(f.recovery.try_recv().is_err(), "no third resync");
            f.deliver(1);
            f.deliver(2);
            assert_eq!(received(&mut queue), vec![1, 2], "{forged}");
        }
    }

    #[test]
    fn the_first_message_of_a_new_epoch_is_confirmed_by_history() {
        let mut f = fixture();
        let (mut queue, _) = f.join(1, None, None);
        f.deliver(0);
        assert!(received(&mut queue).is_empty());
        let resync = f.resync();
        assert_eq!(resync.after, None);
        f.rooms.recovered(&resync, vec![f.frame(0)]);
        f.deliver(1);
        assert_eq!(received(&mut queue), vec![0, 1]);
        assert_eq!(f.metrics.backplane_gaps.get(), 0);
    }

    #[test]
    fn payloads_larger_than_any_envelope_are_dropped_unopened() {
        let f = fixture_with(|rooms| rooms.with_max_text_bytes(16));
        let (mut queue, _) = f.join(1, None, Some(id(0)));
        let bound = relay::max_payload_len(16);
        let mut oversize = f.message(1);
        oversize.resize(bound + 1, b'x');
        f.rooms.deliver(CHANNEL.as_bytes(), oversize);
        let long_name = vec![b'n'; relay::MAX_PRESENCE_PAYLOAD_LEN];
        let presence = relay::presence_payload(PresenceEvent::Join, &long_name);
        f.rooms.deliver(CHANNEL.as_bytes(), presence);
        assert_eq!(f.rooms.drops().get(DropReason::Oversize), 2);
        assert_eq!(f.metrics.decrypt_failures.get(), 0, "never opened");
        f.deliver(1);
        assert_eq!(received(&mut queue), vec![1]);
    }

    #[test]
    fn held_messages_beyond_the_byte_budget_are_dropped_then_fetched_from_history() {
        let frame_bytes = fixture().frame(1).1.len();
        let budget = HeldBudget {
            messages: 100,
            bytes: 2 * frame_bytes + frame_bytes / 2,
        };
        let mut f = fixture_with(|rooms| rooms.with_held_budget(budget));
        let (mut queue, _) = f.join(1, None, Some(id(0)));
        for seq in 2..=5 {
            f.deliver(seq);
        }
        let resync = f.resync();
        f.rooms.recovered(&resync, vec![f.frame(1), f.frame(2)]);
        // 2 and 3 were held; 4 and 5 did not fit.
        assert_eq!(received(&mut queue), vec![1, 2, 3]);
        assert_eq!(f.rooms.drops().get(DropReason::HeldBudget), 2);
        let again = f.resync();
        assert_eq!(again.after, Some(id(3)));
        f.rooms.recovered(&again, vec![f.frame(4), f.frame(5)]);
        assert_eq!(received(&mut queue), vec![4, 5]);
    }
}
