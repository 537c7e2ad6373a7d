//! A cluster whose Redis speaks TLS (`rediss://`): nodes verify the server's certificate
//! against the system's roots or `SSL_CERT_FILE`, and chat works across nodes as over plain TCP.

mod support;

use std::time::Duration;

use support::{KEY_A, Node, RedisServer, TestCertificates, exchange, key, wait_until};

fn tls_node_args(tls_port: u16, id: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--redis-url".into(),
        format!("rediss://localhost:{tls_port}/"),
        "--node-id".into(),
        id.into(),
        "--key".into(),
        key(KEY_A),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_through_redis_over_tls() {
    let certificates = TestCertificates::generate();
    let (_redis, tls_port) = RedisServer::start_tls(&certificates).await;
    let ca = certificates.ca_file().display().to_string();
    let trusting = [("SSL_CERT_FILE", ca.as_str())];
    let a = Node::spawn(&tls_node_args(tls_port, "tls-a"), &trusting).await;
    let b = Node::spawn(&tls_node_args(tls_port, "tls-b"), &trusting).await;
    for node in [&a, &b] {
        wait_until(
            "the node is connected over TLS",
            Duration::from_secs(10),
            async || node.status_of("/readyz").await == 200,
        )
        .await;
    }
    let mut alice = support::member(&a, "tls-a", "alice", "secure").await;
    let mut bob = support::member(&b, "tls-b", "bob", "secure").await;
    exchange(&mut alice, "secure", "over TLS", &mut [&mut bob]).await;
    exchange(&mut bob, "secure", "and back", &mut [&mut alice]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_verify_the_certificate_stays_unready() {
    let certificates = TestCertificates::generate();
    let (_redis, tls_port) = RedisServer::start_tls(&certificates).await;
    // Without the test CA the certificate does not verify against the system's roots.
    let node = Node::spawn(&tls_node_args(tls_port, "untrusting"), &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(node.status_of("/readyz").await, 503);
    assert_eq!(node.status_of("/healthz").await, 200);
}
