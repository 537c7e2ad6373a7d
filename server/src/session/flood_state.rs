//! A connection's flood state: its guard, whether it has been limited too often in a row, and
//! the turn that keeps its publishes in the order it sent them.
//!
//! When a verdict needs a round trip to Redis, the publish waits for it inside the reply's
//! future; a later send must then wait for that publish, or one client's messages could be
//! published out of order. The turn is a oneshot whose sender is dropped once the earlier send
//! has been published or refused.

use tokio::sync::oneshot;

use crate::flood::{Check, FloodGuard, FloodPolicy, Verdict};
use crate::metrics::Metrics;

/// Flood control for one connection.
pub(super) struct FloodState {
    guard: FloodGuard,
    /// Resolves when the previous send that waited for flood control has been published or
    /// refused; the next one publishes only after it.
    publish_turn: Option<oneshot::Receiver<()>>,
    /// Set once the client has been rate-limited too often in a row.
    flooding: bool,
}

/// A send's place in the publish order: wait for `previous` (if any), publish, then drop
/// `mine` to hand the turn on.
pub(super) struct Turn {
    pub(super) previous: Option<oneshot::Receiver<()>>,
    pub(super) mine: oneshot::Sender<()>,
}

impl FloodState {
    /// Fresh state under `policy`.
    pub(super) fn new(policy: FloodPolicy) -> Self {
        FloodState {
            guard: FloodGuard::new(policy),
            publish_turn: None,
            flooding: false,
        }
    }

    /// Checks a send (see [`FloodGuard::check`]).
    pub(super) fn check(&mut self, metrics: &Metrics, name: &str, room: &str, text: &str) -> Check {
        self.guard.check(metrics, name, room, text)
    }

    /// Checks a join or a leave (see [`FloodGuard::check_join`]).
    pub(super) fn check_join(&mut self, metrics: &Metrics) -> Verdict {
        self.guard.check_join(metrics)
    }

    /// Records a verdict; the connection is flooding from the one that makes too many in a row.
    pub(super) fn record(&mut self, verdict: Verdict) {
        self.flooding |= self.guard.record(verdict);
    }

    /// Whether the client has been rate-limited too often in a row and must be closed.
    pub(super) fn flooding(&self) -> bool {
        self.flooding
    }

    /// Whether no earlier send still waits for flood control to publish, so one may publish
    /// now.
    pub(super) fn turn_is_free(&mut self) -> bool {
        let free = match &mut self.publish_turn {
            None => true,
            Some(previous) => !matches!(
                previous.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ),
        };
        if free {
            self.publish_turn = None;
        }
        free
    }

    /// Takes the next place in the publish order.
    pub(super) fn take_turn(&mut self) -> Turn {
        let previous = self.publish_turn.take();
        let (mine, next) = oneshot::channel::<()>();
        self.publish_turn = Some(next);
        Turn { previous, mine }
    }
}
