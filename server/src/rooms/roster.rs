//! A room's roster: this node's copy of who is in the room, on every node.
//!
//! Without it, every join would read the room's whole presence hash from Redis and open every
//! name in it, and every join and leave would become one frame per member: N joins cost N²
//! work, and a room of 10,000 cannot form. With it, a join costs the same in any room: the
//! roster is read from Redis once, when the room's first local member joins (a *load*), and
//! kept current from the room's presence events, which every node hears once. Members see it
//! through pages of names ([`Roster::page`]) and through coalesced reports
//! ([`Roster::take_report`]): every name that came or went since the previous report, by
//! where it ended, at most one report per room per `--presence-interval-ms`.
//!
//! Events are keyed by member (`<node id>|<n>`), so applying one twice changes nothing. That
//! is what makes loads race-free without any sequence number: while a load is in flight,
//! every event is applied *and* kept; the snapshot then replaces the members and the kept
//! events are applied again, in order, on top of it. An event the snapshot already reflects
//! is then a no-op, and one it missed is applied, so each member ends in the state of the last
//! event about it, which is the truth. Events that arrive after the snapshot are applied as
//! usual. The events kept are bounded ([`MAX_KEPT`]); beyond it the load is started over.
//!
//! Counts and pages are by distinct name: a person with two tabs open is one person here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::frame_budget::{MEMBERS_BUDGET, json_string_len};

/// Most events kept while a load is in flight: a join storm of this many in one round trip
/// starts the load over rather than growing without bound.
const MAX_KEPT: usize = 100_000;

/// A member came or went, as heard on the room's channel or done on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A member joined under a name.
    Join {
        /// The member's presence key.
        member: Box<str>,
        /// Its name, opened.
        name: Arc<str>,
    },
    /// A member left.
    Leave {
        /// The member's presence key.
        member: Box<str>,
    },
}

/// Whether a load is in flight, and what it must apply again on top of its snapshot.
#[derive(Debug)]
enum Loading {
    Idle,
    /// Load `id` is in flight; these events arrived since it was started.
    Keeping {
        id: u64,
        kept: Vec<Change>,
    },
    /// Load `id` is in flight but more events came than can be kept: its snapshot is of no use.
    Overflowed {
        id: u64,
    },
}

/// What became of a snapshot handed to [`Roster::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Applied: the roster is current.
    Applied,
    /// Too many events came meanwhile: load again, as load `id`.
    Again(u64),
    /// A later load is in flight, or none is: this snapshot was dropped.
    Stale,
}

/// A page of names, sorted, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPage {
    /// How many distinct names the room has.
    pub count: u64,
    /// The names of this page, in sort order.
    pub names: Vec<String>,
    /// Whether names follow the last of `names`.
    pub more: bool,
}

impl MemberPage {
    /// No names at all.
    pub fn empty() -> Self {
        MemberPage {
            count: 0,
            names: Vec::new(),
            more: false,
        }
    }
}

/// What changed since the previous report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How many distinct names the room has now.
    pub count: u64,
    /// The names that came and went, when the room is small enough to say and they fit.
    pub names: Option<NetChanges>,
}

/// Names that came or went between two reports, by where they ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetChanges {
    /// Names that came (or came back) since the previous report and are here now, sorted.
    pub joins: Vec<Arc<str>>,
    /// Names that went since the previous report and are gone now, sorted.
    pub leaves: Vec<Arc<str>>,
}

/// One room's members on every node, as this node knows them.
#[derive(Debug)]
pub struct Roster {
    /// Member key → name.
    members: HashMap<Box<str>, Arc<str>>,
    /// Name → how many members have it.
    names: BTreeMap<Arc<str>, u32>,
    /// Names that came or went since the last report.
    changed: HashSet<Arc<str>>,
    /// How many times a name came or went: a member that joined when this stood where it
    /// stands at a report needs no report.
    changes: u64,
    loading: Loading,
    loads: u64,
}

impl Roster {
    /// An empty roster whose first load, `0`, is in flight.
    pub fn loading() -> Self {
        Roster {
            members: HashMap::new(),
            names: BTreeMap::new(),
            changed: HashSet::new(),
            changes: 0,
            loading: Loading::Keeping {
                id: 0,
                kept: Vec::new(),
            },
            loads: 1,
        }
    }

    /// A roster of `members` (key, name), as read from presence, with no load in flight.
    pub fn of(members: Vec<(String, String)>) -> Self {
        let mut roster = Roster::loading();
        roster.load(0, members);
        roster
    }

    /// How many distinct names the room has.
    pub fn count(&self) -> u64 {
        self.names.len() as u64
    }

    /// How many times a name came or went so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Whether a report is due: something changed since the last one.
    pub fn is_dirty(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Applies an event; while a load is in flight, also keeps it for the snapshot.
    pub fn apply(&mut self, change: Change) {
        let overflowed = match &mut self.loading {
            Loading::Keeping { id, kept } if kept.len() >= MAX_KEPT => Some(*id),
            Loading::Keeping { kept, .. } => {
                kept.push(change.clone());
                None
            }
            Loading::Idle | Loading::Overflowed { .. } => None,
        };
        if let Some(id) = overflowed {
            self.loading = Loading::Overflowed { id };
        }
        self.apply_now(change);
    }

    /// Starts a load (after a reconnect, for one); returns its id for [`Roster::load`]. Events
    /// kept for a load still in flight are kept for this one too: its snapshot may be older
    /// than they are.
    pub fn begin_load(&mut self) -> u64 {
        let id = self.loads;
        self.loads += 1;
        self.loading = match std::mem::replace(&mut self.loading, Loading::Idle) {
            Loading::Keeping { kept, .. } => Loading::Keeping { id, kept },
            Loading::Idle => Loading::Keeping {
                id,
                kept: Vec::new(),
            },
            Loading::Overflowed { .. } => Loading::Overflowed { id },
        };
        id
    }

    /// Replaces the members with load `id`'s snapshot, taken after the room's channel was
    /// subscribed, then applies again what happened since the load began.
    pub fn load(&mut self, id: u64, snapshot: Vec<(String, String)>) -> Loaded {
        let kept = match std::mem::replace(&mut self.loading, Loading::Idle) {
            Loading::Keeping { id: current, kept } if current == id => kept,
            Loading::Overflowed { id: current } if current == id => {
                let again = self.loads;
                self.loads += 1;
                self.loading = Loading::Keeping {
                    id: again,
                    kept: Vec::new(),
                };
                return Loaded::Again(again);
            }
            other => {
                self.loading = other;
                return Loaded::Stale;
            }
        };
        // Rebuilding counts nothing: only what differs from before it is a change.
        let (unreported, changes) = (std::mem::take(&mut self.changed), self.changes);
        let before = std::mem::take(&mut self.names);
        self.members.clear();
        for (member, name) in snapshot {
            self.apply_now(Change::Join {
                member: member.into(),
                name: name.into(),
            });
        }
        for change in kept {
            self.apply_now(change);
        }
        self.changed = unreported;
        self.changes = changes;
        self.note_differences(&before);
        Loaded::Applied
    }

    /// Records, as changes to report, every name whose presence differs from `before`.
    fn note_differences(&mut self, before: &BTreeMap<Arc<str>, u32>) {
        for name in before.keys().filter(|name| !self.names.contains_key(*name)) {
            self.changed.insert(name.clone());
            self.changes += 1;
        }
        for name in self.names.keys().filter(|name| !before.contains_key(*name)) {
            self.changed.insert(name.clone());
            self.changes += 1;
        }
    }

    fn apply_now(&mut self, change: Change) {
        match change {
            Change::Join { member, name } => {
                if let Some(previous) = self.members.insert(member, name.clone()) {
                    if previous == name {
                        return;
                    }
                    self.release(previous);
                }
                let holders = self.names.entry(name.clone()).or_insert(0);
                *holders += 1;
                if *holders == 1 {
                    self.changed.insert(name);
                    self.changes += 1;
                }
            }
            Change::Leave { member } => {
                if let Some(name) = self.members.remove(&member) {
                    self.release(name);
                }
            }
        }
    }

    /// One member less has `name`.
    fn release(&mut self, name: Arc<str>) {
        if let Some(holders) = self.names.get_mut(&name) {
            *holders -= 1;
            if *holders == 0 {
                self.names.remove(&name);
                self.changed.insert(name);
                self.changes += 1;
            }
        }
    }

    /// Up to `max` names after `after` (from the first without it) that fit in
    /// [`MEMBERS_BUDGET`] bytes of JSON.
    pub fn page(&self, after: Option<&str>, max: usize) -> MemberPage {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut following = self
            .names
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(name, _)| name)
            .peekable();
        let mut names = Vec::new();
        let mut used = 0;
        while let Some(name) = following.peek() {
            used += json_string_len(name) + 1;
            if names.len() == max || used > MEMBERS_BUDGET {
                break;
            }
            names.push(name.to_string());
            following.next();
        }
        MemberPage {
            count: self.count(),
            names,
            more: following.peek().is_some(),
        }
    }

    /// The changes since the previous report, if any: names too when the room has at most
    /// `names_max` of them and they fit in [`MEMBERS_BUDGET`] bytes of JSON.
    ///
    /// Every name that came or went since then is in `joins` if it is here now and in
    /// `leaves` if not, even when it is back where it was at the previous report: a member
    /// may have learned of it in between, from a `joined` or a page taken from the roster as
    /// it stood then, and must learn where it ended.
    pub fn take_report(&mut self, names_max: usize) -> Option<Report> {
        if self.changed.is_empty() {
            return None;
        }
        let count = self.count();
        let mut net = NetChanges::default();
        for name in self.changed.drain() {
            if self.names.contains_key(&name) {
                net.joins.push(name);
            } else {
                net.leaves.push(name);
            }
        }
        let bytes: usize = net
            .joins
            .iter()
            .chain(&net.leaves)
            .map(|name| json_string_len(name) + 1)
            .sum();
        let names = (count <= names_max as u64 && bytes <= MEMBERS_BUDGET).then(|| {
            net.joins.sort_unstable();
            net.leaves.sort_unstable();
            net
        });
        Some(Report { count, names })
    }
}

#[cfg(test)]
mod tests;
