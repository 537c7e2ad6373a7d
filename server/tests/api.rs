//! The HTTP API with real processes: the key, validation with WebSocket error codes, per-message
//! results in order, precise statuses, Redis outages, room and node figures, and 100,000
//! messages posted to one node reaching members on two others completely and in order.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_protocol::ServerFrame;
use chat_protocol::api::{BatchReply, Outcome, Publish, PublishBatch};
use serde_json::json;
use support::api::{
    API_KEY, REQUEST, SOLO, api_node, assert_error, bearer, body, call, get, message, post,
};
use support::{Client, KEY_A, Node, QUIET, RedisServer, key, member, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_a_key() {
    let node = Node::memory().await;
    for (method, path) in [
        ("POST", "/api/publish"),
        ("POST", "/api/publish/batch"),
        ("GET", "/api/stats"),
        ("GET", "/api/rooms/lobby"),
    ] {
        let body = message("lobby", "Bot", "hi").to_string();
        let response = call(&node, method, path, &body).await;
        assert_error(&response, 404, "not_found");
    }
    assert_eq!(node.status_of("/").await, 200, "the page is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_the_right_bearer_key() {
    let node = api_node(&[]).await;
    let mut member = member(&node, SOLO, "m", "keyed").await;
    let body = message("keyed", "Bot", "let me in").to_string();
    let json_type = ("Content-Type", "application/json");
    let wrong = "Bearer test-api-key-7c1e5a90d3b3".to_owned();
    let basic = format!("Basic {API_KEY}");
    for headers in [
        vec![json_type],
        vec![json_type, ("Authorization", wrong.as_str())],
        vec![json_type, ("Authorization", basic.as_str())],
        vec![json_type, ("Authorization", API_KEY)],
    ] {
        let response = node
            .http("POST", "/api/publish", &headers, body.as_bytes(), REQUEST)
            .await;
        assert_error(&response, 401, "unauthorized");
        assert!(
            response
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{response:?}"
        );
    }
    // Without the key nothing about the node shows, not even which endpoints exist.
    for path in ["/api/stats", "/api/nothing-here"] {
        let response = node.http("GET", path, &[], &[], REQUEST).await;
        assert_error(&response, 401, "unauthorized");
    }
    member.expect_silence(QUIET).await;
    assert_eq!(
        node.metric(r#"chat_api_requests_total{endpoint="publish",status="401"}"#)
            .await,
        4.0
    );

    let response = post(&node, "/api/publish", &message("keyed", "Bot", "let me in")).await;
    assert_eq!(response.status, 200, "{response:?}");
    let chat = member
        .message_with_text_within("let me in", support::STEP)
        .await;
    assert!(chat.is_some_and(|chat| chat.from == "Bot"));

    assert!(
        !node.log_text().contains(API_KEY),
        "the API key is in the log"
    );
    let (status, help) = Node::run_to_exit(
        &["--help"],
        &[("CHAT_API_KEY", API_KEY)],
        Duration::from_secs(5),
    )
    .await;
    assert!(status.success());
    assert!(help.contains("--api-key"), "{help}");
    assert!(!help.contains(API_KEY), "the API key is in --help");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_reaches_members_on_every_node_like_a_chat_message() {
    let redis = RedisServer::start().await;
    let key_a = key(KEY_A);
    let extra = ["--api-key", API_KEY];
    let node0 = Node::redis_with(&redis, "node-0", &[&key_a], &extra).await;
    let node1 = Node::redis_with(&redis, "node-1", &[&key_a], &extra).await;
    let mut here = member(&node0, "node-0", "here", "news").await;
    let mut there = member(&node1, "node-1", "there", "news").await;

    let response = post(
        &node0,
        "/api/publish",
        &message("news", "Alerts", "disk full"),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let id = body(&response)["id"].as_str().expect("an id").to_owned();
    for client in [&mut here, &mut there] {
        let chat = client.message_with_id(&id).await;
        assert_eq!(
            (chat.room.as_str(), chat.from.as_str(), chat.text.as_str()),
            ("news", "Alerts", "disk full")
        );
        client.expect_silence(QUIET).await;
    }
    // A member's own chat and the API's share one room and one id scheme.
    let own = here.say("news", "thanks").await;
    assert_ne!(own, id);
    assert_eq!(there.messages(1).await[0].id, own);

    let stats = body(&get(&node0, "/api/stats").await);
    assert_eq!(stats["node"], "node-0");
    assert_eq!(stats["ready"], true);
    assert_eq!(stats["api_messages_accepted"], 1);
    assert_eq!(stats["messages_in"], 2, "{stats}");
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["rooms"], 1);
    assert!(stats["errors"]["bad_request"].is_u64(), "{stats}");
    assert_eq!(
        node0
            .metric(r#"chat_api_messages_total{result="accepted"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_every_message_in_order() {
    let node = api_node(&[]).await;
    let mut reader = member(&node, SOLO, "reader", "mix").await;
    let too_long = "x".repeat(4097);
    let batch = json!({"messages": [
        message("mix", "Bot", "first"),
        message("no room", "Bot", "x"),
        message("elsewhere", "Bot", "nobody hears this"),
        {"room": "mix", "text": "who?"},
        message("mix", "Bot", &too_long),
        5,
        message("mix", "", "x"),
        message("mix", "Bot", "last"),
        {"room": "mix", "from": "Bot", "text": ["not", "text"]},
    ]});
    let response = post(&node, "/api/publish/batch", &batch).await;
    assert_eq!(response.status, 200, "{response:?}");
    let reply: BatchReply<'_> = serde_json::from_str(&response.body).expect("a batch reply");
    assert_eq!((reply.accepted, reply.failed), (3, 6), "{reply:?}");
    let codes: Vec<&str> = reply
        .results
        .iter()
        .map(|outcome| match outcome {
            Outcome::Published(_) => "id",
            Outcome::Failed(failed) => &failed.error.code,
        })
        .collect();
    assert_eq!(
        codes,
        [
            "id",
            "invalid_room",
            "id",
            "bad_request",
            "too_large",
            "bad_request",
            "invalid_name",
            "id",
            "bad_request"
        ]
    );
    let ids: Vec<&str> = reply
        .results
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Published(published) => Some(published.id.as_ref()),
            Outcome::Failed(_) => None,
        })
        .collect();
    let chats = reader.messages(2).await;
    assert_eq!(
        chats
            .iter()
            .map(|c| (c.id.as_str(), c.text.as_str()))
            .collect::<Vec<_>>(),
        [(ids[0], "first"), (ids[2], "last")]
    );
    reader.expect_silence(QUIET).await;

    let stats = body(&get(&node, "/api/stats").await);
    assert_eq!(
        (
            &stats["api_messages_accepted"],
            &stats["api_messages_failed"]
        ),
        (&json!(3), &json!(6))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_json_errors() {
    let node = api_node(&["--api-max-batch", "3", "--api-max-body-bytes", "2000"]).await;
    let authorization = bearer();
    let auth = ("Authorization", authorization.as_str());
    let valid = message("lobby", "Bot", "hi").to_string();

    for path in ["/api/publish", "/api/publish/batch"] {
        assert_error(
            &call(&node, "POST", path, "{\"room\":").await,
            400,
            "bad_request",
        );
        assert_error(&call(&node, "POST", path, "").await, 400, "bad_request");
        let no_type = node
            .http("POST", path, &[auth], valid.as_bytes(), REQUEST)
            .await;
        assert_error(&no_type, 415, "unsupported_media_type");
        let text_type = node
            .http(
                "POST",
                path,
                &[auth, ("Content-Type", "text/plain")],
                valid.as_bytes(),
                REQUEST,
            )
            .await;
        assert_error(&text_type, 415, "unsupported_media_type");
        let not_utf8 = node
            .http(
                "POST",
                path,
                &[auth, ("Content-Type", "application/json; charset=utf-8")],
                b"{\"room\":\"\xff\"}",
                REQUEST,
            )
            .await;
        assert_error(&not_utf8, 400, "bad_request");
        let wrong_method = get(&node, path).await;
        assert_error(&wrong_method, 405, "method_not_allowed");
        assert_eq!(wrong_method.header("allow"), Some("POST"));
    }

    // A batch is an object with a `messages` array, of at most --api-max-batch messages, in a
    // body of at most --api-max-body-bytes.
    for not_a_batch in ["[]", "{}", r#"{"messages":{}}"#] {
        let response = call(&node, "POST", "/api/publish/batch", not_a_batch).await;
        assert_error(&response, 400, "bad_request");
    }
    let four = json!({"messages": vec![message("lobby", "Bot", "hi"); 4]});
    let response = post(&node, "/api/publish/batch", &four).await;
    assert_error(&response, 413, "too_large");
    assert!(response.body.contains("at most 3"), "{response:?}");
    let big = json!({"messages": [message("lobby", "Bot", &"x".repeat(2000))]});
    assert_error(
        &post(&node, "/api/publish/batch", &big).await,
        413,
        "too_large",
    );
    // A single message may be as large as a WebSocket frame (64 KiB), no larger.
    let huge = message("lobby", "Bot", &"x".repeat(70_000));
    assert_error(&post(&node, "/api/publish", &huge).await, 413, "too_large");

    // A single message breaking the rules of a `send` gets the same codes as over WebSocket.
    for (bad, code) in [
        (message("no room", "Bot", "x"), "invalid_room"),
        (message("lobby", "\u{7}bell", "x"), "invalid_name"),
        (message("lobby", "Bot", &"x".repeat(4097)), "too_large"),
        (message("lobby", "Bot", ""), "bad_request"),
        (json!({"room": "lobby", "text": "no sender"}), "bad_request"),
        (json!(["lobby", "Bot", "x"]), "bad_request"),
    ] {
        assert_error(&post(&node, "/api/publish", &bad).await, 400, code);
    }

    assert_error(
        &get(&node, "/api/rooms/no%20room").await,
        400,
        "invalid_room",
    );
    assert_error(&get(&node, "/api/rooms/%FF").await, 400, "invalid_room");
    assert_error(&get(&node, "/api/nothing").await, 404, "not_found");
    assert_eq!(
        node.metric(r#"chat_api_requests_total{endpoint="publish_batch",status="413"}"#)
            .await,
        2.0
    );
    assert_eq!(node.status_of("/healthz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_list_members_and_count_this_nodes_subscribers() {
    let node = api_node(&[]).await;
    let room = |name: &str| format!("/api/rooms/{name}");
    let _a = member(&node, SOLO, "a", "count").await;
    let mut b = member(&node, SOLO, "b", "count").await;
    let reply = body(&get(&node, &room("count")).await);
    assert_eq!(
        reply,
        json!({"room": "count", "count": 2, "members": ["a", "b"], "subscribers": 2})
    );
    b.leave("count").await;
    let reply = body(&get(&node, &room("count")).await);
    assert_eq!(
        (&reply["count"], &reply["members"], &reply["subscribers"]),
        (&json!(1), &json!(["a"]), &json!(1))
    );
    // Rooms exist implicitly: an empty one is no error.
    let reply = body(&get(&node, &room("empty.room")).await);
    assert_eq!(
        reply,
        json!({"room": "empty.room", "count": 0, "members": [], "subscribers": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_members_come_in_pages_on_nodes_with_and_without_members() {
    let redis = RedisServer::start().await;
    let key_a = key(KEY_A);
    let args = ["--api-key", API_KEY, "--members-max", "2"];
    let with = Node::redis_with(&redis, "node-0", &[&key_a], &args).await;
    let without = Node::redis_with(&redis, "node-1", &[&key_a], &args).await;
    let mut members = Vec::new();
    for name in ["e", "a", "d", "c", "b"] {
        members.push(member(&with, "node-0", name, "paged").await);
    }
    for node in [&with, &without] {
        let first = body(&get(node, "/api/rooms/paged").await);
        assert_eq!(
            (&first["count"], &first["members"], &first["more_members"]),
            (&json!(5), &json!(["a", "b"]), &json!(true))
        );
        let last = body(&get(node, "/api/rooms/paged?after=c").await);
        assert_eq!(last["members"], json!(["d", "e"]));
        assert_eq!(last.get("more_members"), None, "no more after e");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_redis_is_down_answers_503_and_publishes_nothing() {
    let mut redis = RedisServer::start().await;
    let key_a = key(KEY_A);
    let node = Node::redis_with(&redis, "node-0", &[&key_a], &["--api-key", API_KEY]).await;
    redis.kill();
    wait_until(
        "the node notices Redis is gone",
        Duration::from_secs(10),
        async || node.status_of("/readyz").await == 503,
    )
    .await;
    let single = post(&node, "/api/publish", &message("down", "Bot", "lost?")).await;
    assert_error(&single, 503, "unavailable");
    assert_eq!(single.header("retry-after"), Some("1"));
    let batch = json!({"messages": [message("down", "Bot", "lost?")]});
    assert_error(
        &post(&node, "/api/publish/batch", &batch).await,
        503,
        "unavailable",
    );
    let stats = body(&get(&node, "/api/stats").await);
    assert_eq!(
        (&stats["ready"], &stats["messages_in"]),
        (&json!(false), &json!(0))
    );
}

/// Reads `count` chat messages, as (id, text), with a generous wait for each; `progress`
/// follows how many have arrived.
async fn read_messages(
    mut client: Client,
    count: usize,
    progress: Arc<AtomicUsize>,
) -> (Client, Vec<(String, String)>) {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match client.recv_within(Duration::from_secs(60)).await {
            Some(ServerFrame::Message { id, text, from, .. }) => {
                assert_eq!(from, "Feeder");
                messages.push((id.into_owned(), text.into_owned()));
                progress.store(messages.len(), Ordering::Relaxed);
            }
            Some(_) => {}
            None => panic!("no message after {} of {count}", messages.len()),
        }
    }
    (client, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_messages_in_batches_reach_members_on_other_nodes_in_order() {
    const TOTAL: usize = 100_000;
    const BATCH: usize = 20_000;
    let redis = RedisServer::start().await;
    let key_a = key(KEY_A);
    // Each batch reaches the receiving nodes as a burst of 20,000 frames, faster than a test
    // client (a debug build that parses every frame) reads them. This test is about the API
    // delivering everything in order, not about the slow-consumer policy, so a reader's queue
    // holds a whole batch.
    let extra = ["--api-key", API_KEY, "--outbound-queue", "25000"];
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Node::redis_with(&redis, &format!("node-{i}"), &[&key_a], &extra).await);
    }
    let progress = [(); 2].map(|()| Arc::new(AtomicUsize::new(0)));
    let readers = [
        member(&nodes[1], "node-1", "reader-1", "firehose").await,
        member(&nodes[2], "node-2", "reader-2", "firehose").await,
    ];
    let readers: Vec<_> = readers
        .into_iter()
        .zip(&progress)
        .map(|(client, progress)| tokio::spawn(read_messages(client, TOTAL, progress.clone())))
        .collect();

    let texts: Vec<String> = (0..TOTAL).map(|i| format!("message {i}")).collect();
    let mut ids = Vec::with_capacity(TOTAL);
    for chunk in texts.chunks(BATCH) {
        let batch = PublishBatch {
            messages: chunk
                .iter()
                .map(|text| Publish {
                    room: "firehose".into(),
                    from: "Feeder".into(),
                    text: text.as_str().into(),
                })
                .collect(),
        };
        let body = serde_json::to_string(&batch).expect("serialize a batch");
        let response = call(&nodes[0], "POST", "/api/publish/batch", &body).await;
        assert_eq!(
            response.status,
            200,
            "{}",
            &response.body[..response.body.len().min(500)]
        );
        let reply: BatchReply<'_> = serde_json::from_str(&response.body).expect("a batch reply");
        assert_eq!((reply.accepted, reply.failed), (BATCH, 0));
        ids.extend(reply.results.into_iter().map(|outcome| match outcome {
            Outcome::Published(published) => published.id.into_owned(),
            Outcome::Failed(failed) => panic!("refused: {failed:?}"),
        }));
        // One batch in flight at a time: a debug build works through a burst slowly, and
        // Redis drops a subscriber whose backlog stays above 8 MB for a minute. Posting all
        // five at once passes too, in twice the time.
        let posted = ids.len();
        wait_until(
            "the readers got the batch",
            Duration::from_secs(120),
            async || progress.iter().all(|p| p.load(Ordering::Relaxed) >= posted),
        )
        .await;
    }

    for reader in readers {
        let (mut client, messages) = tokio::time::timeout(Duration::from_secs(300), reader)
            .await
            .expect("readers finish")
            .expect("reader task");
        let label = client.welcome().node.clone();
        assert_eq!(messages.len(), TOTAL);
        for (i, ((id, text), expected_id)) in messages.iter().zip(&ids).enumerate() {
            assert_eq!(
                (id, text),
                (expected_id, &texts[i]),
                "message {i} on {label}: out of order or lost"
            );
        }
        client.expect_silence(QUIET).await;
    }
    for node in &nodes[1..] {
        assert_eq!(
            node.metric("chat_slow_consumer_closes_total").await,
            0.0,
            "no reader was dropped"
        );
    }
}
