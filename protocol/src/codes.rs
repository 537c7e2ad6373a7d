//! The `code` of an `error` frame: the stable, machine-readable half of every refusal.

use serde::{Deserialize, Serialize};

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
    /// The connection's token does not allow this: joining a private or direct-message room
    /// it is not named for, sending into a room it may only read, or editing or deleting
    /// someone else's message.
    Forbidden,
    /// An `edit` or `delete` named a message the room's history does not hold (never sent,
    /// trimmed from history, or already deleted).
    NotFound,
}

impl ErrorCode {
    /// Every code, for registering one metric series per code up front.
    pub const ALL: [ErrorCode; 13] = [
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
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
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
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
