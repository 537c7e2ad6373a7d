//! Connection admission with real processes: tokens, origins, connection caps per node and per
//! address, and client addresses behind trusted proxies. Each refusal is an HTTP answer before
//! the upgrade (or an `unauthorized` error and 1008), counted by cause.

mod support;

use futures::StreamExt;
use support::{Client, Node, STEP, expect_unauthorized, jwt, wait_until};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ROOM: &str = "lobby";

async fn memory_node(extra: &[&str]) -> Node {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Node::spawn(&args, &[]).await
}

type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket handshake with extra request headers: the socket, or the HTTP status it got.
async fn handshake(url: &str, headers: &[(&str, &str)]) -> Result<RawWs, u16> {
    let mut request = url.into_client_request().expect("valid ws url");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("handshake with {url}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_auth_secret_only_valid_tokens_get_a_name() {
    const SECRET: &str = support::AUTH_SECRET;
    let node = Node::spawn(
        &["--listen", "127.0.0.1:0"],
        &[("CHAT_AUTH_SECRET", SECRET)],
    )
    .await;
    let now = support::now_secs();
    let valid = jwt(SECRET, serde_json::json!({"sub": "ada", "exp": now + 300}));
    let url = |query: &str| format!("ws://{}/ws?{query}", node.addr());

    let mut ada = Client::connect(&url(&format!("token={valid}"))).await;
    assert_eq!(ada.name(), "ada");
    ada.join(ROOM).await;
    ada.say(ROOM, "signed in").await;
    let mut same = Client::connect(&url(&format!("token={valid}&name=ada"))).await;
    assert_eq!(same.name(), "ada");
    same.join(ROOM).await;

    let expired = jwt(SECRET, serde_json::json!({"sub": "ada", "exp": now - 600}));
    let forged = jwt("guess", serde_json::json!({"sub": "ada", "exp": now + 300}));
    let refused = [
        url("name=ada"),
        url(&format!("token={expired}")),
        url(&format!("token={forged}")),
        url(&format!("token={valid}&name=eve")),
        url("token=not.a.jwt"),
    ];
    for url in &refused {
        expect_unauthorized(url).await;
    }
    assert_eq!(
        node.metric(r#"chat_connections_refused_total{cause="unauthorized"}"#)
            .await,
        refused.len() as f64
    );
    // A bearer header works for clients that can set one.
    let bearer = format!("Bearer {valid}");
    let mut ws = handshake(&url(""), &[("authorization", &bearer)])
        .await
        .expect("bearer token accepted");
    let welcome = ws.next().await.expect("a frame").expect("no error");
    assert!(welcome.to_text().expect("text").contains(r#""name":"ada""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_handshakes_are_refused() {
    let node = memory_node(&[]).await;
    let url = node.ws_url(Some("ada"));
    let own = format!("http://{}", node.addr());
    assert!(handshake(&url, &[("origin", &own)]).await.is_ok());
    assert!(
        handshake(&url, &[]).await.is_ok(),
        "no Origin: not a browser"
    );
    assert_eq!(
        handshake(&url, &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        handshake(&url, &[("origin", "null")]).await.err(),
        Some(403)
    );
    assert_eq!(
        node.metric(r#"chat_connections_refused_total{cause="origin"}"#)
            .await,
        2.0
    );

    let listed = memory_node(&["--allowed-origin", "https://chat.example"]).await;
    let url = listed.ws_url(Some("ada"));
    assert!(
        handshake(&url, &[("origin", "https://chat.example")])
            .await
            .is_ok()
    );
    let own = format!("http://{}", listed.addr());
    assert_eq!(handshake(&url, &[("origin", &own)]).await.err(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_answer_before_the_upgrade() {
    let node = memory_node(&["--max-connections", "3"]).await;
    let url = node.ws_url(None);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(handshake(&url, &[]).await.expect("under the cap"));
    }
    assert_eq!(handshake(&url, &[]).await.err(), Some(503));
    assert_eq!(
        node.metric(r#"chat_connections_refused_total{cause="node_full"}"#)
            .await,
        1.0
    );
    drop(open.pop());
    wait_until("a place is free again", STEP, async || {
        match handshake(&url, &[]).await {
            Ok(ws) => {
                open.push(ws);
                true
            }
            Err(_) => false,
        }
    })
    .await;

    // Per address: X-Forwarded-For counts only from a trusted proxy.
    let proxied = memory_node(&[
        "--max-connections-per-address",
        "1",
        "--trusted-proxy",
        "127.0.0.0/8",
    ])
    .await;
    let url = proxied.ws_url(None);
    let first = handshake(&url, &[("x-forwarded-for", "203.0.113.1")]).await;
    assert!(first.is_ok());
    assert_eq!(
        handshake(&url, &[("x-forwarded-for", "203.0.113.1")])
            .await
            .err(),
        Some(429)
    );
    assert!(
        handshake(&url, &[("x-forwarded-for", "203.0.113.2")])
            .await
            .is_ok()
    );
    assert_eq!(
        proxied
            .metric(r#"chat_connections_refused_total{cause="address_full"}"#)
            .await,
        1.0
    );
    let direct = memory_node(&["--max-connections-per-address", "1"]).await;
    let url = direct.ws_url(None);
    let _first = handshake(&url, &[("x-forwarded-for", "203.0.113.1")])
        .await
        .expect("first");
    assert_eq!(
        handshake(&url, &[("x-forwarded-for", "203.0.113.2")])
            .await
            .err(),
        Some(429),
        "an untrusted peer cannot pick its address"
    );
}
