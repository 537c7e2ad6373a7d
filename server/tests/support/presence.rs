//! What a test client learns from `presence` and `members` frames: the names that came and
//! went, each room's latest count, and when each frame arrived (to check coalescing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, ServerFrame};

use super::client::{Client, Event};
use super::unique;

/// A name that came or went, as a `presence` frame reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PresenceEvent {
    Join,
    Leave,
}

/// The `presence` frames a client received.
#[derive(Debug, Default)]
pub(crate) struct PresenceLog {
    /// Names from `joins` and `leaves`, oldest first, until a test takes them.
    events: Vec<(PresenceEvent, String)>,
    /// Each room's count in its latest frame.
    counts: HashMap<String, u64>,
    /// Every frame's room and arrival, and whether it carried names.
    frames: Vec<(String, Instant, bool)>,
}

impl PresenceLog {
    pub(super) fn record(&mut self, frame: ServerFrame<'static>) {
        let ServerFrame::Presence {
            room,
            count,
            joins,
            leaves,
        } = frame
        else {
            return;
        };
        let named = joins.is_some();
        for (event, names) in [(PresenceEvent::Join, joins), (PresenceEvent::Leave, leaves)] {
            for name in names.into_iter().flatten() {
                self.events.push((event, name.into_owned()));
            }
        }
        self.counts.insert(room.to_string(), count);
        self.frames.push((room.into_owned(), Instant::now(), named));
    }
}

/// A page of names from a `members` reply.
#[derive(Debug, Clone)]
pub(crate) struct MembersPage {
    pub count: u64,
    pub members: Vec<String>,
    pub more_members: bool,
}

impl Client {
    /// The names reported so far, oldest first, and forgets them.
    pub(crate) fn take_presence(&mut self) -> Vec<(PresenceEvent, String)> {
        std::mem::take(&mut self.presence.events)
    }

    /// When each `presence` frame of `room` arrived, and whether it carried names.
    pub(crate) fn presence_frames(&self, room: &str) -> Vec<(Instant, bool)> {
        let frames = self.presence.frames.iter();
        frames
            .filter(|(r, ..)| r == room)
            .map(|&(_, at, named)| (at, named))
            .collect()
    }

    /// The count of `room`'s latest `presence` frame.
    pub(crate) fn presence_count(&self, room: &str) -> Option<u64> {
        self.presence.counts.get(room).copied()
    }

    /// Reads for up to `timeout`, setting aside what is not presence.
    pub(crate) async fn read_presence_for(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            self.read_some(deadline).await;
        }
    }

    /// Reads until `done` holds or `timeout` passed; panics with `what` on timeout.
    async fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            if tokio::time::Instant::now() >= deadline {
                panic!("{what} within {timeout:?}: {:?}", self.presence);
            }
            let wait = tokio::time::Instant::now() + Duration::from_millis(100);
            self.read_some(wait.min(deadline)).await;
        }
    }

    /// Reads one event; presence frames are moved aside, others stay pending for later.
    async fn read_some(&mut self, deadline: tokio::time::Instant) {
        match self.read_event(deadline).await {
            Some(Event::Frame(frame)) => self.pending.push_back(frame),
            Some(Event::Closed(code)) => panic!("server closed the connection ({code:?})"),
            None => {}
        }
    }

    /// Waits until a `presence` frame reported `name` with `event`, and forgets what came
    /// up to it.
    pub(crate) async fn wait_presence(
        &mut self,
        event: PresenceEvent,
        name: &str,
        timeout: Duration,
    ) {
        let seen = |client: &Self| {
            let mut events = client.presence.events.iter();
            events.any(|(e, n)| *e == event && n == name)
        };
        self.wait_for(&format!("no presence {event:?} of {name}"), timeout, seen)
            .await;
        let events = &mut self.presence.events;
        if let Some(at) = events.iter().position(|(e, n)| *e == event && n == name) {
            events.drain(..=at);
        }
    }

    /// Waits until `room`'s latest `presence` frame says `count`.
    pub(crate) async fn wait_count(&mut self, room: &str, count: u64, timeout: Duration) {
        let what = format!("{room}'s count never reached {count}");
        self.wait_for(&what, timeout, |client| {
            client.presence_count(room) == Some(count)
        })
        .await;
    }

    /// Asks for the page of `room`'s names after `after`.
    pub(crate) async fn members(&mut self, room: &str, after: Option<&str>) -> MembersPage {
        let reference = unique("members-");
        self.send_frame(&ClientFrame::Members {
            room: room.into(),
            after: after.map(Into::into),
            reference: Some(reference.as_str().into()),
        })
        .await;
        match self.reply_to(Some(&reference)).await {
            ServerFrame::Members {
                count,
                members,
                more_members,
                ..
            } => MembersPage {
                count,
                members: members.into_iter().map(|name| name.into_owned()).collect(),
                more_members,
            },
            other => panic!("members of {room}: {other:?}"),
        }
    }
}
