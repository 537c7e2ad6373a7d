//! Presence across nodes: `joined` counts and lists the room's members on every node,
//! `presence` frames report arrivals and departures, and the members of a node that crashed
//! disappear within the documented bound. Real `redis-server` and `chat-server` processes.

mod support;

use std::time::{Duration, Instant};

use support::{Node, PresenceEvent, cluster};

/// The documented bound for a crashed node's members to disappear, plus slack for a loaded
/// test machine.
const CRASH_BOUND: Duration = Duration::from_secs(15);

/// Alice on node 0 and Bob on node 1 in "lobby", once Alice has seen Bob arrive.
async fn alice_and_bob(cluster: &support::Cluster) -> (support::Client, support::Client) {
    let mut alice = cluster.nodes[0].client("alice").await;
    alice.join("lobby").await;
    let mut bob = cluster.nodes[1].client("bob").await;
    bob.join("lobby").await;
    alice
        .wait_presence(PresenceEvent::Join, "bob", support::STEP)
        .await;
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_their_comings_and_goings_are_seen_on_every_node() {
    let cluster = cluster(2).await;
    let mut alice = cluster.nodes[0].client("alice").await;
    assert_eq!(alice.join("lobby").await.members, ["alice"]);

    let mut bob = cluster.nodes[1].client("bob").await;
    assert_eq!(bob.join("lobby").await.members, ["alice", "bob"]);
    alice
        .wait_presence(PresenceEvent::Join, "bob", support::STEP)
        .await;

    // Another room's members are not this room's.
    let mut carol = cluster.nodes[1].client("carol").await;
    assert_eq!(carol.join("elsewhere").await.members, ["carol"]);

    bob.leave("lobby").await;
    alice
        .wait_presence(PresenceEvent::Leave, "bob", support::STEP)
        .await;
    // A connection that just goes away leaves too.
    let mut dave = cluster.nodes[1].client("dave").await;
    dave.join("lobby").await;
    alice
        .wait_presence(PresenceEvent::Join, "dave", support::STEP)
        .await;
    drop(dave);
    alice
        .wait_presence(PresenceEvent::Leave, "dave", support::STEP)
        .await;
    let mut erin = cluster.nodes[0].client("erin").await;
    assert_eq!(erin.join("lobby").await.members, ["alice", "erin"]);
    assert!(carol.take_presence().is_empty(), "other rooms hear nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_crashed_node_disappear_within_the_bound() {
    let mut cluster = cluster(2).await;
    let mut alice = cluster.nodes[0].client("alice").await;
    alice.join("lobby").await;
    let mut victims = Vec::new();
    for name in ["bob", "carol"] {
        let mut victim = cluster.nodes[1].client(name).await;
        victim.join("lobby").await;
        alice
            .wait_presence(PresenceEvent::Join, name, support::STEP)
            .await;
        victims.push(victim);
    }

    let crashed = Instant::now();
    cluster.nodes[1].kill();
    for name in ["bob", "carol"] {
        alice
            .wait_presence(PresenceEvent::Leave, name, CRASH_BOUND)
            .await;
    }
    eprintln!(
        "members of the crashed node left after {:?}",
        crashed.elapsed()
    );
    let mut dave = cluster.nodes[0].client("dave").await;
    assert_eq!(dave.join("lobby").await.members, ["alice", "dave"]);
    alice.say("lobby", "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_its_id_clears_what_its_crash_left_behind() {
    let mut cluster = cluster(2).await;
    // Bob stays connected until his node dies.
    let (mut alice, _bob) = alice_and_bob(&cluster).await;
    cluster.nodes[1].kill();
    // Back at once, well before its old heartbeat would have expired.
    cluster.nodes[1] =
        support::Node::redis(&cluster.redis, "node-1", &[&support::key(support::KEY_A)]).await;
    alice
        .wait_presence(PresenceEvent::Leave, "bob", support::STEP)
        .await;
    let mut carol = cluster.nodes[1].client("carol").await;
    assert_eq!(carol.join("lobby").await.members, ["alice", "carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopping_gracefully_takes_its_members_along_at_once() {
    let mut cluster = cluster(2).await;
    let (mut alice, mut bob) = alice_and_bob(&cluster).await;
    cluster.nodes[1].sigterm();
    assert_eq!(bob.expect_close().await, chat_protocol::close::GOING_AWAY);
    alice
        .wait_presence(PresenceEvent::Leave, "bob", support::STEP)
        .await;
    cluster.nodes[1].wait_exit(support::STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_keeps_presence_in_memory() {
    let node = Node::memory().await;
    let mut alice = node.client("alice").await;
    alice.join("lobby").await;
    let mut bob = node.client("bob").await;
    assert_eq!(bob.join("lobby").await.members, ["alice", "bob"]);
    alice
        .wait_presence(PresenceEvent::Join, "bob", support::STEP)
        .await;
    drop(bob);
    alice
        .wait_presence(PresenceEvent::Leave, "bob", support::STEP)
        .await;
}

/// Members over two nodes, joining and leaving many at a time: the member list a late joiner
/// gets is exactly who is there. Prints the rates it reached. `PRESENCE_MEMBERS` sets the crowd
/// size (default 200; the figures in the README come from 5000 with a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stays_exact_under_churn() {
    let crowd: usize = std::env::var("PRESENCE_MEMBERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let churn = crowd / 2;
    // Paging through thousands of names takes more pages than the join budget allows at once.
    let cluster = support::cluster_with(2, &support::NO_FLOOD_LIMITS).await;
    let nodes = &cluster.nodes;
    let arrive = |name: String, i: usize| async move {
        let mut client = nodes[i % 2].client(&name).await;
        client.join("crowd").await;
        client
    };

    let started = Instant::now();
    let mut members = Vec::with_capacity(crowd);
    for chunk in (0..crowd).collect::<Vec<_>>().chunks(CONCURRENT_JOINS) {
        let joining = chunk.iter().map(|&i| arrive(format!("m{i:05}"), i));
        members.extend(futures::future::join_all(joining).await);
    }
    let joined = started.elapsed();

    // Churn: the first half leaves while as many newcomers join.
    let started = Instant::now();
    let mut newcomers = Vec::with_capacity(churn);
    for (chunk, leaving) in members[..churn].chunks_mut(CONCURRENT_JOINS).enumerate() {
        let count = leaving.len();
        let leaves = leaving.iter_mut().map(|member| member.leave("crowd"));
        let joins = (0..count).map(|j| {
            let i = chunk * CONCURRENT_JOINS + j;
            arrive(format!("n{i:05}"), i)
        });
        let (_, arrived) = futures::join!(
            futures::future::join_all(leaves),
            futures::future::join_all(joins)
        );
        newcomers.extend(arrived);
    }
    let churned = started.elapsed();
    eprintln!(
        "{crowd} joins in {joined:.2?} ({:.0}/s); {churn} leaves with {churn} joins in {churned:.2?} ({:.0} changes/s)",
        crowd as f64 / joined.as_secs_f64(),
        (2 * churn) as f64 / churned.as_secs_f64()
    );

    let mut observer = nodes[0].client("observer").await;
    let started = Instant::now();
    let joined = observer.join("crowd").await;
    eprintln!(
        "a join into a room of {} took {:.2?}",
        joined.count,
        started.elapsed()
    );
    let mut listed = joined.members;
    let mut more = joined.more_members;
    while more {
        let page = observer
            .members("crowd", listed.last().map(String::as_str))
            .await;
        listed.extend(page.members);
        more = page.more_members;
    }
    let mut expected: Vec<String> = (churn..crowd)
        .map(|i| format!("m{i:05}"))
        .chain((0..churn).map(|i| format!("n{i:05}")))
        .chain(["observer".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(joined.count as usize, expected.len());
    assert_eq!(listed.len(), expected.len());
    assert_eq!(listed, expected);
}

/// Joins in flight at once in the churn test.
const CONCURRENT_JOINS: usize = 50;

/// After Redis comes back empty, every node announces its members again and reads its rosters
/// again: a departure lost during the outage is forgotten, and counts are right on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rosters_are_read_again_after_redis_comes_back_empty() {
    let mut cluster = cluster(2).await;
    let (mut alice, _bob) = alice_and_bob(&cluster).await;
    let mut carol = cluster.nodes[1].client("carol").await;
    carol.join("lobby").await;
    alice.wait_count("lobby", 3, support::STEP).await;

    cluster.redis.kill();
    for node in &cluster.nodes {
        support::wait_until(
            "the node notices Redis is gone",
            support::STEP,
            async || node.status_of("/readyz").await == 503,
        )
        .await;
    }
    // Carol's departure cannot reach Redis now.
    drop(carol);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.restart().await;
    for node in &cluster.nodes {
        support::wait_until("the node is back", Duration::from_secs(15), async || {
            node.status_of("/readyz").await == 200
        })
        .await;
    }
    alice.wait_count("lobby", 2, Duration::from_secs(10)).await;
    let mut dave = cluster.nodes[0].client("dave").await;
    let joined = dave.join("lobby").await;
    assert_eq!(joined.members, ["alice", "bob", "dave"]);
    assert_eq!(joined.count, 3);
}

/// Two nodes whose first members of a room join at the same moment: each node's roster is
/// read while the other's member is on its way, and both end with both members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_members_joining_two_nodes_at_once_see_each_other() {
    let cluster = cluster(2).await;
    let mut alice = cluster.nodes[0].client("alice").await;
    let mut bob = cluster.nodes[1].client("bob").await;
    for round in 0..20 {
        let room = format!("race-{round}");
        let (a, b) = futures::join!(alice.join(&room), bob.join(&room));
        assert!(a.count >= 1 && b.count >= 1);
        alice.wait_count(&room, 2, support::STEP).await;
        bob.wait_count(&room, 2, support::STEP).await;
    }
}

/// A member that learned of someone from its `joined` learns that they left, even when they
/// left within the same presence interval as they were first reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_seen_in_joined_is_reported_gone_when_it_leaves_at_once() {
    let cluster = cluster(2).await;
    for round in 0..5 {
        let room = format!("brief-{round}");
        let mut alice = cluster.nodes[0].client("alice").await;
        alice.join(&room).await;
        let mut bob = cluster.nodes[1].client("bob").await;
        assert_eq!(bob.join(&room).await.members, ["alice", "bob"]);
        alice.leave(&room).await;
        bob.wait_presence(PresenceEvent::Leave, "alice", support::STEP)
            .await;
        bob.wait_count(&room, 1, support::STEP).await;
    }
}
