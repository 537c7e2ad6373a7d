//! Edits, deletions and typing signals: what the hub publishes besides messages.
//!
//! An edit or a deletion is published like a message (stored in history, with an id of its
//! own, delivered in order) so that a `since` recovery or a later join sees it after the
//! message it changes. Before it is published, the original is read back from history and
//! opened here: its author is what the node stored, never what the client claims, and a
//! message that history no longer holds, or that was deleted, cannot be changed.
//!
//! A typing signal is a plain publish of the sealed name: no history, no id, no answer.
//!
//! History keeps a deleted message's entry (ids stay gap-free, and Redis never learns what
//! was deleted), so the history a join carries blanks the text of every message that a later
//! entry in it deletes: what its author took back is not handed to whoever joins next.

use std::collections::HashSet;

use bytes::Bytes;
use chat_protocol::{MessageId, ServerFrame};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Hub;
use crate::broker::{BrokerError, BrokerFuture, HistoryRange};
use crate::ids::now_ms;
use crate::relay::{self, Change};

/// Why an edit or a deletion was not published.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// History does not hold the message (never sent, trimmed, deleted, or not a message).
    #[error("no message {0} in this room's history: it was never sent, deleted, or is too old")]
    NotFound(MessageId),
    /// Someone else wrote it.
    #[error("message {0} is someone else's")]
    NotAuthor(MessageId),
    /// The backplane could not be asked, or did not take the change.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// An edit or a deletion as a client asked for it, owned so it can wait for its turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeDraft {
    /// Replace the text of `target`.
    Edit {
        /// The message to edit.
        target: MessageId,
        /// Its new text.
        text: String,
    },
    /// Delete `target`.
    Delete {
        /// The message to delete.
        target: MessageId,
    },
}

impl ChangeDraft {
    /// The message it changes.
    pub fn target(&self) -> MessageId {
        match self {
            ChangeDraft::Edit { target, .. } | ChangeDraft::Delete { target } => *target,
        }
    }

    fn as_change(&self) -> Change<'_> {
        match self {
            ChangeDraft::Edit { target, text } => Change::Edit {
                target: *target,
                text,
            },
            ChangeDraft::Delete { target } => Change::Delete { target: *target },
        }
    }
}

impl Hub {
    /// Checks that `from` wrote `draft`'s target and that it is still there, then publishes the
    /// change; resolves to the change's own id once the broker accepted it. The publish is
    /// made only after the check, so callers that need order wait for this future.
    pub fn publish_change(
        &self,
        channel: &str,
        room: &str,
        from: &str,
        draft: ChangeDraft,
    ) -> BoxFuture<'static, Result<MessageId, ChangeError>> {
        let check = self.check_author(channel, draft.target(), from);
        let broker = self.broker.clone();
        let keyring = self.keyring.clone();
        let (channel, room, from) = (channel.to_owned(), room.to_owned(), from.to_owned());
        async move {
            check.await?;
            let ts = now_ms();
            let body = relay::change_body(&room, &from, draft.as_change(), ts);
            let sealed = keyring.seal(channel.as_bytes(), body.as_bytes());
            Ok(broker.publish(&channel, sealed, ts).await?)
        }
        .boxed()
    }

    /// Reads `target` and what followed it from history: fine when it is a message by `from`
    /// that no later entry deleted.
    fn check_author(
        &self,
        channel: &str,
        target: MessageId,
        from: &str,
    ) -> BoxFuture<'static, Result<(), ChangeError>> {
        let range = HistoryRange::From {
            from: target,
            through: None,
            limit: self.history.size.saturating_add(1),
        };
        let read: BrokerFuture<_> = self.broker.history(channel, range);
        let rooms = self.rooms.clone();
        let (channel, from) = (channel.to_owned(), from.to_owned());
        async move {
            let entries = read.await?;
            let mut entries = entries.into_iter();
            let original = entries
                .next()
                .filter(|entry| entry.id == target)
                .and_then(|entry| rooms.open_stored(&channel, entry.sealed_body))
                .filter(|stored| stored.is_message)
                .ok_or(ChangeError::NotFound(target))?;
            if original.from != from {
                return Err(ChangeError::NotAuthor(target));
            }
            let deleted = entries.any(|entry| {
                rooms
                    .open_stored(&channel, entry.sealed_body)
                    .is_some_and(|stored| stored.deletes == Some(target))
            });
            if deleted {
                return Err(ChangeError::NotFound(target));
            }
            Ok(())
        }
        .boxed()
    }

    /// Tells the room's members on every node that `from` is typing: one plain publish.
    pub fn typing(&self, channel: &str, from: &str) {
        let sealed = self
            .keyring
            .seal(&relay::typing_aad(channel), from.as_bytes());
        let payload = relay::typing_payload(&sealed);
        self.broker.signal(channel, Bytes::from(payload));
    }
}

/// Blanks the `text` of every `message` frame that a `deleted` frame in `frames` deletes.
/// Frames stay in place, so ids stay gap-free; only deletions are parsed to find them.
pub(super) fn redact_deleted(frames: &mut [(MessageId, String)]) {
    let deleted: HashSet<String> = frames
        .iter()
        .filter(|(_, frame)| frame.starts_with(r#"{"type":"deleted""#))
        .filter_map(|(_, frame)| match serde_json::from_str(frame) {
            Ok(ServerFrame::Deleted { target, .. }) => Some(target.into_owned()),
            _ => None,
        })
        .collect();
    if deleted.is_empty() {
        return;
    }
    for (id, frame) in frames.iter_mut() {
        if !deleted.contains(&id.to_string()) {
            continue;
        }
        if let Ok(ServerFrame::Message {
            id, room, from, ts, ..
        }) = serde_json::from_str(frame)
        {
            let text = "".into();
            *frame = ServerFrame::Message {
                id,
                room,
                from,
                text,
                ts,
            }
            .to_json();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay;

    #[test]
    fn deleted_messages_lose_their_text_and_keep_their_place() {
        let id = |seq| MessageId { epoch: 3, seq };
        let message = |seq, text| {
            let body = relay::message_body("r", "Ada", text, 1);
            (id(seq), relay::message_frame(id(seq), &body).unwrap())
        };
        let delete = relay::change_body("r", "Ada", Change::Delete { target: id(0) }, 2);
        let mut frames = vec![
            message(0, "a secret"),
            message(1, "kept"),
            (id(2), relay::message_frame(id(2), &delete).unwrap()),
        ];
        let untouched = frames.clone();
        redact_deleted(&mut frames);
        assert!(!frames[0].1.contains("a secret"), "{}", frames[0].1);
        assert!(frames[0].1.contains(r#""text":"""#), "{}", frames[0].1);
        assert_eq!(frames[1..], untouched[1..]);
    }
}
