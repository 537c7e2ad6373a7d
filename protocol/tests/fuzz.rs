//! Property tests of frame decoding, run briefly with every test run: whatever a client sends,
//! `parse_client_frame` returns instead of panicking, refuses with a small error, and accepts
//! only frames that obey the protocol's rules and survive a round trip.
//!
//! The inputs are arbitrary strings, JSON built from the protocol's own fields with random
//! values, and valid frames mutated byte by byte, so that the generator spends its time near
//! the shapes the parser actually distinguishes.

use chat_protocol::{ClientFrame, FrameError, limits, parse_client_frame, validate_room};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Enough cases to cover the shapes, few enough to stay well under a second per property.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The longest error message an input may produce: error frames are echoed to the sender and
/// must never amplify what it sent.
const MAX_ERROR_MESSAGE_BYTES: usize = 256;

/// Checks everything that must hold for any input, accepted or not.
fn check(input: &str) {
    match parse_client_frame(input) {
        Ok(frame) => check_accepted(&frame),
        Err(error) => check_refused(&error),
    }
}

fn check_accepted(frame: &ClientFrame<'_>) {
    let (room, reference) = match frame {
        ClientFrame::Join {
            room, reference, ..
        }
        | ClientFrame::Members {
            room, reference, ..
        }
        | ClientFrame::Leave { room, reference } => (room, reference),
        ClientFrame::Send {
            room,
            text,
            reference,
        } => {
            assert!(!text.is_empty(), "accepted an empty text: {frame:?}");
            (room, reference)
        }
        ClientFrame::Typing { room } => (room, &None),
        ClientFrame::Edit {
            room,
            id,
            text,
            reference,
        } => {
            assert!(!text.is_empty(), "accepted an empty text: {frame:?}");
            assert!(id.parse::<chat_protocol::MessageId>().is_ok(), "{frame:?}");
            (room, reference)
        }
        ClientFrame::Delete {
            room,
            id,
            reference,
        } => {
            assert!(id.parse::<chat_protocol::MessageId>().is_ok(), "{frame:?}");
            (room, reference)
        }
    };
    assert!(validate_room(room).is_ok(), "accepted room {room:?}");
    assert!(
        reference
            .as_ref()
            .is_none_or(|r| r.len() <= limits::MAX_REF_BYTES),
        "accepted an oversize ref: {frame:?}"
    );
    // What was accepted means the same when written out again and read back.
    let json = serde_json::to_string(frame).expect("client frames serialize");
    let again = parse_client_frame(&json)
        .unwrap_or_else(|e| panic!("{json} was accepted once but not again: {e}"));
    assert_eq!(&again, frame, "round trip of {json}");
}

fn check_refused(error: &FrameError) {
    assert!(
        error.message.len() <= MAX_ERROR_MESSAGE_BYTES,
        "error message of {} bytes: {error}",
        error.message.len()
    );
    assert!(
        error
            .reference
            .as_ref()
            .is_none_or(|r| r.len() <= limits::MAX_REF_BYTES),
        "echoed an oversize ref: {error:?}"
    );
}

/// Strings that are sometimes valid room names, sometimes almost, sometimes anything.
fn room() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{1,64}",
        "[A-Za-z0-9_.-]{0,70}",
        "[a-z \t/:*\u{0}\u{202e}é😀]{0,8}",
        any::<String>(),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A string field that is usually a string and sometimes any other JSON value.
fn string_or_not(strings: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => strings.prop_map(Value::String),
        1 => json_value(),
    ]
}

/// Objects built from the protocol's fields, each present or absent, well or badly typed,
/// plus identity and unknown fields that must be ignored.
fn request_object() -> impl Strategy<Value = String> {
    let kind = string_or_not(prop_oneof![
        Just("join".to_owned()),
        Just("leave".to_owned()),
        Just("send".to_owned()),
        "[a-z]{0,10}",
    ]);
    let text = string_or_not(prop_oneof![
        "[^\u{0}]{0,20}",
        any::<String>(),
        Just(String::new())
    ]);
    let reference = string_or_not("[ -~]{0,70}");
    (
        prop::option::of(kind),
        prop::option::of(string_or_not(room())),
        prop::option::of(text),
        prop::option::of(reference),
        prop::option::of(json_value()),
        prop::option::of(string_or_not(any::<String>())),
    )
        .prop_map(|(kind, room, text, reference, extra, from)| {
            let mut object = Map::new();
            for (name, value) in [
                ("type", kind),
                ("room", room),
                ("text", text),
                ("ref", reference),
                ("extra", extra),
                ("from", from),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object).to_string()
        })
}

/// A valid request, serialized as a client would.
fn valid_request() -> impl Strategy<Value = String> {
    let room = "[A-Za-z0-9_.-]{1,64}";
    let reference = prop::option::of("[ -~]{0,64}");
    prop_oneof![
        (room, reference.clone()).prop_map(|(room, reference)| {
            json!({"type": "join", "room": room, "ref": reference}).to_string()
        }),
        (room, reference.clone()).prop_map(|(room, reference)| {
            json!({"type": "leave", "room": room, "ref": reference}).to_string()
        }),
        (room, any::<String>(), reference).prop_map(|(room, text, reference)| {
            let text = if text.is_empty() {
                "x".to_owned()
            } else {
                text
            };
            json!({"type": "send", "room": room, "text": text, "ref": reference}).to_string()
        }),
    ]
}

/// One edit of a byte string: the ways a frame gets damaged or crafted.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize },
    Truncate { at: usize },
    Duplicate { from: usize, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0..8u8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (
            at,
            prop::sample::select(b"{}[]\",:\\ 0aeu\x00\xff".to_vec())
        )
            .prop_map(|(at, byte)| Edit::Insert { at, byte }),
        at.prop_map(|at| Edit::Delete { at }),
        at.prop_map(|at| Edit::Truncate { at }),
        (at, 1..40usize).prop_map(|(from, len)| Edit::Duplicate { from, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match *edit {
        Edit::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Edit::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Edit::Delete { at } => {
            bytes.remove(at % n);
        }
        Edit::Truncate { at } => bytes.truncate(at % n),
        Edit::Duplicate { from, len } => {
            let from = from % n;
            let piece = bytes[from..(from + len).min(n)].to_vec();
            bytes.splice(from..from, piece);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(input in any::<String>()) {
        check(&input);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        // A WebSocket text frame is valid UTF-8 by the time it reaches the parser.
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn objects_of_protocol_fields_are_accepted_only_when_valid(input in request_object()) {
        check(&input);
    }

    #[test]
    fn valid_requests_are_accepted_and_round_trip(input in valid_request()) {
        let frame = parse_client_frame(&input)
            .unwrap_or_else(|e| panic!("valid request {input} refused: {e}"));
        check_accepted(&frame);
    }

    #[test]
    fn mutated_requests_never_panic(
        input in valid_request(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut bytes = input.into_bytes();
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}
