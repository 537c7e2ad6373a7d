//! Flood control: how fast one connection and one user name may send, and debouncing of
//! repeated texts.
//!
//! Two limits apply to every `send`, both with GCRA (the generic cell rate algorithm: one
//! timestamp per limited thing, no timers, exact bursts):
//!
//! - per connection, in the session itself: a field of the session, no lock, no allocation;
//! - per user name across the whole cluster, through a [`NameLimiter`]: in this node's memory
//!   without Redis ([`memory`]), in Redis with it ([`redis`]), where one Lua script per send
//!   checks the name's rate and the debounce in one atomic round trip.
//!
//! The debounce refuses the same text from the same name into the same room within a window:
//! the cheapest spam is pasting one line over and over.
//!
//! A refused send is not published and gets an error (`rate_limited` with `retry_after_ms`, or
//! `duplicate`); the connection stays open. A client that keeps sending while limited is
//! flooding: after `--flood-close-after` rate-limited sends in a row it is closed with 1008.
//!
//! Joins and leaves (re-joins included) have a budget of their own per connection, also GCRA:
//! each costs work in proportion to the room's size (its member list, its presence in Redis),
//! so without one a single socket could load a node and Redis by cycling through rooms. A
//! refused join or leave gets `rate_limited` with `retry_after_ms` and counts toward
//! `--flood-close-after` like a refused send: asking on while refused is flooding too.

pub mod gcra;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use gcra::{Gcra, Rate};
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

use crate::metrics::Metrics;

/// Flags of flood control.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodConfig {
    /// Sends per second one connection may sustain (0: unlimited).
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = 10.0)]
    pub send_rate: f64,

    /// Sends one connection may make at once after being quiet.
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 30)]
    pub send_burst: u32,

    /// Sends per second one user name may sustain over all its connections on all nodes
    /// (0: unlimited). Shared through Redis when Redis is configured.
    #[arg(long, env = "CHAT_NAME_SEND_RATE", default_value_t = 20.0)]
    pub name_send_rate: f64,

    /// Sends one user name may make at once after being quiet.
    #[arg(long, env = "CHAT_NAME_SEND_BURST", default_value_t = 60)]
    pub name_send_burst: u32,

    /// Milliseconds during which the same text from the same name into the same room is
    /// refused as a duplicate (0: no debounce).
    #[arg(long, env = "CHAT_DUPLICATE_WINDOW_MS", default_value_t = 2000)]
    pub duplicate_window_ms: u64,

    /// Rate-limited sends in a row after which the connection is closed with 1008 (0: never).
    #[arg(long, env = "CHAT_FLOOD_CLOSE_AFTER", default_value_t = 20)]
    pub flood_close_after: u32,

    /// Joins and leaves per second one connection may sustain (0: unlimited).
    #[arg(long, env = "CHAT_JOIN_RATE", default_value_t = 5.0)]
    pub join_rate: f64,

    /// Joins and leaves one connection may make at once after being quiet.
    #[arg(long, env = "CHAT_JOIN_BURST", default_value_t = 20)]
    pub join_burst: u32,
}

impl FloodConfig {
    /// Checks the values; the error names the flag.
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(self.send_rate.is_finite() && self.send_rate >= 0.0) {
            return Err("--send-rate must be a number of at least 0");
        }
        if !(self.name_send_rate.is_finite() && self.name_send_rate >= 0.0) {
            return Err("--name-send-rate must be a number of at least 0");
        }
        if self.send_burst == 0 || self.name_send_burst == 0 {
            return Err("--send-burst and --name-send-burst must be at least 1");
        }
        if !(self.join_rate.is_finite() && self.join_rate >= 0.0) {
            return Err("--join-rate must be a number of at least 0");
        }
        if self.join_burst == 0 {
            return Err("--join-burst must be at least 1");
        }
        Ok(())
    }

    /// The per-connection budget of joins and leaves; `None` when --join-rate is 0.
    pub fn join_rate(&self) -> Option<Rate> {
        Rate::new(self.join_rate, self.join_burst)
    }

    /// The per-connection send rate; `None` when --send-rate is 0.
    pub fn connection_rate(&self) -> Option<Rate> {
        Rate::new(self.send_rate, self.send_burst)
    }

    /// The cluster-wide send rate per user name; `None` when --name-send-rate is 0.
    pub fn name_rate(&self) -> Option<Rate> {
        Rate::new(self.name_send_rate, self.name_send_burst)
    }

    /// The debounce window for repeated texts; `None` when --duplicate-window-ms is 0.
    pub fn duplicate_window(&self) -> Option<Duration> {
        (self.duplicate_window_ms > 0).then(|| Duration::from_millis(self.duplicate_window_ms))
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request may go ahead; for a send, it may be published.
    Allowed,
    /// Over the rate; a send will be accepted again after this many milliseconds.
    Limited {
        /// Rounded up and at least 1, so a client that waits this long is not refused again.
        retry_after_ms: u64,
    },
    /// The same text was sent into the same room within the debounce window.
    Duplicate,
}

/// A verdict now (in memory) or after a round trip (Redis).
pub enum Check {
    /// Decided without waiting: the connection's own rate, or the in-memory limiter.
    Ready(Verdict),
    /// Decided by Redis; the session awaits it before publishing.
    Pending(BoxFuture<'static, Verdict>),
}

/// The cluster-wide limit per user name, and the debounce, behind one check per send.
pub trait NameLimiter: Send + Sync {
    /// Counts a send of `text` by `name` into `room` and says whether it may be published.
    fn check(&self, name: &str, room: &str, text: &str) -> Check;
}

/// What a session needs for flood control, shared by every session of a node.
#[derive(Clone)]
pub struct FloodPolicy {
    /// Sends of one connection; `None`: unlimited.
    pub connection_rate: Option<Rate>,
    /// Joins and leaves of one connection.
    pub join_rate: Option<Rate>,
    /// Rate-limited requests in a row after which the connection is closed (0: never).
    pub close_after: u32,
    /// The per-name limit and debounce, in memory or in Redis.
    pub names: Arc<dyn NameLimiter>,
}

impl std::fmt::Debug for FloodPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodPolicy")
            .field("connection_rate", &self.connection_rate)
            .field("join_rate", &self.join_rate)
            .field("close_after", &self.close_after)
            .finish_non_exhaustive()
    }
}

/// One connection's flood control: its own rates and its run of refused requests.
pub struct FloodGuard {
    policy: FloodPolicy,
    epoch: Instant,
    gcra: Gcra,
    join_gcra: Gcra,
    limited_in_a_row: u32,
}

impl FloodGuard {
    /// A guard with full budgets, for a connection that has just opened.
    pub fn new(policy: FloodPolicy) -> Self {
        FloodGuard {
            policy,
            epoch: Instant::now(),
            gcra: Gcra::default(),
            join_gcra: Gcra::default(),
            limited_in_a_row: 0,
        }
    }

    /// Checks a send: the connection's own rate first (free), then the name's.
    pub fn check(&mut self, metrics: &Metrics, name: &str, room: &str, text: &str) -> Check {
        if let Some(rate) = &self.policy.connection_rate {
            let now = self.now();
            if let Err(wait) = self.gcra.check(rate, now) {
                metrics.limits.rate_limited_connection.inc();
                return Check::Ready(Verdict::Limited {
                    retry_after_ms: ceil_millis(wait),
                });
            }
        }
        self.policy.names.check(name, room, text)
    }

    /// Checks a join or a leave against the connection's budget for them; a refusal is to be
    /// [`record`](Self::record)ed like a refused send.
    pub fn check_join(&mut self, metrics: &Metrics) -> Verdict {
        let Some(rate) = &self.policy.join_rate else {
            return Verdict::Allowed;
        };
        let now = self.now();
        match self.join_gcra.check(rate, now) {
            Ok(()) => Verdict::Allowed,
            Err(wait) => {
                metrics.limits.rate_limited_join.inc();
                Verdict::Limited {
                    retry_after_ms: ceil_millis(wait),
                }
            }
        }
    }

    /// Nanoseconds since the guard was made: the clock of its GCRA states.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records a verdict; returns true once the connection has been rate-limited too often in
    /// a row and should be closed.
    pub fn record(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Allowed => self.limited_in_a_row = 0,
            Verdict::Limited { .. } => self.limited_in_a_row += 1,
            Verdict::Duplicate => {}
        }
        self.policy.close_after > 0 && self.limited_in_a_row >= self.policy.close_after
    }
}

/// Milliseconds to wait, rounded up so that a client retrying after it is not refused again.
pub(crate) fn ceil_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(join_rate: Option<Rate>, close_after: u32) -> FloodGuard {
        FloodGuard::new(FloodPolicy {
            connection_rate: Rate::new(1.0, 1),
            join_rate,
            close_after,
            names: Arc::new(MemoryLimiter::new(None, None, Arc::new(Metrics::new()))),
        })
    }

    #[test]
    fn joins_have_a_budget_of_their_own_and_refusals_count_as_flooding() {
        let metrics = Metrics::new();
        let mut guard = guard(Rate::new(1.0, 2), 2);
        // Sends spent their budget; joins still have theirs.
        assert!(matches!(
            guard.check(&metrics, "ada", "lobby", "hi"),
            Check::Ready(Verdict::Allowed)
        ));
        assert_eq!(guard.check_join(&metrics), Verdict::Allowed);
        assert_eq!(guard.check_join(&metrics), Verdict::Allowed);
        let refused = guard.check_join(&metrics);
        assert!(
            matches!(refused, Verdict::Limited { retry_after_ms } if retry_after_ms <= 1000),
            "{refused:?}"
        );
        assert_eq!(metrics.limits.rate_limited_join.get(), 1);
        assert!(!guard.record(refused));
        let again = guard.check_join(&metrics);
        assert!(guard.record(again), "two refusals in a row");
    }

    #[test]
    fn a_join_rate_of_zero_is_no_limit() {
        let metrics = Metrics::new();
        let mut guard = guard(None, 1);
        for _ in 0..1000 {
            assert_eq!(guard.check_join(&metrics), Verdict::Allowed);
        }
    }
}
