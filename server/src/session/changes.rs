//! Requests that change what a room shows without being messages: `typing`, `edit` and
//! `delete`.
//!
//! Typing is best-effort: at most one signal per room every [`TYPING_INTERVAL`] per
//! connection is published, the rest are dropped without a reply (and counted), and nothing is
//! acknowledged. Edits and deletions are published like messages: flood control first (their
//! own duplicate key, so an edit to a text just sent is not a duplicate of it), then, in the
//! connection's publish order, the hub's author check and the publish; they are answered with
//! `ack`, or `forbidden` / `not_found` when the check refuses them.

use std::time::Duration;

use chat_protocol::{ErrorCode, FrameError, MessageId};
use futures::FutureExt;
use tokio::time::Instant;

use super::Session;
use super::replies::{Reply, error_frame};
use crate::access::Denial;
use crate::flood::{Check, Verdict};
use crate::hub::{ChangeDraft, ChangeError, Hub};

/// Typing signals of one connection in one room are published at most this often.
pub(crate) const TYPING_INTERVAL: Duration = Duration::from_secs(2);

/// What a publishing request publishes once it is its turn.
pub(super) enum Outgoing {
    /// A chat message's text.
    Message(String),
    /// An edit or a deletion, checked against history first.
    Change(ChangeDraft),
}

impl Session {
    /// Publishes a typing signal, unless this connection sent one to the room within the last
    /// [`TYPING_INTERVAL`].
    pub(super) fn typing(&mut self, room: &str) {
        let Some(channel) = self.publishing_channel(room, &None) else {
            return;
        };
        let now = Instant::now();
        let metrics = &self.hub.metrics().chat;
        match self.typing.get_mut(room) {
            Some(last) if now.duration_since(*last) < TYPING_INTERVAL => {
                metrics.typing_dropped.inc();
                return;
            }
            Some(last) => *last = now,
            None => {
                self.typing.insert(room.to_owned(), now);
            }
        }
        metrics.typing_sent.inc();
        self.hub.typing(&channel, &self.name);
    }

    pub(super) fn edit(&mut self, room: &str, id: &str, text: &str, reference: Option<String>) {
        let Some(channel) = self.publishing_channel(room, &reference) else {
            return;
        };
        if let Err(error) = chat_protocol::validate_text_size(text, self.limits.max_text_bytes) {
            return self.reply_error(error.with_reference(reference));
        }
        let Some(target) = self.target(id, &reference) else {
            return;
        };
        let draft = ChangeDraft::Edit {
            target,
            text: text.to_owned(),
        };
        let key = format!("edit {target}\n{text}");
        self.change(channel, room, &key, draft, reference);
    }

    pub(super) fn delete(&mut self, room: &str, id: &str, reference: Option<String>) {
        let Some(channel) = self.publishing_channel(room, &reference) else {
            return;
        };
        let Some(target) = self.target(id, &reference) else {
            return;
        };
        let key = format!("delete {target}");
        self.change(
            channel,
            room,
            &key,
            ChangeDraft::Delete { target },
            reference,
        );
    }

    /// The id an edit or delete names (the parser checked its form).
    fn target(&mut self, id: &str, reference: &Option<String>) -> Option<MessageId> {
        let parsed = id.parse::<MessageId>();
        if let Err(error) = &parsed {
            let error = FrameError::new(ErrorCode::BadRequest, format!("`id`: {error}"));
            self.reply_error(error.with_reference(reference.clone()));
        }
        parsed.ok()
    }

    /// Passes flood control with `key` as the duplicate key, then publishes in turn.
    fn change(
        &mut self,
        channel: String,
        room: &str,
        key: &str,
        draft: ChangeDraft,
        reference: Option<String>,
    ) {
        let pending = match self.flood.check(self.hub.metrics(), &self.name, room, key) {
            Check::Ready(Verdict::Allowed) => futures::future::ready(Verdict::Allowed).boxed(),
            Check::Ready(verdict) => return self.reply_refused(verdict, reference),
            Check::Pending(verdict) => verdict,
        };
        let outgoing = Outgoing::Change(draft);
        self.send_after_check(pending, channel, room, outgoing, reference);
    }
}

/// The reply to an edit or a deletion: its ack, or why it was refused.
pub(super) fn changed(
    hub: &Hub,
    room: &str,
    result: Result<MessageId, ChangeError>,
    reference: Option<String>,
) -> Reply {
    let error = match result {
        Ok(id) => {
            return Reply::Published {
                reference,
                result: Ok(id),
                change: true,
            };
        }
        Err(ChangeError::Broker(error)) => {
            return Reply::Published {
                reference,
                result: Err(error),
                change: true,
            };
        }
        Err(ChangeError::NotAuthor(_)) => {
            hub.metrics().chat.forbidden.inc(Denial::NotAuthor);
            Denial::NotAuthor.error(room, reference)
        }
        Err(error @ ChangeError::NotFound(_)) => {
            FrameError::new(ErrorCode::NotFound, error.to_string()).with_reference(reference)
        }
    };
    Reply::Ready(error_frame(hub, error))
}
