//! The per-connection budget for joins and leaves, with real processes: a burst beyond it is
//! refused with `rate_limited`, `retry_after_ms` and the request's `ref`, the connection and
//! everyone else carry on, and a client that keeps asking while refused is closed like a
//! flooder.

mod support;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame, close};
use support::{Client, Node};

const ROOM: &str = "lobby";

/// A node whose connections may make `burst` joins and leaves at once, then two a second.
async fn node_with_join_burst(burst: &str, extra: &[&str]) -> Node {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--join-rate",
        "2",
        "--join-burst",
        burst,
    ];
    args.extend_from_slice(extra);
    Node::spawn(&args, &[]).await
}

async fn request_join(client: &mut Client, room: &str, reference: &str) {
    client
        .send_frame(&ClientFrame::Join {
            room: room.into(),
            since: None,
            reference: Some(reference.into()),
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_and_leaves_is_refused_and_the_connection_carries_on() {
    let node = node_with_join_burst("4", &[]).await;
    let mut bob = node.client("bob").await;
    bob.join(ROOM).await;
    let mut ada = node.client("ada").await;
    // Four requests of the burst go through: join, leave, join, re-join.
    ada.join("a").await;
    ada.leave("a").await;
    ada.join(ROOM).await;
    ada.join(ROOM).await;
    // The fifth, a leave, is refused and changes nothing.
    ada.send_frame(&ClientFrame::Leave {
        room: ROOM.into(),
        reference: Some("one-too-many".into()),
    })
    .await;
    let retry_after_ms = match ada.reply_to(Some("one-too-many")).await {
        ServerFrame::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms: Some(ms),
            ..
        } => ms,
        other => panic!("expected rate_limited with retry_after_ms, got {other:?}"),
    };
    assert!(
        (1..=500).contains(&retry_after_ms),
        "one request at two a second: {retry_after_ms} ms"
    );
    assert_eq!(
        node.metric(r#"chat_rate_limited_total{scope="join"}"#)
            .await,
        1.0
    );
    // Still in the room, still chatting, and so is everyone else.
    let id = ada.say(ROOM, "still here").await;
    bob.message_with_id(&id).await;
    bob.join("b").await;
    // Once the wait is over, the next request goes through.
    tokio::time::sleep(std::time::Duration::from_millis(retry_after_ms)).await;
    request_join(&mut ada, "b", "after-the-wait").await;
    ada.recv_until(
        "joined b",
        |frame| matches!(frame, ServerFrame::Joined { room, .. } if room == "b"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_on_while_refused_closes_the_connection_as_flooding() {
    let node = node_with_join_burst("2", &["--flood-close-after", "3"]).await;
    let mut bystander = node.client("bystander").await;
    bystander.join(ROOM).await;
    let mut churner = node.client("churner").await;
    for i in 0..5 {
        request_join(&mut churner, &format!("room-{i}"), &format!("join-{i}")).await;
    }
    assert_eq!(churner.expect_close().await, close::POLICY_VIOLATION);
    let refusals: Vec<_> = churner
        .take_unread()
        .into_iter()
        .filter_map(|frame| match frame {
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                reference,
                retry_after_ms: Some(_),
                ..
            } => reference.map(|r| r.into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, ["join-2", "join-3", "join-4"]);
    assert_eq!(node.metric("chat_flood_closes_total").await, 1.0);
    bystander.say(ROOM, "the room carries on").await;
}
