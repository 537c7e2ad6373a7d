//! Graceful shutdown: on SIGTERM a node tells every client it is going away (close 1001) and
//! exits with status 0 within a few seconds.

mod support;

use std::time::{Duration, Instant};

use chat_protocol::close;
use support::{Node, RedisServer, key};

const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// An idle client and a room member on `node`; SIGTERM; both get 1001 and the node exits 0.
async fn assert_sigterm_closes_clients_and_exits_cleanly(mut node: Node) {
    let mut idle = node.client("idle").await;
    let mut member = node.client("member").await;
    member.join("hall").await;

    node.sigterm();
    let signalled = Instant::now();
    for client in [&mut idle, &mut member] {
        assert_eq!(client.expect_close().await, close::GOING_AWAY);
    }
    let status = node
        .wait_exit(EXIT_WITHIN.saturating_sub(signalled.elapsed()))
        .await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_memory_node_closes_clients_with_going_away() {
    assert_sigterm_closes_clients_and_exits_cleanly(Node::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_redis_node_closes_clients_with_going_away() {
    let redis = RedisServer::start().await;
    let node = Node::redis(&redis, "node-0", &[&key(0xD4)]).await;
    assert_sigterm_closes_clients_and_exits_cleanly(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_http_request_does_not_hold_up_the_exit() {
    let mut node = Node::spawn(
        &["--listen", "127.0.0.1:0", "--shutdown-timeout-secs", "2"],
        &[],
    )
    .await;
    let mut stalled = tokio::net::TcpStream::connect(node.addr())
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stalled, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write half a request");
    let mut client = node.client("client").await;

    node.sigterm();
    assert_eq!(client.expect_close().await, close::GOING_AWAY);
    let status = node.wait_exit(EXIT_WITHIN).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    drop(stalled);
}
