//! Opening one client's WebSocket: the target's address, the loopback source address, the
//! handshake, and a short name for every way that can fail.
//!
//! Failures are counted by cause rather than aborting the run, because under load they are
//! part of the result: a refused connect, a full backlog or an exhausted port range says as
//! much about a cluster's capacity as a latency figure does.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error as WsError};

/// A client's connection.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// How long a connect or a handshake may take before it counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A node (or load balancer) to connect to, resolved once at start.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

impl Target {
    /// Parses a `ws://host:port[/path]` URL; an empty path means `/ws`.
    pub(crate) async fn resolve(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("--url {url}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => bail!(
                "--url {url}: wss:// is not supported; use ws:// (TLS belongs to the load balancer)"
            ),
            _ => bail!("--url {url}: expected ws://host:port/ws"),
        }
        let host = uri
            .host()
            .with_context(|| format!("--url {url}: no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("--url {url}: cannot resolve {host}"))?
            .next()
            .with_context(|| format!("--url {url}: {host} has no address"))?;
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/ws".to_owned(),
            Some(path) => path.to_owned(),
        };
        let authority = uri
            .authority()
            .map_or_else(|| format!("{host}:{port}"), |a| a.as_str().to_owned());
        Ok(Target {
            addr,
            authority,
            path,
        })
    }

    /// The node's address, for plain HTTP requests to it.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as the URL gave it, for the `Host` header.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    fn request(&self, name: &str) -> String {
        let separator = if self.path.contains('?') { '&' } else { '?' };
        format!("ws://{}{}{separator}name={name}", self.authority, self.path)
    }
}

/// Where client connections come from: `spread` consecutive loopback addresses starting at
/// `first` (127.0.0.2, 127.0.0.3, … by default), used when the target is on IPv4 loopback,
/// since each source address has its own range of ephemeral ports. Processes run side by
/// side give each its own `first`, so they never compete for the same ports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sources {
    pub first: Ipv4Addr,
    pub spread: u8,
}

impl Sources {
    /// The source address for client `index`, if it gets one.
    fn for_client(self, target: SocketAddr, index: usize) -> Option<IpAddr> {
        match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && self.spread > 0 => {
                let offset = (index % usize::from(self.spread)) as u32;
                Some(IpAddr::V4(Ipv4Addr::from(u32::from(self.first) + offset)))
            }
            _ => None,
        }
    }
}

/// Connects client `index` named `name`; the error is the failure's cause.
pub(crate) async fn open(
    target: &Target,
    index: usize,
    name: &str,
    sources: Sources,
    config: WebSocketConfig,
) -> Result<Ws, String> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| io_cause("socket", &e))?;
    if let Some(source) = sources.for_client(target.addr, index) {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| io_cause("bind", &e))?;
    }
    let stream = tokio::time::timeout(STEP_TIMEOUT, socket.connect(target.addr))
        .await
        .map_err(|_| "connect: timed out".to_owned())?
        .map_err(|e| io_cause("connect", &e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| io_cause("connect", &e))?;
    let handshake =
        tokio_tungstenite::client_async_with_config(target.request(name), stream, Some(config));
    let (ws, _response) = tokio::time::timeout(STEP_TIMEOUT, handshake)
        .await
        .map_err(|_| "handshake: timed out".to_owned())?
        .map_err(|e| ws_cause("handshake", &e))?;
    Ok(ws)
}

/// A short, stable name for an I/O failure, so that thousands of them group into a few lines.
pub(crate) fn io_cause(step: &str, error: &io::Error) -> String {
    let what = match error.raw_os_error() {
        Some(24) => "too many open files".to_owned(),
        Some(99) => "no free local port".to_owned(),
        _ => match error.kind() {
            io::ErrorKind::ConnectionRefused => "refused".to_owned(),
            io::ErrorKind::ConnectionReset => "reset by peer".to_owned(),
            io::ErrorKind::ConnectionAborted => "aborted".to_owned(),
            io::ErrorKind::BrokenPipe => "broken pipe".to_owned(),
            io::ErrorKind::TimedOut => "timed out".to_owned(),
            io::ErrorKind::UnexpectedEof => "closed without a close frame".to_owned(),
            kind => kind.to_string(),
        },
    };
    format!("{step}: {what}")
}

/// The same for WebSocket errors.
pub(crate) fn ws_cause(step: &str, error: &WsError) -> String {
    match error {
        WsError::Io(e) => io_cause(step, e),
        WsError::Http(response) => format!("{step}: HTTP {}", response.status().as_u16()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => format!("{step}: closed"),
        WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            format!("{step}: reset without a close frame")
        }
        WsError::Protocol(e) => format!("{step}: protocol error ({e})"),
        WsError::Capacity(e) => format!("{step}: {e}"),
        other => format!("{step}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_urls_and_builds_requests() {
        let target = Target::resolve("ws://127.0.0.1:8081").await.unwrap();
        assert_eq!(target.request("a"), "ws://127.0.0.1:8081/ws?name=a");
        let target = Target::resolve("ws://localhost:9/chat/ws?x=1")
            .await
            .unwrap();
        assert_eq!(target.request("b"), "ws://localhost:9/chat/ws?x=1&name=b");
        assert!(target.addr.ip().is_loopback());
        assert!(Target::resolve("wss://127.0.0.1:1/ws").await.is_err());
        assert!(Target::resolve("http://127.0.0.1:1/ws").await.is_err());
    }

    #[test]
    fn spreads_loopback_clients_over_source_addresses() {
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let ip = |last| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)));
        let three = Sources {
            first: Ipv4Addr::new(127, 0, 0, 2),
            spread: 3,
        };
        let got: Vec<_> = (0..4).map(|i| three.for_client(local, i)).collect();
        assert_eq!(got, vec![ip(2), ip(3), ip(4), ip(2)]);
        let later = Sources {
            first: Ipv4Addr::new(127, 0, 0, 10),
            ..three
        };
        assert_eq!(later.for_client(local, 4), ip(11));
        let none = Sources { spread: 0, ..three };
        assert_eq!(none.for_client(local, 5), None);
        assert_eq!(three.for_client("10.0.0.1:80".parse().unwrap(), 5), None);
    }
}
