//! Why the node turned someone away: a connection before it became a chat session
//! ([`Refusal`]), or credentials it did not accept ([`CredentialError`]).
//!
//! Each refusal decides here, and only here, how it is answered (an HTTP status and body, or
//! nothing when the socket is just closed) and under which `cause` it is counted in
//! `chat_connections_refused_total`, whose counters ([`RefusalCounts`]) live here too. This
//! module depends on nothing else of the node, so the listener, the host guard, admission and
//! the metrics can all name it, and admission counts its refusals without depending on the
//! metrics.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::per_label::PerLabel;

/// Why a connection was refused or cut before it became a chat session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached: HTTP 503.
    NodeFull,
    /// `--max-connections-per-address` reached: HTTP 429.
    AddressFull,
    /// A browser's cross-site handshake: HTTP 403.
    Origin,
    /// No valid token with `--auth-secret`: said in-band, error `unauthorized` and close 1008.
    Unauthorized,
    /// The HTTP request or the WebSocket handshake took longer than `--handshake-timeout-secs`:
    /// the connection is dropped.
    HandshakeTimeout,
    /// `--max-pending-handshakes` reached: closed at accept, unanswered.
    PendingHandshakes,
    /// `--max-pending-handshakes-per-address` reached: closed at accept, unanswered.
    PendingHandshakesPerAddress,
    /// A loopback-bound node asked for a host name that is not loopback's: HTTP 421.
    Host,
}

impl Refusal {
    /// Every refusal, so that each `cause` series exists (at 0) from the start.
    pub const ALL: [Refusal; 8] = [
        Refusal::NodeFull,
        Refusal::AddressFull,
        Refusal::Origin,
        Refusal::Unauthorized,
        Refusal::HandshakeTimeout,
        Refusal::PendingHandshakes,
        Refusal::PendingHandshakesPerAddress,
        Refusal::Host,
    ];

    /// Its `cause` label in `chat_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NodeFull => "node_full",
            Refusal::AddressFull => "address_full",
            Refusal::Origin => "origin",
            Refusal::Unauthorized => "unauthorized",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::PendingHandshakes => "pending_handshakes",
            Refusal::PendingHandshakesPerAddress => "pending_handshakes_per_address",
            Refusal::Host => "host",
        }
    }

    /// The HTTP status it is answered with; `None` for refusals that get no HTTP answer
    /// (closed at accept or at the deadline, or refused in-band on the WebSocket).
    pub fn status(self) -> Option<StatusCode> {
        match self {
            Refusal::NodeFull => Some(StatusCode::SERVICE_UNAVAILABLE),
            Refusal::AddressFull => Some(StatusCode::TOO_MANY_REQUESTS),
            Refusal::Origin => Some(StatusCode::FORBIDDEN),
            Refusal::Host => Some(StatusCode::MISDIRECTED_REQUEST),
            Refusal::Unauthorized
            | Refusal::HandshakeTimeout
            | Refusal::PendingHandshakes
            | Refusal::PendingHandshakesPerAddress => None,
        }
    }

    /// The plain-text body of its HTTP answer.
    fn body(self) -> &'static str {
        match self {
            Refusal::NodeFull => "this node is full; try another\n",
            Refusal::AddressFull => "too many connections from your address\n",
            Refusal::Origin => "cross-site WebSocket handshakes are not allowed\n",
            Refusal::Host => {
                "this node listens on loopback and answers only requests for localhost, \
                 127.0.0.1 or [::1]; name other hosts with --allowed-origin\n"
            }
            Refusal::Unauthorized
            | Refusal::HandshakeTimeout
            | Refusal::PendingHandshakes
            | Refusal::PendingHandshakesPerAddress => "refused\n",
        }
    }
}

impl IntoResponse for Refusal {
    /// Its HTTP answer. The caps invite a retry (`Retry-After: 5`), since places free up; the
    /// others would be refused again. A refusal without an HTTP answer of its own, which
    /// nothing sends, would read 403.
    fn into_response(self) -> Response {
        let status = self.status().unwrap_or(StatusCode::FORBIDDEN);
        match self {
            Refusal::NodeFull | Refusal::AddressFull => {
                (status, [(header::RETRY_AFTER, "5")], self.body()).into_response()
            }
            _ => (status, self.body()).into_response(),
        }
    }
}

/// Why credentials were not accepted: a WebSocket's token (with `--auth-secret`) or an API
/// request's key. The message is the client's to read: it says what to send instead, and
/// never echoes a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A WebSocket handshake without a token.
    #[error("a token is required: connect with /ws?token=<jwt>")]
    MissingToken,
    /// A token past its `exp` (plus the leeway).
    #[error("the token has expired: sign in again for a fresh one")]
    Expired,
    /// A token before its `nbf` (minus the leeway).
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// A token that is forged, malformed, or misses a required claim.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] jsonwebtoken::errors::Error),
    /// A valid token whose `sub` is not a valid user name.
    #[error("the token's name is not a valid name: {0}")]
    BadName(String),
    /// A `name` asked for next to a token that names someone else.
    #[error("the name does not match the token")]
    NameMismatch,
    /// An API request without `Authorization: Bearer <key>`.
    #[error("send the API key as `Authorization: Bearer <key>`")]
    MissingKey,
    /// An API request whose bearer key matches none of the node's keys.
    #[error("the API key is not valid")]
    WrongKey,
}

/// `chat_connections_refused_total`, by cause.
pub(crate) type RefusalCounts = PerLabel<Refusal>;

impl RefusalCounts {
    /// The series, unregistered, with every cause at 0.
    pub(crate) fn connections_refused() -> Self {
        PerLabel::new(
            "chat_connections_refused_total",
            "Connections refused before they became chat sessions, by cause",
            "cause",
            &Refusal::ALL,
            Refusal::label,
        )
    }
}
