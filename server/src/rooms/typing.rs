//! Typing signals as members see them: opened once per node and offered to every local member
//! of the room except those of the typist's own name.
//!
//! A signal has no id and is never stored, so it bypasses the room's ordering entirely: it is
//! neither held while the room recovers nor counted as a gap. It is offered like a presence
//! frame, only while a member's queue is at most half full, so a burst of typing can neither
//! close a slow reader nor crowd out its messages; what does not fit is dropped, which a typing
//! indicator survives by nature.

use crate::wire::TextFrame;
use chat_protocol::ServerFrame;

use super::Rooms;
use super::open::PayloadError;
use crate::relay;

impl Rooms {
    /// A member of `channel` on some node is typing.
    pub(super) fn deliver_typing(&self, channel: &str, sealed_name: Vec<u8>) {
        let name = match self.open_typing_name(channel, sealed_name) {
            Ok(name) => name,
            Err(reason) => return self.dropped(channel, reason),
        };
        let Some(room) = self.rooms.get(channel) else {
            return;
        };
        let frame = ServerFrame::Typing {
            room: room.name.as_str().into(),
            from: name.as_str().into(),
        };
        let frame = TextFrame::from(frame.to_json());
        for member in room.members.values() {
            if *member.name != *name && !member.outbox.offer_presence(&frame) {
                self.metrics.chat.typing_dropped.inc();
            }
        }
    }

    fn open_typing_name(&self, channel: &str, sealed: Vec<u8>) -> Result<String, PayloadError> {
        let name = self.keyring.open(&relay::typing_aad(channel), sealed)?;
        String::from_utf8(name.to_vec()).map_err(|_| PayloadError::NameNotUtf8)
    }
}
