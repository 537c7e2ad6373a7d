//! http-ingest mode's feeders: they post batches of stamped messages to the first node's HTTP
//! API (`POST /api/publish/batch`) as fast as its replies allow, while the clients only read.
//!
//! Every message is registered in its room's ledger like a WebSocket send and settled from the
//! reply's per-message results, so the run counts missing and duplicate deliveries exactly as
//! the other modes do. The feeders speak HTTP/1.1 by hand, one connection per batch: a batch is
//! thousands of messages, so a connection per request costs nothing measurable, and the tool
//! needs no HTTP client for one request shape.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chat_protocol::api::{BatchReply, ErrorReply, Outcome, Publish, PublishBatch};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{Phase, Shared};
use crate::config::Ingest;
use crate::connect;
use crate::ledger::Fate;
use crate::payload::{self, Stamp};
use crate::stats::ClientStats;

/// How long one batch may take, from connect to the last byte of the reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed request, so a refusing node is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Starts `--in-flight` feeders; each counts as one client in the summary.
pub(crate) fn start(
    shared: &Arc<Shared>,
    ingest: &Ingest,
    phase: &watch::Receiver<Phase>,
) -> Vec<JoinHandle<()>> {
    (0..shared.plan.in_flight)
        .map(|feeder| {
            let stats = shared.board.add_client();
            tokio::spawn(feed(
                feeder,
                Arc::clone(shared),
                ingest.clone(),
                stats,
                phase.clone(),
            ))
        })
        .collect()
}

/// Posts batches until sending stops.
async fn feed(
    feeder: usize,
    shared: Arc<Shared>,
    ingest: Ingest,
    stats: Arc<ClientStats>,
    phase: watch::Receiver<Phase>,
) {
    let plan = &shared.plan;
    // Stamps name the feeders after the clients, so no sender index is shared.
    let sender = u32::try_from(plan.clients.unwrap_or(0) + feeder).unwrap_or(u32::MAX);
    let mut next_room = feeder;
    while *phase.borrow() == Phase::Sending {
        let mut sent = Vec::with_capacity(ingest.batch);
        let mut texts = Vec::with_capacity(ingest.batch);
        for _ in 0..ingest.batch {
            let room = next_room % plan.rooms.len();
            next_room += 1;
            let (seq, sent_us) = shared.rooms[room].register();
            let mut text = String::with_capacity(plan.message_size);
            let stamp = Stamp {
                run: shared.run,
                seq,
                sender,
                sent_us,
            };
            payload::write(&mut text, stamp, plan.message_size);
            sent.push((room, seq));
            texts.push(text);
        }
        let batch = PublishBatch {
            messages: sent
                .iter()
                .zip(&texts)
                .map(|((room, _), text)| Publish {
                    room: Cow::Borrowed(&plan.rooms[*room]),
                    from: Cow::Borrowed("ingest"),
                    text: Cow::Borrowed(text),
                })
                .collect(),
        };
        let body = serde_json::to_vec(&batch)
            .unwrap_or_else(|_| unreachable!("a batch always serializes"));
        let fates = match post(&shared, &ingest.api_key, &body).await {
            Ok(fates) => fates,
            Err(failure) => {
                shared.board.failure(failure.cause);
                let fate = failure.fate;
                tokio::time::sleep(RETRY_PAUSE).await;
                vec![fate; sent.len()]
            }
        };
        for ((room, seq), fate) in sent.into_iter().zip(fates) {
            shared.rooms[room].settle(seq, fate);
        }
        stats.sent.fetch_add(ingest.batch as u64, Relaxed);
    }
}

/// Why a whole batch failed, and what that means for its messages.
struct Failed {
    cause: String,
    /// `Refused` when the node answered (a failed request publishes nothing), `Unknown` when
    /// the answer was lost.
    fate: Fate,
}

/// Posts one batch; returns each message's fate, in order.
async fn post(shared: &Shared, key: &str, body: &[u8]) -> Result<Vec<Fate>, Failed> {
    let lost = |cause: String| Failed {
        cause,
        fate: Fate::Unknown,
    };
    let target = &shared.targets[0];
    let exchange = async {
        let mut stream = TcpStream::connect(target.addr())
            .await
            .map_err(|e| lost(connect::io_cause("api connect", &e)))?;
        let head = format!(
            "POST /api/publish/batch HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            target.authority(),
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| lost(connect::io_cause("api write", &e)))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| lost(connect::io_cause("api write", &e)))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| lost(connect::io_cause("api read", &e)))?;
        Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| lost("api: timed out".to_owned()))??;
    let (status, reply) =
        split_response(&raw).ok_or_else(|| lost("api: malformed reply".to_owned()))?;
    if status != 200 {
        let code = serde_json::from_slice::<ErrorReply<'_>>(reply)
            .map_or_else(|_| status.to_string(), |e| e.error.code.into_owned());
        shared.board.error(&code);
        return Err(Failed {
            cause: format!("api: {status} {code}"),
            fate: Fate::Refused,
        });
    }
    let reply: BatchReply<'_> =
        serde_json::from_slice(reply).map_err(|e| lost(format!("api: unreadable reply: {e}")))?;
    Ok(reply
        .results
        .iter()
        .map(|outcome| match outcome {
            Outcome::Published(_) => Fate::Acked,
            Outcome::Failed(failed) => {
                shared.board.error(&failed.error.code);
                Fate::Refused
            }
        })
        .collect())
}

/// The status and body of a `Connection: close` reply with a `Content-Length` body.
fn split_response(raw: &[u8]) -> Option<(u16, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status_line = std::str::from_utf8(&raw[..end]).ok()?.lines().next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    Some((status, &raw[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::split_response;

    #[test]
    fn splits_status_and_body() {
        let raw = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(split_response(raw), Some((413, &b"{}"[..])));
        assert_eq!(split_response(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
