//! Limits that are part of the protocol itself; the size limits are server defaults that an
//! operator may change.

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
