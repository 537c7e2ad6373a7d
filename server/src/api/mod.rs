//! The HTTP API under `/api`: backends publish into rooms, operators read room and node figures.
//!
//! A message published here takes the same path as a WebSocket `send`: it is checked by the
//! same rules, then stamped, serialized once and sealed by the hub, and handed to the broker.
//! A batch queues every message before it awaits any, so the Redis broker sends them in a few
//! large pipelines, in request order; then each message's outcome is collected, in order
//! ([`batch`]). Every request with a key is held to the caps of [`caps`].
//!
//! The API is off unless the node has an API key; then every `/api/…` path answers 404.
//! With a key, every request needs `Authorization: Bearer <key>`, checked before anything else
//! is looked at, so that callers without the key learn nothing about the node.

mod batch;
mod body;
mod caps;
mod failure;
mod keys;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chat_protocol::api::{Publish, Published};
use chat_protocol::{ErrorCode, FrameError, MessageId, validate_room};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

pub(crate) use caps::ApiCapsConfig;
use caps::{Caps, Deadline};
use failure::Failure;
pub(crate) use keys::{ApiKeyError, ApiKeys};

use crate::broker::{BrokerError, BrokerFuture};
use crate::hub::Hub;
use crate::listener::Peer;
use crate::metrics::ApiMetrics;

/// Limits of API requests.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Most messages in one batch.
    pub max_batch: usize,
    /// Largest body of a batch, in bytes.
    pub max_batch_body_bytes: usize,
    /// Largest body of a single publish, in bytes: the WebSocket frame limit, so that whatever
    /// a client may send over a WebSocket may be sent here too.
    pub max_message_body_bytes: usize,
    /// Largest chat text, in bytes.
    pub max_text_bytes: usize,
    /// Requests at once, messages in flight, and the deadline of a request.
    pub caps: ApiCapsConfig,
}

/// The API of one node.
pub(crate) struct Api {
    hub: Arc<Hub>,
    keys: ApiKeys,
    limits: ApiLimits,
    caps: Caps,
    metrics: ApiMetrics,
    /// Cancelled when the node begins to shut down; from then on nothing new is published.
    shutdown: CancellationToken,
}

impl Api {
    pub(crate) fn new(
        hub: Arc<Hub>,
        keys: ApiKeys,
        limits: ApiLimits,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = ApiMetrics::new(hub.metrics());
        let caps = Caps::new(&limits.caps, metrics.refused.clone());
        Api {
            hub,
            keys,
            limits,
            caps,
            metrics,
            shutdown,
        }
    }

    /// Refuses to publish while nothing could be published.
    fn check_ready(&self) -> Result<(), Failure> {
        if self.shutdown.is_cancelled() {
            Err(Failure::unavailable("the node is shutting down".to_owned()))
        } else if !self.hub.is_ready() {
            Err(Failure::unavailable(format!(
                "{}; nothing was published",
                BrokerError::Disconnected
            )))
        } else {
            Ok(())
        }
    }

    /// Hands valid messages to the hub, in order, without awaiting anything: the broker fixes
    /// their order now. Messages of a batch usually share a few rooms, so `channels` keeps each
    /// room's channel, formatted once per batch.
    fn queue(
        &self,
        messages: &[&RawValue],
        channels: &mut HashMap<String, String>,
    ) -> Vec<Result<BrokerFuture<MessageId>, FrameError>> {
        messages
            .iter()
            .map(|raw| {
                let message = body::parse_message(raw.get(), self.limits.max_text_bytes)?;
                if !channels.contains_key(message.room.as_ref()) {
                    let channel = self.hub.channel(&message.room);
                    channels.insert(message.room.to_string(), channel);
                }
                Ok(self.publish(&channels[message.room.as_ref()], &message))
            })
            .collect()
    }

    /// A JSON body of at most `limit` bytes, cut at the request's deadline.
    async fn read_body(&self, parts: &Parts, body: Body, limit: usize) -> Result<Bytes, Failure> {
        let read = body::read_json(&parts.headers, body, limit);
        match parts.extensions.get::<Deadline>() {
            Some(Deadline(at)) => tokio::time::timeout_at(*at, read)
                .await
                .unwrap_or_else(|_| Err(self.caps.upload_timed_out())),
            None => read.await,
        }
    }

    fn publish(&self, channel: &str, message: &Publish<'_>) -> BrokerFuture<MessageId> {
        self.hub
            .publish(channel, &message.room, &message.from, &message.text)
    }

    /// Counts published and refused messages.
    fn count(&self, accepted: usize, failed: usize) {
        let accepted = u64::try_from(accepted).unwrap_or(u64::MAX);
        let failed = u64::try_from(failed).unwrap_or(u64::MAX);
        self.hub.metrics().messages_in.inc_by(accepted);
        self.metrics.accepted.inc_by(accepted);
        self.metrics.failed.inc_by(failed);
    }
}

/// The routes under `/api`: the endpoints with an API, a 404 for everything without one.
pub(crate) fn router<S>(api: Option<Arc<Api>>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let Some(api) = api else {
        return Router::new().fallback(async || {
            Failure::not_found("the HTTP API is off on this node (it has no --api-key)")
        });
    };
    Router::new()
        .route("/publish", post(publish))
        .route("/publish/batch", post(batch::publish_batch))
        .route("/rooms/{room}", get(room))
        .route("/stats", get(stats))
        .method_not_allowed_fallback(async || Failure::method_not_allowed())
        .fallback(async || Failure::not_found("no such API endpoint"))
        .layer(middleware::from_fn_with_state(api.clone(), gate))
        .with_state(api)
}

/// Lets in only requests with a valid key, within the caps and the deadline, and counts every
/// request by endpoint and status.
async fn gate(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    let endpoint = endpoint(request.uri().path());
    let response = match api.keys.check(request.headers()) {
        Ok(()) => {
            // A backend that proved its key is no slowloris: its connection may outlive the
            // handshake deadline, to be kept alive for the next request; each request has its
            // own deadline instead.
            if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<Peer>>() {
                peer.upgraded.done();
            }
            match api.caps.request() {
                Ok(_place) => {
                    let deadline = api.caps.deadline();
                    request.extensions_mut().insert(deadline);
                    tokio::time::timeout_at(deadline.0, next.run(request))
                        .await
                        .unwrap_or_else(|_| api.caps.work_timed_out().into_response())
                }
                Err(busy) => busy.into_response(),
            }
        }
        Err(error) => Failure::unauthorized(&error).into_response(),
    };
    // Per request, not per message: a label lookup is cheap enough here.
    api.metrics
        .requests
        .with_label_values(&[endpoint, response.status().as_str()])
        .inc();
    response
}

/// The endpoint label of a path, with or without the `/api` prefix.
fn endpoint(path: &str) -> &'static str {
    match path.strip_prefix("/api").unwrap_or(path) {
        "/publish" => "publish",
        "/publish/batch" => "publish_batch",
        "/stats" => "stats",
        rest if rest.starts_with("/rooms/") => "rooms",
        _ => "other",
    }
}

/// `POST /api/publish`: one message; answers its id once the broker accepted it.
async fn publish(State(api): State<Arc<Api>>, request: Request) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let body = api
        .read_body(&parts, body, api.limits.max_message_body_bytes)
        .await?;
    let message = match body::parse_message(body::utf8(&body)?, api.limits.max_text_bytes) {
        Ok(message) => message,
        Err(error) => {
            api.count(0, 1);
            return Err(Failure::invalid_message(error));
        }
    };
    api.check_ready()?;
    let _in_flight = api.caps.messages(1)?;
    let outcome = settle(api.publish(&api.hub.channel(&message.room), &message)).await;
    match outcome {
        Ok(id) => {
            api.count(1, 0);
            Ok(json(StatusCode::OK, &Published { id: id.into() }))
        }
        Err(error) => {
            api.count(0, 1);
            Err(Failure::unavailable(error.message))
        }
    }
}

/// The id of a published message once the broker accepted it, or why it did not.
async fn settle(publication: BrokerFuture<MessageId>) -> Result<String, FrameError> {
    match publication.await {
        Ok(id) => Ok(id.to_string()),
        Err(error) => Err(FrameError::new(
            ErrorCode::Unavailable,
            format!("message not published: {error}; try again shortly"),
        )),
    }
}

/// Who is in a room.
#[derive(Serialize)]
struct RoomReply<'a> {
    room: &'a str,
    /// How many distinct names the room's members have, on every node.
    count: u64,
    /// A page of those names, sorted: at most `--members-max`, after the query's `after`.
    members: Vec<String>,
    /// Whether names follow the last of `members`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more_members: bool,
    /// Connections on this node that joined the room.
    subscribers: usize,
}

/// `?after=<name>`: the page of names after that one.
#[derive(Deserialize)]
struct RoomQuery {
    after: Option<String>,
}

/// `GET /api/rooms/{room}[?after=<name>]`: how many are in a room, and a page of their names.
/// Rooms exist implicitly, so any valid name has an answer; an empty room has no members.
async fn room(
    State(api): State<Arc<Api>>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<RoomQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(RoomQuery { after }) =
        query.map_err(|rejection| Failure::bad_request(rejection.body_text()))?;
    // A path that does not even decode to text cannot be a valid room name.
    let room = room.map_or_else(|_| String::new(), |Path(room)| room);
    validate_room(&room).map_err(|message| {
        Failure::invalid_message(FrameError::new(ErrorCode::InvalidRoom, message))
    })?;
    let channel = api.hub.channel(&room);
    let page = api
        .hub
        .members_page_anywhere(&channel, after.as_deref())
        .await
        .map_err(|error| {
            Failure::unavailable(format!("members unknown: {error}; try again shortly"))
        })?;
    let reply = RoomReply {
        room: &room,
        count: page.count,
        members: page.names,
        more_members: page.more,
        subscribers: api.hub.local_members(&channel),
    };
    Ok(json(StatusCode::OK, &reply))
}

/// This node's counters, as in `/metrics` but as one JSON object.
#[derive(Serialize)]
struct StatsReply<'a> {
    node: &'a str,
    ready: bool,
    connections: i64,
    connections_total: u64,
    rooms: i64,
    messages_in: u64,
    messages_out: u64,
    backplane_messages: u64,
    api_messages_accepted: u64,
    api_messages_failed: u64,
    /// Error frames sent to WebSocket clients, by code.
    errors: BTreeMap<&'static str, u64>,
    decrypt_failures: u64,
    slow_consumer_closes: u64,
    redis_reconnects: u64,
}

/// `GET /api/stats`.
async fn stats(State(api): State<Arc<Api>>) -> Response {
    let metrics = api.hub.metrics();
    let reply = StatsReply {
        node: api.hub.node_id(),
        ready: api.hub.is_ready() && !api.shutdown.is_cancelled(),
        connections: metrics.connections.get(),
        connections_total: metrics.connections_total.get(),
        rooms: metrics.rooms.get(),
        messages_in: metrics.messages_in.get(),
        messages_out: metrics.messages_out.get(),
        backplane_messages: metrics.backplane_messages.get(),
        api_messages_accepted: api.metrics.accepted.get(),
        api_messages_failed: api.metrics.failed.get(),
        errors: metrics
            .errors_by_code()
            .map(|(code, count)| (code.as_str(), count))
            .collect(),
        decrypt_failures: metrics.decrypt_failures.get(),
        slow_consumer_closes: metrics.slow_consumer_closes.get(),
        redis_reconnects: metrics.redis_reconnects.get(),
    };
    json(StatusCode::OK, &reply)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|error| unreachable!("API replies always serialize: {error}"));
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_are_labelled_with_or_without_the_prefix() {
        assert_eq!(endpoint("/api/publish"), "publish");
        assert_eq!(endpoint("/publish/batch"), "publish_batch");
        assert_eq!(endpoint("/api/rooms/lobby"), "rooms");
        assert_eq!(endpoint("/api/stats"), "stats");
        assert_eq!(endpoint("/api/nothing"), "other");
    }
}
