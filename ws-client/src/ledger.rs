//! Every message sent to a room, with its send time and what became of it, so that the end of
//! the run can say exactly which deliveries were owed and which never came.
//!
//! A message is owed to a member only if it was sent after the member's `joined` reply arrived
//! (the node subscribes before it replies) and was acknowledged, and only if the member is still
//! joined when counting starts. Messages sent before a member joined, during its reconnection
//! gaps, or never acknowledged are neither expected nor missing.

use std::sync::Mutex;

use crate::payload::now_us;
use crate::seqset::SeqSet;

/// What became of one sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// No reply yet.
    Pending,
    /// The node acknowledged it: it was published and every member must get it.
    Acked,
    /// The node answered with an error: it was not published.
    Refused,
    /// The connection ended before the reply: it may or may not have been published.
    Unknown,
}

/// The messages of one room, indexed by sequence number.
#[derive(Default)]
pub(crate) struct RoomLedger {
    sends: Mutex<Sends>,
}

#[derive(Default)]
struct Sends {
    stamps: Vec<u64>,
    fates: Vec<Fate>,
}

impl RoomLedger {
    /// Allocates the next sequence number and its send time. Times never decrease along the
    /// sequence, which lets the final count find a member's first owed message by bisection.
    pub(crate) fn register(&self) -> (u64, u64) {
        let mut sends = self.lock();
        let sent_us = now_us().max(sends.stamps.last().copied().unwrap_or(0));
        let seq = sends.stamps.len() as u64;
        sends.stamps.push(sent_us);
        sends.fates.push(Fate::Pending);
        (seq, sent_us)
    }

    /// Records the reply to message `seq` (or its loss with the connection).
    pub(crate) fn settle(&self, seq: u64, fate: Fate) {
        let mut sends = self.lock();
        if let Some(slot) = usize::try_from(seq)
            .ok()
            .and_then(|i| sends.fates.get_mut(i))
        {
            *slot = fate;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sends> {
        // A panic elsewhere cannot leave the two vectors inconsistent: each push is paired.
        self.sends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the run for this room and prepares the count.
    pub(crate) fn freeze(&self) -> Tally {
        let sends = std::mem::take(&mut *self.lock());
        let mut acked_before = Vec::with_capacity(sends.fates.len() + 1);
        let mut acked = 0u64;
        let mut refused = 0u64;
        let mut unknown = 0u64;
        acked_before.push(0);
        for fate in &sends.fates {
            match fate {
                Fate::Acked => acked += 1,
                Fate::Refused => refused += 1,
                Fate::Pending | Fate::Unknown => unknown += 1,
            }
            acked_before.push(acked);
        }
        Tally {
            stamps: sends.stamps,
            acked_before,
            acked,
            refused,
            unknown,
        }
    }
}

/// A room's messages after sending stopped.
pub(crate) struct Tally {
    stamps: Vec<u64>,
    /// `acked_before[i]`: acknowledged messages among sequence numbers `0..i`.
    acked_before: Vec<u64>,
    pub acked: u64,
    pub refused: u64,
    /// Never answered: the connection ended first or the run did.
    pub unknown: u64,
}

impl Tally {
    pub(crate) fn sent(&self) -> u64 {
        self.stamps.len() as u64
    }

    /// For a member joined since `joined_us` that received `seen`: how many deliveries it was
    /// owed, and how many of those it got.
    pub(crate) fn account(&self, joined_us: u64, seen: &SeqSet) -> (u64, u64) {
        let len = self.stamps.len() as u64;
        let first = self.stamps.partition_point(|&sent| sent <= joined_us) as u64;
        let acked_in =
            |from: u64, to: u64| self.acked_before[to as usize] - self.acked_before[from as usize];
        let expected = acked_in(first, len);
        let got = seen
            .ranges()
            .iter()
            .map(|&(start, end)| (start.max(first), end.min(len)))
            .filter(|(start, end)| start < end)
            .map(|(start, end)| acked_in(start, end))
            .sum();
        (expected, got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owes_only_acknowledged_messages_sent_after_the_join() {
        let ledger = RoomLedger::default();
        let mut stamps = Vec::new();
        for _ in 0..10 {
            stamps.push(ledger.register());
        }
        for (seq, _) in &stamps {
            let fate = match seq {
                7 => Fate::Refused,
                8 => Fate::Unknown,
                _ => Fate::Acked,
            };
            ledger.settle(*seq, fate);
        }
        let tally = ledger.freeze();
        assert_eq!(
            (tally.sent(), tally.acked, tally.refused, tally.unknown),
            (10, 8, 1, 1)
        );

        // Joined before everything, received all but 3 and 9; 7 and 8 were never owed.
        let mut seen = SeqSet::default();
        for seq in [0, 1, 2, 4, 5, 6, 8] {
            seen.insert(seq);
        }
        assert_eq!(tally.account(0, &seen), (8, 6));

        // Joined at the time of message 4: owed 5, 6 and 9 (those stamped strictly later),
        // unless 4's stamp equals a later one's, which the bisection also handles.
        let joined = stamps[4].1;
        let owed = stamps
            .iter()
            .filter(|(seq, sent)| *sent > joined && ![7, 8].contains(seq))
            .count() as u64;
        let got = stamps
            .iter()
            .filter(|(seq, sent)| *sent > joined && [5, 6].contains(seq))
            .count() as u64;
        assert_eq!(tally.account(joined, &seen), (owed, got));
    }
}
