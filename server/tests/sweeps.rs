//! Sweeping dead nodes out of presence, room by room: a live node claims the sweep of a node
//! whose heartbeat expired and removes its members from every room, however many rooms, and
//! takes over a sweep whose claimer died before finishing it. Dead nodes are planted in a
//! real Redis as a crash would leave them; the sweeper is a real node process.

mod support;

use std::time::Duration;

use support::{KEY_A, Node, RedisServer, key, wait_until};

/// Beyond the heartbeat interval (3 s) and a sweep of a few hundred rooms, with slack.
const SWEPT_WITHIN: Duration = Duration::from_secs(15);

/// Leaves `node` in presence as a crash would: members in `rooms` rooms (and one member of a
/// live node beside each), its set of presence hashes, and no heartbeat.
async fn plant_dead_node(redis: &RedisServer, node: &str, rooms: usize) {
    let mut connection = redis.connection().await;
    let mut pipe = redis::pipe();
    for room in 0..rooms {
        let hash = format!("chat:room:{node}-room-{room}:presence");
        pipe.cmd("HSET")
            .arg(&hash)
            .arg(format!("{node}|1"))
            .arg("sealed")
            .arg(format!("{node}|2"))
            .arg("sealed")
            .arg("node-0|7")
            .arg("sealed")
            .ignore();
        pipe.cmd("SADD")
            .arg(format!("chat:node:{node}:rooms"))
            .arg(&hash)
            .ignore();
    }
    let _: () = pipe.query_async(&mut connection).await.expect("planted");
}

/// How many members of `node` are left in its rooms' presence, and whether its set is left.
async fn left_behind(redis: &RedisServer, node: &str, rooms: usize) -> (usize, bool) {
    let mut connection = redis.connection().await;
    let mut pipe = redis::pipe();
    for room in 0..rooms {
        pipe.cmd("HKEYS")
            .arg(format!("chat:room:{node}-room-{room}:presence"));
    }
    let keys: Vec<Vec<String>> = pipe.query_async(&mut connection).await.expect("HKEYS");
    for fields in &keys {
        assert!(
            fields.contains(&"node-0|7".to_owned()),
            "a live member was swept"
        );
    }
    let members = keys
        .iter()
        .flatten()
        .filter(|field| field.starts_with(&format!("{node}|")))
        .count();
    let set: bool = redis::cmd("EXISTS")
        .arg(format!("chat:node:{node}:rooms"))
        .query_async(&mut connection)
        .await
        .expect("EXISTS");
    (members, set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_are_swept_room_by_room_and_an_abandoned_sweep_is_taken_over() {
    let redis = RedisServer::start().await;
    // A node that crashed with members in more rooms than one round of the sweep takes.
    plant_dead_node(&redis, "crashed", 250).await;
    // A node whose sweep was claimed by a node that then died too: the claim ran out.
    plant_dead_node(&redis, "abandoned", 3).await;
    let mut connection = redis.connection().await;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg("chat:nodes")
        .arg(1)
        .arg("crashed")
        .ignore()
        .cmd("ZADD")
        .arg("chat:sweeps")
        .arg(1)
        .arg("abandoned")
        .ignore()
        .query_async(&mut connection)
        .await
        .expect("ZADD");

    let _node = Node::redis(&redis, "node-0", &[&key(KEY_A)]).await;
    for (dead, rooms) in [("crashed", 250), ("abandoned", 3)] {
        wait_until(&format!("node {dead} is swept"), SWEPT_WITHIN, async || {
            left_behind(&redis, dead, rooms).await == (0, false)
        })
        .await;
    }
    wait_until("no sweep is left under way", SWEPT_WITHIN, async || {
        let sweeps: Vec<String> = redis::cmd("ZRANGE")
            .arg("chat:sweeps")
            .arg(0)
            .arg(-1)
            .query_async(&mut redis.connection().await)
            .await
            .expect("ZRANGE");
        sweeps.is_empty()
    })
    .await;
}
