//! The local Redis Cluster of `scripts/redis-cluster.sh` (3 masters, 3 replicas), and the
//! publish script on it: one call appends a batch of messages of rooms that share a hash tag
//! and `SPUBLISH`es each, reaching a sharded subscriber on that shard in order. Real
//! `redis-server` processes, stopped by PID when the test ends.

mod support;

use std::time::Duration;

use redis::{AsyncConnectionConfig, PushKind, Value};
use support::redis_cluster::RedisCluster;
use support::repository::repository_file;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// Nodes of each role, from `ROLE` on every node.
async fn roles(cluster: &RedisCluster) -> (usize, usize) {
    let mut masters = 0;
    let mut replicas = 0;
    for &port in cluster.ports() {
        let role: Vec<Value> = redis::cmd("ROLE")
            .query_async(&mut cluster.connection(port).await)
            .await
            .expect("ROLE");
        match redis::from_redis_value::<String>(role[0].clone()).as_deref() {
            Ok("master") => masters += 1,
            Ok("slave") => replicas += 1,
            other => panic!("role {other:?}"),
        }
    }
    (masters, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_script_appends_and_spublishes_a_batch_on_a_cluster_shard() {
    let cluster = RedisCluster::start();
    assert_eq!(roles(&cluster).await, (3, 3));

    // Two rooms that share a hash tag: their keys and channels are all in one slot.
    let rooms = ["chat:room:{p7}lobby", "chat:room:{p7}kitchen"];
    let port = cluster.master_of(rooms[0]).await;
    let (pushes, mut heard) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new().set_push_sender(pushes);
    let mut subscriber = redis::Client::open(format!("redis://127.0.0.1:{port}/?protocol=resp3"))
        .expect("a valid URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    let _: () = redis::cmd("SSUBSCRIBE")
        .arg(&rooms)
        .query_async(&mut subscriber)
        .await
        .expect("SSUBSCRIBE");

    let script = repository_file("server/src/broker/redis/lua/publish.lua");
    let mut call = redis::cmd("EVAL");
    call.arg(&script).arg(6);
    let messages = [(rooms[0], "one"), (rooms[1], "two"), (rooms[0], "three")];
    for (room, _) in messages {
        call.arg(format!("{room}:history")).arg(room);
    }
    call.arg(100).arg(3_600_000).arg("SPUBLISH");
    for (_, text) in messages {
        call.arg(text).arg(1).arg("").arg("1");
    }
    let ids: Vec<String> = call
        .query_async(&mut cluster.connection(port).await)
        .await
        .expect("the script runs on the shard of its keys");
    assert_eq!(ids.len(), 3);
    let seq = |id: &str| id.rsplit('-').next().expect("<epoch>-<seq>").to_owned();
    assert_eq!(
        [seq(&ids[0]), seq(&ids[1]), seq(&ids[2])],
        ["0", "0", "1"],
        "each room counts its own messages"
    );

    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        let push = tokio::time::timeout(WAIT, heard.recv())
            .await
            .expect("every message reaches the shard's subscriber")
            .expect("the connection stays open");
        if push.kind != PushKind::SMessage {
            continue;
        }
        let (channel, payload): (String, Vec<u8>) =
            redis::from_redis_value(Value::Array(push.data)).expect("channel and payload");
        delivered.push((channel, payload));
    }
    for ((channel, payload), ((room, text), id)) in delivered.iter().zip(messages.iter().zip(&ids))
    {
        assert_eq!(channel, room);
        assert_eq!(payload, format!("m{id}\n{text}").as_bytes());
    }
}
