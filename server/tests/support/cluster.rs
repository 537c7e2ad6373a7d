//! Several nodes on one Redis, and the flags and keys they share.

use super::{Client, Node, RedisServer, key};

/// Flags that switch flood control off, for tests that send (or join) faster than people type.
pub(crate) const NO_FLOOD_LIMITS: [&str; 8] = [
    "--send-rate",
    "0",
    "--name-send-rate",
    "0",
    "--duplicate-window-ms",
    "0",
    "--join-rate",
    "0",
];

/// The key seed every node of a [`cluster`] shares.
pub(crate) const KEY_A: u8 = 0xA1;

/// One Redis and several nodes `node-0`, `node-1`, … sharing key A. Nodes are dropped (killed)
/// before Redis.
pub(crate) struct Cluster {
    pub nodes: Vec<Node>,
    pub redis: RedisServer,
}

pub(crate) async fn cluster(n: usize) -> Cluster {
    cluster_with(n, &[]).await
}

/// [`cluster`] with `extra` command-line arguments for every node.
pub(crate) async fn cluster_with(n: usize, extra: &[&str]) -> Cluster {
    let redis = RedisServer::start().await;
    let key_a = key(KEY_A);
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(Node::redis_with(&redis, &format!("node-{i}"), &[&key_a], extra).await);
    }
    Cluster { nodes, redis }
}

/// Connects `name` to `node`, checks the welcome names the node, and joins `room`.
pub(crate) async fn member(node: &Node, node_id: &str, name: &str, room: &str) -> Client {
    let mut client = node.client(name).await;
    assert_eq!(client.welcome().node, node_id, "welcome node of {name}");
    client.join(room).await;
    client
}
