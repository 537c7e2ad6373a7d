//! Typing, edits and deletions with real nodes, on Redis across nodes and on the in-memory
//! broker: typing reaches the room's other members and never history; edits and deletions
//! reach every member, stay in history for later joins and `since` recovery, and only the
//! author may make them.

mod support;

use std::time::Duration;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use support::{Client, NO_FLOOD_LIMITS, Node, QUIET, cluster_with, member, unique};

const ROOM: &str = "lobby";

async fn typing(client: &mut Client, room: &str) {
    client
        .send_frame(&ClientFrame::Typing { room: room.into() })
        .await;
}

/// Edits `id` to `text` and returns the ref of the request.
async fn edit(client: &mut Client, id: &str, text: &str) -> String {
    let reference = unique("edit-");
    client
        .send_frame(&ClientFrame::Edit {
            room: ROOM.into(),
            id: id.into(),
            text: text.into(),
            reference: Some(reference.as_str().into()),
        })
        .await;
    reference
}

/// Deletes `id` and returns the ref of the request.
async fn delete(client: &mut Client, id: &str) -> String {
    let reference = unique("delete-");
    client
        .send_frame(&ClientFrame::Delete {
            room: ROOM.into(),
            id: id.into(),
            reference: Some(reference.as_str().into()),
        })
        .await;
    reference
}

/// The next `typing` frame, if one comes within `window`.
async fn typing_within(client: &mut Client, window: Duration) -> Option<ServerFrame<'static>> {
    client
        .recv_until_within(window, |frame| matches!(frame, ServerFrame::Typing { .. }))
        .await
}

/// The `edited` or `deleted` frame with id `id`.
async fn change_with_id(client: &mut Client, id: &str) -> ServerFrame<'static> {
    client
        .recv_until(&format!("change {id}"), |frame| match frame {
            ServerFrame::Edited { id: i, .. } | ServerFrame::Deleted { id: i, .. } => i == id,
            _ => false,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_members_on_other_nodes_and_never_history() {
    let cluster = cluster_with(2, &NO_FLOOD_LIMITS).await;
    let mut ada = member(&cluster.nodes[0], "node-0", "Ada", ROOM).await;
    let mut bob = member(&cluster.nodes[1], "node-1", "Bob", ROOM).await;
    let mut ada_too = member(&cluster.nodes[1], "node-1", "Ada", ROOM).await;
    let before = ada.say(ROOM, "before typing").await;

    typing(&mut ada, ROOM).await;
    match typing_within(&mut bob, Duration::from_secs(5)).await {
        Some(ServerFrame::Typing { room, from }) => assert_eq!((&*room, &*from), (ROOM, "Ada")),
        other => panic!("no typing frame on the other node: {other:?}"),
    }
    // Neither the typist nor another connection of the same name hears it.
    assert!(typing_within(&mut ada, QUIET).await.is_none());
    assert!(typing_within(&mut ada_too, QUIET).await.is_none());
    // More than one per 2 s is dropped silently: no frame, no error.
    typing(&mut ada, ROOM).await;
    assert!(typing_within(&mut bob, QUIET).await.is_none());
    ada.expect_silence(QUIET).await;
    let node = &cluster.nodes[0];
    assert_eq!(node.metric("chat_typing_sent_total").await, 1.0);
    assert_eq!(node.metric("chat_typing_dropped_total").await, 1.0);

    // Typing is not a message: the room's ids go on without a gap, history holds none.
    let after = ada.say(ROOM, "after typing").await;
    let (before_seq, after_seq) = (seq(&before), seq(&after));
    assert_eq!(after_seq, before_seq + 1, "{before} then {after}");
    let mut carl = cluster.nodes[1].client("Carl").await;
    let joined = carl.join_since(ROOM, Some(&before)).await;
    assert_eq!(joined.recovered, Some(true));
    assert_eq!(
        joined.history_frames.len(),
        1,
        "{:?}",
        joined.history_frames
    );
    let mut dave = cluster.nodes[0].client("Dave").await;
    let joined = dave.join(ROOM).await;
    assert!(
        joined
            .history_frames
            .iter()
            .all(|frame| matches!(frame, ServerFrame::Message { .. })),
        "{:?}",
        joined.history_frames
    );
    carl.expect_silence(QUIET).await;
}

fn seq(id: &str) -> u64 {
    let id: chat_protocol::MessageId = id.parse().expect("a message id");
    id.seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_reach_every_node_and_stay_in_history() {
    let cluster = cluster_with(2, &NO_FLOOD_LIMITS).await;
    let mut ada = member(&cluster.nodes[0], "node-0", "Ada", ROOM).await;
    let mut bob = member(&cluster.nodes[1], "node-1", "Bob", ROOM).await;
    let first = ada.say(ROOM, "helo").await;
    let second = ada.say(ROOM, "to be deleted").await;
    bob.messages(2).await;

    let reference = edit(&mut ada, &first, "hello").await;
    let edit_id = ada.ack(&reference).await;
    for client in [&mut ada, &mut bob] {
        match change_with_id(client, &edit_id).await {
            ServerFrame::Edited {
                from, target, text, ..
            } => assert_eq!((&*from, &*target, &*text), ("Ada", first.as_str(), "hello")),
            other => panic!("expected edited, got {other:?}"),
        }
    }
    let reference = delete(&mut ada, &second).await;
    let delete_id = ada.ack(&reference).await;
    match change_with_id(&mut bob, &delete_id).await {
        ServerFrame::Deleted { from, target, .. } => {
            assert_eq!((&*from, &*target), ("Ada", second.as_str()));
        }
        other => panic!("expected deleted, got {other:?}"),
    }

    // Anyone else's attempt is forbidden, whatever name the request claims.
    let reference = edit(&mut bob, &first, "Bob was here").await;
    bob.expect_error(ErrorCode::Forbidden, Some(&reference))
        .await;
    let reference = delete(&mut bob, &first).await;
    bob.expect_error(ErrorCode::Forbidden, Some(&reference))
        .await;
    // A deleted message, an unknown id, and a change itself cannot be changed.
    for target in [second.as_str(), "1-0", edit_id.as_str()] {
        let reference = edit(&mut ada, target, "again").await;
        ada.expect_error(ErrorCode::NotFound, Some(&reference))
            .await;
    }
    assert_eq!(
        cluster.nodes[1]
            .metric(r#"chat_forbidden_total{rule="not_author"}"#)
            .await,
        2.0
    );

    // A later join on either node, and a `since` recovery, see the changes after the originals.
    for node in [0, 1] {
        let mut carl = cluster.nodes[node].client(&unique("carl")).await;
        let joined = carl.join(ROOM).await;
        let ids: Vec<String> = joined.history_frames.iter().map(frame_id).collect();
        assert_eq!(ids, [&*first, &second, &edit_id, &delete_id], "node {node}");
        // What its author took back is not handed to whoever joins next.
        let texts: Vec<&str> = joined.history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["helo", ""], "node {node}");
    }
    let mut back = cluster.nodes[1].client("Bob").await;
    let joined = back.join_since(ROOM, Some(&second)).await;
    assert_eq!(joined.recovered, Some(true));
    let kinds: Vec<&str> = joined.history_frames.iter().map(kind).collect();
    assert_eq!(kinds, ["edited", "deleted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletions_and_typing_work_on_the_in_memory_broker() {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend(NO_FLOOD_LIMITS);
    let node = Node::spawn(&args, &[]).await;
    let mut ada = node.client("Ada").await;
    let mut bob = node.client("Bob").await;
    ada.join(ROOM).await;
    bob.join(ROOM).await;
    let id = ada.say(ROOM, "first draft").await;
    bob.message_with_id(&id).await;
    typing(&mut bob, ROOM).await;
    assert!(matches!(
        typing_within(&mut ada, Duration::from_secs(5)).await,
        Some(ServerFrame::Typing { .. })
    ));
    let reference = edit(&mut ada, &id, "final").await;
    let edit_id = ada.ack(&reference).await;
    assert_eq!(kind(&change_with_id(&mut bob, &edit_id).await), "edited");
    let reference = delete(&mut bob, &id).await;
    bob.expect_error(ErrorCode::Forbidden, Some(&reference))
        .await;
    let reference = delete(&mut ada, &id).await;
    let delete_id = ada.ack(&reference).await;
    assert_eq!(kind(&change_with_id(&mut bob, &delete_id).await), "deleted");
    let mut carl = node.client("Carl").await;
    let ids: Vec<String> = carl
        .join(ROOM)
        .await
        .history_frames
        .iter()
        .map(frame_id)
        .collect();
    assert_eq!(ids, [id, edit_id, delete_id]);
}

fn frame_id(frame: &ServerFrame<'_>) -> String {
    match frame {
        ServerFrame::Message { id, .. }
        | ServerFrame::Edited { id, .. }
        | ServerFrame::Deleted { id, .. } => id.to_string(),
        other => panic!("not a history frame: {other:?}"),
    }
}

fn kind(frame: &ServerFrame<'_>) -> &'static str {
    match frame {
        ServerFrame::Message { .. } => "message",
        ServerFrame::Edited { .. } => "edited",
        ServerFrame::Deleted { .. } => "deleted",
        _ => "other",
    }
}
