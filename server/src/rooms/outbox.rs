//! A connection's outbound queue: bounded, never waited on by the rooms, and free when idle.
//!
//! Fan-out offers a frame without waiting while it holds a room's entry, so nothing awaits
//! under a lock. A member whose queue is full is not waited for: its connection is flagged as
//! a slow consumer and closed by its own task, so one stuck reader never slows its room.
//!
//! Most connections are idle most of the time, so the queue costs nothing while empty: its
//! storage is allocated by the first frame and given back whenever it drains, and
//! the overflow flag shares the queue's one allocation and waker. (A tokio channel allocated
//! about 1.4 KiB per connection up front, idle or not.)

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use crate::wire::TextFrame;
use futures::task::AtomicWaker;

/// The sending end of one connection's queue, cloned into every room the connection is in.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving end, owned by the connection's task (the only one that takes frames and
/// waits for them, so the one waker is enough).
pub struct Inbox {
    shared: Arc<Shared>,
}

struct Shared {
    frames: Mutex<Frames>,
    capacity: usize,
    overflowed: AtomicBool,
    /// The connection's task, woken by a new frame and by an overflow.
    task: AtomicWaker,
}

struct Frames {
    queue: VecDeque<TextFrame>,
    /// The receiver is gone: nothing more is taken.
    closed: bool,
}

impl Outbox {
    /// A queue of `capacity` frames; the [`Inbox`] belongs to the connection's task.
    pub fn new(capacity: usize) -> (Self, Inbox) {
        let shared = Arc::new(Shared {
            frames: Mutex::new(Frames {
                queue: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            overflowed: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        (
            Outbox {
                shared: shared.clone(),
            },
            Inbox { shared },
        )
    }

    /// Queues a frame without waiting; returns whether it was queued. A full queue flags the
    /// connection as a slow consumer.
    pub(super) fn offer(&self, frame: &TextFrame) -> bool {
        self.push(frame, self.shared.capacity, true)
    }

    /// Queues a presence frame only while the queue is at most half full; returns whether it
    /// was queued. A burst of departures (a crashed node's members leave all at once) must not
    /// close healthy connections as slow consumers, nor crowd out their messages: what does
    /// not fit is dropped, and the member list is whole again at the next join.
    pub(super) fn offer_presence(&self, frame: &TextFrame) -> bool {
        self.push(frame, self.shared.capacity.div_ceil(2), false)
    }

    /// Queues `frame` while fewer than `limit` frames wait; otherwise flags the connection as
    /// a slow consumer when `overflow` says so.
    fn push(&self, frame: &TextFrame, limit: usize, overflow: bool) -> bool {
        let mut frames = self.shared.lock();
        if frames.closed {
            return false;
        }
        if frames.queue.len() >= limit {
            drop(frames);
            if overflow {
                self.shared.overflowed.store(true, Ordering::Release);
                self.shared.task.wake();
            }
            return false;
        }
        let was_empty = frames.queue.is_empty();
        frames.queue.push_back(frame.clone());
        drop(frames);
        // The task takes everything queued whenever it runs, so only the first frame of a
        // burst needs to wake it: one wake-up per batch rather than per frame.
        if was_empty {
            self.shared.task.wake();
        }
        true
    }
}

impl Inbox {
    /// The next frame, waiting for one.
    pub async fn recv(&self) -> TextFrame {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<TextFrame> {
        if let Some(frame) = self.try_recv() {
            return Poll::Ready(frame);
        }
        self.shared.task.register(cx.waker());
        // A frame queued between the first look and the registration woke nobody.
        self.try_recv().map_or(Poll::Pending, Poll::Ready)
    }

    /// The next frame if one waits.
    pub fn try_recv(&self) -> Option<TextFrame> {
        let mut frames = self.shared.lock();
        let frame = frames.queue.pop_front();
        release_if_empty(&mut frames.queue);
        frame
    }

    /// Hands up to `max` waiting frames to `take`, in order, under one lock rather than one
    /// per frame; returns how many it handed over.
    pub fn take_up_to(&self, max: usize, mut take: impl FnMut(TextFrame)) -> usize {
        let mut frames = self.shared.lock();
        let count = max.min(frames.queue.len());
        for frame in frames.queue.drain(..count) {
            take(frame);
        }
        release_if_empty(&mut frames.queue);
        count
    }

    /// Resolves once the queue overflowed: the connection must close as a slow consumer.
    pub async fn overflowed(&self) {
        poll_fn(|cx| {
            if self.has_overflowed() {
                return Poll::Ready(());
            }
            self.shared.task.register(cx.waker());
            if self.has_overflowed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Whether the queue overflowed.
    pub fn has_overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut frames = self.shared.lock();
        frames.closed = true;
        frames.queue = VecDeque::new();
    }
}

/// Gives an emptied queue's storage back: most connections are idle between bursts.
fn release_if_empty(queue: &mut VecDeque<TextFrame>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Frames> {
        // A panic elsewhere cannot leave the queue half-changed: every change is one call.
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
