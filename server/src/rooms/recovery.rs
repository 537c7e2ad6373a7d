//! Recovery: how a room that lost its place gets it back from history.
//!
//! On a gap, a new epoch, or after the broker reconnected, a room holds back new messages and
//! asks the hub (through an unbounded channel the hub drains: the requests are few, one per
//! room at a time, and must not be lost) for the missing ones. When history answers, the room
//! delivers what it found and then what it held, as [`settle`] allows, and goes live again; a
//! new room does the same once it learns where history stands. The ordering rules themselves
//! live in [`ordering`](super::ordering), a pure type tested on its own.

use crate::wire::TextFrame;
use chat_protocol::MessageId;

use super::drops::DropReason;
use super::ordering::{Sequence, Settled, settle};
use super::{Room, Rooms};
use crate::metrics::Metrics;

/// What the rooms ask the hub for when the backplane lost something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Fetch a room's missed messages.
    Room(Resync),
    /// Announce every local member again: presence may have swept them while cut off.
    Presence,
    /// Read a room's members from presence for load `load` of its roster, and hand them to
    /// [`Rooms::roster_loaded`].
    Roster {
        /// The room's backplane channel.
        channel: String,
        /// The room the request is for.
        generation: u64,
        /// Which load of the roster this is.
        load: u64,
    },
}

/// A request to fetch a room's missed messages from history and hand them to
/// [`Rooms::recovered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// The room's backplane channel.
    pub channel: String,
    /// The room the request is for: a room that was forgotten and joined again is another.
    pub generation: u64,
    /// The last message delivered; what follows it is wanted.
    pub after: Option<MessageId>,
    /// Whether messages may have been missed (a gap, a lost connection), so history must
    /// fill them in; otherwise every message reaches the node live and history only has to
    /// vouch for an id the room cannot place (its first, or a new epoch).
    pub missed: bool,
}

impl Room {
    /// Delivers what history `found` after `last` (the room's position when `last` is
    /// `None` and it was positioning) and then what it held, as [`settle`] allows. Returns
    /// what it settled; when that is incomplete the room stays recovering, and the caller
    /// must ask history again.
    fn resume(
        &mut self,
        last: Option<MessageId>,
        found: Vec<(MessageId, TextFrame)>,
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

impl Rooms {
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
        found: Vec<(MessageId, TextFrame)>,
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
            .inc_by(DropReason::Unconfirmed, settled.unconfirmed);
        self.drops
            .inc_by(DropReason::HeldBudget, settled.overflowed);
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

    /// After the broker reconnected, every live room may have missed messages and presence
    /// events: each asks history, every roster is read again, and every local member is
    /// announced again.
    pub(super) fn recover_all(&self) {
        for mut room in self.rooms.iter_mut() {
            if let Sequence::Live { last } = room.sequence {
                room.sequence = Sequence::Recovering {
                    last,
                    held: Default::default(),
                };
                self.request_resync(room.key(), room.generation, last, true);
            }
        }
        self.reload_rosters();
        let _ = self.recovery.send(Recovery::Presence);
    }

    /// Asks the hub for what history holds after `after`, or, unless messages were `missed`,
    /// only for the newest id it holds.
    pub(super) fn request_resync(
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
