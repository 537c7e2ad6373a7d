//! Nodes on a Redis Cluster (`--redis-cluster`), on the local cluster of
//! `scripts/redis-cluster.sh` (3 masters, 3 replicas): chat, history, `since` and presence
//! across nodes on sharded channels; a failover, a moved slot and a killed master while users
//! chat, with every acknowledged message delivered exactly once, in order. Also the publish
//! script on a shard by itself. Real `redis-server` and `chat-server` processes, stopped by
//! PID when the test ends.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chat_protocol::ErrorCode;
use chat_server::keyspace::{Keyspace, slot_of};
use redis::{AsyncConnectionConfig, PushKind, Value};
use serde_json::json;
use support::api::{API_KEY, body, get, post};
use support::chatters::{
    ROOM, assert_exactly_once_in_order, assert_in_order_acked_after, outcomes, start_users,
};
use support::redis_cluster::RedisCluster;
use support::repository::repository_file;
use support::{STEP, wait_until};
use tokio::sync::mpsc;
use tokio::time::Instant;

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

/// A room's channel on the cluster, as the nodes name it.
fn channel(room: &str) -> String {
    Keyspace::new("chat", true).channel(room)
}

/// The sharded channels the master on `port` has subscribers for.
async fn shard_channels(cluster: &RedisCluster, port: u16) -> Vec<String> {
    cluster.query(port, &["PUBSUB", "SHARDCHANNELS"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_recover_and_share_presence_through_a_cluster() {
    let cluster = RedisCluster::start();
    let api = ["--api-key", API_KEY];
    let nodes = [
        cluster.node("node-0", &api).await,
        cluster.node("node-1", &api).await,
    ];
    // Rooms until every master serves at least one.
    let mut rooms: Vec<String> = Vec::new();
    let mut masters = HashSet::new();
    for i in 0.. {
        let room = format!("room-{i}");
        if masters.insert(cluster.master_of(&channel(&room)).await) || rooms.len() < 6 {
            rooms.push(room);
        }
        if masters.len() == 3 && rooms.len() >= 6 {
            break;
        }
    }
    let mut ada = nodes[0].client("ada").await;
    let mut bob = nodes[1].client("bob").await;
    for room in &rooms {
        ada.join(room).await;
        let joined = bob.join(room).await;
        assert_eq!(joined.count, 2, "both are in {room}");
    }
    for room in &rooms {
        let id = ada.say(room, &format!("hello {room}")).await;
        assert_eq!(bob.message_with_id(&id).await.text, format!("hello {room}"));
    }
    // The HTTP API publishes through the cluster too, and reads presence from it.
    for room in &rooms {
        let sent = post(
            &nodes[1],
            "/api/publish",
            &json!({"room": room, "from": "api", "text": "from the API"}),
        )
        .await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        let id = body(&sent)["id"].as_str().expect("an id").to_owned();
        assert_eq!(ada.message_with_id(&id).await.text, "from the API");
        let figures = body(&get(&nodes[0], &format!("/api/rooms/{room}")).await);
        assert_eq!(figures["count"], 2, "{figures}");
    }
    // Every room's channel is a sharded channel on its master; nothing is on plain pub/sub.
    for room in &rooms {
        let master = cluster.master_of(&channel(room)).await;
        assert!(
            shard_channels(&cluster, master)
                .await
                .contains(&channel(room))
        );
    }
    for &port in cluster.ports() {
        let plain: Vec<String> = cluster.query(port, &["PUBSUB", "CHANNELS"]).await;
        assert!(plain.is_empty(), "plain channels on {port}: {plain:?}");
    }

    // History and `since`: bob leaves, misses two messages, and gets them back.
    let room = &rooms[0];
    let seen = ada.say(room, "before").await;
    bob.message_with_id(&seen).await;
    bob.leave(room).await;
    let missed = [
        ada.say(room, "missed 1").await,
        ada.say(room, "missed 2").await,
    ];
    let back = bob.join_since(room, Some(&seen)).await;
    let texts: Vec<String> = back.history.iter().map(|chat| chat.text.clone()).collect();
    assert_eq!(texts, ["missed 1", "missed 2"], "ids {missed:?}");
    let mut cy = nodes[1].client("cy").await;
    let late = cy.join(room).await;
    assert!(late.history.iter().any(|chat| chat.text == "before"));

    // A node killed: its members leave presence on the other node within the bound.
    ada.wait_count(room, 3, STEP).await;
    let mut nodes = nodes;
    nodes[1].kill();
    ada.wait_count(room, 1, Duration::from_secs(13)).await;
}

/// Waits until both nodes listen to [`ROOM`] on the master on `port`, as they must once they
/// noticed the cluster changed.
async fn wait_subscribed(cluster: &RedisCluster, port: u16) {
    let key = channel(ROOM);
    wait_until(
        "both nodes subscribe on the new master",
        Duration::from_secs(10),
        async || {
            let counts: Vec<(String, u64)> =
                cluster.query(port, &["PUBSUB", "SHARDNUMSUB", &key]).await;
            counts.first().is_some_and(|(_, count)| *count == 2)
        },
    )
    .await;
}

/// Two nodes on the cluster, users chatting in [`ROOM`].
async fn chatting(cluster: &RedisCluster) -> Vec<support::Node> {
    vec![
        cluster.node("node-0", &[]).await,
        cluster.node("node-1", &[]).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_loses_nothing_acknowledged() {
    let cluster = RedisCluster::start();
    let nodes = chatting(&cluster).await;
    let users = start_users(&nodes, 4, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let master = cluster.master_of(&channel(ROOM)).await;
    let promoted = cluster.failover(master, &channel(ROOM)).await;
    wait_subscribed(&cluster, promoted).await;
    let outcomes = outcomes(users).await;

    assert_exactly_once_in_order(&outcomes);
    for seen in &outcomes {
        assert_eq!(seen.reconnects, 0, "{} stayed connected", seen.name);
    }
    for node in &nodes {
        assert!(node.metric("chat_redis_resubscribes_total").await >= 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_slot_loses_nothing_acknowledged() {
    let cluster = RedisCluster::start();
    let nodes = chatting(&cluster).await;
    let users = start_users(&nodes, 4, Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let key = channel(ROOM);
    let from = cluster.master_of(&key).await;
    let to = cluster.ports()[..3]
        .iter()
        .copied()
        .find(|&port| port != from)
        .expect("another master");
    let slot = u16::try_from(slot_of(&key)).expect("a slot");
    cluster.migrate_slot(slot, from, to).await;
    assert_eq!(cluster.master_of(&key).await, to);
    wait_subscribed(&cluster, to).await;
    let outcomes = outcomes(users).await;

    assert_exactly_once_in_order(&outcomes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_delivery_resumes() {
    let cluster = RedisCluster::start();
    let nodes = chatting(&cluster).await;
    let key = channel(ROOM);
    let master = cluster.master_of(&key).await;
    let users = start_users(&nodes, 4, Duration::from_secs(14));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    cluster.kill_node(master);
    // Asked of a node still up: the first port may be the one killed.
    let alive = *cluster
        .ports()
        .iter()
        .find(|&&p| p != master)
        .expect("a node");
    let promoted = cluster.replica_of_dead(alive, master).await;
    wait_subscribed(&cluster, promoted).await;
    let outcomes = outcomes(users).await;

    // Messages acknowledged by the old master just before it died may not have reached its
    // replica; everything acknowledged once delivery resumed must arrive, exactly once.
    let resumed = killed + Duration::from_secs(10);
    assert_in_order_acked_after(&outcomes, Some(resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_limited_across_nodes_on_a_cluster() {
    let cluster = RedisCluster::start();
    let limits = ["--name-send-rate", "0.5", "--name-send-burst", "2"];
    let nodes = [
        cluster.node("node-0", &limits).await,
        cluster.node("node-1", &limits).await,
    ];
    let mut here = nodes[0].client("ada").await;
    let mut there = nodes[1].client("ada").await;
    here.join(ROOM).await;
    there.join(ROOM).await;
    here.say(ROOM, "one").await;
    there.say(ROOM, "two").await;
    // The third send of the name, from either node, is over its burst.
    let reference = here.send_chat(ROOM, "three").await;
    here.expect_error(ErrorCode::RateLimited, Some(&reference))
        .await;
    // Its keys share the name's slot, with an expiry.
    let key = Keyspace::new("chat", true).flood("ada") + "rate";
    let master = cluster.master_of(&key).await;
    let ttl: i64 = cluster.query(master, &["PTTL", &key]).await;
    assert!(ttl > 0, "PTTL {ttl}");
}
