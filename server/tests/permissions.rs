//! Room permissions from tokens with real nodes: private rooms need a token that names them,
//! a `publish` claim makes other rooms read-only, direct-message rooms are for their two users
//! only, and without `--auth-secret` private and direct-message rooms are refused, never open.

mod support;

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use serde_json::json;
use support::{AUTH_SECRET, Client, Node, QUIET, expect_unauthorized, jwt, now_secs, unique};

async fn node_with_tokens() -> Node {
    Node::spawn(
        &["--listen", "127.0.0.1:0"],
        &[("CHAT_AUTH_SECRET", AUTH_SECRET)],
    )
    .await
}

/// A client of `node` holding a token for `name` with `claims` besides `sub` and `exp`.
async fn holder(node: &Node, name: &str, claims: serde_json::Value) -> Client {
    let mut all = json!({"sub": name, "exp": now_secs() + 600});
    for (claim, value) in claims.as_object().expect("claims are an object") {
        all[claim] = value.clone();
    }
    let token = jwt(AUTH_SECRET, all);
    Client::connect(&format!("ws://{}/ws?token={token}", node.addr())).await
}

/// Sends a `join` of `room` and expects the error `code` with its ref.
async fn refused_join(client: &mut Client, room: &str, code: ErrorCode) {
    let reference = unique("join-");
    client
        .send_frame(&ClientFrame::Join {
            room: room.into(),
            since: None,
            reference: Some(reference.as_str().into()),
        })
        .await;
    client.expect_error(code, Some(&reference)).await;
}

async fn forbidden(node: &Node, rule: &str) -> f64 {
    node.metric(&format!(r#"chat_forbidden_total{{rule="{rule}"}}"#))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_need_a_token_that_names_them_and_publish_claims_make_rooms_read_only() {
    let node = node_with_tokens().await;
    let room = "private.board";
    let mut outsider = holder(&node, "eve", json!({})).await;
    refused_join(&mut outsider, room, ErrorCode::Forbidden).await;
    let mut narrow = holder(&node, "carl", json!({"rooms": ["private.other", "lobby"]})).await;
    refused_join(&mut narrow, room, ErrorCode::Forbidden).await;
    assert_eq!(forbidden(&node, "private").await, 2.0);

    let mut member = holder(&node, "ada", json!({"rooms": ["private.*", "news"]})).await;
    member.join(room).await;
    member.say(room, "board meeting at noon").await;
    // `rooms` also bounds the open rooms.
    refused_join(&mut member, "lobby", ErrorCode::Forbidden).await;
    assert_eq!(forbidden(&node, "not_in_rooms").await, 1.0);

    // A reader of `news`: may join and read, not send, edit, delete or type.
    let mut reader = holder(&node, "rob", json!({"rooms": ["news"], "publish": []})).await;
    reader.join("news").await;
    member.join("news").await;
    let id = member.say("news", "read all about it").await;
    assert_eq!(reader.message_with_id(&id).await.text, "read all about it");
    let reference = reader.send_chat("news", "letting myself in").await;
    reader
        .expect_error(ErrorCode::Forbidden, Some(&reference))
        .await;
    let reference = unique("edit-");
    reader
        .send_frame(&ClientFrame::Delete {
            room: "news".into(),
            id: id.as_str().into(),
            reference: Some(reference.as_str().into()),
        })
        .await;
    reader
        .expect_error(ErrorCode::Forbidden, Some(&reference))
        .await;
    reader
        .send_frame(&ClientFrame::Typing {
            room: "news".into(),
        })
        .await;
    assert!(matches!(
        reader.recv().await,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    member.expect_silence(QUIET).await;
    assert_eq!(forbidden(&node, "read_only").await, 3.0);
    assert_eq!(
        node.metric(r#"chat_errors_total{code="forbidden"}"#).await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_room_is_for_its_two_users_only() {
    let node = node_with_tokens().await;
    let room = "dm.ada.bob";
    let mut ada = holder(&node, "ada", json!({"rooms": ["lobby"], "publish": []})).await;
    let mut bob = holder(&node, "bob", json!({})).await;
    ada.join(room).await;
    bob.join(room).await;
    let id = ada.say(room, "just between us").await;
    assert_eq!(bob.message_with_id(&id).await.text, "just between us");

    // A third user cannot join, read its members or its history, even with `*` claims.
    let mut eve = holder(&node, "eve", json!({"rooms": ["*"]})).await;
    refused_join(&mut eve, room, ErrorCode::Forbidden).await;
    for other in ["dm.bob.ada", "dm.ada.ada", "dm.ada.bob.eve", "dm.ada"] {
        refused_join(&mut ada, other, ErrorCode::Forbidden).await;
    }
    let reference = unique("members-");
    eve.send_frame(&ClientFrame::Members {
        room: room.into(),
        after: None,
        reference: Some(reference.as_str().into()),
    })
    .await;
    eve.expect_error(ErrorCode::NotJoined, Some(&reference))
        .await;
    // Nor under a forged name without a token: the handshake itself is refused.
    expect_unauthorized(&format!("ws://{}/ws?name=ada", node.addr())).await;
    bob.say(room, "good").await;
    eve.expect_silence(QUIET).await;
    assert_eq!(forbidden(&node, "direct_message").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_private_and_direct_message_rooms_are_refused() {
    let node = Node::spawn(
        &["--listen", "127.0.0.1:0", "--private-prefix", "staff-"],
        &[],
    )
    .await;
    let mut ada = node.client("ada").await;
    for room in ["staff-room", "dm.ada.bob"] {
        refused_join(&mut ada, room, ErrorCode::Forbidden).await;
    }
    // The prefix is the configured one: `private.` is an ordinary room here.
    ada.join("private.notes").await;
    ada.join("lobby").await;
    ada.say("lobby", "open rooms stay open").await;
}
