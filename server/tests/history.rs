//! History and `since`: a joiner gets the room's recent messages, a returning client exactly
//! what it missed, and message ids count up within a room. Real `redis-server` and
//! `chat-server` processes, plus the in-memory broker for a single node.

mod support;

use chat_protocol::{ErrorCode, MessageId};
use support::{Chat, Client, Node, RedisServer, redis_node_args, unique};

fn texts(chats: &[Chat]) -> Vec<&str> {
    chats.iter().map(|chat| chat.text.as_str()).collect()
}

fn parse(id: &str) -> MessageId {
    id.parse()
        .unwrap_or_else(|_| panic!("{id:?} is not a message id"))
}

/// Two nodes on one Redis keeping `history_size` messages per room.
async fn pair(history_size: usize) -> (RedisServer, Node, Node) {
    let redis = RedisServer::start().await;
    let key = support::key(support::KEY_A);
    let mut nodes = Vec::new();
    for id in ["node-0", "node-1"] {
        let mut args = redis_node_args(&redis, id, &[&key]);
        args.extend(["--history-size".to_owned(), history_size.to_string()]);
        let node = Node::spawn(&args, &[]).await;
        support::wait_until("the node is ready", support::STEP, async || {
            node.status_of("/readyz").await == 200
        })
        .await;
        nodes.push(node);
    }
    let second = nodes.pop().expect("two nodes");
    let first = nodes.pop().expect("two nodes");
    (redis, first, second)
}

/// `count` messages from `sender` into `room`; their ids.
async fn say_many(sender: &mut Client, room: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(sender.say(room, &format!("m{i}")).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_count_up_by_one_within_a_room() {
    let (_redis, node, _) = pair(100).await;
    let mut alice = node.client("alice").await;
    alice.join("lobby").await;
    alice.join("other").await;
    let ids = say_many(&mut alice, "lobby", 5).await;
    let other = parse(&alice.say("other", "elsewhere").await);
    let first = parse(&ids[0]);
    for (offset, id) in ids.iter().enumerate() {
        assert_eq!(
            parse(id),
            MessageId {
                epoch: first.epoch,
                seq: first.seq + offset as u64
            }
        );
    }
    assert_eq!(other.seq, 0, "every room counts on its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_gets_the_most_recent_messages_across_nodes() {
    let (_redis, first, second) = pair(5).await;
    let mut alice = first.client("alice").await;
    let empty = alice.join("lobby").await;
    assert!(empty.history.is_empty());
    assert_eq!(empty.recovered, None);
    let ids = say_many(&mut alice, "lobby", 8).await;

    let mut bob = second.client("bob").await;
    let joined = bob.join("lobby").await;
    assert_eq!(texts(&joined.history), ["m3", "m4", "m5", "m6", "m7"]);
    let history_ids: Vec<&str> = joined.history.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(history_ids, ids[3..]);
    assert!(
        joined
            .history
            .iter()
            .all(|c| c.from == "alice" && c.room == "lobby")
    );
    assert_eq!(joined.recovered, None);
    // History is not delivered again live.
    support::exchange(&mut alice, "lobby", "after", &mut [&mut bob]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_returns_exactly_what_came_after_it() {
    let (_redis, first, second) = pair(100).await;
    let mut alice = first.client("alice").await;
    alice.join("lobby").await;
    let ids = say_many(&mut alice, "lobby", 6).await;

    let mut bob = second.client("bob").await;
    let joined = bob.join_since("lobby", Some(&ids[2])).await;
    assert_eq!(joined.recovered, Some(true));
    assert_eq!(texts(&joined.history), ["m3", "m4", "m5"]);
    support::exchange(&mut alice, "lobby", "live", &mut [&mut bob]).await;

    let mut carol = second.client("carol").await;
    let caught_up = carol.join_since("lobby", Some(&ids[5])).await;
    assert_eq!(caught_up.recovered, Some(true));
    assert_eq!(texts(&caught_up.history), ["live"]);
    carol.expect_silence(support::QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_beyond_history_says_not_recovered() {
    let (_redis, first, second) = pair(3).await;
    let mut alice = first.client("alice").await;
    alice.join("lobby").await;
    let ids = say_many(&mut alice, "lobby", 10).await;

    let mut bob = second.client("bob").await;
    let joined = bob.join_since("lobby", Some(&ids[0])).await;
    assert_eq!(joined.recovered, Some(false));
    assert_eq!(texts(&joined.history), ["m7", "m8", "m9"]);

    // An id from a history that no longer exists (another epoch) cannot be recovered either.
    let mut carol = second.client("carol").await;
    let joined = carol.join_since("lobby", Some("1-5")).await;
    assert_eq!(joined.recovered, Some(false));
    assert_eq!(texts(&joined.history), ["m7", "m8", "m9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_that_is_not_an_id_is_a_bad_request() {
    let node = Node::memory().await;
    let mut alice = node.client("alice").await;
    let reference = unique("join-");
    alice
        .send_raw_text(&format!(
            r#"{{"type":"join","room":"lobby","since":"yesterday","ref":"{reference}"}}"#
        ))
        .await;
    alice
        .expect_error(ErrorCode::BadRequest, Some(&reference))
        .await;
    alice.join("lobby").await;
    alice.say("lobby", "still fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_keeps_history_in_memory() {
    let node = Node::spawn(&["--listen", "127.0.0.1:0", "--history-size", "2"], &[]).await;
    let mut alice = node.client("alice").await;
    alice.join("lobby").await;
    let ids = say_many(&mut alice, "lobby", 4).await;
    let mut bob = node.client("bob").await;
    let joined = bob.join("lobby").await;
    assert_eq!(texts(&joined.history), ["m2", "m3"]);
    assert_eq!(joined.members, ["alice", "bob"]);
    let mut carol = node.client("carol").await;
    let since = carol.join_since("lobby", Some(&ids[2])).await;
    assert_eq!(
        (since.recovered, texts(&since.history)),
        (Some(true), vec!["m3"])
    );
}

/// A node remembers each room's epoch and passes it with its publishes instead of having
/// Redis read the stream; the stream still decides when the two disagree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_redis_lost_begins_a_new_epoch_whatever_a_node_remembers() {
    let (redis, node, other) = pair(10).await;
    let mut alice = node.client("alice").await;
    let mut bob = other.client("bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let epoch = |id: &str| id.split_once('-').expect("<epoch>-<seq>").0.to_owned();
    let first = alice.say("lobby", &unique("before ")).await;
    let second = bob.say("lobby", &unique("before ")).await;
    assert_eq!(epoch(&second), epoch(&first));

    // The stream goes (evicted, say) while both nodes remember its epoch.
    let mut connection = redis.connection().await;
    let _: redis::Value = redis::cmd("DEL")
        .arg("chat:room:lobby:history")
        .query_async(&mut connection)
        .await
        .expect("DEL");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let after = alice.say("lobby", &unique("after ")).await;
    assert_ne!(epoch(&after), epoch(&first), "a new history, a new epoch");
    assert!(after.ends_with("-0"), "{after}");

    // The other node still remembers the old, earlier epoch: the stream's wins.
    let later = bob.say("lobby", &unique("later ")).await;
    assert_eq!(epoch(&later), epoch(&after));
    assert!(later.ends_with("-1"), "{later}");
    let last = alice.say("lobby", &unique("last ")).await;
    assert_eq!((epoch(&last), last.ends_with("-2")), (epoch(&after), true));
}
