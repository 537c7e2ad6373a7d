//! What a test can do with a node it only knows by address: open WebSocket clients, send HTTP
//! requests, read metrics. Both kinds of node, a `chat-server` process ([`super::Node`]) and one
//! in this process ([`super::TestServer`]), dereference to it, so a test reads the same
//! whichever it runs against.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Client, HttpResponse, Metrics, http_get, http_request};

/// A node's address and the helpers that need nothing more.
pub(crate) struct Endpoint {
    addr: SocketAddr,
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr) -> Endpoint {
        Endpoint { addr }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws`, with `?name=` (percent-encoded) when a name is given.
    pub(crate) fn ws_url(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => format!("ws://{}/ws?name={}", self.addr, percent_encode(name)),
            None => format!("ws://{}/ws", self.addr),
        }
    }

    /// Connects a client named `name` and reads its welcome.
    pub(crate) async fn client(&self, name: &str) -> Client {
        let client = Client::connect(&self.ws_url(Some(name))).await;
        assert_eq!(client.name(), name, "welcome name");
        client
    }

    /// A plain HTTP/1.1 GET of `path`.
    pub(crate) async fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path).await
    }

    /// A plain HTTP/1.1 request with `headers` and `body`, bounded by `timeout`.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body, timeout).await
    }

    pub(crate) async fn status_of(&self, path: &str) -> u16 {
        self.http_get(path).await.status
    }

    pub(crate) async fn metrics(&self) -> Metrics {
        let response = self.http_get("/metrics").await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        Metrics(response.body)
    }

    /// The value of one series, e.g. `chat_errors_total{code="bad_request"}`; panics if absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .value(series)
            .unwrap_or_else(|| panic!("no series `{series}` in /metrics:\n{}", metrics.0))
    }
}

pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
