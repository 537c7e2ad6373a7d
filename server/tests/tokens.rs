//! Token authentication with real nodes: a session ends when its token does (close 4003), `nbf`,
//! `iss` and `aud` are checked at the handshake, and a node refuses to start with a secret too
//! short to be safe. The basics (valid, expired, forged tokens; bearer headers) are in
//! `limits.rs` with the other admission checks.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_protocol::close;
use serde_json::json;
use support::{AUTH_SECRET, Client, Node, expect_unauthorized, jwt, now_secs};

const ROOM: &str = "lobby";
/// The clock leeway a node grants on `exp`, during which a session also stays open.
const LEEWAY_SECS: u64 = 5;

async fn node_with_tokens(env: &[(&str, &str)]) -> Node {
    let mut env = env.to_vec();
    env.push(("CHAT_AUTH_SECRET", AUTH_SECRET));
    Node::spawn(&["--listen", "127.0.0.1:0"], &env).await
}

fn token_url(node: &Node, token: &str) -> String {
    format!("ws://{}/ws?token={token}", node.addr())
}

/// Seconds since the epoch, with their fraction.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Sleeps until the wall clock reads `unix_secs`.
async fn sleep_until_unix(unix_secs: u64) {
    let left = unix_secs as f64 - now();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_closed_with_4003_once_its_token_expires() {
    let node = node_with_tokens(&[]).await;
    let exp = now_secs() + 2;
    let short = jwt(AUTH_SECRET, json!({"sub": "ada", "exp": exp}));
    let long = jwt(AUTH_SECRET, json!({"sub": "bob", "exp": exp + 300}));
    let mut ada = Client::connect(&token_url(&node, &short)).await;
    let mut bob = Client::connect(&token_url(&node, &long)).await;
    ada.join(ROOM).await;
    bob.join(ROOM).await;

    // Within the leeway the token is still honoured, as it would be at a handshake.
    sleep_until_unix(exp + LEEWAY_SECS - 2).await;
    let id = ada.say(ROOM, "still signed in").await;
    bob.message_with_id(&id).await;

    assert_eq!(ada.expect_close().await, close::TOKEN_EXPIRED);
    let closed_at = now();
    assert!(
        closed_at >= (exp + LEEWAY_SECS) as f64 - 0.05,
        "closed {:.2} s before exp + leeway",
        (exp + LEEWAY_SECS) as f64 - closed_at
    );

    // The same token cannot open a new session; other sessions carry on.
    expect_unauthorized(&token_url(&node, &short)).await;
    bob.say(ROOM, "and I am still here").await;
    assert_eq!(node.metric(r#"chat_closes_total{code="4003"}"#).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_audience_and_not_before_are_checked_at_the_handshake() {
    const ISSUER: &str = "https://login.chat.test";
    let node =
        node_with_tokens(&[("CHAT_AUTH_ISSUER", ISSUER), ("CHAT_AUTH_AUDIENCE", "chat")]).await;
    let now = now_secs();
    let claims = |extra: serde_json::Value| {
        let mut claims = json!({"sub": "ada", "exp": now + 300});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        jwt(AUTH_SECRET, claims)
    };

    for accepted in [
        json!({"iss": ISSUER, "aud": "chat"}),
        json!({"iss": ISSUER, "aud": ["mail", "chat"], "nbf": now - 10}),
    ] {
        let client = Client::connect(&token_url(&node, &claims(accepted.clone()))).await;
        assert_eq!(client.name(), "ada", "{accepted}");
    }
    for refused in [
        json!({"iss": ISSUER, "aud": "chat", "nbf": now + 60}),
        json!({"aud": "chat"}),
        json!({"iss": "https://login.evil.test", "aud": "chat"}),
        json!({"iss": ISSUER}),
        json!({"iss": ISSUER, "aud": ["mail", "calendar"]}),
    ] {
        expect_unauthorized(&token_url(&node, &claims(refused))).await;
    }
    assert_eq!(
        node.metric(r#"chat_connections_refused_total{cause="unauthorized"}"#)
            .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_secret_is_refused_at_start_up_without_being_echoed() {
    const WEAK: &str = "weak-secret-marker";
    let (status, output) = Node::run_to_exit(
        &["--listen", "127.0.0.1:0"],
        &[("CHAT_AUTH_SECRET", WEAK)],
        Duration::from_secs(5),
    )
    .await;
    assert!(!status.success(), "started with a short secret: {status}");
    assert!(output.contains("at least 32 bytes"), "{output}");
    assert!(!output.contains(WEAK), "the secret was echoed: {output}");
}
