//! A connection's outbound queue, as the rooms see it: bounded, never waited on.
//!
//! Fan-out offers a frame with a non-blocking `try_send` while it holds a room's entry, so
//! nothing awaits under a lock. A member whose queue is full is not waited for: its connection
//! is flagged as a slow consumer (the token below) and closed by its own task, so one stuck
//! reader never slows its room.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// The sending end of one connection's bounded outbound queue.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Utf8Bytes>,
    overflowed: CancellationToken,
}

impl Outbox {
    /// A queue of `capacity` frames; the receiver belongs to the connection's task.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Utf8Bytes>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let outbox = Outbox {
            queue,
            overflowed: CancellationToken::new(),
        };
        (outbox, receiver)
    }

    /// Cancelled once the queue overflowed: the connection must close as a slow consumer.
    pub fn overflowed(&self) -> &CancellationToken {
        &self.overflowed
    }

    /// Queues a frame without waiting; returns whether it was queued.
    pub(super) fn offer(&self, frame: &Utf8Bytes) -> bool {
        match self.queue.try_send(frame.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.overflowed.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a presence frame only while the queue is at most half full; returns whether it
    /// was queued. A burst of departures (a crashed node's members leave all at once) must not
    /// close healthy connections as slow consumers, nor crowd out their messages: what does
    /// not fit is dropped, and the member list is whole again at the next join.
    pub(super) fn offer_presence(&self, frame: &Utf8Bytes) -> bool {
        self.queue.capacity() * 2 > self.queue.max_capacity()
            && self.queue.try_send(frame.clone()).is_ok()
    }
}
