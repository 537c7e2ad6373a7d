//! The JSON bodies of the node's HTTP API (`/api/…`), shared by the node and its clients.
//!
//! Backends publish into rooms over plain HTTP instead of holding a WebSocket. A message
//! published this way obeys exactly the rules of a WebSocket `send` (room, name and text limits)
//! and is refused with the same error codes, so both paths agree by construction. Failures of a
//! whole request (authentication, body, media type) add a few codes of their own, in [`code`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, FrameError, validate_name, validate_room, validate_text_size};

/// Error codes of whole requests, besides the protocol's own [`ErrorCode`]s (`bad_request`,
/// `too_large`, `invalid_room`, `unavailable`).
pub mod code {
    /// No `Authorization: Bearer <key>` header, or a key the node does not know.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// No such endpoint, or the API is off on this node.
    pub const NOT_FOUND: &str = "not_found";
    /// The endpoint exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The body is not declared as `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// The request, body upload included, took longer than the node's request deadline.
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
}

/// One message to publish: the body of `POST /api/publish` and each element of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish<'a> {
    /// The room to publish into, under the same rules as a WebSocket room name.
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    /// The sender name members see, under the same rules as a WebSocket user name.
    #[serde(borrow)]
    pub from: Cow<'a, str>,
    /// Not empty, and at most the node's text limit, as for a WebSocket `send`.
    #[serde(borrow)]
    pub text: Cow<'a, str>,
}

impl Publish<'_> {
    /// Checks the message as a WebSocket `send` from a user named `from` would be checked.
    pub fn validate(&self, max_text_bytes: usize) -> Result<(), FrameError> {
        validate_room(&self.room)
            .map_err(|message| FrameError::new(ErrorCode::InvalidRoom, message))?;
        validate_name(&self.from)
            .map_err(|message| FrameError::new(ErrorCode::InvalidName, message))?;
        if self.text.is_empty() {
            return Err(FrameError::new(
                ErrorCode::BadRequest,
                "field `text` is empty",
            ));
        }
        validate_text_size(&self.text, max_text_bytes)
    }
}

/// The body of `POST /api/publish/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishBatch<'a> {
    /// At most the node's `--api-max-batch`; each is validated on its own, so an invalid one
    /// fails alone.
    #[serde(borrow)]
    pub messages: Vec<Publish<'a>>,
}

/// What went wrong, for a whole request or for one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError<'a> {
    /// Stable: an [`ErrorCode`] or one of [`code`].
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// For humans; may change.
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

impl From<FrameError> for ApiError<'static> {
    fn from(error: FrameError) -> Self {
        ApiError {
            code: error.code.as_str().into(),
            message: error.message.into(),
        }
    }
}

/// The body of every failed request: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    /// Under its own key so that a batch's outcomes tell a failure from an `id`.
    #[serde(borrow)]
    pub error: ApiError<'a>,
}

/// A published message: the reply to `POST /api/publish`, and a success in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published<'a> {
    /// The message id members receive.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

/// The outcome of one message of a batch: `{"id":…}` or `{"error":{…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcome<'a> {
    /// The broker accepted the message.
    #[serde(borrow)]
    Published(Published<'a>),
    /// The message was invalid or the broker did not take it; counted in `failed`.
    #[serde(borrow)]
    Failed(ErrorReply<'a>),
}

/// The reply to `POST /api/publish/batch`: one outcome per message, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReply<'a> {
    /// Messages published (accepted by the broker).
    pub accepted: usize,
    /// Messages refused; each has an error in `results`.
    pub failed: usize,
    /// One per message of the request, in the same order.
    #[serde(borrow)]
    pub results: Vec<Outcome<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish<'a>(room: &'a str, from: &'a str, text: &'a str) -> Publish<'a> {
        Publish {
            room: room.into(),
            from: from.into(),
            text: text.into(),
        }
    }

    fn code_of(message: Publish<'_>) -> ErrorCode {
        message.validate(10).expect_err("invalid").code
    }

    #[test]
    fn validates_like_a_websocket_send() {
        assert!(
            publish("lobby", "Alerts", "0123456789")
                .validate(10)
                .is_ok()
        );
        assert_eq!(
            code_of(publish("a b", "Alerts", "t")),
            ErrorCode::InvalidRoom
        );
        assert_eq!(code_of(publish("", "Alerts", "t")), ErrorCode::InvalidRoom);
        assert_eq!(code_of(publish("lobby", "", "t")), ErrorCode::InvalidName);
        assert_eq!(
            code_of(publish("lobby", "a\nb", "t")),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code_of(publish("lobby", "Alerts", "")),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(publish("lobby", "Alerts", "01234567890")),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn outcomes_are_an_id_or_an_error() {
        let reply: BatchReply<'_> = serde_json::from_str(
            r#"{"accepted":1,"failed":1,"results":[{"id":"m1"},
                {"error":{"code":"invalid_room","message":"no"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            reply.results,
            vec![
                Outcome::Published(Published { id: "m1".into() }),
                Outcome::Failed(ErrorReply {
                    error: ApiError {
                        code: "invalid_room".into(),
                        message: "no".into()
                    }
                })
            ]
        );
    }
}
