//! The set of sequence numbers one client received from one room, as sorted ranges.
//!
//! Redis hands every subscriber a channel's messages in one order, so what a client receives
//! is nearly contiguous: a few ranges hold tens of thousands of clients' worth of history where
//! a hash set or a bitmap per client would not fit in memory.

/// Disjoint, non-adjacent half-open ranges, sorted.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there (a duplicate).
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        // The common case: the next number after the last one seen.
        match self.ranges.last_mut() {
            None => {
                self.ranges.push((seq, seq + 1));
                return true;
            }
            Some(last) if last.1 == seq => {
                last.1 += 1;
                return true;
            }
            Some(last) if last.1 < seq => {
                self.ranges.push((seq, seq + 1));
                return true;
            }
            Some(_) => {}
        }
        // The first range that ends at or after `seq` exists: the last one does.
        let i = self.ranges.partition_point(|&(_, end)| end < seq);
        let (start, end) = self.ranges[i];
        if start <= seq && seq < end {
            return false;
        }
        if end == seq {
            self.ranges[i].1 += 1;
            if self.ranges.get(i + 1).is_some_and(|next| next.0 == seq + 1) {
                self.ranges[i].1 = self.ranges[i + 1].1;
                self.ranges.remove(i + 1);
            }
        } else if start == seq + 1 {
            self.ranges[i].0 = seq;
        } else {
            self.ranges.insert(i, (seq, seq + 1));
        }
        true
    }

    /// The ranges, for counting.
    pub(crate) fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_finds_duplicates_in_any_order() {
        let mut set = SeqSet::default();
        for seq in [5, 6, 7, 10, 9, 2, 3, 8, 4] {
            assert!(set.insert(seq), "{seq}");
        }
        assert_eq!(set.ranges(), &[(2, 11)]);
        for seq in [2, 5, 10] {
            assert!(!set.insert(seq), "{seq}");
        }
        assert!(set.insert(0));
        assert!(set.insert(20));
        assert_eq!(set.ranges(), &[(0, 1), (2, 11), (20, 21)]);
        assert!(set.insert(1));
        assert_eq!(set.ranges(), &[(0, 11), (20, 21)]);
    }

    #[test]
    fn matches_a_plain_set() {
        let mut set = SeqSet::default();
        let mut plain = std::collections::BTreeSet::new();
        // A fixed pseudo-random walk with repeats, reorderings and gaps.
        let mut x: u64 = 7;
        for _ in 0..5_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let seq = (x >> 33) % 600;
            assert_eq!(set.insert(seq), plain.insert(seq), "{seq}");
        }
        let from_ranges: Vec<u64> = set.ranges().iter().flat_map(|&(s, e)| s..e).collect();
        assert_eq!(from_ranges, plain.into_iter().collect::<Vec<_>>());
        assert!(set.ranges().windows(2).all(|w| w[0].1 < w[1].0));
    }
}
