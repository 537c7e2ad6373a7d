//! What every Redis user of the node shares: where Redis is (one server or a Redis Cluster),
//! how a client is set up, how long to wait between reconnection attempts, and the slot that
//! holds the current connection.
//!
//! The broker and the flood limiter each keep their own connections and supervise them their
//! own way (the broker resubscribes and reports readiness, the limiter falls back to limits per
//! node), but they must reach Redis the same way: a `rediss://` URL means TLS, Nagle is off
//! because both pipeline small commands, and RESP3 lets pushes and replies share a connection.
//! On a Redis Cluster commands go through redis-rs's cluster connection, which follows the
//! slots as they move; the broker's subscriptions do not (see `broker::redis::shards`).

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

pub(crate) use crate::config::RedisTarget;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisError, RedisFuture, RedisResult, Value,
};

/// A client of one Redis or of a Redis Cluster; nothing is connected until asked.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per connection supervisor, made once per process"
)]
pub(crate) enum Client {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        /// The first seed: credentials and TLS settings for connections to single nodes.
        seed: ConnectionInfo,
    },
}

impl Client {
    /// A client for `target`, speaking RESP3 with TCP_NODELAY. Fails only if a URL is invalid.
    pub(crate) fn open(target: &RedisTarget) -> Result<Self, RedisError> {
        match target {
            RedisTarget::Single(url) => Ok(Client::Single(redis::Client::open(info(url)?)?)),
            RedisTarget::Cluster(urls) => {
                let seeds = urls
                    .iter()
                    .map(|url| info(url))
                    .collect::<Result<Vec<_>, _>>()?;
                let seed = seeds.first().cloned().ok_or_else(|| {
                    RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed node"))
                })?;
                // A request to a master that is down is retried briefly, then fails: its
                // sender gets `unavailable` within a second instead of waiting out redis-rs's
                // default (16 tries, the first after 1.28 s), and the publishes of other
                // shards queued behind it are not held up.
                let client = ClusterClient::builder(seeds)
                    .use_protocol(ProtocolVersion::RESP3)
                    .tcp_settings(TcpSettings::default().set_nodelay(true))
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(400)
                    .build()?;
                Ok(Client::Cluster { client, seed })
            }
        }
    }

    /// `host:port` of the server (of the first seed of a cluster), without credentials, for
    /// logs.
    pub(crate) fn address(&self) -> String {
        match self {
            Client::Single(client) => client.get_connection_info().addr().to_string(),
            Client::Cluster { seed, .. } => format!("cluster seed {}", seed.addr()),
        }
    }

    /// A connection for commands; `timeout` bounds the connect and every reply.
    pub(crate) async fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match self {
            Client::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Connection::Single(connection))
            }
            Client::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                let connection = client.get_async_connection_with_config(config).await?;
                Ok(Connection::Cluster(connection))
            }
        }
    }

    /// A client of one node of the cluster at `host:port`, with the seeds' credentials and
    /// TLS settings (the node of a single Redis for a single Redis).
    pub(crate) fn node(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        match self {
            Client::Single(client) => Ok(client.clone()),
            Client::Cluster { seed, .. } => {
                let addr = match seed.addr() {
                    ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => ConnectionAddr::TcpTls {
                        host: host.to_owned(),
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => ConnectionAddr::Tcp(host.to_owned(), port),
                };
                redis::Client::open(seed.clone().set_addr(addr))
            }
        }
    }
}

/// `url` as RESP3 with TCP_NODELAY.
fn info(url: &str) -> RedisResult<ConnectionInfo> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(info
        .set_redis_settings(settings)
        .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
}

/// A connection for commands, to one Redis or to a cluster; cloning it is cheap, and clones
/// share it.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Connection::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
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
pub(crate) struct ConnectionCell(RwLock<Option<Connection>>);

impl ConnectionCell {
    /// A clone of the current connection, if there is one.
    pub(crate) fn get(&self) -> Option<Connection> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the current connection (`None`: there is none any more).
    pub(crate) fn set(&self, connection: Option<Connection>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = connection;
    }

    /// Takes the current connection out, leaving none; returns it if there was one.
    pub(crate) fn take(&self) -> Option<Connection> {
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
        let target = RedisTarget::Single("rediss://user:secret@example.net:6380/0".to_owned());
        let client = Client::open(&target).expect("valid URL");
        assert_eq!(client.address(), "example.net:6380");
    }
}
