//! The chat page in a real browser: headless Debian chromium, driven by playwright-core from
//! `browser-test/`, against Redis and two real nodes. Page A on node 1 and page B on node 2
//! chat in one room, hostile text stays text, a server error shows next to its message, and
//! node 1 restarts on the same port while page A reconnects by itself. On a third node, which
//! requires tokens, a sign-in link chats under its token's name and a forged or expiring token
//! is explained to the person instead of retried; between it and a fourth such node, two pages
//! open a direct message from the people panel and see each other type, edit and delete. In a room that 150 WebSockets fill past
//! the first page of names, pages on both nodes show the count as people join and leave, and
//! "Show more" loads the rest. The script also checks the page's protocol handling against a
//! scripted socket and saves screenshots at phone and desktop width under
//! `target/browser-test/`.

mod support;

use std::time::Duration;

use support::browser::{BrowserScript, artifacts_dir};
use support::{AUTH_SECRET, KEY_A, Node, RedisServer, STEP, key, redis_node_args, wait_until};

/// The whole script, generously: it takes about half a minute on a busy machine.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_chats_across_nodes_in_headless_chromium() {
    let redis = RedisServer::start().await;
    let key = key(KEY_A);
    let mut node1 = Node::redis(&redis, "node-1", &[&key]).await;
    // A small text limit on node 2 lets the page meet a real error frame.
    let mut args = redis_node_args(&redis, "node-2", &[&key]);
    args.extend(["--max-text-bytes".to_owned(), "200".to_owned()]);
    let node2 = Node::spawn(&args, &[]).await;
    wait_until("node 2 is connected to Redis", STEP, async || {
        node2.status_of("/readyz").await == 200
    })
    .await;

    // Two nodes that require tokens, on the same Redis: direct messages across nodes.
    let mut signed = Vec::new();
    for id in ["signed-1", "signed-2"] {
        let args = redis_node_args(&redis, id, &[&key]);
        let node = Node::spawn(&args, &[("CHAT_AUTH_SECRET", AUTH_SECRET)]).await;
        node.wait_ready().await;
        signed.push(node);
    }

    let mut script = BrowserScript::start(&[
        ("CHAT_TEST_NODE1_URL", format!("http://{}", node1.addr())),
        ("CHAT_TEST_NODE2_URL", format!("http://{}", node2.addr())),
        ("CHAT_TEST_ARTIFACTS", artifacts_dir().display().to_string()),
        ("CHAT_TEST_AUTH_URL", format!("http://{}", signed[0].addr())),
        (
            "CHAT_TEST_AUTH2_URL",
            format!("http://{}", signed[1].addr()),
        ),
        ("CHAT_TEST_AUTH_SECRET", AUTH_SECRET.to_owned()),
    ]);
    let deadline = tokio::time::Instant::now() + SCRIPT_TIMEOUT;
    while let Some(request) = script.next_request(deadline).await {
        match request.as_str() {
            "restart node-1" => {
                node1.restart().await;
                script.answer("ok");
            }
            other => panic!("unknown request from the browser script: {other:?}"),
        }
    }
    let status = script.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "the browser script failed ({status}); see its output above"
    );
}
