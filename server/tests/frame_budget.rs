//! Bounded frames with real processes: a room whose history cannot fit in one `joined` frame
//! stays joinable (the newest history that fits, `recovered:false` when a `since` lost some),
//! and a node refuses a text limit whose messages it could not write.

mod support;

use std::time::Duration;

use support::{Client, NO_FLOOD_LIMITS, Node};

const ROOM: &str = "pasted-logs";
/// A full default history.
const MESSAGES: usize = 100;

/// Control characters that JSON writes as six bytes each (`\u0001`); `\b`, `\t`, `\n`, `\f`
/// and `\r` have two-byte escapes and are left out.
fn six_byte_char(index: usize) -> char {
    let escaped: Vec<u8> = (0x01..=0x1f)
        .filter(|b| !matches!(b, 0x08..=0x0a | 0x0c | 0x0d))
        .collect();
    char::from(escaped[index % escaped.len()])
}

/// 4096 bytes of control characters, the default largest text, different for every `index`
/// (so the debounce does not mind them): about 24 KiB once escaped.
fn control_text(index: usize) -> String {
    let mut text = String::from(six_byte_char(index / 26));
    text.push(six_byte_char(index % 26));
    text.extend(std::iter::repeat_n('\u{1}', 4094));
    text
}

/// A node with default limits (flood control off, to fill a room quickly) and a room holding
/// a full history of the largest, most escaped texts; the sender and the messages' ids.
async fn node_with_full_room() -> (Node, Client, Vec<String>) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(NO_FLOOD_LIMITS);
    let node = Node::spawn(&args, &[]).await;
    let mut alice = node.client("alice").await;
    alice.join(ROOM).await;
    let mut ids = Vec::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        ids.push(alice.say(ROOM, &control_text(index)).await);
    }
    (node, alice, ids)
}

fn history_ids(history: &[support::Chat]) -> Vec<&str> {
    history.iter().map(|chat| chat.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_escaped_text_stays_joinable() {
    let (node, mut alice, ids) = node_with_full_room().await;

    let mut bob = node.client("bob").await;
    let joined = bob.join(ROOM).await;
    let kept = joined.history.len();
    assert!(
        (8..MESSAGES).contains(&kept),
        "history of {kept} messages: as many of the newest as fit"
    );
    assert_eq!(history_ids(&joined.history), ids[MESSAGES - kept..]);
    let first_kept = MESSAGES - kept;
    assert!(
        joined
            .history
            .iter()
            .zip(first_kept..)
            .all(|(chat, index)| chat.text == control_text(index)),
        "history texts arrive whole"
    );
    assert_eq!(joined.recovered, None);
    assert_eq!(joined.members, ["alice", "bob"]);
    assert_eq!(node.metric("chat_joined_trimmed_total").await, 1.0);

    // Live messages follow, and the connection stays up.
    support::exchange(&mut alice, ROOM, &control_text(MESSAGES), &mut [&mut bob]).await;
    assert_eq!(node.metric("chat_oversize_frame_closes_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_join_that_does_not_fit_says_not_recovered() {
    let (node, mut alice, ids) = node_with_full_room().await;

    let mut bob = node.client("bob").await;
    let joined = bob.join_since(ROOM, Some(&ids[0])).await;
    assert_eq!(joined.recovered, Some(false));
    let kept = joined.history.len();
    assert!((8..MESSAGES - 1).contains(&kept), "{kept} messages");
    assert_eq!(history_ids(&joined.history), ids[MESSAGES - kept..]);

    // What fits is still recovered in full.
    let mut carol = node.client("carol").await;
    let joined = carol.join_since(ROOM, Some(&ids[MESSAGES - 3])).await;
    assert_eq!(joined.recovered, Some(true));
    assert_eq!(history_ids(&joined.history), ids[MESSAGES - 2..]);

    support::exchange(&mut alice, ROOM, "still here", &mut [&mut bob, &mut carol]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_limit_whose_messages_cannot_be_written_is_refused_at_start() {
    let (status, output) = Node::run_to_exit(
        &["--listen", "127.0.0.1:0", "--max-text-bytes", "100000"],
        &[],
        Duration::from_secs(5),
    )
    .await;
    assert!(!status.success(), "started anyway: {status}");
    assert!(
        output.contains("lower --max-text-bytes to at most"),
        "the error should name the flag to lower; output:\n{output}"
    );
}
