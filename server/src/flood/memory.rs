//! The per-name limit and the debounce in this node's memory: for a node without Redis, and as
//! the fallback of the Redis limiter while Redis cannot be reached.
//!
//! Both tables are sharded maps (one short lock per check, never held across an `.await`),
//! hashed with foldhash: several times faster than SipHash on short keys, and seeded per
//! process, so nobody can precompute names or texts that collide.
//! Entries that are back at rest carry no information, so a sweep, at most once a second and
//! done by whichever check comes first, drops them: memory follows the names active in the last
//! burst window, not every name ever seen.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{Check, Gcra, NameLimiter, Rate, Verdict, ceil_millis};
use crate::metrics::Metrics;

/// How often stale entries are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A [`NameLimiter`] whose limits hold on this node only; every check is [`Check::Ready`].
pub struct MemoryLimiter {
    rate: Option<Rate>,
    window_ns: u64,
    epoch: Instant,
    names: DashMap<Box<str>, Gcra, RandomState>,
    /// Recently sent texts, as a seeded hash of (name, room, text), with when they expire.
    recent: DashMap<u64, u64, RandomState>,
    hasher: RandomState,
    next_sweep: AtomicU64,
    metrics: std::sync::Arc<Metrics>,
}

impl MemoryLimiter {
    /// A limiter of `rate` per name (`None`: no rate) with a debounce of `window` (`None`: no
    /// debounce); rate refusals are counted in `metrics`.
    pub fn new(
        rate: Option<Rate>,
        window: Option<Duration>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        MemoryLimiter {
            rate,
            window_ns: window.map_or(0, |w| u64::try_from(w.as_nanos()).unwrap_or(u64::MAX)),
            epoch: Instant::now(),
            names: DashMap::default(),
            recent: DashMap::default(),
            hasher: Default::default(),
            next_sweep: AtomicU64::new(0),
            metrics,
        }
    }

    /// The verdict for one send, counted.
    pub fn verdict(&self, name: &str, room: &str, text: &str) -> Verdict {
        if self.rate.is_none() && self.window_ns == 0 {
            return Verdict::Allowed;
        }
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.sweep(now);
        if let Some(rate) = &self.rate {
            let checked = match self.names.get_mut(name) {
                Some(mut gcra) => gcra.check(rate, now),
                None => {
                    let mut gcra = Gcra::default();
                    let checked = gcra.check(rate, now);
                    self.names.insert(name.into(), gcra);
                    checked
                }
            };
            if let Err(wait) = checked {
                self.metrics.limits.rate_limited_name.inc();
                return Verdict::Limited {
                    retry_after_ms: ceil_millis(wait),
                };
            }
        }
        if self.window_ns > 0 {
            let key = self.hasher.hash_one((name, room, text));
            let expires = now.saturating_add(self.window_ns);
            let mut fresh = true;
            self.recent
                .entry(key)
                .and_modify(|until| {
                    if *until > now {
                        fresh = false;
                    } else {
                        *until = expires;
                    }
                })
                .or_insert(expires);
            if !fresh {
                return Verdict::Duplicate;
            }
        }
        Verdict::Allowed
    }

    /// Drops entries at rest, at most once per [`SWEEP_EVERY`].
    fn sweep(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now + u64::try_from(SWEEP_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if self
            .next_sweep
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.names.retain(|_, gcra| !gcra.is_idle(now));
        self.recent.retain(|_, until| *until > now);
    }

    /// Entries held: names with a limit in progress plus texts within the debounce window.
    pub fn len(&self) -> usize {
        self.names.len() + self.recent.len()
    }

    /// True when no entry is held; entries at rest stay until the next sweep.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NameLimiter for MemoryLimiter {
    fn check(&self, name: &str, room: &str, text: &str) -> Check {
        Check::Ready(self.verdict(name, room, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: Option<Rate>, window_ms: u64) -> MemoryLimiter {
        let window = (window_ms > 0).then(|| Duration::from_millis(window_ms));
        MemoryLimiter::new(rate, window, std::sync::Arc::new(Metrics::new()))
    }

    #[test]
    fn limits_each_name_on_its_own() {
        let limiter = limiter(Rate::new(1.0, 2), 0);
        assert_eq!(limiter.verdict("ada", "r", "1"), Verdict::Allowed);
        assert_eq!(limiter.verdict("ada", "r", "2"), Verdict::Allowed);
        assert!(matches!(
            limiter.verdict("ada", "r", "3"),
            Verdict::Limited { retry_after_ms } if (900..=1000).contains(&retry_after_ms)
        ));
        assert_eq!(limiter.verdict("bob", "r", "1"), Verdict::Allowed);
    }

    #[test]
    fn refuses_the_same_text_in_the_same_room_within_the_window() {
        let limiter = limiter(None, 60_000);
        assert_eq!(limiter.verdict("ada", "r", "hi"), Verdict::Allowed);
        assert_eq!(limiter.verdict("ada", "r", "hi"), Verdict::Duplicate);
        assert_eq!(limiter.verdict("ada", "other", "hi"), Verdict::Allowed);
        assert_eq!(limiter.verdict("bob", "r", "hi"), Verdict::Allowed);
        assert_eq!(limiter.verdict("ada", "r", "hi!"), Verdict::Allowed);
    }

    #[test]
    fn forgets_texts_after_the_window_and_sweeps_them() {
        let limiter = limiter(Rate::new(1000.0, 1000), 20);
        assert_eq!(limiter.verdict("ada", "r", "hi"), Verdict::Allowed);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(limiter.verdict("ada", "r", "hi"), Verdict::Allowed);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(limiter.verdict("bob", "r", "x"), Verdict::Allowed);
        // The sweep ran before bob's check: only bob's entries are left.
        assert_eq!(limiter.len(), 2);
    }
}
