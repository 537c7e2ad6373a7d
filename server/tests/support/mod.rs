//! Harness for the integration tests: real `redis-server` and `chat-server` processes on
//! loopback ports, nodes run inside the test process, WebSocket clients that speak protocol v1,
//! and small HTTP and metrics helpers. One module per concern; this one re-exports the helpers
//! the tests use and holds the timing constants they share.
//!
//! Every process is owned by a guard that kills it on drop, so nothing outlives a test, also
//! when it fails; every wait has a deadline, so a test fails instead of hanging.
//!
//! Which node a test uses:
//! - [`TestServer`] for one node without Redis: no process to spawn, no port to race for, and
//!   with a [`FrozenClock`] a timeout passes in node time instead of wall time;
//! - [`Node`] (a `chat-server` process) for Redis, several nodes, the balancer, faults,
//!   signals, restarts, logs and resident memory. A test of token expiry also stays on wall
//!   time: the handshake checks `exp` against the system clock, which pausing tokio's clock
//!   does not move.

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub(crate) mod api;
pub(crate) mod balancer;
pub(crate) mod browser;
pub(crate) mod chatters;
mod client;
mod clock;
mod cluster;
pub(crate) mod dns;
mod endpoint;
mod http;
mod in_process;
pub(crate) mod js_client;
mod metrics;
mod node;
mod ports;
mod presence;
mod process;
pub(crate) mod prometheus;
pub(crate) mod promql;
pub(crate) mod raw;
mod redis;
pub(crate) mod redis_cluster;
pub(crate) mod repository;
mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

pub(crate) use client::{Chat, Client, JoinedReply, Welcome, exchange, expect_silence_all};
pub(crate) use clock::FrozenClock;
pub(crate) use cluster::{Cluster, KEY_A, NO_FLOOD_LIMITS, cluster, cluster_with, member};
pub(crate) use endpoint::{Endpoint, percent_encode};
pub(crate) use http::{HttpResponse, http_get, http_request};
pub(crate) use in_process::TestServer;
pub(crate) use metrics::Metrics;
pub(crate) use node::{Node, listening_line, redis_node_args};
pub(crate) use ports::{Started, candidate_port, on_candidate_ports, says_address_in_use};
pub(crate) use presence::{MembersPage, PresenceEvent};
pub(crate) use process::{Process, TempDir, kill, log_file, wait_for_exit};
pub(crate) use redis::{RawSubscriber, RedisServer, TestCertificates};
pub(crate) use tokens::{AUTH_SECRET, expect_unauthorized, jwt};

/// Longest wait for one protocol step (a reply, a delivery, a process start).
pub(crate) const STEP: Duration = Duration::from_secs(5);
/// How long a client must stay quiet to show that nothing more (no duplicate) is coming.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// A base64 AES-256 key of 32 bytes derived from `seed`; different seeds give different keys.
pub(crate) fn key(seed: u8) -> String {
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A string no other test or run uses, for refs, room names and markers.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Polls `check` every 100 ms until it returns true; panics after `timeout`.
pub(crate) async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
