//! A room's delivery order, and why it never trusts an id it has not seen in history.
//!
//! Ids travel outside the seal (Redis assigns them), so anyone who can publish to Redis can
//! replay a genuine sealed body under any id. If a room simply moved on to the highest id it
//! saw, one replay under `<epoch>-18446744073709551615` (or under a far-future epoch) would
//! make every genuine message after it look like a duplicate: the room would fall silent on
//! every node. So a room moves its position only in two ways:
//!
//! - live, to the id that directly follows the last one it delivered (same epoch, seq + 1);
//! - through history: anything else (a jump, a new epoch, the first id of a room) holds the
//!   room back until a resync read history, and what history holds is trusted, as is every id
//!   up to the newest it held. Held messages beyond that are delivered only while they
//!   continue from the newest one delivered; any that do not are dropped and counted, and the
//!   room asks history once more, so a genuine message that was dropped comes back from
//!   history while a forged id never does.
//!
//! Held messages have a budget in count and bytes: beyond it they are dropped (counted) rather
//! than kept, and history fills them in after the resync.

use crate::wire::TextFrame;
use chat_protocol::MessageId;

/// How many messages, and how many bytes of them, one room may hold back while it waits for
/// history. A resync takes one round trip to Redis, but that reply waits in Redis behind every
/// publish queued before it: a batch of 20,000 API messages can arrive meanwhile, and what is
/// dropped here can only come back from history, which keeps `--history-size` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBudget {
    /// Most messages held per room (65,536 by default).
    pub messages: usize,
    /// Most bytes of frames held per room (8 MiB by default).
    pub bytes: usize,
}

impl Default for HeldBudget {
    fn default() -> Self {
        HeldBudget {
            messages: 65_536,
            bytes: 8 * 1024 * 1024,
        }
    }
}

/// Messages held back while a room waits for its position or for missing messages.
#[derive(Debug, Default)]
pub struct Held {
    messages: Vec<(MessageId, TextFrame)>,
    bytes: usize,
    /// Messages dropped because the budget was spent.
    pub overflowed: u64,
}

impl Held {
    /// Holds a message unless that would exceed `budget`; returns whether it was held.
    pub fn hold(&mut self, budget: HeldBudget, id: MessageId, frame: TextFrame) -> bool {
        let bytes = self.bytes.saturating_add(frame.len());
        if self.messages.len() >= budget.messages || bytes > budget.bytes {
            self.overflowed += 1;
            return false;
        }
        self.bytes = bytes;
        self.messages.push((id, frame));
        true
    }
}

/// Where a room stands in its message sequence.
pub enum Sequence {
    /// New on this node: messages wait until the room learns where history stands.
    Positioning {
        /// What arrived before the room learned where history stands.
        held: Held,
    },
    /// Delivering as messages arrive; `last` is the newest delivered.
    Live {
        /// The newest id delivered (`None`: history was empty and nothing was delivered since).
        last: Option<MessageId>,
    },
    /// Missing messages after `last` are being fetched; new ones wait.
    Recovering {
        /// The newest id delivered; history is read from just after it.
        last: Option<MessageId>,
        /// What arrived meanwhile, [`settle`]d against history once it is read.
        held: Held,
    },
}

/// How a live message's id relates to the last one a room delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum Order {
    /// Directly follows: delivered.
    Next,
    /// Delivered already (or older): dropped.
    Duplicate,
    /// Skips ids of the same epoch: messages were missed.
    Gap,
    /// A new epoch, or the room has delivered nothing yet: only history can confirm it.
    Unconfirmed,
}

/// How `id` relates to `last`, the newest id the room delivered (`None`: nothing yet).
pub fn order(last: Option<MessageId>, id: MessageId) -> Order {
    match last {
        Some(last) if id <= last => Order::Duplicate,
        Some(last) if last.next() == Some(id) => Order::Next,
        Some(last) if id.epoch == last.epoch => Order::Gap,
        _ => Order::Unconfirmed,
    }
}

/// What a room delivers when it resumes, and what it could not.
#[derive(Debug, Default)]
pub struct Settled {
    /// In id order.
    pub deliver: Vec<(MessageId, TextFrame)>,
    /// The newest id delivered (or the room's earlier position).
    pub last: Option<MessageId>,
    /// Held messages dropped because they did not continue from what history confirmed.
    pub unconfirmed: u64,
    /// Held messages dropped earlier because the budget was spent.
    pub overflowed: u64,
}

impl Settled {
    /// Whether history may hold messages that were dropped: the room must ask it again.
    pub fn incomplete(&self) -> bool {
        self.unconfirmed > 0 || self.overflowed > 0
    }
}

/// Resumes after `last` with what history `found` (it vouches for its ids, gaps and new epochs
/// included) and what the room `held`, in id order. History also vouches for every id up to
/// the newest it held when it was read (`newest`, or the newest found): a held message up to
/// there is delivered even where it does not follow the one before (the room's first message,
/// a new epoch, messages before where trimmed history starts), so a burst that arrived while
/// history was being read is delivered whole. Beyond that bound a held message is delivered
/// only when it directly follows the one delivered before it; anything else is dropped and
/// counted. A forged id beyond history is past the bound and follows nothing.
pub fn settle(
    mut last: Option<MessageId>,
    found: Vec<(MessageId, TextFrame)>,
    newest: Option<MessageId>,
    held: Held,
) -> Settled {
    let bound = found.iter().map(|(id, _)| *id).max().max(newest);
    let Held {
        messages,
        overflowed,
        ..
    } = held;
    // History's entries sort before held ones of the same id, so the dedup keeps history's.
    let mut entries: Vec<(MessageId, bool, TextFrame)> = found
        .into_iter()
        .map(|(id, frame)| (id, true, frame))
        .chain(messages.into_iter().map(|(id, frame)| (id, false, frame)))
        .collect();
    entries.sort_unstable_by_key(|&(id, from_history, _)| (id, !from_history));
    entries.dedup_by_key(|entry| entry.0);
    let mut deliver = Vec::with_capacity(entries.len());
    let mut unconfirmed = 0;
    for (id, _, frame) in entries {
        let vouched = bound.is_some_and(|bound| id <= bound);
        match order(last, id) {
            Order::Duplicate => {}
            Order::Gap | Order::Unconfirmed if !vouched => unconfirmed += 1,
            Order::Next | Order::Gap | Order::Unconfirmed => {
                last = Some(id);
                deliver.push((id, frame));
            }
        }
    }
    Settled {
        deliver,
        last,
        unconfirmed,
        overflowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> MessageId {
        MessageId { epoch: 7, seq }
    }

    fn frame(seq: u64) -> (MessageId, TextFrame) {
        (id(seq), TextFrame::from(format!("m{seq}")))
    }

    fn held(seqs: &[u64]) -> Held {
        let mut held = Held::default();
        for &seq in seqs {
            let (id, frame) = frame(seq);
            assert!(held.hold(HeldBudget::default(), id, frame));
        }
        held
    }

    fn seqs(settled: &Settled) -> Vec<u64> {
        settled.deliver.iter().map(|(id, _)| id.seq).collect()
    }

    #[test]
    fn orders_ids_within_and_across_epochs() {
        let next_epoch = |seq| MessageId { epoch: 8, seq };
        assert_eq!(order(None, id(0)), Order::Unconfirmed);
        assert_eq!(order(None, id(1)), Order::Unconfirmed);
        assert_eq!(order(Some(id(1)), id(2)), Order::Next);
        assert_eq!(order(Some(id(1)), id(1)), Order::Duplicate);
        assert_eq!(order(Some(id(5)), id(2)), Order::Duplicate);
        assert_eq!(order(Some(id(1)), id(3)), Order::Gap);
        assert_eq!(order(Some(id(9)), next_epoch(0)), Order::Unconfirmed);
        assert_eq!(order(Some(id(9)), next_epoch(2)), Order::Unconfirmed);
    }

    #[test]
    fn ids_at_the_end_of_the_range_neither_overflow_nor_pass_as_next() {
        let top = id(u64::MAX);
        assert_eq!(order(Some(top), top), Order::Duplicate);
        assert_eq!(order(Some(top), MessageId::MAX), Order::Unconfirmed);
        assert_eq!(
            order(Some(MessageId::MAX), MessageId::MAX),
            Order::Duplicate
        );
        assert_eq!(order(Some(id(3)), top), Order::Gap);
        assert_eq!(order(Some(id(u64::MAX - 1)), top), Order::Next);
    }

    #[test]
    fn held_messages_have_a_byte_budget_as_well_as_a_count() {
        let budget = HeldBudget {
            messages: 100,
            bytes: 10,
        };
        let mut held = Held::default();
        assert!(held.hold(budget, id(1), TextFrame::from("12345678")));
        assert!(!held.hold(budget, id(2), TextFrame::from("123")));
        assert!(held.hold(budget, id(3), TextFrame::from("12")));
        assert!(!held.hold(budget, id(4), TextFrame::from("1")));
        assert_eq!(
            (held.messages.len(), held.bytes, held.overflowed),
            (2, 10, 2)
        );
        let counted = HeldBudget {
            messages: 1,
            bytes: usize::MAX,
        };
        let mut held = Held::default();
        assert!(held.hold(counted, id(1), TextFrame::from("")));
        assert!(!held.hold(counted, id(2), TextFrame::from("")));
        // What was dropped makes the room ask history again.
        let settled = settle(Some(id(0)), Vec::new(), None, held);
        assert_eq!(seqs(&settled), vec![1]);
        assert!(settled.incomplete());
    }

    #[test]
    fn history_is_trusted_and_held_messages_must_continue_from_it() {
        let found = vec![frame(4), frame(2), frame(3)];
        let settled = settle(Some(id(1)), found, None, held(&[6, 5, 3, 8]));
        assert_eq!(seqs(&settled), vec![2, 3, 4, 5, 6]);
        assert_eq!(settled.last, Some(id(6)));
        assert_eq!(settled.unconfirmed, 1);
        assert!(settled.incomplete());
        // History may skip (it was trimmed) and may start a new epoch: it vouches for both.
        let renewed = MessageId { epoch: 9, seq: 0 };
        let settled = settle(
            Some(id(1)),
            vec![frame(5), (renewed, "x".into())],
            None,
            held(&[]),
        );
        assert_eq!(settled.last, Some(renewed));
        assert!(!settled.incomplete());
    }

    #[test]
    fn an_id_beyond_history_is_dropped_not_adopted() {
        for forged in [id(u64::MAX), MessageId::MAX, MessageId { epoch: 8, seq: 0 }] {
            let mut held = held(&[3]);
            assert!(held.hold(HeldBudget::default(), forged, "forged".into()));
            let settled = settle(Some(id(1)), vec![frame(2)], None, held);
            assert_eq!(seqs(&settled), vec![2, 3], "{forged}");
            assert_eq!(settled.last, Some(id(3)));
            assert_eq!(settled.unconfirmed, 1);
        }
        let settled = settle(Some(id(1)), vec![frame(2)], Some(id(4)), held(&[7, 8]));
        assert_eq!((seqs(&settled), settled.unconfirmed), (vec![2], 2));
        // A room whose history is empty confirms nothing held: history is asked first.
        let settled = settle(None, Vec::new(), None, held(&[0]));
        assert!(settled.deliver.is_empty() && settled.incomplete());
    }

    #[test]
    fn a_burst_held_while_history_was_read_is_vouched_for_up_to_its_newest_id() {
        // The room's first message waited for history, whose newest id was then 6; meanwhile
        // 0..=9 arrived: up to 6 history vouches for them, and 7..=9 follow one by one.
        let burst: Vec<u64> = (0..=9).collect();
        let settled = settle(None, Vec::new(), Some(id(6)), held(&burst));
        assert_eq!(seqs(&settled), burst);
        assert!(!settled.incomplete());
        // Trimmed history that starts later does not skip what the room holds before it.
        let settled = settle(None, vec![frame(6), frame(7)], None, held(&burst));
        assert_eq!(seqs(&settled), burst);
        // Past the bound a gap breaks the chain.
        let settled = settle(None, Vec::new(), Some(id(3)), held(&[2, 3, 5]));
        assert_eq!((seqs(&settled), settled.unconfirmed), (vec![2, 3], 1));
    }
}
