//! Loopback ports for the processes that cannot bind port 0 and report the port they got
//! (`redis-server` 7.0, HAProxy).
//!
//! A port the OS handed out and we released is only a candidate: another test may take it
//! before the process binds it. So a start on a candidate port is retried on another one when
//! the process says the address is in use, a bounded number of times; any other failure is a
//! failure. `chat-server` needs none of this: it binds port 0 and prints the port it got.

use std::net::TcpListener;

/// How many candidate ports a start tries before it gives up.
const ATTEMPTS: usize = 8;

/// How a start on candidate ports went.
pub(crate) enum Started<T> {
    /// Up and listening on the ports it was given.
    Up(T),
    /// A port was taken meanwhile (the process said "Address already in use"): try others.
    PortTaken(String),
    /// Failed for another reason: no point in trying other ports.
    Failed(String),
}

impl<T> Started<T> {
    /// The same outcome with what came up turned into something else.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Started<U> {
        match self {
            Started::Up(up) => Started::Up(f(up)),
            Started::PortTaken(why) => Started::PortTaken(why),
            Started::Failed(why) => Started::Failed(why),
        }
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub(crate) fn candidate_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether a process's log says it could not bind because the address was taken.
pub(crate) fn says_address_in_use(log: &str) -> bool {
    log.contains("Address already in use")
}

/// Runs `start` until it comes up, trying new candidate ports (chosen by `start`) while the
/// ports it picked turn out to be taken; panics naming `what` on any other failure, or when
/// every attempt met a taken port.
pub(crate) async fn on_candidate_ports<T>(
    what: &str,
    mut start: impl AsyncFnMut() -> Started<T>,
) -> T {
    let mut conflicts = Vec::new();
    for _ in 0..ATTEMPTS {
        match start().await {
            Started::Up(started) => return started,
            Started::PortTaken(why) => conflicts.push(why),
            Started::Failed(why) => panic!("{what} did not start: {why}"),
        }
    }
    panic!("{what} found a port taken {ATTEMPTS} times: {conflicts:#?}");
}
