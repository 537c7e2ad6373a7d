//! `POST /api/publish/batch`: up to the batch limit of messages in one request.
//!
//! A batch is checked, sealed and queued in chunks of [`SEAL_CHUNK`] messages, yielding to the
//! runtime between chunks: sealing 20,000 messages in one go would hold a runtime worker, and
//! every WebSocket session scheduled on it, for as long as the whole batch takes. Other
//! publishers' messages may now fall between two chunks; a batch's own messages keep their
//! request order, since chunks are queued one after the other.
//!
//! `yield_now` rather than `spawn_blocking`: the broker fixes a message's id when it is queued,
//! on the runtime, and the in-memory broker fans a message out to local sessions right then;
//! moving only the sealing to a blocking thread would need the whole batch sealed before the
//! first message is queued, and twice its memory. A chunk costs about a millisecond in a
//! release build, which is the longest the batch holds a worker at a time.
//!
//! The work after the body is read runs in a task of its own, so that a caller that goes away,
//! or the request's deadline, cannot leave a batch half queued, and the batch's places among
//! the messages in flight are held until its last message is settled.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use chat_protocol::api::{BatchReply, ErrorReply, Outcome, Published};

use super::{Api, Failure, body, json, settle};

/// Messages sealed and queued between two yields to the runtime.
const SEAL_CHUNK: usize = 256;

/// `POST /api/publish/batch`: answers every message's outcome, in request order, once each
/// was accepted or refused.
pub(super) async fn publish_batch(
    State(api): State<Arc<Api>>,
    request: Request,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let body = api
        .read_body(&parts, body, api.limits.max_batch_body_bytes)
        .await?;
    tokio::spawn(publish(api, body))
        .await
        .unwrap_or_else(|error| {
            log::error!("a batch publication failed: {error}");
            Err(Failure::unavailable(
                "the batch could not be completed; some messages may have been published"
                    .to_owned(),
            ))
        })
}

async fn publish(api: Arc<Api>, body: Bytes) -> Result<Response, Failure> {
    let batch = body::parse_batch(body::utf8(&body)?, api.limits.max_batch)
        .map_err(|error| Failure::bad_request(format!("invalid batch: {error}")))?;
    if batch.count > api.limits.max_batch {
        return Err(Failure::too_many_messages(
            batch.count,
            api.limits.max_batch,
        ));
    }
    api.check_ready()?;
    let _in_flight = api.caps.messages(batch.messages.len())?;
    let mut channels = HashMap::new();
    let mut queued = Vec::with_capacity(batch.messages.len());
    for chunk in batch.messages.chunks(SEAL_CHUNK) {
        queued.extend(api.queue(chunk, &mut channels));
        tokio::task::yield_now().await;
    }
    let mut reply = BatchReply {
        accepted: 0,
        failed: 0,
        results: Vec::with_capacity(queued.len()),
    };
    for publication in queued {
        let outcome = match publication {
            Ok(publication) => settle(publication).await,
            Err(invalid) => Err(invalid),
        };
        reply.results.push(match outcome {
            Ok(id) => {
                reply.accepted += 1;
                Outcome::Published(Published { id: id.into() })
            }
            Err(error) => {
                reply.failed += 1;
                Outcome::Failed(ErrorReply {
                    error: error.into(),
                })
            }
        });
    }
    api.count(reply.accepted, reply.failed);
    Ok(json(StatusCode::OK, &reply))
}
