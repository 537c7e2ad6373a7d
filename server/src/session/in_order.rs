//! Replies that wait for the broker, handed back in request order, with nothing allocated
//! while none wait.
//!
//! `FuturesOrdered` allocates two reference-counted nodes when it is made. A connection would
//! keep them for its whole life, though its replies are in flight only for moments; here they
//! exist only while replies wait.

use futures::StreamExt;
use futures::stream::FuturesOrdered;

/// A connection's replies in flight, in request order.
pub(super) struct InOrder<F: Future> {
    waiting: Option<FuturesOrdered<F>>,
}

impl<F: Future> InOrder<F> {
    pub(super) fn new() -> Self {
        InOrder { waiting: None }
    }

    /// Adds a reply after every reply already waiting.
    pub(super) fn push_back(&mut self, reply: F) {
        self.waiting
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(reply);
    }

    /// How many replies wait.
    pub(super) fn len(&self) -> usize {
        self.waiting.as_ref().map_or(0, FuturesOrdered::len)
    }

    /// Whether no reply waits.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next reply in request order once it is ready; `None` when none waits.
    pub(super) async fn next(&mut self) -> Option<F::Output> {
        let reply = self.waiting.as_mut()?.next().await;
        if self.is_empty() {
            self.waiting = None;
        }
        reply
    }
}
