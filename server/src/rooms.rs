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
    /// Whether messages may have been missed (a gap, a lost connection), so history must
    /// fill them in; otherwise every message reaches the node live and history only has to
    /// vouch for an id the room cannot place (its first, or a new epoch).
    pub missed: bool,
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
        newest: Option<MessageId>,
        metrics: &Metrics,
    ) -> Settled {
        let (last, held) = match std::mem::replace(&mut self.sequence, Sequence::Live { last }) {
            Sequence::Positioning { held } => (last, held),
            Sequence::Recovering { last, held } => (last, held),
            Sequence::Live { last } => (last, Default::default()),
        };
        let mut settled = settle(last, found, newest, held);
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
            let settled = room.resume(last, Vec::new(), None, &self.metrics);
            self.settled(channel, room.generation, &settled);
        }
    }

    /// Missing messages arrived from history, with the newest id it held: they are delivered,
    /// then those held back meanwhile, in id order without duplicates, and the room goes live
    /// again.
    pub fn recovered(
        &self,
        resync: &Resync,
        found: Vec<(MessageId, Utf8Bytes)>,
        newest: Option<MessageId>,
    ) {
        if let Some(mut room) = self.rooms.get_mut(&resync.channel)
            && room.generation == resync.generation
            && matches!(room.sequence, Sequence::Recovering { .. })
        {
            let settled = room.resume(None, found, newest, &self.metrics);
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
            self.request_resync(channel, generation, settled.last, true);
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
                    let missed = kind == Order::Gap;
                    self.request_resync(channel, room.generation, after, missed);
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

    fn request_resync(
        &self,
        channel: &str,
        generation: u64,
        after: Option<MessageId>,
        missed: bool,
    ) {
        // The receiver lives as long as the node; if it is gone the node is stopping.
        let _ = self.recovery.send(Recovery::Room(Resync {
            channel: channel.to_owned(),
            generation,
            after,
            missed,
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
                self.request_resync(room.key(), room.generation, last, true);
            }
        }
        let _ = self.recovery.send(Recovery::Presence);
    }
}

#[cfg(test)]
mod tests;
