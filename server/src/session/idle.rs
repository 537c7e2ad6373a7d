//! The idle check: a client that stays silent gets a ping after half the idle timeout and is
//! closed if it has still answered nothing by the end. Only a flag is touched per frame read;
//! the clock is looked at once per half, by the session's timer.

use std::time::Duration;

/// What to do at one half of the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdleStep {
    /// The client was heard (or could not be): wait another half.
    Wait,
    /// Silent for a half: ping it.
    Ping,
    /// Silent for a half after the ping: close the connection.
    GiveUp,
}

/// Whether the client was heard since the last check, and whether it was pinged then.
#[derive(Debug)]
pub(super) struct IdleCheck {
    half: Option<Duration>,
    heard: bool,
    pinged: bool,
}

impl IdleCheck {
    /// A check for `timeout`; none at all without one.
    pub(super) fn new(timeout: Option<Duration>) -> Self {
        IdleCheck {
            half: timeout.map(|idle| idle / 2),
            heard: false,
            pinged: false,
        }
    }

    /// How often to check, if at all.
    pub(super) fn half(&self) -> Option<Duration> {
        self.half
    }

    /// The client sent something.
    pub(super) fn heard(&mut self) {
        self.heard = true;
    }

    /// Decides at one half of the timeout. While the node does not read (`reading` is false),
    /// the client cannot be heard, so its silence does not count.
    pub(super) fn check(&mut self, reading: bool) -> IdleStep {
        if self.heard || !reading {
            (self.heard, self.pinged) = (false, false);
            IdleStep::Wait
        } else if self.pinged {
            IdleStep::GiveUp
        } else {
            self.pinged = true;
            IdleStep::Ping
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_pinged_then_closed_and_any_frame_starts_over() {
        let mut idle = IdleCheck::new(Some(Duration::from_secs(10)));
        assert_eq!(idle.half(), Some(Duration::from_secs(5)));
        assert_eq!(idle.check(true), IdleStep::Ping);
        idle.heard();
        assert_eq!(idle.check(true), IdleStep::Wait);
        assert_eq!(idle.check(true), IdleStep::Ping);
        assert_eq!(idle.check(true), IdleStep::GiveUp);
    }

    #[test]
    fn silence_while_the_node_does_not_read_does_not_count() {
        let mut idle = IdleCheck::new(Some(Duration::from_secs(10)));
        assert_eq!(idle.check(true), IdleStep::Ping);
        assert_eq!(idle.check(false), IdleStep::Wait);
        assert_eq!(idle.check(true), IdleStep::Ping);
    }
}
