//! The JavaScript client library (`clients/js`) under Node.js against real nodes: Redis and
//! two nodes for chat across nodes and for a node killed with SIGKILL while clients send
//! (nothing acknowledged lost, recovery reported), a node with low send and join rates
//! for `rate_limited`, and a node that requires tokens for refusal, names from tokens and a
//! session resumed with a fresh token after 4003. The tests themselves are
//! `clients/js/test/*.test.mjs`; this test owns the processes they use.

mod support;

use std::time::Duration;

use support::js_client::run_node_tests;
use support::{AUTH_SECRET, KEY_A, Node, RedisServer, key};

/// The whole run, generously: about 15 s on an idle machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_keeps_its_promises_against_real_nodes() {
    let redis = RedisServer::start().await;
    let key = key(KEY_A);
    let node1 = Node::redis(&redis, "node-1", &[&key]).await;
    // Killed by the Node.js test with SIGKILL; the guard reaps it afterwards.
    let node2 = Node::redis(&redis, "node-2", &[&key]).await;
    let limited = Node::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--send-rate",
            "1",
            "--send-burst",
            "2",
            "--join-rate",
            "4",
            "--join-burst",
            "2",
        ],
        &[],
    )
    .await;
    let signed = Node::spawn(
        &["--listen", "127.0.0.1:0"],
        &[("CHAT_AUTH_SECRET", AUTH_SECRET)],
    )
    .await;

    let (status, output) = run_node_tests(
        &[
            ("CHAT_JS_NODE1_URL", format!("http://{}", node1.addr())),
            ("CHAT_JS_NODE2_URL", format!("http://{}", node2.addr())),
            ("CHAT_JS_NODE2_PID", node2.pid().to_string()),
            ("CHAT_JS_LIMITED_URL", format!("http://{}", limited.addr())),
            ("CHAT_JS_AUTH_URL", format!("http://{}", signed.addr())),
            ("CHAT_JS_AUTH_SECRET", AUTH_SECRET.to_owned()),
        ],
        RUN_TIMEOUT,
    )
    .await;
    eprintln!("{output}");
    assert!(
        status.success(),
        "the client library's tests failed ({status}); see their output above"
    );
}
