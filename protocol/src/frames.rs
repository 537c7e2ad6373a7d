//! The frames themselves: what clients send, what the server sends, and the pieces they share.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorCode;

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
    /// Ask for a page of a joined room's member names, in sort order; answered with
    /// `members`, or `not_joined` if the connection is not in the room.
    Members {
        /// Checked by [`validate_room`] in [`parse_client_frame`].
        room: Cow<'a, str>,
        /// The page starts after this name (the last one of the previous page); without it,
        /// at the first name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Cow<'a, str>>,
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
    /// The sender is typing in a joined room: the room's other members get a `typing` frame.
    /// Best-effort: never stored, never answered, at most one per room every 2 s.
    Typing {
        /// Checked by [`validate_room`] in [`parse_client_frame`].
        room: Cow<'a, str>,
    },
    /// Replace the text of one's own message; answered with `ack` like `send`.
    Edit {
        /// Checked by [`validate_room`] in [`parse_client_frame`].
        room: Cow<'a, str>,
        /// The id of the message to edit; checked to be a [`crate::MessageId`].
        id: Cow<'a, str>,
        /// The new text: never empty, at most the node's text limit.
        text: Cow<'a, str>,
        /// The client's `ref` (at most [`limits::MAX_REF_BYTES`]), echoed in the reply.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
    /// Delete one's own message; answered with `ack` like `send`.
    Delete {
        /// Checked by [`validate_room`] in [`parse_client_frame`].
        room: Cow<'a, str>,
        /// The id of the message to delete; checked to be a [`crate::MessageId`].
        id: Cow<'a, str>,
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
        /// How many distinct names the room's members have, on every node, the joiner
        /// included.
        count: u64,
        /// The first of those names in sort order: at most the node's `--members-max`.
        #[serde(default)]
        members: Vec<Cow<'a, str>>,
        /// Whether the room has names after the last of `members`: ask for them with a
        /// `members` request.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more_members: bool,
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
    /// A message was edited by its author. Stored in history like a message, with an id of its
    /// own in the room's sequence, so `since` recovery and later joiners see it after the
    /// message it edits.
    Edited {
        /// This event's own id, in the room's message sequence.
        id: Cow<'a, str>,
        /// The room of the message.
        room: Cow<'a, str>,
        /// The author (only the author may edit).
        from: Cow<'a, str>,
        /// The id of the message whose text this replaces.
        target: Cow<'a, str>,
        /// The message's new text.
        text: Cow<'a, str>,
        /// Unix time in milliseconds when the edit was accepted.
        ts: u64,
    },
    /// A message was deleted by its author; stored in history like `edited`.
    Deleted {
        /// This event's own id, in the room's message sequence.
        id: Cow<'a, str>,
        /// The room of the message.
        room: Cow<'a, str>,
        /// The author (only the author may delete).
        from: Cow<'a, str>,
        /// The id of the deleted message.
        target: Cow<'a, str>,
        /// Unix time in milliseconds when the deletion was accepted.
        ts: u64,
    },
    /// Another member of the room is typing; never stored, never repeated by history.
    Typing {
        /// The room they are typing in.
        room: Cow<'a, str>,
        /// Their name, as the server knows it.
        from: Cow<'a, str>,
    },
    /// The reply to `members`: a page of a room's member names.
    Members {
        /// The room the names are of.
        room: Cow<'a, str>,
        /// How many distinct names the room's members have, on every node.
        count: u64,
        /// The names after the request's `after`, in sort order: at most `--members-max`.
        members: Vec<Cow<'a, str>>,
        /// Whether there are names after the last of `members`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more_members: bool,
        /// The `ref` of the request, if it carried one.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Cow<'a, str>>,
    },
    /// The members of a room this connection is in changed: at most one per room per
    /// `--presence-interval-ms`, with what changed since the previous one.
    Presence {
        /// The room whose membership changed.
        room: Cow<'a, str>,
        /// How many distinct names the room's members have now, on every node.
        count: u64,
        /// Names that came (or came back) since the previous `presence` and are here now.
        /// With `leaves`, absent when the room is too large for names (above
        /// `--presence-names-max`) or too many changed at once: then only `count` is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joins: Option<Vec<Cow<'a, str>>>,
        /// Names that went since the previous `presence` and are gone now; present exactly
        /// when `joins` is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leaves: Option<Vec<Cow<'a, str>>>,
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

impl ServerFrame<'_> {
    /// Serializes the frame; infallible because every field is a string or an integer.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("server frames always serialize"))
    }
}
