//! Reading a client frame: parsing, the validation rules for names, rooms and texts, and the
//! refusal a client gets when a frame breaks them.

use std::borrow::Cow;

use serde::Deserialize;

use crate::{ClientFrame, ErrorCode, limits};

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
    #[serde(borrow, default)]
    after: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<Cow<'a, str>>,
}

/// The longest a name can be in UTF-8: every character four bytes.
const MAX_NAME_BYTES: usize = limits::MAX_NAME_CHARS * 4;

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
        "members" => {
            let room = checked_room(raw.room, reference_str)?;
            if raw
                .after
                .as_ref()
                .is_some_and(|after| after.len() > MAX_NAME_BYTES)
            {
                let message = format!("`after` is longer than {MAX_NAME_BYTES} bytes");
                return Err(
                    FrameError::new(ErrorCode::BadRequest, message).with_reference(reference_str)
                );
            }
            Ok(ClientFrame::Members {
                room,
                after: raw.after,
                reference,
            })
        }
        "send" => Ok(ClientFrame::Send {
            room: checked_room(raw.room, reference_str)?,
            text: checked_text(raw.text, reference_str)?,
            reference,
        }),
        "typing" => Ok(ClientFrame::Typing {
            room: checked_room(raw.room, reference_str)?,
        }),
        "edit" => Ok(ClientFrame::Edit {
            room: checked_room(raw.room, reference_str)?,
            id: checked_id(raw.id, reference_str)?,
            text: checked_text(raw.text, reference_str)?,
            reference,
        }),
        "delete" => Ok(ClientFrame::Delete {
            room: checked_room(raw.room, reference_str)?,
            id: checked_id(raw.id, reference_str)?,
            reference,
        }),
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

fn checked_text<'a>(
    text: Option<Cow<'a, str>>,
    reference: Option<&str>,
) -> Result<Cow<'a, str>, FrameError> {
    text.filter(|t| !t.is_empty()).ok_or_else(|| {
        FrameError::new(ErrorCode::BadRequest, "field `text` is missing or empty")
            .with_reference(reference)
    })
}

/// The `id` of an `edit` or `delete`: a message id, `<epoch>-<seq>`.
fn checked_id<'a>(
    id: Option<Cow<'a, str>>,
    reference: Option<&str>,
) -> Result<Cow<'a, str>, FrameError> {
    let bad = |message: String| FrameError::new(ErrorCode::BadRequest, message);
    let id = id.ok_or_else(|| bad("missing field `id`".to_owned()).with_reference(reference))?;
    id.parse::<crate::MessageId>()
        .map_err(|error| bad(format!("`id`: {error}")).with_reference(reference))?;
    Ok(id)
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
