//! Opening what arrives sealed from the backplane: message bodies, member names and history
//! entries.
//!
//! Anyone who can write to Redis can publish on a room's channel, so a payload that does not
//! open is expected now and then: it is dropped, counted in `chat_decrypt_failures_total`, and
//! logged at most every 10 s (see [`Throttle`](super::throttle::Throttle)), so a flood of
//! forged payloads cannot flood the log.

use std::fmt::Display;

use crate::wire::TextFrame;
use chat_protocol::MessageId;

use super::Rooms;
use crate::broker::HistoryEntry;
use crate::envelope::OpenError;
use crate::presence::name_aad;
use crate::relay;

/// Why a sealed payload from the backplane was not delivered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The seal did not open: wrong key, forged, or not an envelope at all.
    #[error(transparent)]
    Seal(#[from] OpenError),
    /// A message body that opened but is not text.
    #[error("body is not UTF-8")]
    BodyNotUtf8,
    /// A message body that opened but is not a JSON object.
    #[error("body is not a JSON object")]
    BodyNotObject,
    /// A member name that opened but is not text.
    #[error("name is not UTF-8")]
    NameNotUtf8,
}

impl Rooms {
    /// Opens a sealed message body and turns it into the room's `message` frame.
    pub fn open_message(
        &self,
        channel: &str,
        id: MessageId,
        sealed_body: Vec<u8>,
    ) -> Result<TextFrame, PayloadError> {
        let body = self.keyring.open(channel.as_bytes(), sealed_body)?;
        let body = std::str::from_utf8(&body).map_err(|_| PayloadError::BodyNotUtf8)?;
        relay::message_frame(id, body)
            .map(TextFrame::from)
            .ok_or(PayloadError::BodyNotObject)
    }

    /// Opens history entries into `message` frames; those that do not open are dropped and
    /// counted.
    pub fn open_history(
        &self,
        channel: &str,
        entries: Vec<HistoryEntry>,
    ) -> Vec<(MessageId, TextFrame)> {
        entries
            .into_iter()
            .filter_map(|entry| {
                self.open_message(channel, entry.id, entry.sealed_body)
                    .map(|frame| (entry.id, frame))
                    .map_err(|reason| self.dropped(channel, &reason))
                    .ok()
            })
            .collect()
    }

    /// Opens a stored body to learn its author and what it changes; `None` (counted as a
    /// drop) when it does not open or is not a body a node writes.
    pub fn open_stored(&self, channel: &str, sealed_body: Vec<u8>) -> Option<relay::StoredEntry> {
        let stored = self
            .keyring
            .open(channel.as_bytes(), sealed_body)
            .map_err(PayloadError::from)
            .and_then(|body| {
                let body = std::str::from_utf8(&body).map_err(|_| PayloadError::BodyNotUtf8)?;
                relay::stored_author(body).ok_or(PayloadError::BodyNotObject)
            });
        stored.map_err(|reason| self.dropped(channel, reason)).ok()
    }

    /// Opens a sealed member name.
    pub fn open_name(&self, channel: &str, sealed_name: Vec<u8>) -> Result<String, PayloadError> {
        let name = self.keyring.open(&name_aad(channel), sealed_name)?;
        String::from_utf8(name.to_vec()).map_err(|_| PayloadError::NameNotUtf8)
    }

    /// Counts and (at most every 10 s) logs a payload that did not open.
    pub fn dropped(&self, channel: &str, reason: impl Display) {
        self.metrics.decrypt_failures.inc();
        self.warn_dropped(channel, reason);
    }

    /// Logs a dropped payload, at most every 10 s (a flood of forged payloads must not flood
    /// the log).
    pub(super) fn warn_dropped(&self, channel: &str, reason: impl Display) {
        if let Some(suppressed) = self.decrypt_warnings.allow() {
            log::warn!(
                "dropped a backplane payload on {channel}: {reason} ({suppressed} more dropped since the last warning)"
            );
        }
    }
}
