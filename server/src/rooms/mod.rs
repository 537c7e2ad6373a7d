//! Local room membership and fan-out.
//!
//! Membership lives in a sharded map keyed by channel name. Fan-out holds one room's entry
//! while it offers the frame to each member's [`Outbox`] without waiting; nothing awaits under
//! a lock, and nothing is parsed or serialized again per recipient.
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
//! Each room also holds its [`Roster`]: who is in it on every node, kept current from the
//! room's presence events, and reported to its members at most once per interval.
//!
//! Where to find the rest: [`delivery`] (from a backplane payload to the queues), [`open`]
//! (decrypting payloads), [`ordering`] (the pure ordering rules), [`recovery`] (asking history
//! and resuming), [`roster`] (the pure member list) and [`presence`] (keeping it and reporting
//! it), [`typing`] (typing signals, outside the ordering), [`outbox`] (a member's bounded
//! queue), [`drops`] and [`throttle`] (counting and logging what was refused).

mod delivery;
mod drops;
mod open;
pub mod ordering;
mod outbox;
mod presence;
mod recovery;
pub mod roster;
mod throttle;
mod typing;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::wire::TextFrame;
use bytes::Bytes;
use chat_protocol::MessageId;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::future::{BoxFuture, Shared};
use tokio::sync::mpsc;

use crate::broker::BrokerError;
use crate::envelope::Keyring;
use crate::metrics::Metrics;
use crate::relay;
pub use drops::{DropReason, Drops};
pub use open::PayloadError;
use ordering::{HeldBudget, Sequence};
pub use outbox::{Inbox, Outbox};
pub use recovery::{Recovery, Resync};
use roster::Change;
pub use roster::{MemberPage, Roster};
use throttle::Throttle;

/// A local member, unique on this node.
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

/// A local member of a room.
pub struct Member {
    /// The member's connection queue; fan-out never waits on it.
    pub outbox: Outbox,
    /// Messages up to this id are not delivered: the member has them already (its `since`).
    pub after: Option<MessageId>,
    /// The member's name sealed for the room's presence, kept to announce it again after the
    /// broker reconnected.
    pub sealed_name: Bytes,
    /// The member's presence key, `<node id>|<member id>`.
    pub key: Box<str>,
    /// The member's name.
    pub name: Arc<str>,
    /// The roster's [`changes`](Roster::changes) once the member was in it: reports that
    /// hold nothing newer are not sent to it (its `joined` tells it as much).
    pub seen_changes: u64,
}

/// One room with local members.
struct Room {
    /// Tells this room apart from an earlier one on the same channel whose member left.
    generation: u64,
    name: String,
    members: HashMap<MemberId, Member>,
    ready: Ready,
    sequence: Sequence,
    roster: Roster,
}

impl Room {
    /// Offers a message frame to every member that does not have it yet; returns how many
    /// took it.
    fn fan_out(&self, id: MessageId, frame: &TextFrame) -> u64 {
        self.members
            .values()
            .filter(|member| {
                member.after.is_none_or(|after| id > after) && member.outbox.offer(frame)
            })
            .count() as u64
    }
}

/// Every room with a local member on this node.
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
    /// Rooms whose roster changed since their last report, each listed once.
    unreported: Mutex<Vec<String>>,
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
            drops: Drops::backplane_dropped(&metrics),
            metrics,
            max_payload: relay::max_payload_len(chat_protocol::limits::DEFAULT_MAX_TEXT_BYTES),
            held_budget: HeldBudget::default(),
            decrypt_warnings: Throttle::new(Duration::from_secs(10)),
            generations: AtomicU64::new(1),
            recovery,
            unreported: Mutex::new(Vec::new()),
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

    /// Adds `member` to `room` (behind `channel`) and to its roster. When the room is new on
    /// this node, `prepare` is called under the room's lock with the room's generation: it
    /// subscribes, finds where history stands and loads the roster, and must end by calling
    /// [`Rooms::positioned`] and [`Rooms::roster_loaded`] (its roster's first load is `0`).
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
                roster: Roster::loading(),
            }
        });
        let change = Change::Join {
            member: joining.key.clone(),
            name: joining.name.clone(),
        };
        self.change_roster(channel, &mut entry, change);
        let joining = Member {
            seen_changes: entry.roster.changes(),
            ..joining
        };
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
            if let Some(left) = room.get_mut().members.remove(&member) {
                let change = Change::Leave { member: left.key };
                self.change_roster(channel, room.get_mut(), change);
            }
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

    /// Applies a change to a room's roster and lists the room for the next report.
    fn change_roster(&self, channel: &str, room: &mut Room, change: Change) {
        self.update_roster(channel, room, |roster| roster.apply(change));
    }

    /// Updates a room's roster with `update`, and lists the room for the next report if that
    /// gave it something to report.
    fn update_roster<T>(
        &self,
        channel: &str,
        room: &mut Room,
        update: impl FnOnce(&mut Roster) -> T,
    ) -> T {
        let was_dirty = room.roster.is_dirty();
        let outcome = update(&mut room.roster);
        if !was_dirty && room.roster.is_dirty() {
            self.unreported
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(channel.to_owned());
        }
        outcome
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
}

#[cfg(test)]
mod tests;
