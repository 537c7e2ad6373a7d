//! A node run inside the test process, on a listener bound to port 0 by the test itself.
//!
//! Nothing to spawn and no port to hand over, so it starts in milliseconds and cannot race for
//! a port; and it runs on the test's own runtime, so a test of a timeout can pause tokio's clock
//! and advance it instead of sleeping. Single-node tests that need no signals, no restart and
//! no process-wide view (RSS, logs) use it; everything else uses a [`super::Node`] process.
//!
//! The configuration is parsed from flags exactly as the binary parses them. Unlike a process,
//! it also sees the test's own `CHAT_*` environment variables, and `--listen` is ignored.

use std::net::SocketAddr;
use std::ops::Deref;

use chat_server::config::Config;
use chat_server::node::{self, Node};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, STEP};

/// A node serving on an ephemeral loopback port of this process; shut down on drop.
pub(crate) struct TestServer {
    endpoint: Endpoint,
    stop: CancellationToken,
    served: Option<JoinHandle<Result<(), node::NodeError>>>,
}

impl TestServer {
    /// A node with the in-memory broker and default flags.
    pub(crate) async fn memory() -> TestServer {
        TestServer::start(&[]).await
    }

    /// A node configured by `args`, the flags of `chat-server` without the program name.
    pub(crate) async fn start(args: &[&str]) -> TestServer {
        let config =
            Config::try_parse_from(std::iter::once("chat-server").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("chat-server {args:?}: {e}"));
        let node =
            Node::build(&config).unwrap_or_else(|e| panic!("build a node from {args:?}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("the listener's address");
        let stop = CancellationToken::new();
        let served = tokio::spawn(node.serve(listener, stop.clone().cancelled_owned()));
        TestServer {
            endpoint: Endpoint::new(addr),
            stop,
            served: Some(served),
        }
    }

    /// Shuts the node down gracefully, as SIGTERM does for a process, and waits until it has
    /// stopped; panics if that takes longer than `STEP` beyond the drain deadline.
    pub(crate) async fn shutdown(mut self) {
        self.stop.cancel();
        let served = self.served.take().expect("served until now");
        match tokio::time::timeout(STEP * 4, served).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("the node failed: {error}"),
            Ok(Err(error)) => panic!("the node's task failed: {error}"),
            Err(_) => panic!("the node did not stop within {:?}", STEP * 4),
        }
    }
}

impl Deref for TestServer {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The runtime ends the task with the test; cancelling lets sessions close cleanly if
        // the test goes on.
        self.stop.cancel();
    }
}
