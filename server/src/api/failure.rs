//! A refused API request: an HTTP status and `{"error":{"code":…,"message":…}}`, one
//! constructor per reason, so that every refusal of a kind reads and is counted the same.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_protocol::api::{ApiError, ErrorReply, code};
use chat_protocol::{ErrorCode, FrameError};

use super::json;
use crate::admission::CredentialError;

/// A refused request: an HTTP status and `{"error":{"code":…,"message":…}}`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    error: ApiError<'static>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            error: ApiError {
                code: code.into(),
                message: message.into().into(),
            },
        }
    }

    pub(crate) fn bad_request(message: String) -> Self {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest.as_str(),
            message,
        )
    }

    /// A message that breaks the rules of a `send`, with the code a WebSocket client would get.
    pub(crate) fn invalid_message(error: FrameError) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
        }
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge.as_str(),
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    pub(crate) fn too_many_messages(count: usize, max: usize) -> Self {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge.as_str(),
            format!("a batch holds at most {max} messages; this one has {count}"),
        )
    }

    pub(crate) fn request_timeout(limit: std::time::Duration) -> Self {
        Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            code::REQUEST_TIMEOUT,
            format!(
                "the request was not complete within {} s; nothing was published",
                limit.as_secs()
            ),
        )
    }

    pub(crate) fn unsupported_media_type() -> Self {
        Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with `Content-Type: application/json`",
        )
    }

    pub(crate) fn unavailable(message: String) -> Self {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable.as_str(),
            message,
        )
    }

    /// A request without a valid key; the message says what to send.
    pub(crate) fn unauthorized(error: &CredentialError) -> Self {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            error.to_string(),
        )
    }

    pub(crate) fn not_found(message: &'static str) -> Self {
        Failure::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            code::METHOD_NOT_ALLOWED,
            "this endpoint does not take this method",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = json(self.status, &ErrorReply { error: self.error });
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chat-server\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
