//! Delivery: from a backplane payload to the members' outbound queues, the receiving half of
//! the hot path.
//!
//! A message is opened once per node, turned into its `message` frame once (see
//! [`crate::relay`]), and those bytes are shared by reference with every local member's
//! queue. Its id decides, through [`order`], whether it is delivered, dropped as a duplicate,
//! or held while the room recovers. Payloads larger than any a node can build are dropped
//! before they are opened.

use chat_protocol::MessageId;

use super::Rooms;
use super::drops::DropReason;
use super::ordering::{self, Order, Sequence, order};
use crate::broker::Inbound;
use crate::relay::{self, Relayed};

impl Rooms {
    fn deliver_message(&self, channel: &str, id: MessageId, sealed_body: Vec<u8>) {
        let frame = match self.open_message(channel, id, sealed_body) {
            Ok(frame) => frame,
            Err(reason) => return self.dropped(channel, reason),
        };
        let Some(mut room) = self.rooms.get_mut(channel) else {
            // The last local member left while the message was on its way.
            return;
        };
        let room = &mut *room;
        match &mut room.sequence {
            Sequence::Live { last } => match order(*last, id) {
                Order::Next => {
                    *last = Some(id);
                    self.metrics.messages_out.inc_by(room.fan_out(id, &frame));
                }
                Order::Duplicate => {}
                kind @ (Order::Gap | Order::Unconfirmed) => {
                    if kind == Order::Gap {
                        self.metrics.backplane_gaps.inc();
                    }
                    let after = *last;
                    let mut held = ordering::Held::default();
                    held.hold(self.held_budget, id, frame);
                    room.sequence = Sequence::Recovering { last: after, held };
                    let missed = kind == Order::Gap;
                    self.request_resync(channel, room.generation, after, missed);
                }
            },
            Sequence::Positioning { held } | Sequence::Recovering { held, .. } => {
                // Beyond the budget the message is dropped here and counted once the room
                // resumes; history fills it in then.
                held.hold(self.held_budget, id, frame);
            }
        }
    }
}

impl Inbound for Rooms {
    fn deliver(&self, channel: &[u8], mut payload: Vec<u8>) {
        self.metrics.backplane_messages.inc();
        let Ok(channel) = std::str::from_utf8(channel) else {
            return;
        };
        if payload.len() > self.max_payload {
            self.drops.inc(DropReason::Oversize);
            return self.warn_dropped(channel, "larger than any envelope a node builds");
        }
        match relay::parse(&payload) {
            Some(Relayed::Message { id, offset }) => {
                payload.drain(..offset);
                self.deliver_message(channel, id, payload);
            }
            Some(Relayed::Join { .. } | Relayed::Leave)
                if payload.len() > relay::MAX_PRESENCE_PAYLOAD_LEN =>
            {
                self.drops.inc(DropReason::Oversize);
                self.warn_dropped(channel, "a presence payload longer than any name");
            }
            Some(Relayed::Join { key_end }) => {
                let sealed_name = payload.split_off(key_end + 1);
                match std::str::from_utf8(&payload[1..key_end]) {
                    Ok(member) => self.deliver_join(channel, member, sealed_name),
                    Err(_) => self.dropped(channel, "a member key that is not UTF-8"),
                }
            }
            Some(Relayed::Typing) if payload.len() > relay::MAX_TYPING_PAYLOAD_LEN => {
                self.drops.inc(DropReason::Oversize);
                self.warn_dropped(channel, "a typing payload longer than any name");
            }
            Some(Relayed::Typing) => {
                payload.drain(..1);
                self.deliver_typing(channel, payload);
            }
            Some(Relayed::Leave) => match std::str::from_utf8(&payload[1..]) {
                Ok(member) => self.deliver_leave(channel, member),
                Err(_) => self.dropped(channel, "a member key that is not UTF-8"),
            },
            None => self.dropped(channel, "not a relay payload"),
        }
    }

    fn reconnected(&self) {
        self.recover_all();
    }
}
