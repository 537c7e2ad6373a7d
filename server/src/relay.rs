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
//! - `+<member>\n<sealed name>` / `-<member>`: a member joined or left. `<member>` is its
//!   presence key (`<node id>|<n>`, see [`crate::presence`]), so that applying an event twice
//!   changes nothing: each node's copy of a room's members (its roster) can take the events it
//!   hears on top of a snapshot read from Redis without counting anyone twice. Presence hashes
//!   in Redis store the sealed name as it is, and a departure names only the key, so Redis can
//!   announce the departure of a crashed node's members without ever seeing a name.
//!
//! - `t<sealed name>`: a member is typing. Published with a plain PUBLISH, never stored and
//!   without an id, so the room's ordering never sees it; the name is sealed like a presence
//!   name, under an AAD of its own so that neither can be replayed as the other.
//!
//! Edits and deletions are messages to the backplane: stored, with ids in the room's sequence.
//! What tells them apart is inside the seal, the body's leading `"type"` field (a plain
//! message's body has none), so Redis needs no new script and cannot tell them apart either.
//!
//! Ids travel outside the seal: Redis assigns them. The seal still binds every body and name
//! to its room's channel, so Redis can neither read nor forge nor move them.

use chat_protocol::{MessageId, limits};
use serde::Serialize;

use crate::envelope;

/// What a payload on a room's channel carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A chat message: `sealed` is at `payload[offset..]`.
    Message {
        /// The id the broker assigned, in clear: it is outside the seal.
        id: MessageId,
        /// Where the sealed body starts: just after the newline that ends the id.
        offset: usize,
    },
    /// A member came: their key is `payload[1..key_end]`, their sealed name follows the
    /// newline after it.
    Join {
        /// Where the member's key ends (the newline).
        key_end: usize,
    },
    /// A member left: their key is `payload[1..]`.
    Leave,
    /// A member is typing: their sealed name is `payload[1..]`.
    Typing,
}

const MESSAGE: u8 = b'm';
const JOIN: u8 = b'+';
const LEAVE: u8 = b'-';
const TYPING: u8 = b't';

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
        JOIN => {
            let key_end = payload.iter().position(|&b| b == b'\n')?;
            Some(Relayed::Join { key_end })
        }
        LEAVE => Some(Relayed::Leave),
        TYPING => Some(Relayed::Typing),
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

/// The payload announcing that `member` joined under `sealed_name` (the Redis script builds
/// the same bytes).
pub fn join_payload(member: &str, sealed_name: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + member.len() + sealed_name.len());
    payload.push(JOIN);
    payload.extend_from_slice(member.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(sealed_name);
    payload
}

/// The payload announcing that `member` left.
pub fn leave_payload(member: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + member.len());
    payload.push(LEAVE);
    payload.extend_from_slice(member.as_bytes());
    payload
}

/// The payload announcing that the member named by `sealed_name` is typing.
pub fn typing_payload(sealed_name: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + sealed_name.len());
    payload.push(TYPING);
    payload.extend_from_slice(sealed_name);
    payload
}

/// What a typing name is sealed for: the room's channel, told apart from its presence names.
pub fn typing_aad(channel: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(channel.len() + 7);
    aad.extend_from_slice(channel.as_bytes());
    aad.extend_from_slice(b"#typing");
    aad
}

/// The largest typing payload a node can build: the longest name, sealed.
pub const MAX_TYPING_PAYLOAD_LEN: usize = 1 + envelope::OVERHEAD + MAX_NAME_BYTES;

/// The most bytes JSON can turn one byte of a string into (`\u001f`).
const JSON_ESCAPE_GROWTH: usize = 6;
/// The longest a name can be in bytes: every character up to 4 bytes of UTF-8.
const MAX_NAME_BYTES: usize = limits::MAX_NAME_CHARS * 4;
/// The longest decimal `u64`.
const MAX_U64_DIGITS: usize = 20;

/// The largest payload a node can put on a room's channel when texts are at most
/// `max_text_bytes`: a message with the longest room, name and text, every byte of them
/// escaped, and the longest id and timestamp. Anything larger did not come from a node, so it
/// is dropped before it is opened (which would cost a copy and a decryption of every byte).
/// Nodes of one cluster must share `--max-text-bytes` for this to hold.
pub fn max_payload_len(max_text_bytes: usize) -> usize {
    let strings = limits::MAX_ROOM_BYTES
        .saturating_add(MAX_NAME_BYTES)
        .saturating_add(max_text_bytes)
        .saturating_mul(JSON_ESCAPE_GROWTH);
    let body = message_body("", "", "", 0).len() - 1 + MAX_U64_DIGITS + strings + EVENT_FIELDS;
    let id = 2 * MAX_U64_DIGITS + 1;
    (1 + id + 1 + envelope::OVERHEAD).saturating_add(body)
}

/// What an edit's body has beyond a message's: its `type` and the `target` id.
const EVENT_FIELDS: usize = r#""type":"deleted","target":"","#.len() + 2 * MAX_U64_DIGITS + 1;

/// The longest presence key: a node id of up to 64 characters of up to 4 bytes, `|` and a
/// decimal `u64`.
pub const MAX_MEMBER_KEY_LEN: usize = 64 * 4 + 1 + MAX_U64_DIGITS;

/// The largest presence payload a node can build: the longest key and name, sealed.
pub const MAX_PRESENCE_PAYLOAD_LEN: usize =
    1 + MAX_MEMBER_KEY_LEN + 1 + envelope::OVERHEAD + MAX_NAME_BYTES;

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

/// What a stored entry that is not a plain message does to an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Replaces the text of `target`.
    Edit {
        /// The id of the message edited.
        target: MessageId,
        /// Its new text.
        text: &'a str,
    },
    /// Deletes `target`.
    Delete {
        /// The id of the message deleted.
        target: MessageId,
    },
}

#[derive(Serialize)]
struct EventBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    from: &'a str,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    ts: u64,
}

/// The body of an `edited` or `deleted` frame, as the author's node seals it: like a message
/// body, led by its `type` (so [`message_frame`] can tell it from a message) and the target.
pub fn change_body(room: &str, from: &str, change: Change<'_>, ts: u64) -> String {
    let (kind, target, text) = match change {
        Change::Edit { target, text } => ("edited", target, Some(text)),
        Change::Delete { target } => ("deleted", target, None),
    };
    let body = EventBody {
        kind,
        room,
        from,
        target: target.to_string(),
        text,
        ts,
    };
    serde_json::to_string(&body).unwrap_or_else(|_| unreachable!("strings always serialize"))
}

/// The complete frame of a stored entry: the body with its type and id spliced in front
/// (`message`), or the id spliced after the body's own type (`edited`, `deleted`).
///
/// `None` when `body` is not an object or names another type, which only a forged payload
/// could make happen.
pub fn message_frame(id: MessageId, body: &str) -> Option<String> {
    let fields = body.strip_prefix('{')?;
    let Some(typed) = fields.strip_prefix(r#""type":""#) else {
        return Some(format!(r#"{{"type":"message","id":"{id}",{fields}"#));
    };
    let (kind, rest) = typed.split_once('"')?;
    let rest = rest.strip_prefix(',')?;
    matches!(kind, "edited" | "deleted").then(|| format!(r#"{{"type":"{kind}","id":"{id}",{rest}"#))
}

#[derive(serde::Deserialize)]
struct Stored<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    from: std::borrow::Cow<'a, str>,
    #[serde(default)]
    target: Option<&'a str>,
}

/// What a stored body says about authorship: its `from`, and, for an edit or a deletion, the
/// kind and target. `None` for a body that is not one this node writes.
pub fn stored_author(body: &str) -> Option<StoredEntry> {
    let stored: Stored<'_> = serde_json::from_str(body).ok()?;
    let target = stored.target.map(str::parse).transpose().ok()?;
    Some(StoredEntry {
        from: stored.from.into_owned(),
        deletes: (stored.kind == Some("deleted")).then_some(target).flatten(),
        is_message: stored.kind.is_none(),
    })
}

/// A stored entry as far as edits and deletions care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Who wrote it.
    pub from: String,
    /// The message it deletes, if it is a deletion.
    pub deletes: Option<MessageId>,
    /// Whether it is a plain message (which alone may be edited or deleted).
    pub is_message: bool,
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
    fn the_largest_possible_payload_fits_the_bound() {
        let keyring = envelope::Keyring::new(&[[3; 32]]).unwrap();
        let max_text_bytes = 100;
        let room = "r".repeat(limits::MAX_ROOM_BYTES);
        // Four bytes and as many escapes as a name may carry; control characters in the text.
        let from = "\u{1F600}".repeat(limits::MAX_NAME_CHARS);
        let text = "\u{1}".repeat(max_text_bytes);
        let body = message_body(&room, &from, &text, u64::MAX);
        let sealed = keyring.seal(b"chat:room:r", body.as_bytes());
        let payload = message_payload(MessageId::MAX, &sealed);
        let bound = max_payload_len(max_text_bytes);
        assert!(payload.len() <= bound, "{} > {bound}", payload.len());
        // Tight enough to matter: within the escapes a room and a name cannot actually use.
        assert!(bound - payload.len() < 6 * (limits::MAX_ROOM_BYTES + 4 * 32));
        let member = format!("{}|{}", "\u{1F600}".repeat(64), u64::MAX);
        let presence = join_payload(&member, &keyring.seal(b"n", from.as_bytes()));
        assert_eq!(presence.len(), MAX_PRESENCE_PAYLOAD_LEN);
    }

    #[test]
    fn edits_and_deletions_splice_into_their_own_frames() {
        let id = MessageId { epoch: 17, seq: 5 };
        let target = MessageId { epoch: 17, seq: 4 };
        let edit = Change::Edit {
            target,
            text: "fixed \"it\"",
        };
        let body = change_body("lobby", "Ada", edit, 99);
        let expected = ServerFrame::Edited {
            id: "17-5".into(),
            room: "lobby".into(),
            from: "Ada".into(),
            target: "17-4".into(),
            text: "fixed \"it\"".into(),
            ts: 99,
        }
        .to_json();
        assert_eq!(message_frame(id, &body).as_deref(), Some(expected.as_str()));
        let body = change_body("lobby", "Ada", Change::Delete { target }, 99);
        let expected = ServerFrame::Deleted {
            id: "17-5".into(),
            room: "lobby".into(),
            from: "Ada".into(),
            target: "17-4".into(),
            ts: 99,
        }
        .to_json();
        assert_eq!(message_frame(id, &body).as_deref(), Some(expected.as_str()));
        assert_eq!(
            stored_author(&body),
            Some(StoredEntry {
                from: "Ada".into(),
                deletes: Some(target),
                is_message: false
            })
        );
        let plain = message_body("lobby", "Bo\"b", "hi", 1);
        assert_eq!(
            stored_author(&plain),
            Some(StoredEntry {
                from: "Bo\"b".into(),
                deletes: None,
                is_message: true
            })
        );
        // Only the kinds a node writes are spliced.
        assert_eq!(message_frame(id, r#"{"type":"welcome","x":1}"#), None);
        assert_eq!(message_frame(id, r#"{"type":"edited"}"#), None);
    }

    #[test]
    fn the_largest_edit_fits_the_bound() {
        let keyring = envelope::Keyring::new(&[[3; 32]]).unwrap();
        let room = "r".repeat(limits::MAX_ROOM_BYTES);
        let from = "\u{1}".repeat(limits::MAX_NAME_CHARS);
        let text = "\u{1}".repeat(100);
        let edit = Change::Edit {
            target: MessageId::MAX,
            text: &text,
        };
        let body = change_body(&room, &from, edit, u64::MAX);
        let sealed = keyring.seal(b"chat:room:r", body.as_bytes());
        let payload = message_payload(MessageId::MAX, &sealed);
        assert!(payload.len() <= max_payload_len(100));
        let typing = typing_payload(&keyring.seal(b"n", "\u{1F600}".repeat(32).as_bytes()));
        assert_eq!(typing.len(), MAX_TYPING_PAYLOAD_LEN);
        assert_eq!(parse(&typing), Some(Relayed::Typing));
    }

    #[test]
    fn payloads_parse_back() {
        let id = MessageId { epoch: 5, seq: 0 };
        let payload = message_payload(id, b"\x01sealed\nbytes");
        assert_eq!(parse(&payload), Some(Relayed::Message { id, offset: 5 }));
        assert_eq!(&payload[5..], b"\x01sealed\nbytes");
        let join = join_payload("n|7", b"sealed\nname");
        assert_eq!(parse(&join), Some(Relayed::Join { key_end: 4 }));
        assert_eq!(&join[1..4], b"n|7");
        assert_eq!(&join[5..], b"sealed\nname");
        assert_eq!(parse(&leave_payload("n|7")), Some(Relayed::Leave));
        for bad in [
            &b""[..],
            b"m",
            b"m5-0",
            b"mx-1\nabc",
            b"?abc",
            b"m5-0-1\n",
            b"+n|7",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
