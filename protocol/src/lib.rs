//! Protocol v1 of the chat cluster, shared by the node, the load generator and the tests.
//!
//! Every frame is a JSON text frame with a `type` field. Keeping the wire types, the limits,
//! the validation rules and the error and close codes in one small crate means the server and
//! every client agree on them by construction instead of by convention. `docs/protocol.md`
//! is the prose version of this file.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub mod api;

/// Limits that are part of the protocol itself; the size limits are server defaults that an
/// operator may change.
pub mod limits {
    /// Longest user name, in characters.
    pub const MAX_NAME_CHARS: usize = 32;
    /// Longest room name, in bytes (room names are ASCII).
    pub const MAX_ROOM_BYTES: usize = 64;
    /// Longest client `ref`, in bytes; it is echoed back, so it must stay small.
    pub const MAX_REF_BYTES: usize = 64;
    /// Default largest chat text, in bytes.
    pub const DEFAULT_MAX_TEXT_BYTES: usize = 4096;
    /// Default largest WebSocket frame or message a client may send, in bytes.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
}

/// WebSocket close codes the server uses. Codes below 4000 are the standard ones of RFC 6455;
/// 4000–4999 are this protocol's own.
pub mod close {
    /// The client closed, or the server ended the session normally.
    pub const NORMAL: u16 = 1000;
    /// The node is shutting down; reconnect (a load balancer picks another node).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol (for example an unmasked client frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The handshake asked for something the policy refuses, such as an invalid name.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message exceeded the node's frame limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The node failed in a way that is not the client's fault.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The client read too slowly: its outbound queue overflowed. Reconnect and catch up.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// The client answered no ping and sent nothing for the node's idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4002;
    /// The token the connection was opened with has expired. Reconnect with a fresh token;
    /// reconnecting with the same one is refused.
    pub const TOKEN_EXPIRED: u16 = 4003;
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object of the expected shape (also binary frames).
    BadRequest,
    /// The `type` is not one this server knows.
    UnknownType,
    /// A `send` or `leave` named a room the connection has not joined.
    NotJoined,
    /// The text or the frame is larger than the node allows.
    TooLarge,
    /// The backplane cannot take the request now; nothing was published. Retry later.
    Unavailable,
    /// The user name is empty, too long, blank, or has control or bidirectional formatting
    /// characters.
    InvalidName,
    /// The room name is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    InvalidRoom,
    /// Too many sends too fast; nothing was published. `retry_after_ms` says when to retry.
    RateLimited,
    /// The same text from the same user into the same room again within the debounce window;
    /// nothing was published.
    Duplicate,
    /// A `join` would exceed the rooms one connection may be in.
    TooManyRooms,
    /// The server requires a valid token that names the user; the connection is closed (1008).
    Unauthorized,
}

impl ErrorCode {
    /// Every code, for registering one metric series per code up front.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::NotJoined,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
        ErrorCode::InvalidName,
        ErrorCode::InvalidRoom,
        ErrorCode::RateLimited,
        ErrorCode::Duplicate,
        ErrorCode::TooManyRooms,
        ErrorCode::Unauthorized,
    ];

    /// The code as written in an `error` frame's `code` field; also the metric label and the
    /// HTTP API's error code, so it must never change.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request from a client, as clients write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame<'a> {
    /// Enter a room; answered with `joined` once the node is subscribed to it.
    Join {
        /// Checked by [`validate_room`] in [`parse_client_frame`].
        room: Cow<'a, str>,
        /// The id of the last message the client saw in this room: the `joined` reply then
        /// carries what came after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Cow<'a, str>>,
        /// The client's `ref` (at most [`limits::MAX_REF_BYTES`]), echoed in the reply.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
    /// Leave a room; answered with `left`, or `not_joined` if the connection is not in it.
    Leave {
        /// Checked by [`validate_room`] in [`parse_client_frame`].
        room: Cow<'a, str>,
        /// The client's `ref` (at most [`limits::MAX_REF_BYTES`]), echoed in the reply.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
    /// Publish into a joined room; answered with `ack` once the broker accepted the message.
    Send {
        /// Checked by [`validate_room`] in [`parse_client_frame`]; a room the connection is not
        /// in is refused with `not_joined`.
        room: Cow<'a, str>,
        /// Never empty from [`parse_client_frame`]; the size limit is the node's own, checked
        /// with [`validate_text_size`].
        text: Cow<'a, str>,
        /// The client's `ref` (at most [`limits::MAX_REF_BYTES`]), echoed in the reply.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// The first frame on every connection, before any reply.
    Welcome {
        /// The id of the node this connection landed on.
        node: Cow<'a, str>,
        /// A random id of this connection.
        session: Cow<'a, str>,
        /// The name the server stamps on this connection's messages: the one asked for, the
        /// token's `sub`, or a guest name the server picked.
        name: Cow<'a, str>,
    },
    /// The reply to `join`, sent once the node is subscribed to the room on the backplane.
    Joined {
        /// The room as the `join` named it.
        room: Cow<'a, str>,
        /// The distinct names of the room's members on every node, the joiner included.
        #[serde(default)]
        members: Vec<Cow<'a, str>>,
        /// `message` frames, oldest first: those after `since`, or the most recent ones.
        #[serde(default)]
        history: Vec<EmbeddedFrame>,
        /// Present when the join carried `since`: whether `history` holds every message after
        /// it. `false` means some may be missing (history no longer reaches back that far).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// The reply to `leave`.
    Left {
        /// The room the connection is no longer in.
        room: Cow<'a, str>,
    },
    /// The reply to `send` once the broker (Redis) accepted the message; it may arrive before
    /// or after the sender's own copy of the `message`.
    Ack {
        /// The `ref` of the `send`, if it carried one.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
        /// The id the message got: the same as in its `message` frame.
        id: Cow<'a, str>,
    },
    /// A chat message, delivered once to every member of the room, the sender included.
    Message {
        /// A [`MessageId`] in its text form, `"<epoch>-<seq>"`.
        id: Cow<'a, str>,
        /// The room the message was sent to.
        room: Cow<'a, str>,
        /// Set by the server: the sender connection's name, or the name a backend gave
        /// through the HTTP API. A `from` in a client's request is ignored.
        from: Cow<'a, str>,
        /// Opaque UTF-8, delivered byte for byte; displaying it safely is the client's job.
        text: Cow<'a, str>,
        /// Unix time in milliseconds when the sender's node accepted the message.
        ts: u64,
    },
    /// Someone joined or left a room this connection is in.
    Presence {
        /// The room whose membership changed.
        room: Cow<'a, str>,
        /// Whether the connection joined or left.
        event: PresenceEvent,
        /// The member's name; events are per connection, so a name may be announced twice.
        name: Cow<'a, str>,
    },
    /// A refused request, or a refused handshake just before the close.
    Error {
        /// Stable; clients branch on it.
        code: ErrorCode,
        /// For humans; may change.
        message: Cow<'a, str>,
        /// The `ref` of the refused request, when it could be read.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
        /// With `rate_limited`: milliseconds until a send will be accepted again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// A frame carried verbatim inside another (the `history` of `joined`): nodes hold history
/// entries as serialized `message` frames and embed them without parsing them again.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct EmbeddedFrame(pub Box<RawValue>);

impl<'de> Deserialize<'de> for EmbeddedFrame {
    // Through a `Value`: frames are internally tagged enums, whose buffered content a
    // `RawValue` cannot be read from directly. Only readers of `joined` pay for this.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        EmbeddedFrame::new(value.to_string()).map_err(serde::de::Error::custom)
    }
}

impl EmbeddedFrame {
    /// Wraps serialized JSON, checking that it is one JSON value.
    pub fn new(json: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json).map(EmbeddedFrame)
    }

    /// The frame's JSON text, to be written as is without serializing it again.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for EmbeddedFrame {
    /// Equal when they hold the same JSON value, whatever the order of its fields.
    fn eq(&self, other: &Self) -> bool {
        let value =
            |frame: &EmbeddedFrame| serde_json::from_str::<serde_json::Value>(frame.json()).ok();
        self.json() == other.json() || value(self) == value(other)
    }
}

impl Eq for EmbeddedFrame {}

/// What a `presence` frame reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    /// A connection joined the room.
    Join,
    /// A connection left the room, closed, or went with its node (crashed or shut down).
    Leave,
}

/// A message id: ordered within a room, and gap-free within one `epoch`.
///
/// Written `"<epoch>-<seq>"`. A room's history starts a new epoch (the time it began, in
/// unix ms) when it is created, or recreated after it expired or was lost; within an epoch
/// `seq` counts up by one per message from 0. So a client that sees `seq` jump by more than
/// one knows it missed messages, and one that sees a new epoch knows continuity was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// When the room's history began, in unix ms; a new value means continuity was broken.
    pub epoch: u64,
    /// The message's position within its epoch, from 0, one more per message.
    pub seq: u64,
}

impl MessageId {
    /// The largest id there can be.
    pub const MAX: MessageId = MessageId {
        epoch: u64::MAX,
        seq: u64::MAX,
    };

    /// The id that directly follows this one in the same epoch; `None` once the epoch has no
    /// further id. Ids come from outside (Redis, clients), so this must never overflow.
    pub fn next(self) -> Option<MessageId> {
        Some(MessageId {
            epoch: self.epoch,
            seq: self.seq.checked_add(1)?,
        })
    }

    /// The smallest id greater than this one (the start of the next epoch once this epoch has
    /// no further id), or this id itself if it is [`MessageId::MAX`]: the lower bound of a
    /// range of what comes after it.
    pub fn successor(self) -> MessageId {
        self.next().unwrap_or(MessageId {
            epoch: self.epoch.saturating_add(1),
            seq: if self.epoch == u64::MAX { u64::MAX } else { 0 },
        })
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl std::str::FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = text.split_once('-').ok_or(InvalidMessageId)?;
        let number = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidMessageId);
            }
            digits.parse::<u64>().map_err(|_| InvalidMessageId)
        };
        Ok(MessageId {
            epoch: number(epoch)?,
            seq: number(seq)?,
        })
    }
}

/// A string that is not a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (expected `<epoch>-<seq>`)")]
pub struct InvalidMessageId;

impl ServerFrame<'_> {
    /// Serializes the frame; infallible because every field is a string or an integer.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("server frames always serialize"))
    }
}

/// Why a client frame was refused, with the `ref` it carried when that could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// What kind of refusal this is; clients branch on it.
    pub code: ErrorCode,
    /// A sentence for the person behind the client.
    pub message: String,
    /// The `ref` of the refused request, echoed so the client can match the reply to it.
    pub reference: Option<String>,
}

impl FrameError {
    /// A refusal that answers no particular request (or one whose `ref` could not be read);
    /// add the request's `ref` with [`FrameError::with_reference`].
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            reference: None,
        }
    }

    /// The same refusal, answering the request that carried `reference` (replacing any `ref`
    /// it had).
    pub fn with_reference<R: Into<String>>(mut self, reference: Option<R>) -> Self {
        self.reference = reference.map(Into::into);
        self
    }
}

/// The fields any request may carry, all optional, so that a frame with a known shape but a
/// wrong `type` can be told apart from one that is not a request at all, and so that the `ref`
/// of a refused request can still be echoed.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    since: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
}

/// Just the `ref`, read leniently from a frame that failed to parse as a whole.
#[derive(Deserialize)]
struct RefOnly {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

/// Parses and validates one client text frame. Unknown fields are ignored for forward
/// compatibility; everything else that is off is refused with the code the client should see.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame<'_>, FrameError> {
    // serde accepts a struct written as a JSON array too; the protocol does not.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError::new(
            ErrorCode::BadRequest,
            "a frame must be a JSON object",
        ));
    }
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|err| {
        let reference = serde_json::from_str::<RefOnly>(text)
            .ok()
            .and_then(|r| r.reference)
            .filter(|r| r.len() <= limits::MAX_REF_BYTES);
        FrameError::new(ErrorCode::BadRequest, format!("invalid frame: {err}"))
            .with_reference(reference)
    })?;
    let reference = raw.reference;
    let reference_str = reference.as_deref();
    if reference_str.is_some_and(|r| r.len() > limits::MAX_REF_BYTES) {
        return Err(FrameError::new(
            ErrorCode::BadRequest,
            format!("ref is longer than {} bytes", limits::MAX_REF_BYTES),
        ));
    }
    let Some(kind) = raw.kind else {
        return Err(
            FrameError::new(ErrorCode::BadRequest, "missing field `type`")
                .with_reference(reference_str),
        );
    };
    match kind.as_ref() {
        "join" => Ok(ClientFrame::Join {
            room: checked_room(raw.room, reference_str)?,
            since: raw.since,
            reference,
        }),
        "leave" => Ok(ClientFrame::Leave {
            room: checked_room(raw.room, reference_str)?,
            reference,
        }),
        "send" => {
            let room = checked_room(raw.room, reference_str)?;
            let text = raw.text.filter(|t| !t.is_empty()).ok_or_else(|| {
                FrameError::new(ErrorCode::BadRequest, "field `text` is missing or empty")
                    .with_reference(reference_str)
            })?;
            Ok(ClientFrame::Send {
                room,
                text,
                reference,
            })
        }
        other => Err(FrameError::new(
            ErrorCode::UnknownType,
            format!("unknown frame type `{}`", truncate_chars(other, 32)),
        )
        .with_reference(reference_str)),
    }
}

fn checked_room<'a>(
    room: Option<Cow<'a, str>>,
    reference: Option<&str>,
) -> Result<Cow<'a, str>, FrameError> {
    let room = room.ok_or_else(|| {
        FrameError::new(ErrorCode::BadRequest, "missing field `room`").with_reference(reference)
    })?;
    validate_room(&room).map_err(|message| {
        FrameError::new(ErrorCode::InvalidRoom, message).with_reference(reference)
    })?;
    Ok(room)
}

/// Room names: 1–64 of `[A-Za-z0-9_.-]`, so they are safe in Redis channel names, URLs and logs.
pub fn validate_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > limits::MAX_ROOM_BYTES {
        return Err(format!(
            "room names are 1 to {} characters long",
            limits::MAX_ROOM_BYTES
        ));
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("room names use only A-Z, a-z, 0-9, '_', '.' and '-'".to_owned());
    }
    Ok(())
}

/// User names: 1–32 characters, none of them a control character or a bidirectional
/// formatting character.
pub fn validate_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > limits::MAX_NAME_CHARS {
        return Err(format!(
            "names are 1 to {} characters long",
            limits::MAX_NAME_CHARS
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("names may not contain control characters".to_owned());
    }
    // Other clients display names next to text the sender does not control: an override
    // there would reorder what follows ("\u{202e}nimda" shows as "admin").
    if name.chars().any(is_bidi_format) {
        return Err("names may not contain bidirectional formatting characters".to_owned());
    }
    if name.trim().is_empty() {
        return Err("names may not be blank".to_owned());
    }
    Ok(())
}

/// The Unicode bidirectional formatting characters (Bidi_Control): marks, embeddings,
/// overrides and isolates.
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Chat texts may be at most `max_bytes` long (the node's `--max-text-bytes`); emptiness is
/// checked where the text is read.
pub fn validate_text_size(text: &str, max_bytes: usize) -> Result<(), FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::new(
            ErrorCode::TooLarge,
            format!(
                "text of {} bytes exceeds the limit of {max_bytes} bytes",
                text.len()
            ),
        ));
    }
    Ok(())
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse_client_frame(text).expect_err(text).code
    }

    #[test]
    fn parses_every_request_type() {
        assert_eq!(
            parse_client_frame(r#"{"type":"join","room":"lobby"}"#).unwrap(),
            ClientFrame::Join {
                room: "lobby".into(),
                since: None,
                reference: None
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"join","room":"lobby","since":"17-3"}"#).unwrap(),
            ClientFrame::Join {
                room: "lobby".into(),
                since: Some("17-3".into()),
                reference: None
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"leave","room":"a.b-c_d","ref":"r1"}"#).unwrap(),
            ClientFrame::Leave {
                room: "a.b-c_d".into(),
                reference: Some("r1".into())
            }
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"send","room":"lobby","text":"hi \"you\"","ref":"c1"}"#)
                .unwrap(),
            ClientFrame::Send {
                room: "lobby".into(),
                text: "hi \"you\"".into(),
                reference: Some("c1".into())
            }
        );
    }

    #[test]
    fn ignores_unknown_and_identity_fields() {
        let frame = parse_client_frame(
            r#"{"type":"send","room":"r","text":"t","from":"admin","id":"x","ts":1,"extra":{"a":[1]}}"#,
        )
        .unwrap();
        assert!(matches!(frame, ClientFrame::Send { .. }));
    }

    #[test]
    fn refuses_malformed_frames() {
        for bad in [
            "",
            "   ",
            "not json",
            "{",
            r#"{"type":"join","room":"lobby""#,
            "[\"join\",\"lobby\"]",
            "42",
            "null",
            "\"join\"",
            r#"{"room":"lobby"}"#,
            r#"{"type":7,"room":"lobby"}"#,
            r#"{"type":"join","room":5}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"send","room":"lobby"}"#,
            r#"{"type":"send","room":"lobby","text":""}"#,
            r#"{"type":"send","room":"lobby","text":["a"]}"#,
            r#"{"type":"join","type":"leave","room":"lobby"}"#,
            r#"{"type":"join","room":"lobby","ref":12}"#,
        ] {
            assert_eq!(code_of(bad), ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn survives_deep_nesting() {
        let nest = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let in_known_field = format!(r#"{{"type":"join","room":{}}}"#, nest(100_000));
        assert_eq!(code_of(&in_known_field), ErrorCode::BadRequest);
        // Unknown fields are skipped without recursion, so depth there costs nothing.
        let in_unknown_field = format!(r#"{{"type":"join","room":"r","x":{}}}"#, nest(100_000));
        assert!(parse_client_frame(&in_unknown_field).is_ok());
    }

    #[test]
    fn refuses_unknown_types_with_their_ref() {
        let err = parse_client_frame(r#"{"type":"shout","room":"lobby","ref":"q"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.reference.as_deref(), Some("q"));
    }

    #[test]
    fn echoes_ref_of_a_frame_with_wrong_field_types() {
        let err = parse_client_frame(r#"{"type":"send","room":["x"],"ref":"r9"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert_eq!(err.reference.as_deref(), Some("r9"));
    }

    #[test]
    fn refuses_oversize_refs() {
        let frame = format!(r#"{{"type":"join","room":"r","ref":"{}"}}"#, "x".repeat(65));
        assert_eq!(code_of(&frame), ErrorCode::BadRequest);
    }

    #[test]
    fn validates_room_names() {
        for bad in ["", "has space", "slash/room", "ünïcode", "star*", "a:b"] {
            let frame = serde_json::json!({"type": "join", "room": bad}).to_string();
            assert_eq!(code_of(&frame), ErrorCode::InvalidRoom, "{bad:?}");
        }
        let long = "r".repeat(65);
        assert!(validate_room(&long).is_err());
        assert!(validate_room(&"r".repeat(64)).is_ok());
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("Ada").is_ok());
        assert!(validate_name("名前のある人").is_ok());
        assert!(validate_name(&"n".repeat(32)).is_ok());
        assert!(validate_name(&"é".repeat(32)).is_ok());
        for bad in ["", "   ", "tab\there", "nl\n", "bell\u{7}", "del\u{7f}"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for bidi in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
        ] {
            let name = format!("{bidi}nimda");
            assert!(validate_name(&name).is_err(), "{name:?}");
        }
        // Joiners are part of emoji sequences and stay allowed.
        assert!(validate_name("👩\u{200d}💻").is_ok());
        assert!(validate_name(&"n".repeat(33)).is_err());
    }

    #[test]
    fn server_frames_have_the_documented_shape() {
        let frame = ServerFrame::Message {
            room: "lobby".into(),
            id: "m1".into(),
            from: "Ada".into(),
            text: "<b>hi</b>".into(),
            ts: 1,
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"message","id":"m1","room":"lobby","from":"Ada","text":"<b>hi</b>","ts":1}"#
        );
        let error = ServerFrame::Error {
            code: ErrorCode::NotJoined,
            message: "join first".into(),
            reference: None,
            retry_after_ms: None,
        };
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","code":"not_joined","message":"join first"}"#
        );
        let parsed: ServerFrame<'static> = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(parsed, error);
        let limited = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            reference: Some("c1".into()),
            retry_after_ms: Some(250),
        };
        assert_eq!(
            limited.to_json(),
            r#"{"type":"error","code":"rate_limited","message":"slow down","ref":"c1","retry_after_ms":250}"#
        );
    }

    #[test]
    fn joined_embeds_history_frames_verbatim() {
        let message = r#"{"type":"message","id":"5-0","room":"r","from":"a","text":"t","ts":1}"#;
        let joined = ServerFrame::Joined {
            room: "r".into(),
            members: vec!["a".into()],
            history: vec![EmbeddedFrame::new(message.to_owned()).unwrap()],
            recovered: Some(true),
        };
        assert_eq!(
            joined.to_json(),
            format!(
                r#"{{"type":"joined","room":"r","members":["a"],"history":[{message}],"recovered":true}}"#
            )
        );
        let presence = ServerFrame::Presence {
            room: "r".into(),
            event: PresenceEvent::Leave,
            name: "a".into(),
        };
        assert_eq!(
            presence.to_json(),
            r#"{"type":"presence","room":"r","event":"leave","name":"a"}"#
        );
        let parsed: ServerFrame<'_> = serde_json::from_str(&joined.to_json()).unwrap();
        assert_eq!(parsed, joined);
    }

    #[test]
    fn message_ids_order_by_epoch_then_sequence() {
        let id: MessageId = "1732329000000-41".parse().unwrap();
        assert_eq!(
            id,
            MessageId {
                epoch: 1_732_329_000_000,
                seq: 41
            }
        );
        assert_eq!(id.to_string(), "1732329000000-41");
        assert_eq!(id.next().map(|next| next.seq), Some(42));
        assert_eq!(id.successor().seq, 42);
        assert!(id < "1732329000000-100".parse().unwrap());
        assert!(id < "1732329000001-0".parse().unwrap());
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999-0",
        ] {
            assert_eq!(bad.parse::<MessageId>(), Err(InvalidMessageId), "{bad:?}");
        }
    }

    #[test]
    fn id_arithmetic_never_overflows() {
        let last_of_epoch: MessageId = "7-18446744073709551615".parse().unwrap();
        assert_eq!(last_of_epoch.next(), None);
        assert_eq!(last_of_epoch.successor(), MessageId { epoch: 8, seq: 0 });
        assert!(last_of_epoch.successor() > last_of_epoch);
        assert_eq!(MessageId::MAX.next(), None);
        assert_eq!(MessageId::MAX.successor(), MessageId::MAX);
    }

    #[test]
    fn error_code_names_match_their_serde_names() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
