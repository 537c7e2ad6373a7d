//! What each client knows of its room's membership (whether it is in, the last `count` the
//! node told it, and when either changed), and the end-of-run check of whether the clients of
//! a room all agree on that count.
//!
//! A client keeps a handful of numbers, never names: in a room of 50,000 nothing a client
//! holds may grow with the room. The check cannot know the true count of a room that other
//! `ws-client` processes share, so it asks what one process can answer: do all its joined
//! clients of a room see one value, and how long after this process's last join or leave did
//! that value stop changing. Each process reports the instants in Unix time, so that the
//! reports of processes run side by side can be combined exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// `count` before the first one arrived.
const NO_COUNT: u64 = u64::MAX;

/// One client's view of its room; written by the client, read by the reporter.
pub(crate) struct RoomView {
    joined: AtomicBool,
    count: AtomicU64,
    /// Unix µs: when `count` last took a new value.
    count_changed_us: AtomicU64,
    /// Unix µs: when the client last received `joined` or `left`.
    member_changed_us: AtomicU64,
    /// Unix µs when the current stretch of being joined began.
    joined_since_us: AtomicU64,
    /// Microseconds joined, over the stretches that ended.
    joined_total_us: AtomicU64,
}

/// A client's view at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub joined: bool,
    pub count: Option<u64>,
    pub count_changed_us: u64,
    pub member_changed_us: u64,
    /// Microseconds joined so far, the current stretch included.
    pub joined_us: u64,
}

impl RoomView {
    pub(crate) fn new() -> RoomView {
        RoomView {
            joined: AtomicBool::new(false),
            count: AtomicU64::new(NO_COUNT),
            count_changed_us: AtomicU64::new(0),
            member_changed_us: AtomicU64::new(0),
            joined_since_us: AtomicU64::new(0),
            joined_total_us: AtomicU64::new(0),
        }
    }

    /// Records a `count` from `joined`, `presence` or `members`.
    pub(crate) fn see_count(&self, count: u64, now_us: u64) {
        if self.count.swap(count, Relaxed) != count {
            self.count_changed_us.store(now_us, Relaxed);
        }
    }

    /// Records entering (`joined`) or leaving (`left`, or the connection's end); false when
    /// the client already was where it goes.
    pub(crate) fn set_joined(&self, joined: bool, now_us: u64, by_reply: bool) -> bool {
        if by_reply {
            self.member_changed_us.store(now_us, Relaxed);
        }
        if self.joined.swap(joined, Relaxed) == joined {
            return false;
        }
        if joined {
            self.joined_since_us.store(now_us, Relaxed);
        } else {
            let since = self.joined_since_us.load(Relaxed);
            self.joined_total_us
                .fetch_add(now_us.saturating_sub(since), Relaxed);
        }
        true
    }

    pub(crate) fn is_joined(&self) -> bool {
        self.joined.load(Relaxed)
    }

    pub(crate) fn seen(&self, now_us: u64) -> Seen {
        let joined = self.joined.load(Relaxed);
        let open = if joined {
            now_us.saturating_sub(self.joined_since_us.load(Relaxed))
        } else {
            0
        };
        let count = self.count.load(Relaxed);
        Seen {
            joined,
            count: (count != NO_COUNT).then_some(count),
            count_changed_us: self.count_changed_us.load(Relaxed),
            member_changed_us: self.member_changed_us.load(Relaxed),
            joined_us: self.joined_total_us.load(Relaxed) + open,
        }
    }
}

/// Whether the joined clients of each room agree on its count, at the end of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Agreement {
    /// Clients joined at the snapshot.
    pub joined: usize,
    /// Rooms with a joined client, and of those, the rooms whose joined clients all saw one
    /// count.
    pub rooms: usize,
    pub rooms_agreeing: usize,
    /// Rooms whose agreed count is the number of this process's clients joined in it: all of
    /// them when no other process shares a room.
    pub rooms_matching_joined: usize,
    /// Joined clients whose count is not their room's highest (or who never got one).
    pub behind: usize,
    /// The count everyone agreed on, when there was one room.
    pub count: Option<u64>,
    /// The lowest and highest count a joined client saw, over all rooms.
    pub count_min: Option<u64>,
    pub count_max: Option<u64>,
    /// Unix µs: this process's last membership change (a `joined` or `left` received).
    pub last_member_change_us: u64,
    /// Unix µs: the last time a joined client's count changed.
    pub last_count_change_us: u64,
    /// When every room agrees: how long after the last membership change the counts stopped
    /// changing (0 when they had already settled).
    pub settled_ms: Option<f64>,
}

impl Agreement {
    /// Checks the views of the clients, each with the index of its room.
    pub(crate) fn of(rooms: usize, views: impl IntoIterator<Item = (usize, Seen)>) -> Agreement {
        #[derive(Clone, Copy, Default)]
        struct Room {
            joined: usize,
            min: Option<u64>,
            max: Option<u64>,
            missing: bool,
        }
        let mut per_room = vec![Room::default(); rooms];
        let mut out = Agreement::default();
        let mut seen_counts = Vec::new();
        let mut no_count = 0;
        for (room, seen) in views {
            out.last_member_change_us = out.last_member_change_us.max(seen.member_changed_us);
            let Some(slot) = per_room.get_mut(room).filter(|_| seen.joined) else {
                continue;
            };
            out.joined += 1;
            out.last_count_change_us = out.last_count_change_us.max(seen.count_changed_us);
            slot.joined += 1;
            match seen.count {
                Some(count) => {
                    slot.min = Some(slot.min.map_or(count, |m| m.min(count)));
                    slot.max = Some(slot.max.map_or(count, |m| m.max(count)));
                    seen_counts.push((room, count));
                }
                None => {
                    slot.missing = true;
                    no_count += 1;
                }
            }
        }
        for room in per_room.iter().filter(|r| r.joined > 0) {
            out.rooms += 1;
            if room.min == room.max && !room.missing {
                out.rooms_agreeing += 1;
                if room.max == Some(room.joined as u64) {
                    out.rooms_matching_joined += 1;
                }
            }
            out.count_min = min_some(out.count_min, room.min);
            out.count_max = out.count_max.max(room.max);
        }
        out.behind = no_count
            + seen_counts
                .iter()
                .filter(|(room, count)| per_room[*room].max != Some(*count))
                .count();
        if out.rooms > 0 && out.rooms_agreeing == out.rooms {
            out.settled_ms = Some(
                out.last_count_change_us
                    .saturating_sub(out.last_member_change_us) as f64
                    / 1000.0,
            );
            if out.rooms == 1 {
                out.count = out.count_max;
            }
        }
        out
    }

    /// Why the counts cannot be trusted, if they cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.joined == 0 {
            return Some("no client was joined at the end".to_owned());
        }
        (self.rooms_agreeing < self.rooms).then(|| {
            format!(
                "{} of {} rooms without one count: {} joined clients behind their room's highest",
                self.rooms - self.rooms_agreeing,
                self.rooms,
                self.behind
            )
        })
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(
        joined: bool,
        count: Option<u64>,
        count_changed_us: u64,
        member_changed_us: u64,
    ) -> Seen {
        Seen {
            joined,
            count,
            count_changed_us,
            member_changed_us,
            joined_us: 0,
        }
    }

    #[test]
    fn a_room_whose_clients_agree_settles_after_the_last_membership_change() {
        let views = [
            (0, seen(true, Some(3), 1_500, 1_000)),
            (0, seen(true, Some(3), 1_250, 900)),
            (0, seen(true, Some(3), 400, 1_100)),
            // Away at the snapshot: its leave is a membership change, its count not checked.
            (0, seen(false, Some(2), 9_000, 1_200)),
        ];
        let a = Agreement::of(1, views);
        assert_eq!(
            (a.joined, a.rooms, a.rooms_agreeing, a.behind),
            (3, 1, 1, 0)
        );
        assert_eq!((a.count, a.rooms_matching_joined), (Some(3), 1));
        assert_eq!(
            (a.last_member_change_us, a.last_count_change_us),
            (1_200, 1_500)
        );
        assert_eq!(a.settled_ms, Some(0.3));
        assert_eq!(a.problem(), None);

        // Counts that had settled before the last change settle at 0, not below.
        let a = Agreement::of(1, [(0, seen(true, Some(1), 100, 700))]);
        assert_eq!(a.settled_ms, Some(0.0));
    }

    #[test]
    fn disagreement_and_missing_counts_are_clients_behind() {
        let views = [
            (0, seen(true, Some(5), 10, 0)),
            (0, seen(true, Some(4), 10, 0)),
            (0, seen(true, None, 0, 0)),
            (1, seen(true, Some(2), 10, 0)),
            (1, seen(true, Some(2), 10, 0)),
        ];
        let a = Agreement::of(2, views);
        assert_eq!((a.rooms, a.rooms_agreeing, a.behind), (2, 1, 2));
        assert_eq!((a.count, a.settled_ms), (None, None));
        assert_eq!((a.count_min, a.count_max), (Some(2), Some(5)));
        assert_eq!(a.rooms_matching_joined, 1);
        assert!(a.problem().is_some_and(|p| p.starts_with("1 of 2 rooms")));
        assert_eq!(
            Agreement::of(1, []).problem().as_deref(),
            Some("no client was joined at the end")
        );
    }

    #[test]
    fn a_shared_room_agrees_without_matching_this_process() {
        let a = Agreement::of(3, (0..6).map(|i| (i % 3, seen(true, Some(4), 1, 1))));
        assert_eq!(
            (a.rooms, a.rooms_agreeing, a.rooms_matching_joined),
            (3, 3, 0)
        );
        assert_eq!((a.count, a.problem()), (None, None));
    }

    #[test]
    fn a_view_accumulates_its_time_joined_and_its_changes() {
        let view = RoomView::new();
        assert_eq!(view.seen(5).count, None);
        assert!(view.set_joined(true, 1_000, true));
        assert!(!view.set_joined(true, 1_100, false), "already in");
        view.see_count(7, 1_200);
        view.see_count(7, 1_300);
        assert!(view.set_joined(false, 3_000, true));
        assert!(view.set_joined(true, 4_000, true));
        let seen = view.seen(4_500);
        assert_eq!(seen.count, Some(7));
        assert_eq!(
            seen.count_changed_us, 1_200,
            "the same count again is no change"
        );
        assert_eq!((seen.member_changed_us, seen.joined_us), (4_000, 2_500));
    }
}
