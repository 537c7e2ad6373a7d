//! What every Redis user of the node shares: how a client is set up, how long to wait between
//! reconnection attempts, and the slot that holds the current connection.
//!
//! The broker and the flood limiter each keep their own connections and supervise them their
//! own way (the broker resubscribes and reports readiness, the limiter falls back to limits per
//! node), but they must reach Redis the same way: a `rediss://` URL means TLS, Nagle is off
//! because both pipeline small commands, and RESP3 lets pushes and replies share a connection.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{IntoConnectionInfo, ProtocolVersion, RedisError};

/// A client for `url` (`redis://` or `rediss://`), speaking RESP3 with TCP_NODELAY. Fails only
/// if the URL is invalid: nothing is connected yet.
pub(crate) fn open(url: &str) -> Result<redis::Client, RedisError> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(
        info.set_redis_settings(settings)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true)),
    )
}

/// `host:port` of the client's server, without credentials, for logs.
pub(crate) fn address(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// Capped exponential backoff between reconnection attempts: the first wait is `min`, each
/// failure doubles it up to `max`, a success starts over.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Waits from `min` doubling up to `max`, spread over ±20%, so that the nodes of a cluster,
    /// which all lost Redis at the same moment, do not all hit it again at the same moment when
    /// it recovers.
    pub(crate) fn jittered(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
            jitter: true,
        }
    }

    /// Waits of exactly the computed length, for tests of the schedule itself.
    #[cfg(test)]
    fn exact(min: Duration, max: Duration) -> Self {
        Backoff {
            jitter: false,
            ..Backoff::jittered(min, max)
        }
    }

    /// The wait before the next attempt; the one after it will be twice as long (up to `max`).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter {
            delay.mul_f64(rand::random_range(0.8..1.2))
        } else {
            delay
        }
    }

    /// Starts over from `min`, after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The current connection, or none while Redis is unreachable: written by the task that
/// reconnects, read (and cloned, which is cheap for a multiplexed connection) by every caller.
/// A plain lock is enough: it is never held across an `.await`.
#[derive(Default)]
pub(crate) struct ConnectionCell(RwLock<Option<MultiplexedConnection>>);

impl ConnectionCell {
    /// A clone of the current connection, if there is one.
    pub(crate) fn get(&self) -> Option<MultiplexedConnection> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the current connection (`None`: there is none any more).
    pub(crate) fn set(&self, connection: Option<MultiplexedConnection>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = connection;
    }

    /// Takes the current connection out, leaving none; returns it if there was one.
    pub(crate) fn take(&self) -> Option<MultiplexedConnection> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over() {
        let mut backoff = Backoff::exact(Duration::from_millis(100), Duration::from_millis(300));
        let waits: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let mut backoff = Backoff::jittered(Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..100 {
            let wait = backoff.next_delay();
            assert!(wait >= Duration::from_millis(800) && wait <= Duration::from_millis(1200));
        }
    }

    #[test]
    fn addresses_leave_credentials_out() {
        let client = open("rediss://user:secret@example.net:6380/0").expect("valid URL");
        assert_eq!(address(&client), "example.net:6380");
    }
}
