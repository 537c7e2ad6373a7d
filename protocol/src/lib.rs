//! Protocol v1 of the chat cluster, shared by the node, the load generator and the tests.
//!
//! Every frame is a JSON text frame with a `type` field. Keeping the wire types, the limits,
//! the validation rules and the error and close codes in one small crate means the server and
//! every client agree on them by construction instead of by convention. `docs/protocol.md`
//! is the prose version of this crate.
#![warn(missing_docs)]

pub mod api;
pub mod close;
mod codes;
mod frames;
mod ids;
pub mod limits;
mod parse;
#[cfg(test)]
mod tests;

pub use codes::ErrorCode;
pub use frames::{ClientFrame, EmbeddedFrame, ServerFrame};
pub use ids::{InvalidMessageId, MessageId};
pub use parse::{FrameError, parse_client_frame, validate_name, validate_room, validate_text_size};
