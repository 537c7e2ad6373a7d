//! The HTTP API's caps with real processes: requests beyond `--api-max-concurrent` get 503 with
//! `Retry-After`; a body that trickles in is cut at `--api-request-timeout-secs` with 408; a
//! batch holds its places among `--api-max-in-flight` messages until the broker took them; and
//! a 20,000-message batch leaves a WebSocket client of the same node chatting while it is
//! sealed.

mod support;

use std::time::{Duration, Instant};

use chat_protocol::api::{BatchReply, Outcome, Publish, PublishBatch};
use serde_json::json;
use support::api::{API_KEY, SOLO, api_node, api_node_with_env, assert_error, body, message, post};
use support::{KEY_A, Node, RedisServer, STEP, key, member, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `POST /api/publish` with the right key and a body of `length` bytes, of which only
/// `sent` are written: the node has taken the request in and waits for the rest.
async fn unfinished_publish(node: &Node, length: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(node.addr()).await.expect("connect");
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        node.addr()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&vec![b' '; sent]).await.expect("write");
    stream
}

/// `count` requests that hold an API place each, waiting for a body that never comes.
async fn hold_places(node: &Node, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(unfinished_publish(node, 100, 10).await);
    }
    held
}

/// Waits until the places `held` are taken and a further publish is refused with 503. A held
/// request that reached the node while a probe had the last place was refused itself, so it
/// holds nothing: it is sent again.
async fn wait_until_full(node: &Node, held: &mut [TcpStream], what: &str) {
    let publish = message("lobby", "Bot", "are you taking messages?");
    wait_until(what, STEP, async || {
        for stream in held.iter_mut() {
            // Anything to read (an answer, or the end) means the node is done with it.
            if !matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                *stream = unfinished_publish(node, 100, 10).await;
            }
        }
        post(node, "/api/publish", &publish).await.status == 503
    })
    .await;
}

/// Waits until a publish of one message on `node` answers `status`.
async fn wait_for_publish_status(node: &Node, status: u16, what: &str) {
    let publish = message("lobby", "Bot", "are you taking messages?");
    wait_until(what, STEP, async || {
        post(node, "/api/publish", &publish).await.status == status
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_cap_get_503_with_retry_after() {
    let node = api_node(&["--api-max-concurrent", "2"]).await;
    let mut held = hold_places(&node, 2).await;
    let publish = message("lobby", "Bot", "one too many");
    wait_until_full(&node, &mut held, "a third request is refused").await;
    let refused = post(&node, "/api/publish", &publish).await;
    assert_error(&refused, 503, "unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert!(
        node.metric("chat_api_refused_total{cause=\"concurrency\"}")
            .await
            >= 2.0
    );

    // The places come back when the slow callers go.
    drop(held);
    wait_for_publish_status(&node, 200, "requests are taken again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_at_the_request_deadline() {
    let node = api_node(&["--api-request-timeout-secs", "1"]).await;
    let started = Instant::now();
    let stream = unfinished_publish(&node, 10_000, 10).await;
    let (mut reader, mut writer) = stream.into_split();
    // A byte every 100 ms: never idle, so only a deadline on the whole request can cut it.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(STEP, reader.read_to_end(&mut raw)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&raw);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {elapsed:?}: {answer:?}"
    );
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "cut after {elapsed:?}"
    );
    assert_eq!(
        node.metric("chat_api_refused_total{cause=\"deadline\"}")
            .await,
        1.0
    );
    // The node carries on.
    let response = post(&node, "/api/publish", &message("lobby", "Bot", "hi")).await;
    assert_eq!(response.status, 200, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_key_are_not_held_to_the_caps() {
    // Callers without the key learn nothing, not even how busy the node is.
    let node = api_node(&["--api-max-concurrent", "1"]).await;
    let mut held = hold_places(&node, 1).await;
    wait_until_full(&node, &mut held, "the cap is reached").await;
    let anonymous = node.http("GET", "/api/stats", &[], &[], STEP).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_the_in_flight_cap_get_503_until_the_broker_takes_them() {
    let redis = RedisServer::start().await;
    let extra = [
        "--api-key",
        API_KEY,
        "--api-max-batch",
        "10",
        "--api-max-in-flight",
        "10",
    ];
    let node = Node::redis_with(&redis, SOLO, &[&key(KEY_A)], &extra).await;

    // A hanging Redis holds a full batch in flight (for up to its 2 s command timeout).
    redis.pause();
    let batch = json!({"messages": vec![message("held", "Bot", "waiting"); 10]});
    let one_more = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = post(&node, "/api/publish", &message("held", "Bot", "one more")).await;
        redis.resume();
        refused
    };
    let (settled, refused) = tokio::join!(post(&node, "/api/publish/batch", &batch), one_more);
    assert_error(&refused, 503, "unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    let said = body(&refused)["error"]["message"].to_string();
    assert!(said.contains("in flight"), "{said}");
    assert_eq!(
        node.metric("chat_api_refused_total{cause=\"in_flight\"}")
            .await,
        1.0
    );

    // Once the batch is settled its places are free again.
    assert_eq!(settled.status, 200, "{settled:?}");
    wait_for_publish_status(&node, 200, "messages are taken again").await;
}

/// The sequence number of a message id `<epoch>-<seq>`.
fn seq(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("not a message id: {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_is_sealed_in_chunks_that_let_websocket_chat_through() {
    // One runtime worker: a batch sealed in one go would hold it, and the WebSocket session
    // could not publish until the whole batch was queued. Ids count per room in queueing
    // order, so a chat message whose id falls inside the batch's ids was handled mid-batch.
    const COUNT: usize = 20_000;
    let args = [
        "--outbound-queue",
        "50000",
        "--send-rate",
        "0",
        "--name-send-rate",
        "0",
    ];
    let node = api_node_with_env(&args, &[("TOKIO_WORKER_THREADS", "1")]).await;
    let mut chatter = member(&node, SOLO, "chatter", "bulk").await;

    let texts: Vec<String> = (0..COUNT).map(|i| format!("bulk {i}")).collect();
    let batch = PublishBatch {
        messages: texts
            .iter()
            .map(|text| Publish {
                room: "bulk".into(),
                from: "Bot".into(),
                text: text.as_str().into(),
            })
            .collect(),
    };
    let batch = serde_json::to_value(&batch).expect("a batch");
    let node_ref = &node;
    let publishing = async move { post(node_ref, "/api/publish/batch", &batch).await };
    tokio::pin!(publishing);

    // Chat while the batch is published: each message once the previous one was acked.
    let mut chat_ids = Vec::new();
    let response = loop {
        let text = format!("meanwhile {}", chat_ids.len());
        let reference = chatter.send_chat("bulk", &text).await;
        tokio::select! {
            response = &mut publishing => break response,
            id = chatter.ack(&reference) => chat_ids.push(id),
        }
    };
    let reply: BatchReply<'_> = serde_json::from_str(&response.body).expect("a batch reply");
    assert_eq!(reply.accepted, COUNT, "{}", body(&response));
    let batch_seqs: Vec<u64> = reply
        .results
        .iter()
        .map(|outcome| match outcome {
            Outcome::Published(published) => seq(&published.id),
            Outcome::Failed(failed) => panic!("refused: {failed:?}"),
        })
        .collect();
    let (first, last) = (batch_seqs[0], batch_seqs[COUNT - 1]);
    let inside = chat_ids
        .iter()
        .filter(|id| (first..last).contains(&seq(id)))
        .count();
    eprintln!(
        "{} chat messages while the batch ran, {inside} of them between its first and last",
        chat_ids.len()
    );
    assert!(
        inside > 0,
        "no chat message got between the batch's messages (ids {first}..{last}, chat {chat_ids:?})"
    );
    assert!(
        batch_seqs.windows(2).all(|w| w[0] < w[1]),
        "the batch keeps its order"
    );
}
