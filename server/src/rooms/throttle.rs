//! A log throttle: backplane payloads can be forged by anyone who writes to Redis, and each
//! one dropped is worth a warning, but a flood of them must not flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets an event through at most once per interval and counts the ones held back, so a flood
/// of forged payloads cannot flood the log.
pub(super) struct Throttle {
    interval: Duration,
    started: Instant,
    next_allowed_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(super) fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            started: Instant::now(),
            next_allowed_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(number held back since the last one let through)` when this event may be logged.
    pub(super) fn allow(&self) -> Option<u64> {
        let now = self.started.elapsed().as_millis() as u64;
        let next = self.next_allowed_ms.load(Ordering::Relaxed);
        let until = now + self.interval.as_millis() as u64;
        if now >= next
            && self
                .next_allowed_ms
                .compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let throttle = Throttle::new(Duration::from_secs(60));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }
}
