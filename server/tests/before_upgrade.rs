//! Defences before the WebSocket upgrade, with real processes: caps on pending handshakes
//! (accepted connections not yet upgraded), per node and per client address, and the host
//! names a node bound to loopback answers (DNS rebinding).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::{Client, Node, STEP, http_request, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Long enough that idle connections outlive the test, so only the caps can close them.
const HANDSHAKE_TIMEOUT: &str = "60";

/// A TCP connection to `node` from the loopback address `from`.
async fn connect_from(node: &Node, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket.connect(node.addr()).await.expect("connect")
}

/// Whether the node closed `stream` within `window` (EOF or reset) rather than kept it open.
async fn closed_within(stream: &mut TcpStream, window: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(window, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("the node wrote to a connection that sent nothing"),
        Err(_) => false,
    }
}

/// `count` idle connections from `from`, each accepted and held open by the node.
async fn idle_connections(node: &Node, from: Ipv4Addr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = connect_from(node, from).await;
        assert!(
            !closed_within(&mut stream, Duration::from_millis(100)).await,
            "connection {} of {count} from {from} was closed",
            held.len() + 1
        );
        held.push(stream);
    }
    held
}

/// `GET /healthz` on a connection from `from`.
async fn healthz_from(node: &Node, from: Ipv4Addr) -> Option<u16> {
    let mut stream = connect_from(node, from).await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        node.addr()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&raw);
    head.split(' ').nth(1)?.parse().ok()
}

const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_per_address_cap_are_closed_at_accept() {
    let node = Node::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--handshake-timeout-secs",
            HANDSHAKE_TIMEOUT,
            "--max-pending-handshakes-per-address",
            "5",
        ],
        &[],
    )
    .await;
    let held = idle_connections(&node, HOME, 5).await;

    // One more from the same address is closed at once, and so is a well-behaved client's.
    let mut extra = connect_from(&node, HOME).await;
    assert!(closed_within(&mut extra, STEP).await, "the 6th from {HOME}");
    assert_eq!(healthz_from(&node, HOME).await, None, "refused while full");

    // The cap keys by the peer address: another address is served meanwhile.
    assert_eq!(healthz_from(&node, NEIGHBOUR).await, Some(200));

    // Once the idle ones are gone, the well-behaved client gets in, WebSocket and all.
    drop(held);
    wait_until("the address has places again", STEP, async || {
        healthz_from(&node, HOME).await == Some(200)
    })
    .await;
    let client = node.client("welcome-back").await;
    assert_eq!(client.name(), "welcome-back");
    let refused = node
        .metric("chat_connections_refused_total{cause=\"pending_handshakes_per_address\"}")
        .await;
    assert!(refused >= 2.0, "counted: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_cap_counts_every_address_and_upgraded_sockets_leave_it() {
    let node = Node::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--handshake-timeout-secs",
            HANDSHAKE_TIMEOUT,
            "--max-pending-handshakes",
            "4",
            "--max-pending-handshakes-per-address",
            "0",
        ],
        &[],
    )
    .await;
    // WebSockets are no longer pending: as many as wanted, before and after.
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(node.client(&format!("early-{i}")).await);
    }
    let held = idle_connections(&node, HOME, 4).await;
    let mut extra = connect_from(&node, NEIGHBOUR).await;
    assert!(
        closed_within(&mut extra, STEP).await,
        "a 5th pending connection, from another address"
    );
    drop(held);
    wait_until("the node has places again", STEP, async || {
        healthz_from(&node, NEIGHBOUR).await == Some(200)
    })
    .await;
    clients.push(Client::connect(&node.ws_url(Some("late"))).await);
    assert!(
        node.metric("chat_connections_refused_total{cause=\"pending_handshakes\"}")
            .await
            >= 1.0
    );
}

/// The status of a GET of `path` naming `host`, with `extra` headers. Only the head of the
/// answer is read: after a 101 the connection stays open.
async fn get_as(node: &Node, host: &str, path: &str, extra: &[(&str, &str)]) -> u16 {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(node.addr()).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await? == 1 {
            head.push(byte[0]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head).into_owned())
    };
    let head = tokio::time::timeout(STEP, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} as {host} timed out"))
        .unwrap_or_else(|e| panic!("GET {path} as {host}: {e}"));
    head.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("GET {path} as {host}: no status in {head:?}"))
}

const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_node_answers_only_loopback_host_names() {
    let node = Node::memory().await;
    let port = node.addr().port();
    let evil_origin = [("Origin", "http://evil.example")];
    let mut upgrade_from_evil = UPGRADE.to_vec();
    upgrade_from_evil.extend_from_slice(&evil_origin);

    // A rebinding page: its name resolves to 127.0.0.1, its requests say `Host: evil.example`.
    for path in ["/", "/app.js", "/metrics", "/api/stats", "/healthz"] {
        assert_eq!(
            get_as(&node, "evil.example", path, &[]).await,
            421,
            "{path}"
        );
    }
    assert_eq!(
        get_as(
            &node,
            &format!("evil.example:{port}"),
            "/ws",
            &upgrade_from_evil
        )
        .await,
        421
    );
    let answer = http_request(
        node.addr(),
        "GET",
        "/",
        &[("Host", "evil.example")],
        &[],
        STEP,
    )
    .await;
    assert!(answer.body.contains("loopback"), "{answer:?}");

    // Loopback names, with any port, are served, the WebSocket too.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
    ] {
        assert_eq!(get_as(&node, &host, "/", &[]).await, 200, "{host}");
    }
    let upgraded = get_as(&node, &format!("localhost:{port}"), "/ws", &UPGRADE).await;
    assert_eq!(upgraded, 101);
    let refused = node
        .metric("chat_connections_refused_total{cause=\"host\"}")
        .await;
    assert_eq!(refused, 7.0, "every refusal is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_names_another_host_a_loopback_node_answers() {
    let node = Node::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--allowed-origin",
            "http://evil.example",
        ],
        &[],
    )
    .await;
    assert_eq!(get_as(&node, "evil.example", "/", &[]).await, 200);
    let mut upgrade = UPGRADE.to_vec();
    upgrade.push(("Origin", "http://evil.example"));
    assert_eq!(get_as(&node, "evil.example", "/ws", &upgrade).await, 101);
    assert_eq!(get_as(&node, "other.example", "/", &[]).await, 421);
    assert_eq!(get_as(&node, "localhost", "/", &[]).await, 200);
}
