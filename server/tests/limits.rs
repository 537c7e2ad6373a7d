//! Abuse limits with real processes: flood control (per connection, per name across nodes,
//! debounce, closing flooders), rooms per connection, and the handshake and idle timeouts (on a
//! node in the test process, in node time). Who may connect at all is in `admission.rs`.

mod support;

use std::time::Duration;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame, close};
use support::{Client, FrozenClock, Node, RedisServer, STEP, TestServer, key, unique, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOM: &str = "lobby";

async fn memory_node(extra: &[&str]) -> Node {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Node::spawn(&args, &[]).await
}

/// Two nodes on one Redis, with `extra` flags.
async fn two_nodes(redis: &RedisServer, extra: &[&str]) -> [Node; 2] {
    let key = key(0x51);
    [
        Node::redis_with(redis, "node-0", &[&key], extra).await,
        Node::redis_with(redis, "node-1", &[&key], extra).await,
    ]
}

/// The reply to `reference`: Ok(id) for an ack, Err((code, retry_after_ms)) for an error.
async fn outcome(client: &mut Client, reference: &str) -> Result<String, (ErrorCode, Option<u64>)> {
    match client.reply_to(Some(reference)).await {
        ServerFrame::Ack { id, .. } => Ok(id.into_owned()),
        ServerFrame::Error {
            code,
            retry_after_ms,
            ..
        } => Err((code, retry_after_ms)),
        other => panic!("not a reply: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Flood control
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_limited_while_its_room_loses_nothing() {
    const FLOOD: usize = 300;
    const TALK: usize = 20;
    let node = memory_node(&[
        "--send-rate",
        "20",
        "--send-burst",
        "50",
        "--name-send-rate",
        "0",
        "--flood-close-after",
        "0",
    ])
    .await;
    let mut flooder = node.client("flooder").await;
    let mut alice = node.client("alice").await;
    let mut bob = node.client("bob").await;
    for client in [&mut flooder, &mut alice, &mut bob] {
        client.join(ROOM).await;
    }

    // The flooder fires its whole burst without waiting; alice and bob talk meanwhile.
    let flood = tokio::spawn(async move {
        let mut references = Vec::with_capacity(FLOOD);
        for i in 0..FLOOD {
            references.push(flooder.send_chat(ROOM, &format!("flood {i}")).await);
        }
        let mut acked = Vec::new();
        let mut limited = 0;
        for reference in &references {
            match outcome(&mut flooder, reference).await {
                Ok(_) => acked.push(reference.clone()),
                Err((ErrorCode::RateLimited, Some(retry_after_ms))) => {
                    assert!((1..=1000).contains(&retry_after_ms), "{retry_after_ms}");
                    limited += 1;
                }
                Err(other) => panic!("flood send refused with {other:?}"),
            }
        }
        (flooder, acked.len(), limited)
    });
    let mut said = Vec::new();
    for i in 0..TALK {
        said.push((alice.say(ROOM, &format!("alice {i}")).await, "alice"));
        said.push((bob.say(ROOM, &format!("bob {i}")).await, "bob"));
    }
    let (mut flooder, acked, limited) = flood.await.expect("flood task");
    assert_eq!(acked + limited, FLOOD);
    assert!(limited > FLOOD / 2, "only {limited} of {FLOOD} limited");
    assert!(acked >= 50, "the burst of 50 goes through, got {acked}");

    // Everyone got every message of the others (`say` already checked each sender's own
    // copy), and exactly as many flood messages as were acked.
    for client in [&mut alice, &mut bob, &mut flooder] {
        let me = client.name().to_owned();
        let got = client.drain(Duration::from_secs(1)).await;
        let chats: Vec<(String, String)> = got
            .iter()
            .filter_map(|frame| match frame {
                ServerFrame::Message { id, from, .. } => Some((id.to_string(), from.to_string())),
                _ => None,
            })
            .collect();
        for (id, _) in said.iter().filter(|(_, from)| *from != me) {
            assert!(
                chats.iter().any(|(got, _)| got == id),
                "message {id} lost; got {chats:?}"
            );
        }
        let from_flooder = chats.iter().filter(|(_, from)| from == "flooder").count();
        assert_eq!(from_flooder, acked, "flood messages delivered = acked");
    }
    let metrics = node.metrics().await;
    assert_eq!(
        metrics.value(r#"chat_errors_total{code="rate_limited"}"#),
        Some(limited as f64)
    );
    assert_eq!(
        metrics.value(r#"chat_rate_limited_total{scope="connection"}"#),
        Some(limited as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_flooding_closes_the_connection_with_1008() {
    let node = memory_node(&[
        "--send-rate",
        "1",
        "--send-burst",
        "2",
        "--flood-close-after",
        "5",
    ])
    .await;
    let mut flooder = node.client("flooder").await;
    let mut bystander = node.client("bystander").await;
    flooder.join(ROOM).await;
    bystander.join(ROOM).await;
    // A burst of two goes through, then five sends in a row are limited: closed.
    for i in 0..7 {
        flooder.send_chat(ROOM, &format!("flood {i}")).await;
    }
    assert_eq!(flooder.expect_close().await, close::POLICY_VIOLATION);
    assert_eq!(
        node.metric(r#"chat_errors_total{code="rate_limited"}"#)
            .await,
        5.0
    );
    assert_eq!(node.metric("chat_flood_closes_total").await, 1.0);
    assert_eq!(node.metric(r#"chat_closes_total{code="1008"}"#).await, 1.0);
    bystander.say(ROOM, "the room carries on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_limited_across_nodes_sharing_redis() {
    let redis = RedisServer::start().await;
    let limits = [
        "--send-rate",
        "0",
        "--name-send-rate",
        "0.5",
        "--name-send-burst",
        "4",
        "--redis-prefix",
        "flood-test",
    ];
    let nodes = two_nodes(&redis, &limits).await;
    let mut here = nodes[0].client("ada").await;
    let mut there = nodes[1].client("ada").await;
    let mut other = nodes[1].client("bob").await;
    for client in [&mut here, &mut there, &mut other] {
        client.join(ROOM).await;
    }
    for i in 0..4 {
        let client = if i % 2 == 0 { &mut here } else { &mut there };
        let reference = client
            .send_chat(ROOM, &format!("within the burst {i}"))
            .await;
        assert!(outcome(client, &reference).await.is_ok(), "send {i}");
    }
    for client in [&mut here, &mut there] {
        let reference = client.send_chat(ROOM, &unique("over ")).await;
        match outcome(client, &reference).await {
            Err((ErrorCode::RateLimited, Some(retry_after_ms))) => {
                assert!((1..=2000).contains(&retry_after_ms), "{retry_after_ms}");
            }
            other => panic!("expected rate_limited, got {other:?}"),
        }
    }
    // Another name is not affected.
    other.say(ROOM, "bob may talk").await;

    // The state lives in Redis under the prefix, with an expiry.
    let mut redis_connection = redis.connection().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("flood-test:flood:ada:rate")
        .query_async(&mut redis_connection)
        .await
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= 10_000, "PTTL {ttl}");
    for node in &nodes {
        assert!(
            node.metric(r#"chat_rate_limited_total{scope="name"}"#)
                .await
                >= 1.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_texts_are_refused_within_the_window() {
    let node = memory_node(&["--duplicate-window-ms", "1500"]).await;
    let mut ada = node.client("ada").await;
    let mut bob = node.client("bob").await;
    ada.join(ROOM).await;
    ada.join("other").await;
    bob.join(ROOM).await;
    ada.say(ROOM, "hello").await;
    let again = ada.send_chat(ROOM, "hello").await;
    assert_eq!(
        outcome(&mut ada, &again).await,
        Err((ErrorCode::Duplicate, None))
    );
    ada.say("other", "hello").await;
    ada.say(ROOM, "hello again").await;
    bob.say(ROOM, "hello").await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ada.say(ROOM, "hello").await;
    assert_eq!(
        node.metric(r#"chat_errors_total{code="duplicate"}"#).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debounce_holds_across_nodes_and_bursts_keep_their_order() {
    const BURST: usize = 200;
    let redis = RedisServer::start().await;
    let limits = [
        "--send-rate",
        "0",
        "--name-send-rate",
        "100000",
        "--name-send-burst",
        "100000",
    ];
    let nodes = two_nodes(&redis, &limits).await;
    let mut here = nodes[0].client("ada").await;
    let mut there = nodes[1].client("ada").await;
    here.join(ROOM).await;
    there.join(ROOM).await;
    here.say(ROOM, "only once").await;
    there
        .message_with_text_within("only once", STEP)
        .await
        .expect("delivered to the other node");
    let again = there.send_chat(ROOM, "only once").await;
    assert_eq!(
        outcome(&mut there, &again).await,
        Err((ErrorCode::Duplicate, None))
    );

    // Every send waits for a check in Redis; publishes still keep the order of the sends.
    let mut references = Vec::with_capacity(BURST);
    for i in 0..BURST {
        references.push(here.send_chat(ROOM, &format!("burst {i}")).await);
    }
    for reference in &references {
        assert!(outcome(&mut here, reference).await.is_ok());
    }
    let texts: Vec<String> = (0..BURST).map(|i| format!("burst {i}")).collect();
    for client in [&mut here, &mut there] {
        let got: Vec<String> = client
            .messages(BURST)
            .await
            .into_iter()
            .map(|chat| chat.text)
            .collect();
        assert!(got == texts, "the burst arrived out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_limited_on_the_node_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let node = Node::redis_with(&redis, "node-0", &[&key(0x51)], &[]).await;
    let mut ada = node.client("ada").await;
    ada.join(ROOM).await;
    redis.kill();
    // The check falls back to this node; the publish then finds no Redis either.
    wait_until("a send falls back", Duration::from_secs(10), async || {
        let reference = ada.send_chat(ROOM, &unique("during the outage ")).await;
        let refused = outcome(&mut ada, &reference).await;
        assert!(
            matches!(refused, Err((ErrorCode::Unavailable, None))),
            "{refused:?}"
        );
        node.metric("chat_rate_limit_fallbacks_total").await >= 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_in_at_most_max_rooms() {
    let node = memory_node(&["--max-rooms-per-connection", "3"]).await;
    let mut ada = node.client("ada").await;
    for room in ["a", "b", "c"] {
        ada.join(room).await;
    }
    ada.join("a").await;
    ada.send_frame(&ClientFrame::Join {
        since: None,
        room: "d".into(),
        reference: Some("one-too-many".into()),
    })
    .await;
    ada.expect_error(ErrorCode::TooManyRooms, Some("one-too-many"))
        .await;
    ada.leave("b").await;
    ada.join("d").await;
    ada.say("d", "still chatting").await;
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

/// In node time, with the clock frozen once both clients are in: no real seconds pass.
#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed() {
    let node = TestServer::start(&["--idle-timeout-secs", "2"]).await;
    let mut silent = node.client("silent").await;
    let mut listener = node.client("listener").await;
    listener.join(ROOM).await;
    let clock = FrozenClock::freeze();
    // The listener only reads (its library answers pings); the silent one does not even read.
    let idle = clock.during(listener.drain(Duration::from_secs(5))).await;
    assert!(idle.is_empty(), "{idle:?}");
    assert_eq!(
        clock.during(silent.expect_close()).await,
        close::IDLE_TIMEOUT
    );
    clock
        .during(listener.say(ROOM, "still here after 5 s"))
        .await;
    assert_eq!(
        clock.during(node.metric("chat_idle_closes_total")).await,
        1.0
    );
}

/// In node time, with the clock frozen before the first connection: no real seconds pass.
#[tokio::test]
async fn slow_http_clients_are_cut_off_at_the_handshake_timeout() {
    let node = TestServer::start(&["--handshake-timeout-secs", "1"]).await;
    let clock = FrozenClock::freeze();
    let mut half_request = TcpStream::connect(node.addr()).await.expect("connect");
    half_request
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut silent = TcpStream::connect(node.addr()).await.expect("connect");
    for stream in [&mut half_request, &mut silent] {
        let mut buf = [0u8; 256];
        let read = clock
            .during(tokio::time::timeout(STEP, stream.read(&mut buf)))
            .await
            .expect("the node closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_eq!(
        clock
            .during(node.metric(r#"chat_connections_refused_total{cause="handshake_timeout"}"#))
            .await,
        2.0
    );
    // A WebSocket outlives the handshake timeout.
    let mut ada = clock.during(node.client("ada")).await;
    clock.during(ada.join(ROOM)).await;
    clock.pass(Duration::from_millis(1500)).await;
    clock.during(ada.say(ROOM, "still connected")).await;
}
