//! The two frames a load run receives by the million, `message` and `ack`, read without a
//! JSON parser, so that the load generator measures the nodes and not itself.
//!
//! Profiled under saturation, parsing every frame into a `ServerFrame` was half of ws-client's
//! CPU: the frame type is an internally tagged enum, which serde reads by buffering every field
//! first. The nodes write these two frames with their fields in one fixed order (`type`, `id`,
//! `room`, `from`, `text`; `type`, `ref`, `id`), and the names and texts this tool uses need
//! no escapes, so they can be read by position. Anything else, including a text with an escape, returns `None` and goes
//! through the full parser: the fast path never changes what is counted, only what it costs.

/// What a fast read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Quick<'a> {
    /// A `message` frame: its id and its text, unescaped because it had no escapes.
    Message { id: &'a str, text: &'a str },
    /// An `ack` frame and its `ref`, if it had one.
    Ack { reference: Option<&'a str> },
}

const MESSAGE: &str = r#"{"type":"message","id":""#;
const ACK_REF: &str = r#"{"type":"ack","ref":""#;
const ACK_ID: &str = r#"{"type":"ack","id":""#;
/// The fields that follow a message's id, in the order nodes write them.
const ROOM: &str = r#","room":""#;
const FROM: &str = r#","from":""#;
const TEXT: &str = r#","text":""#;

/// Reads a `message` or `ack` frame written the way nodes write them; `None` for anything
/// else.
pub(crate) fn read(json: &str) -> Option<Quick<'_>> {
    if let Some(rest) = json.strip_prefix(MESSAGE) {
        let (id, rest) = plain_string(rest)?;
        let (_room, rest) = plain_string(rest.strip_prefix(ROOM)?)?;
        let (_from, rest) = plain_string(rest.strip_prefix(FROM)?)?;
        let (text, _) = plain_string(rest.strip_prefix(TEXT)?)?;
        return Some(Quick::Message { id, text });
    }
    if let Some(rest) = json.strip_prefix(ACK_REF) {
        let (reference, _) = plain_string(rest)?;
        return Some(Quick::Ack {
            reference: Some(reference),
        });
    }
    json.strip_prefix(ACK_ID)
        .map(|_| Quick::Ack { reference: None })
}

/// The string up to its closing quote and what follows it; `None` if it holds an escape.
fn plain_string(from: &str) -> Option<(&str, &str)> {
    // A byte loop: short strings, where a searcher's set-up would cost more than the scan.
    let end = from.bytes().position(|b| b == b'"' || b == b'\\')?;
    (from.as_bytes()[end] == b'"').then(|| (&from[..end], &from[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::ServerFrame;

    #[test]
    fn reads_what_the_nodes_write() {
        let message = ServerFrame::Message {
            id: "17-4".into(),
            room: "lobby".into(),
            from: "guest-1".into(),
            text: "0000beef 12 3 1763860000000000 ....".into(),
            ts: 99,
        }
        .to_json();
        assert_eq!(
            read(&message),
            Some(Quick::Message {
                id: "17-4",
                text: "0000beef 12 3 1763860000000000 ...."
            })
        );
        let ack = ServerFrame::Ack {
            reference: Some("42".into()),
            id: "17-4".into(),
        };
        assert_eq!(
            read(&ack.to_json()),
            Some(Quick::Ack {
                reference: Some("42")
            })
        );
        let bare = ServerFrame::Ack {
            reference: None,
            id: "17-4".into(),
        };
        assert_eq!(read(&bare.to_json()), Some(Quick::Ack { reference: None }));
    }

    #[test]
    fn leaves_anything_else_to_the_parser() {
        let escaped = ServerFrame::Message {
            id: "1-1".into(),
            room: "r".into(),
            from: "f".into(),
            text: "say \"hi\"".into(),
            ts: 1,
        }
        .to_json();
        assert_eq!(read(&escaped), None);
        let escaped_name = ServerFrame::Message {
            id: "1-1".into(),
            room: "r".into(),
            from: r#"a","text":"forged"#.into(),
            text: "plain".into(),
            ts: 1,
        }
        .to_json();
        assert_eq!(read(&escaped_name), None);
        assert_eq!(read(r#"{"type":"welcome","node":"n"}"#), None);
        assert_eq!(read(r#"{"type":"message","id":"1-1"#), None);
    }
}
