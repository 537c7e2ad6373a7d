//! Everything a node serves on its one port: the WebSocket endpoint, the page, health, readiness,
//! metrics and the HTTP API (its own module, nested under `/api`).
//!
//! The WebSocket upgrade is done by hand (hyper's upgrade plus tungstenite's accept key) rather
//! than through axum's `ws` extractor, so that the node uses the same tungstenite as the load
//! generator and controls its buffer sizes directly.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use rust_embed::RustEmbed;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Handshake};
use crate::api::{self, Api};
use crate::hub::Hub;
use crate::listener::Peer;
use crate::session::write_deadline::WriteDeadline;
use crate::session::{self, Admitted, SessionLimits};

/// Read buffer per connection, allocated (and zero-filled) up front. Clients send small
/// frames, a few a second at most, and tungstenite grows the buffer to fit a larger frame when
/// one comes, so 256 bytes cost little time; the library's default (128 KiB) would cost
/// ~128 KiB per idle connection, and 1 KiB cost ~0.7 KiB more per connection than this.
const READ_BUFFER_BYTES: usize = 256;
/// Frames are gathered up to this size before a write; larger bursts mean fewer syscalls, and
/// the buffer is only allocated once something is written.
pub(crate) const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// Guard against unbounded growth of one connection's write buffer; no frame the node builds
/// may exceed what it leaves ([`crate::frame_budget::FRAME_BUDGET`]).
pub(crate) const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// The page may load only its own script and style, and talk only to its own node.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

#[derive(RustEmbed)]
#[folder = "../static"]
struct Page;

/// The JavaScript client library (`clients/js/src`), which the page imports from
/// `/client/chat-client.js`: served by the node itself, so the page still needs no build step
/// and the CSP's `script-src 'self'` covers it. Only `src/` is embedded, never the package's
/// `node_modules`.
#[derive(RustEmbed)]
#[folder = "../clients/js/src"]
struct ClientLibrary;

#[derive(Clone)]
pub(crate) struct AppState {
    pub hub: Arc<Hub>,
    /// The HTTP API, when the node has an API key.
    pub api: Option<Arc<Api>>,
    pub limits: Arc<SessionLimits>,
    pub admission: Arc<Admission>,
    pub max_frame_bytes: usize,
    /// Cancelled when the node begins to shut down.
    pub shutdown: CancellationToken,
    /// Tracks every session so shutdown can wait for them to close.
    pub sessions: TaskTracker,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .route("/metrics", get(metrics))
        .nest("/api", api::router(state.api.clone()))
        .route(
            "/",
            get(|headers: HeaderMap| async move { asset(Page::get("index.html"), &headers) }),
        )
        .route(
            "/client/{file}",
            get(
                |axum::extract::Path(file): axum::extract::Path<String>, headers: HeaderMap| async move {
                    asset(ClientLibrary::get(&file), &headers)
                },
            ),
        )
        .route(
            "/{file}",
            get(
                |axum::extract::Path(file): axum::extract::Path<String>, headers: HeaderMap| async move {
                    asset(Page::get(&file), &headers)
                },
            ),
        )
        .with_state(state)
}

async fn readiness(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if state.hub.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "backplane unavailable\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.hub.metrics().render(),
    )
        .into_response()
}

/// Serves an embedded file of the page or the client library, with an ETag so browsers
/// revalidate cheaply.
fn asset(file: Option<rust_embed::EmbeddedFile>, request_headers: &HeaderMap) -> Response {
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!(
        "\"{}\"",
        crate::hex::encode(&file.metadata.sha256_hash()[..16])
    );
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(file.metadata.mimetype()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let unchanged = request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == etag.as_bytes());
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, file.data.into_owned()).into_response()
}

#[derive(Deserialize)]
struct WebSocketParams {
    name: Option<String>,
    token: Option<String>,
}

/// `GET /ws`: validates the handshake, answers 101 and runs the session on the upgraded stream.
async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(params): Query<WebSocketParams>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let accept = match accept_key(headers) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let admitted = state.admission.admit(&Handshake {
        peer: peer.addr.ip(),
        headers,
        name: params.name.as_deref(),
        token: params.token.as_deref(),
    });
    let (permit, name, expires, grants) = match admitted {
        Ok(admitted) => (
            admitted.permit,
            admitted.name,
            admitted.expires,
            admitted.grants,
        ),
        Err(refusal) => return refusal.into_response(),
    };

    let upgrade = hyper::upgrade::on(&mut request);
    let admitted = Box::new(Admitted {
        name,
        expires,
        grants,
    });
    let AppState {
        hub,
        limits,
        shutdown,
        sessions,
        max_frame_bytes,
        ..
    } = state;
    sessions.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = WriteDeadline::new(TokioIo::new(upgraded), limits.write_timeout);
                let config = websocket_config(max_frame_bytes);
                let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                session::run(&mut ws, admitted, hub, limits, shutdown).await;
                drop(permit);
            }
            Err(error) => log::debug!("WebSocket upgrade failed: {error}"),
        }
    });

    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    peer.upgraded.done();
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

/// The buffers and limits of a connection whose frames may be `max_frame_bytes` long.
fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Why a request to `/ws` is not a WebSocket upgrade this node can take.
enum BadUpgrade {
    NotWebSocket,
    Version,
    MissingKey,
}

impl IntoResponse for BadUpgrade {
    fn into_response(self) -> Response {
        match self {
            BadUpgrade::NotWebSocket => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "this endpoint speaks WebSocket\n",
            )
                .into_response(),
            BadUpgrade::Version => (
                StatusCode::BAD_REQUEST,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "unsupported WebSocket version\n",
            )
                .into_response(),
            BadUpgrade::MissingKey => {
                (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response()
            }
        }
    }
}

/// The `Sec-WebSocket-Accept` value for a well-formed WebSocket upgrade request.
fn accept_key(headers: &HeaderMap) -> Result<String, BadUpgrade> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(BadUpgrade::NotWebSocket);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(BadUpgrade::Version);
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .ok_or(BadUpgrade::MissingKey)
}
