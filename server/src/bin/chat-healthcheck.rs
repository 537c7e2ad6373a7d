//! `chat-healthcheck`: exits 0 when the node on this host answers `GET /readyz` with 200, 1
//! otherwise. It is the container's HEALTHCHECK.
//!
//! The runtime image has no shell, curl or wget (fewer packages, fewer CVEs), so the probe ships
//! as a second small binary built from the same crate. It reads `CHAT_LISTEN`, the variable the
//! node itself listens on, so the probe cannot point at another port than the node's. Only the
//! standard library is used, and every step has a deadline, so a hung node fails the check
//! instead of hanging it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// The node's default listen address, as in its configuration.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let listen = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("CHAT_LISTEN").ok())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    match probe(&listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("chat-healthcheck: {listen}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Asks the node listening on `listen` whether it is ready.
fn probe(listen: &str) -> Result<(), String> {
    let mut address: SocketAddr = listen
        .parse()
        .map_err(|e| format!("not a socket address: {e}"))?;
    // A node listening on every interface is reached on loopback.
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    // Only the status line matters.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() && !head[..len].contains(&b'\n') {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..len]);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("not ready: {status_line:?}")),
    }
}
