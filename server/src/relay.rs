//! What travels on a room's channel between nodes, and how a node turns it back into frames.
//!
//! Two kinds of payload share a room's channel, told apart by their first byte:
//!
//! - `m<id>\n<sealed body>`: a chat message. The id is assigned by the broker when it appends
//!   the message to the room's history, which happens after the sending node sealed it, so the
//!   sealed part is the `message` frame without its `type` and `id`: the *body*. A receiving
//!   node opens the body once and splices `{"type":"message","id":"<id>",` in front of it: one
//!   copy per node, never one per recipient, and no JSON is parsed or written again. History
//!   entries hold the same sealed bodies.
//! - `+<sealed name>` / `-<sealed name>`: a member joined or left. Presence sets in Redis store
//!   the sealed name as it is, so that Redis can announce the departure of a crashed node's
//!   members (it replays the stored bytes behind a `-`) without ever seeing a name.
//!
//! Ids travel outside the seal: Redis assigns them. The seal still binds every body and name
//! to its room's channel, so Redis can neither read nor forge nor move them.

use chat_protocol::{MessageId, PresenceEvent};
use serde::Serialize;

/// What a payload on a room's channel carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A chat message: `sealed` is at `payload[offset..]`.
    Message { id: MessageId, offset: usize },
    /// A member came or went: their sealed name is at `payload[1..]`.
    Presence(PresenceEvent),
}

const MESSAGE: u8 = b'm';
const JOIN: u8 = b'+';
const LEAVE: u8 = b'-';

/// Reads a payload's kind, without opening anything.
pub fn parse(payload: &[u8]) -> Option<Relayed> {
    match *payload.first()? {
        MESSAGE => {
            let end = payload.iter().position(|&b| b == b'\n')?;
            let id = std::str::from_utf8(&payload[1..end]).ok()?.parse().ok()?;
            Some(Relayed::Message {
                id,
                offset: end + 1,
            })
        }
        JOIN => Some(Relayed::Presence(PresenceEvent::Join)),
        LEAVE => Some(Relayed::Presence(PresenceEvent::Leave)),
        _ => None,
    }
}

/// The payload announcing a stored message (the Redis script builds the same bytes).
pub fn message_payload(id: MessageId, sealed_body: &[u8]) -> Vec<u8> {
    let id = id.to_string();
    let mut payload = Vec::with_capacity(2 + id.len() + sealed_body.len());
    payload.push(MESSAGE);
    payload.extend_from_slice(id.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(sealed_body);
    payload
}

/// The payload announcing that a member joined or left.
pub fn presence_payload(event: PresenceEvent, sealed_name: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + sealed_name.len());
    payload.push(match event {
        PresenceEvent::Join => JOIN,
        PresenceEvent::Leave => LEAVE,
    });
    payload.extend_from_slice(sealed_name);
    payload
}

#[derive(Serialize)]
struct Body<'a> {
    room: &'a str,
    from: &'a str,
    text: &'a str,
    ts: u64,
}

/// A message's body: its `message` frame from the `room` field on, as the sender seals it.
pub fn message_body(room: &str, from: &str, text: &str, ts: u64) -> String {
    let body = Body {
        room,
        from,
        text,
        ts,
    };
    serde_json::to_string(&body).unwrap_or_else(|_| unreachable!("strings always serialize"))
}

/// The complete `message` frame: the body with its type and id spliced in front.
///
/// `None` when `body` is not an object, which only a forged payload could make happen.
pub fn message_frame(id: MessageId, body: &str) -> Option<String> {
    let fields = body.strip_prefix('{')?;
    Some(format!(r#"{{"type":"message","id":"{id}",{fields}"#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::ServerFrame;

    #[test]
    fn spliced_frames_equal_serialized_ones() {
        let id = MessageId { epoch: 17, seq: 4 };
        let body = message_body("lobby", "Ada \"A\"", "<b>hi</b>\n", 99);
        let expected = ServerFrame::Message {
            id: "17-4".into(),
            room: "lobby".into(),
            from: "Ada \"A\"".into(),
            text: "<b>hi</b>\n".into(),
            ts: 99,
        }
        .to_json();
        assert_eq!(message_frame(id, &body).as_deref(), Some(expected.as_str()));
        assert_eq!(message_frame(id, "[1]"), None);
    }

    #[test]
    fn payloads_parse_back() {
        let id = MessageId { epoch: 5, seq: 0 };
        let payload = message_payload(id, b"\x01sealed\nbytes");
        assert_eq!(parse(&payload), Some(Relayed::Message { id, offset: 5 }));
        assert_eq!(&payload[5..], b"\x01sealed\nbytes");
        assert_eq!(
            parse(&presence_payload(PresenceEvent::Leave, b"x")),
            Some(Relayed::Presence(PresenceEvent::Leave))
        );
        for bad in [&b""[..], b"m", b"m5-0", b"mx-1\nabc", b"?abc", b"m5-0-1\n"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
