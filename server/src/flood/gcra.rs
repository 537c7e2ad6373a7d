//! GCRA, the generic cell rate algorithm: a rate limiter whose whole state is one timestamp.
//!
//! A sender may send when its *theoretical arrival time* (TAT) is at most one burst ahead of
//! now; each send moves the TAT one emission interval further. That is a token bucket without
//! a refill timer: a check is a comparison and an addition, which is why the per-connection
//! limit costs nanoseconds. The Redis script in [`super::redis`] runs the same arithmetic.

use std::time::Duration;

/// A rate with a burst, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time one send "costs": 1 / rate.
    pub interval_ns: u64,
    /// How far ahead of now the TAT may run: `burst - 1` intervals, so `burst` sends may go at
    /// once.
    pub tolerance_ns: u64,
}

impl Rate {
    /// `per_second` sends per second with bursts of `burst`; None when `per_second` is 0
    /// (unlimited).
    pub fn new(per_second: f64, burst: u32) -> Option<Rate> {
        if per_second <= 0.0 || !per_second.is_finite() {
            return None;
        }
        let interval_ns = (1e9 / per_second).round().max(1.0) as u64;
        Some(Rate {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        })
    }
}

/// The state of one limited thing: its theoretical arrival time, in nanoseconds on the
/// caller's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    tat: u64,
}

impl Gcra {
    /// Counts a send at `now`, or says how long to wait before one is allowed.
    pub fn check(&mut self, rate: &Rate, now: u64) -> Result<(), Duration> {
        let tat = self.tat.max(now);
        let ahead = tat - now;
        if ahead > rate.tolerance_ns {
            return Err(Duration::from_nanos(ahead - rate.tolerance_ns));
        }
        self.tat = tat + rate.interval_ns;
        Ok(())
    }

    /// Whether the state is back at rest at `now`, so forgetting it changes nothing.
    pub fn is_idle(&self, now: u64) -> bool {
        self.tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let rate = Rate::new(10.0, 3).unwrap();
        let mut gcra = Gcra::default();
        let start = 1_000 * MS;
        for _ in 0..3 {
            assert!(gcra.check(&rate, start).is_ok());
        }
        let wait = gcra.check(&rate, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Refused sends cost nothing: the wait does not grow.
        assert_eq!(gcra.check(&rate, start).unwrap_err(), wait);
        assert!(gcra.check(&rate, start + 100 * MS).is_ok());
        assert!(gcra.check(&rate, start + 100 * MS).is_err());
    }

    #[test]
    fn a_quiet_sender_gets_its_burst_back() {
        let rate = Rate::new(2.0, 2).unwrap();
        let mut gcra = Gcra::default();
        assert!(gcra.check(&rate, 0).is_ok());
        assert!(gcra.check(&rate, 0).is_ok());
        assert!(gcra.check(&rate, 0).is_err());
        assert!(!gcra.is_idle(0));
        assert!(gcra.is_idle(1_000 * MS));
        assert!(gcra.check(&rate, 1_000 * MS).is_ok());
        assert!(gcra.check(&rate, 1_000 * MS).is_ok());
        assert!(gcra.check(&rate, 1_000 * MS).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        assert_eq!(Rate::new(0.0, 5), None);
        assert_eq!(
            Rate::new(1.0, 1),
            Some(Rate {
                interval_ns: 1_000 * MS,
                tolerance_ns: 0
            })
        );
    }
}
