//! Big rooms: thousands of members in one room over several nodes. `joined` stays bounded and
//! counts everyone, `members` pages through every name exactly once, presence reaches members
//! coalesced (at most one frame per room per interval) with counts that converge after churn,
//! and a killed node's members leave the count within the documented bound. Real
//! `redis-server` and `chat-server` processes.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use support::{Client, Node, PresenceEvent, cluster_with};

/// Clients connecting and joining at once.
const CONCURRENT: usize = 100;
/// The nodes' default `--presence-interval-ms`.
const INTERVAL: Duration = Duration::from_millis(250);
/// The documented bound for a crashed node's members to leave, plus slack for a loaded
/// machine.
const CRASH_BOUND: Duration = Duration::from_secs(20);

/// `names` connected round-robin to `nodes` and joined to `room`, `CONCURRENT` at a time.
async fn crowd(nodes: &[&Node], room: &str, names: &[String]) -> Vec<Client> {
    let mut clients = Vec::with_capacity(names.len());
    for (chunk_at, chunk) in names.chunks(CONCURRENT).enumerate() {
        let joining = chunk.iter().enumerate().map(|(i, name)| async move {
            let node = nodes[(chunk_at * CONCURRENT + i) % nodes.len()];
            let mut client = node.client(name).await;
            client.join(room).await;
            client
        });
        clients.extend(join_all(joining).await);
    }
    clients
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:05}")).collect()
}

/// Every name of `room`, from `joined` on through `members` pages.
async fn every_name(
    client: &mut Client,
    first: Vec<String>,
    more: bool,
    room: &str,
) -> Vec<String> {
    let mut listed = first;
    let mut more = more;
    while more {
        let page = client
            .members(room, listed.last().map(String::as_str))
            .await;
        assert!(
            page.members.len() <= 100,
            "a page holds at most --members-max"
        );
        listed.extend(page.members);
        more = page.more_members;
    }
    listed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_stays_bounded_and_pages_reach_every_member_of_a_room_of_thousands() {
    let cluster = cluster_with(2, &support::NO_FLOOD_LIMITS).await;
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let crowd_names = names("m", 3000);
    let started = Instant::now();
    let _crowd = crowd(&nodes, "big", &crowd_names).await;
    eprintln!("3000 joins over 2 nodes took {:.2?}", started.elapsed());

    // Sorts after the crowd, so the first page is the crowd's first names.
    let mut late = nodes[0].client("zed").await;
    let started = Instant::now();
    let joined = late.join("big").await;
    eprintln!("a join into a room of 3000 took {:.2?}", started.elapsed());
    assert_eq!(
        joined.count, 3001,
        "everyone, on both nodes, the joiner too"
    );
    assert_eq!(joined.members.len(), 100, "--members-max names");
    assert!(joined.more_members);
    assert_eq!(
        joined.members,
        crowd_names[..100],
        "the first names in order"
    );

    let listed = every_name(&mut late, joined.members, joined.more_members, "big").await;
    let mut expected = crowd_names.clone();
    expected.push("zed".to_owned());
    expected.sort();
    assert_eq!(listed, expected, "every name once, in order");

    // A member of another node sees the same count.
    let mut other = nodes[1].client("other").await;
    assert_eq!(other.join("big").await.count, 3002);
    // The room's first member on a new node asks for a page before its `joined` came: the
    // page waits for the node's roster of the room.
    let fresh = Node::redis_with(
        &cluster.redis,
        "node-2",
        &[&support::key(support::KEY_A)],
        &support::NO_FLOOD_LIMITS,
    )
    .await;
    let mut eager = fresh.client("eager").await;
    for frame in [
        chat_protocol::ClientFrame::Join {
            room: "big".into(),
            since: None,
            reference: Some("j".into()),
        },
        chat_protocol::ClientFrame::Members {
            room: "big".into(),
            after: Some("m02999".into()),
            reference: Some("p".into()),
        },
    ] {
        eager.send_frame(&frame).await;
    }
    match eager.reply_to(Some("p")).await {
        chat_protocol::ServerFrame::Members { count, members, .. } => {
            assert_eq!(count, 3003, "everyone: the roster had loaded");
            assert_eq!(members, ["other", "zed"]);
        }
        other => panic!("expected a page, got {other:?}"),
    }

    // Pages of a room the connection is not in are refused.
    let mut outsider = nodes[1].client("outsider").await;
    outsider
        .send_frame(&chat_protocol::ClientFrame::Members {
            room: "big".into(),
            after: None,
            reference: Some("m1".into()),
        })
        .await;
    outsider
        .expect_error(chat_protocol::ErrorCode::NotJoined, Some("m1"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_reaches_members_coalesced_with_the_count_on_every_node() {
    let cluster = cluster_with(2, &support::NO_FLOOD_LIMITS).await;
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let mut watcher = nodes[0].client("watcher").await;
    watcher.join("storm").await;
    let mut far_watcher = nodes[1].client("far-watcher").await;
    far_watcher.join("storm").await;
    watcher.read_presence_for(2 * INTERVAL).await;

    // The watcher reads while the storm goes on, so frames are timed as they come.
    let watching = tokio::spawn(async move {
        watcher
            .wait_count("storm", 602, Duration::from_secs(30))
            .await;
        watcher
    });
    let started = Instant::now();
    let storm_names = names("s", 600);
    let storm = crowd(&nodes, "storm", &storm_names).await;
    let storm_took = started.elapsed();
    let mut watcher = watching.await.expect("the watcher saw everyone");
    far_watcher
        .wait_count("storm", 602, Duration::from_secs(5))
        .await;
    let frames = watcher.presence_frames("storm");
    let window = frames.last().unwrap().0 - frames[0].0;
    eprintln!(
        "600 joins in {storm_took:.2?}: {} presence frames over {window:.2?}",
        frames.len()
    );
    // At most one frame per interval (a tick may fire early after a slow one: half an
    // interval of slack per frame).
    for pair in frames.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= INTERVAL / 2,
            "frames {:?} apart",
            pair[1].0 - pair[0].0
        );
    }
    assert!(
        frames.len() < 600 / 4,
        "{} frames for 600 joins",
        frames.len()
    );
    // Names came along (the room is below --presence-names-max), each once.
    let joined: Vec<String> = watcher
        .take_presence()
        .into_iter()
        .filter(|(event, _)| *event == PresenceEvent::Join)
        .map(|(_, name)| name)
        .filter(|name| name.starts_with('s'))
        .collect();
    assert_eq!(joined.len(), 600);
    drop(storm);
    watcher.wait_count("storm", 2, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_converge_after_churn_and_a_killed_node_leaves_the_count() {
    let mut cluster = cluster_with(2, &support::NO_FLOOD_LIMITS).await;
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let stayers = crowd(&nodes, "churn", &names("a", 400)).await;
    let mut watchers = crowd(&[nodes[0]], "churn", &names("w", 10)).await;
    let mut churning = crowd(&nodes, "churn", &names("c", 200)).await;

    // Two seconds of churn: every 100 ms, 20 members leave (half leave the room, half just
    // drop the connection) and 20 newcomers join.
    let mut newcomer = 0;
    for round in 0..20 {
        let leaving: Vec<Client> = churning.drain(..20).collect();
        let mut leaves = Vec::new();
        for (i, mut client) in leaving.into_iter().enumerate() {
            if i % 2 == 0 {
                leaves.push(async move { client.leave("churn").await });
            }
        }
        join_all(leaves).await;
        let fresh: Vec<String> = (0..20).map(|i| format!("n{:05}", newcomer + i)).collect();
        newcomer += 20;
        churning.extend(crowd(&nodes, "churn", &fresh).await);
        if round % 5 == 0 {
            for watcher in &mut watchers {
                watcher.read_presence_for(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = Instant::now();
    let truth = (stayers.len() + watchers.len() + churning.len()) as u64;
    for watcher in &mut watchers {
        watcher
            .wait_count("churn", truth, Duration::from_secs(5))
            .await;
    }
    eprintln!(
        "after churn, every watcher's count was {truth} within {:.2?}",
        stopped.elapsed()
    );

    // Node 1 dies with half the room: its members leave everyone's count.
    let on_node_0 = (stayers.len() + churning.len()) as u64 / 2 + watchers.len() as u64;
    drop(nodes);
    let killed = Instant::now();
    cluster.nodes[1].kill();
    let watcher = &mut watchers[0];
    watcher.wait_count("churn", on_node_0, CRASH_BOUND).await;
    eprintln!(
        "the killed node's members left the count after {:.2?}",
        killed.elapsed()
    );
    let mut late = cluster.nodes[0].client("late").await;
    assert_eq!(late.join("churn").await.count, on_node_0 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_pages_share_the_join_budget() {
    let node = Node::memory().await;
    let mut pager = node.client("pager").await;
    pager.join("budget").await;
    // The join took one of the burst of 20; the rest go to pages, then one is refused.
    for _ in 0..19 {
        assert_eq!(pager.members("budget", None).await.count, 1);
    }
    pager
        .send_frame(&chat_protocol::ClientFrame::Members {
            room: "budget".into(),
            after: None,
            reference: Some("over".into()),
        })
        .await;
    match pager.reply_to(Some("over")).await {
        chat_protocol::ServerFrame::Error {
            code: chat_protocol::ErrorCode::RateLimited,
            retry_after_ms: Some(wait),
            ..
        } => assert!(wait > 0 && wait <= 1000, "{wait}"),
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // The connection carries on once the budget allows.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(pager.members("budget", None).await.members, ["pager"]);
}
