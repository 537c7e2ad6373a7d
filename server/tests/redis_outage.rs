//! A Redis outage of more than a minute, far beyond any library's retry budget: nodes report
//! it, refuse work with `unavailable` instead of dropping it, keep trying, and chat resumes on
//! the same WebSocket connections once Redis is back.

mod support;

use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use support::{Client, Node, RedisServer, exchange, key, unique, wait_until};

const OUTAGE: Duration = Duration::from_secs(65);
const RECOVERY: Duration = Duration::from_secs(20);
const ROOM: &str = "ops";
const LOST_PREFIX: &str = "sent during the outage ";

async fn wait_for_readyz(node: &Node, status: u16, timeout: Duration) {
    wait_until(&format!("/readyz is {status}"), timeout, async || {
        node.status_of("/readyz").await == status
    })
    .await;
}

/// Sends until a message from `sender` reaches `receiver`: right after Redis is back a send
/// may still be refused, or published before the other node has resubscribed.
async fn send_until_delivered(sender: &mut Client, receiver: &mut Client, deadline: Instant) {
    loop {
        let text = unique("after the outage ");
        let reference = sender.send_chat(ROOM, &text).await;
        match sender.reply_to(Some(&reference)).await {
            ServerFrame::Ack { .. } => {
                let delivery = receiver
                    .message_with_text_within(&text, Duration::from_secs(2))
                    .await;
                if delivery.is_some() {
                    return;
                }
            }
            ServerFrame::Error {
                code: ErrorCode::Unavailable,
                ..
            } => {}
            other => panic!("unexpected reply after the outage: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no message crossed nodes within {RECOVERY:?} after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads what the recovery retries left behind and checks none of it is a duplicate or a
/// message that was refused during the outage.
async fn settle(client: &mut Client) {
    let frames = client.drain(Duration::from_millis(500)).await;
    let mut ids = std::collections::HashSet::new();
    for frame in &frames {
        if let ServerFrame::Message { id, text, .. } = frame {
            assert!(
                !text.starts_with(LOST_PREFIX),
                "a refused message was delivered: {frame:?}"
            );
            assert!(ids.insert(id.clone()), "delivered twice: {frame:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_resumes_on_the_same_connections_after_a_redis_outage_of_over_a_minute() {
    let mut redis = RedisServer::start().await;
    let key = key(0xC3);
    let nodes = [
        Node::redis(&redis, "node-0", &[&key]).await,
        Node::redis(&redis, "node-1", &[&key]).await,
    ];
    let mut a = nodes[0].client("a").await;
    let mut b = nodes[1].client("b").await;
    a.join(ROOM).await;
    b.join(ROOM).await;
    exchange(&mut a, ROOM, "before the outage", &mut [&mut b]).await;

    redis.kill();
    let outage_started = Instant::now();
    for node in &nodes {
        wait_for_readyz(node, 503, Duration::from_secs(5)).await;
        assert_eq!(node.metric("chat_broker_ready").await, 0.0);
    }

    // Every send during the outage is refused with its ref, never silently dropped.
    let mut rounds = 0;
    while outage_started.elapsed() < OUTAGE {
        for client in [&mut a, &mut b] {
            let reference = client.send_chat(ROOM, &unique(LOST_PREFIX)).await;
            client
                .expect_error(ErrorCode::Unavailable, Some(&reference))
                .await;
        }
        for node in &nodes {
            assert_eq!(
                node.status_of("/readyz").await,
                503,
                "readyz during the outage"
            );
        }
        rounds += 1;
        let left = OUTAGE.saturating_sub(outage_started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
    }
    assert!(
        rounds >= 3,
        "only {rounds} rounds of sends during the outage"
    );

    // Joining a room needs a subscription, so it is refused too.
    a.send_frame(&ClientFrame::Join {
        room: "elsewhere".into(),
        since: None,
        reference: Some("join-during-outage".into()),
    })
    .await;
    a.expect_error(ErrorCode::Unavailable, Some("join-during-outage"))
        .await;
    for node in &nodes {
        assert!(
            node.metric(r#"chat_errors_total{code="unavailable"}"#)
                .await
                >= 1.0
        );
    }

    redis.restart().await;
    let deadline = Instant::now() + RECOVERY;
    for node in &nodes {
        wait_for_readyz(
            node,
            200,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
    }
    send_until_delivered(&mut a, &mut b, deadline).await;
    send_until_delivered(&mut b, &mut a, deadline).await;
    settle(&mut a).await;
    settle(&mut b).await;

    // Back to normal: exactly once, both ways, on the connections opened before the outage.
    exchange(&mut a, ROOM, "after the outage, a to b", &mut [&mut b]).await;
    exchange(&mut b, ROOM, "after the outage, b to a", &mut [&mut a]).await;
    b.join("elsewhere").await;
    a.join("elsewhere").await;
    exchange(
        &mut b,
        "elsewhere",
        "a room joined after the outage",
        &mut [&mut a],
    )
    .await;

    for node in &nodes {
        assert_eq!(node.metric("chat_broker_ready").await, 1.0);
        assert!(
            node.metric("chat_redis_reconnects_total").await >= 1.0,
            "chat_redis_reconnects_total counts the reconnect"
        );
    }
}
