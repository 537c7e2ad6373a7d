//! The bad-input corpus: every case is one input written byte for byte on a fresh connection
//! and the response the protocol documents for it (`docs/protocol.md`, "Bad input"). For each
//! case, on a real node backed by a real Redis:
//!
//! - the connection gets exactly the documented frames, or error frame and close code;
//! - when it stays open, it still joins and chats afterwards;
//! - `chat_errors_total` and `chat_closes_total` count exactly what the case caused;
//! - the node stays healthy and keeps no subscription of the case behind;
//! - two bystanders in a room of the same node keep chatting with nothing lost: a message sent
//!   while the case runs and one sent after it are acked and delivered exactly once.

mod support;

use std::collections::HashMap;

use chat_protocol::{ErrorCode, ServerFrame, close, limits};
use support::raw::{self, Incoming, RawSocket};
use support::{Client, KEY_A, Node, QUIET, RedisServer, STEP, key, unique, wait_until};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The bystanders' room.
const LOBBY: &str = "lobby";

/// One entry of the corpus.
struct Case {
    what: &'static str,
    /// The name asked for in the handshake; by default a fresh valid one.
    name: Option<&'static str>,
    /// The bytes written after the handshake.
    input: fn() -> Vec<u8>,
    expect: fn() -> Expect,
}

enum Expect {
    /// These replies in this order, with these messages (the connection's own copies)
    /// interleaved anywhere; then the connection keeps serving.
    Replies(Vec<Reply>),
    /// An error frame if given, then a close frame with `code`, then the end of the connection.
    Closed { error: Option<ErrorCode>, code: u16 },
}

enum Reply {
    Error(ErrorCode, Option<&'static str>),
    Joined(String),
    Left(String),
    Ack(&'static str),
    /// The sender's own copy of a message with exactly this text, stamped with its name.
    Message(String),
}

fn joined(room: &str) -> Reply {
    Reply::Joined(room.to_owned())
}

fn left(room: &str) -> Reply {
    Reply::Left(room.to_owned())
}

fn replies(replies: impl IntoIterator<Item = Reply>) -> Expect {
    Expect::Replies(replies.into_iter().collect())
}

fn error(code: ErrorCode, reference: Option<&'static str>) -> Expect {
    replies([Reply::Error(code, reference)])
}

fn closed(error: Option<ErrorCode>, code: u16) -> Expect {
    Expect::Closed { error, code }
}

fn too_large() -> Expect {
    closed(Some(ErrorCode::TooLarge), close::MESSAGE_TOO_BIG)
}

fn protocol_error() -> Expect {
    closed(None, close::PROTOCOL_ERROR)
}

/// Several JSON text frames, one after the other.
fn texts(frames: &[&str]) -> Vec<u8> {
    frames.iter().flat_map(raw::text).collect()
}

fn join(room: &str) -> String {
    format!(r#"{{"type":"join","room":"{room}"}}"#)
}

fn send(room: &str, text: &str, reference: &str) -> String {
    serde_json::json!({"type": "send", "room": room, "text": text, "ref": reference}).to_string()
}

/// `depth` nested empty arrays.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A masked frame header with every field chosen by the caller.
fn header(opcode: OpCode) -> FrameHeader {
    FrameHeader {
        opcode,
        mask: Some(*b"mask"),
        ..FrameHeader::default()
    }
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);
const PING: OpCode = OpCode::Control(Control::Ping);

/// Unicode that must arrive exactly as sent: a family emoji (ZWJ sequence), stacked combining
/// marks, a right-to-left override, an escaped NUL, terminal escapes, noncharacters, a BOM.
const UNICODE_TEXTS: [&str; 3] = [
    "👩‍👩‍👧‍👦 e\u{301}\u{302}\u{303} 🇺🇳",
    "\u{202e}gnirts desrever\u{202c} nul\u{0}inside bell\u{7} esc\u{1b}[2J",
    "\u{fffe}\u{10ffff}\u{feff}",
];

const FORGED: &str = r#"{"type":"send","room":"c-forged","text":"who am I","ref":"f1","from":"admin","id":"forged","ts":1}"#;

/// The corpus. `docs/protocol.md` documents the same cases in the same order.
fn corpus() -> Vec<Case> {
    vec![
        // ----- JSON that is not a request -----
        Case {
            what: "not JSON",
            name: None,
            input: || texts(&["hello"]),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "truncated JSON",
            name: None,
            input: || texts(&[r#"{"type":"send","room":"lobby","text":"hi","ref":"t1""#]),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "empty text frame",
            name: None,
            input: || texts(&[""]),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "JSON array",
            name: None,
            input: || texts(&[r#"["join","lobby"]"#]),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "JSON scalars",
            name: None,
            input: || texts(&["42", "null", r#""join""#, "true"]),
            expect: || replies((0..4).map(|_| Reply::Error(ErrorCode::BadRequest, None))),
        },
        Case {
            what: "byte order mark before the object",
            name: None,
            input: || texts(&["\u{feff}{\"type\":\"join\",\"room\":\"c-bom\"}"]),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "missing `type`",
            name: None,
            input: || texts(&[r#"{"room":"lobby","ref":"m1"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("m1")),
        },
        Case {
            what: "unknown `type`",
            name: None,
            input: || texts(&[r#"{"type":"shout","room":"lobby","ref":"u1"}"#]),
            expect: || error(ErrorCode::UnknownType, Some("u1")),
        },
        Case {
            what: "`type` not a string",
            name: None,
            input: || texts(&[r#"{"type":7,"room":"lobby","ref":"w0"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("w0")),
        },
        Case {
            what: "`room` not a string",
            name: None,
            input: || texts(&[r#"{"type":"join","room":5,"ref":"w1"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("w1")),
        },
        Case {
            what: "`text` not a string",
            name: None,
            input: || texts(&[r#"{"type":"send","room":"lobby","text":["a"],"ref":"w2"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("w2")),
        },
        Case {
            what: "`ref` not a string",
            name: None,
            input: || texts(&[r#"{"type":"join","room":"lobby","ref":12}"#]),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "`ref` over 64 bytes",
            name: None,
            input: || {
                let reference = "r".repeat(limits::MAX_REF_BYTES + 1);
                texts(&[&format!(
                    r#"{{"type":"join","room":"lobby","ref":"{reference}"}}"#
                )])
            },
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "`type` given twice",
            name: None,
            input: || texts(&[r#"{"type":"join","type":"leave","room":"lobby","ref":"d1"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("d1")),
        },
        Case {
            what: "missing `room`",
            name: None,
            input: || texts(&[r#"{"type":"join","ref":"m2"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("m2")),
        },
        Case {
            what: "lone surrogate escape in `text`",
            name: None,
            input: || texts(&[r#"{"type":"send","room":"lobby","text":"\ud800","ref":"s1"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("s1")),
        },
        Case {
            what: "unknown fields, one nested 30,000 deep, and a huge number",
            name: None,
            input: || {
                texts(&[&format!(
                    r#"{{"type":"join","room":"c-extra","ref":"x1","extra":{{"a":[1,{{"b":null}}]}},"deep":{},"n":1e999999,"priority":9}}"#,
                    nested(30_000)
                )])
            },
            expect: || replies([joined("c-extra")]),
        },
        Case {
            what: "`room` nested 30,000 deep",
            name: None,
            input: || {
                texts(&[&format!(
                    r#"{{"type":"join","ref":"n1","room":{}}}"#,
                    nested(30_000)
                )])
            },
            expect: || error(ErrorCode::BadRequest, Some("n1")),
        },
        // ----- room names -----
        Case {
            what: "empty room name",
            name: None,
            input: || texts(&[r#"{"type":"join","room":"","ref":"e1"}"#]),
            expect: || error(ErrorCode::InvalidRoom, Some("e1")),
        },
        Case {
            what: "room name of 65 characters",
            name: None,
            input: || texts(&[&join(&"r".repeat(limits::MAX_ROOM_BYTES + 1))]),
            expect: || error(ErrorCode::InvalidRoom, None),
        },
        Case {
            what: "room names with spaces, `/`, `:`, `*`, `?`",
            name: None,
            input: || {
                let frames: Vec<String> = ["has space", "a/b", "chat:room:x", "lob*", "q?"]
                    .into_iter()
                    .map(join)
                    .collect();
                frames.iter().flat_map(raw::text).collect()
            },
            expect: || replies((0..5).map(|_| Reply::Error(ErrorCode::InvalidRoom, None))),
        },
        Case {
            what: "room names with NUL, tab and terminal escapes",
            name: None,
            input: || texts(&[&join(r"\u0000"), &join(r"tab\there"), &join(r"\u001b[31m")]),
            expect: || replies((0..3).map(|_| Reply::Error(ErrorCode::InvalidRoom, None))),
        },
        Case {
            what: "room names with a bidi override, accents, emoji",
            name: None,
            input: || texts(&[&join("\u{202e}lobby"), &join("lobbý"), &join("😀")]),
            expect: || replies((0..3).map(|_| Reply::Error(ErrorCode::InvalidRoom, None))),
        },
        // ----- requests out of place -----
        Case {
            what: "send without join",
            name: None,
            input: || texts(&[&send(LOBBY, "sneaking in", "nj1")]),
            expect: || error(ErrorCode::NotJoined, Some("nj1")),
        },
        Case {
            what: "leave without join",
            name: None,
            input: || texts(&[r#"{"type":"leave","room":"lobby","ref":"nj2"}"#]),
            expect: || error(ErrorCode::NotJoined, Some("nj2")),
        },
        Case {
            what: "double join, then one send",
            name: None,
            input: || {
                texts(&[
                    &join("c-twice"),
                    &join("c-twice"),
                    &send("c-twice", "once", "o1"),
                ])
            },
            expect: || {
                replies([
                    joined("c-twice"),
                    joined("c-twice"),
                    Reply::Ack("o1"),
                    Reply::Message("once".to_owned()),
                ])
            },
        },
        Case {
            what: "send after leave",
            name: None,
            input: || {
                texts(&[
                    &join("c-left"),
                    r#"{"type":"leave","room":"c-left"}"#,
                    &send("c-left", "too late", "l1"),
                ])
            },
            expect: || {
                replies([
                    joined("c-left"),
                    left("c-left"),
                    Reply::Error(ErrorCode::NotJoined, Some("l1")),
                ])
            },
        },
        // ----- text -----
        Case {
            what: "empty text",
            name: None,
            input: || texts(&[&join("c-empty"), &send("c-empty", "", "t0")]),
            expect: || {
                replies([
                    joined("c-empty"),
                    Reply::Error(ErrorCode::BadRequest, Some("t0")),
                ])
            },
        },
        Case {
            what: "text of 4,097 bytes",
            name: None,
            input: || {
                let text = "x".repeat(limits::DEFAULT_MAX_TEXT_BYTES + 1);
                texts(&[&join("c-long"), &send("c-long", &text, "t1")])
            },
            expect: || {
                replies([
                    joined("c-long"),
                    Reply::Error(ErrorCode::TooLarge, Some("t1")),
                ])
            },
        },
        Case {
            what: "text of 1,366 `€` (1,366 characters, 4,098 bytes)",
            name: None,
            input: || {
                let text = "€".repeat(1_366);
                texts(&[&join("c-euro"), &send("c-euro", &text, "t2")])
            },
            expect: || {
                replies([
                    joined("c-euro"),
                    Reply::Error(ErrorCode::TooLarge, Some("t2")),
                ])
            },
        },
        Case {
            what: "text of exactly 4,096 bytes",
            name: None,
            input: || {
                let text = "x".repeat(limits::DEFAULT_MAX_TEXT_BYTES);
                texts(&[&join("c-max"), &send("c-max", &text, "t3")])
            },
            expect: || {
                replies([
                    joined("c-max"),
                    Reply::Ack("t3"),
                    Reply::Message("x".repeat(limits::DEFAULT_MAX_TEXT_BYTES)),
                ])
            },
        },
        Case {
            what: "unicode edge cases in text: ZWJ emoji, combining marks, bidi, NUL, escapes",
            name: None,
            input: || {
                let mut frames = vec![join("c-unicode")];
                for (i, text) in UNICODE_TEXTS.iter().enumerate() {
                    frames.push(send("c-unicode", text, ["u1", "u2", "u3"][i]));
                }
                frames.iter().flat_map(raw::text).collect()
            },
            expect: || {
                let mut expected = vec![
                    joined("c-unicode"),
                    Reply::Ack("u1"),
                    Reply::Ack("u2"),
                    Reply::Ack("u3"),
                ];
                expected.extend(
                    UNICODE_TEXTS
                        .iter()
                        .map(|t| Reply::Message((*t).to_owned())),
                );
                Expect::Replies(expected)
            },
        },
        Case {
            what: "forged `from`, `id` and `ts`",
            name: None,
            input: || texts(&[&join("c-forged"), FORGED]),
            expect: || {
                replies([
                    joined("c-forged"),
                    Reply::Ack("f1"),
                    Reply::Message("who am I".to_owned()),
                ])
            },
        },
        // ----- sizes -----
        Case {
            what: "100,000 nested arrays (200 KB frame)",
            name: None,
            input: || raw::text(format!(r#"{{"type":"join","room":{}}}"#, nested(100_000))),
            expect: too_large,
        },
        Case {
            what: "1 MiB text frame",
            name: None,
            input: || {
                let text = "x".repeat(1 << 20);
                raw::text(send("c-mib", &text, "big"))
            },
            expect: too_large,
        },
        Case {
            what: "1 MiB binary frame",
            name: None,
            input: || raw::binary(&vec![0xA5; 1 << 20]),
            expect: too_large,
        },
        Case {
            what: "frame header announcing 2^63 - 1 bytes",
            name: None,
            input: || {
                let mut bytes = vec![0x81, 0xFF];
                bytes.extend_from_slice(&i64::MAX.to_be_bytes());
                bytes.extend_from_slice(b"mask");
                bytes.extend_from_slice(b"{}");
                bytes
            },
            expect: too_large,
        },
        Case {
            what: "fragmented message over the limit: 20 frames of 4 KiB",
            name: None,
            input: || {
                let text = "x".repeat(80 * 1024);
                raw::fragmented(send("c-frag", &text, "big").as_bytes(), 20)
            },
            expect: too_large,
        },
        // ----- frames -----
        Case {
            what: "binary frame",
            name: None,
            input: || raw::binary(br#"{"type":"join","room":"lobby"}"#),
            expect: || error(ErrorCode::BadRequest, None),
        },
        Case {
            what: "text frame with invalid UTF-8",
            name: None,
            input: || raw::text(b"{\"type\":\"send\",\"text\":\"\xff\xfe\"}"),
            expect: || closed(None, close::INVALID_PAYLOAD),
        },
        Case {
            what: "text frame with a UTF-8-encoded surrogate",
            name: None,
            input: || raw::text(b"\xed\xa0\x80"),
            expect: || closed(None, close::INVALID_PAYLOAD),
        },
        Case {
            what: "fragmented requests, a character split across fragments",
            name: None,
            input: || {
                let mut bytes = raw::fragmented(join("c-pieces").as_bytes(), 3);
                // Two-byte fragments cut every `€` (three bytes) apart.
                let send = send("c-pieces", "€uro €ach", "p1");
                bytes.extend(raw::fragmented(send.as_bytes(), send.len() / 2));
                bytes
            },
            expect: || {
                replies([
                    joined("c-pieces"),
                    Reply::Ack("p1"),
                    Reply::Message("€uro €ach".to_owned()),
                ])
            },
        },
        Case {
            what: "ping between the fragments of a message",
            name: None,
            input: || {
                let join = join("c-between");
                let (first, rest) = join.as_bytes().split_at(10);
                let mut bytes = raw::frame(TEXT, false, first);
                bytes.extend(raw::ping(b"in between"));
                bytes.extend(raw::frame(CONTINUE, true, rest));
                bytes
            },
            expect: || replies([joined("c-between")]),
        },
        Case {
            what: "continuation frame without a first frame",
            name: None,
            input: || raw::frame(CONTINUE, true, b"{}"),
            expect: protocol_error,
        },
        Case {
            what: "new text frame inside a fragmented message",
            name: None,
            input: || {
                let mut bytes = raw::frame(TEXT, false, b"{\"type\":");
                bytes.extend(raw::text(join("c-nested")));
                bytes
            },
            expect: protocol_error,
        },
        Case {
            what: "fragmented ping",
            name: None,
            input: || raw::frame(PING, false, b"half a ping"),
            expect: protocol_error,
        },
        Case {
            what: "ping with 126 bytes (control frames carry at most 125)",
            name: None,
            input: || raw::ping(&[b'p'; 126]),
            expect: protocol_error,
        },
        Case {
            what: "unmasked client frame",
            name: None,
            input: || {
                let unmasked = FrameHeader {
                    mask: None,
                    ..header(TEXT)
                };
                raw::encode(unmasked, join("c-unmasked").as_bytes())
            },
            expect: protocol_error,
        },
        Case {
            what: "reserved bit RSV1 set without an extension",
            name: None,
            input: || {
                let rsv1 = FrameHeader {
                    rsv1: true,
                    ..header(TEXT)
                };
                raw::encode(rsv1, join("c-rsv").as_bytes())
            },
            expect: protocol_error,
        },
        Case {
            what: "reserved data opcode 0x3",
            name: None,
            input: || raw::encode(header(OpCode::Data(Data::Reserved(3))), b"{}"),
            expect: protocol_error,
        },
        Case {
            what: "reserved control opcode 0xB",
            name: None,
            input: || raw::encode(header(OpCode::Control(Control::Reserved(11))), b""),
            expect: protocol_error,
        },
        // ----- floods -----
        Case {
            what: "ping flood: 10,000 pings of 125 bytes, then a join",
            name: None,
            input: || {
                let mut bytes: Vec<u8> =
                    (0..10_000).flat_map(|_| raw::ping(&[b'p'; 125])).collect();
                bytes.extend(raw::text(join("c-pinged")));
                bytes
            },
            expect: || replies([joined("c-pinged")]),
        },
        Case {
            what: "5,000 joins over 99 rooms in one burst",
            name: None,
            input: || {
                (0..5_000)
                    .flat_map(|i| raw::text(join(&burst_room(i))))
                    .collect()
            },
            expect: || replies((0..5_000).map(|i| Reply::Joined(burst_room(i)))),
        },
        Case {
            what: "5,000 joins of different rooms: 100 are joined, then one is left",
            name: None,
            input: || {
                let mut frames: Vec<u8> = (0..5_000)
                    .flat_map(|i| raw::text(join(&many_room(i))))
                    .collect();
                frames.extend(raw::text(r#"{"type":"leave","room":"c-many-0"}"#));
                frames
            },
            expect: || {
                let joins = (0..100).map(|i| Reply::Joined(many_room(i)));
                let refused = (100..5_000).map(|_| Reply::Error(ErrorCode::TooManyRooms, None));
                replies(joins.chain(refused).chain([left("c-many-0")]))
            },
        },
        Case {
            what: "the same text twice into the same room",
            name: None,
            input: || {
                texts(&[
                    &join("c-echo"),
                    &send("c-echo", "echo", "e1"),
                    &send("c-echo", "echo", "e2"),
                ])
            },
            expect: || {
                replies([
                    joined("c-echo"),
                    Reply::Ack("e1"),
                    Reply::Error(ErrorCode::Duplicate, Some("e2")),
                    Reply::Message("echo".to_owned()),
                ])
            },
        },
        Case {
            what: "1,000 join and leave cycles of one room",
            name: None,
            input: || {
                let cycle = texts(&[&join("c-cycle"), r#"{"type":"leave","room":"c-cycle"}"#]);
                cycle.repeat(1_000)
            },
            expect: || replies((0..1_000).flat_map(|_| [joined("c-cycle"), left("c-cycle")])),
        },
        // ----- names in the handshake -----
        Case {
            what: "name with a control character",
            name: Some("bell\u{7}"),
            input: Vec::new,
            expect: || closed(Some(ErrorCode::InvalidName), close::POLICY_VIOLATION),
        },
        Case {
            what: "name with a bidi override",
            name: Some("\u{202e}nimda"),
            input: Vec::new,
            expect: || closed(Some(ErrorCode::InvalidName), close::POLICY_VIOLATION),
        },
        Case {
            what: "name of 33 characters",
            name: Some("nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"),
            input: Vec::new,
            expect: || closed(Some(ErrorCode::InvalidName), close::POLICY_VIOLATION),
        },
        Case {
            what: "blank name",
            name: Some("   "),
            input: Vec::new,
            expect: || closed(Some(ErrorCode::InvalidName), close::POLICY_VIOLATION),
        },
        Case {
            what: "name of 32 characters with combining marks and emoji",
            name: Some(
                "e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}\
                 e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}😀\u{200d}",
            ),
            input: || texts(&[&join("c-named")]),
            expect: || replies([joined("c-named")]),
        },
        // ----- typing, edits, deletes and closed rooms -----
        Case {
            what: "typing without join",
            name: None,
            input: || texts(&[r#"{"type":"typing","room":"lobby"}"#]),
            expect: || error(ErrorCode::NotJoined, None),
        },
        Case {
            what: "edit with an `id` that is not a message id",
            name: None,
            input: || texts(&[r#"{"type":"edit","room":"lobby","id":"7","text":"x","ref":"ed1"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("ed1")),
        },
        Case {
            what: "delete without `id`",
            name: None,
            input: || texts(&[r#"{"type":"delete","room":"lobby","ref":"ed2"}"#]),
            expect: || error(ErrorCode::BadRequest, Some("ed2")),
        },
        Case {
            what: "edit of a message history does not hold",
            name: None,
            input: || {
                texts(&[
                    &join("c-edit"),
                    r#"{"type":"edit","room":"c-edit","id":"1-0","text":"x","ref":"ed3"}"#,
                ])
            },
            expect: || {
                replies([
                    joined("c-edit"),
                    Reply::Error(ErrorCode::NotFound, Some("ed3")),
                ])
            },
        },
        Case {
            what: "join of a private and a direct-message room without tokens",
            name: None,
            input: || {
                texts(&[
                    r#"{"type":"join","room":"private.c-board","ref":"pr1"}"#,
                    r#"{"type":"join","room":"dm.a.b","ref":"pr2"}"#,
                ])
            },
            expect: || {
                replies([
                    Reply::Error(ErrorCode::Forbidden, Some("pr1")),
                    Reply::Error(ErrorCode::Forbidden, Some("pr2")),
                ])
            },
        },
    ]
}

/// The `i`th room of the burst of joins, which cycles over 99 rooms: one fewer than a
/// connection may hold, so the probe after the case still has a room to join.
fn burst_room(i: usize) -> String {
    format!("c-burst-{}", i % 99)
}

/// The `i`th of 5,000 different rooms.
fn many_room(i: usize) -> String {
    format!("c-many-{i}")
}

/// Alice and bob, in the lobby of the node under test.
struct Bystanders {
    alice: Client,
    bob: Client,
}

impl Bystanders {
    /// Alice's message sent before a case is acked and reaches bob after it, and bob's
    /// message after the case reaches alice: nothing lost either way.
    async fn chat_around(&mut self, case: &str, during: impl AsyncFnOnce()) {
        let text = unique(&format!("during {case}: "));
        let reference = self.alice.send_chat(LOBBY, &text).await;
        during().await;
        let id = self.alice.ack(&reference).await;
        self.alice.message_with_id(&id).await;
        let got = self.bob.message_with_id(&id).await;
        assert_eq!(
            (got.from.as_str(), got.text.as_str()),
            ("alice", text.as_str())
        );
        let text = unique(&format!("after {case}: "));
        let id = self.bob.say(LOBBY, &text).await;
        let got = self.alice.message_with_id(&id).await;
        assert_eq!(
            (got.from.as_str(), got.text.as_str()),
            ("bob", text.as_str())
        );
    }
}

/// Error frames and closes counted so far, by code.
async fn rejections(node: &Node) -> HashMap<String, f64> {
    let metrics = node.metrics().await;
    let mut counts = HashMap::new();
    for code in ErrorCode::ALL {
        let series = format!(r#"chat_errors_total{{code="{}"}}"#, code.as_str());
        counts.insert(series.clone(), metrics.value(&series).unwrap_or(0.0));
    }
    for line in metrics
        .0
        .lines()
        .filter(|l| l.starts_with("chat_closes_total{"))
    {
        if let Some((series, value)) = line.split_once(' ') {
            counts.insert(series.to_owned(), value.parse().unwrap_or(f64::NAN));
        }
    }
    counts
}

fn expected_rejections(expect: &Expect) -> HashMap<String, f64> {
    let mut counts = HashMap::new();
    let mut count = |series: String| *counts.entry(series).or_insert(0.0) += 1.0;
    let error_series =
        |code: ErrorCode| format!(r#"chat_errors_total{{code="{}"}}"#, code.as_str());
    match expect {
        Expect::Replies(replies) => {
            for reply in replies {
                if let Reply::Error(code, _) = reply {
                    count(error_series(*code));
                }
            }
        }
        Expect::Closed { error, code } => {
            if let Some(error) = error {
                count(error_series(*error));
            }
            count(format!(r#"chat_closes_total{{code="{code}"}}"#));
        }
    }
    counts
}

/// The Redis channels the node is subscribed to.
async fn channels(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis.connection().await;
    let mut channels: Vec<String> = tokio::time::timeout(
        STEP,
        redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("chat:*")
            .query_async(&mut conn),
    )
    .await
    .expect("PUBSUB CHANNELS timed out")
    .expect("PUBSUB CHANNELS");
    channels.sort();
    channels
}

async fn run_case(node: &Node, index: usize, case: &Case) {
    let name = case
        .name
        .map_or_else(|| format!("offender-{index}"), str::to_owned);
    let mut socket = RawSocket::connect_to(node, &name).await;
    let expect = (case.expect)();
    let refused_name = matches!(
        expect,
        Expect::Closed {
            error: Some(ErrorCode::InvalidName),
            ..
        }
    );
    if !refused_name {
        match socket.recv().await {
            Incoming::Frame(ServerFrame::Welcome { name: got, .. }) => assert_eq!(got, name),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }
    let writing = socket.write((case.input)());
    match expect {
        Expect::Replies(expected) => {
            expect_replies(&mut socket, &name, expected).await;
            writing
                .await
                .expect("writer task")
                .expect("the node read the whole input");
            expect_still_serving(&mut socket, &name).await;
        }
        Expect::Closed { error, code } => {
            expect_closed(&mut socket, error, code).await;
            // The node may stop reading before the input is written: errors are expected.
            let _ = writing.await;
        }
    }
}

/// Reads until every expected reply and message came: replies in order, messages in order
/// among themselves; anything else fails.
async fn expect_replies(socket: &mut RawSocket, name: &str, expected: Vec<Reply>) {
    let (mut messages, mut replies): (Vec<Reply>, Vec<Reply>) = expected
        .into_iter()
        .partition(|r| matches!(r, Reply::Message(_)));
    messages.reverse();
    replies.reverse();
    let mut acked = Vec::new();
    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + 4 * STEP;
    while !(messages.is_empty() && replies.is_empty()) {
        let frame = match socket.next(deadline).await {
            // Presence comes as others (and the socket itself) join: not a reply.
            Incoming::Frame(ServerFrame::Presence { .. }) | Incoming::Ping | Incoming::Pong => {
                continue;
            }
            Incoming::Frame(frame) => frame,
            other => panic!(
                "got {other:?}; still expected {} replies and {} messages",
                replies.len(),
                messages.len()
            ),
        };
        if let ServerFrame::Message { id, from, text, .. } = &frame {
            match messages.pop() {
                Some(Reply::Message(expected)) => assert_eq!(text, &expected, "message text"),
                _ => panic!("unexpected message {frame:?}"),
            }
            assert_eq!(from, name, "messages are stamped with the sender's name");
            delivered.push(id.to_string());
            continue;
        }
        let Some(reply) = replies.pop() else {
            panic!("unexpected frame {frame:?}");
        };
        match (&reply, &frame) {
            (
                Reply::Error(code, reference),
                ServerFrame::Error {
                    code: c,
                    reference: r,
                    ..
                },
            ) => {
                assert_eq!((c, r.as_deref()), (code, *reference), "{frame:?}");
            }
            (Reply::Joined(room), ServerFrame::Joined { room: r, .. }) => assert_eq!(r, room),
            (Reply::Left(room), ServerFrame::Left { room: r }) => assert_eq!(r, room),
            (Reply::Ack(reference), ServerFrame::Ack { reference: r, id }) => {
                assert_eq!(r.as_deref(), Some(*reference));
                acked.push(id.to_string());
            }
            _ => panic!("expected {}, got {frame:?}", describe(&reply)),
        }
    }
    assert_eq!(
        delivered, acked,
        "each acked message is delivered, in order"
    );
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Error(code, reference) => format!("error {code} with ref {reference:?}"),
        Reply::Joined(room) => format!("joined {room}"),
        Reply::Left(room) => format!("left {room}"),
        Reply::Ack(reference) => format!("ack {reference}"),
        Reply::Message(text) => format!("message {text:?}"),
    }
}

/// After a refused request the connection works as before: it joins a room and chats.
async fn expect_still_serving(socket: &mut RawSocket, name: &str) {
    let room = unique("probe-");
    let text = unique("still here ");
    let writing = socket.write(texts(&[&join(&room), &send(&room, &text, "probe")]));
    let expected = vec![
        Reply::Joined(room),
        Reply::Ack("probe"),
        Reply::Message(text),
    ];
    expect_replies(socket, name, expected).await;
    writing.await.expect("writer task").expect("probe written");
    match socket.next(tokio::time::Instant::now() + QUIET).await {
        Incoming::Timeout => {}
        other => panic!("expected silence after the probe, got {other:?}"),
    }
}

/// An optional error frame, then a close frame with `code`; answers the close as a client
/// should, and sees the connection end.
async fn expect_closed(socket: &mut RawSocket, error: Option<ErrorCode>, code: u16) {
    let mut error = error;
    loop {
        match socket.recv().await {
            Incoming::Ping | Incoming::Pong => {}
            Incoming::Frame(ServerFrame::Error { code: got, .. }) if Some(got) == error => {
                error = None;
            }
            Incoming::Close(got) => {
                assert!(error.is_none(), "closed without the {error:?} error frame");
                assert_eq!(got, Some(code), "close code");
                break;
            }
            other => panic!("expected {error:?} and close {code}, got {other:?}"),
        }
    }
    let reply = raw::encode(header(OpCode::Control(Control::Close)), &code.to_be_bytes());
    let _ = socket.write(reply).await;
    match socket.recv().await {
        Incoming::End | Incoming::Failed(_) => {}
        other => panic!("expected the connection to end after close {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_documented_response_and_harms_no_one() {
    let redis = RedisServer::start().await;
    // The bursts of joins and leaves in the corpus show what each request does, so the join
    // budget is off here; it is tested on its own in join_limits.rs.
    let node = Node::redis_with(&redis, "node-0", &[&key(KEY_A)], &["--join-rate", "0"]).await;
    let mut bystanders = Bystanders {
        alice: node.client("alice").await,
        bob: node.client("bob").await,
    };
    bystanders.alice.join(LOBBY).await;
    bystanders.bob.join(LOBBY).await;
    let lobby_only = vec![format!("chat:room:{LOBBY}")];
    assert_eq!(channels(&redis).await, lobby_only);

    let corpus = corpus();
    assert!(corpus.len() >= 25, "the corpus has {} cases", corpus.len());
    for (index, case) in corpus.iter().enumerate() {
        eprintln!("case {index}: {}", case.what);
        let before = rejections(&node).await;
        bystanders
            .chat_around(case.what, async || run_case(&node, index, case).await)
            .await;

        let after = rejections(&node).await;
        let mut expected = expected_rejections(&(case.expect)());
        for (series, count) in &before {
            *expected.entry(series.clone()).or_insert(0.0) += count;
        }
        for series in expected.keys().chain(after.keys()) {
            assert_eq!(
                after.get(series).copied().unwrap_or(0.0),
                expected.get(series).copied().unwrap_or(0.0),
                "{}: {series}",
                case.what
            );
        }
        assert_eq!(node.status_of("/healthz").await, 200, "{}", case.what);
        wait_until(
            &format!("{}: only the lobby is subscribed", case.what),
            STEP,
            async || channels(&redis).await == lobby_only && node.metric("chat_rooms").await == 1.0,
        )
        .await;
    }
    bystanders.alice.expect_silence(QUIET).await;
    bystanders.bob.expect_silence(QUIET).await;
}

/// With the frame limit raised far above the default, nesting a million levels deep still
/// neither overflows the parser's stack nor makes it allocate more than the frame: fields the
/// server reads have a depth limit, unknown fields are skipped without recursion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_levels_of_nesting_cannot_overflow_the_parser() {
    let node = Node::spawn(
        &["--listen", "127.0.0.1:0", "--max-frame-bytes", "4194304"],
        &[],
    )
    .await;
    let name = "nester";
    let mut socket = RawSocket::connect_to(&node, name).await;
    assert!(matches!(
        socket.recv().await,
        Incoming::Frame(ServerFrame::Welcome { .. })
    ));
    let deep_objects = format!("{}null{}", r#"{"a":"#.repeat(500_000), "}".repeat(500_000));
    let writing = socket.write(texts(&[
        &format!(
            r#"{{"type":"join","ref":"deep","room":{}}}"#,
            nested(1_000_000)
        ),
        &format!(
            r#"{{"type":"join","room":"deep-ok","x":{}}}"#,
            nested(1_000_000)
        ),
        &format!(r#"{{"type":"join","room":"deep-objects","x":{deep_objects}}}"#),
    ]));
    expect_replies(
        &mut socket,
        name,
        vec![
            Reply::Error(ErrorCode::BadRequest, Some("deep")),
            joined("deep-ok"),
            joined("deep-objects"),
        ],
    )
    .await;
    writing.await.expect("writer task").expect("input written");
    expect_still_serving(&mut socket, name).await;
    assert_eq!(node.status_of("/healthz").await, 200);
}
