//! Presence as members see it: keeping each room's [`Roster`](super::Roster) current and
//! reporting its changes.
//!
//! A presence event is opened once per node and applied to the room's roster; no frame is
//! written then. Every `--presence-interval-ms` the node's presence task calls
//! [`Rooms::report_presence`], which turns each changed room's net changes into one `presence`
//! frame, serialized once and shared by every local member: however fast people come and go,
//! a member gets at most one frame per room per interval, and a join storm costs each member
//! a frame per interval instead of a frame per joiner.

use std::borrow::Cow;
use std::sync::{Arc, PoisonError};

use crate::wire::TextFrame;
use chat_protocol::ServerFrame;

use super::roster::{Change, Loaded, MemberPage, Report};
use super::{Recovery, Rooms};

impl Rooms {
    /// A member joined `channel` on some node: `sealed_name` is opened and the roster told.
    pub(super) fn deliver_join(&self, channel: &str, member: &str, sealed_name: Vec<u8>) {
        let name = match self.open_name(channel, sealed_name) {
            Ok(name) => name,
            Err(reason) => return self.dropped(channel, reason),
        };
        let change = Change::Join {
            member: member.into(),
            name: name.into(),
        };
        if let Some(mut room) = self.rooms.get_mut(channel) {
            self.change_roster(channel, &mut room, change);
        }
    }

    /// A member left `channel` on some node.
    pub(super) fn deliver_leave(&self, channel: &str, member: &str) {
        if let Some(mut room) = self.rooms.get_mut(channel) {
            let change = Change::Leave {
                member: member.into(),
            };
            self.change_roster(channel, &mut room, change);
        }
    }

    /// Sends every room that changed since its last report one `presence` frame, with names
    /// when the room has at most `names_max` of them. Returns how many rooms reported.
    pub fn report_presence(&self, names_max: usize) -> usize {
        let channels = std::mem::take(
            &mut *self
                .unreported
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut reported = 0;
        for channel in channels {
            let Some(mut room) = self.rooms.get_mut(&channel) else {
                continue;
            };
            let Some(report) = room.roster.take_report(names_max) else {
                continue;
            };
            let frame = TextFrame::from(presence_frame(&room.name, report));
            let changes = room.roster.changes();
            let dropped = room
                .members
                .values()
                .filter(|member| {
                    member.seen_changes < changes && !member.outbox.offer_presence(&frame)
                })
                .count();
            self.metrics.presence_dropped.inc_by(dropped as u64);
            self.metrics.presence_reports.inc();
            reported += 1;
        }
        reported
    }

    /// Resolves once the room behind `channel` is subscribed, positioned and its roster
    /// loaded; `None` when the room has no local member.
    pub fn ready(&self, channel: &str) -> Option<super::Ready> {
        self.rooms.get(channel).map(|room| room.ready.clone())
    }

    /// A page of the names in the room behind `channel`, after `after`; `None` when the room
    /// has no local member.
    pub fn members_page(
        &self,
        channel: &str,
        after: Option<&str>,
        max: usize,
    ) -> Option<MemberPage> {
        let room = self.rooms.get(channel)?;
        Some(room.roster.page(after, max))
    }

    /// Load `load` of the roster of `channel`'s room (of `generation`) read `snapshot`: the
    /// room's members, names opened. Returns [`Loaded::Again`] when it must be read again.
    pub fn roster_loaded(
        &self,
        channel: &str,
        generation: u64,
        load: u64,
        snapshot: Vec<(String, String)>,
    ) -> Loaded {
        let Some(mut room) = self.rooms.get_mut(channel) else {
            return Loaded::Stale;
        };
        if room.generation != generation {
            return Loaded::Stale;
        }
        self.metrics.roster_loads.inc();
        self.update_roster(channel, &mut room, |roster| roster.load(load, snapshot))
    }

    /// Whether the room behind `channel` (of `generation`) still exists: a roster load for a
    /// room whose last local member left is of no use.
    pub fn has_room(&self, channel: &str, generation: u64) -> bool {
        self.rooms
            .get(channel)
            .is_some_and(|room| room.generation == generation)
    }

    /// After the broker reconnected, events may have been missed: every roster is read again.
    pub(super) fn reload_rosters(&self) {
        for mut room in self.rooms.iter_mut() {
            let load = room.roster.begin_load();
            self.request_roster(room.key(), room.generation, load);
        }
    }

    /// Asks the hub to read the members of `channel`'s room (of `generation`) for load `load`
    /// of its roster.
    pub fn request_roster(&self, channel: &str, generation: u64, load: u64) {
        // The receiver lives as long as the node; if it is gone the node is stopping.
        let _ = self.recovery.send(Recovery::Roster {
            channel: channel.to_owned(),
            generation,
            load,
        });
    }
}

/// The `presence` frame of a report.
fn presence_frame(room: &str, report: Report) -> String {
    fn list(names: &[Arc<str>]) -> Vec<Cow<'_, str>> {
        names.iter().map(|name| Cow::Borrowed(&**name)).collect()
    }
    let names = report.names.as_ref();
    ServerFrame::Presence {
        room: room.into(),
        count: report.count,
        joins: names.map(|names| list(&names.joins)),
        leaves: names.map(|names| list(&names.leaves)),
    }
    .to_json()
}
