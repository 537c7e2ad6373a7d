//! History has an overall bound, not only one per room: the in-memory broker sweeps idle
//! rooms and caps how many keep history, and in Redis every key a node writes expires, so a
//! `volatile-*` maxmemory policy can make room and the node keeps working under it. Real
//! `chat-server` and `redis-server` processes; rooms are cycled the way a client (or an
//! attacker) would, through fresh names.

mod support;

use redis::AsyncCommands;
use support::{
    Client, KEY_A, NO_FLOOD_LIMITS, Node, QUIET, RedisServer, STEP, cluster, exchange, key, member,
    wait_until,
};

/// The rooms the in-memory broker keeps history for, as the node reports them.
async fn history_rooms(node: &Node) -> f64 {
    node.metric("chat_history_rooms").await
}

/// Joins `room`, says one thing there, and leaves: the room keeps history and no member.
async fn visit(client: &mut Client, room: &str) {
    client.join(room).await;
    client.say(room, "passing through").await;
    client.leave(room).await;
}

async fn memory_node(extra: &[&str]) -> Node {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(NO_FLOOD_LIMITS);
    args.extend(extra);
    Node::spawn(&args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_room_names_cannot_grow_the_memory_broker_beyond_its_cap() {
    const CAP: usize = 5;
    let node = memory_node(&["--history-max-rooms", &CAP.to_string()]).await;
    let mut stayer = node.client("stayer").await;
    stayer.join("home").await;
    let kept = stayer.say("home", "kept").await;
    let mut visitor = node.client("visitor").await;
    for n in 0..4 * CAP {
        visit(&mut visitor, &format!("fresh-{n}")).await;
        let held = history_rooms(&node).await;
        assert!(held <= CAP as f64, "{held} rooms keep history after {n}");
    }
    // The room with a member was never evicted: a joiner still gets its history.
    let mut joiner = node.client("joiner").await;
    let joined = joiner.join("home").await;
    let ids: Vec<&str> = joined.history.iter().map(|chat| chat.id.as_str()).collect();
    assert_eq!(ids, vec![kept.as_str()]);
    // The most recent rooms keep theirs.
    let recent = joiner.join(&format!("fresh-{}", 4 * CAP - 1)).await;
    assert_eq!(recent.history.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rooms_of_the_memory_broker_are_swept_without_being_touched() {
    let node = memory_node(&["--history-max-age-secs", "1"]).await;
    let mut visitor = node.client("visitor").await;
    for n in 0..5 {
        visit(&mut visitor, &format!("fresh-{n}")).await;
    }
    assert!(history_rooms(&node).await >= 1.0);
    // Nobody touches those rooms again: only the timer can drop them.
    wait_until("idle rooms are swept", 3 * STEP, async || {
        history_rooms(&node).await == 0.0
    })
    .await;
}

/// Every key in `redis` with its TTL in ms (`-1`: none; `-2`: expired since it was listed).
async fn keys_with_ttl(redis: &RedisServer) -> Vec<(String, i64)> {
    let mut connection = redis.connection().await;
    let keys: Vec<String> = connection.keys("*").await.expect("KEYS");
    let mut ttls = Vec::with_capacity(keys.len());
    for key in keys {
        let ttl: i64 = connection.pttl(&key).await.expect("PTTL");
        ttls.push((key, ttl));
    }
    ttls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_a_node_writes_in_redis_expires_and_presence_keys_are_renewed() {
    // Flood control on (its defaults), so that its keys are written too.
    let cluster = cluster(2).await;
    let [n0, n1] = [&cluster.nodes[0], &cluster.nodes[1]];
    let mut a = member(n0, "node-0", "a", "lobby").await;
    let mut b = member(n1, "node-1", "b", "lobby").await;
    exchange(&mut a, "lobby", "hello", &mut [&mut b]).await;
    exchange(&mut b, "lobby", "hi", &mut [&mut a]).await;
    b.join("side").await;
    b.say("side", "aside").await;

    let keys = keys_with_ttl(&cluster.redis).await;
    for kind in [
        "chat:room:lobby:history",
        "chat:room:lobby:presence",
        "chat:room:side:presence",
        "chat:nodes",
        "chat:node:node-0:rooms",
        "chat:node:node-1:rooms",
        "chat:flood:",
    ] {
        assert!(
            keys.iter().any(|(key, _)| key.starts_with(kind)),
            "no key {kind}* among {keys:?}"
        );
    }
    let lasting: Vec<&(String, i64)> = keys.iter().filter(|(_, ttl)| *ttl == -1).collect();
    assert!(lasting.is_empty(), "keys without a TTL: {lasting:?}");

    // A presence key about to expire is renewed by the next heartbeat of a node with a
    // member there, long before it goes.
    let mut connection = cluster.redis.connection().await;
    let presence = "chat:room:lobby:presence";
    let _: bool = connection.pexpire(presence, 5_000).await.expect("PEXPIRE");
    wait_until(
        "the heartbeat renews the presence key",
        2 * STEP,
        async || {
            let ttl: i64 = connection.pttl(presence).await.expect("PTTL");
            ttl > 60_000
        },
    )
    .await;
    exchange(&mut a, "lobby", "still here", &mut [&mut b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_working_when_redis_evicts_under_maxmemory() {
    let redis = RedisServer::start().await;
    let mut connection = redis.connection().await;
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .expect("INFO memory");
    let used: u64 = used
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .expect("used_memory");
    let limit = used + 4 * 1024 * 1024;
    for (name, value) in [
        ("maxmemory", limit.to_string()),
        ("maxmemory-policy", "volatile-lru".to_owned()),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut connection)
            .await
            .expect("CONFIG SET");
    }
    let mut args = vec!["--history-size", "10000", "--max-text-bytes", "16384"];
    args.extend(NO_FLOOD_LIMITS);
    let node = Node::redis_with(&redis, "node-0", &[&key(KEY_A)], &args).await;

    // 16 MB of history in fresh rooms, four times what Redis may hold.
    let mut filler = node.client("filler").await;
    let text = "x".repeat(16 * 1024);
    for n in 0..32 {
        let room = format!("filler-{n}");
        filler.join(&room).await;
        for _ in 0..32 {
            filler.say(&room, &text).await;
        }
        filler.leave(&room).await;
    }
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connection)
        .await
        .expect("INFO stats");
    let evicted: u64 = stats
        .lines()
        .find_map(|line| line.strip_prefix("evicted_keys:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("evicted_keys");
    assert!(
        evicted > 0,
        "Redis evicted nothing: the test did not apply pressure"
    );

    // Every send above was acked (`say` checks); new members still meet and chat.
    let mut a = member(&node, "node-0", "a", "after").await;
    let mut b = member(&node, "node-0", "b", "after").await;
    exchange(&mut a, "after", "still working", &mut [&mut b]).await;
    filler.expect_silence(QUIET).await;
}
