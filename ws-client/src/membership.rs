//! Where one connection stands in its room: its `join` sent and awaited, joined, a churn
//! `leave` awaited, away for a moment, back with a new `join`.
//!
//! Kept apart from the socket loop so that the loop only asks what is due and when, and so
//! that the timeouts of joins and leaves are one rule: a request unanswered for
//! [`REPLY_TIMEOUT`] ends the connection, counted by cause.

use std::time::Duration;

use tokio::time::Instant;

/// How long a `join` or a churn `leave` may wait for its reply.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a churned client stays out of its room before it joins again: long enough for the
/// nodes to announce the leave (several presence intervals), so churn moves the count rather
/// than cancelling out within one interval.
pub(crate) const CHURN_AWAY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `join` sent at `sent`; `churn` when it comes back from a churn leave.
    Joining {
        sent: Instant,
        churn: bool,
    },
    Joined,
    /// A churn `leave` sent at `sent`.
    Leaving {
        sent: Instant,
    },
    /// Out of the room until `until`.
    Away {
        until: Instant,
    },
}

/// What the loop must do when [`Membership::due`] comes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send `join` (the membership already counts it as sent).
    Join,
    /// A reply did not come: end the connection with this cause.
    Fail(&'static str),
}

/// One connection's membership of its room.
#[derive(Debug)]
pub(crate) struct Membership {
    step: Step,
}

/// A `joined` that answered a `join`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answered {
    pub took: Duration,
    /// The join came back from a churn leave.
    pub churn: bool,
}

impl Membership {
    /// A connection whose first `join` is being sent now.
    pub(crate) fn joining(now: Instant) -> Membership {
        Membership {
            step: Step::Joining {
                sent: now,
                churn: false,
            },
        }
    }

    /// A `join` is being written now: its reply is timed from here.
    pub(crate) fn sending_join(&mut self, now: Instant) {
        let churn = matches!(self.step, Step::Joining { churn: true, .. });
        self.step = Step::Joining { sent: now, churn };
    }

    /// When the loop must act without a frame: a reply overdue, or the time to come back.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        match self.step {
            Step::Joining { sent, .. } | Step::Leaving { sent } => Some(sent + REPLY_TIMEOUT),
            Step::Away { until } => Some(until),
            Step::Joined => None,
        }
    }

    /// What to do now that [`Membership::due_at`] has passed.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Due> {
        match self.step {
            Step::Joining { .. } => Some(Due::Fail("join: no reply")),
            Step::Leaving { .. } => Some(Due::Fail("leave: no reply")),
            Step::Away { .. } => {
                self.step = Step::Joining {
                    sent: now,
                    churn: true,
                };
                Some(Due::Join)
            }
            Step::Joined => None,
        }
    }

    pub(crate) fn is_joined(&self) -> bool {
        self.step == Step::Joined
    }

    /// A churn `leave` is being sent now; false (and nothing changes) unless joined.
    pub(crate) fn leave(&mut self, now: Instant) -> bool {
        if self.step != Step::Joined {
            return false;
        }
        self.step = Step::Leaving { sent: now };
        true
    }

    /// A `joined` arrived: how long its `join` took, unless it answered none (a second join of
    /// the same room is harmless and answered again).
    pub(crate) fn joined(&mut self, now: Instant) -> Option<Answered> {
        let Step::Joining { sent, churn } = self.step else {
            return None;
        };
        self.step = Step::Joined;
        Some(Answered {
            took: now.saturating_duration_since(sent),
            churn,
        })
    }

    /// A `left` arrived; true when it answered the churn leave, and the client is now away.
    pub(crate) fn left(&mut self, now: Instant) -> bool {
        if !matches!(self.step, Step::Leaving { .. }) {
            return false;
        }
        self.step = Step::Away {
            until: now + CHURN_AWAY,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_leaves_and_comes_back() {
        let t0 = Instant::now();
        let mut m = Membership::joining(t0);
        assert_eq!(m.due_at(), Some(t0 + REPLY_TIMEOUT));
        assert!(!m.leave(t0), "no leave before the join is answered");
        let ms = Duration::from_millis;
        assert_eq!(
            m.joined(t0 + ms(30)),
            Some(Answered {
                took: ms(30),
                churn: false
            })
        );
        assert!(m.is_joined() && m.due_at().is_none());
        assert_eq!(
            m.joined(t0 + ms(40)),
            None,
            "a repeated joined answers nothing"
        );

        assert!(m.leave(t0 + ms(100)));
        assert!(m.left(t0 + ms(90)));
        assert!(!m.is_joined());
        assert_eq!(m.due_at(), Some(t0 + ms(90) + CHURN_AWAY));
        assert_eq!(m.due(t0 + ms(600)), Some(Due::Join));
        assert_eq!(
            m.joined(t0 + ms(650)),
            Some(Answered {
                took: ms(50),
                churn: true
            })
        );
    }

    #[test]
    fn unanswered_requests_fail_with_their_cause() {
        let t0 = Instant::now();
        let mut m = Membership::joining(t0);
        assert_eq!(m.due(t0 + REPLY_TIMEOUT), Some(Due::Fail("join: no reply")));
        let mut m = Membership::joining(t0);
        m.joined(t0);
        assert_eq!(m.due(t0), None);
        assert!(m.leave(t0));
        assert_eq!(
            m.due(t0 + REPLY_TIMEOUT),
            Some(Due::Fail("leave: no reply"))
        );
        assert!(
            !Membership::joining(t0).left(t0),
            "a stray left changes nothing"
        );
    }
}
