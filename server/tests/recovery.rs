//! Gap-free recovery under faults, with real `redis-server` and `chat-server` processes:
//! while users chat without pause, a node is killed with SIGKILL (its users reconnect to the
//! others with `since`), or Redis is killed and restarted (nodes refill what they missed from
//! history). Afterwards every user must have seen every acknowledged message exactly once, in
//! id order.

mod support;

use std::time::Duration;

use support::chatters::{assert_exactly_once_in_order, outcomes, start_users};
use support::{Node, RedisServer, redis_node_args};

async fn nodes(redis: &RedisServer, count: usize) -> Vec<Node> {
    let key = support::key(support::KEY_A);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let mut args = redis_node_args(redis, &format!("node-{i}"), &[&key]);
        // Users send faster than the default flood control allows one person.
        args.extend(["--history-size", "1000"].map(str::to_owned));
        args.extend(support::NO_FLOOD_LIMITS.map(str::to_owned));
        let node = Node::spawn(&args, &[]).await;
        support::wait_until("the node is ready", support::STEP, async || {
            node.status_of("/readyz").await == 200
        })
        .await;
        nodes.push(node);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_acknowledged() {
    let redis = RedisServer::start().await;
    let mut nodes = nodes(&redis, 3).await;
    let users = start_users(&nodes, 6, Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[0].kill();
    let outcomes = outcomes(users).await;

    assert_exactly_once_in_order(&outcomes);
    for (i, seen) in outcomes.iter().enumerate() {
        // Users i start on node i % 3: only node 0's had to move.
        if i % 3 == 0 {
            assert!(seen.reconnects >= 1, "{} was on the killed node", seen.name);
        } else {
            assert_eq!(seen.reconnects, 0, "{} was on a surviving node", seen.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let users = start_users(&nodes, 4, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    let outcomes = outcomes(users).await;

    assert_exactly_once_in_order(&outcomes);
    for seen in &outcomes {
        assert_eq!(seen.reconnects, 0, "{} stayed connected", seen.name);
    }
    for node in &nodes {
        assert!(node.metric("chat_redis_reconnects_total").await >= 1.0);
        // The room asked history for what it missed while cut off.
        assert!(node.metric("chat_resyncs_total").await >= 1.0);
    }
}
