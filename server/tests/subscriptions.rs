//! How nodes use the backplane: one sender's messages keep their order on every node, a node
//! is subscribed to a room's channel exactly while the room has a local member (also under
//! concurrent joins and leaves), and a quick Redis restart resubscribes every room in use.

mod support;

use std::time::Duration;

use chat_protocol::ServerFrame;
use support::{Client, STEP, cluster, member, wait_until};

const ROOM: &str = "order";

async fn next_ack(client: &mut Client) -> (String, String) {
    match client
        .recv_until("an ack", |frame| matches!(frame, ServerFrame::Ack { .. }))
        .await
    {
        ServerFrame::Ack { reference, id } => {
            (reference.unwrap_or_default().into_owned(), id.into_owned())
        }
        _ => unreachable!("filtered for acks"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_sender_keeps_its_order_on_every_node() {
    const BURST: usize = 300;
    let cluster = support::cluster_with(3, &support::NO_FLOOD_LIMITS).await;
    let mut sender = member(&cluster.nodes[0], "node-0", "sender", ROOM).await;
    let mut near = member(&cluster.nodes[0], "node-0", "near", ROOM).await;
    let mut far = member(&cluster.nodes[1], "node-1", "far", ROOM).await;
    let mut farther = member(&cluster.nodes[2], "node-2", "farther", ROOM).await;

    // The whole burst goes out before any ack is read, so many publishes are in flight at once.
    let mut references = Vec::with_capacity(BURST);
    for i in 0..BURST {
        references.push(sender.send_chat(ROOM, &i.to_string()).await);
    }
    let mut ids = Vec::with_capacity(BURST);
    for expected in &references {
        let (reference, id) = next_ack(&mut sender).await;
        assert_eq!(&reference, expected, "acks come in request order");
        ids.push(id);
    }

    let texts: Vec<String> = (0..BURST).map(|i| i.to_string()).collect();
    for client in [&mut sender, &mut near, &mut far, &mut farther] {
        let got = client.messages(BURST).await;
        let got_texts: Vec<&str> = got.iter().map(|chat| chat.text.as_str()).collect();
        let got_ids: Vec<&str> = got.iter().map(|chat| chat.id.as_str()).collect();
        assert_eq!(got_texts, texts, "order of the burst");
        assert_eq!(got_ids, ids, "ids match the acks, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_subscribe_exactly_while_a_room_has_local_members() {
    let cluster = cluster(2).await;
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    let channel = "chat:room:refcount";
    assert_eq!(cluster.redis.subscribers(channel).await, 0);

    let mut first = member(n0, "node-0", "first", "refcount").await;
    assert_eq!(cluster.redis.subscribers(channel).await, 1);
    let mut second = member(n0, "node-0", "second", "refcount").await;
    assert_eq!(cluster.redis.subscribers(channel).await, 1, "one per node");
    let remote = member(n1, "node-1", "remote", "refcount").await;
    assert_eq!(cluster.redis.subscribers(channel).await, 2);

    first.leave("refcount").await;
    assert_eq!(
        cluster.redis.subscribers(channel).await,
        2,
        "node 0 still has a member"
    );
    second.leave("refcount").await;
    wait_for_subscribers(&cluster.redis, channel, 1).await;
    // A client that just disconnects counts as leaving.
    drop(remote);
    wait_for_subscribers(&cluster.redis, channel, 0).await;
    for node in [n0, n1] {
        wait_until("chat_rooms drops to 0", STEP, async || {
            node.metric("chat_rooms").await == 0.0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_and_leaves_leave_no_subscription_behind() {
    const CLIENTS: usize = 12;
    const ROUNDS: usize = 15;
    // Each churner joins and leaves faster than the join budget allows.
    let cluster = support::cluster_with(1, &["--join-rate", "0"]).await;
    let node = &cluster.nodes[0];
    let channel = "chat:room:churn";

    let churn = (0..CLIENTS).map(|i| async move {
        let mut client = node.client(&format!("churner-{i}")).await;
        for _ in 0..ROUNDS {
            client.join("churn").await;
            client.leave("churn").await;
        }
        client
    });
    let mut clients = futures::future::join_all(churn).await;
    wait_for_subscribers(&cluster.redis, channel, 0).await;
    assert_eq!(node.metric("chat_rooms").await, 0.0);

    // And the room still works afterwards.
    let (first, rest) = clients.split_first_mut().expect("clients");
    first.join("churn").await;
    rest[0].join("churn").await;
    assert_eq!(cluster.redis.subscribers(channel).await, 1);
    support::exchange(first, "churn", "still here", &mut [&mut rest[0]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_resubscribes_every_room_in_use() {
    let mut cluster = cluster(2).await;
    let rooms = ["north", "south", "east", "west"];
    let mut pairs = Vec::new();
    for room in rooms {
        let a = member(&cluster.nodes[0], "node-0", &format!("{room}-a"), room).await;
        let b = member(&cluster.nodes[1], "node-1", &format!("{room}-b"), room).await;
        pairs.push((a, b));
    }

    cluster.redis.kill();
    cluster.redis.restart().await;
    for room in rooms {
        wait_for_subscribers(&cluster.redis, &format!("chat:room:{room}"), 2).await;
    }
    for node in &cluster.nodes {
        wait_until(
            "the node is ready again",
            Duration::from_secs(10),
            async || node.status_of("/readyz").await == 200,
        )
        .await;
    }
    for ((a, b), room) in pairs.iter_mut().zip(rooms) {
        support::exchange(a, room, "after the restart", &mut [b]).await;
    }
}

async fn wait_for_subscribers(redis: &support::RedisServer, channel: &str, expected: i64) {
    wait_until(
        &format!("{channel} has {expected} subscriber(s)"),
        Duration::from_secs(10),
        async || redis.subscribers(channel).await == expected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_redis_refuses_fails_alone() {
    let redis = support::RedisServer::start().await;
    // The node's Redis user may subscribe to two rooms and publish to one of them only.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("node")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("resetchannels")
        .arg("&chat:room:open")
        .arg("&chat:room:readonly")
        .arg("+@all")
        .arg("-publish")
        .arg("(+publish &chat:room:open)")
        .query_async(&mut redis.connection().await)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://node:secret@127.0.0.1:{}/", redis.port());
    let key = support::key(support::KEY_A);
    let node = support::Node::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &url,
            "--node-id",
            "acl",
            "--key",
            &key,
        ],
        &[],
    )
    .await;
    wait_until("the node is ready", STEP, async || {
        node.status_of("/readyz").await == 200
    })
    .await;

    let mut client = node.client("tester").await;
    // Joining announces the member on the room's channel: refused here for both rooms.
    for room in ["forbidden", "readonly"] {
        let reference = format!("join-{room}");
        client
            .send_frame(&chat_protocol::ClientFrame::Join {
                room: room.into(),
                since: None,
                reference: Some(reference.as_str().into()),
            })
            .await;
        client
            .expect_error(chat_protocol::ErrorCode::Unavailable, Some(&reference))
            .await;
    }
    let refused = client.send_chat("readonly", "not allowed here").await;
    client
        .expect_error(chat_protocol::ErrorCode::NotJoined, Some(&refused))
        .await;

    // The refusals did not cost the node its connection: the allowed room works.
    let mut peer = member(&node, "acl", "peer", "open").await;
    client.join("open").await;
    support::exchange(&mut client, "open", "allowed", &mut [&mut peer]).await;
    assert_eq!(node.status_of("/readyz").await, 200);
    assert_eq!(node.metric("chat_redis_reconnects_total").await, 0.0);
}
