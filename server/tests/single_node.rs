//! One node with the in-memory broker (no Redis): the chat flow, every kind of bad input, and
//! the HTTP endpoints. After each bad input two bystanders on the same node still chat with
//! nothing lost.
//!
//! The node runs inside the test process ([`support::TestServer`]), except where a test reads
//! the resident memory of a real `chat-server` process.

mod support;

use chat_protocol::{ErrorCode, close, limits, validate_name};
use support::{Client, Node, TestServer, exchange, unique};

const ROOM: &str = "lobby";

/// A node with two bystanders, alice and bob, in the lobby.
struct Lobby {
    node: TestServer,
    alice: Client,
    bob: Client,
}

async fn lobby() -> Lobby {
    let node = TestServer::memory().await;
    let mut alice = node.client("alice").await;
    let mut bob = node.client("bob").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    Lobby { node, alice, bob }
}

impl Lobby {
    /// A third client on the same node, for sending bad input.
    async fn offender(&self) -> Client {
        self.node.client("offender").await
    }

    /// Alice and bob chat both ways: every message acked and delivered exactly once.
    async fn assert_bystanders_chat(&mut self) {
        exchange(
            &mut self.alice,
            ROOM,
            &unique("from alice "),
            &mut [&mut self.bob],
        )
        .await;
        exchange(
            &mut self.bob,
            ROOM,
            &unique("from bob "),
            &mut [&mut self.alice],
        )
        .await;
    }
}

/// The connection still works after a refused frame: it joins a room of its own and chats.
async fn assert_still_serves(client: &mut Client) {
    let room = unique("side-");
    client.join(&room).await;
    client.say(&room, "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_with_acks_and_exactly_once_delivery() {
    let mut lobby = lobby().await;
    assert_ne!(
        lobby.alice.welcome().session,
        lobby.bob.welcome().session,
        "each connection has its own session"
    );
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_name_is_given_when_none_is_asked_for() {
    let node = TestServer::memory().await;
    let mut guest = Client::connect(&node.ws_url(None)).await;
    let name = guest.name().to_owned();
    assert!(validate_name(&name).is_ok(), "guest name {name:?}");
    // `say` checks that the message is from the guest name.
    guest.join(ROOM).await;
    guest.say(ROOM, "hello as a guest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_the_query_are_used() {
    let node = TestServer::memory().await;
    let longest = "n".repeat(limits::MAX_NAME_CHARS);
    for name in ["Grace Hopper", "名前のある人", "a&b=c?d", longest.as_str()] {
        // `Endpoint::client` checks the welcome name.
        node.client(name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_bad_requests_and_the_connection_stays_open() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    offender.send_binary(b"\x00\x01 not text").await;
    offender.expect_error(ErrorCode::BadRequest, None).await;

    assert_still_serves(&mut offender).await;
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_bad_requests() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    for bad in [
        "not json",
        "{",
        r#"["join","lobby"]"#,
        r#"{"room":"lobby"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"send","room":"lobby","text":""}"#,
    ] {
        offender.send_raw_text(bad).await;
        offender.expect_error(ErrorCode::BadRequest, None).await;
    }
    // A frame that is JSON but has a wrong field type still gets its ref echoed.
    offender
        .send_raw_text(r#"{"type":"send","room":["x"],"text":"t","ref":"r9"}"#)
        .await;
    offender
        .expect_error(ErrorCode::BadRequest, Some("r9"))
        .await;

    assert_still_serves(&mut offender).await;
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_are_refused() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    offender
        .send_raw_text(r#"{"type":"shout","room":"lobby","text":"HEY","ref":"q"}"#)
        .await;
    offender
        .expect_error(ErrorCode::UnknownType, Some("q"))
        .await;

    assert_still_serves(&mut offender).await;
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_or_leaving_a_room_not_joined_is_refused() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    let reference = offender.send_chat(ROOM, "let me in").await;
    offender
        .expect_error(ErrorCode::NotJoined, Some(&reference))
        .await;
    offender
        .send_raw_text(r#"{"type":"leave","room":"lobby","ref":"l1"}"#)
        .await;
    offender
        .expect_error(ErrorCode::NotJoined, Some("l1"))
        .await;

    assert_still_serves(&mut offender).await;
    // Nothing of the refused send reached the lobby: the bystanders have no unread frames.
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_room_names_are_refused() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    let too_long = "r".repeat(limits::MAX_ROOM_BYTES + 1);
    for room in [
        "",
        "has space",
        "a:b",
        "chat:*",
        "ünïcode",
        too_long.as_str(),
    ] {
        let frame = serde_json::json!({"type": "join", "room": room, "ref": "bad-room"});
        offender.send_raw_text(&frame.to_string()).await;
        offender
            .expect_error(ErrorCode::InvalidRoom, Some("bad-room"))
            .await;
    }
    offender
        .send_raw_text(r#"{"type":"send","room":"a b","text":"t","ref":"bad-send"}"#)
        .await;
    offender
        .expect_error(ErrorCode::InvalidRoom, Some("bad-send"))
        .await;
    // The longest valid name is fine.
    offender.join(&"r".repeat(limits::MAX_ROOM_BYTES)).await;

    assert_still_serves(&mut offender).await;
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_room_stops_delivery() {
    let mut lobby = lobby().await;

    lobby.alice.leave(ROOM).await;
    lobby.bob.say(ROOM, "alice is gone").await;
    lobby.alice.expect_silence(support::QUIET).await;

    lobby.alice.join(ROOM).await;
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_over_4096_bytes_is_too_large() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;
    let room = unique("side-");
    offender.join(&room).await;

    let at_limit = "x".repeat(limits::DEFAULT_MAX_TEXT_BYTES);
    offender.say(&room, &at_limit).await;
    let too_large = [
        "x".repeat(limits::DEFAULT_MAX_TEXT_BYTES + 1),
        // 2049 characters but 4098 bytes: the limit is in bytes.
        "é".repeat(limits::DEFAULT_MAX_TEXT_BYTES / 2 + 1),
        // Well over the text limit but under the frame limit: refused, not closed.
        "x".repeat(60 * 1024),
    ];
    for text in &too_large {
        let reference = offender.send_chat(&room, text).await;
        offender
            .expect_error(ErrorCode::TooLarge, Some(&reference))
            .await;
    }

    offender.say(&room, "still here").await;
    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_64_kib_close_with_1009() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    let huge = serde_json::json!({"type": "send", "room": ROOM, "text": "x".repeat(70 * 1024)});
    offender.send_raw_text(&huge.to_string()).await;
    assert_eq!(offender.expect_close().await, close::MESSAGE_TOO_BIG);

    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_frames_close_with_1007() {
    let mut lobby = lobby().await;
    let mut offender = lobby.offender().await;

    offender
        .send_raw_text_frame(b"{\"type\":\"join\",\"room\":\"\xff\xfe\"}")
        .await;
    assert_eq!(offender.expect_close().await, close::INVALID_PAYLOAD);

    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_get_invalid_name_and_close_1008() {
    let mut lobby = lobby().await;

    let too_long = "n".repeat(limits::MAX_NAME_CHARS + 1);
    for name in ["bell\u{7}", "new\nline", too_long.as_str()] {
        let mut refused = Client::open(&lobby.node.ws_url(Some(name))).await;
        refused.expect_error(ErrorCode::InvalidName, None).await;
        assert_eq!(
            refused.expect_close().await,
            close::POLICY_VIOLATION,
            "name {name:?}"
        );
    }

    lobby.assert_bystanders_chat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_are_ok_without_redis() {
    let node = TestServer::memory().await;
    assert_eq!(node.status_of("/healthz").await, 200);
    assert_eq!(node.status_of("/readyz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_page_is_html() {
    let node = TestServer::memory().await;
    let page = node.http_get("/").await;
    assert_eq!(page.status, 200);
    let content_type = page.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "content-type {content_type:?}"
    );
    assert!(
        page.body.to_ascii_lowercase().contains("<html"),
        "body: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_rooms_messages_and_errors() {
    let mut lobby = lobby().await;
    let metrics = lobby.node.metrics().await;
    for family in [
        "chat_connections",
        "chat_rooms",
        "chat_messages_in_total",
        "chat_messages_out_total",
        "chat_errors_total",
        "chat_decrypt_failures_total",
        "chat_redis_reconnects_total",
        "chat_broker_ready",
        "chat_publish_duration_seconds",
    ] {
        assert!(metrics.has_family(family), "no {family} in:\n{}", metrics.0);
    }
    assert_eq!(
        metrics.value("chat_connections"),
        Some(2.0),
        "{}",
        metrics.0
    );
    assert_eq!(metrics.value("chat_rooms"), Some(1.0), "{}", metrics.0);
    assert_eq!(
        metrics.value("chat_broker_ready"),
        Some(1.0),
        "{}",
        metrics.0
    );

    let mut offender = lobby.offender().await;
    offender.send_binary(b"binary").await;
    offender.expect_error(ErrorCode::BadRequest, None).await;
    lobby.assert_bystanders_chat().await;

    let metrics = lobby.node.metrics().await;
    let value = |series: &str| metrics.value(series).unwrap_or(0.0);
    assert!(
        value(r#"chat_errors_total{code="bad_request"}"#) >= 1.0,
        "{}",
        metrics.0
    );
    assert_eq!(value("chat_connections"), 3.0, "{}", metrics.0);
    assert!(value("chat_messages_in_total") >= 2.0, "{}", metrics.0);
    assert!(value("chat_messages_out_total") >= 4.0, "{}", metrics.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_without_slowing_its_room() {
    // Texts as long as a node accepts (its messages must fit a frame even fully escaped).
    const MESSAGES: usize = 300;
    const TEXT_BYTES: usize = 30_000;
    let text_bytes = TEXT_BYTES.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--outbound-queue",
        "64",
        "--max-text-bytes",
        &text_bytes,
    ];
    args.extend(support::NO_FLOOD_LIMITS);
    let node = Node::spawn(&args, &[]).await;
    let mut stuck = node.client("stuck").await;
    stuck.join(ROOM).await;
    let mut alice = node.client("alice").await;
    alice.join(ROOM).await;
    let mut bob = node.client("bob").await;
    bob.join(ROOM).await;

    // Bob reads as fast as he can while alice floods the room with 9 MB; the stuck client
    // reads nothing, so its socket buffers and then its queue fill up.
    let reader = tokio::spawn(async move {
        let got = bob.messages(MESSAGES).await;
        (bob, got)
    });
    let text = "x".repeat(TEXT_BYTES);
    for _ in 0..MESSAGES {
        alice.say(ROOM, &text).await;
    }
    let (_bob, got) = reader.await.expect("bob's reader");
    assert_eq!(got.len(), MESSAGES, "the bystander lost nothing");

    support::wait_until("the stuck client is closed", support::STEP, async || {
        node.metric("chat_slow_consumer_closes_total").await == 1.0
    })
    .await;
    assert_eq!(
        node.metrics().await.value(&format!(
            "chat_closes_total{{code=\"{}\"}}",
            close::SLOW_CONSUMER
        )),
        Some(1.0)
    );
    let rss_kib = node.rss_kib();
    assert!(
        rss_kib < 64 * 1024,
        "node memory stays bounded: {rss_kib} KiB resident"
    );
    drop(stuck);
}
